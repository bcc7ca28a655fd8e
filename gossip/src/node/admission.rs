//! Which incoming QUIC connections may start a handshake (issue 27, item 5).
//!
//! A handshake slot is held from the first packet until the dialer proved the
//! mesh secret. Without address validation, a stranger spoofing Initial
//! packets from addresses it does not own could hold every slot (each for
//! the whole handshake timeout) and refuse joins, reconnects and NAT-traversed
//! peers. So:
//! - once a quarter of the slots are taken, an Initial from an address QUIC
//!   has not validated is answered with a stateless Retry (one round trip for
//!   a real dialer, nothing kept here): a spoofed source never sees the
//!   token, so it never takes a slot. Below that, Retry would only cost
//!   every join and reconnect a round trip;
//! - one source IP holds at most [`MAX_PER_SOURCE`] slots, so one real host
//!   (or one NAT) cannot take them all either; a NAT with many members
//!   behind it still gets several at once, and the rest retry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Connections whose dialer has not proved the secret yet, at most.
pub(crate) const MAX_UNAUTHENTICATED: usize = 64;
/// Slots taken from which unvalidated addresses must pass a Retry first.
pub(crate) const RETRY_ABOVE: usize = MAX_UNAUTHENTICATED / 4;
/// Slots one source IP may hold at once.
pub(crate) const MAX_PER_SOURCE: usize = 8;

static RETRIED: AtomicU64 = AtomicU64::new(0);
static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Incoming handshakes answered with a Retry, over the life of the process.
pub fn retried_total() -> u64 {
    RETRIED.load(Ordering::Relaxed)
}

/// Incoming handshakes refused for want of a slot (in all or for their
/// source), over the life of the process.
pub fn refused_total() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

/// What to do with one incoming connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send a Retry: the source must prove it receives at its address.
    Retry,
    /// No slot: refuse (the reason is for the log).
    Refuse(&'static str),
    Admit,
}

/// The slots in use, in all and per source IP.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

impl Slots {
    /// Judges a connection from `source`; `validated`: QUIC validated its
    /// address (it answered a Retry); `may_retry`: a Retry can still be sent.
    /// An admitted connection holds a slot until [`Slots::release`].
    pub fn admit(&mut self, source: IpAddr, validated: bool, may_retry: bool) -> Verdict {
        if !validated && may_retry && self.total >= RETRY_ABOVE {
            RETRIED.fetch_add(1, Ordering::Relaxed);
            return Verdict::Retry;
        }
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        let refusal = if self.total >= MAX_UNAUTHENTICATED {
            Some("too many handshakes in progress")
        } else if from_source >= MAX_PER_SOURCE {
            Some("too many handshakes in progress from this address")
        } else {
            None
        };
        if let Some(reason) = refusal {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            return Verdict::Refuse(reason);
        }
        self.total += 1;
        *self.per_source.entry(source).or_default() += 1;
        Verdict::Admit
    }

    pub fn release(&mut self, source: IpAddr) {
        self.total = self.total.saturating_sub(1);
        if let Some(n) = self.per_source.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&source);
            }
        }
    }
}

/// An admitted connection's slot, given back when dropped.
pub(crate) struct Slot {
    slots: Arc<Mutex<Slots>>,
    source: IpAddr,
}

impl Slot {
    /// [`Slots::admit`] on the shared slots; `Ok` holds the slot.
    pub fn take(
        slots: &Arc<Mutex<Slots>>,
        source: IpAddr,
        validated: bool,
        may_retry: bool,
    ) -> Result<Slot, Verdict> {
        let verdict = super::lock(slots).admit(source, validated, may_retry);
        match verdict {
            Verdict::Admit => Ok(Slot {
                slots: slots.clone(),
                source,
            }),
            other => Err(other),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        super::lock(&self.slots).release(self.source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn spoofed_sources_fill_at_most_a_quarter_then_must_retry() {
        let mut slots = Slots::default();
        // Unvalidated sources, one Initial each: admitted up to the threshold.
        for n in 0..RETRY_ABOVE as u32 {
            assert_eq!(slots.admit(ip(n), false, true), Verdict::Admit);
        }
        for n in 100..200 {
            assert_eq!(slots.admit(ip(n), false, true), Verdict::Retry);
        }
        // A real dialer answers the Retry and gets a slot.
        assert_eq!(slots.admit(ip(1000), true, false), Verdict::Admit);
        // A source that cannot be retried again (it already was) is admitted too.
        assert_eq!(slots.admit(ip(1001), false, false), Verdict::Admit);
    }

    #[test]
    fn one_source_holds_a_bounded_share_and_the_total_is_capped() {
        let mut slots = Slots::default();
        for _ in 0..MAX_PER_SOURCE {
            assert_eq!(slots.admit(ip(1), true, false), Verdict::Admit);
        }
        assert!(matches!(
            slots.admit(ip(1), true, false),
            Verdict::Refuse(_)
        ));
        slots.release(ip(1));
        assert_eq!(slots.admit(ip(1), true, false), Verdict::Admit);
        for n in 2.. {
            if slots.admit(ip(n), true, false) != Verdict::Admit {
                break;
            }
        }
        assert_eq!(slots.total, MAX_UNAUTHENTICATED);
        assert!(matches!(
            slots.admit(ip(9999), true, false),
            Verdict::Refuse(_)
        ));
    }
}
