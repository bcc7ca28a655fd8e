//! Port security: a container is what it was attached as. An nftables
//! table meshd owns (`bridge <prefix>_ports`), rebuilt atomically whenever
//! this host's attachments change, kept across a normal stop and deleted
//! by `meshd --cleanup`.
//!
//! On the host end of every container veth, in the bridge family (so
//! before the bridge learns, forwards or floods anything):
//! - **from the container** a frame must carry the attachment's MAC, and
//!   its IPv4/IPv6 source, ARP sender and neighbour-advertisement target
//!   must be one of the attachment's addresses (`0.0.0.0` for DHCP
//!   discovery, `::` for duplicate address detection, and the link-local
//!   address its MAC gives); router advertisements, redirects and DHCP
//!   server replies never come from a container, nor does any ethertype
//!   but IPv4, IPv6 and ARP (no VLAN tags, no other protocols);
//! - **from the container** broadcast and multicast frames (every peer
//!   gets a copy) pass at [`FLOOD_RATE`] a second with a burst of
//!   [`FLOOD_BURST`]; the rest are dropped as [`Reason::Flood`];
//! - **to the container** a unicast IP packet must be addressed to the
//!   container's own address on that network: another address (a second
//!   network's, routed through it by a neighbour) never reaches it;
//! - a veth of ours that is no attachment (yet) passes nothing.
//!
//! Why this makes policy mean something: rules match `ip saddr`, and a
//! source address is only believed because of these checks. The way
//! libvirt's `clean-traffic`, Calico and Cilium do it. Each drop is
//! counted per attachment and per [`Reason`].

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::kernel::nft::{self as kernel, Family};

/// One container's port on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The host end of its veth (a port of the network's bridge).
    pub host_if: String,
    pub network: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    /// The subnet's broadcast address (a container may receive it).
    pub broadcast4: Ipv4Addr,
    pub ip6: Option<Ipv6Addr>,
}

/// Broadcast/multicast frames a second a container may send. ARP, IPv6
/// neighbour discovery and MLD, DHCP and mDNS need a few a second; the
/// burst lets a container resolve a couple of hundred neighbours at
/// once. A flood (a packet socket sends 10^5 a second and more) is cut
/// at the port instead of being copied to every peer.
pub const FLOOD_RATE: u32 = 200;
/// Frames above the rate a container may send at once.
pub const FLOOD_BURST: u32 = 400;

/// Why a frame was dropped at a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// Source MAC not the attachment's.
    Mac,
    /// Neither IPv4, IPv6 nor ARP.
    Ethertype,
    /// ARP sender MAC or address not the attachment's.
    Arp,
    /// IPv4 source not the attachment's.
    Ip,
    /// IPv6 source not the attachment's.
    Ip6,
    /// A neighbour advertisement for an address not the attachment's.
    Nd,
    /// A router advertisement or a redirect (IPv4 or IPv6).
    Router,
    /// A DHCP server's message.
    Dhcp,
    /// To the container, addressed to an address not its own.
    Destination,
    /// A broadcast or multicast frame over [`FLOOD_RATE`].
    Flood,
}

impl Reason {
    pub const ALL: [Reason; 10] = [
        Reason::Mac,
        Reason::Ethertype,
        Reason::Arp,
        Reason::Ip,
        Reason::Ip6,
        Reason::Nd,
        Reason::Router,
        Reason::Dhcp,
        Reason::Destination,
        Reason::Flood,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Mac => "mac",
            Reason::Ethertype => "ethertype",
            Reason::Arp => "arp",
            Reason::Ip => "ip",
            Reason::Ip6 => "ip6",
            Reason::Nd => "nd",
            Reason::Router => "router",
            Reason::Dhcp => "dhcp",
            Reason::Destination => "destination",
            Reason::Flood => "flood",
        }
    }
}

pub fn table_name(prefix: &str) -> String {
    kernel::table_name(prefix, "ports")
}

/// Deletes the table (`--cleanup`).
pub fn remove(prefix: &str) -> Result<(), kernel::NftError> {
    kernel::delete_table(None, Family::Bridge, &table_name(prefix))
}

/// The counter of `reason` drops at `host_if`.
pub fn counter_name(host_if: &str, reason: Reason) -> String {
    let clean: String = host_if
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{clean}_{}", reason.as_str())
}

