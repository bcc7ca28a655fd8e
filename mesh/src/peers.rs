//! Glue between membership and the data plane: gossip tells us about peers
//! and their session keys; we give each peer a small data-plane handle and
//! pass everything on. A peer that is down is in no network's flood list
//! until it is up again; a peer removed for good leaves the data plane and
//! is not let back in.

use dataplane::{Dataplane, Engine, NetworkId, PeerIdx};
use gossip::{PeerId, PeerInfo, PeerObserver, SessionKeys};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::{info, warn};

/// What the table needs of a data plane (the running one, or a bare
/// [`Engine`] in tests).
pub trait PeerPlane: Send + Sync + 'static {
    fn upsert_peer(&self, peer: PeerIdx, endpoint: SocketAddr, networks: &[NetworkId]);
    fn remove_peer(&self, peer: PeerIdx);
    fn set_peer_down(&self, peer: PeerIdx, down: bool);
    fn install_keys(&self, peer: PeerIdx, keys: dataplane::SessionKeys, send_now: bool);
    fn confirm_keys(&self, peer: PeerIdx, generation: u64);
    /// Names the peer on relay envelopes.
    fn set_peer_tag(&self, peer: PeerIdx, tag: dataplane::wire::HostTag);
    /// The peer's further data addresses (its `data_addrs`).
    fn set_candidates(&self, peer: PeerIdx, addrs: &[SocketAddr]);
    /// The peer says it is behind a NAT (meta `data_nat`).
    fn set_peer_nat(&self, peer: PeerIdx, nat: bool);
    /// Where the peer's TCP fallback link takes datagrams (`None`: none).
    fn set_fallback(&self, _peer: PeerIdx, _addr: Option<SocketAddr>) {}
    /// The peer reads compact relay envelopes (its protocol range meets
    /// ours at [`gossip::protocol::COMPACT_ENVELOPES`] or later).
    fn set_peer_compact_envelopes(&self, peer: PeerIdx, compact: bool);
}

impl PeerPlane for Dataplane {
    fn upsert_peer(&self, peer: PeerIdx, endpoint: SocketAddr, networks: &[NetworkId]) {
        Dataplane::upsert_peer(self, peer, endpoint, networks)
    }
    fn remove_peer(&self, peer: PeerIdx) {
        Dataplane::remove_peer(self, peer)
    }
    fn set_peer_down(&self, peer: PeerIdx, down: bool) {
        Dataplane::set_peer_down(self, peer, down)
    }
    fn install_keys(&self, peer: PeerIdx, keys: dataplane::SessionKeys, send_now: bool) {
        Dataplane::install_keys(self, peer, keys, send_now)
    }
    fn confirm_keys(&self, peer: PeerIdx, generation: u64) {
        Dataplane::confirm_keys(self, peer, generation)
    }
    fn set_peer_tag(&self, peer: PeerIdx, tag: dataplane::wire::HostTag) {
        Dataplane::set_peer_tag(self, peer, tag)
    }
    fn set_candidates(&self, peer: PeerIdx, addrs: &[SocketAddr]) {
        Dataplane::set_candidates(self, peer, addrs)
    }
    fn set_peer_nat(&self, peer: PeerIdx, nat: bool) {
        Dataplane::set_peer_nat(self, peer, nat)
    }
    fn set_fallback(&self, peer: PeerIdx, addr: Option<SocketAddr>) {
        Dataplane::set_fallback(self, peer, addr)
    }
    fn set_peer_compact_envelopes(&self, peer: PeerIdx, compact: bool) {
        Dataplane::set_peer_compact_envelopes(self, peer, compact)
    }
}

impl<T: PeerPlane> PeerPlane for Arc<T> {
    fn upsert_peer(&self, peer: PeerIdx, endpoint: SocketAddr, networks: &[NetworkId]) {
        (**self).upsert_peer(peer, endpoint, networks)
    }
    fn remove_peer(&self, peer: PeerIdx) {
        (**self).remove_peer(peer)
    }
    fn set_peer_down(&self, peer: PeerIdx, down: bool) {
        (**self).set_peer_down(peer, down)
    }
    fn install_keys(&self, peer: PeerIdx, keys: dataplane::SessionKeys, send_now: bool) {
        (**self).install_keys(peer, keys, send_now)
    }
    fn confirm_keys(&self, peer: PeerIdx, generation: u64) {
        (**self).confirm_keys(peer, generation)
    }
    fn set_peer_tag(&self, peer: PeerIdx, tag: dataplane::wire::HostTag) {
        (**self).set_peer_tag(peer, tag)
    }
    fn set_candidates(&self, peer: PeerIdx, addrs: &[SocketAddr]) {
        (**self).set_candidates(peer, addrs)
    }
    fn set_peer_nat(&self, peer: PeerIdx, nat: bool) {
        (**self).set_peer_nat(peer, nat)
    }
    fn set_fallback(&self, peer: PeerIdx, addr: Option<SocketAddr>) {
        (**self).set_fallback(peer, addr)
    }
    fn set_peer_compact_envelopes(&self, peer: PeerIdx, compact: bool) {
        (**self).set_peer_compact_envelopes(peer, compact)
    }
}

