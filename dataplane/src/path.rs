//! Per-peer path state machine (sans-IO, virtual time): which way sealed
//! datagrams go to one peer, and what the probes measured.
//!
//! Probing is driven by demand, so that its cost is O(active peers), not
//! O(members):
//! - An **active** peer (frames switched to it within
//!   [`PathConfig::idle_after`], or just configured) gets a ping every [`PathConfig::probe_interval`] at
//!   each direct candidate endpoint (advertised, `data_addrs`,
//!   peer-reflexive). Only while no direct candidate answers does it also
//!   get pings through at most [`PathConfig::max_relays`] relay candidates
//!   (peers this host reaches directly): those that answered before, then
//!   the caller's order (a rendezvous hash, so that relaying spreads).
//! - An **idle** peer gets nothing, unless a NAT sits between the two hosts:
//!   then one keep-alive ping every [`PathConfig::keepalive`] on the route
//!   in use holds the mapping open. Its route is kept as it was; the first
//!   frame for it ([`PathState::on_traffic`]) starts probing again at once.
//!   Whether the host is up is the control plane's business, not this one's.
//!
//! The route is direct while a direct candidate answers; when the one in
//! use has been silent for [`PathConfig::fail_after`] it moves to the relay
//! with the lowest RTT among those answering, and back to direct after
//! [`PathConfig::heal_pongs`] consecutive pongs from a direct candidate.
//! Sending to every candidate from both sides is also what opens NATs
//! (simultaneous open). The path MTU is a binary search with padded probes
//! over the route in use, restarted on a route change, periodically, and
//! when the largest confirmed size stops getting through; once found, the
//! re-check rides on the round's ping on the route (sent at that size), not
//! on a stream of its own.
//!
//! The caller seals and sends what [`PathState::poll`] returns and feeds
//! back authenticated pongs ([`PathState::on_pong`]) and pings
//! ([`PathState::on_ping`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::path_mtu::MtuSearch;
use crate::wire::MIN_PROBE_DATAGRAM;
use crate::PeerIdx;

#[derive(Copy, Clone, Debug)]
pub struct PathConfig {
    pub probe_interval: Duration,
    /// The direct path in use is failed after this long without a pong.
    pub fail_after: Duration,
    /// A probe not answered within this is lost.
    pub probe_timeout: Duration,
    /// Consecutive pongs a direct candidate needs to take over from a relay.
    pub heal_pongs: u32,
    /// Largest datagram probed (the local underlay's limit).
    pub max_datagram: u32,
    /// Smallest datagram the MTU search considers.
    pub min_datagram: u32,
    /// A finished MTU search is started again after this.
    pub mtu_research: Duration,
    /// How often the confirmed MTU is re-checked with a probe of that size.
    pub mtu_confirm: Duration,
    /// Peer-reflexive candidates not heard from for this long are forgotten.
    pub candidate_ttl: Duration,
    /// A peer without data for this long is idle: no probes (see the module).
    pub idle_after: Duration,
    /// A new peer is probed this long without traffic, to find its path
    /// before it is needed (and show it in the status).
    pub warmup: Duration,
    /// Keep-alive interval of an idle peer across a NAT (WireGuard's
    /// persistent keep-alive convention: under common 30 s UDP timeouts).
    pub keepalive: Duration,
    /// Relay candidates probed at once while the direct path fails.
    pub max_relays: usize,
}

impl Default for PathConfig {
    fn default() -> PathConfig {
        PathConfig {
            probe_interval: Duration::from_secs(1),
            fail_after: Duration::from_millis(3000),
            probe_timeout: Duration::from_millis(1500),
            heal_pongs: 2,
            // 1500-byte IPv4 underlay: 1500 − 20 − 8.
            max_datagram: 1472,
            min_datagram: 576,
            mtu_research: Duration::from_secs(60),
            mtu_confirm: Duration::from_secs(5),
            candidate_ttl: Duration::from_secs(60),
            idle_after: Duration::from_secs(30),
            warmup: Duration::from_secs(5),
            keepalive: Duration::from_secs(25),
            max_relays: 3,
        }
    }
}

