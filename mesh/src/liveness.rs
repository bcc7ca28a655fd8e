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
//!   its own to count: it is heard while gossip calls it up;
//! - suspicion: a host not heard for [`SUSPECT_AFTER`] (a heartbeat late)
//!   gets one data-path probe, SWIM's direct probe. An answer within
//!   [`SUSPECT_PROBE_TIMEOUT`] is hearing from it; none makes it stale at
//!   [`CONFIRMED_STALE_AFTER`] of silence rather than at [`STALE_AFTER`]. This costs a probe per late
//!   heartbeat, nothing while hosts are well, and the probe is answered by
//!   the host's data-plane thread, so a busy control plane alone does not
//!   make a host look dead.
//!
//! A host gossip calls down is never live, whatever was heard.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataplane::Dataplane;
use gossip::Node;
use tokio::sync::watch;

use crate::peers::PeerTable;
use crate::roster::Roster;

/// A host not heard from for this long is gone for the parts that fail
/// over (floating IPs, service targets): two control heartbeats (2 s
/// apart) missed, well before gossip's own 5 s verdict.
pub const STALE_AFTER: Duration = Duration::from_millis(4000);
/// Silence after which a host is asked directly (one heartbeat, 2 s, and
/// some slack).
pub const SUSPECT_AFTER: Duration = Duration::from_millis(2200);
/// A host that did not answer is stale once silent this long, rather
/// than [`STALE_AFTER`]. 1 s longer than the floating IPs' hold window (2.5 s),
/// so that a holder cut off from the others gives an address up before
/// they take it.
pub const CONFIRMED_STALE_AFTER: Duration = Duration::from_millis(3500);
/// How long the suspicion probe's answer is waited for.
pub const SUSPECT_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// A suspicion probe is sent only over a path that answered within this
/// (an active one: probed every second).
const VERIFIED_WITHIN: Duration = Duration::from_secs(5);
/// How often the daemon observes the members.
pub const OBSERVE_EVERY: Duration = Duration::from_millis(250);
/// A floating IP's holder keeps it only while it heard, within this
/// window, from a majority of the pool's hosts (`crate::edge`): one
/// control heartbeat (2 s) and some slack; a host silent for
/// [`SUSPECT_AFTER`] is probed, and its answer counts. 1 s shorter than
/// [`CONFIRMED_STALE_AFTER`], after which the others consider it gone and
/// choose anew, so the side of a partition without a majority gives an
/// address up before the other side takes it.
pub const HOLD_WINDOW: Duration = Duration::from_millis(2500);

/// A suspicion probe could not be sent (no key or path to the host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeUnsent;

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
    /// When the last suspicion probe was sent, and whether it went
    /// unanswered (`Some(false)`: answered, `None`: pending).
    probe: Option<(Instant, Option<bool>)>,
}

impl Heard {
    /// A suspicion probe sent after the host was last heard found nothing.
    fn confirmed_silent(&self) -> bool {
        matches!(self.probe, Some((sent, Some(true))) if sent >= self.at)
    }

    fn live_within(&self, within: Duration, now: Instant) -> bool {
        let within = if self.confirmed_silent() {
            within.min(CONFIRMED_STALE_AFTER)
        } else {
            within
        };
        self.up && now.saturating_duration_since(self.at) <= within
    }
}

/// What the readers decide on: who is live, who supports a holder, who
/// is stale. It moves at the observer's pace (or on a probe's answer), so
/// a reader that follows [`Liveness::subscribe`] needs no timer of its own.
#[derive(Debug, Default, PartialEq)]
struct Verdicts {
    live: BTreeSet<String>,
    support: BTreeSet<String>,
    stale: BTreeSet<String>,
}

#[derive(Debug)]
pub struct Liveness {
    heard: Mutex<BTreeMap<String, Heard>>,
    verdicts: Mutex<Verdicts>,
    version: watch::Sender<u64>,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            heard: Mutex::default(),
            verdicts: Mutex::default(),
            version: watch::channel(0).0,
        }
    }
}

