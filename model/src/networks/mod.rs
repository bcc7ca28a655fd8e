//! The network model: identifiers, subnets, names of the devices that carry
//! a network on a host, and the checks a new network definition passes.
//! The replicated record itself is [`crate::records::NetworkDef`].
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::records::NetworkDef;

pub mod landing;

/// A network id, subnet, address, interface name or MTU that is refused;
/// the text says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NetworkError(pub String);

type Result<T, E = NetworkError> = std::result::Result<T, E>;

macro_rules! err {
    ($($arg:tt)*) => { NetworkError(format!($($arg)*)) };
}

macro_rules! bail {
    ($($arg:tt)*) => { return Err(err!($($arg)*)) };
}

/// IPv6's minimum link MTU (RFC 8200), below which Linux drops IPv6.
pub const MIN_MTU: u32 = 1280;
/// Jumbo frames; the data plane carries frames up to 9216 + 32 bytes.
pub const MAX_MTU: u32 = 9000;

/// An explicit network MTU the API accepts.
pub fn validate_mtu(mtu: u32) -> Result<()> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) {
        Ok(())
    } else {
        bail!("mtu {mtu} is outside {MIN_MTU}-{MAX_MTU} (IPv6 needs at least {MIN_MTU})")
    }
}

/// Linux interface names hold 15 bytes. `eth-<id>` must fit, so an id has at
/// most 11 characters.
pub const MAX_NETWORK_ID_LEN: usize = 11;

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

/// Whether two prefixes (IPv4 or IPv6) share an address.
pub fn overlaps(a: impl Into<IpNet>, b: impl Into<IpNet>) -> bool {
    let (a, b) = (a.into(), b.into());
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A ULA /64 derived from the network id (RFC 4193 layout: fd, a 40-bit
/// global id from SHA-256 of the id, subnet 0), so every host derives the
/// same prefix with no coordination.
pub fn derive_ula(id: &str) -> Ipv6Net {
    let d = ring::digest::digest(&ring::digest::SHA256, format!("mesh-ula:{id}").as_bytes());
    let g = d.as_ref();
    let mut b = [0u8; 16];
    b[0] = 0xfd;
    b[1..6].copy_from_slice(&g[..5]);
    Ipv6Net::new(Ipv6Addr::from(b), 64).expect("64 is a valid prefix length")
}

/// Parses an IPv6 prefix: the form every host admits in a replicated
/// definition. Which prefixes a host carries is stricter (see
/// [`landing::unsuitable`]), so tightening it never deletes a network.
pub fn parse_subnet6(s: &str) -> Result<Ipv6Net> {
    let net: Ipv6Net = s
        .parse()
        .map_err(|_| err!("IPv6 prefix {s:?} is not in CIDR form (e.g. fd12:3456:789a::/64)"))?;
    if net.prefix_len() > 96 {
        bail!(
            "IPv6 prefix {s:?} is too small: it needs at least a /96 to pair with IPv4 addresses"
        );
    }
    if net.trunc() != net {
        bail!(
            "IPv6 prefix {s:?} has host bits set; did you mean {}?",
            net.trunc()
        );
    }
    Ok(net)
}

/// Parses an IPv4 subnet such as `10.40.0.0/24`; the host bits must be zero
/// so the operator's intent is unambiguous.
pub fn parse_subnet(s: &str) -> Result<Ipv4Net> {
    let net: IpNet = s
        .parse()
        .map_err(|_| err!("subnet {s:?} is not in CIDR form (e.g. 10.40.0.0/24)"))?;
    if net.trunc() != net {
        bail!(
            "subnet {s:?} has host bits set; did you mean {}?",
            net.trunc()
        );
    }
    match net {
        IpNet::V4(v4) if v4.prefix_len() > 29 => {
            bail!("subnet {s:?} is too small: use a /29 or larger")
        }
        IpNet::V4(v4) if v4.prefix_len() < 8 => {
            bail!("subnet {s:?} is too large: use a /8 or smaller")
        }
        IpNet::V4(v4) => Ok(v4),
        IpNet::V6(_) => bail!("subnet {s:?} is IPv6: give the IPv4 subnet with --subnet and the IPv6 prefix with --subnet6"),
    }
}

/// The address a request asks for, if any (`--ip ADDR[/LEN]`), checked
/// against the network; what attach and reserve both take.
pub fn requested_address(ip: Option<&str>, net: &NetworkDef) -> Result<Option<Ipv4Addr>> {
    ip.map(|text| parse_member_address(text, net).map(|(addr, _)| addr))
        .transpose()
}

/// Parses `ADDR/LEN` for an attachment and checks it against the network.
pub fn parse_member_address(s: &str, net: &NetworkDef) -> Result<(Ipv4Addr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => {
            let len: u8 = l
                .parse()
                .map_err(|_| err!("address {s:?}: prefix length {l:?} is not a number"))?;
            (a, len)
        }
        None => (s, net.subnet.prefix_len()),
    };
    let ip: Ipv4Addr = addr
        .parse()
        .map_err(|_| err!("{addr:?} is not an IPv4 address"))?;
    if !net.subnet.contains(&ip) {
        bail!(
            "address {ip} is outside network {}'s subnet {}",
            net.id,
            net.subnet
        );
    }
    if len != net.subnet.prefix_len() {
        bail!(
            "address {s}: prefix length must be the network's (/{}), not /{len}",
            net.subnet.prefix_len()
        );
    }
    if ip == net.subnet.network() || ip == net.subnet.broadcast() {
        bail!(
            "address {ip} is the network or broadcast address of {}",
            net.subnet
        );
    }
    if ip == crate::ipam::service_address(net.subnet) {
        bail!("address {ip} is reserved for the network's DNS service");
    }
    Ok((ip, len))
}

/// Why a new network definition is refused.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The request itself is malformed.
    #[error("{0}")]
    Invalid(NetworkError),
    /// It clashes with a network that exists.
    #[error("{0}")]
    Conflict(String),
}

