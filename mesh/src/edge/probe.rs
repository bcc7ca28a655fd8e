//! Probing before this host answers for a floating IP (after RFC 5227):
//! ARP probes (sender address 0.0.0.0) for the address on the underlay
//! and a short wait. A machine that is not a mesh host answering for it,
//! announcing it, or probing for it itself, means the address is in use
//! on the LAN: the mesh does not claim it, and probes again after a
//! backoff, so an address freed later is claimed eventually. Answers from
//! mesh hosts do not count: who of them answers is the handover's business
//! (`fip::Handover`), and a displaced holder may still answer for a moment.
//!
//! Much shorter than RFC 5227's timings (seconds): failover time matters,
//! and on a LAN a machine that owns an address answers within
//! milliseconds.

use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::arp::{self, Underlay, BROADCAST, ETH_P_ARP};
use crate::netdev::format_mac;

/// Probes sent per address, [`PROBE_INTERVAL`] apart (one lost frame
/// does not hide an owner)…
const PROBES: u32 = 2;
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// …and how long a probe takes in all: what it adds to a takeover.
pub const PROBE_WAIT: Duration = Duration::from_millis(250);

/// After a refused claim, the next probe comes after this, doubling up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(16);

/// Member metadata: the floating IPs this host would hold but found in
/// use, with the MAC that answered (`198.18.0.245=52:54:00:12:34:56,…`),
/// so that every host's `fip list` says why nobody answers for them.
pub const META_FIPS_IN_USE: &str = "fips_in_use";
/// Member metadata values are at most this long (`gossip::membership`).
const META_MAX: usize = 1024;

/// An ARP probe for `target` from `mac`.
pub fn probe_frame(mac: [u8; 6], target: Ipv4Addr) -> Vec<u8> {
    arp::frame(BROADCAST, mac, 1, Ipv4Addr::UNSPECIFIED, [0; 6], target)
}

/// What a received frame says about `targets`: one of them used (as
/// sender address) or probed for by a machine other than this one
/// (`own`) and the mesh hosts (`mesh`); that address and the machine's MAC.
pub fn conflict(
    frame: &[u8],
    targets: &BTreeSet<Ipv4Addr>,
    own: [u8; 6],
    mesh: &BTreeSet<[u8; 6]>,
) -> Option<(Ipv4Addr, [u8; 6])> {
    if frame.len() < 42 || frame[12..14] != ETH_P_ARP.to_be_bytes() {
        return None;
    }
    let arp = &frame[14..42];
    if arp[0..6] != [0, 1, 0x08, 0x00, 6, 4] {
        return None;
    }
    let op = u16::from_be_bytes([arp[6], arp[7]]);
    let sha: [u8; 6] = arp[8..14].try_into().ok()?;
    let spa = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
    let tpa = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
    if sha == own || mesh.contains(&sha) {
        return None;
    }
    if targets.contains(&spa) {
        return Some((spa, sha));
    }
    // Another machine probing for it at the same time (RFC 5227 2.1.1).
    (op == 1 && spa.is_unspecified() && targets.contains(&tpa)).then_some((tpa, sha))
}

/// Probes for `targets` on `link` (blocking, [`PROBE_WAIT`]): the
/// addresses found in use, with the MAC of the machine using each.
pub fn probe(
    link: &Underlay,
    targets: &BTreeSet<Ipv4Addr>,
    mesh: &BTreeSet<[u8; 6]>,
) -> Result<BTreeMap<Ipv4Addr, [u8; 6]>> {
    let fd = arp::packet_socket(link.index, Duration::from_millis(20))?;
    let mut found = BTreeMap::new();
    let start = Instant::now();
    let mut sent = 0;
    let mut buf = [0u8; 1514];
    while start.elapsed() < PROBE_WAIT && found.len() < targets.len() {
        if sent < PROBES && start.elapsed() >= PROBE_INTERVAL * sent {
            for t in targets.iter().filter(|t| !found.contains_key(*t)) {
                arp::send(&fd, link.index, &probe_frame(link.mac, *t))?;
            }
            sent += 1;
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n <= 0 {
            continue; // timeout: look at the clock
        }
        if let Some((addr, mac)) = conflict(&buf[..n as usize], targets, link.mac, mesh) {
            found.entry(addr).or_insert(mac);
        }
    }
    Ok(found)
}

/// A claim refused: who answered, and when to probe again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub mac: [u8; 6],
    retry_at: Instant,
    backoff: Duration,
}

/// The addresses this host would hold but found in use.
#[derive(Debug, Default)]
pub struct Refusals {
    by_addr: BTreeMap<Ipv4Addr, Refusal>,
}

impl Refusals {
    /// When, after `after`, the earliest refused address may be probed
    /// again.
    pub fn next_retry(&self, after: Instant) -> Option<Instant> {
        self.by_addr
            .values()
            .map(|r| r.retry_at)
            .filter(|at| *at > after)
            .min()
    }

    /// Whether `addr` may be probed (again) now.
    pub fn due(&self, addr: Ipv4Addr, now: Instant) -> bool {
        self.by_addr.get(&addr).is_none_or(|r| now >= r.retry_at)
    }

