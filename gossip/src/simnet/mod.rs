//! A whole mesh in one process on virtual time: N hosts, each with the
//! real membership table and the real per-connection [`Link`] state
//! machines (heartbeats, liveness, key exchange, anti-entropy replies),
//! and around them the host-wide glue of the node (flooding changed
//! records, dialing members as they are learned, a digest to one random
//! peer every anti-entropy period, redials with backoff). Every frame is
//! encoded with the real wire format to count its bytes; QUIC is modelled
//! as a fixed per-packet overhead, one ACK per packet received and a fixed
//! handshake cost (see [`model`]).
//!
//! Two topologies: [`Topology::FullMesh`] is what the node does today;
//! [`Topology::Bounded`] keeps only the [`crate::neighbours`] links and
//! relays channel deltas (which the full mesh never needs to).
//!
//! `cargo run --release -p gossip --features sim --example scale_sim`.

mod host;
pub mod model;
mod phases;
mod report;

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::link::{Action, Link, LinkParams, LinkTimers};
use crate::membership::MemberRecord;
use crate::neighbours;
use crate::wire::{self, Message};
use crate::PeerId;
use host::{Effects, HostReplica, SimHost, SimLink};
pub use host::{Records, CHANNEL};
pub use report::{SimReport, Spread};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// A link to every member (the node today).
    FullMesh,
    /// Links to the ring neighbours of [`crate::neighbours`] only.
    Bounded,
}

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub hosts: usize,
    pub topology: Topology,
    /// One-way latency of every path.
    pub latency: Duration,
    /// Host k joins through host 0 at k × this.
    pub join_interval: Duration,
    pub timers: LinkTimers,
    pub anti_entropy: Duration,
    /// Idle window the steady-state traffic is measured over.
    pub idle: Duration,
    /// Share of hosts killed (silently) and restarted.
    pub kill_share: f64,
    /// Longest any phase may take, in virtual time.
    pub phase_limit: Duration,
    pub seed: u64,
}

impl SimConfig {
    /// The node's timer defaults ([`crate::Config`]), a LAN-like 1 ms
    /// latency and a join every 20 ms.
    pub fn new(hosts: usize, topology: Topology) -> SimConfig {
        SimConfig {
            hosts,
            topology,
            latency: Duration::from_millis(1),
            join_interval: Duration::from_millis(20),
            timers: LinkTimers {
                heartbeat: crate::Config::DEFAULT_HEARTBEAT_INTERVAL,
                dead_after: crate::Config::DEFAULT_DEAD_AFTER,
                rekey: Duration::from_secs(110),
            },
            anti_entropy: crate::Config::DEFAULT_ANTI_ENTROPY_INTERVAL,
            idle: Duration::from_secs(20),
            kill_share: 0.1,
            phase_limit: Duration::from_secs(600),
            seed: 1,
        }
    }
}

enum Kind {
    Join(usize),
    /// A dial's handshake completes (or finds the target dead).
    Connect {
        from: usize,
        to: usize,
        conn: u64,
    },
    Deliver {
        from: usize,
        to: usize,
        conn: u64,
        message: Message,
    },
    /// The peer's CONNECTION_CLOSE arrives at `host`.
    Closed {
        host: usize,
        peer: usize,
        conn: u64,
    },
    LinkTimer {
        host: usize,
        peer: usize,
        at: Instant,
    },
    Redial {
        from: usize,
        to: usize,
    },
    AntiEntropy(usize),
    /// Bounded topology: recompute the neighbours, dial and prune.
    Maintain(usize),
}

