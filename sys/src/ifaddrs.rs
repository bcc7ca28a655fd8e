//! The host's own IP addresses, as the kernel has them now.

use std::collections::BTreeSet;
use std::net::IpAddr;

/// Every IP address on an interface that is up (loopback included), sorted.
pub fn local_ips() -> Result<BTreeSet<IpAddr>, nix::Error> {
    let mut out = BTreeSet::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        if !ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP) {
            continue;
        }
        let Some(addr) = ifa.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.insert(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            out.insert(IpAddr::V6(v6.ip()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_is_local() {
        let ips = super::local_ips().unwrap();
        assert!(ips.contains(&"127.0.0.1".parse().unwrap()), "{ips:?}");
    }
}