impl PeerPlane for Engine {
    fn upsert_peer(&self, peer: PeerIdx, endpoint: SocketAddr, networks: &[NetworkId]) {
        Engine::upsert_peer(self, peer, Some(endpoint), networks)
    }
    fn remove_peer(&self, peer: PeerIdx) {
        Engine::remove_peer(self, peer)
    }
    fn set_peer_down(&self, peer: PeerIdx, down: bool) {
        Engine::set_peer_down(self, peer, down)
    }
    fn install_keys(&self, peer: PeerIdx, keys: dataplane::SessionKeys, send_now: bool) {
        Engine::install_keys(self, peer, &keys, send_now, Instant::now())
    }
    fn confirm_keys(&self, peer: PeerIdx, generation: u64) {
        Engine::confirm_keys(self, peer, generation);
    }
    fn set_peer_tag(&self, peer: PeerIdx, tag: dataplane::wire::HostTag) {
        Engine::set_peer_tag(self, peer, tag)
    }
    fn set_candidates(&self, peer: PeerIdx, addrs: &[SocketAddr]) {
        Engine::set_candidates(self, peer, addrs)
    }
    fn set_peer_nat(&self, peer: PeerIdx, nat: bool) {
        Engine::set_peer_nat(self, peer, nat)
    }
    fn set_fallback(&self, peer: PeerIdx, addr: Option<SocketAddr>) {
        Engine::set_fallback(self, peer, addr)
    }
    fn set_peer_compact_envelopes(&self, peer: PeerIdx, compact: bool) {
        Engine::set_peer_compact_envelopes(self, peer, compact)
    }
}

/// Key under which a host advertises its data-plane UDP port.
pub const META_DATA_PORT: &str = "data_port";
/// Key under which a host advertises where its peers see its data port
/// (reflexive addresses, comma-separated), for NAT traversal.
pub const META_DATA_ADDRS: &str = "data_addrs";
/// Key (`1` when present) under which a host says its data port is behind
/// a NAT: peers then send to it from their data port, the one port its
/// NAT has mappings for (probes go from there).
pub const META_DATA_NAT: &str = "data_nat";

/// A host's tag on relay envelopes: the first 8 bytes of its identity.
pub fn host_tag(peer: &PeerId) -> dataplane::wire::HostTag {
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&peer.0[..8]);
    tag
}

/// The addresses in a `data_addrs` value; malformed entries are skipped
/// (the record is signed, but by a peer that may run another version).
pub fn parse_data_addrs(value: &str) -> Vec<SocketAddr> {
    value
        .split(',')
        .filter_map(|a| a.trim().parse().ok())
        .take(8)
        .collect()
}

#[derive(Debug, Clone)]
struct PeerEntry {
    idx: PeerIdx,
    data_endpoint: Option<SocketAddr>,
    /// Connected now; only then is it sent floods.
    up: bool,
}

/// A network realised on this host, and the hosts it is restricted to
/// (empty: every host).
#[derive(Debug, Clone)]
pub struct NetworkScope {
    pub id: NetworkId,
    pub hosts: Vec<String>,
}

#[derive(Default)]
struct Table {
    peers: HashMap<PeerId, PeerEntry>,
    next_idx: PeerIdx,
    networks: Vec<NetworkScope>,
    /// Removed for good: ignored from now on.
    removed: HashSet<PeerId>,
}

impl Table {
    /// The networks `peer` may carry now: frames of a restricted network
    /// are never sent to (nor accepted from) a host outside it, and a peer
    /// that is down carries none.
    fn networks_of(&self, peer: &PeerId) -> Vec<NetworkId> {
        if !self.peers.get(peer).is_some_and(|e| e.up) {
            return Vec::new();
        }
        let hex = peer.to_hex();
        self.networks
            .iter()
            .filter(|n| n.hosts.is_empty() || n.hosts.contains(&hex))
            .map(|n| n.id)
            .collect()
    }
}