/// Frames dropped at a veth of ours that is no attachment.
pub const UNATTACHED_COUNTER: &str = "unattached";

/// The link-local address the kernel gives an interface with `mac`
/// (EUI-64: meshd sets `addr_gen_mode` 0 on the container's interface).
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([mac[0] ^ 0x02, mac[1]]),
        u16::from_be_bytes([mac[2], 0xff]),
        u16::from_be_bytes([0xfe, mac[3]]),
        u16::from_be_bytes([mac[4], mac[5]]),
    )
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The nft script that (re)creates the table for `ports` (container
/// veths are named `<prefix>v…`).
pub fn ruleset(prefix: &str, ports: &[Port]) -> String {
    let mut counters = String::new();
    let mut from = Vec::new();
    let mut to = Vec::new();
    let mut chains = String::new();
    let _ = writeln!(counters, "    counter {UNATTACHED_COUNTER} {{ }}");
    for (i, p) in ports.iter().enumerate() {
        for r in Reason::ALL {
            let _ = writeln!(
                counters,
                "    counter {} {{ }}",
                counter_name(&p.host_if, r)
            );
        }
        // `goto`: a frame that passes a port's chain is done with this
        // hook (the policy accepts it), it does not fall to the rule that
        // drops at unknown veths.
        from.push(format!("\"{}\" : goto from_{i}", p.host_if));
        to.push(format!("\"{}\" : goto to_{i}", p.host_if));
        let c = |r: Reason| format!("counter name \"{}\" drop", counter_name(&p.host_if, r));
        let mac = mac_text(p.mac);
        let ll = link_local(p.mac);
        let own6 = match p.ip6 {
            Some(ip6) => format!("{{ {ip6}, {ll} }}"),
            None => format!("{{ {ll} }}"),
        };
        let _ = write!(
            chains,
            // Frames of a connection a container has open are the common
            // case: one MAC compare, one ethertype dispatch, and TCP or
            // plain UDP from its own address is done.
            r#"    chain from_{i} {{
        ether saddr != {mac} {mac_drop}
        ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 limit rate over {FLOOD_RATE}/second burst {FLOOD_BURST} packets {flood}
        ether type vmap {{ ip : goto ip4_{i}, ip6 : goto ip6_{i}, arp : goto arp_{i} }}
        {ethertype}
    }}
    chain ip4_{i} {{
        ip saddr {ip} meta l4proto tcp accept
        ip saddr {ip} udp sport != 67 accept
        ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept
        ip saddr != {ip} {ip_drop}
        icmp type redirect {router}
        udp sport 67 {dhcp}
    }}
    chain arp_{i} {{
        arp saddr ether != {mac} {arp}
        arp saddr ip != {{ {ip}, 0.0.0.0 }} {arp}
    }}
    chain ip6_{i} {{
        ip6 saddr :: icmpv6 type {{ mld-listener-report, mld2-listener-report }} accept
        ip6 saddr :: icmpv6 type nd-neighbor-solicit goto advert_{i}
        ip6 saddr != {own6} {ip6_drop}
        meta l4proto tcp accept
        icmpv6 type {{ nd-router-advert, nd-redirect }} {router}
        icmpv6 type nd-neighbor-advert goto advert_{i}
        udp sport 547 {dhcp}
    }}
    chain advert_{i} {{
"#,
            ip = p.ip,
            mac_drop = c(Reason::Mac),
            ethertype = c(Reason::Ethertype),
            arp = c(Reason::Arp),
            ip_drop = c(Reason::Ip),
            ip6_drop = c(Reason::Ip6),
            router = c(Reason::Router),
            dhcp = c(Reason::Dhcp),
            flood = c(Reason::Flood),
        );
        // Advertisements, and solicitations from `::` (duplicate address
        // detection), only for the container's own addresses: it may not
        // fail a neighbour's DAD. nft 1.0.6 has no `icmpv6 taddr`: the
        // target is 128 bits at offset 64 of the ICMPv6 header.
        for a in p.ip6.into_iter().chain([ll]) {
            let _ = writeln!(chains, "        @th,64,128 0x{:032x} accept", u128::from(a));
        }
        let _ = write!(
            chains,
            r#"        {nd}
    }}
    chain to_{i} {{
        ip daddr {ip} accept
        ether type != {{ ip, ip6, arp }} {dst}
        ip daddr != {{ {bcast}, 255.255.255.255, 224.0.0.0/4 }} {dst}
        ip6 daddr != {{ {own6_list}, ff00::/8 }} {dst}
    }}
"#,
            nd = c(Reason::Nd),
            ip = p.ip,
            bcast = p.broadcast4,
            own6_list = own6.trim_start_matches("{ ").trim_end_matches(" }"),
            dst = c(Reason::Destination),
        );
    }
    let vmap = |key: &str, v: &[String]| match v.is_empty() {
        true => String::new(),
        false => format!("        {key} vmap {{ {} }}\n", v.join(", ")),
    };
    let body = format!(
        r#"{counters}    chain from_ports {{
        type filter hook prerouting priority filter; policy accept;
{from}        iifname "{prefix}v*" counter name "{UNATTACHED_COUNTER}" drop
    }}
    chain to_ports {{
        type filter hook forward priority filter; policy accept;
{to}    }}
{chains}"#,
        from = vmap("iifname", &from),
        to = vmap("oifname", &to),
    );
    kernel::replace_table(Family::Bridge, &table_name(prefix), &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> Port {
        Port {
            host_if: "mesh-v0000abcd".into(),
            network: "blue".into(),
            mac: [0x02, 0x42, 0x0a, 0x28, 0x00, 0x02],
            ip: Ipv4Addr::new(10, 40, 0, 2),
            broadcast4: Ipv4Addr::new(10, 40, 0, 255),
            ip6: Some("fd00::2".parse().unwrap()),
        }
    }

    #[test]
    fn link_local_is_eui64_of_the_mac() {
        let ll = link_local([0x02, 0x42, 0x0a, 0x28, 0x00, 0x02]);
        assert_eq!(ll, "fe80::42:aff:fe28:2".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn each_port_admits_only_its_own_identity() {
        let r = ruleset("mesh-", &[port()]);
        assert!(r.starts_with("table bridge mesh__ports {}\ndelete table bridge mesh__ports\n"));
        assert!(r.contains("iifname vmap { \"mesh-v0000abcd\" : goto from_0 }"));
        assert!(r.contains("oifname vmap { \"mesh-v0000abcd\" : goto to_0 }"));
        assert!(r.contains("iifname \"mesh-v*\" counter name \"unattached\" drop"));
        assert!(
            r.contains("ether saddr != 02:42:0a:28:00:02 counter name \"mesh_v0000abcd_mac\" drop")
        );
        assert!(r.contains("arp saddr ip != { 10.40.0.2, 0.0.0.0 }"));
        // Broadcast and multicast (the group bit) from the container are
        // bounded, per port.
        assert!(r.contains("ether daddr & 01:00:00:00:00:00 == 01:00:00:00:00:00 limit rate over 200/second burst 400 packets counter name \"mesh_v0000abcd_flood\" drop"));
        assert!(r.contains("ip saddr != 10.40.0.2 counter name \"mesh_v0000abcd_ip\" drop"));
        assert!(r.contains("ip6 saddr != { fd00::2, fe80::42:aff:fe28:2 }"));
        assert!(r.contains("@th,64,128 0xfd000000000000000000000000000002 accept"));
        assert!(r.contains("ip daddr 10.40.0.2 accept\n"));
        assert!(r.contains("ip daddr != { 10.40.0.255, 255.255.255.255, 224.0.0.0/4 }"));
        // Duplicate address detection only for its own addresses.
        assert!(r.contains("ip6 saddr :: icmpv6 type nd-neighbor-solicit goto advert_0"));
        assert!(
            r.contains("ether type vmap { ip : goto ip4_0, ip6 : goto ip6_0, arp : goto arp_0 }")
        );
        assert!(r.contains("ip6 daddr != { fd00::2, fe80::42:aff:fe28:2, ff00::/8 }"));
        for reason in Reason::ALL {
            assert!(r.contains(&format!("counter mesh_v0000abcd_{} {{ }}", reason.as_str())));
        }
        // No attachment: the table still stops unknown veths.
        let empty = ruleset("x", &[]);
        assert!(!empty.contains("vmap"));
        assert!(empty.contains("iifname \"xv*\" counter name \"unattached\" drop"));
    }
}
