//! This host's checks: what the kernel offers (TAP, vnet_hdr, HTB,
//! nftables), the forwarding and br_netfilter settings, and the underlay
//! MTU against the networks' MTUs. [`gather`] reads the facts (read-only,
//! but for one transient TAP); [`checks`] judges them.

use std::path::Path;

use crate::api::Check;

/// What [`gather`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// A TAP opened: with a vnet header or not; or the error.
    pub tap: Result<bool, String>,
    pub htb: Htb,
    /// `nft list tables` worked; or its error.
    pub nftables: Result<(), String>,
    pub ip_forward: Option<bool>,
    /// This host routes (FIPs, gateway addresses), so needs forwarding.
    pub needs_forwarding: bool,
    /// `None`: br_netfilter is not loaded. Else the mesh bridges whose
    /// frames still pass the IP hooks.
    pub br_netfilter: Option<Vec<String>>,
    /// The underlay device, its MTU and whether the underlay is IPv6.
    pub underlay: Option<(String, u32, bool)>,
    /// Networks carried here and their MTU.
    pub networks: Vec<(String, u32)>,
    /// Networks of the mesh this host refuses to carry, with why.
    pub refused: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Htb {
    Loaded,
    Module,
    Missing,
}

pub fn checks(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    match &f.tap {
        Ok(vnet) => {
            out.push(Check::ok("tun", "/dev/net/tun opens a TAP"));
            out.push(if *vnet {
                Check::ok("vnet_hdr", "TAP offloads (IFF_VNET_HDR) available")
            } else {
                Check::warn(
                    "vnet_hdr",
                    "the TAP has no IFF_VNET_HDR: one frame per read, no TCP offload",
                    "expect lower throughput; use a kernel with TUN vnet header support (any since 3.x)",
                )
            });
        }
        Err(e) => {
            out.push(Check::fail(
                "tun",
                format!("cannot open a TAP: {e}"),
                "load the tun module (modprobe tun) and run meshd as root (CAP_NET_ADMIN)",
            ));
            out.push(Check::skipped("vnet_hdr", "no TAP"));
        }
    }
    out.push(match f.htb {
        Htb::Loaded => Check::ok("htb", "sch_htb loaded"),
        Htb::Module => Check::ok("htb", "sch_htb available (loads on first use)"),
        Htb::Missing => Check::warn(
            "htb",
            "no sch_htb in this kernel",
            "`network qos` shaping cannot work: install the kernel's extra modules (e.g. linux-modules-extra) ",
        ),
    });
    out.push(match &f.nftables {
        Ok(()) => Check::ok("nftables", "nft answers"),
        Err(e) => Check::fail(
            "nftables",
            format!("nft does not work: {e}"),
            "isolation, policy and the edge need it: install nftables and load nf_tables",
        ),
    });
    out.push(match (f.ip_forward, f.needs_forwarding) {
        (Some(false), true) => Check::fail(
            "ip_forward",
            "net.ipv4.ip_forward = 0 but this host routes (floating IPs, gateway addresses)",
            "something turned it off after meshd: sysctl -w net.ipv4.ip_forward=1",
        ),
        (Some(on), _) => Check::ok(
            "ip_forward",
            format!("net.ipv4.ip_forward = {}", u8::from(on)),
        ),
        (None, _) => Check::skipped("ip_forward", "cannot read /proc/sys/net/ipv4/ip_forward"),
    });
    out.push(match &f.br_netfilter {
        None => Check::ok("br_netfilter", "not loaded"),
        Some(b) if b.is_empty() => Check::ok(
            "br_netfilter",
            "loaded; the mesh bridges opt out (nf_call_iptables = 0)",
        ),
        Some(b) => Check::warn(
            "br_netfilter",
            format!("bridged frames of {} pass the host's iptables", b.join(", ")),
            format!(
                "a FORWARD DROP policy (Docker) drops them: echo 0 > /sys/class/net/{}/bridge/nf_call_iptables (meshd sets it at start)",
                b[0]
            ),
        ),
    });
    out.push(underlay(f));
    out.push(match f.refused.as_slice() {
        [] => Check::ok("networks", "every network of the mesh lands here"),
        refused => Check::fail(
            "networks",
            refused
                .iter()
                .map(|(id, why)| format!("network {id} is not carried here: {why}"))
                .collect::<Vec<_>>()
                .join("; "),
            "remove the network (meshctl network rm) and create it again with a subnet that overlaps nothing, or permit it in meshd.toml (global_ipv6, max_networks)",
        ),
    });
    out
}

