//! Sliding anti-replay window (RFC 6479's ring of blocks), lock-free so that
//! several receive workers can open datagrams of one keypair at once.
//!
//! Each ring slot is one `AtomicU64` holding a block number (upper 60 bits)
//! and that block's 4 bits of "seen" flags (lower 4 bits). A counter is
//! accepted exactly when a compare-and-swap turns its bit on in a slot
//! tagged with its block; a slot still tagged with an older block is
//! recycled by the same CAS. Slot tags only ever grow, so no counter can be
//! accepted twice, whatever the interleaving. The highest counter seen is a
//! separate atomic maximum that bounds how old a counter may be.
//!
//! Counters must be below [`MAX_COUNTER`] (2^60) so a block number fits in a
//! slot tag exactly; the keypair refuses larger ones before calling here.
//! The window is only consulted *after* a datagram's tag has verified, so an
//! attacker cannot advance it with forged counters.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters per slot (the flag bits in a slot's low nibble).
const BLOCK_BITS: u64 = 4;
const RING_SLOTS: u64 = 1024; // 4096 counters
/// How far behind the highest seen counter a datagram may still arrive.
/// Less than the ring holds, so the slot of a counter inside the window is
/// never recycled by counters up to the highest.
pub const WINDOW_SIZE: u64 = 4032;
/// Counters at or above this are refused (they would not fit a slot tag).
pub const MAX_COUNTER: u64 = 1 << 60;

/// Why a counter was refused.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum ReplayReject {
    /// Already seen.
    Replayed,
    /// Fell out of the back of the window (or beyond [`MAX_COUNTER`]).
    TooOld,
}

pub struct ReplayWindow {
    /// Highest counter accepted so far.
    last: AtomicU64,
    ring: Box<[AtomicU64]>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            last: AtomicU64::new(0),
            // All zero: every slot tagged with block 0, nothing seen.
            ring: (0..RING_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("last", &self.highest())
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// Checks `counter` and, if acceptable, records it. Call only for
    /// authenticated datagrams. Safe to call from several threads at once.
    pub fn accept(&self, counter: u64) -> Result<(), ReplayReject> {
        if counter >= MAX_COUNTER {
            return Err(ReplayReject::TooOld);
        }
        let last = self.last.load(Ordering::Acquire);
        if counter < last && last - counter > WINDOW_SIZE {
            return Err(ReplayReject::TooOld);
        }
        let block = counter / BLOCK_BITS;
        let flag = 1u64 << (counter % BLOCK_BITS);
        let slot = &self.ring[(block % RING_SLOTS) as usize];
        let mut current = slot.load(Ordering::Acquire);
        loop {
            let tagged = current >> BLOCK_BITS;
            let next = if tagged == block {
                if current & flag != 0 {
                    return Err(ReplayReject::Replayed);
                }
                current | flag
            } else if tagged < block {
                // The slot still holds a block at least a ring behind: reuse it.
                (block << BLOCK_BITS) | flag
            } else {
                // Another worker already moved this slot a ring ahead.
                return Err(ReplayReject::TooOld);
            };
            match slot.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        if counter > last {
            self.last.fetch_max(counter, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Highest counter accepted so far.
    pub fn highest(&self) -> u64 {
        self.last.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_then_duplicate() {
        let window = ReplayWindow::default();
        for counter in 0..10_000 {
            assert_eq!(window.accept(counter), Ok(()));
        }
        assert_eq!(window.accept(9_999), Err(ReplayReject::Replayed));
        assert_eq!(window.accept(5_000), Err(ReplayReject::TooOld));
    }

    #[test]
    fn window_edges() {
        let window = ReplayWindow::default();
        let top = 100_000;
        assert_eq!(window.accept(top), Ok(()));
        // Exactly WINDOW_SIZE behind is still inside.
        assert_eq!(window.accept(top - WINDOW_SIZE), Ok(()));
        assert_eq!(
            window.accept(top - WINDOW_SIZE),
            Err(ReplayReject::Replayed)
        );
        assert_eq!(
            window.accept(top - WINDOW_SIZE - 1),
            Err(ReplayReject::TooOld)
        );
        // Window is at least 2048 positions as required.
        assert_eq!(window.accept(top - 2048), Ok(()));
        // A huge jump forgets everything behind.
        assert_eq!(window.accept(top + 1_000_000), Ok(()));
        assert_eq!(window.accept(top + 1), Err(ReplayReject::TooOld));
        assert_eq!(window.accept(top + 1_000_000 - 1), Ok(()));
    }

    #[test]
    fn counter_zero_and_the_top_of_the_range() {
        let window = ReplayWindow::default();
        assert_eq!(window.accept(0), Ok(()));
        assert_eq!(window.accept(0), Err(ReplayReject::Replayed));
        let high = MAX_COUNTER - 2;
        assert_eq!(window.accept(high), Ok(()));
        assert_eq!(window.accept(high), Err(ReplayReject::Replayed));
        assert_eq!(window.accept(MAX_COUNTER - 1), Ok(()));
        assert_eq!(window.accept(MAX_COUNTER), Err(ReplayReject::TooOld));
        assert_eq!(window.accept(u64::MAX), Err(ReplayReject::TooOld));
    }

    #[test]
    fn slots_reused_after_a_ring_are_fresh() {
        let window = ReplayWindow::default();
        assert_eq!(window.accept(5), Ok(()));
        // Advance by exactly one ring: counter 5's slot is reused.
        let wrapped = 5 + RING_SLOTS * BLOCK_BITS;
        assert_eq!(window.accept(wrapped), Ok(()));
        assert_eq!(window.accept(wrapped - 64), Ok(()));
        assert_eq!(window.accept(wrapped), Err(ReplayReject::Replayed));
    }

    /// Several threads offer the same counters (every one twice, in
    /// different orders): each counter is accepted exactly once overall.
    #[test]
    fn concurrent_workers_accept_each_counter_once() {
        let window = std::sync::Arc::new(ReplayWindow::default());
        const COUNTERS: u64 = 200_000;
        let threads: Vec<_> = (0..4u64)
            .map(|worker| {
                let window = window.clone();
                std::thread::spawn(move || {
                    let mut accepted = Vec::new();
                    for step in 0..COUNTERS {
                        // Workers 0/1 see the stream in order, 2/3 with
                        // neighbouring pairs swapped: duplicates arrive both
                        // early and late.
                        let counter = if worker < 2 { step } else { step ^ 1 };
                        if window.accept(counter).is_ok() {
                            accepted.push(counter);
                        }
                    }
                    accepted
                })
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let total = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), total, "a counter was accepted twice");
        // Whoever offers a counter first is at most one step behind the
        // highest counter seen, so every counter is accepted by someone.
        assert_eq!(total as u64, COUNTERS);
    }

    proptest! {
        /// Reordering within the window is accepted exactly once per counter;
        /// checked against a simple model.
        #[test]
        fn matches_reference_model(counters in proptest::collection::vec(0u64..20_000, 1..400)) {
            let window = ReplayWindow::default();
            let mut seen = std::collections::BTreeSet::new();
            let mut highest: Option<u64> = None;
            for counter in counters {
                let expected = match highest {
                    Some(top) if counter <= top && top - counter > WINDOW_SIZE => Err(ReplayReject::TooOld),
                    _ if seen.contains(&counter) => Err(ReplayReject::Replayed),
                    _ => Ok(()),
                };
                prop_assert_eq!(window.accept(counter), expected);
                if expected.is_ok() {
                    seen.insert(counter);
                    highest = Some(highest.map_or(counter, |top| top.max(counter)));
                }
            }
        }
    }
}
