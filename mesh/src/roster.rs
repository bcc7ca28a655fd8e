//! The mesh's members as last observed, shared by every part that asks
//! "who is there" on a timer or per query (services, the edge, DNS)
//! instead of each building it again. The failure detector's observer
//! ([`crate::liveness::spawn_observer`], every 250 ms) reads gossip's
//! cheap [`gossip::Node::activity`]; only when that shows a change (a
//! member up or down, a new record version, a new address) is the full
//! member list read and the roster rebuilt. A part that follows the
//! members subscribes: the version moves only on such a change.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use mesh_model::hosts::HostSet;

/// A member as the edge needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Peer id (hex).
    pub id: String,
    /// The address it is reached at.
    pub addr: IpAddr,
    /// Its (signed) member metadata.
    pub meta: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    hosts: Arc<HostSet>,
    members: Arc<Vec<Member>>,
}

/// What of [`gossip::Activity`] the roster shows: any change of it
/// rebuilds the roster.
type Fingerprint = Vec<(
    gossip::PeerId,
    bool,
    (u64, u64),
    Option<std::net::SocketAddr>,
)>;

fn fingerprint(activity: &[gossip::Activity]) -> Fingerprint {
    activity
        .iter()
        .map(|a| (a.id, a.state == gossip::PeerState::Up, a.record, a.remote))
        .collect()
}

pub struct Roster {
    me: String,
    name: String,
    seen: Mutex<Seen>,
    last: Mutex<Option<Fingerprint>>,
    version: watch::Sender<u64>,
}

impl Roster {
    /// A roster seeded from gossip's member list as it is now.
    pub fn new(me: &str, name: &str, members: &[gossip::Member]) -> Roster {
        Roster {
            me: me.to_string(),
            name: name.to_string(),
            seen: Mutex::new(Self::read(me, name, members)),
            last: Mutex::new(None),
            version: watch::channel(0).0,
        }
    }

    fn read(me: &str, name: &str, members: &[gossip::Member]) -> Seen {
        Seen {
            hosts: Arc::new(HostSet::from_members(me, name, members)),
            members: Arc::new(
                members
                    .iter()
                    .map(|m| Member {
                        id: m.id.to_hex(),
                        addr: m.addr.ip(),
                        meta: m.meta.clone(),
                    })
                    .collect(),
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a look at the members' `activity`; reads the full list with
    /// `members` only if it shows a change.
    pub fn look(
        &self,
        activity: &[gossip::Activity],
        members: impl FnOnce() -> Vec<gossip::Member>,
    ) {
        let print = fingerprint(activity);
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if last.as_ref() == Some(&print) {
                return;
            }
            *last = Some(print);
        }
        self.observe(&members());
    }

    /// Takes a new member list; followers are told only of a change.
    pub fn observe(&self, members: &[gossip::Member]) {
        let next = Self::read(&self.me, &self.name, members);
        let mut seen = self.lock();
        if *seen != next {
            *seen = next;
            drop(seen);
            self.version.send_modify(|v| *v += 1);
        }
    }

    /// The hosts, this one included, as last observed.
    pub fn hosts(&self) -> Arc<HostSet> {
        self.lock().hosts.clone()
    }

    /// The other members, as last observed.
    pub fn members(&self) -> Arc<Vec<Member>> {
        self.lock().members.clone()
    }

    /// Moves whenever an observation differs from the one before.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gossip::{Member as GMember, PeerId, PeerState};
    use std::net::SocketAddr;

    fn member(id: u8, up: bool) -> GMember {
        let mut raw = [0u8; 32];
        raw[0] = id;
        GMember {
            id: PeerId(raw),
            name: format!("h{id}"),
            addr: SocketAddr::from(([10, 0, 0, id], 7800)),
            state: if up { PeerState::Up } else { PeerState::Down },
            rtt: None,
            key_generation: None,
            key_age: None,
            incarnation: 1,
            meta: BTreeMap::new(),
            bytes_sent: 0,
            bytes_received: id as u64,
            relay: None,
            relay_name: None,
            tcp: false,
        }
    }

    #[test]
    fn followers_hear_of_changes_only() {
        let r = Roster::new("me", "here", &[member(1, true)]);
        let mut rx = r.subscribe();
        // Counters move on every look; the roster does not.
        let mut again = member(1, true);
        again.bytes_received = 99;
        r.observe(&[again]);
        assert!(!rx.has_changed().unwrap());
        r.observe(&[member(1, false)]);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        assert!(!r.hosts().live().contains(&member(1, false).id.to_hex()));
        r.observe(&[member(1, false), member(2, true)]);
        assert!(rx.has_changed().unwrap());
        assert_eq!(r.members().len(), 2);
    }

    fn activity(m: &GMember, version: u64) -> gossip::Activity {
        gossip::Activity {
            id: m.id,
            state: m.state,
            relayed: false,
            bytes_received: m.bytes_received,
            record: (m.incarnation, version),
            remote: Some(m.addr),
        }
    }

    #[test]
    fn the_member_list_is_read_only_when_activity_shows_a_change() {
        let r = Roster::new("me", "here", &[]);
        let reads = std::cell::Cell::new(0);
        let read = |list: Vec<GMember>| {
            reads.set(reads.get() + 1);
            list
        };
        let (a, b) = (member(1, true), member(2, true));
        r.look(&[activity(&a, 1)], || read(vec![a.clone()]));
        assert_eq!((reads.get(), r.members().len()), (1, 1));
        // The same activity (counters aside): nothing read.
        let mut busier = activity(&a, 1);
        busier.bytes_received += 1000;
        r.look(&[busier], || read(vec![a.clone()]));
        assert_eq!(reads.get(), 1);
        // A new record version, a new member, a member down: read again.
        r.look(&[activity(&a, 2)], || read(vec![a.clone()]));
        r.look(&[activity(&a, 2), activity(&b, 1)], || {
            read(vec![a.clone(), b.clone()])
        });
        let down = member(2, false);
        r.look(&[activity(&a, 2), activity(&down, 1)], || {
            read(vec![a.clone(), down.clone()])
        });
        assert_eq!(reads.get(), 4);
        assert_eq!(r.hosts().live().len(), 2, "this host and a");
    }
}
