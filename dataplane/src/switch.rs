//! Per-network L2 learning switch state: which peer is behind which MAC,
//! for the MACs no attachment claims (those the control plane knows are
//! pinned, see [`crate::pins`], and never learned).
//!
//! Learning happens on the receive path for every authenticated frame and
//! lookups on the send path for every frame, so both read an immutable map
//! behind an `ArcSwap` without a lock: refreshing a known entry, and moving
//! it to another peer, touch only atomics. New MACs, moves to the local side
//! and expiry copy the map under a writers' mutex and publish the copy
//! (entries and per-port counters are shared between copies, so a refresh
//! or a move on the old copy is not lost). That costs a copy of at most
//! [`MAX_MACS_PER_NETWORK`] pointers per new MAC, which is rare after the
//! first seconds of a flow.
//!
//! Each port (peer) may hold at most [`MAX_MACS_PER_PORT`] learned MACs, so
//! one host (or a container on it) spraying random source addresses fills
//! its own share only and cannot flush the entries of others; the global
//! cap bounds memory. The local TAP side learns nothing here (frames to
//! local MACs are the bridge's business), so it needs no share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use crate::PeerIdx;

/// A learned MAC not seen for this long is forgotten (frames to it flood).
pub const MAC_AGE: Duration = Duration::from_secs(300);
/// Upper bound of learned MACs per network: a peer spraying random source
/// addresses must not grow our memory without limit.
pub const MAX_MACS_PER_NETWORK: usize = 16_384;
/// Upper bound of learned MACs behind one peer (per network): a spray from
/// one host fills its own share, never the table others use.
pub const MAX_MACS_PER_PORT: u32 = 1_024;

/// `MacEntry::peer` of an entry taken out of the map: whoever still holds
/// it (an older copy) must not move or count it. The daemon numbers peers
/// from 1 upwards; it never gets this far.
const GONE: PeerIdx = PeerIdx::MAX;

pub type Mac = [u8; 6];

/// Destination MAC of an Ethernet frame (caller guarantees ≥ 14 bytes).
pub fn destination(frame: &[u8]) -> Mac {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[0..6]);
    mac
}

/// Source MAC of an Ethernet frame (caller guarantees ≥ 14 bytes).
pub fn source(frame: &[u8]) -> Mac {
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&frame[6..12]);
    mac
}

/// Broadcast and multicast share the I/G bit.
pub fn is_group(mac: &Mac) -> bool {
    mac[0] & 1 == 1
}

struct MacEntry {
    peer: AtomicU32,
    last_seen_ms: AtomicU64,
}

/// Learned MACs per port; shared by every copy of the map.
type PortCount = Arc<AtomicU32>;

#[derive(Clone, Default)]
struct Entries {
    macs: HashMap<Mac, Arc<MacEntry>>,
    /// Entries per peer. Every change of an entry's `peer` (insert, move,
    /// removal) adjusts the counts of the old and new peer exactly once,
    /// decided by the atomic swap or compare-exchange of `peer`.
    ports: HashMap<PeerIdx, PortCount>,
}

impl Entries {
    /// Takes `entry` out of the counts (the caller removes it from `macs`).
    fn retire(&self, entry: &MacEntry) {
        let old = entry.peer.swap(GONE, Ordering::AcqRel);
        if let Some(count) = self.ports.get(&old) {
            release(count);
        }
    }
}

/// One more entry for the port, unless it is full.
fn take(count: &AtomicU32) -> bool {
    count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_MACS_PER_PORT).then_some(n + 1)
        })
        .is_ok()
}

fn release(count: &AtomicU32) {
    let _ = count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
}

pub struct MacTable {
    epoch: Instant,
    entries: ArcSwap<Entries>,
    /// Serialises copy-and-publish, so no change is lost.
    writer: Mutex<()>,
    /// New or moved MACs not learned: the port or the network was full.
    refused: AtomicU64,
}

impl std::fmt::Debug for MacTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacTable")
            .field("len", &self.len())
            .field("refused", &self.refused())
            .finish()
    }
}

