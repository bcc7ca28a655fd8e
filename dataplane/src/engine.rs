//! The sans-IO core: decides what happens to a frame read from a TAP
//! (`seal_frame`) and to a datagram read from the UDP socket
//! (`open_datagram`). Pure code over byte buffers and `Instant`s.
//!
//! Concurrency: configuration is an immutable snapshot ([`Tables`]) behind an
//! `ArcSwap`, so the packet paths take no lock at all — a load is a few
//! atomic operations on a per-thread slot, and no cache line is written by
//! every worker on every packet as a shared `RwLock`'s reader count is.
//! Per-packet mutation is atomics (counters, send counters, MAC refresh) or
//! the lock-free replay window of one keypair. Changes (control-plane calls,
//! housekeeping that has something to expire, and once per rekey the
//! promotion of a `next` keypair by its first packet) copy the tables under
//! a writers' mutex and publish the copy; keypairs, counters and MAC tables
//! are shared between copies, so nothing a packet does is lost.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use std::time::Instant;

use crate::keypair::{KeyRefusal, Keypair, NetworkKeys, SessionKeys};
use crate::offload::{
    self, VnetHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VNET_HDR_LEN,
};
use crate::peer::Peer;
use crate::pins::{self, MacOwner, NetworkPins, PinSet, SourceCheck};
use crate::pool::{BufPool, PacketBuf};
use crate::replay::ReplayReject;
use crate::stats::{DropCounters, DropReason};
use crate::switch::{self, MacTable};
use crate::wire::{
    DataHeader, HeaderError, HostTag, ETHERNET_HEADER_LEN, HEADER_LEN, MSG_TYPE_DATA,
};
use crate::{NetworkId, PeerIdx};

mod paths;
mod relay;
mod report;
pub use paths::ProbeCounts;

pub use paths::BURST_ID_BIT;

/// A sealed datagram ready to send, or (`to_tap`) the data plane's own
/// answer to a frame from the TAP (ICMP too-big, see [`crate::icmp`]).
#[derive(Debug)]
pub struct Outgoing {
    pub peer: PeerIdx,
    pub endpoint: SocketAddr,
    pub datagram: PacketBuf,
    /// Send from the data port itself (probes and their answers), so that
    /// the address a peer observes, and a NAT's mapping, is the data port's.
    pub from_data_port: bool,
    /// Some: not sent; `datagram` holds an unsealed frame to write into the
    /// local TAP of this network.
    pub to_tap: Option<NetworkId>,
}

/// An authenticated frame to write to the TAP of `network`; it sits at
/// `datagram[frame]` after `open_datagram` decrypted it in place.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct Delivery {
    pub network: NetworkId,
    pub peer: PeerIdx,
    pub frame: Range<usize>,
}

#[derive(Clone)]
struct IndexEntry {
    peer: PeerIdx,
    keypair: Arc<Keypair>,
}

#[derive(Clone)]
struct Network {
    /// Peers that are members, sorted: the flood list.
    members: Vec<PeerIdx>,
    /// Shared by every copy of the tables: learning is per packet.
    macs: Arc<MacTable>,
    /// MACs the control plane places (see [`crate::pins`]); replaced whole.
    pins: Arc<NetworkPins>,
}

#[derive(Clone, Default)]
struct Tables {
    peers: HashMap<PeerIdx, Peer>,
    networks: HashMap<NetworkId, Network>,
    /// Receiver index (our `local_index`) → keypair, for the receive path.
    by_index: HashMap<u32, IndexEntry>,
    /// Secrets of networks restricted to some hosts.
    secrets: HashMap<NetworkId, [u8; 32]>,
    /// Keys derived for (keypair local index, network) of those networks.
    network_keys: HashMap<(u32, NetworkId), Arc<NetworkKeys>>,
    /// Host tag → peer, for relay envelopes.
    by_tag: HashMap<HostTag, PeerIdx>,
    /// This host's tag.
    local_tag: HostTag,
    /// Every network's pins as last set, also for networks added later.
    pins: HashMap<NetworkId, Arc<NetworkPins>>,
}