impl Liveness {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Heard>> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves whenever who is live, supporting or stale changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Recomputes the verdicts as of `now` and tells followers if they
    /// changed.
    fn publish(&self, now: Instant) {
        // Computed and compared under one lock: the observer and a probe's
        // answer may publish at once, and must not store out of order.
        let mut v = self.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        let next = Verdicts {
            live: self.fresh(STALE_AFTER, now),
            support: self.fresh(HOLD_WINDOW, now),
            stale: self.stale(now),
        };
        if *v != next {
            *v = next;
            drop(v);
            self.version.send_modify(|n| *n += 1);
        }
    }

    /// Notes one observation of every member; hosts no longer listed are
    /// forgotten.
    pub fn observe(&self, sightings: &[Sighting], now: Instant) {
        self.note(sightings, now);
        self.publish(now);
    }

    fn note(&self, sightings: &[Sighting], now: Instant) {
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
                probe: None,
            });
            if s.up && !entry.up {
                // Just linked (again): that is hearing from it.
                entry.at = now;
            }
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
            .filter(|(_, h)| h.live_within(within, now))
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// Hosts up by gossip that are gone as far as service targets go:
    /// silent and not answering a probe, or silent for [`STALE_AFTER`].
    /// (Floating IPs wait for [`CONFIRMED_STALE_AFTER`] instead, through
    /// [`Self::fresh`], to stay clear of a cut-off holder's hold window.)
    pub fn stale(&self, now: Instant) -> BTreeSet<String> {
        self.lock()
            .iter()
            .filter(|(_, h)| h.up && (h.confirmed_silent() || !h.live_within(STALE_AFTER, now)))
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// Hosts to ask directly now: up, silent for [`SUSPECT_AFTER`], not
    /// asked since they were last heard. Each is marked as asked.
    pub fn take_suspects(&self, now: Instant) -> Vec<String> {
        let mut heard = self.lock();
        let mut out = Vec::new();
        for (host, h) in heard.iter_mut() {
            let asked = h.probe.is_some_and(|(sent, _)| sent >= h.at);
            if h.up && !asked && now.saturating_duration_since(h.at) > SUSPECT_AFTER {
                h.probe = Some((now, None));
                out.push(host.clone());
            }
        }
        out
    }

    /// What the suspicion probe to `host` found: an answer after `rtt`,
    /// silence (`Ok(None)`), or nothing (it could not be sent: no key or
    /// path yet; then only [`STALE_AFTER`] decides).
    pub fn probe_result(&self, host: &str, result: Result<Option<Duration>, ProbeUnsent>) {
        self.note_probe(host, result);
        self.publish(Instant::now());
    }

    fn note_probe(&self, host: &str, result: Result<Option<Duration>, ProbeUnsent>) {
        let mut heard = self.lock();
        let Some(h) = heard.get_mut(host) else { return };
        let Some((sent, _)) = h.probe else { return };
        h.probe = Some((sent, Some(false)));
        match result {
            Ok(Some(rtt)) => h.at = h.at.max(sent + rtt),
            Ok(None) => {
                tracing::info!(peer = host, "a silent host did not answer a probe: stale");
                h.probe = Some((sent, Some(true)));
            }
            Err(ProbeUnsent) => {}
        }
    }
}