/// Implements [`PeerObserver`]; called synchronously by gossip, so every
/// method is a few map operations and a call into the data plane.
pub struct PeerTable<P: PeerPlane = Dataplane> {
    dp: P,
    table: Mutex<Table>,
    /// Bumped when a peer gets or loses its handle (see [`Self::subscribe`]).
    handles: tokio::sync::watch::Sender<u64>,
    /// Data over TCP fallback links ([`Self::enable_tcp_fallback`]).
    tcp: std::sync::OnceLock<crate::tcp_shim::TcpShims>,
}

impl<P: PeerPlane> PeerTable<P> {
    pub fn new(dp: P) -> Arc<PeerTable<P>> {
        Arc::new(PeerTable {
            dp,
            table: Mutex::new(Table {
                next_idx: 1,
                ..Table::default()
            }),
            handles: tokio::sync::watch::channel(0).0,
            tcp: std::sync::OnceLock::new(),
        })
    }

    /// Carries the data of peers whose link is over TCP through local
    /// sockets to the data plane bound at `data_local` (`tcp_shim.rs`).
    pub fn enable_tcp_fallback(&self, data_local: SocketAddr) {
        let _ = self.tcp.set(crate::tcp_shim::TcpShims::new(data_local));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere must not take the data plane's glue down with it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry<'a>(&self, t: &'a mut Table, peer: &PeerId) -> &'a mut PeerEntry {
        if !t.peers.contains_key(peer) {
            let idx = t.next_idx;
            t.next_idx = t.next_idx.wrapping_add(1).max(1);
            self.dp.set_peer_tag(idx, host_tag(peer));
            t.peers.insert(
                *peer,
                PeerEntry {
                    idx,
                    data_endpoint: None,
                    up: false,
                },
            );
            self.handles.send_modify(|n| *n += 1);
        }
        t.peers.get_mut(peer).expect("inserted above")
    }

    /// The networks realised here; each peer carries those it may.
    pub fn set_networks(&self, networks: Vec<NetworkScope>) {
        let mut t = self.lock();
        t.networks = networks;
        for (id, e) in &t.peers {
            if let Some(ep) = e.data_endpoint {
                self.dp.upsert_peer(e.idx, ep, &t.networks_of(id));
            }
        }
    }

    pub fn data_endpoint(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.lock().peers.get(peer).and_then(|e| e.data_endpoint)
    }

    /// Changes whenever a peer gets a data-plane handle or loses it: what
    /// is keyed by handles (pinned MACs) is then recomputed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.handles.subscribe()
    }

    pub fn handle(&self, peer: &PeerId) -> Option<PeerIdx> {
        self.lock().peers.get(peer).map(|e| e.idx)
    }

    /// Passes what a peer's record says about its data path on (it
    /// changes after peer_up): `data_addrs`, `data_nat` and its protocol
    /// range.
    pub fn update_paths(&self, peer: &PeerId, meta: &BTreeMap<String, String>) {
        if let Some(idx) = self.handle(peer) {
            self.dp.set_candidates(idx, &peer_data_addrs(meta));
            self.dp.set_peer_nat(idx, meta.contains_key(META_DATA_NAT));
            self.dp
                .set_peer_compact_envelopes(idx, reads_compact_envelopes(meta));
        }
    }

    /// A host removed for good: out of the data plane, keys and all, and
    /// whatever gossip still reports about it is ignored.
    pub fn forget(&self, peer: &PeerId) {
        let mut t = self.lock();
        if !t.removed.insert(*peer) {
            return;
        }
        if let Some(shims) = self.tcp.get() {
            shims.detach(peer);
        }
        if let Some(e) = t.peers.remove(peer) {
            self.dp.remove_peer(e.idx);
            self.handles.send_modify(|n| *n += 1);
            info!(peer = %peer, "removed peer left the data plane");
        }
    }
}

impl<P: PeerPlane> PeerObserver for PeerTable<P> {
    fn peer_up(&self, peer: &PeerInfo) {
        let port = peer
            .meta
            .get(META_DATA_PORT)
            .and_then(|p| p.parse::<u16>().ok());
        let Some(port) = port else {
            warn!(peer = %peer.id, "peer advertises no data port; cannot send it frames");
            return;
        };
        // The data plane listens on the address the peer's control plane
        // answered from, so it works without any address configuration.
        // Its reflexive data addresses are probed too (NAT traversal); with
        // no usable control address (control relayed) they are all there is.
        let data_addrs = peer_data_addrs(&peer.meta);
        let endpoint = match peer.remote.ip().is_unspecified() {
            false => SocketAddr::new(peer.remote.ip(), port),
            true => match data_addrs.first() {
                Some(addr) => *addr,
                None => {
                    warn!(peer = %peer.id, "no data address known for peer");
                    return;
                }
            },
        };
        let mut t = self.lock();
        if t.removed.contains(&peer.id) {
            return;
        }
        let e = self.entry(&mut t, &peer.id);
        e.data_endpoint = Some(endpoint);
        e.up = true;
        let idx = e.idx;
        self.dp.upsert_peer(idx, endpoint, &t.networks_of(&peer.id));
        self.dp.set_candidates(idx, &data_addrs);
        self.dp
            .set_peer_compact_envelopes(idx, reads_compact_envelopes(&peer.meta));
        self.dp.set_peer_down(idx, false);
        info!(peer = %peer.id, name = %peer.name, %endpoint, "peer up");
    }

