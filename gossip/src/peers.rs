//! Who this host knows and how it stands with each (no I/O): the membership
//! table, one slot per peer — its current link, whether a dial loop runs,
//! key and byte bookkeeping — and the block list. The node keeps this behind
//! one lock; connections ask it whether they may stay, dial loops whether
//! to go on. `L` is the node's handle to a live connection.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::membership::{MemberRecord, MembershipTable};
use crate::PeerId;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Known but never connected yet.
    Connecting,
    Up,
    /// Was up; lost; being redialed.
    Down,
}

/// A connection from a peer that began this much after the link with it
/// came up is not a simultaneous open: a dial loop dials only while it has
/// no link (and drops a dial that crossed the peer's, `crossed_dial`), so
/// it says its dialer lost the older link (a false heartbeat timeout on a
/// loaded host, a NAT mapping that went away) while this end did not notice
/// yet. Refusing it kept the pair apart until this end's own detector gave
/// up: ~12 s of a new link every 0.5 s, refused, in the 50-host scale lab.
/// The ages are measured at each end, so the ends agree unless a pair
/// straddles the line (or one end runs a release without this rule); then
/// each keeps a different link, both are closed, and the next dial settles
/// it. (`meshctl join` to a seed already linked also replaces the link.)
pub const SIMULTANEOUS_OPEN: Duration = Duration::from_secs(3);

/// Which of two connections between the same hosts survives. Both hosts
/// evaluate this with the same inputs (the age up to measurement at each
/// end), so they keep the same connection.
/// - a newer incarnation of the peer always wins (the old link is stale);
/// - same dialer: the newer one wins (the dialer reconnected);
/// - a new one that began [`SIMULTANEOUS_OPEN`] or more after the existing
///   link came up (`existing_age`): the new one wins (its dialer lost the
///   old one);
/// - else (a simultaneous open): the one dialed by the lower peer id.
pub fn prefer_new_link(
    local: PeerId,
    remote: PeerId,
    existing: (PeerId, u64),
    new: (PeerId, u64),
    existing_age: Duration,
) -> bool {
    let (existing_dialer, existing_incarnation) = existing;
    let (new_dialer, new_incarnation) = new;
    if new_incarnation != existing_incarnation {
        return new_incarnation > existing_incarnation;
    }
    if new_dialer == existing_dialer || existing_age >= SIMULTANEOUS_OPEN {
        return true;
    }
    new_dialer == local.min(remote)
}

/// The connection a peer is up on.
pub(crate) struct Linked<L> {
    /// Tells this connection from a later one to the same peer.
    pub id: usize,
    pub handle: L,
    pub dialer: PeerId,
    /// The peer's incarnation when this link was established.
    pub incarnation: u64,
    /// Ours then: a link made after this host moved to a new incarnation
    /// (it restarted or roamed, see `node/addrs.rs`) replaces older ones,
    /// as the peer decides from our record's incarnation.
    pub local_incarnation: u64,
    /// Over the TCP fallback: any QUIC link replaces it.
    pub tcp: bool,
    /// When it was admitted (see [`SIMULTANEOUS_OPEN`]).
    pub since: Instant,
}

pub(crate) struct PeerSlot<L> {
    pub ever_up: bool,
    pub link: Option<Linked<L>>,
    pub last_remote: Option<SocketAddr>,
    /// A dial loop runs for this peer.
    pub dialing: bool,
    pub last_key_generation: u64,
    pub key_installed_at: Option<Instant>,
    pub current_generation: Option<u64>,
    pub bytes_sent_closed: u64,
    pub bytes_received_closed: u64,
}

impl<L> Default for PeerSlot<L> {
    fn default() -> Self {
        PeerSlot {
            ever_up: false,
            link: None,
            last_remote: None,
            dialing: false,
            last_key_generation: 0,
            key_installed_at: None,
            current_generation: None,
            bytes_sent_closed: 0,
            bytes_received_closed: 0,
        }
    }
}

impl<L> PeerSlot<L> {
    pub fn state(&self) -> PeerState {
        match (&self.link, self.ever_up) {
            (Some(_), _) => PeerState::Up,
            (None, true) => PeerState::Down,
            (None, false) => PeerState::Connecting,
        }
    }
}