/// Checks a request for a new network (well formed, an id not taken) and
/// returns its subnets (the IPv6 prefix derived from the id unless given).
/// Whether it lands beside the others is [`landing::check_new`].
pub fn check_new_network(
    id: &str,
    subnet: &str,
    subnet6: Option<&str>,
    labels: &BTreeMap<String, String>,
    existing: &BTreeMap<String, NetworkDef>,
) -> Result<(Ipv4Net, Ipv6Net), DefinitionError> {
    validate_network_id(id).map_err(DefinitionError::Invalid)?;
    let subnet = parse_subnet(subnet).map_err(DefinitionError::Invalid)?;
    if existing.contains_key(id) {
        return Err(DefinitionError::Conflict(format!(
            "network {id:?} already exists"
        )));
    }
    let subnet6 = match subnet6 {
        Some(s) => parse_subnet6(s).map_err(DefinitionError::Invalid)?,
        None => derive_ula(id),
    };
    if labels.keys().any(String::is_empty) {
        return Err(DefinitionError::Invalid(err!(
            "a label needs a key (key=value)"
        )));
    }
    Ok((subnet, subnet6))
}

/// The number carried in every data-plane packet of this network: the
/// first four bytes of SHA-256 of the id, so every host derives the same
/// value without coordination.
pub fn wire_id(id: &str) -> u32 {
    let d = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    u32::from_be_bytes([d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]])
}