/// Which way one probe goes.
#[derive(Copy, Clone, Debug, Eq, PartialEq, Hash, Ord, PartialOrd)]
pub enum Via {
    Direct(SocketAddr),
    Relay(PeerIdx),
}

/// A probe to seal and send: ping `id`, padded to `size` bytes (the inner
/// sealed datagram, before any relay envelope).
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub struct ProbeTx {
    pub id: u32,
    pub via: Via,
    pub size: u32,
}

/// Where data goes now.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum Route {
    /// Nothing answered yet: the advertised endpoint, unconfirmed.
    Unknown,
    Direct(SocketAddr),
    Relayed(PeerIdx),
}

#[derive(Clone, Debug)]
struct Candidate {
    /// Advertised by the control plane (kept) or learned from a ping
    /// (forgotten after `candidate_ttl` of silence).
    advertised: bool,
    last_pong: Option<Instant>,
    last_heard: Instant,
    streak: u32,
    rtt: Option<Duration>,
    /// The TCP fallback's local address ([`PathState::set_fallback`]).
    fallback: bool,
}

#[derive(Clone, Debug, Default)]
struct RelayCandidate {
    last_pong: Option<Instant>,
    /// When it was last asked: unanswered relays take turns.
    last_probe: Option<Instant>,
    rtt: Option<Duration>,
    /// Position in the caller's preference order.
    rank: usize,
}

#[derive(Clone, Debug)]
struct InFlight {
    id: u32,
    via: Via,
    size: u32,
    sent: Instant,
    wall_ms: u64,
    mtu_probe: bool,
}

/// The path state of one peer.
#[derive(Clone, Debug)]
pub struct PathState {
    config: PathConfig,
    candidates: BTreeMap<SocketAddr, Candidate>,
    relays: BTreeMap<PeerIdx, RelayCandidate>,
    route: Route,
    in_flight: VecDeque<InFlight>,
    next_id: u32,
    next_round: Instant,
    /// Recent probes on the route in use: answered or not.
    outcomes: VecDeque<bool>,
    rtt: Option<Duration>,
    skew_ms: Option<f64>,
    mtu: MtuSearch,
    last_heard: Option<Instant>,
    /// When the route last changed, for the logs and tests.
    changed_at: Option<Instant>,
    /// Probed until then: data moved within `idle_after`, or new (`warmup`).
    active_until: Instant,
    /// When the peer last became active: the direct path gets one probe
    /// timeout to answer before relays are asked.
    woke_at: Instant,
    /// A NAT is between the hosts: idle keep-alives are needed.
    keepalive: bool,
    /// Where datagrams reach the peer over the TCP fallback, if its link
    /// is over TCP: used only while no UDP way (direct or relayed) answers.
    fallback: Option<SocketAddr>,
    /// Relays this host reaches only over their TCP fallback: the last
    /// resort, after the peer's own fallback.
    tcp_relays: Vec<PeerIdx>,
}

const OUTCOME_WINDOW: usize = 20;

fn small_probe() -> u32 {
    MIN_PROBE_DATAGRAM as u32
}
const MAX_CANDIDATES: usize = 8;

fn smooth(old: Option<Duration>, sample: Duration) -> Duration {
    match old {
        // RFC 6298's 7/8 smoothing.
        Some(old) => (old * 7 + sample) / 8,
        None => sample,
    }
}

impl PathState {
    pub fn new(config: PathConfig, now: Instant) -> PathState {
        PathState {
            config,
            candidates: BTreeMap::new(),
            relays: BTreeMap::new(),
            route: Route::Unknown,
            in_flight: VecDeque::new(),
            next_id: 1,
            next_round: now,
            outcomes: VecDeque::new(),
            rtt: None,
            skew_ms: None,
            mtu: MtuSearch::new(now, &config),
            last_heard: None,
            changed_at: None,
            active_until: now + config.warmup,
            woke_at: now,
            keepalive: false,
            fallback: None,
            tcp_relays: Vec::new(),
        }
    }

