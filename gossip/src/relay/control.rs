//! Every relayed session of one host as a state machine over relayed
//! packets and time (no I/O): handshakes in flight, sessions pending
//! confirmation, and established sessions each driving a [`Link`] — the
//! same heartbeat and key-exchange machine a direct connection runs, keyed
//! by the session's secret instead of a TLS exporter.
//!
//! Liveness: the session's initiator sends the link's heartbeats; the
//! responder echoes each one (there is no QUIC idle timeout to tell the
//! initiator the path died), so both ends notice silence within
//! `dead_after`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::debug;

use super::{initiate, relayable, respond, Packet, Pending, RelayError, Session};
use crate::cipher::CipherOffer;
use crate::link::{Action, Link, LinkParams, LinkTimers, Replica};
use crate::membership::MemberRecord;
use crate::wire::{Digest, Message};
use crate::{MeshSecret, PeerId, SessionKeys};

/// An `Init` unanswered this long no longer counts as in progress (the
/// node then tries again, possibly through another member).
pub const HANDSHAKE_RETRY: Duration = Duration::from_secs(2);

/// What the caller must do, in order.
#[derive(Debug)]
pub enum Event {
    /// Send `Message::Relay{to, payload: packet}` on `via`'s link.
    Send {
        to: PeerId,
        via: PeerId,
        packet: Packet,
    },
    /// The peer is reachable through `via` (again, or through another relay).
    Up {
        peer: PeerId,
        via: PeerId,
    },
    /// The relayed session with the peer ended.
    Down {
        peer: PeerId,
    },
    InstallKeys {
        peer: PeerId,
        keys: SessionKeys,
        send_now: bool,
    },
    ConfirmKeys {
        peer: PeerId,
        generation: u64,
    },
}

/// What the caller knows about the remote when a packet arrives.
pub struct Context<'a> {
    pub mesh_secret: &'a MeshSecret,
    pub last_key_generation: u64,
    /// This host's advertised ciphers and the remote's.
    pub ciphers: (Option<CipherOffer>, Option<CipherOffer>),
}

struct Established {
    via: PeerId,
    session: Session,
    link: Link,
    last_heard: Instant,
}

struct Initiating {
    via: PeerId,
    pending: Pending,
    started: Instant,
}

struct Responding {
    via: PeerId,
    session: Session,
}

/// A relayed link carries no membership or channels (see [`relayable`]).
struct NoReplica;

impl Replica for NoReplica {
    fn digest(&self) -> Digest {
        Digest::default()
    }
    fn member_records(&self) -> Vec<MemberRecord> {
        Vec::new()
    }
    fn merge_members(&mut self, _: PeerId, _: Vec<MemberRecord>) {}
    fn channel_state(&self, _: &str) -> Option<Vec<u8>> {
        None
    }
    fn merge_channel(&mut self, _: PeerId, _: &str, _: Vec<u8>) -> bool {
        false
    }
    fn offer_secret(&mut self, _: PeerId, _: u64, _: &str) {}
}

pub struct RelayControl {
    local: PeerId,
    timers: LinkTimers,
    established: HashMap<PeerId, Established>,
    initiating: HashMap<PeerId, Initiating>,
    responding: HashMap<PeerId, Responding>,
}

impl RelayControl {
    /// A new rekey period for relayed sessions, the established ones too.
    pub fn set_rekey(&mut self, rekey: std::time::Duration, now: Instant) {
        self.timers.rekey = rekey;
        for e in self.established.values_mut() {
            e.link.set_rekey(rekey, now);
        }
    }

    pub fn new(local: PeerId, timers: LinkTimers) -> Self {
        RelayControl {
            local,
            timers,
            established: HashMap::new(),
            initiating: HashMap::new(),
            responding: HashMap::new(),
        }
    }

    /// The member relaying an established session with `peer`.
    pub fn via(&self, peer: &PeerId) -> Option<PeerId> {
        self.established.get(peer).map(|e| e.via)
    }