    fn peer_down(&self, peer: &PeerId) {
        // Out of every flood list (no more sealed copies of broadcasts for
        // a host that cannot answer). Its memberships, learned MACs and keys
        // stay: unicast keeps flowing if only the control connection broke,
        // it comes back with `peer_up`, and the keys expire by age.
        let mut t = self.lock();
        if let Some(e) = t.peers.get_mut(peer) {
            e.up = false;
            self.dp.set_peer_down(e.idx, true);
        }
        info!(peer = %peer, "peer down");
    }

    fn install_keys(&self, peer: &PeerId, keys: SessionKeys, send_now: bool) {
        let mut t = self.lock();
        if t.removed.contains(peer) {
            return;
        }
        let idx = self.entry(&mut t, peer).idx;
        drop(t);
        self.dp.install_keys(
            idx,
            dataplane::SessionKeys {
                generation: keys.generation,
                local_index: keys.local_index,
                remote_index: keys.remote_index,
                send_key: keys.send_key,
                recv_key: keys.recv_key,
                cipher: dataplane_cipher(keys.cipher),
            },
            send_now,
        );
    }

    fn confirm_keys(&self, peer: &PeerId, generation: u64) {
        if let Some(idx) = self.handle(peer) {
            self.dp.confirm_keys(idx, generation);
        }
    }

    fn tcp_link(&self, peer: &PeerId, link: Option<gossip::tcp::DatagramLink>) {
        let Some(shims) = self.tcp.get() else { return };
        match link {
            Some(link) => {
                let Some(idx) = self.handle(peer) else { return };
                let addr = shims.attach(*peer, link);
                self.dp.set_fallback(idx, addr);
            }
            // The shim goes even when the peer has no handle any more (a
            // removed host is forgotten before its link closes).
            None => {
                if shims.detach(peer) {
                    if let Some(idx) = self.handle(peer) {
                        self.dp.set_fallback(idx, None);
                    }
                }
            }
        }
    }