    /// Frames were switched to the peer: it is active (again).
    pub fn on_traffic(&mut self, now: Instant) {
        self.wake(now, self.config.idle_after);
    }

    /// Active until at least `now + for_`; probing starts at once if idle.
    fn wake(&mut self, now: Instant, for_: Duration) {
        if !self.active(now) {
            self.woke_at = now;
            self.next_round = now;
            if !self.mtu.outstanding {
                self.mtu.next_at = self.mtu.next_at.min(now);
            }
        }
        self.active_until = self.active_until.max(now + for_);
    }

    /// Whether the caller should keep the relay candidates current: only
    /// while they may be probed (ranking them costs a hash per peer).
    pub fn wants_relays(&self, now: Instant) -> bool {
        self.active(now) && (matches!(self.route, Route::Relayed(_)) || self.direct_failing(now))
    }

    /// Whether data moved within [`PathConfig::idle_after`] (or the peer
    /// is new).
    pub fn active(&self, now: Instant) -> bool {
        now < self.active_until
    }

    /// Whether a NAT sits between the hosts (idle keep-alives needed).
    pub fn set_keepalive(&mut self, on: bool) {
        self.keepalive = on;
    }

    pub fn route(&self) -> Route {
        self.route
    }

    /// Whether `addr` is the local end of the peer's TCP fallback.
    pub fn is_fallback(&self, addr: SocketAddr) -> bool {
        self.fallback == Some(addr)
    }

    /// Whether the route in use is the TCP fallback.
    pub fn on_fallback(&self) -> bool {
        matches!(self.route, Route::Direct(addr) if Some(addr) == self.fallback)
    }

    pub fn changed_at(&self) -> Option<Instant> {
        self.changed_at
    }

    /// The endpoints the control plane knows for the peer (its advertised
    /// data endpoint and `data_addrs`). Learned ones are kept.
    pub fn set_advertised(&mut self, addrs: &[SocketAddr], now: Instant) {
        self.candidates
            .retain(|addr, c| !c.advertised || c.fallback || addrs.contains(addr));
        if let Route::Direct(addr) = self.route {
            if !self.candidates.contains_key(&addr) {
                // The peer moved away from the address in use: an idle
                // path must not keep sending there.
                self.set_route(Route::Unknown, now);
            }
        }
        if addrs.iter().any(|a| !self.candidates.contains_key(a)) {
            // A new address to try: find out now, traffic or not.
            self.wake(now, self.config.warmup);
        }
        for addr in addrs {
            self.candidates
                .entry(*addr)
                .and_modify(|c| c.advertised = true)
                .or_insert(Candidate {
                    advertised: true,
                    last_pong: None,
                    last_heard: now,
                    streak: 0,
                    rtt: None,
                    fallback: false,
                });
        }
    }

    /// The local address of the peer's TCP fallback link (`None`: its
    /// link is not over TCP). Probed like a direct candidate, but the
    /// route takes it only while no UDP way answers, and leaves it for
    /// one that does (UDP is preferred).
    pub fn set_fallback(&mut self, addr: Option<SocketAddr>, now: Instant) {
        if self.fallback == addr {
            return;
        }
        if let Some(old) = self.fallback.take() {
            self.candidates.remove(&old);
            if self.route == Route::Direct(old) {
                self.set_route(Route::Unknown, now);
            }
        }
        if let Some(addr) = addr {
            self.candidates.insert(
                addr,
                Candidate {
                    advertised: true,
                    last_pong: None,
                    last_heard: now,
                    streak: 0,
                    rtt: None,
                    fallback: true,
                },
            );
            self.fallback = Some(addr);
            self.wake(now, self.config.warmup);
        }
    }