    /// Peers with an established session through `via`.
    pub fn through(&self, via: &PeerId) -> Vec<PeerId> {
        self.established
            .iter()
            .filter(|(_, e)| e.via == *via)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Established sessions.
    pub fn peers(&self) -> Vec<PeerId> {
        self.established.keys().copied().collect()
    }

    /// Whether a handshake with `peer` started less than [`HANDSHAKE_RETRY`] ago.
    pub fn handshaking(&self, peer: &PeerId, now: Instant) -> bool {
        self.initiating
            .get(peer)
            .is_some_and(|i| now.saturating_duration_since(i.started) < HANDSHAKE_RETRY)
    }

    /// Starts a handshake with `peer` through `via` (replacing one in flight).
    pub fn connect(
        &mut self,
        peer: PeerId,
        via: PeerId,
        last_key_generation: u64,
        now: Instant,
    ) -> Vec<Event> {
        let Some((pending, init)) = initiate(self.local, peer, last_key_generation) else {
            return Vec::new();
        };
        self.initiating.insert(
            peer,
            Initiating {
                via,
                pending,
                started: now,
            },
        );
        vec![Event::Send {
            to: peer,
            via,
            packet: Packet::Init(init),
        }]
    }

    /// Forgets everything about `peer` (a direct link took over, or the
    /// member is gone); `Down` if a session was established.
    pub fn close(&mut self, peer: &PeerId) -> Option<Event> {
        self.initiating.remove(peer);
        self.responding.remove(peer);
        self.established
            .remove(peer)
            .map(|_| Event::Down { peer: *peer })
    }

    /// A relayed packet from `from`, handed to us by `via`.
    pub fn handle(
        &mut self,
        from: PeerId,
        via: PeerId,
        payload: &[u8],
        ctx: &Context<'_>,
        now: Instant,
    ) -> Result<Vec<Event>, RelayError> {
        match Packet::decode(payload)? {
            Packet::Init(init) => {
                if init.from != from {
                    return Err(RelayError::Misaddressed);
                }
                // Both sides started at once: the lower id's handshake wins.
                if self.local < from && self.initiating.contains_key(&from) {
                    debug!(peer = %from, "ignoring a crossing relayed handshake");
                    return Ok(Vec::new());
                }
                let (session, accept) =
                    respond(self.local, &init, ctx.mesh_secret, ctx.last_key_generation)?;
                self.responding.insert(from, Responding { via, session });
                Ok(vec![Event::Send {
                    to: from,
                    via,
                    packet: Packet::Accept(accept),
                }])
            }
            Packet::Accept(accept) => {
                if accept.from != from {
                    return Err(RelayError::Misaddressed);
                }
                let matches = self
                    .initiating
                    .get(&from)
                    .is_some_and(|i| i.pending.nonce() == accept.init_nonce);
                if !matches {
                    return Err(RelayError::UnexpectedAccept);
                }
                let Some(initiating) = self.initiating.remove(&from) else {
                    return Err(RelayError::UnexpectedAccept);
                };
                let via = initiating.via;
                let session = initiating.pending.complete(&accept, ctx.mesh_secret)?;
                let mut events = Vec::new();
                self.establish(from, via, session, ctx, now, &mut events);
                Ok(events)
            }
            Packet::Sealed(sealed) => {
                let mut events = Vec::new();
                let current = self
                    .established
                    .get(&from)
                    .is_some_and(|e| e.session.id() == sealed.session);
                let message = if current {
                    let Some(e) = self.established.get_mut(&from) else {
                        return Err(RelayError::WrongSession);
                    };
                    e.session.open(&sealed)?
                } else {
                    let pending = self
                        .responding
                        .get_mut(&from)
                        .filter(|r| r.session.id() == sealed.session)
                        .ok_or(RelayError::WrongSession)?;
                    let message = pending.session.open(&sealed)?;
                    // Confirmed: the initiator holds the session's keys.
                    if let Some(r) = self.responding.remove(&from) {
                        self.establish(from, r.via, r.session, ctx, now, &mut events);
                    }
                    message
                };
                if let Some(message) = message {
                    self.deliver(from, message, now, &mut events);
                }
                Ok(events)
            }
        }
    }

    fn establish(
        &mut self,
        peer: PeerId,
        via: PeerId,
        session: Session,
        ctx: &Context<'_>,
        now: Instant,
        events: &mut Vec<Event>,
    ) {
        let params = LinkParams {
            local: self.local,
            remote: peer,
            initiator: session.is_initiator(),
            connection_secret: session.connection_secret(),
            last_key_generation: session.last_key_generation(),
            local_ciphers: ctx.ciphers.0,
            remote_ciphers: ctx.ciphers.1,
            timers: self.timers,
        };
        let mut link = Link::new(params, now);
        let actions = link.open(&NoReplica, now);
        self.established.insert(
            peer,
            Established {
                via,
                session,
                link,
                last_heard: now,
            },
        );
        events.push(Event::Up { peer, via });
        self.carry_out(peer, actions, events);
    }

    fn deliver(&mut self, peer: PeerId, message: Message, now: Instant, events: &mut Vec<Event>) {
        if !relayable(&message) {
            debug!(peer = %peer, "dropping a non-control message from a relayed session");
            return;
        }
        let Some(e) = self.established.get_mut(&peer) else {
            return;
        };
        e.last_heard = now;
        let echo = !e.session.is_initiator() && message == Message::Heartbeat;
        let actions = e.link.handle(message, now, &mut NoReplica);
        if echo {
            let packet = e.session.seal(&Message::Heartbeat);
            events.push(Event::Send {
                to: peer,
                via: e.via,
                packet,
            });
        }
        self.carry_out(peer, actions, events);
    }

    fn carry_out(&mut self, peer: PeerId, actions: Vec<Action>, events: &mut Vec<Event>) {
        for action in actions {
            match action {
                Action::Send(message) => {
                    if !relayable(&message) {
                        continue;
                    }
                    if let Some(e) = self.established.get_mut(&peer) {
                        let packet = e.session.seal(&message);
                        events.push(Event::Send {
                            to: peer,
                            via: e.via,
                            packet,
                        });
                    }
                }
                Action::InstallKeys { keys, send_now } => events.push(Event::InstallKeys {
                    peer,
                    keys,
                    send_now,
                }),
                Action::ConfirmKeys { generation } => {
                    events.push(Event::ConfirmKeys { peer, generation })
                }
                Action::Close { reason, .. } => {
                    debug!(peer = %peer, reason, "relayed session closed");
                    if let Some(down) = self.close(&peer) {
                        events.push(down);
                    }
                    return;
                }
            }
        }
    }

    /// Timers of every established session; call at [`Self::poll_timeout`].
    pub fn tick(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        let peers: Vec<PeerId> = self.established.keys().copied().collect();
        for peer in peers {
            let Some(e) = self.established.get_mut(&peer) else {
                continue;
            };
            let silent = now.saturating_duration_since(e.last_heard) > self.timers.dead_after;
            if e.session.is_initiator() && silent {
                debug!(peer = %peer, "relayed session silent; down");
                if let Some(down) = self.close(&peer) {
                    events.push(down);
                }
                continue;
            }
            let actions = e.link.tick(now);
            self.carry_out(peer, actions, &mut events);
        }
        events
    }

    /// When [`Self::tick`] is due next (`None`: no session).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.established
            .values()
            .map(|e| e.link.poll_timeout())
            .min()
    }
}