/// An authenticated connection asking to become a peer's link.
pub(crate) struct Candidate<L> {
    pub id: usize,
    pub handle: L,
    pub dialer: PeerId,
    pub record: MemberRecord,
    pub remote_addr: SocketAddr,
    pub last_key_generation: u64,
    /// Over the TCP fallback (see `crate::tcp`); its remote address is not
    /// one to dial QUIC at (a dialer's is an ephemeral TCP port).
    pub tcp: bool,
    /// When its handshake began here (the acceptor: when the connection
    /// came in), so that a loaded host's late admission of a connection
    /// that began with a simultaneous open is still judged as one.
    pub started: Instant,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Blocked,
    /// The tie-break kept the existing link.
    Duplicate,
}

/// A candidate that became the peer's link.
pub(crate) struct Admission<L> {
    /// The link it replaced, to be closed.
    pub replaced: Option<L>,
    /// Member records the handshake's record changed (to flood).
    pub changed: Vec<MemberRecord>,
    pub record: Option<MemberRecord>,
    /// Where key generations continue from on the new link.
    pub last_key_generation: u64,
}

/// How many of its addresses an unproven member gets tried per round (see
/// [`DialRound::proven`]).
pub const MAX_UNPROVEN_ADDRS: usize = 4;

/// What one round of a dial loop tries.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DialRound {
    /// Addresses in order: the last one that worked first.
    pub candidates: Vec<String>,
    /// Whether this host ever had a link with the peer. A record proves only
    /// that its subject holds its key: any member can mint identities whose
    /// records point anywhere, so dials to members never reached are
    /// rationed (a few addresses each, a few at a time across all of them),
    /// and a flood of fake members cannot turn the mesh into a packet
    /// cannon aimed at chosen addresses.
    pub proven: bool,
}

pub(crate) struct Peers<L> {
    pub table: MembershipTable,
    pub slots: HashMap<PeerId, PeerSlot<L>>,
    blocked: HashSet<PeerId>,
    /// Test hook: direct connections refused, relayed control allowed
    /// (a firewall between two hosts rather than a partition).
    pub direct_blocked: HashSet<PeerId>,
    /// Something the members file holds changed since it was written.
    pub persist_dirty: bool,
}

impl<L> Peers<L> {
    pub fn new(table: MembershipTable) -> Self {
        Peers {
            table,
            slots: HashMap::new(),
            blocked: HashSet::new(),
            direct_blocked: HashSet::new(),
            persist_dirty: true,
        }
    }

    pub fn local(&self) -> PeerId {
        self.table.local().id
    }

    pub fn is_blocked(&self, peer: &PeerId) -> bool {
        self.blocked.contains(peer)
    }

    pub fn last_key_generation(&self, peer: &PeerId) -> u64 {
        self.slots
            .get(peer)
            .map(|s| s.last_key_generation)
            .unwrap_or(0)
    }

    /// Whether a connection this host dialed to `remote`, about to be
    /// offered to it, crossed a link that came up meanwhile from the other
    /// side: a dial started while there was no link and finished after the
    /// peer's dial did. Such a dial is dropped before the acceptor admits
    /// it; otherwise, once that link is older than [`SIMULTANEOUS_OPEN`]
    /// (a slow handshake on a loaded host), it would replace a working link
    /// as if this host had lost it. A dial that must replace the link (a new
    /// incarnation on either side, QUIC over the TCP fallback) is no
    /// crossing.
    pub fn crossed_dial(&self, remote: &PeerId, tcp: bool, remote_incarnation: u64) -> bool {
        let local = self.local();
        let local_incarnation = self.table.local().incarnation;
        self.slots
            .get(remote)
            .and_then(|s| s.link.as_ref())
            .is_some_and(|existing| {
                existing.dialer != local
                    && existing.tcp == tcp
                    && existing.local_incarnation == local_incarnation
                    && existing.incarnation == remote_incarnation
            })
    }

