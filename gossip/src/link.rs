//! One connection's protocol as a state machine over messages and time (no I/O).
//!
//! A [`Link`] is fed what arrives ([`Link::handle`]) and the passing of time
//! ([`Link::tick`], due at [`Link::poll_timeout`]); it answers with
//! [`Action`]s for the caller to carry out — frames to send, keys to hand to
//! the data plane, a close. It owns everything that is per connection:
//! - liveness: the connection's dialer sends a heartbeat every `heartbeat`;
//!   the other side closes when nothing at all was heard for `dead_after`,
//!   and the dialer learns the same from QUIC's idle timeout (set to
//!   `dead_after`; every heartbeat is acknowledged). An idle link so costs
//!   one small packet and its ACK per interval instead of two of each —
//!   with a connection to every member, that is most of a host's idle
//!   traffic and CPU (docs/scale.md);
//! - data-plane key exchange (see [`crate::keyexchange`]): the connection's
//!   dialer initiates one at once and every `rekey`, and retries with a
//!   fresh generation when the exchange in flight got no answer within
//!   `max(3 × heartbeat, 2 s)` (a frame dropped under overload);
//! - push-pull anti-entropy replies: a [`Message::Digest`] is answered with
//!   the full state of whatever differs, and full states sent with
//!   `want_reply` are answered if they still differ after the merge. A full
//!   state goes out as self-contained parts of at most [`wire::MAX_PART_LEN`]
//!   bytes (so no state size stops replication); only the last part asks for
//!   a reply, with the hash of the whole.
//!
//! What is shared by all links of a host — the membership table and the
//! channels — is reached through the [`Replica`] passed to `handle`. The
//! `Node` moves frames between QUIC and its links; tests step two links
//! against each other on virtual time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::cipher::CipherOffer;
use crate::keyexchange::{self, KxContext, PendingInit, ResponderTrack};
use crate::membership::MemberRecord;
use crate::transport::close_code;
use crate::wire::{self, Digest, Message};
use crate::{PeerId, SessionKeys};

/// The replicated state of this host, shared by all its links.
pub trait Replica {
    /// Hashes of the membership table and of every channel held here.
    fn digest(&self) -> Digest;
    /// Every member record, our own included.
    fn member_records(&self) -> Vec<MemberRecord>;
    /// The membership table's hash (as in [`Replica::digest`]).
    fn member_digest(&self) -> [u8; 32] {
        self.digest().members
    }
    /// Merges records received from `from` (the node floods what changed).
    fn merge_members(&mut self, from: PeerId, records: Vec<MemberRecord>);
    /// Our encoding of channel `name`, if it is registered here.
    fn channel_state(&self, name: &str) -> Option<Vec<u8>>;
    /// Channel `name` in parts of at most about [`wire::MAX_PART_LEN`]
    /// bytes (see `Mergeable::encode_parts`) and the hash of its whole
    /// encoding, if it is registered here.
    fn channel_parts(&self, name: &str) -> Option<(Vec<Vec<u8>>, [u8; 32])> {
        let whole = self.channel_state(name)?;
        let hash = wire::state_hash(&whole);
        Some((vec![whole], hash))
    }
    /// Merges a received channel state (or part of one); false if the
    /// channel is not registered here.
    fn merge_channel(&mut self, from: PeerId, name: &str, data: Vec<u8>) -> bool;
    /// A peer's mesh secret and its rotation epoch.
    fn offer_secret(&mut self, from: PeerId, epoch: u64, token: &str);
    /// [`Replica::digest`] as hashed towards `remote`: a replica may leave
    /// out what only hosts of a newer protocol leave out too (expired
    /// tombstones, `state::expiry`).
    fn digest_for(&self, _remote: &PeerId) -> Digest {
        self.digest()
    }
    /// [`Replica::channel_parts`], its hash as [`Replica::digest_for`] has it.
    fn channel_parts_for(&self, name: &str, _remote: &PeerId) -> Option<(Vec<Vec<u8>>, [u8; 32])> {
        self.channel_parts(name)
    }
    /// Anti-entropy found every channel held here equal to `remote`'s
    /// (see `node/expiry.rs`).
    fn in_sync_with(&mut self, _remote: PeerId) {}
}

