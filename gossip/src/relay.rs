//! Relayed control: A↔B control traffic through a member C both have links
//! with, when A and B cannot make a QUIC connection (no I/O here).
//!
//! C only forwards: A sends C `Message::Relay{to: B, payload}`, C hands B
//! `Message::Relayed{from: A, payload}` — if both are members it holds
//! authenticated links with, the payload is within [`MAX_RELAY_PAYLOAD`]
//! and A is within its [`RelayBudget`]. A `Relayed` message is never
//! forwarded again (one hop, no loops), and nothing is ever sent to more
//! than one member (no flooding).
//!
//! The payload is end to end between A and B, so C can neither read nor
//! forge it ([`Packet`]):
//! 1. `Init` (A → B): a fresh nonce and ephemeral x25519 key, both ids and
//!    A's last key generation, signed by A's identity;
//! 2. `Accept` (B → A): B's nonce and ephemeral key, echoing A's nonce and
//!    ephemeral, signed by B's identity;
//! 3. then `Sealed` control messages, ChaCha20-Poly1305 under per-direction
//!    keys from HKDF(salt = mesh secret, DH) over the whole transcript, with
//!    a strictly increasing counter (the path through C is one ordered
//!    stream each way, so anything not above the last counter is a replay).
//!
//! B keeps a session from an `Init` only as *pending* until the first
//! `Sealed` from A opens under it: a replayed `Init` (C can record one)
//! yields a session nobody can use and never displaces the current one.
//! A replayed `Accept` echoes a nonce A no longer waits for.
//!
//! The established session gives the relayed [`crate::link::Link`] its
//! `connection_secret` (instead of the TLS exporter of a direct
//! connection), so data-plane keys follow the same schedule and handover as
//! on a direct link (`keyexchange.rs`).

use rand::rngs::OsRng;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hkdf;
use serde::{Deserialize, Serialize};
use x25519_dalek::{EphemeralSecret, PublicKey};

use crate::signed::{self, Signature};
use crate::wire::Message;
use crate::{MeshSecret, PeerId};

/// Largest relayed payload C forwards: a handshake packet or one sealed
/// heartbeat/key-exchange message needs a few hundred bytes.
pub const MAX_RELAY_PAYLOAD: usize = 2048;
/// Relayed packets one member may have C forward per second, sustained...
pub const RELAY_RATE_PER_SEC: u32 = 50;
/// ...and in a burst.
pub const RELAY_BURST: u32 = 100;

const INIT_DOMAIN: &str = "mesh/1 relay init";
const ACCEPT_DOMAIN: &str = "mesh/1 relay accept";
const SESSION_LABEL: &[u8] = b"mesh/1 relayed control session";
const NONCE_LEN: usize = 16;