/// The MAC of a network's bridge, the same on every host (locally
/// administered, unicast).
pub fn service_mac(wire_id: u32) -> [u8; 6] {
    let w = wire_id.to_be_bytes();
    [0x02, 0x6d, w[0], w[1], w[2], w[3]]
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
    matches!(chars.next(), Some('b' | 't' | 'v' | 'x' | 'y' | 'm'))
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

/// A container's DNS name made from what a runtime calls it (its name or
/// id): lower case, anything but letters, digits and `-` becomes `-`, at
/// most 63 characters, no `-` at either end. `None` if nothing is left.
pub fn dns_label_from(raw: &str) -> Option<String> {
    let label: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let label = label.trim_matches('-').to_string();
    (!label.is_empty()).then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_become_dns_labels() {
        assert_eq!(dns_label_from("Web_1").as_deref(), Some("web-1"));
        assert_eq!(dns_label_from("--x--").as_deref(), Some("x"));
        assert_eq!(dns_label_from("___"), None);
        assert_eq!(dns_label_from(&"a".repeat(80)).unwrap().len(), 63);
    }

    #[test]
    fn mtu_bounds() {
        let ok = |m| validate_mtu(m).is_ok();
        assert!(ok(1280) && ok(9000) && ok(1422));
        assert!(!ok(1279) && !ok(9001) && !ok(0));
    }

    fn net() -> NetworkDef {
        NetworkDef {
            id: "blue".into(),
            subnet: "10.40.0.0/24".parse().unwrap(),
            subnet6: derive_ula("blue"),
            created_by: "x".into(),
            labels: BTreeMap::new(),
            hosts: vec![],
            sealed_secrets: BTreeMap::new(),
        }
    }

    #[test]
    fn ula_is_derived_and_paired() {
        let n = net();
        assert_eq!(n.subnet6, derive_ula("blue"));
        assert_ne!(derive_ula("blue"), derive_ula("red"));
        assert_eq!(n.subnet6.addr().segments()[0] >> 8, 0xfd);
        let v6 = n.ipv6_for("10.40.0.7".parse().unwrap());
        assert!(n.subnet6.contains(&v6));
        assert_eq!(v6.segments()[7], 7);
        assert!(parse_subnet6("fd00::/64").is_ok());
        assert!(parse_subnet6("fd00::1/64").is_err());
        assert!(parse_subnet6("fd00::/120").is_err());
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
        assert!(parse_subnet("10.40.0.1/24")
            .unwrap_err()
            .to_string()
            .contains("10.40.0.0/24"));
        assert!(parse_subnet("10.40.0.0").is_err());
        assert!(parse_subnet("10.40.0.0/31").is_err());

        assert!(parse_subnet("fd00::/64")
            .unwrap_err()
            .to_string()
            .contains("--subnet6"));
    }

    #[test]
    fn member_addresses() {
        let n = net();
        assert_eq!(parse_member_address("10.40.0.7/24", &n).unwrap().1, 24);
        assert_eq!(parse_member_address("10.40.0.7", &n).unwrap().1, 24);
        let e = parse_member_address("10.41.0.7/24", &n)
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside"), "{e}");
        assert!(parse_member_address("10.40.0.7/16", &n).is_err());
        assert!(parse_member_address("10.40.0.255/24", &n).is_err());
        assert!(parse_member_address("10.40.0.254/24", &n)
            .unwrap_err()
            .to_string()
            .contains("DNS"));
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

    #[test]
    fn new_networks_are_checked_against_existing_ones() {
        let mut existing = BTreeMap::new();
        existing.insert("blue".to_string(), net());
        let none = BTreeMap::new();
        let (v4, v6) = check_new_network("red", "10.41.0.0/24", None, &none, &existing).unwrap();
        assert_eq!(v4.to_string(), "10.41.0.0/24");
        assert_eq!(v6, derive_ula("red"));
        let (_, v6) =
            check_new_network("red", "10.41.0.0/24", Some("fd00:1::/64"), &none, &existing)
                .unwrap();
        assert_eq!(v6.to_string(), "fd00:1::/64");
        assert!(matches!(
            check_new_network("blue", "10.42.0.0/24", None, &none, &existing),
            Err(DefinitionError::Conflict(m)) if m.contains("already exists")
        ));
        assert!(matches!(
            check_new_network("Blue", "10.42.0.0/24", None, &none, &existing),
            Err(DefinitionError::Invalid(_))
        ));
        assert!(matches!(
            check_new_network("red", "10.42.0.1/24", None, &none, &existing),
            Err(DefinitionError::Invalid(_))
        ));
        let bad_label: BTreeMap<String, String> = [(String::new(), "v".to_string())].into();
        let e = check_new_network("red", "10.42.0.0/24", None, &bad_label, &existing).unwrap_err();
        assert!(e.to_string().contains("label needs a key"), "{e}");
    }
}
