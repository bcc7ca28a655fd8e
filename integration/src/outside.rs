//! The outside: namespaces on the lab's underlay that are not mesh hosts
//! (clients of floating IPs, the far end of egress, a machine owning an
//! address of the LAN), and an ARP probe to see who answers for an
//! address from there.

use anyhow::{anyhow, Context, Result};
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::Lab;

impl Lab {
    /// Adds namespace `<p>-out` with `ul0` at 198.18.0.`last`/24 on the
    /// underlay; returns its name.
    pub fn add_outside(&mut self, last: u8) -> Result<String> {
        self.add_lan_machine("out", last)
    }

    /// Adds namespace `<p>-<name>` (a machine of the LAN, not a mesh host)
    /// with `ul0` at 198.18.0.`last`/24 on the underlay bridge; returns its
    /// name. `name`: a few letters (the bridge port is `p<name>`).
    pub fn add_lan_machine(&mut self, name: &str, last: u8) -> Result<String> {
        let ns = format!("{}-{name}", self.prefix);
        self.add_netns(&ns)?;
        let ul = self.underlay.clone();
        let port = format!("p{name}");
        self.exec_ok(
            &ul,
            &[
                "ip", "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns", &ns,
            ],
        )?;
        self.exec_ok(&ul, &["ip", "link", "set", &port, "master", "br0", "up"])?;
        let addr = format!("198.18.0.{last}/24");
        self.exec_ok(&ns, &["ip", "addr", "add", &addr, "dev", "ul0"])?;
        self.exec_ok(&ns, &["ip", "link", "set", "ul0", "up"])?;
        Ok(ns)
    }

    /// The MAC of `dev` in namespace `ns`.
    pub fn mac_of(&self, ns: &str, dev: &str) -> Result<String> {
        let out = self.exec_ok(ns, &["ip", "-j", "link", "show", "dev", dev])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v[0]["address"]
            .as_str()
            .map(str::to_string)
            .context("no MAC in ip's answer")
    }

    /// Who answers ARP for `target` on `dev` of namespace `ns` (asking from
    /// `src`): the MACs of every reply within `wait`.
    pub fn arp_who_has(
        &self,
        ns: &str,
        dev: &str,
        src: Ipv4Addr,
        target: Ipv4Addr,
        wait: Duration,
    ) -> Result<std::collections::BTreeSet<String>> {
        let mac = parse_mac(&self.mac_of(ns, dev)?)?;
        let dev = dev.to_string();
        mesh_sys::netns::run_in_net(format!("/run/netns/{ns}"), move || {
            arp::who_has(&dev, mac, src, target, wait)
        })?
    }
}

fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|p| u8::from_str_radix(p, 16))
        .collect::<Result<_, _>>()?;
    v.try_into().map_err(|_| anyhow!("{s} is not a MAC"))
}

/// A one-shot ARP client on a packet socket (no arping needed).
mod arp {
    use anyhow::{bail, Result};
    use std::collections::BTreeSet;
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    const ETH_P_ARP: u16 = 0x0806;

    pub fn who_has(
        dev: &str,
        mac: [u8; 6],
        src: Ipv4Addr,
        target: Ipv4Addr,
        wait: Duration,
    ) -> Result<BTreeSet<String>> {
        let name = std::ffi::CString::new(dev)?;
        // SAFETY: a valid NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            bail!("no interface {dev}");
        }
        // SAFETY: plain socket(2); closed below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if fd < 0 {
            bail!("packet socket: {}", std::io::Error::last_os_error());
        }
        let result = exchange(fd, index, mac, src, target, wait);
        // SAFETY: fd is ours.
        unsafe { libc::close(fd) };
        result
    }

    fn exchange(
        fd: i32,
        index: u32,
        mac: [u8; 6],
        src: Ipv4Addr,
        target: Ipv4Addr,
        wait: Duration,
    ) -> Result<BTreeSet<String>> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&target.octets());
        let mut addr = [0u8; 8];
        addr[..6].copy_from_slice(&[0xff; 6]);
        let sll = libc::sockaddr_ll {
            sll_family: libc::AF_PACKET as u16,
            sll_protocol: ETH_P_ARP.to_be(),
            sll_ifindex: index as i32,
            sll_hatype: 0,
            sll_pkttype: 0,
            sll_halen: 6,
            sll_addr: addr,
        };
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: sll is valid for len bytes.
        if unsafe { libc::bind(fd, &sll as *const _ as *const libc::sockaddr, len) } < 0 {
            bail!("bind: {}", std::io::Error::last_os_error());
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: tv is a valid timeval.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        // SAFETY: f and sll are valid for their lengths.
        let n = unsafe {
            libc::sendto(
                fd,
                f.as_ptr() as *const libc::c_void,
                f.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                len,
            )
        };
        if n < 0 {
            bail!("send: {}", std::io::Error::last_os_error());
        }
        let mut seen = BTreeSet::new();
        let start = Instant::now();
        let mut buf = [0u8; 1514];
        while start.elapsed() < wait {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 42 {
                continue;
            }
            let a = &buf[14..42];
            if a[6..8] == [0, 2] && a[14..18] == target.octets() {
                let m = &a[8..14];
                seen.insert(
                    m.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                );
            }
        }
        Ok(seen)
    }
}
