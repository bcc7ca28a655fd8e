//! This namespace's interfaces as the kernel has them (`getifaddrs`: no
//! process spawned, so it is cheap to ask often): names, indexes, MACs,
//! flags, addresses with their prefixes, and MTUs.

use ipnet::IpNet;
use nix::net::if_::InterfaceFlags;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub up: bool,
    pub loopback: bool,
    /// Addresses with their prefix lengths.
    pub addrs: Vec<IpNet>,
}

/// The interfaces of meshd's network namespace, by name.
pub fn list() -> std::io::Result<Vec<Interface>> {
    let mut by_name: BTreeMap<String, Interface> = BTreeMap::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let entry = by_name
            .entry(ifa.interface_name.clone())
            .or_insert_with(|| Interface {
                name: ifa.interface_name.clone(),
                ..Interface::default()
            });
        entry.up = ifa.flags.contains(InterfaceFlags::IFF_UP);
        entry.loopback = ifa.flags.contains(InterfaceFlags::IFF_LOOPBACK);
        let Some(addr) = ifa.address else { continue };
        if let Some(link) = addr.as_link_addr() {
            entry.index = link.ifindex() as u32;
            entry.mac = link.addr().filter(|m| m.iter().any(|b| *b != 0));
            continue;
        }
        let ip = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
            (Some(v4), _) => IpAddr::V4(v4.ip()),
            (_, Some(v6)) => IpAddr::V6(v6.ip()),
            _ => continue,
        };
        let mask = ifa
            .netmask
            .and_then(|m| match (m.as_sockaddr_in(), m.as_sockaddr_in6()) {
                (Some(v4), _) => Some(u32::from(v4.ip()).count_ones() as u8),
                (_, Some(v6)) => Some(u128::from(v6.ip()).count_ones() as u8),
                _ => None,
            });
        let full = if ip.is_ipv4() { 32 } else { 128 };
        if let Ok(net) = IpNet::new(ip, mask.unwrap_or(full)) {
            entry.addrs.push(net);
        }
    }
    Ok(by_name.into_values().collect())
}

/// `SIOCGIFMTU` (works in the daemon's network namespace, unlike sysfs,
/// which shows the namespace it was mounted in).
pub fn mtu(name: &str) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return None;
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifru_mtu of `req`,
    // which lives for the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc != 0 {
        return None;
    }
    // SAFETY: on success the kernel filled the mtu member of the union.
    Some(unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_listed_with_its_address() {
        let ifs = super::list().unwrap();
        let lo = ifs.iter().find(|i| i.name == "lo").expect("lo");
        assert!(lo.loopback);
        assert!(
            lo.addrs.iter().any(|a| a.to_string() == "127.0.0.1/8"),
            "{lo:?}"
        );
        assert!(super::mtu("lo").is_some_and(|m| m >= 1500));
    }
}
