//! The node's side of relayed control ([`crate::relay`]): forwarding for
//! others as C, and as A or B carrying the [`RelayControl`]'s events out —
//! frames onto the relay's link, peer up/down and keys to the observer.
//!
//! Which peers get a relayed session: members with no direct link for
//! [`RELAY_AFTER`], or at once when their direct link was lost (the dial loop keeps dialing; a direct link takes over
//! the moment it is admitted), initiated by the lower id of the two so
//! that both never start at once. The relay is one of our up links, tried
//! in turn: a handshake unanswered within [`HANDSHAKE_RETRY`] moves on to
//! the next one (C may have no link with B).
//!
//! Lock order: `relay` before `peers`, never the other way round.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, info};

use super::{lock, Inner, PeerInfo};
use crate::cipher::CipherOffer;
use crate::relay::{self, Context, Event, RelayBudget, RelayControl};
use crate::wire::{self, Message};
use crate::PeerId;

/// A member without a direct link this long gets a relayed session.
pub const RELAY_AFTER: Duration = Duration::from_secs(2);
/// How often the node looks for peers to relay and runs session timers
/// while there are sessions or members without a direct link.
const RELAY_TICK: Duration = Duration::from_millis(250);
/// How often it looks while every member has a direct link: a lost link
/// wakes it at once ([`Inner::relay_link_lost`]); a member that was never
/// linked is noticed within this (it gets a session [`RELAY_AFTER`] later).
const IDLE_RELAY_TICK: Duration = Duration::from_secs(1);

pub(super) struct RelayState {
    control: RelayControl,
    /// C's forwarding budget per sending member.
    budgets: HashMap<PeerId, RelayBudget>,
    /// Our budget per relay for what it hands us: a member relaying
    /// garbage costs us a signature check per packet at most this often.
    received: HashMap<PeerId, RelayBudget>,
    /// Since when each member has had no direct link.
    unlinked_since: HashMap<PeerId, Instant>,
    /// Handshakes started per peer, to rotate through the relays.
    attempts: HashMap<PeerId, usize>,
    /// Wakes the relay loop before its tick.
    wake: Arc<tokio::sync::Notify>,
}

