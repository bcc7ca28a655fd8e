//! Per-writer quotas on a replicated map: how many slots, and how many
//! encoded bytes, the entries one writer last wrote may take in one channel.
//!
//! Members are authenticated, but every host stores every channel and full
//! states travel on every anti-entropy repair: one host (a bug, an operator's
//! script in a loop, a compromised host) must not be able to grow a channel
//! without bound. A slot counts for the writer of its current entry;
//! tombstones count too (they are kept forever), so a writer that removes
//! someone else's key takes that slot over. The limit is local: it is not
//! encoded, and each host applies its own (configured in the node's
//! [`Config`](crate::Config)).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::PeerId;

/// What one writer's entries may take in one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Slots (live entries and tombstones).
    pub entries: usize,
    /// Encoded bytes of those slots (key, stamp, value and signature).
    pub bytes: usize,
}

impl Quota {
    /// 16,384 slots / 4 MiB per writer and channel: far above what a host
    /// writes for itself (one slot per container, network or service it
    /// owns), and small enough that a misbehaving writer costs each host at
    /// most 4 MiB per channel — four parts of a full state (`wire::MAX_PART_LEN`).
    pub const DEFAULT: Quota = Quota {
        entries: 16_384,
        bytes: 4 * 1024 * 1024,
    };
}

impl Default for Quota {
    fn default() -> Self {
        Quota::DEFAULT
    }
}

/// A write that would take its writer past its quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "write refused: writer {writer} would hold {entries} entries / {bytes} bytes in channel \
     {channel:?}, over the per-writer quota of {} entries / {} bytes",
    quota.entries,
    quota.bytes
)]
pub struct QuotaError {
    pub channel: String,
    pub writer: PeerId,
    /// What the writer would hold with this write.
    pub entries: usize,
    pub bytes: usize,
    pub quota: Quota,
}

static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Writes refused for a quota (local and remote) over the life of the
/// process (exported as a metric by the daemon).
pub fn refused_total() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

pub(crate) fn count_refusal() {
    REFUSED.fetch_add(1, Ordering::Relaxed);
}

/// A quota and what each writer holds under it.
#[derive(Clone, Debug)]
pub(crate) struct Limit {
    channel: String,
    quota: Quota,
    /// Per writer: (slots, bytes).
    usage: HashMap<PeerId, (usize, usize)>,
}

impl Limit {
    /// A limit with the current slots counted: `(writer, encoded size)` each.
    pub fn new(channel: &str, quota: Quota, slots: impl Iterator<Item = (PeerId, usize)>) -> Self {
        let mut limit = Limit {
            channel: channel.to_string(),
            quota,
            usage: HashMap::new(),
        };
        for (writer, size) in slots {
            limit.add(writer, size);
        }
        limit
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Whether `writer` may put an entry of `size` bytes into a slot that
    /// holds `old` (its writer and size) now.
    pub fn check(
        &self,
        writer: PeerId,
        old: Option<(PeerId, usize)>,
        size: usize,
    ) -> Result<(), QuotaError> {
        let (mut entries, mut bytes) = self.usage.get(&writer).copied().unwrap_or((0, 0));
        match old {
            Some((previous, old_size)) if previous == writer => {
                bytes = bytes.saturating_sub(old_size);
            }
            _ => entries += 1,
        }
        bytes += size;
        if entries > self.quota.entries || bytes > self.quota.bytes {
            return Err(QuotaError {
                channel: self.channel.clone(),
                writer,
                entries,
                bytes,
                quota: self.quota,
            });
        }
        Ok(())
    }

    /// Books a write [`Limit::check`] allowed.
    pub fn record(&mut self, writer: PeerId, old: Option<(PeerId, usize)>, size: usize) {
        if let Some((previous, old_size)) = old {
            self.release(previous, old_size);
        }
        self.add(writer, size);
    }

    /// Frees a slot of `writer` that held `size` bytes (overwritten, or an
    /// expired tombstone).
    pub fn release(&mut self, writer: PeerId, size: usize) {
        if let Some(slot) = self.usage.get_mut(&writer) {
            slot.0 = slot.0.saturating_sub(1);
            slot.1 = slot.1.saturating_sub(size);
            if slot.0 == 0 {
                self.usage.remove(&writer);
            }
        }
    }

    fn add(&mut self, writer: PeerId, size: usize) {
        let slot = self.usage.entry(writer).or_default();
        slot.0 += 1;
        slot.1 += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PeerId = PeerId([1; 32]);
    const B: PeerId = PeerId([2; 32]);

    #[test]
    fn slots_and_bytes_are_booked_per_writer() {
        let quota = Quota {
            entries: 2,
            bytes: 100,
        };
        let mut limit = Limit::new("c", quota, [(A, 40)].into_iter());
        assert!(limit.check(A, None, 40).is_ok());
        limit.record(A, None, 40);
        let err = limit.check(A, None, 1).unwrap_err();
        assert_eq!((err.entries, err.bytes), (3, 81));
        assert!(err.to_string().contains("quota of 2 entries / 100 bytes"));
        // Rewriting its own slot costs only the size difference.
        assert!(limit.check(A, Some((A, 40)), 60).is_ok());
        assert!(limit.check(A, Some((A, 40)), 61).is_err());
        // Taking over another writer's slot moves it.
        assert!(limit.check(B, Some((A, 40)), 10).is_ok());
        limit.record(B, Some((A, 40)), 10);
        assert!(limit.check(A, None, 50).is_ok());
        assert_eq!(limit.usage[&B], (1, 10));
    }
}