struct Event {
    at: Duration,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Reversed: the heap pops the earliest event first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// How long the higher id waits before dialing (the node's HIGHER_ID_DELAY).
const HIGHER_ID_DELAY: Duration = Duration::from_millis(500);
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Bounded topology: links younger than this are never pruned (a joiner's
/// link to the seed must live until it has learned the mesh).
const PRUNE_AFTER: Duration = Duration::from_secs(10);
const MAINTAIN_EVERY: Duration = Duration::from_millis(500);
/// How often phase conditions are checked.
const PROBE: Duration = Duration::from_millis(20);

pub struct Sim {
    cfg: SimConfig,
    epoch: Instant,
    now: Duration,
    seq: u64,
    next_conn: u64,
    queue: BinaryHeap<Event>,
    hosts: Vec<SimHost>,
    index: HashMap<PeerId, usize>,
    rng: StdRng,
    pub events: u64,
}

/// Host `i`'s id: a real Ed25519 identity from a seed of `i` (records are
/// signed by their subject, so simulated hosts need keys the process
/// keyring holds). Public keys are spread over the id space, so ring order
/// is not join order. Cached: deriving a key pair per call would dominate
/// a 1,000-host run.
pub fn peer_id(i: usize) -> PeerId {
    static IDS: std::sync::Mutex<Vec<PeerId>> = std::sync::Mutex::new(Vec::new());
    let mut ids = IDS.lock().unwrap_or_else(|p| p.into_inner());
    while ids.len() <= i {
        let mut seed = [0x5eu8; 32];
        seed[..8].copy_from_slice(&(ids.len() as u64).to_be_bytes());
        let identity =
            crate::Identity::from_seed(seed).expect("any 32-byte seed is an Ed25519 key");
        ids.push(identity.peer_id());
    }
    ids[i]
}

fn record(i: usize) -> MemberRecord {
    let mut r = MemberRecord {
        id: peer_id(i),
        name: format!("host-{i}"),
        addrs: vec![format!(
            "10.{}.{}.{}:7800",
            i >> 16 & 255,
            i >> 8 & 255,
            i & 255
        )],
        incarnation: 1,
        version: 0,
        meta: [("data_port".to_string(), "7801".to_string())].into(),
        signature: Default::default(),
    };
    assert!(r.sign(), "the simulator holds every host's key");
    r
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        let hosts: Vec<SimHost> = (0..cfg.hosts).map(|i| SimHost::new(record(i))).collect();
        let index = (0..cfg.hosts).map(|i| (peer_id(i), i)).collect();
        let rng = StdRng::seed_from_u64(cfg.seed);
        Sim {
            cfg,
            epoch: Instant::now(),
            now: Duration::ZERO,
            seq: 0,
            next_conn: 0,
            queue: BinaryHeap::new(),
            hosts,
            index,
            rng,
            events: 0,
        }
    }

    fn instant(&self) -> Instant {
        self.epoch + self.now
    }

    fn schedule(&mut self, after: Duration, kind: Kind) {
        self.seq += 1;
        self.queue.push(Event {
            at: self.now + after,
            seq: self.seq,
            kind,
        });
    }

    fn jitter(&mut self, base: Duration) -> Duration {
        let spread = base.as_millis() as u64 / 4 + 1;
        base + Duration::from_millis(self.rng.gen_range(0..spread))
    }

    fn bounded(&self) -> bool {
        self.cfg.topology == Topology::Bounded
    }

    /// Runs events until `done` holds (checked every [`PROBE`]) or the
    /// phase limit passes; returns how long it took.
    fn run_until(&mut self, done: impl Fn(&Sim) -> bool) -> Option<Duration> {
        let start = self.now;
        let limit = start + self.cfg.phase_limit;
        loop {
            if done(self) {
                return Some(self.now - start);
            }
            if self.now >= limit {
                return None;
            }
            self.advance(self.now + PROBE);
        }
    }

    /// Runs every event due by `until`; `now = until` after.
    fn advance(&mut self, until: Duration) {
        while self.queue.peek().is_some_and(|e| e.at <= until) {
            let event = self.queue.pop().expect("peeked");
            self.now = event.at;
            self.events += 1;
            self.handle(event.kind);
        }
        self.now = until;
    }

    fn handle(&mut self, kind: Kind) {
        match kind {
            Kind::Join(j) => {
                self.hosts[j].alive = true;
                self.start_hosts_timers(j);
                self.dial(j, 0, Duration::ZERO);
            }
            Kind::Connect { from, to, conn } => self.connect(from, to, conn),
            Kind::Deliver {
                from,
                to,
                conn,
                message,
            } => self.deliver(from, to, conn, message),
            Kind::Closed { host, peer, conn } => {
                if self.hosts[host]
                    .links
                    .get(&peer)
                    .is_some_and(|l| l.conn == conn)
                {
                    self.link_lost(host, peer);
                }
            }
            Kind::LinkTimer { host, peer, at } => self.link_timer(host, peer, at),
            Kind::Redial { from, to } => {
                // The dial loop goes on only while the peer is wanted.
                if self.hosts[from].alive
                    && self.wants(from, to)
                    && !self.hosts[from].links.contains_key(&to)
                {
                    self.next_conn += 1;
                    let conn = self.next_conn;
                    let handshake = self.cfg.latency * 4;
                    self.schedule(handshake, Kind::Connect { from, to, conn });
                } else {
                    self.hosts[from].dialing.remove(&to);
                }
            }
            Kind::AntiEntropy(h) => {
                let next = self.jitter(self.cfg.anti_entropy);
                self.schedule(next, Kind::AntiEntropy(h));
                if self.hosts[h].alive && !self.hosts[h].links.is_empty() {
                    // Sorted: a HashMap's order would make runs differ.
                    let mut peers: Vec<usize> = self.hosts[h].links.keys().copied().collect();
                    peers.sort_unstable();
                    let peer = peers[self.rng.gen_range(0..peers.len())];
                    let digest = {
                        let host = &mut self.hosts[h];
                        let mut effects = Effects::default();
                        let replica = HostReplica {
                            table: &mut host.table,
                            channel: &mut host.channel,
                            relay: false,
                            effects: &mut effects,
                        };
                        crate::link::Replica::digest(&replica)
                    };
                    self.send(h, peer, Message::Digest(digest));
                }
            }
            Kind::Maintain(h) => {
                self.schedule(MAINTAIN_EVERY, Kind::Maintain(h));
                if self.hosts[h].alive {
                    self.maintain(h);
                }
            }
        }
    }

    fn start_hosts_timers(&mut self, h: usize) {
        let first = self.jitter(self.cfg.anti_entropy);
        self.schedule(first, Kind::AntiEntropy(h));
        if self.bounded() {
            self.schedule(MAINTAIN_EVERY, Kind::Maintain(h));
        }
    }

    /// Whether `h` should be linked to `peer` by its current view.
    fn wants(&self, h: usize, peer: usize) -> bool {
        if h == peer || self.hosts[h].table.get(&peer_id(peer)).is_none() {
            return false;
        }
        !self.bounded() || self.hosts[h].wanted.contains(&peer)
    }

    /// Starts a dial loop unless one runs or the link is up (as the node:
    /// one loop per peer, `dialing` until the link is up or unwanted).
    fn dial(&mut self, from: usize, to: usize, extra: Duration) {
        let host = &self.hosts[from];
        if from == to || host.links.contains_key(&to) || host.dialing.contains(&to) {
            return;
        }
        self.hosts[from].dialing.insert(to);
        let mut delay = extra + self.cfg.latency * 4;
        if peer_id(from) > peer_id(to) {
            delay += self.jitter(HIGHER_ID_DELAY);
        }
        self.next_conn += 1;
        let conn = self.next_conn;
        self.schedule(delay, Kind::Connect { from, to, conn });
    }

    fn connect(&mut self, from: usize, to: usize, conn: u64) {
        if !self.hosts[from].alive || !self.hosts[from].dialing.contains(&to) {
            // The loop died with its host.
            return;
        }
        self.hosts[from].sent_bytes += model::HANDSHAKE_BYTES;
        self.hosts[from].sent_packets += model::HANDSHAKE_PACKETS;
        if !self.hosts[to].alive {
            let backoff = self.hosts[from]
                .backoff
                .get(&to)
                .copied()
                .unwrap_or(BACKOFF_START);
            self.hosts[from]
                .backoff
                .insert(to, (backoff * 2).min(BACKOFF_CAP));
            let wait = self.jitter(backoff);
            self.schedule(wait, Kind::Redial { from, to });
            return;
        }
        self.hosts[from].dialing.remove(&to);
        self.hosts[to].sent_bytes += model::HANDSHAKE_BYTES;
        self.hosts[to].sent_packets += model::HANDSHAKE_PACKETS;
        // Simultaneous dials: the link already there stays (the node's
        // tie-break picks one too; which one does not matter here).
        if self.hosts[from].links.contains_key(&to) || self.hosts[to].links.contains_key(&from) {
            return;
        }
        self.hosts[from].backoff.remove(&to);
        let now = self.instant();
        for (a, b, initiator) in [(from, to, true), (to, from, false)] {
            let params = LinkParams {
                local: peer_id(a),
                remote: peer_id(b),
                initiator,
                connection_secret: [conn as u8; 32],
                last_key_generation: 0,
                // Every simulated host offers every cipher: the choice
                // costs nothing on the control plane.
                local_ciphers: Some(crate::cipher::CipherOffer::ALL),
                remote_ciphers: Some(crate::cipher::CipherOffer::ALL),
                timers: self.cfg.timers,
            };
            let link = Link::new(params, now);
            let timer_at = link.poll_timeout();
            let since = self.now;
            self.hosts[a].links.insert(
                b,
                SimLink {
                    link,
                    conn,
                    since,
                    last_rx: since,
                    timer_at,
                },
            );
        }
        for (a, b) in [(from, to), (to, from)] {
            // The handshake carried the peer's own record (as `register` merges it).
            let theirs = self.hosts[b].table.local().clone();
            self.with_replica(a, b, |link, replica, now| {
                let mut actions = link.open(replica, now);
                crate::link::Replica::merge_members(replica, peer_id(b), vec![theirs]);
                actions.extend(link.tick(now));
                actions
            });
            self.schedule_timer(a, b);
        }
    }

    /// Runs `f` on `h`'s link to `peer` with `h`'s replica, then carries
    /// out the actions and effects.
    fn with_replica(
        &mut self,
        h: usize,
        peer: usize,
        f: impl FnOnce(&mut Link, &mut HostReplica<'_>, Instant) -> Vec<Action>,
    ) {
        let now = self.instant();
        let relay = self.bounded();
        let mut effects = Effects::default();
        let actions = {
            let host = &mut self.hosts[h];
            let Some(link) = host.links.get_mut(&peer) else {
                return;
            };
            let mut replica = HostReplica {
                table: &mut host.table,
                channel: &mut host.channel,
                relay,
                effects: &mut effects,
            };
            f(&mut link.link, &mut replica, now)
        };
        self.execute(h, peer, actions);
        self.apply_effects(h, effects);
    }

    fn schedule_timer(&mut self, h: usize, peer: usize) {
        let Some(link) = self.hosts[h].links.get_mut(&peer) else {
            return;
        };
        let at = link.link.poll_timeout();
        link.timer_at = at;
        let after = at.saturating_duration_since(self.epoch + self.now);
        self.schedule(after, Kind::LinkTimer { host: h, peer, at });
    }

    fn link_timer(&mut self, h: usize, peer: usize, at: Instant) {
        let current = self.hosts[h]
            .links
            .get(&peer)
            .is_some_and(|l| l.timer_at == at);
        if !self.hosts[h].alive || !current {
            return;
        }
        // QUIC's idle timeout (the node sets it to dead_after): nothing,
        // not even an ACK, came back.
        let last_rx = self.hosts[h].links[&peer].last_rx;
        if self.now.saturating_sub(last_rx) > self.cfg.timers.dead_after {
            self.execute(
                h,
                peer,
                vec![Action::Close {
                    code: crate::transport::close_code::DEAD,
                    reason: "idle timeout",
                }],
            );
            return;
        }
        self.with_replica(h, peer, |link, _, now| link.tick(now));
        self.schedule_timer(h, peer);
    }

    /// Queues `message` from `h` to `peer` and counts its bytes.
    fn send(&mut self, h: usize, peer: usize, message: Message) {
        let Some(conn) = self.hosts[h].links.get(&peer).map(|l| l.conn) else {
            return;
        };
        let frame = wire::encode_frame(&message).map(|f| f.len()).unwrap_or(0);
        let (bytes, packets) = model::on_wire(frame);
        self.hosts[h].sent_bytes += bytes;
        self.hosts[h].sent_packets += packets;
        let latency = self.cfg.latency;
        self.schedule(
            latency,
            Kind::Deliver {
                from: h,
                to: peer,
                conn,
                message,
            },
        );
    }

    fn execute(&mut self, h: usize, peer: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(message) => self.send(h, peer, message),
                Action::InstallKeys { .. } => {
                    self.hosts[h].keys.insert(peer);
                }
                Action::ConfirmKeys { .. } => {}
                Action::Close { .. } => {
                    let conn = self.hosts[h].links.get(&peer).map(|l| l.conn);
                    self.link_lost(h, peer);
                    if let Some(conn) = conn {
                        let latency = self.cfg.latency;
                        self.schedule(
                            latency,
                            Kind::Closed {
                                host: peer,
                                peer: h,
                                conn,
                            },
                        );
                    }
                    return;
                }
            }
        }
    }

