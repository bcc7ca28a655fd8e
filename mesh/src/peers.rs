//! Glue between membership and the data plane: gossip tells us about peers
//! and their session keys; we give each peer a small data-plane handle and
//! pass everything on.

use dataplane::{Dataplane, NetworkId, PeerIdx};
use gossip::{PeerId, PeerInfo, PeerObserver, SessionKeys};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tracing::{info, warn};

/// Key under which a host advertises its data-plane UDP port.
pub const META_DATA_PORT: &str = "data_port";

#[derive(Debug, Clone)]
struct PeerEntry {
    idx: PeerIdx,
    data_endpoint: Option<SocketAddr>,
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
}

impl Table {
    /// The networks `peer` may carry: frames of a restricted network are
    /// never sent to (nor accepted from) a host outside it.
    fn networks_of(&self, peer: &PeerId) -> Vec<NetworkId> {
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
pub struct PeerTable {
    dp: Dataplane,
    table: Mutex<Table>,
}

impl PeerTable {
    pub fn new(dp: Dataplane) -> Arc<PeerTable> {
        Arc::new(PeerTable {
            dp,
            table: Mutex::new(Table {
                next_idx: 1,
                ..Table::default()
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A panic elsewhere must not take the data plane's glue down with it.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entry<'a>(t: &'a mut Table, peer: &PeerId) -> &'a mut PeerEntry {
        if !t.peers.contains_key(peer) {
            let idx = t.next_idx;
            t.next_idx = t.next_idx.wrapping_add(1).max(1);
            t.peers.insert(
                *peer,
                PeerEntry {
                    idx,
                    data_endpoint: None,
                },
            );
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

    pub fn handle(&self, peer: &PeerId) -> Option<PeerIdx> {
        self.lock().peers.get(peer).map(|e| e.idx)
    }
}

impl PeerObserver for PeerTable {
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
        let endpoint = SocketAddr::new(peer.remote.ip(), port);
        let mut t = self.lock();
        let e = Self::entry(&mut t, &peer.id);
        e.data_endpoint = Some(endpoint);
        let idx = e.idx;
        self.dp.upsert_peer(idx, endpoint, &t.networks_of(&peer.id));
        info!(peer = %peer.id, name = %peer.name, %endpoint, "peer up");
    }

    fn peer_down(&self, peer: &PeerId) {
        // Keep the entry and its keys: in-flight frames still decrypt and
        // the keys expire by age on their own. Sends stop when the peer's
        // connection is gone because no new keys arrive.
        info!(peer = %peer, "peer down");
    }

    fn install_keys(&self, peer: &PeerId, keys: SessionKeys, send_now: bool) {
        let mut t = self.lock();
        let idx = Self::entry(&mut t, peer).idx;
        drop(t);
        self.dp.install_keys(
            idx,
            dataplane::SessionKeys {
                generation: keys.generation,
                local_index: keys.local_index,
                remote_index: keys.remote_index,
                send_key: keys.send_key,
                recv_key: keys.recv_key,
                cipher: crate::config::dataplane_cipher(keys.cipher),
            },
            send_now,
        );
    }

    fn confirm_keys(&self, peer: &PeerId, generation: u64) {
        if let Some(idx) = self.handle(peer) {
            self.dp.confirm_keys(idx, generation);
        }
    }
}
