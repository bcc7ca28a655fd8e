//! Isolation on the host: an nftables table meshd owns (`inet
//! <prefix>_isolation`), rebuilt atomically whenever the networks here
//! change and deleted by `meshd --cleanup`.
//!
//! Every network's bridge carries its service addresses and its subnets as
//! routes in the host namespace, so with forwarding on (usual on Docker and
//! Kubernetes hosts) the host would route between networks meant to be
//! apart, and host services on `[::]` would answer every container. The
//! table, whatever the forwarding sysctls:
//! - drops everything forwarded from or to a bridge of ours (traffic
//!   between overlay networks, or between one and the outside) — except
//!   frames bridged within one bridge, which hosts with `br_netfilter`
//!   (Docker, Kubernetes) pass through this hook too;
//! - accepts from a bridge only DNS (udp/tcp 53) and ping to *that*
//!   bridge's own service addresses, and IPv6 neighbour discovery, and
//!   drops the rest of what containers send to the host: the service
//!   address serves DNS and nothing else, whatever routes the host has
//!   (`meshctl expose` gives the host a route back to containers).
//!
//! Traffic inside a network never reaches these hooks: it is bridged
//! between veths and the data plane's TAP.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::Result;

use crate::kernel::nft::{self, Family};

/// One network's bridge and the addresses containers may reach on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    pub name: String,
    pub service4: Ipv4Addr,
    pub service6: Ipv6Addr,
}

/// The edge's exceptions (see [`crate::edge`]): host interfaces on
/// networks (`<prefix>x…`) are closed like bridges, except what these open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeOpenings {
    /// Host interfaces of egress networks: may forward out (not into
    /// another network), and get the replies back.
    pub egress: Vec<String>,
    /// Host interfaces of exposed networks: containers may reach the host.
    pub exposed: Vec<String>,
}

/// The table's name for a device prefix.
pub fn table_name(prefix: &str) -> String {
    nft::table_name(prefix, "isolation")
}

/// The nft script that (re)creates the table: declare-then-delete makes
/// the replacement atomic and idempotent in one transaction.
pub fn ruleset(prefix: &str, bridges: &[Bridge], edge: &EdgeOpenings) -> String {
    let table = table_name(prefix);
    let all = format!("\"{prefix}b*\"");
    let hostif = format!("\"{prefix}x*\"");
    let ifset = |v: &[String]| {
        let q: Vec<String> = v.iter().map(|i| format!("\"{i}\"")).collect();
        format!("{{ {} }}", q.join(", "))
    };
    let mut fwd_edge = String::new();
    let mut in_edge = String::new();
    if !edge.egress.is_empty() {
        let e = ifset(&edge.egress);
        fwd_edge.push_str(&format!(
            "        iifname {e} oifname != \"{prefix}*\" accept\n        oifname {e} ct state established,related accept\n"
        ));
    }
    if !edge.exposed.is_empty() {
        in_edge.push_str(&format!(
            "        iifname {} accept\n",
            ifset(&edge.exposed)
        ));
    }
    let mut svc4 = Vec::new();
    let mut svc6 = Vec::new();
    let mut same = Vec::new();
    for b in bridges {
        same.push(format!("\"{0}\" . \"{0}\"", b.name));
        svc4.push(format!("\"{}\" . {}", b.name, b.service4));
        svc6.push(format!("\"{}\" . {}", b.name, b.service6));
    }
    let elements = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!("elements = {{ {} }}", v.join(", "))
        }
    };
    format!(
        r#"table inet {table} {{}}
delete table inet {table}
table inet {table} {{
    set service4 {{ type ifname . ipv4_addr; {e4} }}
    set service6 {{ type ifname . ipv6_addr; {e6} }}
    set same_bridge {{ type ifname . ifname; {es} }}
    chain forward {{
        type filter hook forward priority filter - 10; policy accept;
        iifname . oifname @same_bridge accept
        ct status dnat oifname {hostif} accept
        ct status dnat iifname {hostif} accept
{fwd_edge}        iifname {hostif} drop
        oifname {hostif} drop
        iifname {all} drop
        oifname {all} drop
    }}
    chain input {{
        type filter hook input priority filter - 10; policy accept;
        iifname {hostif} ct state established,related accept
{in_edge}        iifname {hostif} icmp type echo-request accept
        iifname {hostif} drop
        iifname != {all} accept
        iifname . ip daddr @service4 meta l4proto {{ tcp, udp }} th dport 53 accept
        iifname . ip daddr @service4 icmp type echo-request accept
        iifname . ip6 daddr @service6 meta l4proto {{ tcp, udp }} th dport 53 accept
        iifname . ip6 daddr @service6 icmpv6 type echo-request accept
        icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept
        drop
    }}
}}
"#,
        e4 = elements(&svc4),
        e6 = elements(&svc6),
        es = elements(&same),
    )
}