/// Feeds the one failure detector ([`crate::liveness`]) from what the
/// control links and the data plane already know; nothing is sent for it.
/// Each look at gossip's members also refreshes the `roster`.
pub fn spawn_observer(
    liveness: Arc<Liveness>,
    roster: Arc<Roster>,
    node: Node,
    peers: Arc<PeerTable>,
    dp: Dataplane,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(OBSERVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let heard = dp.last_heard();
            let activity = node.activity();
            roster.look(&activity, || node.members());
            let sightings: Vec<Sighting> = activity
                .into_iter()
                .map(|m| Sighting {
                    host: m.id.to_hex(),
                    up: m.state == gossip::PeerState::Up,
                    relayed: m.relayed,
                    control_rx: m.bytes_received,
                    data_heard: peers.handle(&m.id).and_then(|idx| heard.get(&idx).copied()),
                })
                .collect();
            let now = Instant::now();
            liveness.observe(&sightings, now);
            for host in liveness.take_suspects(now) {
                // Only a path verified lately gives a verdict: an idle
                // path's route may be stale (a NAT mapping expired), and
                // silence there says nothing about the host.
                let idx = host
                    .parse::<gossip::PeerId>()
                    .ok()
                    .and_then(|id| peers.handle(&id))
                    .filter(|idx| heard.get(idx).is_some_and(|age| *age <= VERIFIED_WITHIN));
                let probe = idx.map(|idx| dp.probe_once(idx, SUSPECT_PROBE_TIMEOUT));
                let liveness = liveness.clone();
                tokio::spawn(async move {
                    let result = match probe {
                        Some(probe) => probe.await.map_err(|_| ProbeUnsent),
                        None => Err(ProbeUnsent),
                    };
                    liveness.probe_result(&host, result);
                });
            }
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
        assert_eq!(l.stale(t2), set(&["b"]));
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
        assert!(l.stale(t1).is_empty(), "down is not stale");
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

    #[test]
    fn a_late_heartbeat_gets_one_probe_and_silence_makes_the_host_stale_early() {
        let l = Liveness::default();
        let t0 = Instant::now();
        l.observe(&[seen("a", true, 1), seen("b", true, 1)], t0);
        assert!(l.take_suspects(t0 + Duration::from_secs(2)).is_empty());
        let t1 = t0 + SUSPECT_AFTER + Duration::from_millis(100);
        l.observe(&[seen("a", true, 1), seen("b", true, 1)], t1);
        let mut asked = l.take_suspects(t1);
        asked.sort();
        assert_eq!(asked, ["a".to_string(), "b".to_string()]);
        assert!(l.take_suspects(t1).is_empty(), "asked once per silence");
        // a answers after 3 ms; b does not.
        l.probe_result("a", Ok(Some(Duration::from_millis(3))));
        l.probe_result("b", Ok(None));
        // Service targets go at once; floating IPs wait for the margin.
        let t_probe = t1 + SUSPECT_PROBE_TIMEOUT;
        assert_eq!(l.stale(t_probe), set(&["b"]));
        assert_eq!(l.fresh(STALE_AFTER, t_probe), set(&["a", "b"]));
        let t2 = t0 + CONFIRMED_STALE_AFTER + Duration::from_millis(1);
        assert!(t2 < t0 + STALE_AFTER);
        assert_eq!(l.fresh(STALE_AFTER, t2), set(&["a"]));
        assert_eq!(l.stale(t2), set(&["b"]));
        // b's link speaks again: live, and it may be asked again later.
        l.observe(&[seen("a", true, 1), seen("b", true, 9)], t2);
        assert_eq!(l.fresh(STALE_AFTER, t2), set(&["a", "b"]));
    }

    #[test]
    fn a_probe_that_cannot_be_sent_leaves_the_verdict_to_the_timeout() {
        let l = Liveness::default();
        let t0 = Instant::now();
        l.observe(&[seen("a", true, 1)], t0);
        let t1 = t0 + SUSPECT_AFTER + Duration::from_millis(100);
        assert_eq!(l.take_suspects(t1), ["a".to_string()]);
        l.probe_result("a", Err(ProbeUnsent));
        assert_eq!(l.fresh(STALE_AFTER, t1), set(&["a"]));
        assert_eq!(
            l.stale(t0 + STALE_AFTER + Duration::from_millis(1)),
            set(&["a"])
        );
    }

    #[test]
    fn followers_are_woken_when_a_verdict_changes_not_on_every_look() {
        let l = Liveness::default();
        let mut rx = l.subscribe();
        let t0 = Instant::now();
        l.observe(&[seen("a", true, 1)], t0);
        assert!(rx.has_changed().unwrap(), "a is live");
        rx.borrow_and_update();
        // Heard again and again: the same verdicts, nobody woken.
        for i in 1..8u64 {
            l.observe(
                &[seen("a", true, 1 + i)],
                t0 + Duration::from_millis(250 * i),
            );
        }
        assert!(!rx.has_changed().unwrap());
        // Silent past the hold window: no longer supporting a holder.
        let later = t0 + Duration::from_millis(1750) + HOLD_WINDOW + Duration::from_millis(10);
        l.observe(&[seen("a", true, 8)], later);
        assert!(rx.has_changed().unwrap());
        assert!(l.fresh(STALE_AFTER, later).contains("a"));
        assert!(!l.fresh(HOLD_WINDOW, later).contains("a"));
    }
}
