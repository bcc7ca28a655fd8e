//! The two views of the other members: [`Node::members`], complete (names,
//! metadata, addresses, session and traffic figures) for status and for
//! rebuilding a roster, and [`Node::activity`], what a failure detector
//! reads several times a second without those copies: the link's state and
//! receive counter and the version of the member's record (so a reader
//! knows when [`Node::members`] would tell it something new). One walk
//! over the table serves both.

use std::net::SocketAddr;

use super::connection::LinkHandle;
use super::{lock, Member, Node};
use crate::membership::MemberRecord;
use crate::peers::{PeerSlot, Peers};
use crate::{PeerId, PeerState};

/// One other member's link activity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Activity {
    pub id: PeerId,
    /// As in [`Member::state`]: up through a relay counts as up.
    pub state: PeerState,
    /// Control traffic goes through a third member.
    pub relayed: bool,
    /// UDP bytes received over all connections with the member, ever.
    pub bytes_received: u64,
    /// The member record's (incarnation, version): it moves whenever
    /// the name, addresses or metadata change.
    pub record: (u64, u64),
    /// The direct connection's remote address, if there is one.
    pub remote: Option<SocketAddr>,
}

/// What both views read of one member's link.
struct Link<'a> {
    record: &'a MemberRecord,
    slot: Option<&'a PeerSlot<LinkHandle>>,
    conn: Option<&'a super::Conn>,
    /// The member relaying control traffic, when there is no connection.
    relay: Option<PeerId>,
    /// Up through a relay counts as up.
    state: PeerState,
}

impl Node {
    fn each_member<T>(&self, mut view: impl FnMut(Link<'_>, &Peers<LinkHandle>) -> T) -> Vec<T> {
        // Before `peers`: the lock order of `node/relay.rs`.
        let vias = lock(&self.inner.relay).vias();
        let peers = lock(&self.inner.peers);
        peers
            .table
            .others()
            .map(|record| {
                let slot = peers.slots.get(&record.id);
                let conn = slot.and_then(|s| s.link.as_ref()).map(|l| &l.handle.conn);
                let relay = vias.get(&record.id).copied().filter(|_| conn.is_none());
                let state = match relay {
                    Some(_) => PeerState::Up,
                    None => slot.map(|s| s.state()).unwrap_or(PeerState::Connecting),
                };
                let link = Link {
                    record,
                    slot,
                    conn,
                    relay,
                    state,
                };
                view(link, &peers)
            })
            .collect()
    }

    /// Every other known member (the local host is not included).
    pub fn members(&self) -> Vec<Member> {
        self.each_member(|l, peers| {
            let (record, slot) = (l.record, l.slot);
            let bytes = l.conn.map(|c| c.bytes());
            let addr = l
                .conn
                .map(|c| c.remote_address())
                .or_else(|| slot.and_then(|s| s.last_remote))
                .or_else(|| record.addrs.iter().find_map(|a| a.parse().ok()))
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            Member {
                id: record.id,
                name: record.name.clone(),
                addr,
                state: l.state,
                rtt: l.conn.and_then(|c| c.rtt()),
                key_generation: slot.and_then(|s| s.current_generation),
                key_age: slot.and_then(|s| s.key_installed_at.map(|t| t.elapsed())),
                incarnation: record.incarnation,
                meta: record.meta.clone(),
                bytes_sent: slot.map(|s| s.bytes_sent_closed).unwrap_or(0)
                    + bytes.map(|b| b.0).unwrap_or(0),
                bytes_received: slot.map(|s| s.bytes_received_closed).unwrap_or(0)
                    + bytes.map(|b| b.1).unwrap_or(0),
                relay: l.relay,
                tcp: l.conn.is_some_and(|c| c.is_tcp()),
                relay_name: l.relay.map(|r| {
                    peers
                        .table
                        .get(&r)
                        .map(|r| r.name.clone())
                        .unwrap_or_default()
                }),
            }
        })
    }

    /// Every other member's link activity (see [`Activity`]).
    pub fn activity(&self) -> Vec<Activity> {
        self.each_member(|l, _| Activity {
            id: l.record.id,
            state: l.state,
            relayed: l.relay.is_some(),
            bytes_received: l.slot.map(|s| s.bytes_received_closed).unwrap_or(0)
                + l.conn.map(|c| c.bytes().1).unwrap_or(0),
            record: (l.record.incarnation, l.record.version),
            remote: l.conn.map(|c| c.remote_address()),
        })
    }
}
