//! Per-direction session keys as delivered by the control plane, and the
//! keypair state the data plane keeps for each: AEAD keys, send counter,
//! replay window, birth time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};

use crate::replay::{ReplayReject, ReplayWindow};
use crate::wire::{nonce_bytes, HEADER_LEN, TAG_LEN};

/// A keypair older than this is refused for sending and receiving. The
/// control plane replaces keys well before (gossip rekeys every 110 s).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Counters at or beyond this are refused for sending and receiving.
pub const REJECT_AFTER_MESSAGES: u64 = 1 << 60;

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
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionKeys")
            .field("generation", &self.generation)
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
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

/// Live state for one session. Shared between the send and receive paths;
/// everything mutable per packet is atomic or behind its own small lock.
pub struct Keypair {
    pub generation: u64,
    pub local_index: u32,
    pub remote_index: u32,
    pub created: Instant,
    send: LessSafeKey,
    recv: LessSafeKey,
    /// Kept to derive per-network keys when a network secret arrives.
    send_raw: [u8; 32],
    recv_raw: [u8; 32],
    next_send_counter: AtomicU64,
    replay: Mutex<ReplayWindow>,
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("generation", &self.generation)
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .finish_non_exhaustive()
    }
}

impl Keypair {
    pub fn new(keys: &SessionKeys, now: Instant) -> Keypair {
        let key = |bytes: &[u8; 32]| {
            // Infallible: CHACHA20_POLY1305 takes exactly 32 bytes.
            LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32-byte key"))
        };
        Keypair {
            generation: keys.generation,
            local_index: keys.local_index,
            remote_index: keys.remote_index,
            created: now,
            send: key(&keys.send_key),
            recv: key(&keys.recv_key),
            send_raw: keys.send_key,
            recv_raw: keys.recv_key,
            next_send_counter: AtomicU64::new(0),
            replay: Mutex::new(ReplayWindow::default()),
        }
    }

    /// The keys of this session for a network that has a secret of its
    /// own: HKDF-SHA256 with the secret as salt, so only hosts that hold the
    /// secret (the network's members) can open its frames, whatever pairwise
    /// session they share.
    pub fn derive_network_keys(&self, secret: &[u8; 32], net: u32) -> NetworkKeys {
        NetworkKeys {
            send: network_key(&self.send_raw, secret, net),
            recv: network_key(&self.recv_raw, secret, net),
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
        if counter >= REJECT_AFTER_MESSAGES {
            // Keep it pinned so the counter can never wrap around to reuse a nonce.
            self.next_send_counter
                .store(REJECT_AFTER_MESSAGES, Ordering::Relaxed);
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
            // ring only fails for inputs beyond ChaCha20's 256 GiB limit.
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
        if counter >= REJECT_AFTER_MESSAGES {
            return Err(KeyRefusal::Stale);
        }
        let mut window = self
            .replay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        window.accept(counter).map_err(KeyRefusal::Replay)?;
        Ok(plaintext_len)
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

fn network_key(session_key: &[u8; 32], secret: &[u8; 32], net: u32) -> LessSafeKey {
    let out = hkdf_sha256_32(
        secret,
        session_key,
        &[b"mesh network key v1", &net.to_be_bytes()],
    );
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &out).expect("32-byte key"))
}

/// HKDF-SHA256 (RFC 5869) with a 32-byte output: a ChaCha20-Poly1305 key.
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
        }
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
