//! Answering ARP for the floating IPs this host holds, from meshd itself
//! (a packet socket on the underlay interface) rather than by adding the
//! address to the interface: if meshd dies, even by SIGKILL, its host
//! stops answering at once, so two hosts never answer for one address.
//! Taking an address over is announced with gratuitous ARP.

use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{debug, warn};

pub use super::underlay::Underlay;

pub(super) const ETH_P_ARP: u16 = 0x0806;
pub(super) const BROADCAST: [u8; 6] = [0xff; 6];

/// An ARP packet in an Ethernet frame.
pub(super) fn frame(
    dst: [u8; 6],
    src: [u8; 6],
    op: u16,
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f
}

/// The reply to `request` if it asks for one of `held`.
pub fn reply_to(request: &[u8], mac: [u8; 6], held: &BTreeSet<Ipv4Addr>) -> Option<Vec<u8>> {
    if request.len() < 42 || request[12..14] != ETH_P_ARP.to_be_bytes() {
        return None;
    }
    let arp = &request[14..];
    if arp[0..8] != [0, 1, 0x08, 0x00, 6, 4, 0, 1] {
        return None; // not an Ethernet/IPv4 request
    }
    let sha: [u8; 6] = arp[8..14].try_into().ok()?;
    let spa = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
    let tpa = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
    if !held.contains(&tpa) || spa == tpa {
        return None;
    }
    Some(frame(sha, mac, 2, tpa, sha, spa))
}

/// Gratuitous ARP: `addr` is at `mac` now.
pub fn announcement(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    frame(BROADCAST, mac, 1, addr, [0; 6], addr)
}

/// A packet socket for ARP on one interface; reads time out after
/// `timeout` (so loops can look at the clock or a stop flag).
pub(super) fn packet_socket(ifindex: u32, timeout: std::time::Duration) -> Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        bail!("packet socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let sll = sockaddr(ifindex, [0; 6]);
    // SAFETY: sll is a valid sockaddr_ll of the given size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        bail!(
            "binding the packet socket: {}",
            std::io::Error::last_os_error()
        );
    }
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: tv is a valid timeval of the given size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    Ok(fd)
}

fn sockaddr(ifindex: u32, dst: [u8; 6]) -> libc::sockaddr_ll {
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(&dst);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    }
}

pub(super) fn send(fd: &OwnedFd, ifindex: u32, f: &[u8]) -> std::io::Result<()> {
    let dst: [u8; 6] = f[0..6].try_into().expect("a frame has a destination");
    let sll = sockaddr(ifindex, dst);
    // SAFETY: f and sll are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            f.as_ptr() as *const libc::c_void,
            f.len(),
            0,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Answers ARP on one interface for the addresses in its set, from a
/// thread that ends when the responder is dropped.
pub struct Responder {
    pub underlay: Underlay,
    held: Arc<Mutex<BTreeSet<Ipv4Addr>>>,
    fd: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
}

impl Responder {
    pub fn start(underlay: Underlay) -> Result<Responder> {
        let fd = Arc::new(packet_socket(
            underlay.index,
            std::time::Duration::from_millis(200),
        )?);
        let held = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, h, s, u) = (fd.clone(), held.clone(), stop.clone(), underlay.clone());
        std::thread::Builder::new()
            .name(format!("arp-{}", underlay.name))
            .spawn(move || {
                let mut buf = [0u8; 1514];
                while !s.load(Ordering::Relaxed) {
                    // SAFETY: buf is valid for its length.
                    let n = unsafe {
                        libc::recv(
                            f.as_raw_fd(),
                            buf.as_mut_ptr() as *mut libc::c_void,
                            buf.len(),
                            0,
                        )
                    };
                    if n <= 0 {
                        continue; // timeout: look at the stop flag
                    }
                    let held = h.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    if let Some(reply) = reply_to(&buf[..n as usize], u.mac, &held) {
                        if let Err(e) = send(&f, u.index, &reply) {
                            debug!("ARP reply on {}: {e}", u.name);
                        }
                    }
                }
            })
            .context("starting the ARP thread")?;
        Ok(Responder {
            underlay,
            held,
            fd,
            stop,
        })
    }

    /// Answers for `held` from now on; announces those new to it.
    pub fn set(&self, held: BTreeSet<Ipv4Addr>) {
        let new: Vec<Ipv4Addr> = {
            let mut h = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let new = held.difference(&h).copied().collect();
            *h = held;
            new
        };
        for addr in new {
            self.announce(addr);
        }
    }

    pub fn held(&self) -> BTreeSet<Ipv4Addr> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn announce(&self, addr: Ipv4Addr) {
        if let Err(e) = send(
            &self.fd,
            self.underlay.index,
            &announcement(self.underlay.mac, addr),
        ) {
            warn!(%addr, "gratuitous ARP on {}: {e}", self.underlay.name);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_requests_for_held_addresses_only() {
        let me = [2, 0, 0, 0, 0, 1];
        let asker = [2, 0, 0, 0, 0, 9];
        let fip = Ipv4Addr::new(198, 18, 0, 200);
        let from = Ipv4Addr::new(198, 18, 0, 100);
        let req = frame(BROADCAST, asker, 1, from, [0; 6], fip);
        let held: BTreeSet<Ipv4Addr> = [fip].into();
        let reply = reply_to(&req, me, &held).unwrap();
        assert_eq!(reply[0..6], asker);
        assert_eq!(reply[20..22], [0, 2], "a reply");
        assert_eq!(reply[22..28], me);
        assert_eq!(reply[28..32], fip.octets());
        assert_eq!(reply[38..42], from.octets());
        assert!(reply_to(&req, me, &BTreeSet::new()).is_none());
        // Gratuitous ARP from someone else, and replies, are not answered.
        assert!(reply_to(&announcement(asker, fip), me, &held).is_none());
        assert!(reply_to(&reply, me, &held).is_none());
        assert!(reply_to(&req[..30], me, &held).is_none());
    }
}
