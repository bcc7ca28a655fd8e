//! What a failure detector reads about every member several times a
//! second, without the names, metadata and addresses [`Node::members`]
//! copies: the link's state and receive counter, and the version of the
//! member's record (so a reader knows when [`Node::members`] would tell
//! it something new).

use super::{lock, Node};
use crate::{PeerId, PeerState};

/// One other member's link activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    pub id: PeerId,
    /// As in [`super::Member::state`]: up through a relay counts as up.
    pub state: PeerState,
    /// Control traffic goes through a third member.
    pub relayed: bool,
    /// UDP bytes received over all connections with the member, ever.
    pub bytes_received: u64,
    /// The member record's (incarnation, version): it moves whenever
    /// the name, addresses or metadata change.
    pub record: (u64, u64),
    /// The direct connection's remote address, if there is one.
    pub remote: Option<std::net::SocketAddr>,
}

impl Node {
    /// Every other member's link activity (see [`Activity`]).
    pub fn activity(&self) -> Vec<Activity> {
        // Before `peers`: the lock order of `node/relay.rs`.
        let vias = lock(&self.inner.relay).vias();
        let peers = lock(&self.inner.peers);
        peers
            .table
            .others()
            .map(|record| {
                let slot = peers.slots.get(&record.id);
                let conn = slot.and_then(|s| s.link.as_ref()).map(|l| &l.handle.conn);
                let relayed = conn.is_none() && vias.contains_key(&record.id);
                let state = slot.map(|s| s.state()).unwrap_or(PeerState::Connecting);
                Activity {
                    id: record.id,
                    state: if relayed { PeerState::Up } else { state },
                    relayed,
                    bytes_received: slot.map(|s| s.bytes_received_closed).unwrap_or(0)
                        + conn.map(|c| c.stats().udp_rx.bytes).unwrap_or(0),
                    record: (record.incarnation, record.version),
                    remote: conn.map(|c| c.remote_address()),
                }
            })
            .collect()
    }
}
