//! Which hosts still serve their targets, faster than gossip's failure
//! detector (5 s): each host bumps a counter every [`BEAT`]; a host whose
//! counter has not moved for [`STALE_AFTER`], by this host's own clock
//! (no clock skew between hosts matters), has its targets taken out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Heartbeat counters, keyed by peer id (hex); not persisted.
pub const HEARTBEAT_CHANNEL: &str = "service-heartbeat";
pub const BEAT: Duration = Duration::from_secs(1);
pub const STALE_AFTER: Duration = Duration::from_millis(3500);

#[derive(Default)]
pub struct Liveness {
    /// Per host: the last counter seen and when it was first seen.
    seen: Mutex<BTreeMap<String, (u64, Instant)>>,
}

impl Liveness {
    /// Notes the counters now replicated here.
    pub fn observe(&self, beats: &BTreeMap<String, u64>, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for (host, n) in beats {
            match seen.get(host) {
                Some((old, _)) if old == n => {}
                _ => {
                    seen.insert(host.clone(), (*n, now));
                }
            }
        }
    }

    /// Hosts whose heartbeat has stopped. Hosts that never sent one are
    /// left to gossip's own liveness.
    pub fn stale(&self, now: Instant) -> BTreeSet<String> {
        self.stale_after(now, STALE_AFTER)
    }

    /// Hosts whose counter has not moved for longer than `after`.
    pub fn stale_after(&self, now: Instant, after: Duration) -> BTreeSet<String> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) > after)
            .map(|(h, _)| h.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_whose_counter_stops_goes_stale() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let beats = |a: u64, b: u64| -> BTreeMap<String, u64> {
            [("a".to_string(), a), ("b".to_string(), b)].into()
        };
        l.observe(&beats(1, 1), t0);
        assert!(l.stale(t0 + Duration::from_secs(3)).is_empty());
        // a keeps beating, b stops.
        l.observe(&beats(4, 1), t0 + Duration::from_secs(3));
        let stale = l.stale(t0 + Duration::from_secs(4));
        assert_eq!(stale, ["b".to_string()].into());
        // b comes back.
        l.observe(&beats(5, 2), t0 + Duration::from_secs(5));
        assert!(l.stale(t0 + Duration::from_secs(5)).is_empty());
    }
}