/// The per-link timers (already clamped by the node's config).
#[derive(Clone, Copy, Debug)]
pub struct LinkTimers {
    pub heartbeat: Duration,
    pub dead_after: Duration,
    pub rekey: Duration,
}

impl LinkTimers {
    /// How long an exchange may go unanswered before it is started again.
    pub fn kx_retry_after(&self) -> Duration {
        (self.heartbeat * 3).max(Duration::from_secs(2))
    }
}

/// What a link is created from, once the handshake admitted the peer.
#[derive(Clone)]
pub struct LinkParams {
    pub local: PeerId,
    pub remote: PeerId,
    /// This host dialed the connection, so it initiates key exchanges.
    pub initiator: bool,
    /// TLS exporter output under [`keyexchange::EKM_KEYS_LABEL`]: binds
    /// every generation's keys to this connection.
    pub connection_secret: [u8; 32],
    /// Highest key generation ever installed between the two hosts (both
    /// hellos carry theirs), so generations keep rising across reconnects.
    pub last_key_generation: u64,
    /// The ciphers this host advertised in its hello/ack, and those the
    /// remote's hello/ack advertised (`None`: not advertised; see
    /// [`crate::cipher`]). Bound into every generation's keys.
    pub local_ciphers: Option<CipherOffer>,
    pub remote_ciphers: Option<CipherOffer>,
    pub timers: LinkTimers,
}

/// Something the caller of a [`Link`] must do, in order.
#[derive(Debug)]
pub enum Action {
    Send(Message),
    /// Hand keys to the data plane (`send_now`: also start sending with them).
    InstallKeys {
        keys: SessionKeys,
        send_now: bool,
    },
    /// The peer sends with `generation` now: switch our sending side too.
    ConfirmKeys {
        generation: u64,
    },
    /// Close the connection; the link is finished.
    Close {
        code: u32,
        reason: &'static str,
    },
}

pub struct Link {
    remote: PeerId,
    initiator: bool,
    kx: KxContext,
    timers: LinkTimers,
    /// Highest generation installed on this link or known from the handshake.
    generation: u64,
    /// Initiator: the exchange in flight and when it was started.
    pending: Option<(PendingInit, Instant)>,
    responder: ResponderTrack,
    last_heard: Instant,
    next_heartbeat: Instant,
    next_rekey: Instant,
    closed: bool,
}

impl Link {
    /// A link whose first heartbeat (and, for the initiator, first key
    /// exchange) is due at once.
    pub fn new(params: LinkParams, now: Instant) -> Link {
        let ((initiator, initiator_ciphers), (responder, responder_ciphers)) = {
            let local = (params.local, params.local_ciphers);
            let remote = (params.remote, params.remote_ciphers);
            if params.initiator {
                (local, remote)
            } else {
                (remote, local)
            }
        };
        Link {
            remote: params.remote,
            initiator: params.initiator,
            kx: KxContext {
                initiator,
                responder,
                connection_secret: params.connection_secret,
                initiator_ciphers,
                responder_ciphers,
            },
            timers: params.timers,
            generation: params.last_key_generation,
            pending: None,
            responder: ResponderTrack::default(),
            last_heard: now,
            next_heartbeat: now,
            next_rekey: now,
            closed: false,
        }
    }

    pub fn remote(&self) -> PeerId {
        self.remote
    }

    /// The data-plane AEAD this link's keys are for.
    pub fn cipher(&self) -> crate::Cipher {
        self.kx.cipher()
    }

    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// True once the link asked for its connection to be closed.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The highest key generation this link installed or started from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Push-pull anti-entropy right away (a joiner learns the mesh at once),
    /// then whatever is due now.
    pub fn open<R: Replica + ?Sized>(&mut self, replica: &R, now: Instant) -> Vec<Action> {
        let mut actions = vec![Action::Send(Message::Digest(
            replica.digest_for(&self.remote),
        ))];
        actions.extend(self.tick(now));
        actions
    }