impl Tables {
    fn rebuild_members(&mut self) {
        for (net, network) in self.networks.iter_mut() {
            network.members = self
                .peers
                .iter()
                .filter(|(_, peer)| peer.is_member(*net) && !peer.down)
                .map(|(idx, _)| *idx)
                .collect();
            network.members.sort_unstable();
        }
    }

    fn derive_for(&mut self, keypair: &Keypair) {
        for (net, secret) in &self.secrets {
            self.network_keys.insert(
                (keypair.local_index, *net),
                Arc::new(keypair.derive_network_keys(secret, net.0)),
            );
        }
    }

    fn unindex(&mut self, keypair: &Arc<Keypair>) {
        let indexed_here = self
            .by_index
            .get(&keypair.local_index)
            .is_some_and(|entry| Arc::ptr_eq(&entry.keypair, keypair));
        if indexed_here {
            self.by_index.remove(&keypair.local_index);
            let index = keypair.local_index;
            self.network_keys.retain(|(i, _), _| *i != index);
        }
    }
}

pub struct Engine {
    epoch: Instant,
    tables: ArcSwap<Tables>,
    /// Serialises changes, so that none is lost between copy and publish.
    writer: Mutex<()>,
    drops: DropCounters,
    /// Path state of every peer (probes are rare: a mutex is fine).
    paths: Mutex<paths::PathTable>,
    /// Something made a path's next step due before its timers (see
    /// [`Engine::paths_due`]).
    paths_due: tokio::sync::Notify,
    /// Envelopes this host forwarded as a relay.
    relay_forwards: std::sync::atomic::AtomicU64,
    /// Path probes sent directly / in relay envelopes.
    probes_direct: std::sync::atomic::AtomicU64,
    probes_relayed: std::sync::atomic::AtomicU64,
}

/// A copy of the tables being changed; published when dropped.
struct TablesWrite<'a> {
    engine: &'a Engine,
    next: Option<Tables>,
    _writer: MutexGuard<'a, ()>,
}

impl std::ops::Deref for TablesWrite<'_> {
    type Target = Tables;
    fn deref(&self) -> &Tables {
        self.next.as_ref().expect("present until drop")
    }
}

impl std::ops::DerefMut for TablesWrite<'_> {
    fn deref_mut(&mut self) -> &mut Tables {
        self.next.as_mut().expect("present until drop")
    }
}