impl RelayState {
    pub(super) fn new(local: PeerId, timers: crate::link::LinkTimers) -> Self {
        RelayState {
            control: RelayControl::new(local, timers),
            budgets: HashMap::new(),
            received: HashMap::new(),
            unlinked_since: HashMap::new(),
            attempts: HashMap::new(),
            wake: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Whether the relay loop has work on its fast tick.
    fn busy(&self) -> bool {
        self.control.poll_timeout().is_some() || !self.unlinked_since.is_empty()
    }

    pub(super) fn set_rekey(&mut self, rekey: Duration, now: Instant) {
        self.control.set_rekey(rekey, now);
    }

    /// Relay of every established session (for `Node::members`).
    pub(super) fn vias(&self) -> HashMap<PeerId, PeerId> {
        self.control
            .peers()
            .into_iter()
            .filter_map(|p| Some((p, self.control.via(&p)?)))
            .collect()
    }
}

impl Inner {
    /// `Relay`/`Relayed` from the peer at the other end of link `link_peer`.
    pub(super) fn on_relay_message(&self, link_peer: PeerId, message: Message) {
        match message {
            Message::Relay { to, payload } => self.forward(link_peer, to, payload),
            Message::Relayed { from, payload } => self.relayed(link_peer, from, &payload),
            _ => {}
        }
    }

    /// As C: forwards to `to` if we hold its link, within bounds.
    fn forward(&self, from: PeerId, to: PeerId, payload: Vec<u8>) {
        let now = Instant::now();
        let mut relay = lock(&self.relay);
        let peers = lock(&self.peers);
        let target = peers.slots.get(&to).and_then(|s| s.link.as_ref());
        let budget = relay
            .budgets
            .entry(from)
            .or_insert_with(|| RelayBudget::new(now));
        match relay::forward(self.id, from, to, payload, target.is_some(), budget, now) {
            Ok(message) => {
                let (Some(link), Ok(frame)) = (target, wire::encode_frame(&message)) else {
                    return;
                };
                if link.handle.outbound.try_send(Bytes::from(frame)).is_err() {
                    debug!(from = %from, to = %to, "relay: outbound queue full; dropped");
                }
            }
            Err(refusal) => debug!(from = %from, to = %to, ?refusal, "not relaying"),
        }
    }

    /// As A or B: a packet of a session with `from`, handed over by `via`.
    fn relayed(&self, via: PeerId, from: PeerId, payload: &[u8]) {
        let now = Instant::now();
        let secret = self.secret();
        let mut relay = lock(&self.relay);
        let budget = relay
            .received
            .entry(via)
            .or_insert_with(|| RelayBudget::new(now));
        if !budget.take(now) {
            debug!(via = %via, "relayed packets over budget; dropped");
            return;
        }
        let (ctx_lkg, ciphers) = {
            let peers = lock(&self.peers);
            let known = from != self.id && peers.table.get(&from).is_some();
            let direct = peers.slots.get(&from).is_some_and(|s| s.link.is_some());
            if !known || direct || peers.is_blocked(&from) {
                debug!(peer = %from, via = %via, known, direct, "ignoring relayed packet");
                return;
            }
            (
                peers.last_key_generation(&from),
                (
                    CipherOffer::of_meta(&peers.table.local().meta),
                    peers
                        .table
                        .get(&from)
                        .and_then(|r| CipherOffer::of_meta(&r.meta)),
                ),
            )
        };
        let ctx = Context {
            mesh_secret: &secret,
            last_key_generation: ctx_lkg,
            ciphers,
        };
        match relay.control.handle(from, via, payload, &ctx, now) {
            Ok(events) => self.apply_relay_events(&mut relay, events),
            Err(e) => crate::signed::note_rejection(from, "relayed control", &e.to_string()),
        }
    }

    /// The member relaying control with `peer`, if any.
    pub(super) fn relayed_via(&self, peer: &PeerId) -> Option<PeerId> {
        lock(&self.relay).control.via(peer)
    }

    /// How long `peer` has had no link (as the relay ticker last saw it).
    pub(super) fn unlinked_for(&self, peer: &PeerId) -> Option<Duration> {
        lock(&self.relay)
            .unlinked_since
            .get(peer)
            .map(|since| since.elapsed())
    }

    /// A direct link to `peer` was admitted: it carries the control now.
    pub(super) fn direct_link_up(&self, peer: PeerId) {
        let mut relay = lock(&self.relay);
        relay.unlinked_since.remove(&peer);
        relay.attempts.remove(&peer);
        if relay.control.close(&peer).is_some() {
            info!(peer = %peer, "direct link replaces the relayed session");
        }
    }

    /// The direct link to `peer` was lost: sessions relayed by it end, and
    /// `peer` gets a relayed session at the next round, without waiting
    /// [`RELAY_AFTER`] (its link already took `dead_after` to be given up).
    pub(super) fn relay_link_lost(&self, peer: PeerId) {
        let mut relay = lock(&self.relay);
        if let Some(long_ago) = Instant::now().checked_sub(RELAY_AFTER) {
            relay.unlinked_since.insert(peer, long_ago);
        }
        relay.wake.notify_one();
        let events: Vec<Event> = relay
            .control
            .through(&peer)
            .iter()
            .filter_map(|p| relay.control.close(p))
            .collect();
        self.apply_relay_events(&mut relay, events);
    }

    /// Carries out `events` with the relay lock held (so that the up,
    /// keys and down of one session reach the observer in order).
    fn apply_relay_events(&self, relay: &mut RelayState, events: Vec<Event>) {
        for event in events {
            let peers = lock(&self.peers);
            let direct = |p: &PeerId| peers.slots.get(p).is_some_and(|s| s.link.is_some());
            match event {
                Event::Send { to, via, packet } => {
                    let message = Message::Relay {
                        to,
                        payload: packet.encode(),
                    };
                    let link = peers.slots.get(&via).and_then(|s| s.link.as_ref());
                    if let (Some(link), Ok(frame)) = (link, wire::encode_frame(&message)) {
                        let _ = link.handle.outbound.try_send(Bytes::from(frame));
                    }
                }
                Event::Up { peer, via } => {
                    if direct(&peer) {
                        drop(peers);
                        relay.control.close(&peer);
                        continue;
                    }
                    let record = peers.table.get(&peer);
                    let slot = peers.slots.get(&peer);
                    let info = PeerInfo {
                        id: peer,
                        name: record.map(|r| r.name.clone()).unwrap_or_default(),
                        remote: slot
                            .and_then(|s| s.last_remote)
                            .or_else(|| record?.addrs.iter().find_map(|a| a.parse().ok()))
                            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
                        meta: record.map(|r| r.meta.clone()).unwrap_or_default(),
                        relay: Some(via),
                    };
                    info!(peer = %peer, via = %via, name = %info.name, "peer up (relayed control)");
                    self.observer.peer_up(&info);
                }
                Event::Down { peer } => {
                    if !direct(&peer) {
                        info!(peer = %peer, "peer down (relayed control ended)");
                        self.observer.peer_down(&peer);
                    }
                }
                Event::InstallKeys {
                    peer,
                    keys,
                    send_now,
                } => {
                    if !direct(&peer) {
                        let generation = keys.generation;
                        self.observer.install_keys(&peer, keys, send_now);
                        drop(peers);
                        lock(&self.peers).keys_installed(peer, generation, Instant::now());
                    }
                }
                Event::ConfirmKeys { peer, generation } => {
                    if !direct(&peer) {
                        self.observer.confirm_keys(&peer, generation);
                    }
                }
            }
        }
    }

    /// One round: session timers, and handshakes for peers that need one.
    fn relay_round(&self, now: Instant) {
        let mut relay = lock(&self.relay);
        let events = relay.control.tick(now);
        self.apply_relay_events(&mut relay, events);
        let (unlinked, ups): (Vec<PeerId>, Vec<PeerId>) = {
            let peers = lock(&self.peers);
            let mut ups: Vec<PeerId> = peers.up_links().map(|(p, _)| p).collect();
            ups.sort();
            let unlinked = peers
                .table
                .others()
                .map(|r| r.id)
                .filter(|p| {
                    !peers.is_blocked(p) && peers.slots.get(p).is_none_or(|s| s.link.is_none())
                })
                .collect();
            (unlinked, ups)
        };
        relay.unlinked_since.retain(|p, _| unlinked.contains(p));
        // Budgets only for members with a link: the maps stay bounded.
        relay.budgets.retain(|p, _| ups.contains(p));
        relay.received.retain(|p, _| ups.contains(p));
        for peer in unlinked {
            let since = *relay.unlinked_since.entry(peer).or_insert(now);
            let relays: Vec<PeerId> = ups.iter().copied().filter(|c| *c != peer).collect();
            let wanted = self.id < peer
                && now.saturating_duration_since(since) >= RELAY_AFTER
                && relay.control.via(&peer).is_none()
                && !relay.control.handshaking(&peer, now)
                && !relays.is_empty();
            if !wanted {
                continue;
            }
            let attempt = relay.attempts.entry(peer).or_insert(0);
            let via = relays[*attempt % relays.len()];
            *attempt += 1;
            debug!(peer = %peer, via = %via, "relayed control: handshake");
            let lkg = lock(&self.peers).last_key_generation(&peer);
            let events = relay.control.connect(peer, via, lkg, now);
            self.apply_relay_events(&mut relay, events);
        }
    }
}

pub(super) async fn relay_loop(node: Arc<Inner>) {
    let wake = lock(&node.relay).wake.clone();
    loop {
        let tick = if lock(&node.relay).busy() {
            RELAY_TICK
        } else {
            IDLE_RELAY_TICK
        };
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            () = wake.notified() => {}
        }
        if node.is_shutting_down() {
            return;
        }
        node.relay_round(Instant::now());
    }
}