    /// `addr` was found in use by `mac`; returns the wait until the next
    /// probe.
    pub fn refuse(&mut self, addr: Ipv4Addr, mac: [u8; 6], now: Instant) -> Duration {
        let backoff = match self.by_addr.get(&addr) {
            Some(r) => (r.backoff * 2).min(MAX_BACKOFF),
            None => FIRST_BACKOFF,
        };
        self.by_addr.insert(
            addr,
            Refusal {
                mac,
                retry_at: now + backoff,
                backoff,
            },
        );
        backoff
    }

    /// `addr` was found free; returns whether it had been refused.
    pub fn clear(&mut self, addr: Ipv4Addr) -> bool {
        self.by_addr.remove(&addr).is_some()
    }

    /// Forgets the addresses this host would no longer hold.
    pub fn retain(&mut self, keep: &BTreeSet<Ipv4Addr>) {
        self.by_addr.retain(|a, _| keep.contains(a));
    }

    pub fn get(&self, addr: Ipv4Addr) -> Option<&Refusal> {
        self.by_addr.get(&addr)
    }

    /// The [`META_FIPS_IN_USE`] value (`None`: nothing refused), as many
    /// entries as fit.
    pub fn meta(&self) -> Option<String> {
        let mut out = String::new();
        for (addr, r) in &self.by_addr {
            let entry = format!("{addr}={}", format_mac(&r.mac));
            if out.len() + entry.len() + 1 > META_MAX {
                break;
            }
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(&entry);
        }
        (!out.is_empty()).then_some(out)
    }
}

/// What another host's [`META_FIPS_IN_USE`] says.
pub fn parse_meta(v: &str) -> BTreeMap<Ipv4Addr, [u8; 6]> {
    v.split(',')
        .filter_map(|e| {
            let (addr, mac) = e.split_once('=')?;
            Some((addr.parse().ok()?, super::underlay::parse_mac(mac)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const PEER: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const SQUATTER: [u8; 6] = [2, 0, 0, 0, 0, 9];

    fn reply(from: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
        arp::frame(ME, from, 2, addr, ME, Ipv4Addr::UNSPECIFIED)
    }

    #[test]
    fn only_other_machines_using_or_probing_the_address_conflict() {
        let fip = Ipv4Addr::new(198, 18, 0, 245);
        let other = Ipv4Addr::new(198, 18, 0, 100);
        let targets: BTreeSet<Ipv4Addr> = [fip].into();
        let mesh: BTreeSet<[u8; 6]> = [PEER].into();
        let c = |f: &[u8]| conflict(f, &targets, ME, &mesh);
        // The owner answers the probe, or announces the address.
        assert_eq!(c(&reply(SQUATTER, fip)), Some((fip, SQUATTER)));
        assert_eq!(
            c(&arp::frame(BROADCAST, SQUATTER, 1, fip, [0; 6], fip)),
            Some((fip, SQUATTER))
        );
        // Another machine probing for it too.
        assert_eq!(c(&probe_frame(SQUATTER, fip)), Some((fip, SQUATTER)));
        // A mesh host (a holder letting go), this host's own probe seen on
        // the socket, and traffic about other addresses do not count.
        assert_eq!(c(&reply(PEER, fip)), None);
        assert_eq!(c(&probe_frame(ME, fip)), None);
        assert_eq!(c(&reply(SQUATTER, other)), None);
        assert_eq!(
            c(&arp::frame(BROADCAST, SQUATTER, 1, other, [0; 6], fip)),
            None,
            "someone asking who has it is no use of it"
        );
        assert_eq!(c(&reply(SQUATTER, fip)[..40]), None);
        let probe = probe_frame(ME, fip);
        assert_eq!(probe[28..32], [0, 0, 0, 0], "sender address 0.0.0.0");
        assert_eq!(probe[38..42], fip.octets());
    }

    #[test]
    fn refused_addresses_are_probed_again_later_and_advertised() {
        let a = Ipv4Addr::new(198, 18, 0, 245);
        let b = Ipv4Addr::new(198, 18, 0, 246);
        let t0 = Instant::now();
        let mut r = Refusals::default();
        assert!(r.due(a, t0));
        assert_eq!(r.refuse(a, SQUATTER, t0), FIRST_BACKOFF);
        assert!(!r.due(a, t0 + Duration::from_secs(1)));
        assert!(r.due(a, t0 + FIRST_BACKOFF));
        let mut wait = FIRST_BACKOFF;
        for _ in 0..6 {
            wait = r.refuse(a, SQUATTER, t0);
        }
        assert_eq!(wait, MAX_BACKOFF, "the backoff is bounded");
        r.refuse(b, PEER, t0);
        assert_eq!(
            r.meta().as_deref(),
            Some("198.18.0.245=02:00:00:00:00:09,198.18.0.246=02:00:00:00:00:02")
        );
        assert_eq!(
            parse_meta(&r.meta().unwrap()),
            [(a, SQUATTER), (b, PEER)].into()
        );
        r.retain(&[a].into());
        assert!(r.get(b).is_none());
        assert!(r.clear(a));
        assert!(!r.clear(a));
        assert_eq!(r.meta(), None);
        assert!(r.due(a, t0), "a freed address is probed at once");
        assert!(parse_meta("x=1,198.18.0.1=zz").is_empty());
    }
}
