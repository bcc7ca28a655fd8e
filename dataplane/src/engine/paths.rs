//! The engine's side of paths: probes (ping/pong, sealed with the pair's
//! session keys), receiving any datagram from the UDP socket (envelopes
//! are handled in `relay.rs`: origin → relay → destination, the inner
//! datagram never opened by the relay), and applying what each peer's
//! [`PathState`] decides to the tables the packet paths read.
//!
//! Relaying is one hop of explicit routing: an envelope names its
//! destination by host tag, the relay forwards it only to a host it reaches
//! directly, and an envelope never carries another envelope (the inner
//! type must be data or probe), so nothing loops or floods.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{header_drop, refusal_drop, Delivery, Engine, Outgoing, Tables};
use crate::path::{PathConfig, PathState, Route, Via};
use crate::pool::{BufPool, PacketBuf};
use crate::stats::{BurstReport, DropReason};
use crate::wire::{
    self, DataHeader, HostTag, ProbeBody, ProbeKind, HEADER_LEN, MIN_PROBE_DATAGRAM, MSG_TYPE_DATA,
    MSG_TYPE_PROBE, MSG_TYPE_RELAY, MSG_TYPE_RELAYED, OVERHEAD, PROBE_BODY_LEN,
};
use crate::PeerIdx;

/// Probe ids with this bit belong to [`Engine::send_burst_probe`], not to
/// a path state machine.
pub const BURST_ID_BIT: u32 = 1 << 31;

#[derive(Debug)]
pub(super) struct PeerPath {
    pub(super) state: PathState,
    /// The endpoint the control plane gives in `upsert_peer`.
    endpoint: Option<SocketAddr>,
    /// The peer's other advertised addresses (`data_addrs`).
    extra: Vec<SocketAddr>,
    /// Frames switched to the peer alone at the last poll: a change is
    /// traffic (probes and flood copies are not counted there).
    packets_seen: u64,
}

impl PeerPath {
    fn advertise(&mut self, now: Instant) {
        let mut all: Vec<SocketAddr> = self.endpoint.into_iter().collect();
        all.extend(self.extra.iter().copied());
        all.dedup();
        self.state.set_advertised(&all, now);
    }
}

#[derive(Debug, Default)]
pub(super) struct PathTable {
    pub(super) peers: HashMap<PeerIdx, PeerPath>,
    config: Option<PathConfig>,
    /// Where peers saw our probes come from, as each path's last pong
    /// said: (peer, the address the pong came from) → what it observed.
    reflexive: HashMap<(PeerIdx, SocketAddr), SocketAddr>,
    /// Burst probe id → (sent, answered).
    bursts: HashMap<u32, (Instant, Option<Instant>)>,
    next_burst: u32,
    /// This host is behind a NAT: idle peers need keep-alives.
    local_nat: bool,
    /// Runs of [`Engine::poll_paths`]: what the idle budget counts.
    passes: u64,
}

/// A peer's paths whose reports are kept: its candidates are a few, but a
/// roaming peer answers from ever new addresses.
const REFLEXIVE_PATHS_PER_PEER: usize = 8;

impl PathTable {
    /// `peer`'s path from `from` says it saw us at `observed`.
    fn note_reflexive(&mut self, peer: PeerIdx, from: SocketAddr, observed: SocketAddr) {
        let key = (peer, from);
        if !self.reflexive.contains_key(&key) {
            let mut others: Vec<SocketAddr> = self
                .reflexive
                .keys()
                .filter(|(p, _)| *p == peer)
                .map(|(_, a)| *a)
                .collect();
            if others.len() >= REFLEXIVE_PATHS_PER_PEER {
                others.sort();
                self.reflexive.remove(&(peer, others[0]));
            }
        }
        self.reflexive.insert(key, observed);
    }

