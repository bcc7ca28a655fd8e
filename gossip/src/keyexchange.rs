//! Data-plane key schedule and its lossless 3-message handover (no I/O).
//!
//! Per pair of hosts and per generation:
//! - both sides contribute an ephemeral x25519 key (forward secrecy: the
//!   ephemeral secrets are dropped right after deriving);
//! - the DH output is mixed with the connection's TLS exporter secret through
//!   HKDF-SHA256 (so the keys are bound to the authenticated connection) with
//!   an `info` that binds both peer ids, the generation, both receiver indices
//!   and the direction — each direction and each generation gets its own key.
//!
//! Handover (the connection's **dialer** is the initiator; see `node`):
//! 1. initiator → `KeyInit{generation, ephemeral, index}`
//! 2. responder derives, installs (`send_now = false`: it can already
//!    *receive* with the new keys but keeps sending with the old ones), then
//!    → `KeyResp{generation, ephemeral, index}`
//! 3. initiator derives, installs with `send_now = true` (the responder is
//!    known to be able to decrypt), → `KeyConfirm{generation}`; the responder
//!    then switches its sending side (`confirm_keys`).
//!
//! No packet is ever sent with keys the receiver does not hold yet.

use std::fmt;

use rand::rngs::OsRng;
use rand::RngCore;
use ring::hkdf;
use x25519_dalek::{EphemeralSecret, PublicKey};

use crate::wire::{KeyInit, KeyResp};
use crate::PeerId;

/// TLS exporter label for the secret mixed into every generation's keys.
pub const EKM_KEYS_LABEL: &[u8] = b"EXPORTER-mesh/1 dataplane keys";
const INFO_LABEL: &[u8] = b"mesh/1 dataplane chacha20poly1305";

/// Keys for one peer and one generation, as handed to the data plane.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    pub generation: u64,
    /// Receiver index we chose: the peer puts it on packets it sends us.
    pub local_index: u32,
    /// Receiver index the peer chose: we put it on packets we send.
    pub remote_index: u32,
    pub send_key: [u8; 32],
    pub recv_key: [u8; 32],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("generation", &self.generation)
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("send_key", &"<redacted>")
            .field("recv_key", &"<redacted>")
            .finish()
    }
}

/// What both sides of one connection agree on before any exchange.
#[derive(Clone)]
pub struct KxContext {
    pub initiator: PeerId,
    pub responder: PeerId,
    /// TLS exporter output under [`EKM_KEYS_LABEL`].
    pub connection_secret: [u8; 32],
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KxError {
    #[error("the peer's ephemeral key is a low-order point")]
    NonContributory,
    #[error("response for generation {got}, expected {expected}")]
    WrongGeneration { expected: u64, got: u64 },
    #[error("generation {got} is not newer than {current}")]
    StaleGeneration { current: u64, got: u64 },
}

struct KeyLen32;
impl hkdf::KeyType for KeyLen32 {
    fn len(&self) -> usize {
        32
    }
}

enum Direction {
    InitiatorToResponder,
    ResponderToInitiator,
}

fn derive_direction(
    ctx: &KxContext,
    shared: &[u8; 32],
    generation: u64,
    initiator_index: u32,
    responder_index: u32,
    direction: Direction,
) -> [u8; 32] {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &ctx.connection_secret).extract(shared);
    let generation = generation.to_be_bytes();
    let initiator_index = initiator_index.to_be_bytes();
    let responder_index = responder_index.to_be_bytes();
    let direction: &[u8] = match direction {
        Direction::InitiatorToResponder => b"initiator->responder",
        Direction::ResponderToInitiator => b"responder->initiator",
    };
    let info: [&[u8]; 7] = [
        INFO_LABEL,
        &ctx.initiator.0,
        &ctx.responder.0,
        &generation,
        &initiator_index,
        &responder_index,
        direction,
    ];
    let mut key = [0u8; 32];
    // Cannot fail: 32 bytes is far below HKDF-SHA256's 255*32 limit.
    if let Ok(okm) = prk.expand(&info, KeyLen32) {
        let _ = okm.fill(&mut key);
    }
    key
}

fn derive(
    ctx: &KxContext,
    shared: &[u8; 32],
    generation: u64,
    initiator_index: u32,
    responder_index: u32,
) -> ([u8; 32], [u8; 32]) {
    (
        derive_direction(
            ctx,
            shared,
            generation,
            initiator_index,
            responder_index,
            Direction::InitiatorToResponder,
        ),
        derive_direction(
            ctx,
            shared,
            generation,
            initiator_index,
            responder_index,
            Direction::ResponderToInitiator,
        ),
    )
}

/// Initiator side of one exchange in flight.
pub struct PendingInit {
    generation: u64,
    index: u32,
    secret: EphemeralSecret,
}

