//! The load balancer: nftables rules in each client container's own
//! network namespace. A new connection to `VIP:PORT` is DNATed there, on
//! the output hook, to a target picked by `numgen inc` (round robin) over a
//! map with one slot per unit of weight; conntrack in that namespace keeps
//! the connection on its target and reverses the replies. Nothing is
//! masqueraded, so targets see the client's own address, and it works the
//! same for targets on this host and on others (no br_netfilter needed).
//!
//! The rules are text for `nft -f`: one script replaces the chains in one
//! transaction, and named counters (one per service target) outlive the
//! replacement, so connection counts survive changes of the target set.

use anyhow::Result;
use mesh_api::{Protocol, Scheduler};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use crate::kernel::nft::{self as kernel, Family};

/// The table meshd owns in every container namespace it load-balances for.
pub const TABLE: &str = "meshsvc";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    pub port: u16,
    pub weight: u32,
    /// Named counter of new connections ([`counter_name`]).
    pub counter: String,
}

/// One `VIP:PORT/PROTO` of a service and the targets in its rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    pub vip: Ipv4Addr,
    pub vip6: Ipv6Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    pub backends: Vec<Backend>,
}

/// The counter of new connections of `service_key` to `ip`: an nft
/// identifier (a hash, since names and ids may hold characters nft refuses).
pub fn counter_name(service_key: &str, ip: Ipv4Addr) -> String {
    // FNV-1a: stable across hosts and releases, unlike std's hasher.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in service_key.bytes().chain([b'/']).chain(ip.octets()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("c{h:016x}")
}

/// The numgen map of a frontend: slot ranges to `ADDR . PORT`. Round robin
/// gives each backend one slot; weighted round robin `weight` slots.
fn slots<A: std::fmt::Display>(scheduler: Scheduler, backends: &[(A, u16, u32)]) -> (u32, String) {
    let mut next = 0u32;
    let mut parts = Vec::new();
    for (addr, port, weight) in backends {
        let n = match scheduler {
            Scheduler::Rr => 1,
            Scheduler::Wrr => (*weight).max(1),
        };
        let key = if n == 1 {
            next.to_string()
        } else {
            format!("{}-{}", next, next + n - 1)
        };
        parts.push(format!("{key} : {addr} . {port}"));
        next += n;
    }
    (next, parts.join(", "))
}

fn dnat_rule(out: &mut String, family: &str, vip: &str, f: &Frontend, map: (u32, String)) {
    let (total, elems) = map;
    let _ = writeln!(
        out,
        "add rule inet {TABLE} out {family} daddr {vip} {} dport {} dnat {family} to numgen inc mod {total} map {{ {elems} }}",
        f.protocol, f.port
    );
}

/// The whole `nft -f` script for one namespace.
pub fn script(frontends: &[Frontend]) -> String {
    let mut out = String::new();
    let counters: BTreeSet<&str> = frontends
        .iter()
        .flat_map(|f| f.backends.iter().map(|b| b.counter.as_str()))
        .collect();
    let _ = writeln!(out, "table inet {TABLE} {{");
    for c in &counters {
        let _ = writeln!(out, "  counter {c} {{}}");
    }
    let _ = writeln!(
        out,
        "  chain out {{ type nat hook output priority -100; policy accept; }}"
    );
    let _ = writeln!(
        out,
        "  chain count {{ type filter hook output priority 0; policy accept; }}"
    );
    let _ = writeln!(out, "}}");
    let _ = writeln!(out, "flush chain inet {TABLE} out");
    let _ = writeln!(out, "flush chain inet {TABLE} count");
    for f in frontends {
        let vip6 = format!("{}", f.vip6);
        if f.backends.is_empty() {
            // Nobody to serve: fail fast instead of a connect timeout.
            let how = match f.protocol {
                Protocol::Tcp => " with tcp reset",
                Protocol::Udp => "",
            };
            for (fam, vip) in [("ip", f.vip.to_string()), ("ip6", vip6.clone())] {
                let _ = writeln!(
                    out,
                    "add rule inet {TABLE} out {fam} daddr {vip} {} dport {} reject{how}",
                    f.protocol, f.port
                );
            }
            continue;
        }
        let v4: Vec<_> = f
            .backends
            .iter()
            .map(|b| (b.ip, b.port, b.weight))
            .collect();
        dnat_rule(
            &mut out,
            "ip",
            &f.vip.to_string(),
            f,
            slots(f.scheduler, &v4),
        );
        let v6: Vec<_> = f
            .backends
            .iter()
            .filter_map(|b| Some((format!("[{}]", b.ip6?), b.port, b.weight)))
            .collect();
        if !v6.is_empty() {
            dnat_rule(&mut out, "ip6", &vip6, f, slots(f.scheduler, &v6));
        }
        for b in &f.backends {
            let _ = writeln!(
                out,
                "add rule inet {TABLE} count ct state new meta l4proto {p} ct original ip daddr {} ct original proto-dst {} ip daddr {} {p} dport {} counter name {}",
                f.vip, f.port, b.ip, b.port, b.counter, p = f.protocol
            );
            if let Some(ip6) = b.ip6 {
                let _ = writeln!(
                    out,
                    "add rule inet {TABLE} count ct state new meta l4proto {p} ct original ip6 daddr {} ct original proto-dst {} ip6 daddr {ip6} {p} dport {} counter name {}",
                    f.vip6, f.port, b.port, b.counter, p = f.protocol
                );
            }
        }
    }
    out
}