    /// A new rekey period (a reload of the config): the next exchange is
    /// due within it, so a shorter period takes effect at once.
    pub fn set_rekey(&mut self, rekey: Duration, now: Instant) {
        self.timers.rekey = rekey;
        self.next_rekey = self.next_rekey.min(now + rekey);
    }

    /// When [`Link::tick`] must be called next.
    pub fn poll_timeout(&self) -> Instant {
        if self.initiator {
            self.next_heartbeat.min(self.next_rekey)
        } else {
            self.next_heartbeat
        }
    }

    /// Timers: rekey, heartbeat, liveness, key-exchange retry.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.closed {
            return actions;
        }
        if self.initiator && now >= self.next_rekey {
            self.next_rekey = now + self.timers.rekey;
            actions.push(self.start_key_exchange(now));
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.timers.heartbeat;
            let silent = now.saturating_duration_since(self.last_heard) > self.timers.dead_after;
            if !self.initiator && silent {
                self.closed = true;
                actions.push(Action::Close {
                    code: close_code::DEAD,
                    reason: "no heartbeat",
                });
                return actions;
            }
            if self.initiator {
                actions.push(Action::Send(Message::Heartbeat));
            }
            let retry_after = self.timers.kx_retry_after();
            let unanswered = self
                .pending
                .as_ref()
                .is_some_and(|(_, started)| now.saturating_duration_since(*started) > retry_after);
            if self.initiator && unanswered {
                actions.push(self.start_key_exchange(now));
            }
        }
        actions
    }

    /// One message from the peer.
    pub fn handle<R: Replica + ?Sized>(
        &mut self,
        message: Message,
        now: Instant,
        replica: &mut R,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.closed {
            return actions;
        }
        self.last_heard = now;
        if let Err(reason) = self.dispatch(message, replica, &mut actions) {
            self.closed = true;
            actions.push(Action::Close {
                code: close_code::PROTOCOL_ERROR,
                reason,
            });
        }
        actions
    }

    fn start_key_exchange(&mut self, now: Instant) -> Action {
        // A retry must not reuse the generation the peer may have installed.
        let floor = self
            .pending
            .as_ref()
            .map(|(p, _)| p.generation())
            .unwrap_or(0);
        let generation = self.generation.max(floor) + 1;
        let (state, init) = keyexchange::initiate(generation);
        self.pending = Some((state, now));
        debug!(peer = %self.remote, generation, "key exchange: init");
        Action::Send(Message::KeyInit(init))
    }

    fn installed(&mut self, generation: u64) {
        self.generation = self.generation.max(generation);
    }

    fn dispatch<R: Replica + ?Sized>(
        &mut self,
        message: Message,
        replica: &mut R,
        out: &mut Vec<Action>,
    ) -> Result<(), &'static str> {
        match message {
            Message::Heartbeat => {}
            Message::KeyInit(init) => {
                if self.initiator {
                    return Err("KeyInit from the responder side");
                }
                if let Err(e) = self.responder.accept_init(init.generation) {
                    debug!(peer = %self.remote, error = %e, "ignoring stale KeyInit");
                    return Ok(());
                }
                let (keys, resp) =
                    keyexchange::respond(&self.kx, &init).map_err(|_| "invalid key exchange")?;
                let generation = keys.generation;
                self.installed(generation);
                self.responder.installed(generation);
                // Install before replying: the initiator starts sending with
                // these keys as soon as it has our reply.
                out.push(Action::InstallKeys {
                    keys,
                    send_now: false,
                });
                out.push(Action::Send(Message::KeyResp(resp)));
            }
            Message::KeyResp(resp) => {
                if !self.initiator {
                    return Err("KeyResp from the initiator side");
                }
                let matches = self
                    .pending
                    .as_ref()
                    .is_some_and(|(p, _)| p.generation() == resp.generation);
                let Some((state, _)) = self.pending.take_if(|_| matches) else {
                    debug!(peer = %self.remote, generation = resp.generation, "ignoring stale KeyResp");
                    return Ok(());
                };
                let keys = state
                    .complete(&self.kx, &resp)
                    .map_err(|_| "invalid key exchange")?;
                let generation = keys.generation;
                self.installed(generation);
                out.push(Action::InstallKeys {
                    keys,
                    send_now: true,
                });
                out.push(Action::Send(Message::KeyConfirm { generation }));
                debug!(peer = %self.remote, generation, "key exchange complete");
            }
            Message::KeyConfirm { generation } => {
                if self.initiator {
                    return Err("KeyConfirm from the responder side");
                }
                if let Some(generation) = self.responder.confirm(generation) {
                    out.push(Action::ConfirmKeys { generation });
                }
            }
            Message::Members(records) => replica.merge_members(self.remote, records),
            Message::MembersFull {
                records,
                want_reply,
            } => {
                replica.merge_members(self.remote, records);
                if want_reply.is_some_and(|theirs| theirs != replica.member_digest()) {
                    out.extend(members_full(replica, false));
                }
            }
            Message::Secret { epoch, token } => replica.offer_secret(self.remote, epoch, &token.0),
            // Routed by the node before they reach a link (see `relay.rs`).
            Message::Relay { .. } | Message::Relayed { .. } => {}
            Message::ChannelDelta { channel, data } => {
                replica.merge_channel(self.remote, &channel, data);
            }
            Message::ChannelFull {
                channel,
                data,
                want_reply,
            } => {
                let known = replica.merge_channel(self.remote, &channel, data);
                if let (true, Some(theirs)) = (known, want_reply) {
                    out.extend(channel_full(
                        replica,
                        &channel,
                        false,
                        Some(theirs),
                        &self.remote,
                    ));
                }
            }
            Message::Digest(digest) => {
                let ours = replica.digest_for(&self.remote);
                if digest.members != ours.members {
                    out.extend(members_full(replica, true));
                }
                let theirs: HashMap<String, [u8; 32]> = digest.channels.into_iter().collect();
                // In sync: the same channels, each with the same hash.
                let mut same = theirs.len() == ours.channels.len();
                for (name, hash) in ours.channels {
                    if theirs.get(&name) != Some(&hash) {
                        same = false;
                        out.extend(channel_full(replica, &name, true, None, &self.remote));
                    }
                }
                if same {
                    replica.in_sync_with(self.remote);
                }
            }
        }
        Ok(())
    }
}

/// The membership table as [`Message::MembersFull`] parts; with
/// `want_reply`, the last asks for the receiver's table if it differs.
fn members_full<R: Replica + ?Sized>(replica: &R, want_reply: bool) -> Vec<Action> {
    let hash = replica.member_digest();
    let parts = wire::split_by_size(replica.member_records(), wire::MAX_PART_LEN);
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, records)| {
            Action::Send(Message::MembersFull {
                records,
                want_reply: (want_reply && i == last).then_some(hash),
            })
        })
        .collect()
}

/// Channel `name` as [`Message::ChannelFull`] parts — none if it is not
/// registered here or its hash equals `unless`.
fn channel_full<R: Replica + ?Sized>(
    replica: &R,
    name: &str,
    want_reply: bool,
    unless: Option<[u8; 32]>,
    remote: &PeerId,
) -> Vec<Action> {
    let Some((parts, hash)) = replica.channel_parts_for(name, remote) else {
        return Vec::new();
    };
    if unless == Some(hash) {
        return Vec::new();
    }
    let last = parts.len().saturating_sub(1);
    parts
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            Action::Send(Message::ChannelFull {
                channel: name.to_string(),
                data,
                want_reply: (want_reply && i == last).then_some(hash),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
