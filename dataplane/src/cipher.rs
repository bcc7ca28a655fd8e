//! The AEADs a keypair can seal with, and which of them this CPU runs fast.
//!
//! AES-256-GCM is several times cheaper than ChaCha20-Poly1305 on CPUs with
//! AES and carry-less multiply instructions, and much slower without them;
//! ChaCha20-Poly1305 is fast everywhere. Each pair of hosts picks the one
//! both run fast (the control plane negotiates it and binds the choice into
//! the key derivation); the data plane only executes the choice.

use ring::aead::{Algorithm, AES_256_GCM, CHACHA20_POLY1305};

/// One AEAD of the wire protocol. Both take 32-byte keys, 96-bit nonces
/// and produce 16-byte tags, so the datagram format is the same for both.
#[derive(Copy, Clone, Debug, Default, Eq, PartialEq, Hash)]
pub enum Cipher {
    /// Portable: fast in software on every CPU.
    #[default]
    ChaCha20Poly1305,
    /// Fast only with AES and carry-less multiply in hardware.
    Aes256Gcm,
}

#[derive(Debug, thiserror::Error)]
#[error("unknown cipher {0:?} (expected \"chacha20-poly1305\" or \"aes-256-gcm\")")]
pub struct UnknownCipher(pub String);

impl Cipher {
    pub const ALL: [Cipher; 2] = [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm];

    /// Stable lower-case name, as used in config files and `meshctl status`.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// Datagrams one key may seal. ChaCha20-Poly1305: the counter space
    /// the replay window covers (2^60, as WireGuard). AES-256-GCM: 2^36, so
    /// that even 64 KB datagrams stay below 2^48 AES blocks per key, where
    /// the distinguishing advantage is at most 2^-32. Never reached in
    /// practice: keys are replaced every 110 s (at most ~2^31 datagrams at
    /// 10 Mpps), REJECT_AFTER_TIME ends them at 180 s.
    pub fn message_limit(self) -> u64 {
        match self {
            Cipher::ChaCha20Poly1305 => crate::keypair::REJECT_AFTER_MESSAGES,
            Cipher::Aes256Gcm => 1 << 36,
        }
    }

    pub(crate) fn algorithm(self) -> &'static Algorithm {
        match self {
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &AES_256_GCM,
        }
    }

    /// The ciphers this host runs fast, best first: AES-256-GCM only where
    /// the CPU has AES and carry-less multiply; ChaCha20-Poly1305 always.
    pub fn fast_here() -> Vec<Cipher> {
        if aes_gcm_in_hardware() {
            vec![Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305]
        } else {
            vec![Cipher::ChaCha20Poly1305]
        }
    }
}

impl std::fmt::Display for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Cipher {
    type Err = UnknownCipher;
    fn from_str(text: &str) -> Result<Cipher, UnknownCipher> {
        Cipher::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| UnknownCipher(text.to_string()))
    }
}

/// True when the CPU has the instructions that make AES-GCM fast.
pub fn aes_gcm_in_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for cipher in Cipher::ALL {
            assert_eq!(cipher.name().parse::<Cipher>().unwrap(), cipher);
        }
        assert_eq!("AES-256-GCM".parse::<Cipher>().unwrap(), Cipher::Aes256Gcm);
        let err = "rot13".parse::<Cipher>().unwrap_err();
        assert!(err.to_string().contains("rot13"));
    }

    #[test]
    fn chacha_is_always_offered() {
        assert!(Cipher::fast_here().contains(&Cipher::ChaCha20Poly1305));
        assert_eq!(
            Cipher::fast_here().contains(&Cipher::Aes256Gcm),
            aes_gcm_in_hardware()
        );
    }
}
