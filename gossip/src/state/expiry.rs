//! When a removal may be forgotten: tombstone expiry for channels whose
//! keys belong to one host each (see docs/scale.md §8, PROTOCOL.md
//! "Tombstones").
//!
//! A tombstone exists so that a host which missed a removal cannot bring
//! the value back. Past a horizon `H` that only matters for a host away
//! longer than `H`, and such a host sets its own state aside when it comes
//! back (the daemon keeps only its own writes of an expiring channel; the
//! rest comes back from the mesh). So a map opened with an [`Expiry`]:
//!
//! - forgets tombstones older than the *removal cutoff* `F = ⌊now − H⌋`;
//! - takes a received tombstone older than `F` as absence: it still removes
//!   an older value held here, but leaves no slot;
//! - leaves tombstones older than the *digest cutoff* `D = F + band` out of
//!   the anti-entropy digest, so two hosts that swept a minute apart, or
//!   whose clocks differ by less than the band, still hash alike.
//!
//! Both cutoffs are rounded down to a [`Expiry::step`] (an hour for the
//! default horizon), so hosts compute the same ones except within the clock
//! skew of a step boundary, however much churn there is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static EXPIRED: AtomicU64 = AtomicU64::new(0);

/// Tombstones forgotten over the life of the process (a metric).
pub fn expired_total() -> u64 {
    EXPIRED.load(Ordering::Relaxed)
}

pub(crate) fn count_expired(n: usize) {
    EXPIRED.fetch_add(n as u64, Ordering::Relaxed);
}

/// The default horizon: a host away for longer sets its state of expiring
/// channels aside on return. A week covers a weekend off and a long outage.
pub const DEFAULT_HORIZON: Duration = Duration::from_secs(7 * 24 * 3600);
/// Steps per horizon, and the longest step: cutoffs move an hour at a time.
const STEPS_PER_HORIZON: u64 = 24;
const MAX_STEP_MS: u64 = 3600 * 1000;
/// The digest band, in steps: wider than the sweep period plus clock skew.
const BAND_STEPS: u64 = 2;

/// A horizon and the cutoffs it gives (all times in Unix ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    horizon_ms: u64,
}

impl Expiry {
    /// Tombstones older than `horizon` expire (at least one second).
    pub fn new(horizon: Duration) -> Expiry {
        Expiry {
            horizon_ms: (horizon.as_millis() as u64).max(1000),
        }
    }

    pub fn horizon(&self) -> Duration {
        Duration::from_millis(self.horizon_ms)
    }

    /// How far the cutoffs move at a time.
    pub fn step(&self) -> Duration {
        Duration::from_millis(self.step_ms())
    }

    fn step_ms(&self) -> u64 {
        (self.horizon_ms / STEPS_PER_HORIZON).clamp(1, MAX_STEP_MS)
    }

    /// Tombstones stamped before this are forgotten.
    pub fn removal_cutoff(&self, now_ms: u64) -> u64 {
        let step = self.step_ms();
        now_ms.saturating_sub(self.horizon_ms) / step * step
    }

