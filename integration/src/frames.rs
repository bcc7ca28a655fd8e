//! Hand-made Ethernet frames sent from a packet socket inside a lab
//! namespace: what a container with `NET_RAW` (Docker grants it by
//! default) can put on its interface, whatever its addresses say.

use anyhow::{bail, Result};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::Lab;

pub type Mac = [u8; 6];

impl Lab {
    /// Sends `frames` (whole Ethernet frames) on `dev` in namespace `ns`.
    pub fn send_frames(&self, ns: &str, dev: &str, frames: Vec<Vec<u8>>) -> Result<()> {
        let dev = dev.to_string();
        mesh_sys::netns::run_in_net(format!("/run/netns/{ns}"), move || send(&dev, &frames))?
    }
}

fn send(dev: &str, frames: &[Vec<u8>]) -> Result<()> {
    let socket = PacketSocket::open(dev, 0)?;
    frames.iter().try_for_each(|f| socket.send(f))
}

/// A packet socket on one interface, closed on drop. With a protocol
/// (an ethertype) it also receives that protocol's frames.
pub(crate) struct PacketSocket {
    fd: i32,
    sll: libc::sockaddr_ll,
}

impl PacketSocket {
    pub(crate) fn open(dev: &str, protocol: u16) -> Result<PacketSocket> {
        let name = std::ffi::CString::new(dev)?;
        // SAFETY: a valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            bail!("no interface {dev}");
        }
        // SAFETY: plain socket(2); closed on drop.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(protocol.to_be())) };
        if fd < 0 {
            bail!("packet socket: {}", std::io::Error::last_os_error());
        }
        let socket = PacketSocket {
            fd,
            sll: libc::sockaddr_ll {
                sll_family: libc::AF_PACKET as u16,
                sll_protocol: protocol.to_be(),
                sll_ifindex: index as i32,
                sll_hatype: 0,
                sll_pkttype: 0,
                sll_halen: 6,
                sll_addr: [0; 8],
            },
        };
        if protocol != 0 {
            let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: sll is valid for len bytes.
            let sll = &socket.sll as *const _ as *const libc::sockaddr;
            if unsafe { libc::bind(fd, sll, len) } < 0 {
                bail!("bind: {}", std::io::Error::last_os_error());
            }
        }
        Ok(socket)
    }

    pub(crate) fn send(&self, frame: &[u8]) -> Result<()> {
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: frame and sll are valid for their lengths.
        let n = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &self.sll as *const _ as *const libc::sockaddr,
                len,
            )
        };
        if n < 0 {
            bail!("send: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// One frame into `buf` within 100 ms: its length, or `None`.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: tv is a valid timeval; buf is valid for its length.
        let n = unsafe {
            libc::setsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
            libc::recv(self.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0)
        };
        usize::try_from(n).ok()
    }
}

impl Drop for PacketSocket {
    fn drop(&mut self) {
        // SAFETY: fd is ours.
        unsafe { libc::close(self.fd) };
    }
}

pub fn parse_mac(s: &str) -> Result<Mac> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("{s} is not a MAC"))
}

fn ether(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A gratuitous ARP reply: "`ip` is at `mac`", to everyone.
pub fn arp_announce(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 2];
    a.extend_from_slice(&mac);
    a.extend_from_slice(&ip.octets());
    a.extend_from_slice(&[0xff; 6]);
    a.extend_from_slice(&ip.octets());
    ether([0xff; 6], mac, 0x0806, &a)
}

/// The EUI-64 link-local address of `mac`.
pub fn link_local(mac: Mac) -> Ipv6Addr {
    let m = mac;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A router advertisement from `mac` to all nodes, handing out the /64
/// `prefix` for autoconfiguration.
pub fn router_advert(mac: Mac, prefix: Ipv6Addr) -> Vec<u8> {
    let src = link_local(mac);
    let dst: Ipv6Addr = "ff02::1".parse().expect("a valid address");
    let mut icmp = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    // Prefix information: on-link and autonomous, a day valid.
    icmp.extend_from_slice(&[3, 4, 64, 0xc0]);
    icmp.extend_from_slice(&86_400u32.to_be_bytes());
    icmp.extend_from_slice(&14_400u32.to_be_bytes());
    icmp.extend_from_slice(&[0; 4]);
    icmp.extend_from_slice(&prefix.octets());
    // Source link-layer address.
    icmp.extend_from_slice(&[1, 1]);
    icmp.extend_from_slice(&mac);
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    pseudo.extend_from_slice(&icmp);
    let sum = checksum(&pseudo, 0);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip6 = vec![0x60, 0, 0, 0];
    ip6.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip6.extend_from_slice(&[58, 255]);
    ip6.extend_from_slice(&src.octets());
    ip6.extend_from_slice(&dst.octets());
    ip6.extend_from_slice(&icmp);
    ether([0x33, 0x33, 0, 0, 0, 1], mac, 0x86dd, &ip6)
}

/// `n` ARP requests for `target`, each from a different random unicast
/// source MAC (a container trying to fill or flush the switches' tables).
pub fn random_mac_spray(n: usize, target: Ipv4Addr) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let mut mac: Mac = rand::random();
            mac[0] = (mac[0] & 0xfc) | 0x02; // unicast, locally administered
            let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
            a.extend_from_slice(&mac);
            a.extend_from_slice(&[10, 255, 255, 1]);
            a.extend_from_slice(&[0; 6]);
            a.extend_from_slice(&target.octets());
            ether([0xff; 6], mac, 0x0806, &a)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_router_advert_checks_out() {
        let f = router_advert([2, 0, 0, 0, 0, 1], "2001:db8:bad::".parse().unwrap());
        // Ethernet + IPv6 header, then ICMPv6 type 134 with a checksum
        // that sums to zero over the pseudo-header.
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[54], 134);
        let icmp = &f[54..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&f[22..54]);
        pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        pseudo.extend_from_slice(icmp);
        assert_eq!(checksum(&pseudo, 0), 0);
        assert_eq!(
            link_local([2, 0x42, 0xa, 0x28, 0, 2]).to_string(),
            "fe80::42:aff:fe28:2"
        );
    }
}
