//! Per-direction session keys as delivered by the control plane, and the
//! keypair state the data plane keeps for each: AEAD keys (of the cipher
//! negotiated for the pair), send counter, replay window, birth time.
//!
//! Nothing here takes a lock: the send counter is one atomic and the replay
//! window is lock-free, so any number of workers may seal and open with one
//! keypair at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey};

use crate::cipher::Cipher;
use crate::gcm_tag::GcmTagger;
use crate::replay::{ReplayReject, ReplayWindow};
use crate::wire::{nonce_bytes, HEADER_LEN, TAG_LEN};

/// A keypair older than this is refused for sending and receiving. The
/// control plane replaces keys well before (gossip rekeys every 110 s).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Counters at or beyond this are refused for sending and receiving
/// (ChaCha20-Poly1305; see [`Cipher::message_limit`] for AES-256-GCM).
pub const REJECT_AFTER_MESSAGES: u64 = crate::replay::MAX_COUNTER;

/// Keys for one session with one peer, one per direction.
#[derive(Clone)]
pub struct SessionKeys {
    /// Monotonic per peer; identifies the session in `confirm_keys` and stats.
    pub generation: u64,
    /// Index peers put in packets to us.
    pub local_index: u32,
    /// Index we put in packets to them.
    pub remote_index: u32,
    pub send_key: [u8; 32],
    pub recv_key: [u8; 32],
    /// The AEAD both hosts agreed on for this session.
    pub cipher: Cipher,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// Why a keypair refused to seal or open.
#[derive(Copy, Clone, Debug, Eq, PartialEq)]
pub enum KeyRefusal {
    /// Older than REJECT_AFTER_TIME or counter past REJECT_AFTER_MESSAGES.
    Stale,
    BadTag,
    Replay(ReplayReject),
}

/// Live state for one session. Shared between the send and receive paths
/// of every worker; everything mutable per packet is atomic.
pub struct Keypair {
    pub generation: u64,
    pub cipher: Cipher,
    pub local_index: u32,
    pub remote_index: u32,
    pub created: Instant,
    send: LessSafeKey,
    recv: LessSafeKey,
    /// Kept to derive per-network keys when a network secret arrives.
    send_raw: [u8; 32],
    recv_raw: [u8; 32],
    /// Envelope tags under AES-256-GCM (None: ring computes them).
    send_tagger: Option<Box<GcmTagger>>,
    recv_tagger: Option<Box<GcmTagger>>,
    next_send_counter: AtomicU64,
    /// Counters at or beyond this are refused: the cipher's message limit.
    message_limit: u64,
    replay: ReplayWindow,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("generation", &self.generation)
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl Keypair {
    pub fn new(keys: &SessionKeys, now: Instant) -> Keypair {
        let key = |bytes: &[u8; 32]| aead_key(keys.cipher, bytes);
        let tagger = |bytes: &[u8; 32]| match keys.cipher {
            Cipher::Aes256Gcm => GcmTagger::new(bytes).map(Box::new),
            Cipher::ChaCha20Poly1305 => None,
        };
        Keypair {
            generation: keys.generation,
            cipher: keys.cipher,
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            created: now,
            send: key(&keys.send_key),
            recv: key(&keys.recv_key),
            send_raw: keys.send_key,
            recv_raw: keys.recv_key,
            send_tagger: tagger(&keys.send_key),
            recv_tagger: tagger(&keys.recv_key),
            next_send_counter: AtomicU64::new(0),
            message_limit: keys.cipher.message_limit(),
            replay: ReplayWindow::default(),
        }
    }

    /// The keys of this session for a network that has a secret of its
    /// own: HKDF-SHA256 with the secret as salt, so only hosts that hold the
    /// secret (the network's members) can open its frames, whatever pairwise
    /// session they share.
    pub fn derive_network_keys(&self, secret: &[u8; 32], net: u32) -> NetworkKeys {
        NetworkKeys {
            send: network_key(self.cipher, &self.send_raw, secret, net),
            recv: network_key(self.cipher, &self.recv_raw, secret, net),
        }
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) >= REJECT_AFTER_TIME
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    /// Number of counters handed out for sending so far.
    pub fn messages_sent(&self) -> u64 {
        self.next_send_counter.load(Ordering::Relaxed)
    }

    /// Reserves the next send counter, refusing once the key is worn out.
    pub fn take_send_counter(&self, now: Instant) -> Result<u64, KeyRefusal> {
        if self.is_expired(now) {
            return Err(KeyRefusal::Stale);
        }
        let counter = self.next_send_counter.fetch_add(1, Ordering::Relaxed);
        if counter >= self.message_limit {
            // Keep it pinned so the counter can never wrap around to reuse a nonce.
            self.next_send_counter
                .store(self.message_limit, Ordering::Relaxed);
            return Err(KeyRefusal::Stale);
        }
        Ok(counter)
    }

    /// Encrypts `payload` in place under `counter` with `header` as associated data.
    pub fn seal(
        &self,
        network: Option<&NetworkKeys>,
        counter: u64,
        header: &[u8; HEADER_LEN],
        payload: &mut [u8],
    ) -> [u8; TAG_LEN] {
        let nonce = Nonce::assume_unique_for_key(nonce_bytes(counter));
        let key = network.map(|n| &n.send).unwrap_or(&self.send);
        let tag: Tag = key
            .seal_in_place_separate_tag(nonce, Aad::from(header), payload)
            // ring only fails for inputs beyond the AEAD's 64 GiB size limit.
            .expect("frame far below the AEAD size limit");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Verifies and decrypts `ciphertext_and_tag` in place, then applies the
    /// replay window. Returns the plaintext length.
    pub fn open(
        &self,
        network: Option<&NetworkKeys>,
        counter: u64,
        header: &[u8; HEADER_LEN],
        ciphertext_and_tag: &mut [u8],
        now: Instant,
    ) -> Result<usize, KeyRefusal> {
        if self.is_expired(now) {
            return Err(KeyRefusal::Stale);
        }
        let nonce = Nonce::assume_unique_for_key(nonce_bytes(counter));
        let key = network.map(|n| &n.recv).unwrap_or(&self.recv);
        let plaintext_len = key
            .open_in_place(nonce, Aad::from(header), ciphertext_and_tag)
            .map_err(|_| KeyRefusal::BadTag)?
            .len();
        // Authenticated: now (and only now) the counter is trusted. Checking the
        // limit here keeps forged counters counted as bad tags.
        if counter >= self.message_limit {
            return Err(KeyRefusal::Stale);
        }
        self.replay.accept(counter).map_err(KeyRefusal::Replay)?;
        Ok(plaintext_len)
    }

    /// A tag over `aad` alone (empty plaintext): authenticates a relay
    /// envelope without re-encrypting the sealed datagram inside it.
    pub fn tag_only(&self, counter: u64, aad: &[u8]) -> [u8; TAG_LEN] {
        if let Some(tagger) = &self.send_tagger {
            return tagger.tag(&nonce_bytes(counter), aad);
        }
        let nonce = Nonce::assume_unique_for_key(nonce_bytes(counter));
        let tag: Tag = self
            .send
            .seal_in_place_separate_tag(nonce, Aad::from(aad), &mut [])
            .expect("envelope far below the AEAD size limit");
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Verifies a [`Self::tag_only`] tag, then applies the replay window.
    pub fn verify_only(
        &self,
        counter: u64,
        aad: &[u8],
        tag: &[u8; TAG_LEN],
        now: Instant,
    ) -> Result<(), KeyRefusal> {
        self.verify_tag(counter, aad, tag, now)?;
        self.accept_counter(counter)
    }

    /// Applies the replay window to a counter whose tag verified (a
    /// compact envelope's, once the datagram inside it authenticated too).
    pub fn accept_counter(&self, counter: u64) -> Result<(), KeyRefusal> {
        self.replay.accept(counter).map_err(KeyRefusal::Replay)
    }

    /// Verifies a [`Self::tag_only`] tag without touching the replay window.
    pub fn verify_tag(
        &self,
        counter: u64,
        aad: &[u8],
        tag: &[u8; TAG_LEN],
        now: Instant,
    ) -> Result<(), KeyRefusal> {
        if self.is_expired(now) {
            return Err(KeyRefusal::Stale);
        }
        let authentic = match &self.recv_tagger {
            Some(tagger) => tagger.verify(&nonce_bytes(counter), aad, tag),
            None => {
                let nonce = Nonce::assume_unique_for_key(nonce_bytes(counter));
                let mut tag_copy = *tag;
                self.recv
                    .open_in_place(nonce, Aad::from(aad), &mut tag_copy)
                    .is_ok()
            }
        };
        if !authentic {
            return Err(KeyRefusal::BadTag);
        }
        if counter >= self.message_limit {
            return Err(KeyRefusal::Stale);
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn force_send_counter(&self, counter: u64) {
        self.next_send_counter.store(counter, Ordering::Relaxed);
    }
}

/// Per-network keys of one keypair (see [`Keypair::derive_network_keys`]).
pub struct NetworkKeys {
    send: LessSafeKey,
    recv: LessSafeKey,
}

impl std::fmt::Debug for NetworkKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetworkKeys(<redacted>)")
    }
}

fn aead_key(cipher: Cipher, bytes: &[u8; 32]) -> LessSafeKey {
    // Infallible: both AEADs take exactly 32-byte keys.
    LessSafeKey::new(UnboundKey::new(cipher.algorithm(), bytes).expect("32-byte key"))
}

fn network_key(cipher: Cipher, session_key: &[u8; 32], secret: &[u8; 32], net: u32) -> LessSafeKey {
    let out = hkdf_sha256_32(
        secret,
        session_key,
        &[b"mesh network key v1", &net.to_be_bytes()],
    );
    aead_key(cipher, &out)
}

/// HKDF-SHA256 (RFC 5869) with a 32-byte output: one AEAD key.
pub fn hkdf_sha256_32(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> [u8; 32] {
    struct Len32;
    impl ring::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let prk = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = [0u8; 32];
    // Infallible: 32 bytes is far below HKDF-SHA256's output limit.
    prk.expand(info, Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32-byte HKDF output");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SessionKeys {
        SessionKeys {
            generation: 1,
            local_index: 10,
            remote_index: 20,
            send_key: [0x5a; 32],
            recv_key: [0xa5; 32],
            cipher: Cipher::ChaCha20Poly1305,
        }
    }

    fn aes_keys() -> SessionKeys {
        SessionKeys {
            cipher: Cipher::Aes256Gcm,
            ..keys()
        }
    }

    /// The other end of `keys`: its send key is our receive key.
    fn mirrored(keys: &SessionKeys) -> SessionKeys {
        SessionKeys {
            local_index: keys.remote_index,
            remote_index: keys.local_index,
            send_key: keys.recv_key,
            recv_key: keys.send_key,
            ..keys.clone()
        }
    }

    /// As [`Keypair::new`], with ring's tags instead of `gcm_tag.rs`'s.
    fn with_ring(keys: &SessionKeys, now: Instant) -> Keypair {
        Keypair {
            send_tagger: None,
            recv_tagger: None,
            ..Keypair::new(keys, now)
        }
    }

    /// Envelope tags, both ways, between the fast tagger and ring (a host
    /// without PCLMULQDQ): the same bytes, and any change refused.
    #[test]
    fn envelope_tags_verify_across_tagger_and_ring() {
        let now = Instant::now();
        let (a_keys, b_keys) = (aes_keys(), mirrored(&aes_keys()));
        let aad: Vec<u8> = (0..1420u32).map(|i| (i * 7) as u8).collect();
        for (a, b) in [
            (Keypair::new(&a_keys, now), Keypair::new(&b_keys, now)),
            (Keypair::new(&a_keys, now), with_ring(&b_keys, now)),
            (with_ring(&a_keys, now), Keypair::new(&b_keys, now)),
        ] {
            for (counter, (from, to)) in [(&a, &b), (&b, &a)].into_iter().enumerate() {
                let counter = counter as u64;
                let tag = from.tag_only(counter, &aad);
                let mut bad_tag = tag;
                bad_tag[3] ^= 0x10;
                let mut bad_aad = aad.clone();
                bad_aad[700] ^= 1;
                assert_eq!(
                    to.verify_only(counter, &aad, &bad_tag, now),
                    Err(KeyRefusal::BadTag)
                );
                assert_eq!(
                    to.verify_only(counter, &bad_aad, &tag, now),
                    Err(KeyRefusal::BadTag)
                );
                assert_eq!(
                    to.verify_only(counter + 1, &aad, &tag, now),
                    Err(KeyRefusal::BadTag)
                );
                assert_eq!(to.verify_only(counter, &aad, &tag, now), Ok(()));
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn aes_keypairs_use_the_fast_tagger_where_the_cpu_has_it() {
        let has = std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("ssse3");
        let keypair = Keypair::new(&aes_keys(), Instant::now());
        assert_eq!(keypair.send_tagger.is_some(), has);
        assert_eq!(keypair.recv_tagger.is_some(), has);
        let chacha = Keypair::new(&keys(), Instant::now());
        assert!(chacha.send_tagger.is_none() && chacha.recv_tagger.is_none());
    }

    #[test]
    fn debug_redacts_key_material() {
        let text = format!("{:?}", keys());
        assert!(text.contains("redacted"));
        assert!(!text.contains("90")); // 0x5a
        assert!(!text.contains("165")); // 0xa5
    }

    #[test]
    fn send_counter_refused_past_message_limit() {
        let now = Instant::now();
        let keypair = Keypair::new(&keys(), now);
        assert_eq!(keypair.take_send_counter(now), Ok(0));
        keypair.force_send_counter(REJECT_AFTER_MESSAGES - 1);
        assert_eq!(
            keypair.take_send_counter(now),
            Ok(REJECT_AFTER_MESSAGES - 1)
        );
        assert_eq!(keypair.take_send_counter(now), Err(KeyRefusal::Stale));
        assert_eq!(keypair.take_send_counter(now), Err(KeyRefusal::Stale));
    }

    #[test]
    fn refused_after_reject_time() {
        let now = Instant::now();
        let keypair = Keypair::new(&keys(), now);
        assert!(keypair
            .take_send_counter(now + REJECT_AFTER_TIME - Duration::from_millis(1))
            .is_ok());
        assert_eq!(
            keypair.take_send_counter(now + REJECT_AFTER_TIME),
            Err(KeyRefusal::Stale)
        );
    }
}
