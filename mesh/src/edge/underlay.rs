//! The underlay interfaces as the kernel has them (`ip -j addr`): the one
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

/// Member metadata: the host's underlay interface address with its prefix
/// length (`192.168.1.10/24`). Hosts of older versions advertise none.
pub const META_UNDERLAY_NET: &str = "underlay_net";
/// Member metadata: the MAC of that interface (`52:54:00:12:34:56`).
pub const META_UNDERLAY_MAC: &str = "underlay_mac";

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

/// The interfaces of this namespace with a MAC, as `ip -j addr` lists them.
pub fn interfaces() -> Result<Vec<Interface>> {
    let out = std::process::Command::new("ip")
        .args(["-j", "addr", "show"])
        .output()
        .context("running ip")?;
    if !out.status.success() {
        anyhow::bail!("ip addr: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    parse(&out.stdout)
}

fn parse(json: &[u8]) -> Result<Vec<Interface>> {
    let v: serde_json::Value = serde_json::from_slice(json).context("ip's JSON")?;
    let mut out = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        let (Some(name), Some(index), Some(mac)) = (
            link["ifname"].as_str(),
            link["ifindex"].as_u64(),
            link["address"].as_str().and_then(parse_mac),
        ) else {
            continue;
        };
        let addrs = link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["family"].as_str() == Some("inet"))
            .filter_map(|a| {
                let ip: Ipv4Addr = a["local"].as_str()?.parse().ok()?;
                let len = u8::try_from(a["prefixlen"].as_u64()?).ok()?;
                Ipv4Net::new(ip, len).ok()
            })
            .collect();
        out.push(Interface {
            link: Underlay {
                name: name.to_string(),
                index: index as u32,
                mac,
            },
            addrs,
        });
    }
    Ok(out)
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

/// What a host advertises about its underlay interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert {
    /// The interface address with its prefix length.
    pub net: Ipv4Net,
    pub mac: [u8; 6],
}

impl Advert {
    pub fn meta(&self) -> [(&'static str, String); 2] {
        [
            (META_UNDERLAY_NET, self.net.to_string()),
            (META_UNDERLAY_MAC, format_mac(&self.mac)),
        ]
    }
}

/// The underlay subnet a member advertises (none: an older version, or
/// nonsense).
pub fn advertised_net(meta: &BTreeMap<String, String>) -> Option<Ipv4Net> {
    meta.get(META_UNDERLAY_NET)?.parse().ok()
}

/// The underlay MAC a member advertises.
pub fn advertised_mac(meta: &BTreeMap<String, String>) -> Option<[u8; 6]> {
    parse_mac(meta.get(META_UNDERLAY_MAC)?)
}

/// This host's advert for underlay address `ip`, read from the kernel.
pub fn advert_for(ip: Ipv4Addr) -> Result<Option<Advert>> {
    let ifs = interfaces()?;
    Ok(own(&ifs, ip).map(|(net, link)| Advert { net, mac: link.mac }))
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    parts.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP_JSON: &str = r#"[
      {"ifindex":1,"ifname":"lo","address":"00:00:00:00:00:00",
       "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
      {"ifindex":4,"ifname":"eth0","address":"02:fc:00:00:00:01",
       "addr_info":[{"family":"inet","local":"192.168.1.10","prefixlen":24},
                    {"family":"inet6","local":"fd00::2","prefixlen":64}]},
      {"ifindex":5,"ifname":"wg0","addr_info":[{"family":"inet","local":"10.9.0.1","prefixlen":24}]}
    ]"#;

    #[test]
    fn finds_the_interface_whose_subnet_holds_a_pool() {
        let ifs = parse(IP_JSON.as_bytes()).unwrap();
        assert_eq!(ifs.len(), 2, "wg0 has no MAC: {ifs:?}");
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
        let meta: BTreeMap<String, String> =
            a.meta().into_iter().map(|(k, v)| (k.into(), v)).collect();
        assert_eq!(meta[META_UNDERLAY_MAC], "52:54:00:12:34:56");
        assert_eq!(advertised_net(&meta), Some(a.net));
        assert_eq!(advertised_mac(&meta), Some(a.mac));
        assert_eq!(advertised_net(&BTreeMap::new()), None);
        assert_eq!(parse_mac("02:00"), None);
    }
}