impl PendingInit {
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

/// Step 1: a fresh ephemeral key and receiver index for `generation`.
pub fn initiate(generation: u64) -> (PendingInit, KeyInit) {
    let secret = EphemeralSecret::random_from_rng(OsRng);
    let ephemeral = PublicKey::from(&secret).to_bytes();
    let index = OsRng.next_u32();
    (
        PendingInit {
            generation,
            index,
            secret,
        },
        KeyInit {
            generation,
            ephemeral,
            index,
        },
    )
}

/// Step 2 (responder): keys to install now (`send_now = false`) and the reply.
pub fn respond(ctx: &KxContext, init: &KeyInit) -> Result<(SessionKeys, KeyResp), KxError> {
    let secret = EphemeralSecret::random_from_rng(OsRng);
    let ephemeral = PublicKey::from(&secret).to_bytes();
    let shared = secret.diffie_hellman(&PublicKey::from(init.ephemeral));
    if !shared.was_contributory() {
        return Err(KxError::NonContributory);
    }
    let index = OsRng.next_u32();
    let (i2r, r2i) = derive(ctx, shared.as_bytes(), init.generation, init.index, index);
    Ok((
        SessionKeys {
            generation: init.generation,
            local_index: index,
            remote_index: init.index,
            send_key: r2i,
            recv_key: i2r,
        },
        KeyResp {
            generation: init.generation,
            ephemeral,
            index,
        },
    ))
}

impl PendingInit {
    /// Step 3 (initiator): keys to install with `send_now = true`; then send
    /// `KeyConfirm{generation}`.
    pub fn complete(self, ctx: &KxContext, resp: &KeyResp) -> Result<SessionKeys, KxError> {
        if resp.generation != self.generation {
            return Err(KxError::WrongGeneration {
                expected: self.generation,
                got: resp.generation,
            });
        }
        let shared = self.secret.diffie_hellman(&PublicKey::from(resp.ephemeral));
        if !shared.was_contributory() {
            return Err(KxError::NonContributory);
        }
        let (i2r, r2i) = derive(
            ctx,
            shared.as_bytes(),
            self.generation,
            self.index,
            resp.index,
        );
        Ok(SessionKeys {
            generation: self.generation,
            local_index: self.index,
            remote_index: resp.index,
            send_key: i2r,
            recv_key: r2i,
        })
    }
}

/// Responder bookkeeping for one connection: generations only move forward,
/// and only the generation last answered can be confirmed.
#[derive(Debug, Default)]
pub struct ResponderTrack {
    installed: Option<u64>,
    awaiting_confirm: Option<u64>,
}

impl ResponderTrack {
    /// Checks an incoming `KeyInit` before answering it.
    pub fn accept_init(&self, generation: u64) -> Result<(), KxError> {
        match self.installed {
            Some(current) if generation <= current => Err(KxError::StaleGeneration {
                current,
                got: generation,
            }),
            _ => Ok(()),
        }
    }

    pub fn installed(&mut self, generation: u64) {
        self.installed = Some(generation);
        self.awaiting_confirm = Some(generation);
    }

    /// Returns the generation to confirm, if this confirm matches.
    pub fn confirm(&mut self, generation: u64) -> Option<u64> {
        if self.awaiting_confirm == Some(generation) {
            self.awaiting_confirm = None;
            Some(generation)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> KxContext {
        KxContext {
            initiator: PeerId([1; 32]),
            responder: PeerId([2; 32]),
            connection_secret: [9; 32],
        }
    }

    fn exchange(ctx: &KxContext, generation: u64) -> (SessionKeys, SessionKeys) {
        let (pending, init) = initiate(generation);
        let (responder, resp) = respond(ctx, &init).unwrap();
        let initiator = pending.complete(ctx, &resp).unwrap();
        (initiator, responder)
    }

    #[test]
    fn both_ends_derive_matching_keys() {
        let (i, r) = exchange(&ctx(), 1);
        assert_eq!(i.send_key, r.recv_key);
        assert_eq!(i.recv_key, r.send_key);
        assert_eq!(i.local_index, r.remote_index);
        assert_eq!(i.remote_index, r.local_index);
        assert_eq!(i.generation, 1);
        assert_eq!(r.generation, 1);
    }

    #[test]
    fn keys_differ_per_direction_and_generation() {
        let c = ctx();
        let (g1, _) = exchange(&c, 1);
        let (g2, _) = exchange(&c, 2);
        assert_ne!(g1.send_key, g1.recv_key);
        assert_ne!(g1.send_key, g2.send_key);
        assert_ne!(g1.recv_key, g2.recv_key);
    }

    #[test]
    fn keys_are_bound_to_the_connection() {
        let (pending, init) = initiate(1);
        let (responder, resp) = respond(&ctx(), &init).unwrap();
        let mut other = ctx();
        other.connection_secret = [10; 32];
        let initiator = pending.complete(&other, &resp).unwrap();
        assert_ne!(initiator.send_key, responder.recv_key);
    }

    #[test]
    fn low_order_points_and_wrong_generations_are_refused() {
        let (_, mut init) = initiate(1);
        init.ephemeral = [0; 32];
        assert_eq!(
            respond(&ctx(), &init).unwrap_err(),
            KxError::NonContributory
        );

        let (pending, init) = initiate(3);
        let (_, mut resp) = respond(&ctx(), &init).unwrap();
        resp.generation = 4;
        assert!(matches!(
            pending.complete(&ctx(), &resp),
            Err(KxError::WrongGeneration { .. })
        ));
    }

    #[test]
    fn responder_track_only_moves_forward() {
        let mut track = ResponderTrack::default();
        assert!(track.accept_init(1).is_ok());
        track.installed(1);
        assert!(track.accept_init(1).is_err());
        assert_eq!(track.confirm(2), None);
        assert_eq!(track.confirm(1), Some(1));
        assert_eq!(track.confirm(1), None);
    }

    #[test]
    fn debug_redacts_keys() {
        let (i, _) = exchange(&ctx(), 1);
        let shown = format!("{i:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&format!("{:?}", i.send_key)));
    }
}
