//! The network model: identifiers, subnets, names of the devices that carry
//! a network on a host, and the records replicated about them.

use anyhow::{bail, Result};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Linux interface names hold 15 bytes. `eth-<id>` must fit, so an id has at
/// most 11 characters.
pub const MAX_NETWORK_ID_LEN: usize = 11;

/// A network definition, replicated to every host (gossip channel
/// `networks`, keyed by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDef {
    pub id: String,
    pub subnet: IpNet,
    /// Peer id of the host that created it.
    pub created_by: String,
}

/// An address in use on a network, replicated (gossip channel `endpoints`,
/// keyed by [`endpoint_key`]) so a duplicate is refused on any host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    pub network: String,
    pub ip: IpAddr,
    pub mac: String,
    /// Peer id of the host the container lives on.
    pub host: String,
}

pub fn endpoint_key(network: &str, ip: IpAddr) -> String {
    format!("{network}/{ip}")
}

pub fn validate_network_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_NETWORK_ID_LEN {
        bail!(
            "network id {id:?} must be 1-{MAX_NETWORK_ID_LEN} characters (eth-<id> must fit a 15-character interface name)"
        );
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("network id {id:?} may only contain lowercase letters, digits and '-'");
    }
    if id.starts_with('-') || id.ends_with('-') {
        bail!("network id {id:?} must not start or end with '-'");
    }
    Ok(())
}

/// Parses an IPv4 subnet such as `10.40.0.0/24`; the host bits must be zero
/// so the operator's intent is unambiguous.
pub fn parse_subnet(s: &str) -> Result<IpNet> {
    let net: IpNet = s
        .parse()
        .map_err(|_| anyhow::anyhow!("subnet {s:?} is not in CIDR form (e.g. 10.40.0.0/24)"))?;
    if net.trunc() != net {
        bail!("subnet {s:?} has host bits set; did you mean {}?", net.trunc());
    }
    match net {
        IpNet::V4(v4) if v4.prefix_len() > 30 => {
            bail!("subnet {s:?} is too small: it needs room for at least two hosts")
        }
        IpNet::V4(_) => Ok(net),
        IpNet::V6(_) => bail!("subnet {s:?}: only IPv4 subnets are supported for now"),
    }
}

/// Parses `ADDR/LEN` for an attachment and checks it against the network.
pub fn parse_member_address(s: &str, net: &NetworkDef) -> Result<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => {
            let len: u8 = l
                .parse()
                .map_err(|_| anyhow::anyhow!("address {s:?}: prefix length {l:?} is not a number"))?;
            (a, len)
        }
        None => (s, net.subnet.prefix_len()),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| anyhow::anyhow!("{addr:?} is not an IP address"))?;
    if !net.subnet.contains(&ip) {
        bail!("address {ip} is outside network {}'s subnet {}", net.id, net.subnet);
    }
    if len != net.subnet.prefix_len() {
        bail!(
            "address {s}: prefix length must be the network's (/{}), not /{len}",
            net.subnet.prefix_len()
        );
    }
    if ip == net.subnet.network() || ip == net.subnet.broadcast() {
        bail!("address {ip} is the network or broadcast address of {}", net.subnet);
    }
    Ok((ip, len))
}

/// The number carried in every data-plane packet of this network: the
/// first four bytes of SHA-256 of the id, so every host derives the same
/// value without coordination.
pub fn wire_id(id: &str) -> u32 {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    u32::from_be_bytes([d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]])
}

pub fn bridge_name(prefix: &str, wire_id: u32) -> String {
    format!("{prefix}b{wire_id:08x}")
}

pub fn tap_name(prefix: &str, wire_id: u32) -> String {
    format!("{prefix}t{wire_id:08x}")
}

/// Default interface name inside the container.
pub fn default_ifname(network: &str) -> String {
    format!("eth-{network}")
}

/// Whether `name` is a device this daemon creates (used by cleanup).
pub fn is_ours(prefix: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(prefix) else {
        return false;
    };
    let mut chars = rest.chars();
    matches!(chars.next(), Some('b' | 't' | 'v'))
        && rest.len() == 9
        && chars.all(|c| c.is_ascii_hexdigit())
}

pub fn validate_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 15 {
        bail!("interface name {name:?} must be 1-15 characters");
    }
    if name.contains('/') || name.contains(char::is_whitespace) || name == "." || name == ".." {
        bail!("interface name {name:?} contains a character Linux refuses");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net() -> NetworkDef {
        NetworkDef {
            id: "blue".into(),
            subnet: "10.40.0.0/24".parse().unwrap(),
            created_by: "x".into(),
        }
    }

    #[test]
    fn ids() {
        validate_network_id("blue-2").unwrap();
        assert!(validate_network_id("").is_err());
        assert!(validate_network_id("Blue").is_err());
        assert!(validate_network_id("a_b").is_err());
        assert!(validate_network_id("-a").is_err());
        assert!(validate_network_id("abcdefghijkl").is_err());
        assert!(default_ifname("abcdefghijk").len() <= 15);
    }

    #[test]
    fn subnets() {
        parse_subnet("10.40.0.0/24").unwrap();
        assert!(parse_subnet("10.40.0.1/24").unwrap_err().to_string().contains("10.40.0.0/24"));
        assert!(parse_subnet("10.40.0.0").is_err());
        assert!(parse_subnet("10.40.0.0/31").is_err());
        assert!(parse_subnet("fd00::/64").is_err());
    }

    #[test]
    fn member_addresses() {
        let n = net();
        assert_eq!(parse_member_address("10.40.0.7/24", &n).unwrap().1, 24);
        assert_eq!(parse_member_address("10.40.0.7", &n).unwrap().1, 24);
        let e = parse_member_address("10.41.0.7/24", &n).unwrap_err().to_string();
        assert!(e.contains("outside"), "{e}");
        assert!(parse_member_address("10.40.0.7/16", &n).is_err());
        assert!(parse_member_address("10.40.0.255/24", &n).is_err());
        assert!(parse_member_address("bogus/24", &n).is_err());
    }

    #[test]
    fn device_names_fit_and_are_recognised() {
        let id = wire_id("blue");
        assert_eq!(id, wire_id("blue"));
        assert_ne!(id, wire_id("red"));
        let b = bridge_name("ms", id);
        assert!(b.len() <= 15);
        assert!(is_ours("ms", &b));
        assert!(is_ours("ms", &tap_name("ms", id)));
        assert!(!is_ours("ms", "eth0"));
        assert!(!is_ours("ms", "msb1234"));
        assert!(!is_ours("mx", &b));
    }
}
