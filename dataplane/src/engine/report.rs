//! What the engine reports: counters, per-peer session and path state,
//! the switch's tables.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Engine;
use crate::path::Route;
use crate::stats::{PeerStats, Stats, SwitchStats};
use crate::PeerIdx;

impl Engine {
    pub fn stats(&self, now: Instant) -> Stats {
        let tables = self.read();
        let mut peers: BTreeMap<PeerIdx, PeerStats> = tables
            .peers
            .iter()
            .map(|(idx, peer)| (*idx, peer.snapshot(now)))
            .collect();
        self.fill_path_stats(&mut peers, now);
        let mut switch = SwitchStats::default();
        for network in tables.networks.values() {
            switch.pinned += network.pins.len();
            switch.learned += network.macs.len();
            switch.learn_refused += network.macs.refused();
        }
        Stats {
            drops: self.drops.snapshot(),
            peers,
            switch,
        }
    }

    /// Peers whose path is probed now (data within the idle window).
    pub fn active_paths(&self, now: Instant) -> usize {
        self.lock_paths()
            .peers
            .values()
            .filter(|p| p.state.active(now))
            .count()
    }

    /// Since each peer's path last heard an authenticated probe or answer:
    /// what the failure detector reads every observation, without the
    /// cost of [`Engine::stats`].
    pub fn last_heard(&self, now: Instant) -> BTreeMap<PeerIdx, Duration> {
        self.lock_paths()
            .peers
            .iter()
            .filter_map(|(idx, path)| Some((*idx, path.state.heard_ago(now)?)))
            .collect()
    }

    pub(super) fn fill_path_stats(&self, peers: &mut BTreeMap<PeerIdx, PeerStats>, now: Instant) {
        let paths = self.lock_paths();
        for (idx, stats) in peers.iter_mut() {
            if let Some(path) = paths.peers.get(idx) {
                stats.path = path.state.stats(now);
                if let Route::Relayed(_) = path.state.route() {
                    stats.path.endpoint = None;
                }
            }
        }
        drop(paths);
        // A relayed path's endpoint is the relay's.
        let relays: Vec<(PeerIdx, PeerIdx)> = peers
            .iter()
            .filter_map(|(idx, s)| match s.path.mode {
                crate::PathMode::Relayed(via) => Some((*idx, via)),
                _ => None,
            })
            .collect();
        for (idx, via) in relays {
            let endpoint = peers.get(&via).and_then(|s| s.endpoint);
            if let Some(stats) = peers.get_mut(&idx) {
                stats.path.endpoint = endpoint;
            }
        }
    }
}