    fn deliver(&mut self, from: usize, to: usize, conn: u64, message: Message) {
        let now = self.now;
        let host = &mut self.hosts[to];
        if !host.alive {
            return;
        }
        let Some(link) = host.links.get_mut(&from).filter(|l| l.conn == conn) else {
            return;
        };
        link.last_rx = now;
        // The ACK reaches the sender (a latency later; close enough).
        if let Some(back) = self.hosts[from]
            .links
            .get_mut(&to)
            .filter(|l| l.conn == conn)
        {
            back.last_rx = now;
        }
        let host = &mut self.hosts[to];
        // The receiver's QUIC acknowledges every packet.
        let frame = wire::encode_frame(&message).map(|f| f.len()).unwrap_or(0);
        let packets = model::on_wire(frame).1;
        host.sent_bytes += packets * model::ACK_BYTES;
        host.sent_packets += packets;
        self.with_replica(to, from, |link, replica, now| {
            link.handle(message, now, replica)
        });
    }

    /// Floods what merging changed and dials members just learned of.
    fn apply_effects(&mut self, h: usize, effects: Effects) {
        for (except, records) in effects.members {
            let learned: Vec<usize> = records
                .iter()
                .filter_map(|r| self.index.get(&r.id).copied())
                .collect();
            self.broadcast(h, except, Message::Members(records));
            if !self.bounded() {
                for peer in learned {
                    self.dial(h, peer, Duration::ZERO);
                }
            }
        }
        for (except, data) in effects.channel {
            let message = Message::ChannelDelta {
                channel: CHANNEL.into(),
                data,
            };
            self.broadcast(h, Some(except), message);
        }
    }