    fn datagram(&self, peer: &PeerId, datagram: bytes::Bytes) {
        if let Some(shims) = self.tcp.get() {
            shims.deliver(peer, datagram);
        }
    }
}

/// A peer's reflexive data addresses (meta `data_addrs`).
fn peer_data_addrs(meta: &BTreeMap<String, String>) -> Vec<SocketAddr> {
    meta.get(META_DATA_ADDRS)
        .map(|v| parse_data_addrs(v))
        .unwrap_or_default()
}

/// Whether the peer's advertised protocol range meets ours at the version
/// of compact relay envelopes or later. A peer advertising no readable
/// range is an older build: it gets the full form every version reads.
fn reads_compact_envelopes(meta: &BTreeMap<String, String>) -> bool {
    crate::version::peer_range(meta)
        .is_some_and(|theirs| gossip::protocol::meets(theirs, gossip::protocol::COMPACT_ENVELOPES))
}

/// The data plane's name for a cipher the control plane negotiated.
fn dataplane_cipher(cipher: gossip::Cipher) -> dataplane::Cipher {
    match cipher {
        gossip::Cipher::ChaCha20Poly1305 => dataplane::Cipher::ChaCha20Poly1305,
        gossip::Cipher::Aes256Gcm => dataplane::Cipher::Aes256Gcm,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::pool::BufPool;
    use dataplane::DropReason;
    use std::collections::BTreeMap;

    #[test]
    fn compact_envelopes_go_to_peers_whose_range_reaches_them() {
        let meta = |range: Option<&str>| {
            let mut m = BTreeMap::new();
            if let Some(r) = range {
                m.insert(gossip::protocol::META_PROTOCOL.to_string(), r.to_string());
            }
            m
        };
        // Release 0.3.0 advertises 1-1; no range at all is an older build.
        assert!(!reads_compact_envelopes(&meta(Some("1-1"))));
        assert!(!reads_compact_envelopes(&meta(None)));
        assert!(!reads_compact_envelopes(&meta(Some("junk"))));
        assert!(reads_compact_envelopes(&meta(Some("1-2"))));
        assert!(reads_compact_envelopes(&meta(Some("2-9"))));
        // A range that does not meet ours gets nothing new either.
        assert!(!reads_compact_envelopes(&meta(Some("90-99"))));
    }

    #[test]
    fn peers_are_told_which_envelope_form_they_read_from_their_record() {
        let (t, engine) = table();
        let with_range = |n: u8, range: &str| {
            let mut p = info(n);
            p.meta.insert(
                gossip::protocol::META_PROTOCOL.to_string(),
                range.to_string(),
            );
            p
        };
        let compact = |n: u8| {
            let idx = t.handle(&info(n).id).unwrap();
            engine.stats(Instant::now()).peers[&idx].compact_envelopes
        };
        t.peer_up(&with_range(2, "1-2"));
        t.peer_up(&with_range(3, "1-1"));
        t.peer_up(&info(4));
        assert!(compact(2));
        assert!(!compact(3), "release 0.3.0 gets the full form");
        assert!(!compact(4), "no advertised range: an older build");
        // Its record changes (upgraded, or rolled back): the sync passes it on.
        t.update_paths(&info(3).id, &with_range(3, "1-2").meta);
        t.update_paths(&info(2).id, &with_range(2, "1-1").meta);
        assert!(compact(3));
        assert!(!compact(2));
    }

    const NET: NetworkId = NetworkId(7);

    fn info(n: u8) -> PeerInfo {
        PeerInfo {
            id: PeerId([n; 32]),
            name: format!("h{n}"),
            remote: SocketAddr::from(([127, 0, 0, n], 7800)),
            relay: None,
            meta: BTreeMap::from([(META_DATA_PORT.to_string(), "7801".to_string())]),
        }
    }

    /// How many peers a broadcast on `NET` is sealed for: the flood list.
    /// None of the peers has keys, so each copy is counted as a `no_key` drop.
    fn flood_size(engine: &Engine) -> u64 {
        let before = engine.drops().get(DropReason::NoKey);
        let mut pool = BufPool::new(2048, 4);
        let mut buf = pool.get();
        let mut frame = vec![0xffu8; 6];
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        frame.resize(64, 0);
        assert!(buf.fill_frame(&frame));
        let mut out = Vec::new();
        engine.seal_frame(NET, buf, Instant::now(), &mut pool, &mut out);
        engine.drops().get(DropReason::NoKey) - before + out.len() as u64
    }

    fn table() -> (Arc<PeerTable<Arc<Engine>>>, Arc<Engine>) {
        let engine = Arc::new(Engine::new(Instant::now()));
        engine.add_network(NET);
        let t = PeerTable::new(engine.clone());
        t.set_networks(vec![NetworkScope {
            id: NET,
            hosts: vec![],
        }]);
        (t, engine)
    }

    #[test]
    fn a_down_peer_leaves_the_flood_lists_and_comes_back_when_up() {
        let (t, engine) = table();
        t.peer_up(&info(2));
        t.peer_up(&info(3));
        assert_eq!(flood_size(&engine), 2);
        t.peer_down(&info(2).id);
        assert_eq!(flood_size(&engine), 1);
        // A change of networks while it is down does not bring it back.
        t.set_networks(vec![NetworkScope {
            id: NET,
            hosts: vec![],
        }]);
        assert_eq!(flood_size(&engine), 1);
        t.peer_up(&info(2));
        assert_eq!(flood_size(&engine), 2);
    }

    #[test]
    fn subscribers_hear_of_new_and_forgotten_handles() {
        let (t, _engine) = table();
        let mut rx = t.subscribe();
        rx.mark_unchanged();
        t.peer_up(&info(2));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        // Up again: same handle, nothing keyed by handles changes.
        t.peer_up(&info(2));
        assert!(!rx.has_changed().unwrap());
        t.forget(&info(2).id);
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn a_removed_peer_leaves_for_good() {
        let (t, engine) = table();
        t.peer_up(&info(2));
        t.peer_up(&info(3));
        t.peer_down(&info(2).id);
        t.forget(&info(2).id);
        assert_eq!(flood_size(&engine), 1);
        assert!(t.handle(&info(2).id).is_none());
        // Late news from gossip does not bring it back.
        t.peer_up(&info(2));
        assert_eq!(flood_size(&engine), 1);
        assert!(t.handle(&info(2).id).is_none());
        assert_eq!(engine.stats(Instant::now()).peers.len(), 1);
    }
}
