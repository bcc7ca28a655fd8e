//! The underlay interfaces as the kernel has them: the one
//! a floating IP is answered on, and this host's underlay subnet and MAC,
//! which it advertises in its (signed) member metadata. The subnet decides
//! which pools a host may hold (a pool is a sub-range of the LAN the hosts
//! are on, never containing them); the MACs tell the mesh's own ARP
//! answers from another machine's when probing an address.

use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::netdev::format_mac;
pub use crate::netdev::parse_mac;

/// Member metadata: the host's underlay interface address with its prefix
/// length (`192.168.1.10/24`). Hosts of older versions advertise none.
pub const META_UNDERLAY_NET: &str = "underlay_net";
/// Member metadata: the MAC of that interface (`52:54:00:12:34:56`).
pub const META_UNDERLAY_MAC: &str = "underlay_mac";
/// Member metadata: the ranges the host's operator permits floating IPs
/// in (`fip_pools` in meshd.toml), comma-separated; absent: its LAN.
pub const META_FIP_POOLS: &str = "fip_pools";

/// An interface of the underlay: where a pool's addresses are answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Underlay {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

/// An interface with its IPv4 addresses (each with its prefix length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub link: Underlay,
    pub addrs: Vec<Ipv4Net>,
}

/// The interfaces of this namespace with a MAC, and their IPv4 addresses.
pub fn interfaces() -> Result<Vec<Interface>> {
    let ifs = crate::kernel::interfaces::list().context("listing the interfaces")?;
    Ok(ifs
        .into_iter()
        .filter_map(|i| {
            Some(Interface {
                link: Underlay {
                    name: i.name,
                    index: i.index,
                    mac: i.mac?,
                },
                addrs: i
                    .addrs
                    .iter()
                    .filter_map(|a| match a {
                        ipnet::IpNet::V4(v4) => Some(*v4),
                        ipnet::IpNet::V6(_) => None,
                    })
                    .collect(),
            })
        })
        .collect())
}

/// The interface whose subnet contains all of `net` (a pool, or one
/// address as a /32): where its addresses are on-link and answered.
pub fn on_link<'a>(ifs: &'a [Interface], net: &Ipv4Net) -> Option<&'a Underlay> {
    ifs.iter()
        .find(|i| i.addrs.iter().any(|a| a.trunc().contains(net)))
        .map(|i| &i.link)
}

/// The interface carrying `ip`, with that address's prefix.
pub fn own(ifs: &[Interface], ip: Ipv4Addr) -> Option<(Ipv4Net, &Underlay)> {
    ifs.iter().find_map(|i| {
        i.addrs
            .iter()
            .find(|a| a.addr() == ip)
            .map(|a| (*a, &i.link))
    })
}

/// What a host advertises about one underlay interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    /// The interface address with its prefix length.
    pub net: Ipv4Net,
    pub mac: [u8; 6],
}

/// The most interfaces a host advertises, and the widest subnet believed
/// (a member's claim of `0.0.0.0/0` would make it a candidate for every
/// pool: it is its own signed word, but not a LAN).
pub const MAX_ADVERTS: usize = 8;
const WIDEST_PREFIX: u8 = 8;

/// Member metadata for `adverts` (comma-separated lists, in one order).
pub fn meta(adverts: &[Advert]) -> [(&'static str, String); 2] {
    let nets: Vec<String> = adverts.iter().map(|a| a.net.to_string()).collect();
    let macs: Vec<String> = adverts.iter().map(|a| format_mac(&a.mac)).collect();
    [
        (META_UNDERLAY_NET, nets.join(",")),
        (META_UNDERLAY_MAC, macs.join(",")),
    ]
}

/// The underlay subnets a member advertises (none: an older version, or
/// nonsense); subnets wider than a /8 are not believed.
pub fn advertised_nets(meta: &BTreeMap<String, String>) -> Vec<Ipv4Net> {
    let Some(text) = meta.get(META_UNDERLAY_NET) else {
        return Vec::new();
    };
    text.split(',')
        .filter_map(|n| n.trim().parse::<Ipv4Net>().ok())
        .filter(|n| n.prefix_len() >= WIDEST_PREFIX)
        .take(MAX_ADVERTS)
        .collect()
}

/// The floating-IP ranges a member permits (none: anywhere on its LAN).
pub fn advertised_permits(meta: &BTreeMap<String, String>) -> Vec<Ipv4Net> {
    let Some(text) = meta.get(META_FIP_POOLS) else {
        return Vec::new();
    };
    let permits: Vec<Ipv4Net> = text
        .split(',')
        .filter_map(|n| n.trim().parse::<Ipv4Net>().ok())
        .take(MAX_ADVERTS)
        .collect();
    if permits.is_empty() {
        // Listed but unreadable: permits nothing rather than everything.
        return vec![Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 32).expect("a valid prefix")];
    }
    permits
}