    /// Tombstones stamped before this are left out of the digest.
    pub fn digest_cutoff(&self, now_ms: u64) -> u64 {
        self.removal_cutoff(now_ms)
            .saturating_add(BAND_STEPS * self.step_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Mergeable, Quota, Stamp};
    use crate::{LwwMap, PeerId};

    const DAY_MS: u64 = 24 * 3600 * 1000;
    const NOW: u64 = 1_800_000_000_000;

    fn writer() -> PeerId {
        crate::Identity::from_seed([44; 32]).unwrap().peer_id()
    }

    fn at(days_ago: u64) -> Stamp {
        Stamp {
            timestamp: NOW - days_ago * DAY_MS,
            writer: writer(),
        }
    }

    /// Values 30 days old, a removal 8 days old, one 1 day old.
    fn map() -> LwwMap<String, u32> {
        let mut m = LwwMap::new().expiring(DEFAULT_HORIZON);
        m.apply("old-value".into(), at(30), Some(1));
        m.apply("old-removal".into(), at(30), Some(2));
        m.apply("old-removal".into(), at(8), None);
        m.apply("new-removal".into(), at(1), None);
        m
    }

    fn keys(m: &LwwMap<String, u32>) -> Vec<&str> {
        m.entries().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn only_removals_past_the_horizon_are_forgotten_and_only_while_on() {
        let mut m = map();
        assert_eq!(m.expire_at(None), 0, "off: nothing forgotten");
        assert_eq!(keys(&m).len(), 3);
        assert_eq!(m.expire_at(Some(NOW)), 1);
        assert_eq!(keys(&m), ["new-removal", "old-value"]);
        assert_eq!(m.get(&"old-value".into()), Some(&1));
        // A map without expiry keeps everything.
        let mut plain: LwwMap<String, u32> = LwwMap::decode(&map().encode()).unwrap();
        assert_eq!(plain.expire_at(Some(NOW)), 0);
        assert_eq!(keys(&plain).len(), 3);
    }

    #[test]
    fn a_removal_past_the_horizon_still_removes_but_leaves_no_slot() {
        let mut m = map();
        m.expire_at(Some(NOW));
        let mut late = LwwMap::new();
        late.apply("old-value".to_string(), at(9), None::<u32>);
        late.apply("never-held".to_string(), at(9), None);
        assert!(m.merge(&late), "the held value goes");
        assert_eq!(keys(&m), ["new-removal"]);
        // Off again (an older host linked): removals are kept as sent.
        m.expire_at(None);
        assert!(m.merge(&late));
        assert_eq!(keys(&m), ["never-held", "new-removal", "old-value"]);
    }

    #[test]
    fn digests_leave_out_removals_near_the_horizon_so_sweep_timing_does_not_matter() {
        let now = Some(NOW);
        let swept = {
            let mut m = map();
            m.expire_at(now);
            m
        };
        let unswept = map();
        assert_ne!(swept.encode(), unswept.encode());
        assert_eq!(swept.encode_for_digest(now), unswept.encode_for_digest(now));
        // Inside the band (6 days 23 h old, not yet forgotten) it is left
        // out too; a removal a day old is in.
        let mut band = map();
        band.apply(
            "edge".into(),
            Stamp {
                timestamp: NOW - 7 * DAY_MS + 3_600_000,
                writer: writer(),
            },
            None,
        );
        assert_eq!(band.expire_at(now), 1);
        assert!(band.entry(&"edge".into()).is_some());
        assert_eq!(band.encode_for_digest(now), swept.encode_for_digest(now));
        assert_ne!(
            swept.encode_for_digest(now),
            LwwMap::<String, u32>::new()
                .expiring(DEFAULT_HORIZON)
                .encode_for_digest(now)
        );
        // Off, or without nothing to leave out: the whole encoding.
        assert_eq!(unswept.encode_for_digest(None), unswept.encode());
        assert_eq!(swept.encode_for_digest(now), swept.encode());
    }

    #[test]
    fn old_removals_of_held_slots_pass_a_full_quota_and_new_keys_do_not() {
        // Merges judge the age against the clock.
        let now = crate::state::now_millis();
        let stamp = |writer, days_ago: u64| Stamp {
            timestamp: now - days_ago * DAY_MS,
            writer,
        };
        let other = crate::Identity::from_seed([46; 32]).unwrap().peer_id();
        let by_other = |days_ago| stamp(other, days_ago);
        let mut full = LwwMap::<String, u32>::new().expiring(DEFAULT_HORIZON);
        full.apply("held".into(), stamp(writer(), 30), Some(2));
        full.apply("other's".into(), by_other(30), Some(3));
        full.set_quota(
            "c",
            Quota {
                entries: 1,
                bytes: 1 << 20,
            },
        );
        // The other writer's one slot is all its quota: a back-dated
        // removal by it of a slot held here still passes (it may come from
        // a host that has not forgotten it)…
        let mut removal = LwwMap::new();
        removal.apply("held".to_string(), by_other(8), None::<u32>);
        assert!(full.merge(&removal));
        assert!(full.entry(&"held".into()).unwrap().is_tombstone());
        // …but its back-dated removals of new keys are counted.
        let mut spray = LwwMap::new();
        for i in 0..5 {
            spray.apply(format!("new-{i}"), by_other(9), None::<u32>);
        }
        assert!(!full.merge(&spray));
        assert_eq!(full.entries().count(), 2);
    }

    #[test]
    fn forgotten_removals_free_their_writers_quota() {
        let mut m = map();
        m.set_quota(
            "c",
            Quota {
                entries: 3,
                bytes: 1 << 20,
            },
        );
        assert!(
            m.try_set(writer(), "more".into(), 3).is_err(),
            "3 slots held"
        );
        m.expire_at(Some(NOW));
        assert!(m.try_set(writer(), "more".into(), 3).is_ok());
    }

    #[test]
    fn a_host_back_after_the_horizon_keeps_its_own_writes() {
        let other = crate::Identity::from_seed([45; 32]).unwrap().peer_id();
        let mut m = map();
        m.apply(
            "theirs".into(),
            Stamp {
                timestamp: NOW,
                writer: other,
            },
            Some(9),
        );
        assert_eq!(m.retain(|_, e| e.stamp.writer == writer()), 1);
        assert_eq!(
            m.set_aside(writer(), 6 * DAY_MS),
            None,
            "within the horizon"
        );
        assert_eq!(
            m.set_aside(writer(), 8 * DAY_MS),
            Some(0),
            "past it: nothing left to drop"
        );
        assert_eq!(keys(&m).len(), 3);
    }

    #[test]
    fn cutoffs_move_in_steps_and_the_digest_band_lies_inside_the_horizon() {
        let week = Expiry::new(DEFAULT_HORIZON);
        assert_eq!(week.step(), Duration::from_secs(3600));
        let now = 1_800_000_000_000u64;
        let f = week.removal_cutoff(now);
        assert_eq!(f % 3_600_000, 0);
        assert!(f <= now - week.horizon_ms && now - week.horizon_ms - f < 3_600_000);
        assert_eq!(week.digest_cutoff(now), f + 2 * 3_600_000);
        // Two hosts a few seconds apart agree unless a step boundary lies between.
        assert_eq!(
            week.digest_cutoff(f + week.horizon_ms + 10),
            week.digest_cutoff(f + week.horizon_ms + 3_000_000)
        );
        // Short horizons (tests) get short steps; nothing is cut before the epoch.
        let short = Expiry::new(Duration::from_secs(4));
        assert_eq!(short.step(), Duration::from_millis(166));
        assert_eq!(short.removal_cutoff(10), 0);
        assert_eq!(
            Expiry::new(Duration::ZERO).horizon(),
            Duration::from_secs(1)
        );
    }
}
