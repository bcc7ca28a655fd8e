//! This namespace's routes as the kernel has them, read from
//! `/proc/net/route` and `/proc/net/ipv6_route` (per network namespace, no
//! process spawned): what a new network must not capture.
//!
//! Only the main IPv4 table is listed there (policy-routing tables are
//! not); the IPv6 file lists every table, so the host's own addresses (as
//! /128 local routes) count too.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One route: its destination, its gateway if any, and the device it
/// leaves by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub via: Option<IpAddr>,
    pub dev: String,
}

/// The gateways of this namespace's routes (a floating IP is never one).
pub fn gateways() -> std::io::Result<Vec<IpAddr>> {
    Ok(list()?.into_iter().filter_map(|r| r.via).collect())
}

/// The routes of meshd's namespace, IPv4 then IPv6.
pub fn list() -> std::io::Result<Vec<Route>> {
    let mut out = parse_v4(&std::fs::read_to_string("/proc/net/route")?);
    // A kernel without IPv6 has no such file: no IPv6 routes.
    if let Ok(text) = std::fs::read_to_string("/proc/net/ipv6_route") {
        out.extend(parse_v6(&text));
    }
    Ok(out)
}

const RTF_UP: u32 = 0x1;

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask …`, addresses
/// as the kernel's native-endian u32 in hex.
fn parse_v4(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| u32::from_str_radix(f.get(i)?, 16).ok();
            let (dst, via, flags, mask) = (hex(1)?, hex(2)?, hex(3)?, hex(7)?);
            if flags & RTF_UP == 0 {
                return None;
            }
            let dst = Ipv4Addr::from(dst.to_ne_bytes());
            let len = mask.count_ones() as u8;
            Some(Route {
                dst: IpNet::V4(Ipv4Net::new(dst, len).ok()?),
                via: (via != 0).then(|| IpAddr::V4(Ipv4Addr::from(via.to_ne_bytes()))),
                dev: f[0].to_string(),
            })
        })
        .collect()
}

/// `dst dst_len src src_len next_hop metric refcnt use flags dev`, the
/// address as 32 hex digits and the length in hex.
fn parse_v6(text: &str) -> Vec<Route> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let dst = u128::from_str_radix(f[0], 16).ok()?;
            let len = u8::from_str_radix(f[1], 16).ok()?;
            let via = u128::from_str_radix(f[4], 16).ok()?;
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            if flags & RTF_UP == 0 {
                return None;
            }
            Some(Route {
                dst: IpNet::V6(Ipv6Net::new(Ipv6Addr::from(dst), len).ok()?),
                via: (via != 0).then(|| IpAddr::V6(Ipv6Addr::from(via))),
                dev: f[9].to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_route_files_parse() {
        let v4 =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                  eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                  eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                  eth1\t0000A8C0\t00000000\t0000\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let r = parse_v4(v4);
        assert_eq!(r.len(), 2, "the route that is not up is left out: {r:?}");
        assert_eq!(r[0].dst.to_string(), "0.0.0.0/0");
        assert_eq!(r[0].via, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(r[1].via, None);
        assert_eq!(r[1].dst.to_string(), "192.0.2.0/24");
        assert_eq!(r[1].dev, "eth0");
        let v6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0\n\
                  fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                  fd000000000000000000000000000002 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000004 00000000 80200001     eth0\n\
                  garbage\n";
        let r = parse_v6(v6);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].via, Some("fd00::1".parse().unwrap()));
        assert_eq!(r[1].dst.to_string(), "fd00::/64");
        assert_eq!(r[2].dst.to_string(), "fd00::2/128");
    }

    #[test]
    fn this_namespace_has_readable_routes() {
        // Every namespace has at least its loopback's IPv6 route or an
        // empty IPv4 table; the point is that reading does not fail.
        assert!(list().is_ok());
    }
}
