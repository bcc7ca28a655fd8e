//! Per-network L2 learning switch state: which peer is behind which MAC.
//!
//! Learning happens on the receive path for every authenticated frame and
//! lookups on the send path for every frame, so both read an immutable map
//! behind an `ArcSwap` without a lock: refreshing a known entry touches only
//! its atomics. New MACs, moves to the local side and expiry copy the map
//! under a writers' mutex and publish the copy (entries are shared between
//! copies, so a refresh on the old copy is not lost). That costs a copy of
//! at most [`MAX_MACS_PER_NETWORK`] pointers per new MAC, which is rare
//! after the first seconds of a flow.

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

type Entries = HashMap<Mac, Arc<MacEntry>>;

pub struct MacTable {
    epoch: Instant,
    entries: ArcSwap<Entries>,
    /// Serialises copy-and-publish, so no change is lost.
    writer: Mutex<()>,
}

impl std::fmt::Debug for MacTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MacTable")
            .field("len", &self.len())
            .finish()
    }
}

impl MacTable {
    pub fn new(epoch: Instant) -> MacTable {
        MacTable {
            epoch,
            entries: ArcSwap::from_pointee(HashMap::new()),
            writer: Mutex::new(()),
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

    /// Records that `mac` lives behind `peer` (from an authenticated frame).
    pub fn learn(&self, mac: Mac, peer: PeerIdx, now: Instant) {
        if is_group(&mac) {
            return; // never a valid source; learning it would hijack floods
        }
        let now_ms = self.millis(now);
        {
            let entries = self.entries.load();
            if let Some(entry) = entries.get(&mac) {
                if entry.peer.load(Ordering::Relaxed) != peer {
                    entry.peer.store(peer, Ordering::Relaxed);
                }
                entry.last_seen_ms.store(now_ms, Ordering::Relaxed);
                return;
            }
            if entries.len() >= MAX_MACS_PER_NETWORK {
                return;
            }
        }
        self.update(|entries| {
            // Another worker may have learned it meanwhile: refresh that one.
            let entry = entries.entry(mac).or_insert_with(|| {
                Arc::new(MacEntry {
                    peer: AtomicU32::new(peer),
                    last_seen_ms: AtomicU64::new(now_ms),
                })
            });
            entry.peer.store(peer, Ordering::Relaxed);
            entry.last_seen_ms.store(now_ms, Ordering::Relaxed);
        });
    }

    /// The peer behind `mac`, if learned and not aged out.
    pub fn lookup(&self, mac: &Mac, now: Instant) -> Option<PeerIdx> {
        let entries = self.entries.load();
        let entry = entries.get(mac)?;
        let age_ms = self
            .millis(now)
            .saturating_sub(entry.last_seen_ms.load(Ordering::Relaxed));
        if age_ms >= MAC_AGE.as_millis() as u64 {
            return None;
        }
        Some(entry.peer.load(Ordering::Relaxed))
    }

    /// `mac` was seen on the local TAP: it is not (or no longer) behind a peer.
    pub fn forget_if_remote(&self, mac: &Mac) {
        if self.entries.load().contains_key(mac) {
            self.update(|entries| {
                entries.remove(mac);
            });
        }
    }

    /// Drops every entry pointing at `peer` (peer removed or left the network).
    pub fn forget_peer(&self, peer: PeerIdx) {
        self.update(|entries| {
            entries.retain(|_, entry| entry.peer.load(Ordering::Relaxed) != peer);
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
        if self.entries.load().values().all(|entry| fresh(entry)) {
            return 0;
        }
        let mut removed = 0;
        self.update(|entries| {
            let before = entries.len();
            entries.retain(|_, entry| fresh(entry));
            removed = before - entries.len();
        });
        removed
    }

    pub fn len(&self) -> usize {
        self.entries.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
}