/// End-to-end payload of `Relay`/`Relayed` messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Packet {
    Init(Init),
    Accept(Accept),
    Sealed(Sealed),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Init {
    pub from: PeerId,
    pub to: PeerId,
    pub nonce: [u8; NONCE_LEN],
    pub ephemeral: [u8; 32],
    pub last_key_generation: u64,
    pub signature: Signature,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accept {
    pub from: PeerId,
    pub to: PeerId,
    pub init_nonce: [u8; NONCE_LEN],
    pub init_ephemeral: [u8; 32],
    pub nonce: [u8; NONCE_LEN],
    pub ephemeral: [u8; 32],
    pub last_key_generation: u64,
    pub signature: Signature,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sealed {
    /// Which session (the initiator's nonce): tells a stale session's
    /// packets from the current one's without trial decryption.
    pub session: [u8; NONCE_LEN],
    pub counter: u64,
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RelayError {
    #[error("relayed packet not addressed to this host")]
    Misaddressed,
    #[error("bad signature on relayed {0}")]
    BadSignature(&'static str),
    #[error("accept for a handshake not in progress")]
    UnexpectedAccept,
    #[error("the peer's ephemeral key is a low-order point")]
    NonContributory,
    #[error("sealed packet for another session")]
    WrongSession,
    #[error("replayed or reordered sealed packet (counter {got}, last {last})")]
    Replay { got: u64, last: u64 },
    #[error("sealed packet does not authenticate")]
    Forged,
    #[error("malformed relayed packet: {0}")]
    Malformed(String),
}

impl Packet {
    pub fn encode(&self) -> Vec<u8> {
        // Plain data: postcard cannot fail on it.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Packet, RelayError> {
        if bytes.len() > MAX_RELAY_PAYLOAD {
            return Err(RelayError::Malformed("oversized".into()));
        }
        crate::wire::decode_body(bytes).map_err(|e| RelayError::Malformed(e.to_string()))
    }
}

fn init_transcript(init: &Init) -> Vec<u8> {
    let mut t = Vec::with_capacity(128);
    t.extend_from_slice(&init.from.0);
    t.extend_from_slice(&init.to.0);
    t.extend_from_slice(&init.nonce);
    t.extend_from_slice(&init.ephemeral);
    t.extend_from_slice(&init.last_key_generation.to_be_bytes());
    t
}

fn accept_transcript(accept: &Accept) -> Vec<u8> {
    let mut t = Vec::with_capacity(192);
    t.extend_from_slice(&accept.from.0);
    t.extend_from_slice(&accept.to.0);
    t.extend_from_slice(&accept.init_nonce);
    t.extend_from_slice(&accept.init_ephemeral);
    t.extend_from_slice(&accept.nonce);
    t.extend_from_slice(&accept.ephemeral);
    t.extend_from_slice(&accept.last_key_generation.to_be_bytes());
    t
}

/// A's handshake in flight.
pub struct Pending {
    init: Init,
    secret: EphemeralSecret,
}

impl Pending {
    pub fn nonce(&self) -> [u8; NONCE_LEN] {
        self.init.nonce
    }
}

/// Step 1 (A): `None` if this process does not hold `local`'s key.
pub fn initiate(
    local: PeerId,
    remote: PeerId,
    last_key_generation: u64,
) -> Option<(Pending, Init)> {
    let secret = EphemeralSecret::random_from_rng(OsRng);
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let mut init = Init {
        from: local,
        to: remote,
        nonce,
        ephemeral: PublicKey::from(&secret).to_bytes(),
        last_key_generation,
        signature: Signature::NONE,
    };
    init.signature = signed::sign_as(&local, INIT_DOMAIN, &init_transcript(&init))?;
    Some((
        Pending {
            init: init.clone(),
            secret,
        },
        init,
    ))
}

/// Step 2 (B): a session, pending until A's first sealed packet opens
/// under it, and the reply.
pub fn respond(
    local: PeerId,
    init: &Init,
    mesh_secret: &MeshSecret,
    last_key_generation: u64,
) -> Result<(Session, Accept), RelayError> {
    if init.to != local || init.from == local {
        return Err(RelayError::Misaddressed);
    }
    if !signed::verify(
        &init.from,
        INIT_DOMAIN,
        &init_transcript(init),
        &init.signature,
    ) {
        return Err(RelayError::BadSignature("init"));
    }
    let secret = EphemeralSecret::random_from_rng(OsRng);
    let mut nonce = [0u8; NONCE_LEN];
    OsRng.fill_bytes(&mut nonce);
    let mut accept = Accept {
        from: local,
        to: init.from,
        init_nonce: init.nonce,
        init_ephemeral: init.ephemeral,
        nonce,
        ephemeral: PublicKey::from(&secret).to_bytes(),
        last_key_generation,
        signature: Signature::NONE,
    };
    accept.signature = signed::sign_as(&local, ACCEPT_DOMAIN, &accept_transcript(&accept))
        .ok_or(RelayError::BadSignature("accept (no local key)"))?;
    let shared = secret.diffie_hellman(&PublicKey::from(init.ephemeral));
    if !shared.was_contributory() {
        return Err(RelayError::NonContributory);
    }
    let session = Session::derive(
        false,
        shared.as_bytes(),
        mesh_secret,
        &accept,
        init.last_key_generation.max(last_key_generation),
    );
    Ok((session, accept))
}

impl Pending {
    /// Step 3 (A): the established session.
    pub fn complete(
        self,
        accept: &Accept,
        mesh_secret: &MeshSecret,
    ) -> Result<Session, RelayError> {
        if accept.to != self.init.from || accept.from != self.init.to {
            return Err(RelayError::Misaddressed);
        }
        if accept.init_nonce != self.init.nonce || accept.init_ephemeral != self.init.ephemeral {
            return Err(RelayError::UnexpectedAccept);
        }
        if !signed::verify(
            &accept.from,
            ACCEPT_DOMAIN,
            &accept_transcript(accept),
            &accept.signature,
        ) {
            return Err(RelayError::BadSignature("accept"));
        }
        let shared = self
            .secret
            .diffie_hellman(&PublicKey::from(accept.ephemeral));
        if !shared.was_contributory() {
            return Err(RelayError::NonContributory);
        }
        Ok(Session::derive(
            true,
            shared.as_bytes(),
            mesh_secret,
            accept,
            self.init
                .last_key_generation
                .max(accept.last_key_generation),
        ))
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, transcript: &[u8], what: &[u8], out: &mut [u8]) {
    let info = [SESSION_LABEL, transcript, what];
    // Cannot fail: at most 32 bytes, far below HKDF-SHA256's limit.
    if let Ok(okm) = prk.expand(&info, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

fn aead_key(bytes: [u8; 32]) -> LessSafeKey {
    // 32 bytes is ChaCha20-Poly1305's key length: cannot fail.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &bytes).expect("32-byte key"))
}

/// One end of an established (or, at B, pending) relayed session.
pub struct Session {
    /// A's side (initiator of the session and of its link's key exchanges).
    initiator: bool,
    id: [u8; NONCE_LEN],
    send: LessSafeKey,
    recv: LessSafeKey,
    sent: u64,
    /// Highest counter opened; 0 = none yet (counters start at 1).
    received: u64,
    connection_secret: [u8; 32],
    last_key_generation: u64,
}

impl Session {
    fn derive(
        initiator: bool,
        shared: &[u8; 32],
        mesh_secret: &MeshSecret,
        accept: &Accept,
        last_key_generation: u64,
    ) -> Session {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, mesh_secret.as_bytes()).extract(shared);
        let transcript = accept_transcript(accept);
        let (mut a2b, mut b2a, mut conn) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        expand(&prk, &transcript, b"initiator->responder", &mut a2b);
        expand(&prk, &transcript, b"responder->initiator", &mut b2a);
        expand(&prk, &transcript, b"connection secret", &mut conn);
        let (send, recv) = if initiator { (a2b, b2a) } else { (b2a, a2b) };
        Session {
            initiator,
            id: accept.init_nonce,
            send: aead_key(send),
            recv: aead_key(recv),
            sent: 0,
            received: 0,
            connection_secret: conn,
            last_key_generation,
        }
    }

    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    pub fn id(&self) -> [u8; NONCE_LEN] {
        self.id
    }

    /// Replaces the TLS exporter of a direct connection for the link's
    /// key schedule.
    pub fn connection_secret(&self) -> [u8; 32] {
        self.connection_secret
    }

    /// The higher of both sides' last key generations.
    pub fn last_key_generation(&self) -> u64 {
        self.last_key_generation
    }

    /// Whether anything from the peer opened under this session yet.
    pub fn confirmed(&self) -> bool {
        self.received > 0
    }

    fn nonce(counter: u64) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_be_bytes());
        Nonce::assume_unique_for_key(n)
    }

    pub fn seal(&mut self, message: &Message) -> Packet {
        self.sent += 1;
        let mut buf = postcard::to_stdvec(message).unwrap_or_default();
        // Sealing into a Vec cannot fail for in-range lengths.
        let _ = self.send.seal_in_place_append_tag(
            Self::nonce(self.sent),
            Aad::from(self.aad(self.sent)),
            &mut buf,
        );
        Packet::Sealed(Sealed {
            session: self.id,
            counter: self.sent,
            ciphertext: buf,
        })
    }

    fn aad(&self, counter: u64) -> [u8; NONCE_LEN + 8] {
        let mut aad = [0u8; NONCE_LEN + 8];
        aad[..NONCE_LEN].copy_from_slice(&self.id);
        aad[NONCE_LEN..].copy_from_slice(&counter.to_be_bytes());
        aad
    }

    /// Opens a sealed packet: its message, or `None` for a message of a
    /// kind this build does not know (a newer peer's: skipped, counted).
    pub fn open(&mut self, sealed: &Sealed) -> Result<Option<Message>, RelayError> {
        if sealed.session != self.id {
            return Err(RelayError::WrongSession);
        }
        if sealed.counter <= self.received {
            return Err(RelayError::Replay {
                got: sealed.counter,
                last: self.received,
            });
        }
        let mut buf = sealed.ciphertext.clone();
        let plain = self
            .recv
            .open_in_place(
                Self::nonce(sealed.counter),
                Aad::from(self.aad(sealed.counter)),
                &mut buf,
            )
            .map_err(|_| RelayError::Forged)?;
        let message =
            crate::wire::decode_message(plain).map_err(|e| RelayError::Malformed(e.to_string()))?;
        self.received = sealed.counter;
        Ok(message)
    }
}

/// Whether a control message may travel over a relayed session: liveness
/// and key exchange only. Membership and channels reach B through C's own
/// gossip anyway, and keeping them off the relay bounds what C carries.
pub fn relayable(message: &Message) -> bool {
    matches!(
        message,
        Message::Heartbeat | Message::KeyInit(_) | Message::KeyResp(_) | Message::KeyConfirm { .. }
    )
}

/// C's token bucket for one member's relayed packets.
#[derive(Clone, Debug)]
pub struct RelayBudget {
    tokens: f64,
    at: std::time::Instant,
}

impl RelayBudget {
    pub fn new(now: std::time::Instant) -> Self {
        RelayBudget {
            tokens: f64::from(RELAY_BURST),
            at: now,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens =
            (self.tokens + elapsed * f64::from(RELAY_RATE_PER_SEC)).min(f64::from(RELAY_BURST));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why C does not forward a `Relay` message.
#[derive(Debug, PartialEq, Eq)]
pub enum ForwardRefusal {
    Oversized,
    /// To itself, to the sender, or to a member C has no link with.
    NoRoute,
    RateLimited,
}

/// C's decision for `Relay{to, payload}` from `from` (over an
/// authenticated link): the `Relayed` message for `to`'s link, or why not.
pub fn forward(
    local: PeerId,
    from: PeerId,
    to: PeerId,
    payload: Vec<u8>,
    to_is_linked: bool,
    budget: &mut RelayBudget,
    now: std::time::Instant,
) -> Result<Message, ForwardRefusal> {
    if payload.len() > MAX_RELAY_PAYLOAD {
        return Err(ForwardRefusal::Oversized);
    }
    if to == local || to == from || !to_is_linked {
        return Err(ForwardRefusal::NoRoute);
    }
    if !budget.take(now) {
        return Err(ForwardRefusal::RateLimited);
    }
    Ok(Message::Relayed { from, payload })
}

mod control;
pub use control::{Context, Event, RelayControl, HANDSHAKE_RETRY};

#[cfg(test)]
mod tests;
