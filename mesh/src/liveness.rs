//! The one failure detector every part reads (floating IPs, service
//! targets): when this host last heard from each other host, by its own
//! clock, from what the links carry anyway — no subsystem gossips periodic
//! counters through replicated state.
//!
//! Sources, one observation of all members at a time ([`Liveness::observe`]):
//! - the control link: any byte received on the QUIC connection (the
//!   link's heartbeats, or the QUIC ACKs of our own) moves its receive
//!   counter; the link's dialer sends a heartbeat every 2 s, so a live host
//!   is heard at least that often on both ends;
//! - the data path: an authenticated probe from the peer (active peers are
//!   probed every second);
//! - a control session relayed through a third host has no connection of
//!   its own to count: it is heard while gossip calls it up.
//!
//! A host gossip calls down is never live, whatever was heard.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataplane::Dataplane;
use gossip::Node;

use crate::peers::PeerTable;

/// A host not heard from for this long is gone for the parts that fail
/// over (floating IPs, service targets): two control heartbeats (2 s
/// apart) missed, well before gossip's own 5 s verdict.
pub const STALE_AFTER: Duration = Duration::from_millis(4000);
/// How often the daemon observes the members.
pub const OBSERVE_EVERY: Duration = Duration::from_millis(250);

/// What one look at one member shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Sighting {
    /// Peer id, hex.
    pub host: String,
    /// Gossip's verdict: up (directly or through a relay).
    pub up: bool,
    /// Control traffic goes through a third host (no connection to count).
    pub relayed: bool,
    /// Bytes received over the control connections with the host, ever.
    pub control_rx: u64,
    /// Since the data plane last authenticated a probe from the host.
    pub data_heard: Option<Duration>,
}

#[derive(Debug)]
struct Heard {
    control_rx: u64,
    at: Instant,
    up: bool,
}

#[derive(Debug, Default)]
pub struct Liveness {
    heard: Mutex<BTreeMap<String, Heard>>,
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Heard>> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes one observation of every member; hosts no longer listed are
    /// forgotten.
    pub fn observe(&self, sightings: &[Sighting], now: Instant) {
        let mut heard = self.lock();
        heard.retain(|host, _| sightings.iter().any(|s| &s.host == host));
        for s in sightings {
            let data_at = s.data_heard.and_then(|age| now.checked_sub(age));
            let entry = heard.entry(s.host.clone()).or_insert(Heard {
                control_rx: s.control_rx,
                // First sight: heard now if gossip calls it up (it just
                // linked), else never.
                at: if s.up {
                    now
                } else {
                    now.checked_sub(STALE_AFTER * 2).unwrap_or(now)
                },
                up: s.up,
            });
            entry.up = s.up;
            if s.control_rx != entry.control_rx || (s.up && s.relayed) {
                entry.control_rx = s.control_rx;
                entry.at = now;
            }
            if let Some(at) = data_at {
                entry.at = entry.at.max(at);
            }
        }
    }

    /// Hosts up and heard from within `within` (other than this one).
    pub fn fresh(&self, within: Duration, now: Instant) -> BTreeSet<String> {
        self.lock()
            .iter()
            .filter(|(_, h)| h.up && now.saturating_duration_since(h.at) <= within)
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// Hosts up by gossip but not heard from within `within`.
    pub fn stale(&self, within: Duration, now: Instant) -> BTreeSet<String> {
        self.lock()
            .iter()
            .filter(|(_, h)| h.up && now.saturating_duration_since(h.at) > within)
            .map(|(host, _)| host.clone())
            .collect()
    }
}

/// Feeds the one failure detector ([`crate::liveness`]) from what the
/// control links and the data plane already know; nothing is sent for it.
pub fn spawn_observer(liveness: Arc<Liveness>, node: Node, peers: Arc<PeerTable>, dp: Dataplane) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(OBSERVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let stats = dp.stats();
            let sightings: Vec<Sighting> = node
                .members()
                .into_iter()
                .map(|m| Sighting {
                    host: m.id.to_hex(),
                    up: m.state == gossip::PeerState::Up,
                    relayed: m.relay.is_some(),
                    control_rx: m.bytes_received,
                    data_heard: peers
                        .handle(&m.id)
                        .and_then(|idx| stats.peers.get(&idx))
                        .and_then(|p| p.path.last_heard),
                })
                .collect();
            liveness.observe(&sightings, std::time::Instant::now());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(host: &str, up: bool, control_rx: u64) -> Sighting {
        Sighting {
            host: host.into(),
            up,
            relayed: false,
            control_rx,
            data_heard: None,
        }
    }

    fn set(hosts: &[&str]) -> BTreeSet<String> {
        hosts.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn a_host_whose_link_falls_silent_goes_stale_before_gossip_says_down() {
        let l = Liveness::default();
        let t0 = Instant::now();
        l.observe(&[seen("a", true, 100), seen("b", true, 100)], t0);
        let t1 = t0 + Duration::from_secs(2);
        // a's heartbeat arrived, b's did not.
        l.observe(&[seen("a", true, 168), seen("b", true, 100)], t1);
        let t2 = t0 + Duration::from_millis(4500);
        l.observe(&[seen("a", true, 236), seen("b", true, 100)], t2);
        assert_eq!(l.fresh(STALE_AFTER, t2), set(&["a"]));
        assert_eq!(l.stale(STALE_AFTER, t2), set(&["b"]));
        // b is heard again.
        let t3 = t2 + Duration::from_millis(100);
        l.observe(&[seen("a", true, 236), seen("b", true, 168)], t3);
        assert_eq!(l.fresh(STALE_AFTER, t3), set(&["a", "b"]));
    }

    #[test]
    fn gossip_down_wins_and_unknown_hosts_are_forgotten() {
        let l = Liveness::default();
        let t0 = Instant::now();
        l.observe(&[seen("a", true, 1), seen("b", true, 1)], t0);
        let t1 = t0 + Duration::from_millis(300);
        l.observe(&[seen("a", false, 2)], t1);
        assert!(l.fresh(STALE_AFTER, t1).is_empty());
        assert!(l.stale(STALE_AFTER, t1).is_empty(), "down is not stale");
        // Never seen up: not live on first sight.
        l.observe(&[seen("c", false, 0)], t1);
        assert!(l.fresh(STALE_AFTER, t1).is_empty());
    }

    #[test]
    fn data_probes_and_relayed_sessions_count_as_heard() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let mut data = seen("d", true, 5);
        let mut relayed = seen("r", true, 0);
        relayed.relayed = true;
        l.observe(&[data.clone(), relayed.clone()], t0);
        let t1 = t0 + Duration::from_secs(10);
        // No control bytes from d, but a probe 1 s ago; r is relayed and up.
        data.data_heard = Some(Duration::from_secs(1));
        l.observe(&[data, relayed], t1);
        assert_eq!(l.fresh(STALE_AFTER, t1), set(&["d", "r"]));
    }
}
