//! Network policy on the host: an nftables table meshd owns (`inet
//! <prefix>_policy`), rebuilt atomically whenever rules, labels, endpoints
//! or settings change, kept across a normal stop (so a restart never opens
//! a deny network) and deleted by `meshd --cleanup`.
//!
//! Why `inet` and not `bridge`: this kernel's bridge family has no
//! conntrack (`NF_CONNTRACK_BRIDGE` is off), so bridged IP frames of deny
//! networks are passed through the IP hooks instead (the bridge's
//! `nf_call_iptables`), where conntrack tells replies apart. There, the
//! output interface of a bridged frame is the bridge, which is one per
//! network, so a chain per bridge never sees another network's frames.
//!
//! Enforced where frames are delivered: a frame to a container of this
//! host is checked here, whichever host sent it; a frame leaving through
//! the TAP is checked by the receiving host. Every packet of the original
//! direction is checked against the rules (so removing a rule cuts an
//! established connection at once); only the reply direction of a tracked
//! connection passes without a rule.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};

use crate::kernel::nft::{self as kernel, Family};
use mesh_api::{PolicyPort, Protocol};

/// Sources a rule admits: `None` for any container of the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub from: Option<(Vec<Ipv4Addr>, Vec<Ipv6Addr>)>,
    pub ports: Vec<PolicyPort>,
}

/// A container of this host on a deny network, with what may reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub network: String,
    pub ip: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
    pub allow: Vec<Allow>,
}

/// A deny network's bridge on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyNetwork {
    pub wire: u32,
    pub bridge: String,
    pub service4: Ipv4Addr,
    pub service6: Ipv6Addr,
    /// The subnet's broadcast address.
    pub broadcast4: Ipv4Addr,
    pub containers: Vec<Guarded>,
}

pub fn table_name(prefix: &str) -> String {
    kernel::table_name(prefix, "policy")
}

/// The counter of frames dropped on their way to `ip` of network `wire`.
pub fn counter_name(wire: u32, ip: Ipv4Addr) -> String {
    format!("drop_{wire:08x}_{:08x}", u32::from(ip))
}

fn set<T: std::fmt::Display>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    format!("{{ {} }}", v.join(", "))
}