    fn peer(&mut self, idx: PeerIdx, now: Instant) -> &mut PeerPath {
        let config = self.config.unwrap_or_default();
        self.peers.entry(idx).or_insert_with(|| PeerPath {
            state: PathState::new(config, now),
            endpoint: None,
            extra: Vec::new(),
            packets_seen: 0,
        })
    }
}

/// Path probes sent, by way (see [`Engine::probes_sent`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeCounts {
    pub direct: u64,
    pub relayed: u64,
}

/// The relay candidates for `dst`, most preferred first: highest random
/// weight of (destination tag, relay tag), so that each destination has
/// its own stable order and relaying spreads over the directly reached
/// peers instead of piling onto one.
fn relay_order(dst_tag: HostTag, dst: PeerIdx, direct: &[(PeerIdx, HostTag)]) -> Vec<PeerIdx> {
    let weight = |relay: &HostTag| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(&(dst_tag, relay), &mut h);
        std::hash::Hasher::finish(&h)
    };
    let mut ranked: Vec<(u64, PeerIdx)> = direct
        .iter()
        .filter(|(idx, _)| *idx != dst)
        .map(|(idx, tag)| (weight(tag), *idx))
        .collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.into_iter().map(|(_, idx)| idx).collect()
}

/// The endpoint and relay the packet paths use for a route
/// (`advertised`: the control plane's endpoint; `current`: the tables').
fn table_route(
    route: Route,
    advertised: Option<SocketAddr>,
    current: Option<SocketAddr>,
) -> (Option<SocketAddr>, Option<PeerIdx>) {
    match route {
        Route::Direct(addr) => (Some(addr), None),
        Route::Relayed(via) => (current.or(advertised), Some(via)),
        Route::Unknown => (advertised.or(current), None),
    }
}

/// Local wall clock in ms since the Unix epoch (for the clock skew).
fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// IPv4 peers reach a dual-stack socket as v4-mapped v6 addresses.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::from((ip, v6.port())),
            None => addr,
        },
        v4 => v4,
    }
}

impl Engine {
    pub(super) fn lock_paths(&self) -> std::sync::MutexGuard<'_, PathTable> {
        self.paths.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes [`Engine::paths_due`]: a pong or ping was handled, or the
    /// control plane changed what a path knows.
    pub(super) fn paths_changed(&self) {
        self.paths_due.notify_one();
    }

    /// Returns when a path's state changed in a way its timers do not
    /// foresee (a change since the last wait counts), so the loop running
    /// [`Engine::poll_paths`] can sleep until its next timer otherwise.
    pub async fn paths_due(&self) {
        self.paths_due.notified().await;
    }

    /// Sets the probing parameters for peers created from now on (tests,
    /// and the daemon's view of the local underlay MTU).
    pub fn set_path_config(&self, config: PathConfig) {
        self.lock_paths().config = Some(config);
    }

    /// Records the control plane's endpoint for `peer`; returns the direct
    /// endpoint the probes confirmed, if there is one.
    pub(super) fn advertise_endpoint(
        &self,
        peer: PeerIdx,
        endpoint: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        let now = Instant::now();
        let mut paths = self.lock_paths();
        let path = paths.peer(peer, now);
        let changed = path.endpoint != endpoint;
        path.endpoint = endpoint;
        path.advertise(now);
        let confirmed = match path.state.route() {
            Route::Direct(addr) => Some(addr),
            _ => None,
        };
        drop(paths);
        if changed {
            self.paths_changed();
        }
        confirmed
    }

    pub(super) fn forget_path(&self, peer: PeerIdx) {
        let mut paths = self.lock_paths();
        paths.peers.remove(&peer);
        paths.reflexive.retain(|(p, _), _| *p != peer);
    }

    /// The peer's further data addresses (its `data_addrs`), probed as
    /// candidates besides the endpoint of `upsert_peer`.
    pub fn set_candidates(&self, peer: PeerIdx, addrs: &[SocketAddr]) {
        let now = Instant::now();
        let mut paths = self.lock_paths();
        let path = paths.peer(peer, now);
        // Called for every member on each sync: no wake-up for no change.
        if path.extra == addrs {
            return;
        }
        path.extra = addrs.to_vec();
        path.advertise(now);
        drop(paths);
        self.paths_changed();
    }

