//! The edge table on the host: `ip <prefix>_edge`, owned by meshd, rebuilt
//! atomically on every change and deleted by `meshd --cleanup`.
//!
//! - prerouting: a floating IP's `PUBLIC_PORT` is DNATed to the service's
//!   targets in rotation (round robin), wherever they run;
//! - postrouting: what is DNATed towards a network leaves through this
//!   host's own address on it (so replies come back here and leave from
//!   the floating IP), and containers of egress networks leave masqueraded
//!   behind the host's underlay address;
//! - raw: frames bridged inside a network are not tracked. On hosts with
//!   `br_netfilter` (Docker, Kubernetes) they pass the IP hooks on the
//!   bridge before reaching the host address's veth, and conntrack would
//!   bind the connection there, untranslated, before the routed pass that
//!   must NAT it;
//! - forward: anything else sent to a floating IP is refused (this host
//!   answers ARP for it but does not own it at layer 3, so it would
//!   otherwise route it back out).
//!
//! What may be forwarded at all is the isolation table's decision
//! ([`crate::isolation`]).

use mesh_api::Protocol;

use crate::kernel::nft::{self as kernel, Family};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// One public port of a floating IP and the targets behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub fip: Ipv4Addr,
    pub port: u16,
    pub protocol: Protocol,
    pub targets: Vec<(Ipv4Addr, u16)>,
}

/// The conntrack zone of frames bridged inside a mesh network (see
/// [`ruleset`]); routed traffic stays in zone 0.
pub const BRIDGED_CT_ZONE: u16 = 7800;

pub fn table_name(prefix: &str) -> String {
    kernel::table_name(prefix, "edge")
}

/// The `nft -f` script for the floating IPs held here (`held`, with their
/// forwards) and the host interfaces of egress networks.
pub fn ruleset(prefix: &str, held: &[Ipv4Addr], forwards: &[Forward], egress: &[String]) -> String {
    let table = table_name(prefix);
    let mut s = String::new();
    let _ = writeln!(s, "table ip {table} {{}}\ndelete table ip {table}");
    let _ = writeln!(s, "table ip {table} {{");
    let elems = if held.is_empty() {
        String::new()
    } else {
        let v: Vec<String> = held.iter().map(|a| a.to_string()).collect();
        format!("elements = {{ {} }}", v.join(", "))
    };
    let _ = writeln!(s, "  set fips {{ type ipv4_addr; {elems} }}");
    // Frames bridged inside a network pass the IP hooks too (br_netfilter).
    // Tracked in the routed zone, their entry (untranslated) would be found
    // again by the routed pass of the same packet and no NAT would happen;
    // untracked, network policy (issue 14) could not tell replies. So they
    // get a conntrack zone of their own.
    let _ = writeln!(
        s,
        "  chain raw {{\n    type filter hook prerouting priority raw; policy accept;\n    iifname \"{prefix}b*\" ct zone set {BRIDGED_CT_ZONE}\n  }}"
    );
    let _ = writeln!(
        s,
        "  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;"
    );
    for f in forwards.iter().filter(|f| !f.targets.is_empty()) {
        let map: Vec<String> = f
            .targets
            .iter()
            .enumerate()
            .map(|(i, (ip, port))| format!("{i} : {ip} . {port}"))
            .collect();
        let _ = writeln!(
            s,
            "    ip daddr {} {} dport {} dnat to numgen inc mod {} map {{ {} }}",
            f.fip,
            f.protocol,
            f.port,
            f.targets.len(),
            map.join(", ")
        );
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(
        s,
        "  chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;"
    );
    let _ = writeln!(s, "    oifname \"{prefix}x*\" ct status dnat masquerade");
    if !egress.is_empty() {
        let ifs: Vec<String> = egress.iter().map(|i| format!("\"{i}\"")).collect();
        let _ = writeln!(
            s,
            "    iifname {{ {} }} oifname != \"{prefix}*\" masquerade",
            ifs.join(", ")
        );
    }
    let _ = writeln!(s, "  }}");
    let _ = writeln!(
        s,
        "  chain forward {{\n    type filter hook forward priority filter - 20; policy accept;"
    );
    let _ = writeln!(
        s,
        "    ip daddr @fips meta l4proto tcp reject with tcp reset"
    );
    let _ = writeln!(s, "    ip daddr @fips drop\n  }}\n}}");
    s
}

/// Installs (or replaces) the table.
pub fn apply(script: &str) -> anyhow::Result<()> {
    Ok(kernel::run(script)?)
}

/// Deletes the table (`--cleanup`); nothing to do if it is not there.
pub fn remove(prefix: &str) -> anyhow::Result<()> {
    Ok(kernel::delete_table(None, Family::Ip, &table_name(prefix))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_masquerade_and_refusals() {
        let fip = Ipv4Addr::new(198, 18, 0, 200);
        let s = ruleset(
            "mesh-",
            &[fip],
            &[
                Forward {
                    fip,
                    port: 80,
                    protocol: Protocol::Tcp,
                    targets: vec![
                        (Ipv4Addr::new(10, 0, 0, 2), 8080),
                        (Ipv4Addr::new(10, 0, 0, 3), 8080),
                    ],
                },
                Forward {
                    fip,
                    port: 81,
                    protocol: Protocol::Tcp,
                    targets: vec![],
                },
            ],
            &["mesh-x0000abcd".into()],
        );
        assert!(s.contains("table ip mesh__edge {"), "{s}");
        assert!(s.contains("iifname \"mesh-b*\" ct zone set 7800"), "{s}");
        assert!(s.contains(
            "ip daddr 198.18.0.200 tcp dport 80 dnat to numgen inc mod 2 map { 0 : 10.0.0.2 . 8080, 1 : 10.0.0.3 . 8080 }"
        ), "{s}");
        assert!(
            !s.contains("dport 81"),
            "no targets: refused, not forwarded"
        );
        assert!(s.contains("elements = { 198.18.0.200 }"));
        assert!(s.contains("iifname { \"mesh-x0000abcd\" } oifname != \"mesh-*\" masquerade"));
        let empty = ruleset("mesh-", &[], &[], &[]);
        assert!(!empty.contains("elements"));
        assert!(!empty.contains("iifname {"));
    }
}