    fn broadcast(&mut self, h: usize, except: Option<PeerId>, message: Message) {
        let mut peers: Vec<usize> = self.hosts[h]
            .links
            .keys()
            .copied()
            .filter(|p| Some(peer_id(*p)) != except)
            .collect();
        peers.sort_unstable();
        for peer in peers {
            self.send(h, peer, message.clone());
        }
    }

    fn link_lost(&mut self, h: usize, peer: usize) {
        let host = &mut self.hosts[h];
        host.links.remove(&peer);
        host.keys.remove(&peer);
        if host.alive && self.wants(h, peer) {
            self.dial(h, peer, Duration::ZERO);
        }
    }

    /// Bounded topology: recompute the neighbours when the member list
    /// changed, dial the missing ones, prune old links nobody wants.
    fn maintain(&mut self, h: usize) {
        let members = self.hosts[h].table.len();
        if members != self.hosts[h].wanted_for {
            let ids: Vec<PeerId> = self.hosts[h].table.records().map(|r| r.id).collect();
            let wanted = neighbours::neighbours_in_ring(peer_id(h), &ids);
            let host = &mut self.hosts[h];
            host.wanted = wanted
                .iter()
                .filter_map(|id| self.index.get(id).copied())
                .collect();
            host.wanted_for = members;
        }
        let mut wanted: Vec<usize> = self.hosts[h].wanted.iter().copied().collect();
        wanted.sort_unstable();
        for peer in wanted {
            self.dial(h, peer, Duration::ZERO);
        }
        let now = self.now;
        let candidates: Vec<(usize, u64)> = self.hosts[h]
            .links
            .iter()
            .filter(|(p, l)| !self.hosts[h].wanted.contains(p) && now - l.since > PRUNE_AFTER)
            .map(|(p, l)| (*p, l.conn))
            .collect();
        if candidates.is_empty() {
            return;
        }
        // Kept while the other end wants it (by our view of the members).
        let ids: Vec<PeerId> = self.hosts[h].table.records().map(|r| r.id).collect();
        let mut prune: Vec<(usize, u64)> = candidates
            .into_iter()
            .filter(|(p, _)| !neighbours::keeps(peer_id(h), peer_id(*p), &ids))
            .collect();
        prune.sort_unstable();
        for (peer, conn) in prune {
            self.hosts[h].links.remove(&peer);
            self.hosts[h].keys.remove(&peer);
            let latency = self.cfg.latency;
            self.schedule(
                latency,
                Kind::Closed {
                    host: peer,
                    peer: h,
                    conn,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests;