    /// Makes `candidate` the link to `remote` unless traffic is blocked or
    /// the tie-break keeps the link already there.
    pub fn admit(
        &mut self,
        remote: PeerId,
        candidate: Candidate<L>,
        now: Instant,
    ) -> Result<Admission<L>, Refusal> {
        if self.blocked.contains(&remote) {
            return Err(Refusal::Blocked);
        }
        let local = self.local();
        let local_incarnation = self.table.local().incarnation;
        let incarnation = candidate.record.incarnation;
        let outcome = self.table.merge([candidate.record]);
        let slot = self.slots.entry(remote).or_default();
        if let Some(existing) = &slot.link {
            // UDP is preferred: QUIC replaces the TCP fallback, never the
            // other way round.
            let keep_new = (existing.tcp && !candidate.tcp)
                || (existing.tcp == candidate.tcp
                    && local_incarnation > existing.local_incarnation)
                || (existing.tcp == candidate.tcp
                    && prefer_new_link(
                        local,
                        remote,
                        (existing.dialer, existing.incarnation),
                        (candidate.dialer, incarnation),
                        candidate.started.saturating_duration_since(existing.since),
                    ));
            if !keep_new {
                return Err(Refusal::Duplicate);
            }
        }
        let replaced = slot.link.replace(Linked {
            id: candidate.id,
            handle: candidate.handle,
            dialer: candidate.dialer,
            incarnation,
            local_incarnation,
            tcp: candidate.tcp,
            since: now,
        });
        slot.ever_up = true;
        if !candidate.tcp {
            slot.last_remote = Some(candidate.remote_addr);
        }
        slot.last_key_generation = slot.last_key_generation.max(candidate.last_key_generation);
        let last_key_generation = slot.last_key_generation;
        self.persist_dirty = true;
        Ok(Admission {
            replaced: replaced.map(|l| l.handle),
            changed: outcome.changed,
            record: self.table.get(&remote).cloned(),
            last_key_generation,
        })
    }

    /// Whether connection `link` is still `peer`'s link.
    pub fn is_current(&self, peer: &PeerId, link: usize) -> bool {
        self.slots
            .get(peer)
            .and_then(|s| s.link.as_ref())
            .is_some_and(|l| l.id == link)
    }

    /// Connection `link` to `peer` ended after moving `sent`/`received`
    /// bytes; returns whether it was the peer's link (the peer is down now).
    pub fn link_lost(&mut self, peer: PeerId, link: usize, sent: u64, received: u64) -> bool {
        let slot = self.slots.entry(peer).or_default();
        slot.bytes_sent_closed += sent;
        slot.bytes_received_closed += received;
        let current = slot.link.as_ref().is_some_and(|l| l.id == link);
        if current {
            slot.link = None;
        }
        current
    }

    pub fn keys_installed(&mut self, peer: PeerId, generation: u64, now: Instant) {
        let slot = self.slots.entry(peer).or_default();
        slot.last_key_generation = slot.last_key_generation.max(generation);
        slot.current_generation = Some(generation);
        slot.key_installed_at = Some(now);
    }

    /// Blocks `peers`; returns their links, to be closed.
    pub fn block(&mut self, peers: &[PeerId]) -> Vec<&L> {
        self.blocked.extend(peers.iter().copied());
        peers
            .iter()
            .filter_map(|p| self.slots.get(p)?.link.as_ref().map(|l| &l.handle))
            .collect()
    }

    /// Lifts every block; returns the members that need a dial loop now,
    /// already marked as dialing.
    pub fn unblock_all(&mut self) -> Vec<PeerId> {
        self.blocked.clear();
        self.direct_blocked.clear();
        let known: Vec<PeerId> = self.table.others().map(|r| r.id).collect();
        known.into_iter().filter(|p| self.claim_dial(*p)).collect()
    }

    /// Marks `peer` as dialed if it needs a dial loop — a known member, not
    /// us, not blocked, not up, not dialed already. True: start one.
    pub fn claim_dial(&mut self, peer: PeerId) -> bool {
        if peer == self.local() || self.blocked.contains(&peer) || self.table.get(&peer).is_none() {
            return false;
        }
        let slot = self.slots.entry(peer).or_default();
        if slot.link.is_some() || slot.dialing {
            return false;
        }
        slot.dialing = true;
        true
    }

    /// The addresses `peer` advertises (to try QUIC again while its link
    /// is over TCP); `None` if it is not a member or blocked.
    pub fn advertised(&self, peer: &PeerId) -> Option<Vec<String>> {
        if self.blocked.contains(peer) || self.direct_blocked.contains(peer) {
            return None;
        }
        Some(self.table.get(peer)?.addrs.clone())
    }