/// Installs `script` (from [`script`]) in `netns`, atomically.
pub fn apply(netns: &Path, script: &str) -> Result<()> {
    Ok(kernel::run_in(netns, script)?)
}

/// Removes meshd's table from `netns` (no service left for it).
pub fn remove(netns: &Path) -> Result<()> {
    Ok(kernel::delete_table(Some(netns), Family::Inet, TABLE)?)
}

/// The counters (name → packets, i.e. new connections) in `netns`.
pub fn read_counters(netns: &Path) -> Result<BTreeMap<String, u64>> {
    Ok(kernel::counters(Some(netns), Family::Inet, TABLE)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(last: u8, port: u16, weight: u32, v6: bool) -> Backend {
        let ip = Ipv4Addr::new(10, 0, 0, last);
        Backend {
            ip,
            ip6: v6.then(|| format!("fd00::{last}").parse().unwrap()),
            port,
            weight,
            counter: counter_name("blue/web", ip),
        }
    }

    fn frontend(scheduler: Scheduler, backends: Vec<Backend>) -> Frontend {
        Frontend {
            vip: Ipv4Addr::new(10, 0, 0, 200),
            vip6: "fd00::c8".parse().unwrap(),
            port: 80,
            protocol: Protocol::Tcp,
            scheduler,
            backends,
        }
    }

    #[test]
    fn round_robin_gives_one_slot_each() {
        let s = script(&[frontend(
            Scheduler::Rr,
            vec![backend(2, 8080, 3, true), backend(3, 8080, 1, false)],
        )]);
        assert!(
            s.contains("ip daddr 10.0.0.200 tcp dport 80 dnat ip to numgen inc mod 2 map { 0 : 10.0.0.2 . 8080, 1 : 10.0.0.3 . 8080 }"),
            "{s}"
        );
        // Only backends with an IPv6 address behind the IPv6 VIP.
        assert!(
            s.contains("ip6 daddr fd00::c8 tcp dport 80 dnat ip6 to numgen inc mod 1 map { 0 : [fd00::2] . 8080 }"),
            "{s}"
        );
        assert!(s.starts_with("table inet meshsvc {"));
        assert!(s.contains("flush chain inet meshsvc out"));
    }

    #[test]
    fn weighted_round_robin_gives_slots_by_weight() {
        let s = script(&[frontend(
            Scheduler::Wrr,
            vec![backend(2, 80, 3, false), backend(3, 81, 1, false)],
        )]);
        assert!(
            s.contains("numgen inc mod 4 map { 0-2 : 10.0.0.2 . 80, 3 : 10.0.0.3 . 81 }"),
            "{s}"
        );
    }

    #[test]
    fn no_backend_rejects_and_counters_are_declared_once() {
        let mut udp = frontend(Scheduler::Rr, vec![]);
        udp.protocol = Protocol::Udp;
        let s = script(&[
            udp,
            frontend(Scheduler::Rr, vec![backend(2, 80, 1, false)]),
            frontend(Scheduler::Rr, vec![]),
        ]);
        assert!(
            s.contains("ip daddr 10.0.0.200 udp dport 80 reject\n"),
            "{s}"
        );
        assert!(s.contains("tcp dport 80 reject with tcp reset"), "{s}");
        let c = counter_name("blue/web", Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(s.matches(&format!("counter {c} {{}}")).count(), 1);
        assert!(s.contains(&format!("counter name {c}")));
    }

    #[test]
    fn counter_names_are_stable_identifiers() {
        let a = counter_name("blue/web", Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(a, counter_name("blue/web", Ipv4Addr::new(10, 0, 0, 2)));
        assert_ne!(a, counter_name("blue/web", Ipv4Addr::new(10, 0, 0, 3)));
        assert_ne!(a, counter_name("blue/db", Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(a.len(), 17);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