    /// Where datagrams reach `peer` over its TCP fallback link (a local
    /// socket that forwards onto it; `None`: no TCP link). See
    /// [`PathState::set_fallback`].
    pub fn set_fallback(&self, peer: PeerIdx, addr: Option<SocketAddr>) {
        let now = Instant::now();
        self.lock_paths()
            .peer(peer, now)
            .state
            .set_fallback(addr, now);
        self.paths_changed();
    }

    /// This host's tag and every peer's (from their identities), naming
    /// hosts on relay envelopes.
    pub fn set_local_tag(&self, tag: HostTag) {
        self.write().local_tag = tag;
    }

    pub fn set_peer_tag(&self, peer: PeerIdx, tag: HostTag) {
        let mut tables = self.write();
        tables.by_tag.retain(|_, idx| *idx != peer);
        tables.by_tag.insert(tag, peer);
        tables.peers.entry(peer).or_default().tag = tag;
    }

    /// Whether this host is behind a NAT (idle paths then get keep-alives).
    pub fn set_local_nat(&self, nat: bool) {
        let was = std::mem::replace(&mut self.lock_paths().local_nat, nat);
        if was != nat {
            self.paths_changed();
        }
    }

    /// Whether the peer is behind a NAT (see [`crate::peer::Peer::nat`]).
    pub fn set_peer_nat(&self, peer: PeerIdx, nat: bool) {
        // Called for every member on each sync: no table copy for no change.
        if self.read().peers.get(&peer).is_none_or(|p| p.nat == nat) {
            return;
        }
        let mut tables = self.write();
        if let Some(entry) = tables.peers.get_mut(&peer) {
            entry.nat = nat;
        }
    }

    /// Whether the peer reads compact relay envelopes (protocol 2; see
    /// [`crate::wire::ENVELOPE_FLAG_COMPACT`]). Until told, it is sent the
    /// full form every version reads.
    pub fn set_peer_compact_envelopes(&self, peer: PeerIdx, compact: bool) {
        // Called for every member on each sync: no table copy for no change.
        let known = self.read().peers.get(&peer).map(|p| p.compact_envelopes);
        if known.is_none_or(|known| known == compact) {
            return;
        }
        let mut tables = self.write();
        if let Some(entry) = tables.peers.get_mut(&peer) {
            entry.compact_envelopes = compact;
        }
    }

    /// Addresses peers saw our probes come from (reflexive), sorted: the
    /// last report of each path. A report is replaced by the same path's
    /// next one and goes with its peer, never with time: an idle host hears
    /// no answers, and forgetting its addresses then would change its
    /// member record (flooded to every host) for nothing.
    pub fn reflexive_addrs(&self) -> Vec<SocketAddr> {
        let seen: BTreeSet<SocketAddr> = self.lock_paths().reflexive.values().copied().collect();
        seen.into_iter().collect()
    }

    /// Forgets the reflexive addresses at `ips`: interface addresses that
    /// went away (roaming), which no answer will age out while idle.
    pub fn forget_reflexive(&self, ips: &[IpAddr]) {
        self.lock_paths()
            .reflexive
            .retain(|_, seen| !ips.contains(&seen.ip()));
    }

    /// Envelopes forwarded by this host as a relay.
    pub fn relay_forwards(&self) -> u64 {
        self.relay_forwards.load(Ordering::Relaxed)
    }

    /// How often [`Self::poll_paths`] ran.
    pub fn path_passes(&self) -> u64 {
        self.lock_paths().passes
    }

    /// Path probes sent (pings and pongs), directly and in relay envelopes.
    pub fn probes_sent(&self) -> ProbeCounts {
        ProbeCounts {
            direct: self.probes_direct.load(Ordering::Relaxed),
            relayed: self.probes_relayed.load(Ordering::Relaxed),
        }
    }

