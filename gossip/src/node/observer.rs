//! How the node tells the data plane about peers and their keys.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;

use crate::tcp::DatagramLink;
use crate::{PeerId, SessionKeys};

/// What the data plane learns about a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: PeerId,
    pub name: String,
    /// The QUIC address we are connected to.
    pub remote: SocketAddr,
    pub meta: BTreeMap<String, String>,
    /// Control traffic goes through this member (no direct QUIC link; see
    /// `gossip::relay`); `None`: a direct link. `remote` is then the
    /// peer's last known address.
    pub relay: Option<PeerId>,
}

/// Callbacks into the data plane.
///
/// Called synchronously from gossip tasks, in causal order per peer
/// (`peer_up` before its keys). `peer_up` and `peer_down` are called under
/// the node's member lock, so that the up and down of successive links of
/// one peer can never arrive out of order. So every callback must be cheap
/// and non-blocking, and must not call back into the [`Node`](crate::Node).
/// `peer_up` may be called again for a peer already up when its connection
/// was replaced (e.g. it restarted); treat it as an update.
pub trait PeerObserver: Send + Sync + 'static {
    fn peer_up(&self, peer: &PeerInfo);
    fn peer_down(&self, peer: &PeerId);
    fn install_keys(&self, peer: &PeerId, keys: SessionKeys, send_now: bool);
    fn confirm_keys(&self, peer: &PeerId, generation: u64);

    /// The peer's link is now over the TCP fallback (`Some`: where sealed
    /// datagrams for it may go) or not any more (`None`). Called after
    /// each `peer_up` and before `peer_down`.
    fn tcp_link(&self, _peer: &PeerId, _link: Option<DatagramLink>) {}

    /// A sealed data-plane datagram arrived on the peer's TCP link.
    fn datagram(&self, _peer: &PeerId, _datagram: Bytes) {}
}

/// An observer that ignores everything (tests, tools).
pub struct NoopObserver;

impl PeerObserver for NoopObserver {
    fn peer_up(&self, _: &PeerInfo) {}
    fn peer_down(&self, _: &PeerId) {}
    fn install_keys(&self, _: &PeerId, _: SessionKeys, _: bool) {}
    fn confirm_keys(&self, _: &PeerId, _: u64) {}
}