    /// Peers that may relay to this one (those this host reaches
    /// directly), most preferred first.
    pub fn set_relays(&mut self, relays: &[PeerIdx]) {
        self.relays.retain(|idx, _| relays.contains(idx));
        for (rank, idx) in relays.iter().enumerate() {
            self.relays.entry(*idx).or_default().rank = rank;
        }
        if let Route::Relayed(via) = self.route {
            if !self.relays.contains_key(&via) {
                self.route = Route::Unknown;
            }
        }
    }

    /// Which of the relays ([`Self::set_relays`], after the others in its
    /// order) this host reaches only over TCP.
    pub fn set_relays_over_tcp(&mut self, relays: &[PeerIdx]) {
        self.tcp_relays = relays.to_vec();
    }

    /// An authenticated ping arrived from `source` (None: through a relay):
    /// a new source address becomes a candidate (peer-reflexive; roaming).
    pub fn on_ping(&mut self, source: Option<SocketAddr>, now: Instant) {
        self.last_heard = Some(now);
        let Some(source) = source else { return };
        if let Some(c) = self.candidates.get_mut(&source) {
            c.last_heard = now;
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            // Make room by forgetting the stalest learned one.
            let stalest = self
                .candidates
                .iter()
                .filter(|(_, c)| !c.advertised)
                .min_by_key(|(_, c)| c.last_heard)
                .map(|(addr, _)| *addr);
            match stalest {
                Some(addr) => {
                    self.candidates.remove(&addr);
                }
                None => return,
            }
        }
        self.candidates.insert(
            source,
            Candidate {
                advertised: false,
                last_pong: None,
                last_heard: now,
                streak: 0,
                rtt: None,
                fallback: false,
            },
        );
        // Probe it at once rather than at the next round, even when idle:
        // the peer is reaching out from an address we do not know (it
        // roamed, or its NAT mapping changed), so it is using the path.
        self.wake(now, self.config.warmup);
        self.next_round = now;
    }