/// The table's inputs and the script last installed: the daemon sets the
/// bridges, the edge its openings, and either change rebuilds the table
/// (only when the script changes).
pub struct Isolation {
    prefix: String,
    state: std::sync::Mutex<(Vec<Bridge>, EdgeOpenings, Option<String>)>,
}

impl Isolation {
    pub fn new(prefix: &str) -> Isolation {
        Isolation {
            prefix: prefix.to_string(),
            state: std::sync::Mutex::new(Default::default()),
        }
    }

    pub fn set_bridges(&self, bridges: Vec<Bridge>) -> Result<()> {
        self.update(|s| s.0 = bridges)
    }

    pub fn set_edge(&self, edge: EdgeOpenings) -> Result<()> {
        self.update(|s| s.1 = edge)
    }

    fn update(
        &self,
        f: impl FnOnce(&mut (Vec<Bridge>, EdgeOpenings, Option<String>)),
    ) -> Result<()> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        let script = ruleset(&self.prefix, &s.0, &s.1);
        if s.2.as_ref() == Some(&script) {
            return Ok(());
        }
        s.2 = None;
        nft::run(&script)?;
        s.2 = Some(script);
        Ok(())
    }
}

/// Deletes the table (`--cleanup`); nothing to do if it is not there.
pub fn remove(prefix: &str) -> Result<()> {
    Ok(nft::delete_table(None, Family::Inet, &table_name(prefix))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_names_each_bridge_with_its_own_service_addresses() {
        let rules = ruleset(
            "mesh-",
            &[Bridge {
                name: "mesh-b0000abcd".into(),
                service4: Ipv4Addr::new(10, 40, 0, 254),
                service6: "fd00::fe".parse().unwrap(),
            }],
            &EdgeOpenings::default(),
        );
        assert!(rules.contains("table inet mesh__isolation {"));
        assert!(rules.contains("\"mesh-b0000abcd\" . 10.40.0.254"));
        assert!(rules.contains("\"mesh-b0000abcd\" . fd00::fe"));
        assert!(rules.contains("iifname \"mesh-b*\" drop"));
        assert!(rules.contains("\"mesh-b0000abcd\" . \"mesh-b0000abcd\""));
        // The service address answers DNS and ping, nothing else.
        assert!(rules.contains("@service4 meta l4proto { tcp, udp } th dport 53 accept"));
        assert!(rules.contains("@service6 icmpv6 type echo-request accept"));
        assert!(!rules.contains("@service4 accept"));
        // No bridges: empty sets, still a valid table that drops.
        let empty = ruleset("x", &[], &EdgeOpenings::default());
        assert!(!empty.contains("elements"));
        assert!(empty.contains("oifname \"xb*\" drop"));
        // Host interfaces are closed unless the edge opens them.
        assert!(empty.contains("iifname \"xx*\" drop"));
        let open = ruleset(
            "x",
            &[],
            &EdgeOpenings {
                egress: vec!["xx00000001".into()],
                exposed: vec!["xx00000002".into()],
            },
        );
        assert!(open.contains("iifname { \"xx00000001\" } oifname != \"x*\" accept"));
        assert!(open.contains("oifname { \"xx00000001\" } ct state established,related accept"));
        assert!(open.contains("iifname { \"xx00000002\" } accept"));
    }
}