fn underlay(f: &Facts) -> Check {
    let Some((dev, mtu, v6)) = &f.underlay else {
        return Check::skipped(
            "underlay_mtu",
            "underlay device not found (no peer to route toward yet?)",
        );
    };
    let version = if *v6 {
        dataplane::IpVersion::V6
    } else {
        dataplane::IpVersion::V4
    };
    let fits = dataplane::overlay_mtu(*mtu, version);
    let over: Vec<String> = f
        .networks
        .iter()
        .filter(|(_, m)| *m > fits)
        .map(|(n, m)| format!("{n} ({m})"))
        .collect();
    let detail = format!("{dev} {mtu} bytes: overlay frames up to {fits} fit");
    let largest = f.networks.iter().map(|(_, m)| *m).max().unwrap_or(0);
    if over.is_empty() {
        return Check::ok("underlay_mtu", detail);
    }
    let remedy = if fits >= super::MIN_NETWORK_MTU {
        format!("create them with --mtu {fits} or less")
    } else {
        // The overhead is the same at any size.
        format!(
            "raise {dev}'s MTU to {} (a network MTU cannot go below {})",
            largest + (mtu - fits),
            super::MIN_NETWORK_MTU
        )
    };
    Check::warn(
        "underlay_mtu",
        format!("{detail}; networks over that: {}", over.join(", ")),
        format!("their large frames are answered with \"fragmentation needed\" and TCP's MSS is clamped; for whole frames {remedy}"),
    )
}

/// Reads the facts. `tap_name` is a name for the transient TAP (a `%d`
/// template, so the kernel picks a free one and no device is ever shared).
pub async fn gather(
    tap_name: &str,
    needs_forwarding: bool,
    bridges: &[String],
    underlay: Option<(String, u32, bool)>,
    networks: Vec<(String, u32)>,
    refused: Vec<(String, String)>,
) -> Facts {
    Facts {
        // Not persistent: the kernel removes it when the fd closes.
        tap: dataplane::tap::open(tap_name, true)
            .map(|t| t.has_vnet_hdr())
            .map_err(|e| e.to_string()),
        htb: htb(),
        nftables: nftables().await,
        ip_forward: read_flag(Path::new("/proc/sys/net/ipv4/ip_forward")),
        needs_forwarding,
        br_netfilter: Path::new("/proc/sys/net/bridge").exists().then(|| {
            bridges
                .iter()
                .filter(|b| {
                    read_flag(
                        &Path::new("/sys/class/net")
                            .join(b)
                            .join("bridge/nf_call_iptables"),
                    ) == Some(true)
                })
                .cloned()
                .collect()
        }),
        underlay,
        networks,
        refused,
    }
}

fn read_flag(p: &Path) -> Option<bool> {
    std::fs::read_to_string(p).ok().map(|s| s.trim() != "0")
}

fn htb() -> Htb {
    if Path::new("/sys/module/sch_htb").exists() {
        return Htb::Loaded;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let dir = Path::new("/lib/modules").join(release.trim());
    let listed = ["modules.builtin", "modules.dep"].iter().any(|f| {
        std::fs::read_to_string(dir.join(f))
            .map(|s| s.contains("/sch_htb.ko"))
            .unwrap_or(false)
    });
    if listed {
        Htb::Module
    } else {
        Htb::Missing
    }
}

async fn nftables() -> Result<(), String> {
    tokio::task::spawn_blocking(crate::kernel::nft::list_tables)
        .await
        .map_err(|e| e.to_string())?
        .map(drop)
        .map_err(|e| e.to_string())
}