impl MacTable {
    pub fn new(epoch: Instant) -> MacTable {
        MacTable {
            epoch,
            entries: ArcSwap::from_pointee(Entries::default()),
            writer: Mutex::new(()),
            refused: AtomicU64::new(0),
        }
    }

    /// Applies `change` to a copy of the map and publishes it.
    fn update(&self, change: impl FnOnce(&mut Entries)) {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = Entries::clone(&self.entries.load());
        change(&mut next);
        self.entries.store(Arc::new(next));
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn refuse(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Records that `mac` lives behind `peer` (from an authenticated frame).
    /// Refused (and counted) when `peer` already has its share of MACs or
    /// the network is full.
    pub fn learn(&self, mac: Mac, peer: PeerIdx, now: Instant) {
        if is_group(&mac) || peer == GONE {
            return; // never a valid source; learning it would hijack floods
        }
        let now_ms = self.millis(now);
        {
            let entries = self.entries.load();
            let count = entries.ports.get(&peer);
            if let Some(entry) = entries.macs.get(&mac) {
                let old = entry.peer.load(Ordering::Acquire);
                if old == peer {
                    entry.last_seen_ms.store(now_ms, Ordering::Relaxed);
                    return;
                }
                // A move: without a copy when the new port has a count.
                if let (Some(count), true) = (count, old != GONE) {
                    if !take(count) {
                        return self.refuse();
                    }
                    match entry.peer.compare_exchange(
                        old,
                        peer,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            entry.last_seen_ms.store(now_ms, Ordering::Relaxed);
                            if let Some(old_count) = entries.ports.get(&old) {
                                release(old_count);
                            }
                        }
                        // Moved or retired meanwhile: the next frame decides.
                        Err(_) => release(count),
                    }
                    return;
                }
            } else if entries.macs.len() >= MAX_MACS_PER_NETWORK
                || count.is_some_and(|c| c.load(Ordering::Relaxed) >= MAX_MACS_PER_PORT)
            {
                // The common refusal (a spray) takes no lock.
                return self.refuse();
            }
        }
        let mut refused = false;
        self.update(|entries| {
            let count = entries.ports.entry(peer).or_default().clone();
            if let Some(entry) = entries.macs.get(&mac) {
                // Learned or moved by another worker meanwhile.
                if entry.peer.load(Ordering::Acquire) != peer {
                    if !take(&count) {
                        refused = true;
                        return;
                    }
                    let old = entry.peer.swap(peer, Ordering::AcqRel);
                    if let Some(old_count) = entries.ports.get(&old) {
                        release(old_count);
                    }
                }
                entry.last_seen_ms.store(now_ms, Ordering::Relaxed);
                return;
            }
            if entries.macs.len() >= MAX_MACS_PER_NETWORK || !take(&count) {
                refused = true;
                return;
            }
            entries.macs.insert(
                mac,
                Arc::new(MacEntry {
                    peer: AtomicU32::new(peer),
                    last_seen_ms: AtomicU64::new(now_ms),
                }),
            );
        });
        if refused {
            self.refuse();
        }
    }

    /// The peer behind `mac`, if learned and not aged out.
    pub fn lookup(&self, mac: &Mac, now: Instant) -> Option<PeerIdx> {
        let entries = self.entries.load();
        let entry = entries.macs.get(mac)?;
        let age_ms = self
            .millis(now)
            .saturating_sub(entry.last_seen_ms.load(Ordering::Relaxed));
        if age_ms >= MAC_AGE.as_millis() as u64 {
            return None;
        }
        Some(entry.peer.load(Ordering::Relaxed)).filter(|peer| *peer != GONE)
    }

    /// `mac` was seen on the local TAP: it is not (or no longer) behind a peer.
    pub fn forget_if_remote(&self, mac: &Mac) {
        if self.entries.load().macs.contains_key(mac) {
            self.forget(std::slice::from_ref(mac));
        }
    }

    /// Forgets `macs` (e.g. the control plane pinned them: learning them
    /// is moot, and a stale entry must not outlive the pin).
    pub fn forget(&self, macs: &[Mac]) {
        let current = self.entries.load();
        if !macs.iter().any(|mac| current.macs.contains_key(mac)) {
            return;
        }
        self.update(|entries| {
            for mac in macs {
                if let Some(entry) = entries.macs.remove(mac) {
                    entries.retire(&entry);
                }
            }
        });
    }

    /// Drops every entry pointing at `peer` (peer removed or left the network).
    pub fn forget_peer(&self, peer: PeerIdx) {
        self.update(|entries| {
            let mut macs = std::mem::take(&mut entries.macs);
            macs.retain(|_, entry| {
                let keep = entry.peer.load(Ordering::Acquire) != peer;
                if !keep {
                    entries.retire(entry);
                }
                keep
            });
            entries.macs = macs;
            // A count of a gone peer is dropped once it is empty; one an
            // older copy still bumps is then recounted from zero.
            if entries
                .ports
                .get(&peer)
                .is_some_and(|c| c.load(Ordering::Acquire) == 0)
            {
                entries.ports.remove(&peer);
            }
        });
    }

    /// Removes aged-out entries; returns how many.
    pub fn expire(&self, now: Instant) -> usize {
        let now_ms = self.millis(now);
        let max_age = MAC_AGE.as_millis() as u64;
        let fresh = |entry: &MacEntry| {
            now_ms.saturating_sub(entry.last_seen_ms.load(Ordering::Relaxed)) < max_age
        };
        // Most ticks expire nothing: copy only when something goes.
        if self.entries.load().macs.values().all(|entry| fresh(entry)) {
            return 0;
        }
        let mut removed = 0;
        self.update(|entries| {
            let mut macs = std::mem::take(&mut entries.macs);
            let before = macs.len();
            macs.retain(|_, entry| {
                let keep = fresh(entry);
                if !keep {
                    entries.retire(entry);
                }
                keep
            });
            removed = before - macs.len();
            entries.macs = macs;
        });
        removed
    }

    pub fn len(&self) -> usize {
        self.entries.load().macs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Learned MACs behind `peer` now.
    pub fn port_len(&self, peer: PeerIdx) -> usize {
        self.entries
            .load()
            .ports
            .get(&peer)
            .map_or(0, |c| c.load(Ordering::Acquire) as usize)
    }

    /// New or moved MACs refused since the start (a port or the network full).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mac = [0x02, 0, 0, 0, 0, 0xa];
    const B: Mac = [0x02, 0, 0, 0, 0, 0xb];

    #[test]
    fn concurrent_learning_loses_no_entry() {
        // Workers learn at once while another forgets: every copy-and-publish
        // starts from the latest map, so all learned MACs remain.
        let t0 = Instant::now();
        let table = MacTable::new(t0);
        std::thread::scope(|scope| {
            for worker in 0..4u8 {
                let table = &table;
                scope.spawn(move || {
                    for i in 0..500u16 {
                        let [hi, lo] = i.to_be_bytes();
                        table.learn([0x02, worker, 0, 0, hi, lo], u32::from(worker), t0);
                        assert_eq!(
                            table.lookup(&[0x02, worker, 0, 0, hi, lo], t0),
                            Some(u32::from(worker))
                        );
                    }
                });
            }
            let table = &table;
            scope.spawn(move || {
                for _ in 0..200 {
                    table.forget_peer(99);
                }
            });
        });
        assert_eq!(table.len(), 2000);
        table.forget_peer(2);
        assert_eq!(table.len(), 1500);
        assert_eq!(table.lookup(&[0x02, 2, 0, 0, 0, 7], t0), None);
    }

    #[test]
    fn learns_refreshes_and_moves() {
        let t0 = Instant::now();
        let table = MacTable::new(t0);
        assert_eq!(table.lookup(&A, t0), None);
        table.learn(A, 1, t0);
        assert_eq!(table.lookup(&A, t0), Some(1));
        table.learn(A, 2, t0 + Duration::from_secs(1));
        assert_eq!(table.lookup(&A, t0 + Duration::from_secs(2)), Some(2));
        assert_eq!(table.lookup(&B, t0), None);
    }

    #[test]
    fn ages_out_and_expires() {
        let t0 = Instant::now();
        let table = MacTable::new(t0);
        table.learn(A, 1, t0);
        table.learn(B, 1, t0 + Duration::from_secs(200));
        let later = t0 + MAC_AGE;
        assert_eq!(table.lookup(&A, later), None);
        assert_eq!(table.lookup(&B, later), Some(1));
        assert_eq!(table.expire(later), 1);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn never_learns_group_addresses() {
        let t0 = Instant::now();
        let table = MacTable::new(t0);
        let broadcast = [0xff; 6];
        table.learn(broadcast, 1, t0);
        table.learn([0x01, 0, 0x5e, 0, 0, 1], 1, t0);
        assert!(table.is_empty());
    }

    #[test]
    fn forgets_peer_and_local_moves() {
        let t0 = Instant::now();
        let table = MacTable::new(t0);
        table.learn(A, 1, t0);
        table.learn(B, 2, t0);
        table.forget_peer(1);
        assert_eq!(table.lookup(&A, t0), None);
        table.forget_if_remote(&B);
        assert_eq!(table.lookup(&B, t0), None);
    }

    /// Deterministic pseudo-random unicast MACs (xorshift), for sprays.
    fn random_macs(seed: u64, n: usize) -> Vec<Mac> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let b = x.to_be_bytes();
                // Locally administered unicast, like a container's.
                [(b[2] & 0xfe) | 0x02, b[3], b[4], b[5], b[6], b[7]]
            })
            .collect()
    }

