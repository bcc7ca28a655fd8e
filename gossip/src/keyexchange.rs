//! Data-plane key schedule and its lossless 3-message handover (no I/O).
//!
//! Per pair of hosts and per generation:
//! - both sides contribute an ephemeral x25519 key (forward secrecy: the
//!   ephemeral secrets are dropped right after deriving);
//! - the DH output is mixed with the connection's TLS exporter secret through
//!   HKDF-SHA256 (so the keys are bound to the authenticated connection) with
//!   an `info` that binds both peer ids, the generation, both receiver indices
//!   and the direction — each direction and each generation gets its own key;
//! - when both hosts advertise ciphers (see [`crate::cipher`]), the `info`
//!   also binds both advertisements as this side saw them and the cipher
//!   chosen, so a tampered advertisement yields keys that do not match.
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

use crate::cipher::{self, Cipher, CipherOffer};
use crate::wire::{KeyInit, KeyResp};
use crate::PeerId;

/// TLS exporter label for the secret mixed into every generation's keys.
pub const EKM_KEYS_LABEL: &[u8] = b"EXPORTER-mesh/1 dataplane keys";
/// Label of hosts that predate cipher negotiation (ChaCha20-Poly1305 only).
const INFO_LABEL: &[u8] = b"mesh/1 dataplane chacha20poly1305";
/// Label when both hosts advertised ciphers.
const INFO_LABEL_NEGOTIATED: &[u8] = b"mesh/1 dataplane negotiated";

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
    /// The AEAD the keys are for.
    pub cipher: Cipher,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("generation", &self.generation)
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("cipher", &self.cipher)
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
    /// What each side advertised in its hello/ack, as this host saw it
    /// (`None`: a host that predates cipher negotiation).
    pub initiator_ciphers: Option<CipherOffer>,
    pub responder_ciphers: Option<CipherOffer>,
}

impl KxContext {
    /// The AEAD this pair uses.
    pub fn cipher(&self) -> Cipher {
        cipher::negotiate(self.initiator_ciphers, self.responder_ciphers)
    }
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
    let mut info: Vec<&[u8]> = vec![
        INFO_LABEL,
        &ctx.initiator.0,
        &ctx.responder.0,
        &generation,
        &initiator_index,
        &responder_index,
        direction,
    ];
    let negotiated;
    if let (Some(initiator), Some(responder)) = (ctx.initiator_ciphers, ctx.responder_ciphers) {
        info[0] = INFO_LABEL_NEGOTIATED;
        negotiated = [initiator.wire_byte(), responder.wire_byte()];
        info.push(&negotiated);
        info.push(ctx.cipher().name().as_bytes());
    }
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
            cipher: ctx.cipher(),
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
            cipher: ctx.cipher(),
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
            initiator_ciphers: None,
            responder_ciphers: None,
        }
    }

    const FAST: Option<CipherOffer> = Some(CipherOffer::ALL);
    const PORTABLE: Option<CipherOffer> = Some(CipherOffer::PORTABLE);

    fn ctx_with(initiator: Option<CipherOffer>, responder: Option<CipherOffer>) -> KxContext {
        KxContext {
            initiator_ciphers: initiator,
            responder_ciphers: responder,
            ..ctx()
        }
    }

    /// One exchange where each side has its own view of the advertisements.
    fn exchange_views(
        at_initiator: &KxContext,
        at_responder: &KxContext,
    ) -> (SessionKeys, SessionKeys) {
        let (pending, init) = initiate(1);
        let (responder, resp) = respond(at_responder, &init).unwrap();
        let initiator = pending.complete(at_initiator, &resp).unwrap();
        (initiator, responder)
    }

    fn assert_match(i: &SessionKeys, r: &SessionKeys) {
        assert_eq!(i.send_key, r.recv_key);
        assert_eq!(i.recv_key, r.send_key);
        assert_eq!(i.cipher, r.cipher);
    }

    #[test]
    fn both_with_aes_hardware_use_aes_gcm() {
        let c = ctx_with(FAST, FAST);
        let (i, r) = exchange_views(&c, &c);
        assert_match(&i, &r);
        assert_eq!(i.cipher, Cipher::Aes256Gcm);
    }

    #[test]
    fn mixed_and_forced_pairs_use_chacha() {
        for (a, b) in [(FAST, PORTABLE), (PORTABLE, FAST), (PORTABLE, PORTABLE)] {
            let c = ctx_with(a, b);
            let (i, r) = exchange_views(&c, &c);
            assert_match(&i, &r);
            assert_eq!(i.cipher, Cipher::ChaCha20Poly1305);
        }
        // With an older host: ChaCha and the original derivation on both ends.
        let (i, r) = exchange_views(&ctx_with(FAST, None), &ctx_with(FAST, None));
        assert_match(&i, &r);
        assert_eq!(i.cipher, Cipher::ChaCha20Poly1305);
    }

    #[test]
    fn a_downgraded_advertisement_yields_keys_that_do_not_match() {
        // An attacker strips AES from what the responder saw of the
        // initiator's hello: the responder picks ChaCha, the initiator AES,
        // and — because both views are bound into the derivation — even a
        // side that guessed the other's cipher would hold the wrong keys.
        for stripped in [PORTABLE, None] {
            let (i, r) = exchange_views(&ctx_with(FAST, FAST), &ctx_with(stripped, FAST));
            assert_eq!(i.cipher, Cipher::Aes256Gcm);
            assert_eq!(r.cipher, Cipher::ChaCha20Poly1305);
            assert_ne!(i.send_key, r.recv_key);
            assert_ne!(i.recv_key, r.send_key);
        }
        // Same cipher chosen, different views (AES stripped from a host
        // that was forced portable anyway is a no-op, but a changed view of
        // an otherwise equal choice still changes the keys).
        let (i, r) = exchange_views(&ctx_with(FAST, PORTABLE), &ctx_with(PORTABLE, PORTABLE));
        assert_eq!(i.cipher, r.cipher);
        assert_ne!(i.send_key, r.recv_key);
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