    /// Runs every peer's path state machine: the probes due are sealed
    /// into `out` (send them from the data port), route changes are applied
    /// to the tables and path MTUs published. Returns when to call again.
    pub fn poll_paths(&self, now: Instant, pool: &mut BufPool, out: &mut Vec<Outgoing>) -> Instant {
        let wall = wall_ms();
        let tables = self.read();
        let mut paths = self.lock_paths();
        paths.passes += 1;
        let local_nat = paths.local_nat;
        // Peers reached directly may relay for the others; those reached
        // over their TCP fallback only as a last resort (see `path.rs`).
        let (direct, over_tcp): (Vec<_>, Vec<_>) = paths
            .peers
            .iter()
            .filter(|(_, p)| matches!(p.state.route(), Route::Direct(_)))
            .filter_map(|(idx, p)| {
                let tag = tables.peers.get(idx)?.tag;
                (tag != [0; 8]).then_some((*idx, tag, p.state.on_fallback()))
            })
            .partition(|(_, _, tcp)| !tcp);
        let direct: Vec<(PeerIdx, HostTag)> = direct.into_iter().map(|(i, t, _)| (i, t)).collect();
        let over_tcp: Vec<(PeerIdx, HostTag)> =
            over_tcp.into_iter().map(|(i, t, _)| (i, t)).collect();
        let mut next = now + Duration::from_secs(1);
        let mut changes = Vec::new();
        for (idx, path) in paths.peers.iter_mut() {
            let Some(peer) = tables.peers.get(idx) else {
                continue;
            };
            if peer.keys.current.is_none() {
                continue;
            }
            let packets = peer.counters.unicast_tx.load(Ordering::Relaxed);
            if packets != path.packets_seen {
                path.packets_seen = packets;
                path.state.on_traffic(now);
            }
            path.state.set_keepalive(local_nat || peer.nat);
            if path.state.wants_relays(now) {
                let mut relays = relay_order(peer.tag, *idx, &direct);
                let tcp = relay_order(peer.tag, *idx, &over_tcp);
                relays.extend(&tcp);
                path.state.set_relays(&relays);
                path.state.set_relays_over_tcp(&tcp);
            }
            for probe in path.state.poll(now, wall) {
                let body = ProbeBody {
                    kind: ProbeKind::Ping,
                    id: probe.id,
                    wall_ms: wall,
                    size: probe.size.min(u16::MAX as u32) as u16,
                    observed: None,
                };
                match self.probe_to(
                    &tables,
                    *idx,
                    &body,
                    probe.size as usize,
                    probe.via,
                    now,
                    pool,
                ) {
                    Ok(outgoing) => out.push(outgoing),
                    Err(reason) => tracing::trace!(peer = idx, ?reason, "probe not sent"),
                }
            }
            next = next.min(path.state.next_timeout(now));
            let (endpoint, relay) = table_route(path.state.route(), path.endpoint, peer.endpoint);
            if endpoint != peer.endpoint || relay != peer.relay {
                changes.push((*idx, endpoint, relay));
            }
            peer.path_mtu
                .store(path.state.path_mtu(), Ordering::Relaxed);
            peer.counters
                .path_idle
                .store(!path.state.active(now), Ordering::Relaxed);
        }
        drop(paths);
        drop(tables);
        if !changes.is_empty() {
            let mut tables = self.write();
            for (idx, endpoint, relay) in changes {
                if let Some(peer) = tables.peers.get_mut(&idx) {
                    tracing::info!(peer = idx, ?endpoint, ?relay, "data path now");
                    peer.endpoint = endpoint;
                    peer.relay = relay;
                }
            }
        }
        next.max(now + Duration::from_millis(20))
    }