    /// One round of a dial loop: the addresses to try, or `None` when the
    /// loop must end (the peer is up, forgotten or blocked; an unblock
    /// starts a new loop).
    pub fn dial_round(&mut self, peer: PeerId) -> Option<DialRound> {
        let record = self.table.get(&peer).cloned();
        let blocked = self.blocked.contains(&peer);
        let Some(record) = record.filter(|_| !blocked) else {
            if let Some(slot) = self.slots.get_mut(&peer) {
                slot.dialing = false;
            }
            return None;
        };
        let slot = self.slots.entry(peer).or_default();
        if slot.link.is_some() {
            slot.dialing = false;
            return None;
        }
        // Reached once (now or before a restart): its last address is known.
        let proven = slot.last_remote.is_some();
        let mut candidates: Vec<String> = slot.last_remote.iter().map(|a| a.to_string()).collect();
        for addr in record.addrs {
            if !candidates.contains(&addr) {
                candidates.push(addr);
            }
        }
        if !proven {
            candidates.truncate(MAX_UNPROVEN_ADDRS);
        }
        Some(DialRound { candidates, proven })
    }

    /// Number of peers a dial loop runs for.
    pub fn dialing(&self) -> usize {
        self.slots.values().filter(|s| s.dialing).count()
    }

    /// Every peer that is up, with its link.
    pub fn up_links(&self) -> impl Iterator<Item = (PeerId, &L)> {
        self.slots
            .iter()
            .filter_map(|(id, s)| s.link.as_ref().map(|l| (*id, &l.handle)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sim::{peer, record, Pair, A, B};
    use crate::wire::Message;

    /// A fixed origin for the links' ages.
    fn at(secs: u64) -> Instant {
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_secs(secs)
    }

    fn peers(local: PeerId) -> Peers<&'static str> {
        Peers::new(MembershipTable::new(record(local)))
    }

    fn candidate(id: usize, dialer: PeerId, remote: PeerId) -> Candidate<&'static str> {
        Candidate {
            id,
            handle: if id == 1 {
                "dialed by A"
            } else {
                "dialed by B"
            },
            dialer,
            record: record(remote),
            remote_addr: "127.0.0.1:9".parse().unwrap(),
            tcp: false,
            last_key_generation: 0,
            started: at(0),
        }
    }

    #[test]
    fn quic_replaces_the_tcp_fallback_and_never_the_reverse() {
        let mut host = peers(*A);
        let tcp = Candidate {
            tcp: true,
            ..candidate(2, *B, *B)
        };
        host.admit(*B, tcp, at(0)).unwrap();
        // The TCP link's remote address is not remembered as a QUIC one.
        assert_eq!(host.slots[&*B].last_remote, None);
        // Dialed by the host the tie-break would not prefer: still wins.
        let quic = candidate(3, *B, *B);
        assert_eq!(
            host.admit(*B, quic, at(0)).unwrap().replaced,
            Some("dialed by B")
        );
        let tcp_again = Candidate {
            tcp: true,
            ..candidate(1, *A, *B)
        };
        assert_eq!(
            host.admit(*B, tcp_again, at(0)).err(),
            Some(Refusal::Duplicate)
        );
        assert!(host.is_current(&B, 3));
    }

    #[test]
    fn both_hosts_keep_the_same_link() {
        let low = peer(1);
        let high = peer(2);
        // Simultaneous dials: the link dialed by the lower id survives, seen
        // from either side and whichever arrived first.
        for local in [low, high] {
            let remote = if local == low { high } else { low };
            let young = Duration::from_millis(500);
            assert!(prefer_new_link(local, remote, (high, 7), (low, 7), young));
            assert!(!prefer_new_link(local, remote, (low, 7), (high, 7), young));
            // A reconnect by the same dialer replaces the stale link.
            assert!(prefer_new_link(local, remote, (high, 7), (high, 7), young));
            // A restarted peer (newer incarnation) always wins.
            assert!(prefer_new_link(local, remote, (low, 7), (high, 8), young));
            // An old link: the new one's dialer lost it.
            assert!(prefer_new_link(
                local,
                remote,
                (low, 7),
                (high, 7),
                SIMULTANEOUS_OPEN
            ));
        }
    }

    #[test]
    fn simultaneous_connects_settle_on_one_link_that_carries_the_keys() {
        // Connection 1 is dialed by A, connection 2 by B, at the same time;
        // each host may see them in either order.
        for a_order in [[1, 2], [2, 1]] {
            for b_order in [[1, 2], [2, 1]] {
                let mut at_a = peers(*A);
                let mut at_b = peers(*B);
                for (host, remote, order) in [(&mut at_a, *B, a_order), (&mut at_b, *A, b_order)] {
                    for (nth, id) in order.into_iter().enumerate() {
                        let dialer = if id == 1 { *A } else { *B };
                        let outcome = host.admit(remote, candidate(id, dialer, remote), at(0));
                        // The loser is refused or replaced, never kept beside.
                        match (nth, id) {
                            (0, _) => assert!(outcome.unwrap().replaced.is_none()),
                            (_, 1) => assert_eq!(outcome.unwrap().replaced, Some("dialed by B")),
                            _ => assert_eq!(outcome.err(), Some(Refusal::Duplicate)),
                        }
                    }
                }
                let kept_a = at_a.slots[&*B].link.as_ref().unwrap().id;
                let kept_b = at_b.slots[&*A].link.as_ref().unwrap().id;
                assert_eq!((kept_a, kept_b), (1, 1), "orders {a_order:?} {b_order:?}");
                assert!(at_a.is_current(&B, 1) && !at_a.is_current(&B, 2));
            }
        }
        // On the kept link only its dialer (A) starts key exchanges, and
        // both hosts end up with matching keys.
        let mut pair = Pair::new(0, 0);
        pair.open();
        pair.run_for(Duration::from_secs(1), |_| {});
        let inits = |host: usize| {
            pair.hosts[host]
                .sent
                .iter()
                .filter(|m| matches!(m, Message::KeyInit(_)))
                .count()
        };
        assert_eq!((inits(0), inits(1)), (1, 0));
        assert!(pair.deliverable(0) && pair.deliverable(1));
    }

    #[test]
    fn a_restarted_peer_replaces_the_link_whoever_dialed() {
        let mut at_a = peers(*A);
        at_a.admit(*B, candidate(1, *A, *B), at(0)).unwrap();
        let mut restarted = candidate(2, *B, *B);
        restarted.record.incarnation = 2;
        restarted.record.sign();
        let admission = at_a.admit(*B, restarted, at(0)).unwrap();
        assert_eq!(admission.replaced, Some("dialed by A"));
        assert_eq!(admission.changed.len(), 1, "the new incarnation is flooded");
        assert!(at_a.is_current(&B, 2));
        assert!(
            !at_a.link_lost(*B, 1, 10, 20),
            "the old link going is no loss"
        );
        assert_eq!(at_a.slots[&*B].state(), PeerState::Up);
        assert!(at_a.link_lost(*B, 2, 1, 2));
        assert_eq!(at_a.slots[&*B].state(), PeerState::Down);
        assert_eq!(at_a.slots[&*B].bytes_received_closed, 22);
    }

    #[test]
    fn a_roamed_host_replaces_its_links_on_both_sides() {
        // B (the higher id) roamed: new incarnation, dials A again while
        // A's old link (dialed by A, the lower id) is still up on both.
        let mut at_a = peers(*A);
        let mut at_b = peers(*B);
        at_a.admit(*B, candidate(1, *A, *B), at(0)).unwrap();
        at_b.admit(*A, candidate(1, *A, *A), at(0)).unwrap();
        // Without a new incarnation the lower id's link is kept...
        assert_eq!(
            at_b.admit(*A, candidate(2, *B, *A), at(0)).err(),
            Some(Refusal::Duplicate)
        );
        let roamed = at_b.table.update_local(|own| own.incarnation += 1);
        // ...with one, the roamed host's dial wins at both ends.
        let admitted = at_b.admit(*A, candidate(3, *B, *A), at(0)).unwrap();
        assert_eq!(admitted.replaced, Some("dialed by A"));
        let mut from_b = candidate(3, *B, *B);
        from_b.record = roamed;
        assert_eq!(
            at_a.admit(*B, from_b, at(0)).unwrap().replaced,
            Some("dialed by A")
        );
        assert!(at_a.is_current(&B, 3) && at_b.is_current(&A, 3));
    }

    #[test]
    fn a_peer_that_lost_the_link_and_dials_again_replaces_the_one_held_here() {
        // A dialed B (A is the lower id, so its link wins simultaneous
        // opens). B's detector gave up on it under load and B dials again,
        // 8 s later; A has not noticed: B's connection must replace A's, or
        // the pair stays apart until A's own detector gives up.
        let began = |secs| Candidate {
            started: at(secs),
            ..candidate(2, *B, *B)
        };
        let mut at_a = peers(*A);
        at_a.admit(*B, candidate(1, *A, *B), at(0)).unwrap();
        let redial = at_a.admit(*B, began(8), at(8)).unwrap();
        assert_eq!(redial.replaced, Some("dialed by A"));
        assert!(at_a.is_current(&B, 2));
        // Within the simultaneous-open window the tie-break still holds...
        let mut at_a = peers(*A);
        at_a.admit(*B, candidate(1, *A, *B), at(0)).unwrap();
        assert_eq!(
            at_a.admit(*B, began(2), at(2)).err(),
            Some(Refusal::Duplicate)
        );
        // ...also for a connection that began then but whose handshake a
        // loaded host finished only seconds later.
        assert_eq!(
            at_a.admit(*B, began(0), at(6)).err(),
            Some(Refusal::Duplicate)
        );
    }

    #[test]
    fn a_dial_that_crossed_the_peers_link_is_dropped_unless_it_must_replace_it() {
        let mut at_a = peers(*A);
        assert!(!at_a.crossed_dial(&B, false, 1), "no link yet: a dial");
        // B's dial came up while A's own dial was still in flight.
        at_a.admit(*B, candidate(1, *B, *B), at(0)).unwrap();
        assert!(at_a.crossed_dial(&B, false, 1));
        // QUIC over a TCP link, a restarted B, a roamed A: replacements.
        assert!(!at_a.crossed_dial(&B, true, 1));
        assert!(!at_a.crossed_dial(&B, false, 2));
        at_a.table.update_local(|own| own.incarnation += 1);
        assert!(!at_a.crossed_dial(&B, false, 1));
        // A link A dialed itself: a new dial by A is a reconnect.
        let mut at_a = peers(*A);
        at_a.admit(*B, candidate(1, *A, *B), at(0)).unwrap();
        assert!(!at_a.crossed_dial(&B, false, 1));
    }

    #[test]
    fn a_blocked_peer_gets_no_dial_loop_until_unblocked() {
        let c = peer(3);
        let mut at_a = peers(*A);
        at_a.table.merge([record(*B), record(c)]);
        assert!(at_a.claim_dial(*B));
        assert!(!at_a.claim_dial(*B), "one loop per peer");
        assert!(!at_a.claim_dial(*A), "never ourselves");
        assert!(!at_a.claim_dial(peer(9)), "only members");
        assert!(at_a.dial_round(*B).is_some());

        at_a.block(&[*B, c]);
        assert_eq!(at_a.dial_round(*B), None, "the running loop ends");
        assert!(!at_a.claim_dial(*B) && !at_a.claim_dial(c));
        assert_eq!(at_a.dialing(), 0, "nothing polls a blocked peer");
        assert_eq!(
            at_a.admit(*B, candidate(1, *B, *B), at(0)).err(),
            Some(Refusal::Blocked)
        );

        let mut restarted = at_a.unblock_all();
        restarted.sort();
        assert_eq!(restarted, vec![*B, c]);
        assert_eq!(at_a.dialing(), 2);
        assert!(at_a.unblock_all().is_empty(), "loops already run");

        at_a.admit(*B, candidate(1, *B, *B), at(0)).unwrap();
        assert_eq!(at_a.dial_round(*B), None, "up: the loop ends");
        assert!(at_a.unblock_all().is_empty(), "an up peer needs no dialing");
        assert_eq!(at_a.dialing(), 1);
    }

    #[test]
    fn a_member_never_reached_gets_few_addresses_tried() {
        let mut at_a = peers(*A);
        let mut b = record(*B);
        b.addrs = (0..16).map(|i| format!("10.0.0.{i}:7000")).collect();
        b.sign();
        at_a.table.merge([b]);
        let round = at_a.dial_round(*B).unwrap();
        assert!(!round.proven);
        assert_eq!(round.candidates.len(), MAX_UNPROVEN_ADDRS);
        // Once reached, every address is tried, the one that worked first.
        at_a.slots.entry(*B).or_default().last_remote = Some("10.0.0.9:7000".parse().unwrap());
        let round = at_a.dial_round(*B).unwrap();
        assert!(round.proven);
        assert_eq!(round.candidates.len(), 16);
        assert_eq!(round.candidates[0], "10.0.0.9:7000");
    }

    #[test]
    fn dial_candidates_start_with_the_last_working_address() {
        let mut at_a = peers(*A);
        let mut b = record(*B);
        b.addrs = vec!["b.example:7000".into(), "10.0.0.2:7000".into()];
        b.sign();
        at_a.table.merge([b]);
        at_a.slots.entry(*B).or_default().last_remote = Some("10.0.0.2:7000".parse().unwrap());
        assert_eq!(
            at_a.dial_round(*B).unwrap(),
            DialRound {
                candidates: vec!["10.0.0.2:7000".to_string(), "b.example:7000".to_string()],
                proven: true
            }
        );
    }
}
