//! `meshctl doctor`: checks of this host (kernel features, sysctls, the
//! underlay) and of every peer (control, data path, MTU, probes, keys,
//! clock, version). The checks are pure functions over facts gathered
//! first, so each verdict and its advice is tested without a kernel.

use std::time::Duration;

use crate::api::{Check, PeerState, PeerStatus};

pub use crate::version::VERSION;

/// Probes per peer in a doctor run, and their spacing: 10 × 20 ms keeps a
/// run under half a second while one lost probe still shows as 10 %.
pub const PROBE_COUNT: u32 = 10;
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// No network MTU goes below IPv6's minimum link MTU (RFC 8200): advice
/// to go lower would be refused.
pub const MIN_NETWORK_MTU: u32 = mesh_model::networks::MIN_MTU;

/// What a peer's checks are judged against.
#[derive(Debug, Clone)]
pub struct PeerContext<'a> {
    pub version: &'a str,
    pub rekey: Duration,
    /// The network with the largest MTU here, and that MTU: its full-size
    /// frames must fit the path.
    pub largest_network: Option<(&'a str, u32)>,
    /// The probe burst's answer; `None`: this data plane cannot probe.
    pub probe: Option<&'a dataplane::BurstReport>,
}

/// Sealed datagram (UDP payload) carrying a frame of a `mtu`-byte network.
pub fn sealed_len(mtu: u32) -> u32 {
    mtu + (dataplane::wire::ETHERNET_HEADER_LEN + dataplane::wire::OVERHEAD) as u32
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn peer_checks(p: &PeerStatus, cx: &PeerContext) -> Vec<Check> {
    // Asked whatever the state: a peer outside our range is never up.
    let mut out = vec![control(p), protocol(p)];
    if p.state != PeerState::Up {
        out.push(Check::skipped("data_path", "peer is not up"));
        return out;
    }
    out.push(data_path(p));
    out.push(path_mtu(p, cx));
    out.push(probe(p, cx));
    out.push(key_age(p, cx));
    out.push(clock_skew(p));
    out.push(version(p, cx));
    out
}

fn control(p: &PeerStatus) -> Check {
    let how = p.control.as_deref().unwrap_or("direct");
    match p.state {
        PeerState::Up if how == "tcp" => Check::warn(
            "control",
            format!("up, over the TCP fallback ({})", p.address),
            format!(
                "QUIC (UDP) to {} fails, so the control connection runs over TLS on TCP: let UDP to the control port through between the hosts (meshd moves back to it by itself)",
                p.address
            ),
        ),
        PeerState::Up if how.starts_with("relayed") => Check::warn(
            "control",
            format!("up, {how} ({})", p.address),
            format!(
                "no direct QUIC connection: let UDP to {} (the control port) through between the hosts",
                p.address
            ),
        ),
        PeerState::Up => {
            let rtt = p.rtt_ms.map(|r| format!(", rtt {r:.1} ms")).unwrap_or_default();
            Check::ok("control", format!("up, {how} {}{rtt}", p.address))
        }
        state => Check::fail(
            "control",
            format!("{state} (last address {})", p.address),
            format!(
                "check that meshd runs on {} and that UDP to {} reaches it (firewall, NAT)",
                p.name, p.address
            ),
        ),
    }
}

fn data_path(p: &PeerStatus) -> Check {
    let endpoint = p.data_address.as_deref().unwrap_or("no endpoint");
    if p.path.starts_with("relayed") {
        Check::warn(
            "data_path",
            format!("{}, endpoint {endpoint}", p.path),
            format!(
                "the direct path to {} is blocked: let UDP to its data port through (its containers still talk, through the relay)",
                p.name
            ),
        )
    } else if p.path == "tcp" {
        Check::warn(
            "data_path",
            format!("tcp, over the control connection to {}", p.address),
            format!(
                "no UDP path to {} works, direct or relayed: frames go over the TCP fallback (slower, and a lost segment stalls the rest); let UDP to its data port through and the path returns to UDP within seconds",
                p.name
            ),
        )
    } else if p.path == "none" || p.data_address.is_none() {
        Check::fail(
            "data_path",
            format!("no working path ({endpoint})"),
            format!(
                "frames to {} are lost: let UDP to its data port through, or make a third host reachable by both to relay",
                p.name
            ),
        )
    } else {
        Check::ok("data_path", format!("{}, endpoint {endpoint}", p.path))
    }
}

fn path_mtu(p: &PeerStatus, cx: &PeerContext) -> Check {
    let Some(mtu) = p.path_mtu.filter(|m| *m > 0) else {
        return Check::skipped("path_mtu", "not measured yet");
    };
    match cx.largest_network {
        Some((net, net_mtu)) if sealed_len(net_mtu) > mtu => {
            let fits = mtu.saturating_sub(sealed_len(0));
            let remedy = if fits >= MIN_NETWORK_MTU {
                format!("give {net} an MTU of at most {fits} (network create --mtu)")
            } else {
                format!(
                    "raise the underlay MTU on the path by {} bytes (a network MTU cannot go below {MIN_NETWORK_MTU})",
                    sealed_len(net_mtu) - mtu
                )
            };
            Check::warn(
                "path_mtu",
                format!(
                    "{mtu} bytes: full-size frames of network {net} (MTU {net_mtu}) do not fit"
                ),
                format!(
                    "they are answered with \"fragmentation needed\" and TCP's MSS is clamped; for whole frames {remedy}"
                ),
            )
        }
        _ => Check::ok("path_mtu", format!("{mtu} bytes")),
    }
}

fn probe(p: &PeerStatus, cx: &PeerContext) -> Check {
    let Some(r) = cx.probe else {
        let seen = match (p.path_rtt_ms, p.path_loss) {
            (Some(rtt), Some(loss)) => format!(
                "; the path's own probes: rtt {rtt:.1} ms, loss {:.0} %",
                loss * 100.0
            ),
            _ => String::new(),
        };
        return Check::skipped("probe", format!("probe not available{seen}"));
    };
    if r.sent == 0 {
        return Check::skipped("probe", "no probe sent (no keys or no path yet)");
    }
    let loss = 1.0 - f64::from(r.received) / f64::from(r.sent);
    let rtt = match (r.rtt_min, r.rtt_avg, r.rtt_max) {
        (Some(a), Some(b), Some(c)) => format!(", rtt min/avg/max {}/{}/{}", ms(a), ms(b), ms(c)),
        _ => String::new(),
    };
    let detail = format!("{}/{} answered{rtt}", r.received, r.sent);
    if r.received == 0 {
        Check::fail(
            "probe",
            detail,
            format!(
                "nothing comes back over the data path: check that UDP between this host and {} (data ports) is not dropped",
                p.name
            ),
        )
    } else if loss > 0.05 {
        Check::warn(
            "probe",
            format!("{detail} ({:.0} % loss)", loss * 100.0),
            "the underlay loses packets: TCP between containers slows down; look for a congested or faulty link",
        )
    } else {
        Check::ok("probe", detail)
    }
}

fn key_age(p: &PeerStatus, cx: &PeerContext) -> Check {
    let Some(age) = p.key_age_secs else {
        return Check::fail(
            "key_age",
            "no data-plane keys",
            format!(
                "the key exchange with {} does not complete: see the meshd log on both hosts",
                p.name
            ),
        );
    };
    let gen = p.key_generation.unwrap_or(0);
    let every = cx.rekey.as_secs();
    let detail = format!("generation {gen}, {age:.0} s old (rotates every {every} s)");
    let expire = dataplane::keypair::REJECT_AFTER_TIME.as_secs_f64();
    if age >= expire {
        Check::fail(
            "key_age",
            detail,
            format!("past the {expire:.0} s key lifetime, frames are refused: the rekey with {} fails, see the meshd log on both hosts", p.name),
        )
    } else if age > cx.rekey.as_secs_f64() + 20.0 {
        Check::warn(
            "key_age",
            detail,
            format!(
                "key rotation is late (keys stop working at {expire:.0} s): see the meshd log on both hosts"
            ),
        )
    } else {
        Check::ok("key_age", detail)
    }
}

fn clock_skew(p: &PeerStatus) -> Check {
    let Some(skew) = p.clock_skew_ms else {
        return Check::skipped("clock_skew", "not measured yet");
    };
    // Below half a millisecond is none (and never prints as "-0").
    let shown = if skew.abs() < 0.5 { 0.0 } else { skew };
    let detail = format!("{shown:+.0} ms");
    let fix = format!(
        "synchronise the clocks of this host and {} (NTP, chrony): signed records from the future are refused",
        p.name
    );
    match skew.abs() {
        s if s >= 60_000.0 => Check::fail("clock_skew", detail, fix),
        s if s >= 1_000.0 => Check::warn("clock_skew", detail, fix),
        _ => Check::ok("clock_skew", detail),
    }
}

fn version(p: &PeerStatus, cx: &PeerContext) -> Check {
    match p.version.as_deref() {
        None => Check::warn(
            "version",
            "not advertised (an older meshd)",
            format!("upgrade meshd on {} to {}", p.name, cx.version),
        ),
        Some(v) if v != cx.version => Check::warn(
            "version",
            format!("{v}, this host runs {}", cx.version),
            "run the same meshd version on every host (upgrade the older one)",
        ),
        Some(v) => Check::ok("version", v.to_string()),
    }
}

/// Whether the peer's protocol range meets ours (PROTOCOL.md).
fn protocol(p: &PeerStatus) -> Check {
    use gossip::protocol as wire;
    let ours = wire::supported();
    let show = wire::format_range;
    let Some(text) = p.protocol.as_deref() else {
        return Check::warn(
            "protocol",
            "not advertised (a meshd before 0.2.0, another major)",
            format!("upgrade meshd on {} to {VERSION}", p.name),
        );
    };
    let Some(theirs) = wire::parse_range(text) else {
        return Check::warn(
            "protocol",
            format!("unreadable range {text:?}"),
            format!("upgrade meshd on {} to {VERSION}", p.name),
        );
    };
    match wire::negotiate(ours, theirs) {
        Some(v) => Check::ok(
            "protocol",
            format!("speaks {}, the link {v}", show(theirs)),
        ),
        None => Check::fail(
            "protocol",
            format!(
                "speaks {}, this host {}: no version in common",
                show(theirs),
                show(ours)
            ),
            format!(
                "upgrade the older of {} and this host: each release speaks the previous minor release's protocol too (PROTOCOL.md)",
                p.name
            ),
        ),
    }
}

pub mod host;

#[cfg(test)]
mod tests;
