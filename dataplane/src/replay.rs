//! RFC 6479 sliding anti-replay window: 4096 bits kept as a ring of u64
//! blocks. Advancing the window clears whole blocks instead of shifting bits,
//! so the cost is independent of how far the counter jumps.
//!
//! The window is only consulted *after* a datagram's tag has verified, so an
//! attacker cannot advance it with forged counters.

const BLOCK_BITS: u64 = 64;
const RING_BLOCKS: u64 = 64; // 4096 bits
const BLOCK_MASK: u64 = RING_BLOCKS - 1;
/// How far behind the highest seen counter a datagram may still arrive.
/// One block is sacrificed so the block holding `last` is never cleared.
pub const WINDOW_SIZE: u64 = (RING_BLOCKS - 1) * BLOCK_BITS; // 4032

/// Why a counter was refused.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum ReplayReject {
    /// Already seen.
    Replayed,
    /// Fell out of the back of the window.
    TooOld,
}

#[derive(Clone)]
pub struct ReplayWindow {
    last: u64,
    ring: [u64; RING_BLOCKS as usize],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            last: 0,
            ring: [0; RING_BLOCKS as usize],
        }
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// Checks `counter` and, if acceptable, records it. Call only for
    /// authenticated datagrams.
    pub fn accept(&mut self, counter: u64) -> Result<(), ReplayReject> {
        let block = counter / BLOCK_BITS;
        if counter > self.last {
            let current_block = self.last / BLOCK_BITS;
            let advance = (block - current_block).min(RING_BLOCKS);
            for step in 1..=advance {
                self.ring[((current_block + step) & BLOCK_MASK) as usize] = 0;
            }
            self.last = counter;
        } else if self.last - counter > WINDOW_SIZE {
            return Err(ReplayReject::TooOld);
        }
        let slot = &mut self.ring[(block & BLOCK_MASK) as usize];
        let bit = 1u64 << (counter % BLOCK_BITS);
        if *slot & bit != 0 {
            return Err(ReplayReject::Replayed);
        }
        *slot |= bit;
        Ok(())
    }

    /// Highest counter accepted so far.
    pub fn highest(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_then_duplicate() {
        let mut window = ReplayWindow::default();
        for counter in 0..10_000 {
            assert_eq!(window.accept(counter), Ok(()));
        }
        assert_eq!(window.accept(9_999), Err(ReplayReject::Replayed));
        assert_eq!(window.accept(5_000), Err(ReplayReject::TooOld));
    }

    #[test]
    fn window_edges() {
        let mut window = ReplayWindow::default();
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
    fn counter_zero_and_u64_max_region() {
        let mut window = ReplayWindow::default();
        assert_eq!(window.accept(0), Ok(()));
        assert_eq!(window.accept(0), Err(ReplayReject::Replayed));
        let high = u64::MAX - 1;
        assert_eq!(window.accept(high), Ok(()));
        assert_eq!(window.accept(high), Err(ReplayReject::Replayed));
        assert_eq!(window.accept(u64::MAX), Ok(()));
    }

    #[test]
    fn blocks_reused_after_advance_are_cleared() {
        let mut window = ReplayWindow::default();
        assert_eq!(window.accept(5), Ok(()));
        // Advance by exactly one ring: block 0's ring slot is reused.
        let wrapped = 5 + RING_BLOCKS * BLOCK_BITS;
        assert_eq!(window.accept(wrapped), Ok(()));
        assert_eq!(window.accept(wrapped - 64), Ok(()));
    }

    proptest! {
        /// Reordering within the window is accepted exactly once per counter;
        /// checked against a simple model.
        #[test]
        fn matches_reference_model(counters in proptest::collection::vec(0u64..20_000, 1..400)) {
            let mut window = ReplayWindow::default();
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