fn port_matches(ports: &[PolicyPort]) -> Vec<String> {
    if ports.is_empty() {
        return vec![String::new()];
    }
    let of = |proto: Protocol| -> Vec<u16> {
        let mut v: Vec<u16> = ports
            .iter()
            .filter(|p| p.protocol.is_none_or(|x| x == proto))
            .map(|p| p.port)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut out = Vec::new();
    for (proto, name) in [(Protocol::Tcp, "tcp"), (Protocol::Udp, "udp")] {
        let list = of(proto);
        if !list.is_empty() {
            out.push(format!(" {name} dport {}", set(&list)));
        }
    }
    out
}

fn allow_lines(a: &Allow, out: &mut String) {
    for ports in port_matches(&a.ports) {
        match &a.from {
            None => {
                let _ = writeln!(out, "        {} accept", ports.trim_start());
            }
            Some((v4, v6)) => {
                if !v4.is_empty() {
                    let _ = writeln!(out, "        ip saddr {}{ports} accept", set(v4));
                }
                if !v6.is_empty() {
                    let _ = writeln!(out, "        ip6 saddr {}{ports} accept", set(v6));
                }
            }
        }
    }
}

/// The nft script that (re)creates the table; declare-then-delete makes
/// the replacement atomic and idempotent in one transaction.
pub fn ruleset(prefix: &str, nets: &[DenyNetwork]) -> String {
    let table = table_name(prefix);
    let mut chains = String::new();
    let mut jumps = String::new();
    let mut counters = String::new();
    for n in nets {
        let w = n.wire;
        let _ = writeln!(jumps, "        oifname \"{}\" jump net_{w:08x}", n.bridge);
        let _ = writeln!(chains, "    chain net_{w:08x} {{");
        chains.push_str("        ct direction reply accept\n");
        // Routers are the hosts': a container's router advertisement
        // would hand its neighbours a prefix no rule names.
        chains.push_str(
            "        icmpv6 type { nd-router-advert, nd-redirect } drop\n        icmp type redirect drop\n",
        );
        chains.push_str(
            "        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept\n",
        );
        let _ = writeln!(chains, "        ip daddr {} accept", n.service4);
        let _ = writeln!(chains, "        ip6 daddr {} accept", n.service6);
        // What no rule names: link-local and group addresses (they would
        // reach containers around the rules).
        let _ = writeln!(
            chains,
            "        ip daddr {{ 224.0.0.0/4, 255.255.255.255, {} }} drop",
            n.broadcast4
        );
        chains.push_str("        ip6 daddr { fe80::/10, ff00::/8 } drop\n");
        let v4: Vec<String> = n
            .containers
            .iter()
            .map(|c| format!("{} : jump to_{}", c.ip, counter_name(w, c.ip)))
            .collect();
        let v6: Vec<String> = n
            .containers
            .iter()
            .filter_map(|c| Some(format!("{} : jump to_{}", c.ip6?, counter_name(w, c.ip))))
            .collect();
        if !v4.is_empty() {
            let _ = writeln!(chains, "        ip daddr vmap {}", set(&v4));
        }
        if !v6.is_empty() {
            let _ = writeln!(chains, "        ip6 daddr vmap {}", set(&v6));
        }
        chains.push_str("    }\n");
        for c in &n.containers {
            let name = counter_name(w, c.ip);
            let _ = writeln!(counters, "    counter {name} {{ }}");
            let _ = writeln!(chains, "    chain to_{name} {{");
            for a in &c.allow {
                allow_lines(a, &mut chains);
            }
            let _ = writeln!(chains, "        counter name \"{name}\" drop");
            chains.push_str("    }\n");
        }
    }
    format!(
        r#"table inet {table} {{}}
delete table inet {table}
table inet {table} {{
{counters}    chain forward {{
        type filter hook forward priority filter - 5; policy accept;
{jumps}    }}
{chains}}}
"#
    )
}

/// Installs (or replaces) the table.
pub fn apply(prefix: &str, nets: &[DenyNetwork]) -> Result<()> {
    Ok(kernel::run(&ruleset(prefix, nets))?)
}

/// Deletes the table (`--cleanup`).
pub fn remove(prefix: &str) -> Result<()> {
    Ok(kernel::delete_table(
        None,
        Family::Inet,
        &table_name(prefix),
    )?)
}

/// The table's counters now (name → packets); empty if it is not there.
pub fn read_counters(prefix: &str) -> BTreeMap<String, u64> {
    kernel::counters(None, Family::Inet, &table_name(prefix)).unwrap_or_default()
}

/// Passes the bridged IP frames of `bridge` through the IP hooks (where
/// the table and conntrack are). Idempotent.
pub fn route_through_ip_hooks(bridge: &str) -> Result<()> {
    for hook in ["nf_call_iptables", "nf_call_ip6tables"] {
        let path = format!("/sys/class/net/{bridge}/bridge/{hook}");
        std::fs::write(&path, "1").with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deny_network_admits_only_its_rules_and_replies() {
        let web: Ipv4Addr = "10.40.0.2".parse().unwrap();
        let db: Ipv4Addr = "10.40.0.3".parse().unwrap();
        let net = DenyNetwork {
            wire: 0xabcd,
            bridge: "mesh-b0000abcd".into(),
            service4: "10.40.0.254".parse().unwrap(),
            service6: "fd00::fe".parse().unwrap(),
            broadcast4: "10.40.0.255".parse().unwrap(),
            containers: vec![
                Guarded {
                    network: "blue".into(),
                    ip: db,
                    ip6: Some("fd00::3".parse().unwrap()),
                    allow: vec![Allow {
                        from: Some((vec![web], vec!["fd00::2".parse().unwrap()])),
                        ports: vec![PolicyPort {
                            port: 5432,
                            protocol: Some(Protocol::Tcp),
                        }],
                    }],
                },
                Guarded {
                    network: "blue".into(),
                    ip: web,
                    ip6: None,
                    allow: vec![],
                },
            ],
        };
        let r = ruleset("mesh-", &[net]);
        assert!(r.contains("table inet mesh__policy {"), "{r}");
        assert!(r.contains("oifname \"mesh-b0000abcd\" jump net_0000abcd"));
        assert!(r.contains("ct direction reply accept"));
        assert!(r.contains("ip6 daddr { fe80::/10, ff00::/8 } drop"));
        assert!(r.contains("255.255.255.255, 10.40.0.255 } drop"));
        assert!(r.contains("10.40.0.3 : jump to_drop_0000abcd_0a280003"));
        assert!(r.contains("ip saddr { 10.40.0.2 } tcp dport { 5432 } accept"));
        assert!(r.contains("ip6 saddr { fd00::2 } tcp dport { 5432 } accept"));
        assert!(!r.contains("udp dport"), "the port is TCP only");
        // web admits nothing: its chain only counts and drops.
        let web_chain = r.split("chain to_drop_0000abcd_0a280002 {").nth(1).unwrap();
        let body = web_chain.split('}').next().unwrap();
        assert_eq!(body.trim(), "counter name \"drop_0000abcd_0a280002\" drop");
        // No deny network: the hook stays, passing everything.
        let empty = ruleset("x", &[]);
        assert!(empty.contains("policy accept;"));
        assert!(!empty.contains("jump"));
    }
}