impl Drop for TablesWrite<'_> {
    fn drop(&mut self) {
        if let Some(next) = self.next.take() {
            self.engine.tables.store(Arc::new(next));
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(now: Instant) -> Engine {
        Engine {
            epoch: now,
            tables: ArcSwap::from_pointee(Tables::default()),
            writer: Mutex::new(()),
            drops: DropCounters::default(),
            paths: Mutex::new(paths::PathTable::default()),
            paths_due: tokio::sync::Notify::new(),
            relay_forwards: Default::default(),
            probes_direct: Default::default(),
            probes_relayed: Default::default(),
        }
    }

    /// The current tables, without a lock.
    fn read(&self) -> arc_swap::Guard<Arc<Tables>> {
        self.tables.load()
    }

    /// A private copy of the tables to change; published on drop.
    fn write(&self) -> TablesWrite<'_> {
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        TablesWrite {
            engine: self,
            next: Some(Tables::clone(&self.tables.load())),
            _writer: writer,
        }
    }

    // ---- control plane ----

    /// Configures `net` locally; returns false if it already was.
    pub fn add_network(&self, net: NetworkId) -> bool {
        let mut tables = self.write();
        if tables.networks.contains_key(&net) {
            return false;
        }
        let pins = tables.pins.get(&net).cloned().unwrap_or_default();
        tables.networks.insert(
            net,
            Network {
                members: Vec::new(),
                macs: Arc::new(MacTable::new(self.epoch)),
                pins,
            },
        );
        tables.rebuild_members();
        true
    }

    pub fn remove_network(&self, net: NetworkId) {
        self.write().networks.remove(&net);
    }

    pub fn has_network(&self, net: NetworkId) -> bool {
        self.read().networks.contains_key(&net)
    }

    /// Creates or updates a peer's endpoint and network memberships.
    pub fn upsert_peer(&self, peer: PeerIdx, endpoint: Option<SocketAddr>, networks: &[NetworkId]) {
        // A direct endpoint the probes confirmed (e.g. after roaming) wins
        // over the advertised one until it fails.
        let confirmed = self.advertise_endpoint(peer, endpoint);
        let mut tables = self.write();
        let entry = tables.peers.entry(peer).or_default();
        entry.endpoint = confirmed.or(endpoint);
        let left: Vec<NetworkId> = entry
            .networks
            .iter()
            .filter(|net| !networks.contains(net))
            .copied()
            .collect();
        entry.networks = networks.iter().copied().collect();
        for net in left {
            if let Some(network) = tables.networks.get(&net) {
                network.macs.forget_peer(peer);
            }
        }
        tables.rebuild_members();
        tracing::debug!(peer, ?endpoint, ?networks, "peer updated");
    }

    /// Replaces every network's pinned MACs (see [`crate::pins`]) with
    /// `pins`: a MAC absent from it is unpinned (learned again), one that
    /// moved follows at once. Learned entries of newly pinned MACs go.
    pub fn set_pinned_macs(&self, pins: PinSet) {
        let pins: HashMap<NetworkId, Arc<NetworkPins>> = pins
            .into_iter()
            .filter(|(_, macs)| !macs.is_empty())
            .map(|(net, macs)| (net, Arc::new(macs)))
            .collect();
        let mut tables = self.write();
        let mut shadowed = Vec::new();
        for (net, network) in tables.networks.iter_mut() {
            let next = pins.get(net).cloned().unwrap_or_default();
            shadowed.push((
                network.macs.clone(),
                next.keys().copied().collect::<Vec<_>>(),
            ));
            network.pins = next;
        }
        let total: usize = pins.values().map(|macs| macs.len()).sum();
        tables.pins = pins;
        drop(tables);
        for (macs, pinned) in shadowed {
            macs.forget(&pinned);
        }
        tracing::debug!(pinned = total, "pinned MACs replaced");
    }

    /// Sets the largest sealed datagram that reaches `peer` (0: unknown, no
    /// limit); what the path prober learned, or a test's choice.
    pub fn set_path_mtu(&self, peer: PeerIdx, mtu: u32) {
        if let Some(peer) = self.read().peers.get(&peer) {
            peer.path_mtu
                .store(mtu, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Sets the bound on `peer`'s path MTU that the underlay interfaces of
    /// both hosts give (see [`Peer::mtu_cap`]); 0: none.
    pub fn set_mtu_cap(&self, peer: PeerIdx, cap: u32) {
        if let Some(peer) = self.read().peers.get(&peer) {
            peer.mtu_cap
                .store(cap, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Takes a peer out of the flood lists while it is down (and puts it
    /// back when it is up again); unicast to and from it is unaffected.
    pub fn set_peer_down(&self, peer: PeerIdx, down: bool) {
        let mut tables = self.write();
        let Some(entry) = tables.peers.get_mut(&peer) else {
            return;
        };
        if entry.down != down {
            entry.down = down;
            tables.rebuild_members();
            tracing::debug!(peer, down, "peer flood state changed");
        }
    }

    pub fn remove_peer(&self, peer: PeerIdx) {
        let mut tables = self.write();
        let Some(removed) = tables.peers.remove(&peer) else {
            return;
        };
        tables.by_tag.retain(|_, idx| *idx != peer);
        self.forget_path(peer);
        for keypair in removed.keys.all() {
            tables.unindex(keypair);
        }
        for network in tables.networks.values() {
            network.macs.forget_peer(peer);
        }
        tables.rebuild_members();
        tracing::debug!(peer, "peer removed");
    }

    /// Installs a session (see [`crate::peer::KeySlots`] for the slot rules).
    /// Creates the peer, without endpoint, if unknown.
    pub fn install_keys(&self, peer: PeerIdx, keys: &SessionKeys, send_now: bool, now: Instant) {
        let keypair = Arc::new(Keypair::new(keys, now));
        let mut tables = self.write();
        let displaced = tables
            .peers
            .entry(peer)
            .or_default()
            .keys
            .install(keypair.clone(), send_now);
        for old in &displaced {
            tables.unindex(old);
        }
        tables.derive_for(&keypair);
        if let Some(clash) = tables
            .by_index
            .insert(keys.local_index, IndexEntry { peer, keypair })
        {
            tracing::warn!(
                peer,
                other_peer = clash.peer,
                index = keys.local_index,
                "receiver index reused; older keypair no longer reachable"
            );
        }
        drop(tables);
        // A peer is probed once it has keys.
        self.paths_changed();
        tracing::debug!(
            peer,
            generation = keys.generation,
            send_now,
            "keys installed"
        );
    }

    /// Gives network `net` a secret of its own (`None`: none). Frames of such
    /// a network are sealed with keys derived from the session and the
    /// secret, so a host without the secret cannot open them.
    pub fn set_network_secret(&self, net: NetworkId, secret: Option<[u8; 32]>) {
        let mut tables = self.write();
        tables.network_keys.retain(|(_, n), _| *n != net);
        match secret {
            Some(secret) => {
                tables.secrets.insert(net, secret);
                let derived: Vec<((u32, NetworkId), Arc<NetworkKeys>)> = tables
                    .by_index
                    .values()
                    .map(|e| {
                        (
                            (e.keypair.local_index, net),
                            Arc::new(e.keypair.derive_network_keys(&secret, net.0)),
                        )
                    })
                    .collect();
                tables.network_keys.extend(derived);
            }
            None => {
                tables.secrets.remove(&net);
            }
        }
    }

    /// Promotes the `next` keypair of `generation` to current. Returns whether it did.
    pub fn confirm_keys(&self, peer: PeerIdx, generation: u64) -> bool {
        let mut tables = self.write();
        let Some(entry) = tables.peers.get_mut(&peer) else {
            return false;
        };
        let Some(next) = entry
            .keys
            .next
            .clone()
            .filter(|next| next.generation == generation)
        else {
            return false;
        };
        if let Some(Some(old)) = entry.keys.promote_next(&next) {
            tables.unindex(&old);
        }
        tracing::debug!(peer, generation, "keys confirmed");
        true
    }

    /// Periodic cleanup: forget expired keypairs and aged MAC entries.
    pub fn housekeeping(&self, now: Instant) {
        for network in self.read().networks.values() {
            network.macs.expire(now);
        }
        // Copy the tables only when a keypair is due (once per rekey).
        let due = |tables: &Tables| {
            tables
                .peers
                .values()
                .any(|peer| peer.keys.all().any(|keypair| keypair.is_expired(now)))
        };
        if !due(&self.read()) {
            return;
        }
        let mut tables = self.write();
        let mut expired = Vec::new();
        for peer in tables.peers.values_mut() {
            expired.extend(peer.keys.expire(now));
        }
        for keypair in &expired {
            tables.unindex(keypair);
        }
    }

    // ---- data plane ----

    /// Counts a drop decided outside the engine (I/O errors).
    pub fn count_drop(&self, reason: DropReason) {
        self.drops.bump(reason);
    }

    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Switches and seals a frame read from the TAP of `net`. Produces one
    /// datagram for a known unicast destination, or one per member peer when
    /// flooding (copies for all but the last). Buffers of dropped frames go
    /// back to `pool`; every drop is counted.
    pub fn seal_frame(
        &self,
        net: NetworkId,
        frame: PacketBuf,
        now: Instant,
        pool: &mut BufPool,
        out: &mut Vec<Outgoing>,
    ) {
        let tables = self.read();
        if frame.frame_len() < ETHERNET_HEADER_LEN {
            return self.drop_buf(DropReason::RuntFrame, frame, pool);
        }
        let Some(network) = tables.networks.get(&net) else {
            return self.drop_buf(DropReason::WrongNetwork, frame, pool);
        };
        let destination = switch::destination(frame.frame());
        let source = switch::source(frame.frame());
        match pins::check_source(&network.pins, &source, MacOwner::Local) {
            // A remote attachment's MAC sent from here: a spoof.
            SourceCheck::Foreign => return self.drop_buf(DropReason::SpoofedSource, frame, pool),
            SourceCheck::Pinned => {}
            // A source seen locally is not behind a peer (any more).
            SourceCheck::Unpinned => network.macs.forget_if_remote(&source),
        }

        let known = if switch::is_group(&destination) {
            None
        } else {
            match network.pins.get(&destination) {
                Some(MacOwner::Peer(peer)) => Some(*peer),
                Some(MacOwner::Local) => {
                    return self.drop_buf(DropReason::LocalDestination, frame, pool)
                }
                None => network.macs.lookup(&destination, now),
            }
        };
        let unicast = known.filter(|peer| tables.peers.get(peer).is_some_and(|p| p.is_member(net)));
        if let Some((idx, peer)) = unicast.and_then(|i| Some((i, tables.peers.get(&i)?))) {
            // The path to the relay carries this traffic: keep it probed.
            let via = peer.relay.and_then(|r| tables.peers.get(&r));
            let woke =
                peer.counters.note_unicast() | via.is_some_and(|v| v.counters.note_unicast());
            if woke {
                self.paths_changed();
            }
            let seal = |buf, pool: &mut BufPool, out: &mut Vec<Outgoing>| {
                self.seal_for(&tables, idx, net, buf, now, pool, out)
            };
            return crate::pmtu::fit_to_path(peer, idx, net, frame, pool, out, &self.drops, seal);
        }
        let Some((&last, others)) = network.members.split_last() else {
            return self.drop_buf(DropReason::NoPeers, frame, pool);
        };
        for &peer in others {
            let mut copy = pool.get();
            copy.fill_frame(frame.frame());
            self.seal_for(&tables, peer, net, copy, now, pool, out);
        }
        self.seal_for(&tables, last, net, frame, now, pool, out);
    }

    /// Seals what one TAP read returned. With `vnet_hdr` the read starts
    /// with a `virtio_net_hdr`: a partial checksum is completed and a TCP
    /// super-segment is split into MTU-sized frames first (see
    /// [`crate::offload`]); without, the read is one plain frame. Each frame
    /// is copied into a buffer from `pool` and goes through [`Self::seal_frame`];
    /// every failure is counted under its own [`DropReason`].
    pub fn seal_tap_read(
        &self,
        net: NetworkId,
        read: &mut [u8],
        vnet_hdr: bool,
        now: Instant,
        pool: &mut BufPool,
        out: &mut Vec<Outgoing>,
    ) {
        self.split_tap_read(read, vnet_hdr, pool, |buf, pool| {
            self.seal_frame(net, buf, now, pool, out)
        });
    }

    /// What one TAP read holds, as plain frames in buffers from `pool`
    /// (checksums completed, super-segments split), each handed to `emit`.
    pub fn split_tap_read(
        &self,
        read: &mut [u8],
        vnet_hdr: bool,
        pool: &mut BufPool,
        mut emit: impl FnMut(PacketBuf, &mut BufPool),
    ) {
        if !vnet_hdr {
            return self.copy_frame(read, pool, emit);
        }
        let Some(hdr) = VnetHdr::parse(read) else {
            return self.drops.bump(DropReason::BadVnetHdr);
        };
        let frame = &mut read[VNET_HDR_LEN..];
        if hdr.gso_type == VIRTIO_NET_HDR_GSO_NONE {
            if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0
                && offload::finish_checksum(frame, &hdr).is_err()
            {
                return self.drops.bump(DropReason::ChecksumOffloadFailed);
            }
            return self.copy_frame(frame, pool, emit);
        }
        // Both closures need the pool: one takes buffers, one returns drops.
        let pool = std::cell::RefCell::new(pool);
        let result = offload::segment_tcp(
            frame,
            &hdr,
            || pool.borrow_mut().get(),
            |buf| emit(buf, &mut pool.borrow_mut()),
        );
        if let Err(error) = result {
            self.drops.bump(error.drop_reason());
            tracing::trace!(?error, "TAP super-segment not split");
        }
    }

    fn copy_frame(
        &self,
        frame: &[u8],
        pool: &mut BufPool,
        mut emit: impl FnMut(PacketBuf, &mut BufPool),
    ) {
        let mut buf = pool.get();
        if buf.fill_frame(frame) {
            emit(buf, pool);
        } else {
            self.drop_buf(DropReason::OversizedFrame, buf, pool);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn seal_for(
        &self,
        tables: &Tables,
        peer_idx: PeerIdx,
        net: NetworkId,
        mut buf: PacketBuf,
        now: Instant,
        pool: &mut BufPool,
        out: &mut Vec<Outgoing>,
    ) {
        let Some(peer) = tables.peers.get(&peer_idx) else {
            return self.drop_buf(DropReason::UnknownPeer, buf, pool);
        };
        let Some(endpoint) = peer.endpoint else {
            return self.drop_buf(DropReason::NoEndpoint, buf, pool);
        };
        let Some(keypair) = peer.keys.current.as_ref() else {
            return self.drop_buf(DropReason::NoKey, buf, pool);
        };
        let Ok(counter) = keypair.take_send_counter(now) else {
            return self.drop_buf(DropReason::StaleKey, buf, pool);
        };
        let header = DataHeader {
            receiver_index: keypair.remote_index,
            counter,
            network_id: net.0,
        };
        let frame_len = buf.frame_len();
        let (header_slot, payload, tag_slot) = buf.seal_parts();
        header.encode(header_slot);
        // Most meshes have no restricted network: skip the lookup then.
        let network_keys = match tables.network_keys.is_empty() {
            true => None,
            false => tables
                .network_keys
                .get(&(keypair.local_index, net))
                .map(|keys| &**keys),
        };
        *tag_slot = keypair.seal(network_keys, counter, header_slot, payload);
        buf.mark_sealed();
        peer.counters.record_tx(frame_len);
        if let Some(relay) = peer.relay {
            let nat = tables.peers.get(&relay).is_some_and(|r| r.nat);
            match self.wrap_relay(tables, relay, peer_idx, buf, now, pool, nat) {
                Ok(outgoing) => out.push(outgoing),
                Err(reason) => self.drops.bump(reason),
            }
            return;
        }
        out.push(Outgoing {
            peer: peer_idx,
            endpoint,
            datagram: buf,
            from_data_port: peer.nat,
            to_tap: None,
        });
    }

    fn drop_buf(&self, reason: DropReason, buf: PacketBuf, pool: &mut BufPool) {
        self.drops.bump(reason);
        pool.put(buf);
    }

    /// Authenticates and decrypts one datagram in place. On success the
    /// plaintext frame is at `datagram[delivery.frame]` and must go to the
    /// local TAP of `delivery.network` only (split horizon: never to peers).
    /// Every failure is counted before it is returned.
    pub fn open_datagram(&self, datagram: &mut [u8], now: Instant) -> Result<Delivery, DropReason> {
        let result = self.open_uncounted(datagram, now);
        if let Err(reason) = result {
            self.drops.bump(reason);
        }
        result
    }

    fn open_uncounted(&self, datagram: &mut [u8], now: Instant) -> Result<Delivery, DropReason> {
        if datagram.first().is_some_and(|t| *t != MSG_TYPE_DATA) {
            return Err(DropReason::UnknownType);
        }
        let header = DataHeader::parse(datagram).map_err(header_drop)?;
        let tables = self.read();
        let entry = tables
            .by_index
            .get(&header.receiver_index)
            .ok_or(DropReason::UnknownIndex)?;
        let (header_bytes, body) = datagram.split_at_mut(HEADER_LEN);
        let header_bytes: &[u8; HEADER_LEN] =
            (&*header_bytes).try_into().map_err(|_| DropReason::Short)?;
        let network_keys = match tables.network_keys.is_empty() {
            true => None,
            false => tables
                .network_keys
                .get(&(entry.keypair.local_index, NetworkId(header.network_id)))
                .map(|keys| &**keys),
        };
        let frame_len = entry
            .keypair
            .open(network_keys, header.counter, header_bytes, body, now)
            .map_err(refusal_drop)?;
        // Authenticated from here on.
        let peer_idx = entry.peer;
        let peer = tables
            .peers
            .get(&peer_idx)
            .ok_or(DropReason::UnknownIndex)?;
        let promote = peer
            .keys
            .next
            .as_ref()
            .is_some_and(|next| Arc::ptr_eq(next, &entry.keypair));
        let keypair = entry.keypair.clone();

        let net = NetworkId(header.network_id);
        let membership = match tables.networks.get(&net) {
            Some(network) if peer.is_member(net) => {
                let source = switch::source(&datagram[HEADER_LEN..HEADER_LEN + frame_len]);
                match pins::check_source(&network.pins, &source, MacOwner::Peer(peer_idx)) {
                    SourceCheck::Foreign => {
                        peer.counters
                            .spoofed_rx
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Err(DropReason::SpoofedSource)
                    }
                    check => {
                        if check == SourceCheck::Unpinned {
                            network.macs.learn(source, peer_idx, now);
                        }
                        peer.counters.record_rx(frame_len);
                        crate::pmtu::clamp_received(
                            peer,
                            &mut datagram[HEADER_LEN..HEADER_LEN + frame_len],
                        );
                        Ok(())
                    }
                }
            }
            _ => Err(DropReason::WrongNetwork),
        };
        drop(tables);
        if promote {
            // The peer has started using the session: it becomes current.
            let mut tables = self.write();
            if let Some(peer) = tables.peers.get_mut(&peer_idx) {
                if let Some(Some(old)) = peer.keys.promote_next(&keypair) {
                    tables.unindex(&old);
                }
                tracing::debug!(
                    peer = peer_idx,
                    generation = keypair.generation,
                    "next keypair promoted by first packet"
                );
            }
        }
        membership?;
        Ok(Delivery {
            network: net,
            peer: peer_idx,
            frame: HEADER_LEN..HEADER_LEN + frame_len,
        })
    }
}

fn header_drop(error: HeaderError) -> DropReason {
    match error {
        HeaderError::Short => DropReason::Short,
        HeaderError::UnknownType => DropReason::UnknownType,
        HeaderError::BadVersion => DropReason::BadVersion,
        HeaderError::Reserved => DropReason::BadReserved,
        HeaderError::Oversized => DropReason::OversizedDatagram,
    }
}

fn refusal_drop(refusal: KeyRefusal) -> DropReason {
    match refusal {
        KeyRefusal::Stale => DropReason::StaleKey,
        KeyRefusal::BadTag => DropReason::BadTag,
        KeyRefusal::Replay(ReplayReject::Replayed) => DropReason::Replayed,
        KeyRefusal::Replay(ReplayReject::TooOld) => DropReason::TooOld,
    }
}
