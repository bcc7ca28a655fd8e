//! Signatures by host identities: every member record and every replicated
//! write carries an Ed25519 signature by the host it speaks for, checked
//! before it is merged, so a member can relay another host's statements but
//! never forge or alter them.
//!
//! Signing happens deep inside merges and CRDT writes that only know the
//! writer's [`PeerId`], so the keys this process holds are kept in a
//! process-wide keyring: every [`crate::Identity`] loaded or generated here
//! registers its key, and [`sign_as`] signs for any id whose key is held
//! (one in a daemon; several in tests that run many hosts in one process).
//! A write by an id whose key is not held carries [`Signature::NONE`], which
//! no verifier accepts.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::PeerId;

/// Bytes of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl Signature {
    /// The placeholder of an unsigned statement; never verifies.
    pub const NONE: Signature = Signature([0; SIGNATURE_LEN]);
}

impl Default for Signature {
    fn default() -> Self {
        Signature::NONE
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..6]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{SIGNATURE_LEN} signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let arr: [u8; SIGNATURE_LEN] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature(arr))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Signature, A::Error> {
                let mut arr = [0u8; SIGNATURE_LEN];
                for (i, slot) in arr.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                Ok(Signature(arr))
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

type Keyring = RwLock<HashMap<PeerId, Arc<Ed25519KeyPair>>>;

fn keyring() -> &'static Keyring {
    static KEYRING: OnceLock<Keyring> = OnceLock::new();
    KEYRING.get_or_init(Default::default)
}

/// Makes `pair` sign for `id` (called by [`crate::Identity`]).
pub(crate) fn register(id: PeerId, pair: Arc<Ed25519KeyPair>) {
    keyring()
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, pair);
}

/// Signs `message` under `domain` as `id`, if this process holds its key.
pub fn sign_as(id: &PeerId, domain: &str, message: &[u8]) -> Option<Signature> {
    let pair = keyring()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(id)?
        .clone();
    Some(sign_with(&pair, domain, message))
}

pub(crate) fn sign_with(pair: &Ed25519KeyPair, domain: &str, message: &[u8]) -> Signature {
    let sig = pair.sign(&domain_separated(domain, message));
    let mut arr = [0u8; SIGNATURE_LEN];
    arr.copy_from_slice(sig.as_ref());
    Signature(arr)
}

/// Whether `sig` is `id`'s signature of `message` under `domain`.
pub fn verify(id: &PeerId, domain: &str, message: &[u8], sig: &Signature) -> bool {
    if *sig == Signature::NONE {
        return false;
    }
    UnparsedPublicKey::new(&ED25519, id.0)
        .verify(&domain_separated(domain, message), &sig.0)
        .is_ok()
}

/// `domain ‖ 0 ‖ message`: a signature made for one kind of statement can
/// never be replayed as another.
fn domain_separated(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 1 + message.len());
    out.extend_from_slice(domain.as_bytes());
    out.push(0);
    out.extend_from_slice(message);
    out
}

/// Statements dropped because they failed verification or validation,
/// over the life of the process (exported as a metric by the daemon).
pub fn rejected_total() -> u64 {
    REJECTED.load(std::sync::atomic::Ordering::Relaxed)
}

static REJECTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Authors remembered for log-once (each a 32-byte id and a channel name).
const MAX_LOGGED_AUTHORS: usize = 4096;

/// Counts a dropped statement that `from` sent us on `what` (a channel or
/// `members`), and logs it — once per sender and channel, so a misbehaving
/// member cannot flood the log by repeating itself.
pub fn note_rejection(from: PeerId, what: &str, reason: &str) {
    REJECTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    static LOGGED: OnceLock<std::sync::Mutex<std::collections::HashSet<(PeerId, String)>>> =
        OnceLock::new();
    let first = {
        let mut logged = LOGGED
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Writers are whatever a peer puts in a write: bound what is kept
        // past the bound only the counter moves.
        logged.len() < MAX_LOGGED_AUTHORS && logged.insert((from, what.to_string()))
    };
    if first {
        tracing::warn!(peer = %from, channel = what, reason, "dropped invalid replicated state (logged once per peer and channel)");
    }
}

/// A statement of any type with its author and the author's signature: the
/// envelope for things a host asserts that others relay (e.g. a grant).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed<T> {
    pub author: PeerId,
    pub body: T,
    pub signature: Signature,
}

impl<T: Serialize> Signed<T> {
    /// Signs `body` as `author` (whose key this process must hold).
    pub fn new(author: PeerId, domain: &str, body: T) -> Option<Signed<T>> {
        let bytes = postcard::to_stdvec(&body).ok()?;
        let signature = sign_as(&author, domain, &bytes)?;
        Some(Signed {
            author,
            body,
            signature,
        })
    }

    /// Whether the signature is the author's over this body.
    pub fn verify(&self, domain: &str) -> bool {
        postcard::to_stdvec(&self.body)
            .map(|bytes| verify(&self.author, domain, &bytes, &self.signature))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn signatures_verify_only_for_their_signer_domain_and_message() {
        let a = Identity::generate().unwrap().peer_id();
        let b = Identity::generate().unwrap().peer_id();
        let sig = sign_as(&a, "test", b"hello").unwrap();
        assert!(verify(&a, "test", b"hello", &sig));
        assert!(!verify(&b, "test", b"hello", &sig));
        assert!(!verify(&a, "other", b"hello", &sig));
        assert!(!verify(&a, "test", b"hellO", &sig));
        assert!(!verify(&a, "test", b"hello", &Signature::NONE));
        assert!(sign_as(&PeerId([9; 32]), "test", b"x").is_none());
    }

    #[test]
    fn envelopes_round_trip_and_detect_tampering() {
        let a = Identity::generate().unwrap().peer_id();
        let signed = Signed::new(a, "grant", (1u32, "x".to_string())).unwrap();
        let bytes = postcard::to_stdvec(&signed).unwrap();
        let back: Signed<(u32, String)> = postcard::from_bytes(&bytes).unwrap();
        assert!(back.verify("grant"));
        let mut forged = back.clone();
        forged.body.0 = 2;
        assert!(!forged.verify("grant"));
        assert!(postcard::from_bytes::<Signature>(&[3, 1, 2, 3]).is_err());
    }
}