    #[test]
    fn a_spray_from_one_port_fills_its_share_only() {
        let t0 = Instant::now();
        let table = MacTable::new(t0);
        table.learn(A, 1, t0);
        table.learn(B, 2, t0);
        let spray = random_macs(0x5eed, 10_000);
        for mac in &spray {
            table.learn(*mac, 9, t0);
        }
        assert_eq!(table.port_len(9), MAX_MACS_PER_PORT as usize);
        assert_eq!(table.len(), 2 + MAX_MACS_PER_PORT as usize);
        assert_eq!(table.refused(), 10_000 - u64::from(MAX_MACS_PER_PORT));
        // Everyone else's entries stay, and their ports still learn.
        assert_eq!(table.lookup(&A, t0), Some(1));
        assert_eq!(table.lookup(&B, t0), Some(2));
        let c = [0x02, 0, 0, 0, 0, 0xc];
        table.learn(c, 1, t0);
        assert_eq!(table.lookup(&c, t0), Some(1));
        // The sprayer cannot take others' MACs either once full.
        table.learn(A, 9, t0);
        assert_eq!(table.lookup(&A, t0), Some(1));
        // Its share frees up as its entries go.
        table.forget_peer(9);
        assert_eq!(table.port_len(9), 0);
        table.learn(spray[0], 9, t0);
        assert_eq!(table.lookup(&spray[0], t0), Some(9));
    }

    #[test]
    fn moves_and_removals_keep_the_port_counts() {
        let t0 = Instant::now();
        let table = MacTable::new(t0);
        let macs = random_macs(7, 300);
        std::thread::scope(|scope| {
            for worker in 0..4u32 {
                let (table, macs) = (&table, &macs);
                scope.spawn(move || {
                    for round in 0..20u32 {
                        for (i, mac) in macs.iter().enumerate() {
                            let peer = 1 + (i as u32 + worker + round) % 3;
                            table.learn(*mac, peer, t0);
                        }
                        if worker == 0 && round % 5 == 4 {
                            table.forget(&macs[..50]);
                        }
                    }
                });
            }
        });
        let counted: usize = (1..=3).map(|p| table.port_len(p)).sum();
        assert_eq!(counted, table.len());
        let behind = |p| {
            macs.iter()
                .filter(|m| table.lookup(m, t0) == Some(p))
                .count()
        };
        for peer in 1..=3 {
            assert_eq!(table.port_len(peer), behind(peer), "peer {peer}");
        }
        // Ageing out releases every share.
        assert_eq!(table.expire(t0 + MAC_AGE), counted);
        assert_eq!((1..=3).map(|p| table.port_len(p)).sum::<usize>(), 0);
    }
}