/// Member metadata for this host's `fip_pools` (none when it has none).
pub fn permits_meta(permits: &[Ipv4Net]) -> Option<(&'static str, String)> {
    (!permits.is_empty()).then(|| {
        let list: Vec<String> = permits.iter().map(|p| p.to_string()).collect();
        (META_FIP_POOLS, list.join(","))
    })
}

/// The underlay MACs a member advertises.
pub fn advertised_macs(meta: &BTreeMap<String, String>) -> Vec<[u8; 6]> {
    let Some(text) = meta.get(META_UNDERLAY_MAC) else {
        return Vec::new();
    };
    text.split(',')
        .filter_map(|m| parse_mac(m.trim()))
        .take(MAX_ADVERTS)
        .collect()
}

/// This host's adverts, read from the kernel: the interface carrying its
/// underlay address `ip`; with a wildcard listen address (`None`) every
/// interface with a MAC and an IPv4 address but meshd's own devices
/// (named `link_prefix…`), since peers may reach it on any of them.
pub fn adverts_for(ip: Option<Ipv4Addr>, link_prefix: &str) -> Result<Vec<Advert>> {
    let ifs = interfaces()?;
    Ok(match ip {
        Some(ip) => own(&ifs, ip)
            .map(|(net, link)| Advert { net, mac: link.mac })
            .into_iter()
            .collect(),
        None => ifs
            .iter()
            .filter(|i| !i.link.name.starts_with(link_prefix))
            .flat_map(|i| {
                i.addrs.iter().map(|net| Advert {
                    net: *net,
                    mac: i.link.mac,
                })
            })
            .take(MAX_ADVERTS)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, mac: [u8; 6], addrs: &[&str]) -> Interface {
        Interface {
            link: Underlay {
                name: name.into(),
                index,
                mac,
            },
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn finds_the_interface_whose_subnet_holds_a_pool() {
        let ifs = vec![
            iface("eth0", 4, [2, 0xfc, 0, 0, 0, 1], &["192.168.1.10/24"]),
            iface("eth1", 5, [2, 0xfc, 0, 0, 0, 2], &["10.9.0.1/24"]),
        ];
        let pool: Ipv4Net = "192.168.1.240/28".parse().unwrap();
        assert_eq!(on_link(&ifs, &pool).unwrap().name, "eth0");
        let fip: Ipv4Net = "192.168.1.241/32".parse().unwrap();
        assert_eq!(on_link(&ifs, &fip).unwrap().index, 4);
        // Wider than the LAN, or another LAN: not on link anywhere.
        assert!(on_link(&ifs, &"192.168.0.0/23".parse().unwrap()).is_none());
        assert!(on_link(&ifs, &"192.168.2.0/28".parse().unwrap()).is_none());
        let (net, link) = own(&ifs, "192.168.1.10".parse().unwrap()).unwrap();
        assert_eq!(net.to_string(), "192.168.1.10/24");
        assert_eq!(link.mac, [2, 0xfc, 0, 0, 0, 1]);
        assert!(own(&ifs, "192.168.1.11".parse().unwrap()).is_none());
    }

    #[test]
    fn adverts_round_trip_through_member_metadata() {
        let a = Advert {
            net: "192.168.1.10/24".parse().unwrap(),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        };
        let b = Advert {
            net: "10.1.2.3/16".parse().unwrap(),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x57],
        };
        let meta: BTreeMap<String, String> = meta(&[a, b])
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .collect();
        assert_eq!(
            meta[META_UNDERLAY_MAC],
            "52:54:00:12:34:56,52:54:00:12:34:57"
        );
        assert_eq!(advertised_nets(&meta), vec![a.net, b.net]);
        assert_eq!(advertised_macs(&meta), vec![a.mac, b.mac]);
        assert!(advertised_nets(&BTreeMap::new()).is_empty());
        assert_eq!(parse_mac("02:00"), None);
        // A claim to the whole Internet is not a LAN.
        let wide: BTreeMap<String, String> = [(
            META_UNDERLAY_NET.to_string(),
            "1.2.3.4/0,10.0.0.1/8".to_string(),
        )]
        .into();
        assert_eq!(advertised_nets(&wide), vec!["10.0.0.1/8".parse().unwrap()]);
    }
}