    /// Any other authenticated datagram from the peer.
    pub fn on_heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
    }

    fn uses(&self, via: Via) -> bool {
        match (self.route, via) {
            (Route::Direct(a), Via::Direct(b)) => a == b,
            (Route::Relayed(a), Via::Relay(b)) => a == b,
            _ => false,
        }
    }

    fn record_outcome(&mut self, answered: bool) {
        if self.outcomes.len() == OUTCOME_WINDOW {
            self.outcomes.pop_front();
        }
        self.outcomes.push_back(answered);
    }

    /// An authenticated pong: `id` echoed, the peer's clock when the ping
    /// arrived and the size it received. Unknown ids are ignored.
    pub fn on_pong(&mut self, id: u32, peer_wall_ms: u64, size: u32, now: Instant) {
        self.last_heard = Some(now);
        let Some(pos) = self.in_flight.iter().position(|p| p.id == id) else {
            return;
        };
        let probe = self.in_flight.remove(pos).expect("position found");
        let rtt = now.saturating_duration_since(probe.sent);
        match probe.via {
            Via::Direct(addr) => {
                if let Some(c) = self.candidates.get_mut(&addr) {
                    c.last_pong = Some(now);
                    c.last_heard = now;
                    c.streak += 1;
                    c.rtt = Some(smooth(c.rtt, rtt));
                }
            }
            Via::Relay(idx) => {
                if let Some(r) = self.relays.get_mut(&idx) {
                    r.last_pong = Some(now);
                    r.rtt = Some(smooth(r.rtt, rtt));
                }
            }
        }
        if self.uses(probe.via) {
            if probe.mtu_probe {
                self.mtu.answered(size.min(probe.size), now, &self.config);
            } else {
                self.record_outcome(true);
            }
            self.rtt = Some(smooth(self.rtt, rtt));
            // Peer clock at arrival vs. ours half a round trip after sending.
            let ours = probe.wall_ms as f64 + rtt.as_secs_f64() * 500.0;
            self.skew_ms = Some(peer_wall_ms as f64 - ours);
        }
        self.decide(now);
    }

    fn expire_probes(&mut self, now: Instant) {
        while let Some(probe) = self.in_flight.front() {
            if now.saturating_duration_since(probe.sent) < self.config.probe_timeout {
                break;
            }
            let probe = self.in_flight.pop_front().expect("front exists");
            if let Via::Direct(addr) = probe.via {
                if let Some(c) = self.candidates.get_mut(&addr) {
                    if !probe.mtu_probe {
                        c.streak = 0;
                    }
                }
            }
            if self.uses(probe.via) {
                if probe.mtu_probe {
                    self.mtu.lost(probe.size, now, &self.config);
                } else {
                    self.record_outcome(false);
                }
            }
        }
    }

    fn alive(&self, last_pong: Option<Instant>, now: Instant) -> bool {
        last_pong.is_some_and(|at| now.saturating_duration_since(at) < self.config.fail_after)
    }

    /// Best direct (UDP) candidate by RTT that is alive with at least
    /// `streak` pongs in a row.
    fn best_direct(&self, streak: u32, now: Instant) -> Option<SocketAddr> {
        self.candidates
            .iter()
            .filter(|(_, c)| !c.fallback && self.alive(c.last_pong, now) && c.streak >= streak)
            .min_by_key(|(_, c)| c.rtt.unwrap_or(Duration::MAX))
            .map(|(addr, _)| *addr)
    }

    /// Best relay reached over UDP (`tcp`: over TCP) that answers.
    fn best_relay_of(&self, tcp: bool, now: Instant) -> Option<PeerIdx> {
        self.relays
            .iter()
            .filter(|(idx, _)| self.tcp_relays.contains(idx) == tcp)
            .filter(|(_, r)| self.alive(r.last_pong, now))
            .min_by_key(|(_, r)| r.rtt.unwrap_or(Duration::MAX))
            .map(|(idx, _)| *idx)
    }

    fn best_relay(&self, now: Instant) -> Option<PeerIdx> {
        self.best_relay_of(false, now)
    }

    /// The TCP fallback, else a relay reached over TCP, once UDP had its
    /// chance.
    fn last_resort(&self, now: Instant) -> Option<Route> {
        self.live_fallback(now).or_else(|| {
            self.best_relay_of(true, now)
                .filter(|_| self.direct_failing(now))
                .map(Route::Relayed)
        })
    }

    /// The TCP fallback, if it answers.
    fn fallback_alive(&self, now: Instant) -> Option<Route> {
        let addr = self.fallback?;
        let c = self.candidates.get(&addr)?;
        self.alive(c.last_pong, now).then_some(Route::Direct(addr))
    }

    /// The TCP fallback to take: it answers, and UDP had its chance.
    fn live_fallback(&self, now: Instant) -> Option<Route> {
        self.fallback_alive(now)
            .filter(|_| self.direct_failing(now))
    }

    fn decide(&mut self, now: Instant) {
        // An idle peer is not probed, so silence says nothing: keep the
        // route until traffic wakes it (a first pong still sets one).
        if !self.active(now) && self.route != Route::Unknown {
            return;
        }
        let next = match self.route {
            // On TCP: back to UDP as soon as a way answers steadily.
            Route::Direct(addr)
                if Some(addr) == self.fallback && self.fallback_alive(now).is_some() =>
            {
                self.best_direct(self.config.heal_pongs, now)
                    .map(Route::Direct)
                    .or_else(|| self.best_relay(now).map(Route::Relayed))
                    .unwrap_or(self.route)
            }
            Route::Direct(addr)
                if self
                    .candidates
                    .get(&addr)
                    .is_some_and(|c| self.alive(c.last_pong, now)) =>
            {
                Route::Direct(addr)
            }
            Route::Direct(_) => self
                .best_direct(1, now)
                .map(Route::Direct)
                .or_else(|| self.best_relay(now).map(Route::Relayed))
                .or_else(|| self.last_resort(now))
                .unwrap_or(self.route),
            // Through a relay reached over TCP: anything better first.
            Route::Relayed(via) if self.tcp_relays.contains(&via) => self
                .best_direct(self.config.heal_pongs, now)
                .map(Route::Direct)
                .or_else(|| self.best_relay(now).map(Route::Relayed))
                .or_else(|| self.live_fallback(now))
                .or_else(|| self.best_relay_of(true, now).map(Route::Relayed))
                .unwrap_or(self.route),
            Route::Relayed(via) => match self.best_direct(self.config.heal_pongs, now) {
                Some(addr) => Route::Direct(addr),
                None if self.alive(self.relays.get(&via).and_then(|r| r.last_pong), now) => {
                    Route::Relayed(via)
                }
                None => self
                    .best_relay(now)
                    .map(Route::Relayed)
                    .or_else(|| self.last_resort(now))
                    .unwrap_or(self.route),
            },
            Route::Unknown => self
                .best_direct(1, now)
                .map(Route::Direct)
                .or_else(|| self.best_relay(now).map(Route::Relayed))
                .or_else(|| self.last_resort(now))
                .unwrap_or(Route::Unknown),
        };
        if next != self.route {
            self.set_route(next, now);
        }
    }

    fn set_route(&mut self, next: Route, now: Instant) {
        tracing::debug!(from = ?self.route, to = ?next, "data path changed");
        self.route = next;
        self.changed_at = Some(now);
        self.outcomes.clear();
        self.rtt = None;
        // The MTU of the old route says nothing about the new one.
        self.mtu = MtuSearch::new(now, &self.config);
    }

    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    fn send(
        &mut self,
        via: Via,
        size: u32,
        mtu_probe: bool,
        now: Instant,
        wall_ms: u64,
    ) -> ProbeTx {
        let id = self.take_id();
        self.in_flight.push_back(InFlight {
            id,
            via,
            size,
            sent: now,
            wall_ms,
            mtu_probe,
        });
        ProbeTx { id, via, size }
    }

    /// Advances to `now`: expires probes, decides the route, returns the
    /// probes due. `wall_ms` is the local wall clock (for the skew).
    pub fn poll(&mut self, now: Instant, wall_ms: u64) -> Vec<ProbeTx> {
        self.expire_probes(now);
        let ttl = self.config.candidate_ttl;
        let route = self.route;
        self.candidates.retain(|addr, c| {
            c.advertised
                || route == Route::Direct(*addr)
                || now.saturating_duration_since(c.last_heard) < ttl
        });
        self.decide(now);
        let mut out = Vec::new();
        let route_via = match self.route {
            Route::Direct(addr) => Some(Via::Direct(addr)),
            Route::Relayed(idx) => Some(Via::Relay(idx)),
            Route::Unknown => None,
        };
        if !self.active(now) {
            if self.keepalive && now >= self.next_round {
                self.next_round = now + self.config.keepalive;
                let targets: Vec<Via> = match route_via {
                    Some(via) => vec![via],
                    None => self.candidates.keys().map(|a| Via::Direct(*a)).collect(),
                };
                for via in targets {
                    out.push(self.send(via, small_probe(), false, now, wall_ms));
                }
            }
            return out;
        }
        if route_via.is_some() {
            self.mtu_research(now);
        }
        let confirm_due = !self.mtu.searching() && !self.mtu.outstanding && now >= self.mtu.next_at;
        if now >= self.next_round {
            self.next_round = now + self.config.probe_interval;
            let mut targets: Vec<Via> = self.candidates.keys().map(|a| Via::Direct(*a)).collect();
            if self.direct_failing(now) {
                let relays = self.relay_targets(now);
                for idx in &relays {
                    if let Some(r) = self.relays.get_mut(idx) {
                        r.last_probe = Some(now);
                    }
                }
                targets.extend(relays.into_iter().map(Via::Relay));
            }
            if let Route::Relayed(via) = self.route {
                if !targets.contains(&Via::Relay(via)) {
                    // The relay in use is always checked.
                    targets.push(Via::Relay(via));
                }
            }
            for via in targets {
                if confirm_due && Some(via) == route_via && !self.mtu.outstanding {
                    // The MTU re-check is this round's ping on the route.
                    let size = self.mtu.next_size(&self.config);
                    self.mtu.outstanding = true;
                    out.push(self.send(via, size, true, now, wall_ms));
                } else {
                    out.push(self.send(via, small_probe(), false, now, wall_ms));
                }
            }
        }
        if let Some(via) = route_via {
            if self.mtu.searching() && !self.mtu.outstanding && now >= self.mtu.next_at {
                let size = self.mtu.next_size(&self.config);
                self.mtu.outstanding = true;
                out.push(self.send(via, size, true, now, wall_ms));
            }
        }
        out
    }

    /// Periodically looks for a larger MTU again (paths change).
    fn mtu_research(&mut self, now: Instant) {
        if !self.mtu.outstanding
            && now >= self.mtu.next_at
            && self
                .mtu
                .found
                .is_some_and(|found| found < self.config.max_datagram)
            && now.saturating_duration_since(self.mtu.found_at) >= self.config.mtu_research
        {
            let found = self.mtu.found.unwrap_or(0);
            self.mtu = MtuSearch::new(now, &self.config);
            self.mtu.lo = found;
        }
    }

    /// No direct candidate answers, and the direct path had its chance
    /// since the peer became active: time to ask relays.
    fn direct_failing(&self, now: Instant) -> bool {
        let direct_alive = self
            .candidates
            .values()
            .any(|c| !c.fallback && self.alive(c.last_pong, now));
        !direct_alive && now.saturating_duration_since(self.woke_at) >= self.config.probe_timeout
    }

    /// The relays to probe this round, at most [`PathConfig::max_relays`]:
    /// those that answered recently (best RTT first), then the others in
    /// turn (least recently asked first, then the caller's preference
    /// order), so that relays that cannot help do not block the rest.
    fn relay_targets(&self, now: Instant) -> Vec<PeerIdx> {
        let mut ranked: Vec<(bool, Duration, Option<Instant>, usize, PeerIdx)> = self
            .relays
            .iter()
            .map(|(idx, r)| {
                let alive = self.alive(r.last_pong, now);
                (
                    !alive,
                    if alive {
                        r.rtt.unwrap_or(Duration::MAX)
                    } else {
                        Duration::ZERO
                    },
                    if alive { None } else { r.last_probe },
                    r.rank,
                    *idx,
                )
            })
            .collect();
        ranked.sort_unstable();
        ranked
            .into_iter()
            .take(self.config.max_relays)
            .map(|(_, _, _, _, idx)| idx)
            .collect()
    }

    /// When [`Self::poll`] wants to run next (traffic may wake an idle
    /// peer earlier); the MTU search waits for a route to probe.
    pub fn next_timeout(&self, now: Instant) -> Instant {
        let far = now + self.config.idle_after;
        let active = self.active(now);
        let mut at = if active || self.keepalive {
            self.next_round
        } else {
            far
        };
        if let Some(probe) = self.in_flight.front() {
            at = at.min(probe.sent + self.config.probe_timeout);
        }
        if active && self.route != Route::Unknown && !self.mtu.outstanding && self.mtu.searching() {
            at = at.min(self.mtu.next_at);
        }
        at
    }

    /// Largest sealed datagram known to pass on the route in use; 0 = not known.
    pub fn path_mtu(&self) -> u32 {
        if self.mtu.searching() {
            0
        } else {
            self.mtu.found.unwrap_or(0)
        }
    }

    /// Since an authenticated probe or answer was last heard on the path.
    pub fn heard_ago(&self, now: Instant) -> Option<Duration> {
        self.last_heard.map(|at| now.saturating_duration_since(at))
    }
}

#[path = "path_report.rs"]
mod report;

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
