//! One simulated host: the real membership table, one replicated channel
//! and the real [`Link`] of every connection, with the host-wide glue the
//! node does around them (flooding changed records, relaying channel
//! deltas when the topology needs it) collected as [`Effects`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::link::{Link, Replica};
use crate::membership::{MemberRecord, MembershipTable};
use crate::state::{LwwMap, Mergeable};
use crate::wire::{self, Digest};
use crate::PeerId;

/// The one channel every host holds (stands for networks, endpoints, …).
pub const CHANNEL: &str = "records";
pub type Records = LwwMap<String, String>;

pub(super) struct SimLink {
    pub link: Link,
    /// Tells this connection's frames from an earlier one's.
    pub conn: u64,
    pub since: Duration,
    /// Last packet from the peer, ACKs included (QUIC's idle timer).
    pub last_rx: Duration,
    /// When the link's timer event is scheduled (an older event is stale).
    pub timer_at: Instant,
}

pub(super) struct SimHost {
    pub alive: bool,
    pub table: MembershipTable,
    pub channel: Records,
    /// Peer index → the link we are up on.
    pub links: HashMap<usize, SimLink>,
    /// Peers a dial is in flight to.
    pub dialing: HashSet<usize>,
    pub backoff: HashMap<usize, Duration>,
    /// Peers with data-plane keys installed on the current link.
    pub keys: HashSet<usize>,
    /// Bounded topology: the neighbours wanted, and the table size they
    /// were computed for.
    pub wanted: HashSet<usize>,
    pub wanted_for: usize,
    pub sent_bytes: u64,
    pub sent_packets: u64,
}

impl SimHost {
    pub fn new(record: MemberRecord) -> SimHost {
        SimHost {
            alive: false,
            table: MembershipTable::new(record),
            channel: Records::default(),
            links: HashMap::new(),
            dialing: HashSet::new(),
            backoff: HashMap::new(),
            keys: HashSet::new(),
            wanted: HashSet::new(),
            wanted_for: 0,
            sent_bytes: 0,
            sent_packets: 0,
        }
    }
}

/// What merging asked the host to do besides the link's own replies.
#[derive(Default)]
pub(super) struct Effects {
    /// Records to flood to every link but the one named.
    pub members: Vec<(Option<PeerId>, Vec<MemberRecord>)>,
    /// Channel payloads to relay to every link but the one named.
    pub channel: Vec<(PeerId, Vec<u8>)>,
}

/// A host's replicated state as its links see it.
pub(super) struct HostReplica<'a> {
    pub table: &'a mut MembershipTable,
    pub channel: &'a mut Records,
    /// Relay channel changes onward (needed when not everyone is a neighbour).
    pub relay: bool,
    pub effects: &'a mut Effects,
}

impl Replica for HostReplica<'_> {
    fn digest(&self) -> Digest {
        Digest {
            members: self.table.digest(),
            channels: vec![(CHANNEL.into(), wire::state_hash(&self.channel.encode()))],
        }
    }

    fn member_records(&self) -> Vec<MemberRecord> {
        self.table.records().cloned().collect()
    }

    fn merge_members(&mut self, from: PeerId, records: Vec<MemberRecord>) {
        let outcome = self.table.merge(records);
        if !outcome.changed.is_empty() {
            // As the node does: a refuted self record goes back to the source too.
            let except = (!outcome.refuted_self).then_some(from);
            self.effects.members.push((except, outcome.changed));
        }
    }

    fn channel_state(&self, name: &str) -> Option<Vec<u8>> {
        (name == CHANNEL).then(|| self.channel.encode())
    }

    fn merge_channel(&mut self, from: PeerId, name: &str, data: Vec<u8>) -> bool {
        if name != CHANNEL {
            return false;
        }
        let Ok(incoming) = Records::decode(&data) else {
            return true;
        };
        if self.channel.merge(&incoming) && self.relay {
            self.effects.channel.push((from, data));
        }
        true
    }

    /// Secret rotation is not part of the scale model.
    fn offer_secret(&mut self, _from: PeerId, _epoch: u64, _token: &str) {}
}