    /// Seals a probe for `peer` and addresses it along `via`.
    #[allow(clippy::too_many_arguments)]
    fn probe_to(
        &self,
        tables: &Tables,
        peer: PeerIdx,
        body: &ProbeBody,
        size: usize,
        via: Via,
        now: Instant,
        pool: &mut BufPool,
    ) -> Result<Outgoing, DropReason> {
        let buf = self.seal_probe(tables, peer, body, size, now, pool)?;
        let counter = match via {
            Via::Direct(_) => &self.probes_direct,
            Via::Relay(_) => &self.probes_relayed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match via {
            Via::Direct(endpoint) => Ok(Outgoing {
                peer,
                endpoint,
                datagram: buf,
                from_data_port: true,
                to_tap: None,
            }),
            Via::Relay(relay) => self.wrap_relay(tables, relay, peer, buf, now, pool, true),
        }
    }

    fn seal_probe(
        &self,
        tables: &Tables,
        peer: PeerIdx,
        body: &ProbeBody,
        size: usize,
        now: Instant,
        pool: &mut BufPool,
    ) -> Result<PacketBuf, DropReason> {
        let keypair = tables
            .peers
            .get(&peer)
            .ok_or(DropReason::UnknownPeer)?
            .keys
            .current
            .clone()
            .ok_or(DropReason::NoKey)?;
        let counter = keypair
            .take_send_counter(now)
            .map_err(|_| DropReason::StaleKey)?;
        let mut buf = pool.get();
        let len = size
            .saturating_sub(OVERHEAD)
            .max(PROBE_BODY_LEN)
            .min(buf.frame_capacity());
        let space = buf.frame_space();
        space[..len].fill(0);
        body.encode(&mut space[..PROBE_BODY_LEN]);
        buf.set_frame_len(len);
        let (header, payload, tag) = buf.seal_parts();
        DataHeader {
            receiver_index: keypair.remote_index,
            counter,
            network_id: 0,
        }
        .encode(header);
        wire::set_type(header, MSG_TYPE_PROBE);
        *tag = keypair.seal(None, counter, header, payload);
        buf.mark_sealed();
        Ok(buf)
    }

    /// Handles any datagram from the UDP socket: data (returned for the
    /// TAP), probes (answered or fed to the path state), relay envelopes
    /// (forwarded, or opened when they are for us). Datagrams to send go to
    /// `out`. Every failure is counted before it is returned.
    pub fn receive(
        &self,
        datagram: &mut [u8],
        source: SocketAddr,
        now: Instant,
        pool: &mut BufPool,
        out: &mut Vec<Outgoing>,
    ) -> Result<Option<Delivery>, DropReason> {
        let source = canonical(source);
        let result = match datagram.first().copied() {
            Some(MSG_TYPE_DATA) => self.open_uncounted(datagram, now).map(Some),
            Some(MSG_TYPE_PROBE) => self
                .handle_probe(datagram, Some(source), None, now, pool, out)
                .map(|()| None),
            Some(MSG_TYPE_RELAY) => self.forward(datagram, now, pool, out).map(|()| None),
            Some(MSG_TYPE_RELAYED) => self.unwrap_relayed(datagram, now, pool, out),
            _ => Err(DropReason::UnknownType),
        };
        if let Err(reason) = result {
            self.drops.bump(reason);
        }
        result
    }

    /// Opens a probe; answers a ping (directly to `source`, or back through
    /// the relay it came by), feeds a pong to the peer's path state.
    pub(super) fn handle_probe(
        &self,
        datagram: &mut [u8],
        source: Option<SocketAddr>,
        relayed: Option<(PeerIdx, PeerIdx)>,
        now: Instant,
        pool: &mut BufPool,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), DropReason> {
        let received_len = datagram.len();
        let header = DataHeader::parse(datagram).map_err(header_drop)?;
        let tables = self.read();
        let entry = tables
            .by_index
            .get(&header.receiver_index)
            .ok_or(DropReason::UnknownIndex)?;
        let peer = entry.peer;
        let (header_bytes, body) = datagram.split_at_mut(HEADER_LEN);
        let header_bytes: &[u8; HEADER_LEN] =
            (&*header_bytes).try_into().map_err(|_| DropReason::Short)?;
        let len = entry
            .keypair
            .open(None, header.counter, header_bytes, body, now)
            .map_err(refusal_drop)?;
        if header.network_id != 0 {
            return Err(DropReason::BadProbe);
        }
        if relayed.is_some_and(|(_, origin)| origin != peer) {
            return Err(DropReason::RelayRefused);
        }
        let probe = ProbeBody::parse(&body[..len]).ok_or(DropReason::BadProbe)?;
        match probe.kind {
            ProbeKind::Ping => {
                let pong = ProbeBody {
                    kind: ProbeKind::Pong,
                    id: probe.id,
                    wall_ms: wall_ms(),
                    size: received_len.min(u16::MAX as usize) as u16,
                    observed: source,
                };
                let via = match (source, relayed) {
                    (Some(addr), _) => Via::Direct(addr),
                    (None, Some((relay, _))) => Via::Relay(relay),
                    (None, None) => return Ok(()),
                };
                match self.probe_to(&tables, peer, &pong, MIN_PROBE_DATAGRAM, via, now, pool) {
                    Ok(outgoing) => out.push(outgoing),
                    Err(reason) => self.drops.bump(reason),
                }
                drop(tables);
                let mut paths = self.lock_paths();
                let state = &mut paths.peer(peer, now).state;
                let due = state.next_timeout(now);
                state.on_ping(source, now);
                // A new source is probed at once.
                let sooner = state.next_timeout(now) < due;
                drop(paths);
                if sooner {
                    self.paths_changed();
                }
            }
            ProbeKind::Pong => {
                drop(tables);
                let mut paths = self.lock_paths();
                if probe.id & BURST_ID_BIT != 0 {
                    if let Some((_, answered)) = paths.bursts.get_mut(&probe.id) {
                        answered.get_or_insert(now);
                    }
                    return Ok(());
                }
                let path = paths.peer(peer, now);
                // A pong over the TCP fallback observed the peer's own shim
                // socket: no reflexive address of this host.
                let direct = source.filter(|addr| !path.state.is_fallback(*addr));
                if let (Some(observed), Some(from)) = (probe.observed, direct) {
                    paths.note_reflexive(peer, from, canonical(observed));
                }
                let path = paths.peer(peer, now);
                let before = path.state.route();
                let due = path.state.next_timeout(now);
                path.state
                    .on_pong(probe.id, probe.wall_ms, probe.size as u32, now);
                // The MTU search's next step, say.
                let sooner = path.state.next_timeout(now) < due;
                let (route, advertised) = (path.state.route(), path.endpoint);
                // The search's result bounds frames (and clamps TCP's MSS)
                // from the next frame on, not from the next poll; stored
                // under the paths lock so that a later pong's value wins
                // (`read` takes no lock).
                if let Some(entry) = self.read().peers.get(&peer) {
                    entry
                        .path_mtu
                        .store(path.state.path_mtu(), Ordering::Relaxed);
                }
                // The tables' writer is taken before the paths elsewhere.
                drop(paths);
                if sooner {
                    self.paths_changed();
                }
                if route != before {
                    // Applied now rather than at the next poll: frames take
                    // the new route from the next one on.
                    let mut tables = self.write();
                    if let Some(entry) = tables.peers.get_mut(&peer) {
                        (entry.endpoint, entry.relay) =
                            table_route(route, advertised, entry.endpoint);
                        tracing::info!(peer, endpoint = ?entry.endpoint, relay = ?entry.relay, "data path now");
                    }
                }
            }
        }
        Ok(())
    }

    /// One probe of a burst ([`crate::Dataplane::probe_burst`]) over the
    /// peer's current route; returns its id to ask [`Self::burst_result`].
    pub fn send_burst_probe(
        &self,
        peer: PeerIdx,
        now: Instant,
        pool: &mut BufPool,
    ) -> Result<(u32, Outgoing), DropReason> {
        let tables = self.read();
        let entry = tables.peers.get(&peer).ok_or(DropReason::UnknownPeer)?;
        let via = match (entry.relay, entry.endpoint) {
            (Some(relay), _) => Via::Relay(relay),
            (None, Some(addr)) => Via::Direct(addr),
            (None, None) => return Err(DropReason::NoEndpoint),
        };
        let id = {
            let mut paths = self.lock_paths();
            paths.next_burst = paths.next_burst.wrapping_add(1);
            BURST_ID_BIT | (paths.next_burst & !BURST_ID_BIT)
        };
        let body = ProbeBody {
            kind: ProbeKind::Ping,
            id,
            wall_ms: wall_ms(),
            size: MIN_PROBE_DATAGRAM as u16,
            observed: None,
        };
        let outgoing = self.probe_to(&tables, peer, &body, MIN_PROBE_DATAGRAM, via, now, pool)?;
        // Only once sealed: a probe that could not be sent leaves nothing.
        self.lock_paths().bursts.insert(id, (now, None));
        Ok((id, outgoing))
    }

    /// The round trip of burst probe `id`, once answered.
    pub fn burst_rtt(&self, id: u32) -> Option<Duration> {
        let paths = self.lock_paths();
        let (sent, answered) = paths.bursts.get(&id)?;
        answered.map(|at| at.saturating_duration_since(*sent))
    }

    /// Collects (and forgets) the burst probes `ids`.
    pub fn burst_result(&self, ids: &[u32]) -> BurstReport {
        let mut paths = self.lock_paths();
        let rtts: Vec<Duration> = ids
            .iter()
            .filter_map(|id| paths.bursts.remove(id))
            .filter_map(|(sent, answered)| answered.map(|at| at.saturating_duration_since(sent)))
            .collect();
        let received = rtts.len() as u32;
        BurstReport {
            sent: ids.len() as u32,
            received,
            rtt_min: rtts.iter().min().copied(),
            rtt_max: rtts.iter().max().copied(),
            rtt_avg: (received > 0).then(|| rtts.iter().sum::<Duration>() / received),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn seen(t: &PathTable) -> BTreeSet<SocketAddr> {
        t.reflexive.values().copied().collect()
    }

    #[test]
    fn each_path_keeps_its_last_report_until_it_reports_again() {
        // A host seen at two addresses (a LAN peer and a remote one): when
        // only one path answers again, the other's report stays, so the
        // advertised set does not change with who happens to be talking.
        let mut t = PathTable::default();
        t.note_reflexive(1, a("10.0.0.2:7801"), a("10.0.0.1:7801"));
        t.note_reflexive(2, a("203.0.113.5:7801"), a("198.51.100.1:40000"));
        t.note_reflexive(1, a("10.0.0.2:7801"), a("10.0.0.1:7801"));
        let both: BTreeSet<_> = [a("10.0.0.1:7801"), a("198.51.100.1:40000")].into();
        assert_eq!(seen(&t), both);
        // A new mapping replaces the path's old one.
        t.note_reflexive(2, a("203.0.113.5:7801"), a("198.51.100.1:40001"));
        assert!(!seen(&t).contains(&a("198.51.100.1:40000")));
    }

    #[test]
    fn a_roaming_peer_keeps_a_bounded_number_of_reports() {
        let mut t = PathTable::default();
        for port in 0..100u16 {
            t.note_reflexive(
                7,
                SocketAddr::from(([10, 0, 0, 9], 1000 + port)),
                a("10.0.0.1:7801"),
            );
        }
        t.note_reflexive(8, a("10.0.0.8:7801"), a("10.0.0.1:7801"));
        let of_7 = t.reflexive.keys().filter(|(p, _)| *p == 7).count();
        assert_eq!(of_7, REFLEXIVE_PATHS_PER_PEER);
        assert_eq!(t.reflexive.len(), REFLEXIVE_PATHS_PER_PEER + 1);
    }
}
