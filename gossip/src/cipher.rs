//! Per-peer choice of the data-plane AEAD.
//!
//! Each host advertises the AEADs it runs fast under the `ciphers` key of
//! its member record's meta (comma-separated names, e.g.
//! `aes-256-gcm,chacha20-poly1305`). The record a host sends in its hello
//! or ack — inside the authenticated TLS stream — is the advertisement the
//! link uses. A pair seals with AES-256-GCM when both advertise it, else
//! with ChaCha20-Poly1305. Both advertisements, as each side saw them, and
//! the choice are mixed into every key derivation (see
//! [`crate::keyexchange`]): if anyone altered what one side saw, the two
//! sides derive different keys and no datagram opens — a downgrade fails
//! closed instead of succeeding quietly.
//!
//! A host without the meta key (an older build) advertises nothing; pairs
//! with it use ChaCha20-Poly1305 and the original key derivation.

use std::collections::BTreeMap;

/// The member-record meta key carrying a host's [`CipherOffer`].
pub const META_CIPHERS: &str = "ciphers";

/// A data-plane AEAD.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Cipher {
    #[default]
    ChaCha20Poly1305,
    Aes256Gcm,
}

impl Cipher {
    pub const ALL: [Cipher; 2] = [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm];

    /// The stable name used on the wire and in configs.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    pub fn from_name(name: &str) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.name() == name)
    }

    fn bit(self) -> u8 {
        match self {
            Cipher::ChaCha20Poly1305 => 1,
            Cipher::Aes256Gcm => 2,
        }
    }
}

/// The set of AEADs one host advertises. ChaCha20-Poly1305 is always in it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CipherOffer(u8);

impl CipherOffer {
    /// Only the portable cipher (forced by config, or no AES hardware).
    pub const PORTABLE: CipherOffer = CipherOffer(1);
    /// Every cipher this build knows (a host with AES hardware).
    pub const ALL: CipherOffer = CipherOffer(3);

    /// An offer of `ciphers`; ChaCha20-Poly1305 is added if missing.
    pub fn new(ciphers: &[Cipher]) -> CipherOffer {
        let bits = ciphers
            .iter()
            .fold(Cipher::ChaCha20Poly1305.bit(), |acc, c| acc | c.bit());
        CipherOffer(bits)
    }

    pub fn contains(self, cipher: Cipher) -> bool {
        self.0 & cipher.bit() != 0
    }

    /// The meta value: names, best first.
    pub fn to_meta(self) -> String {
        [Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305]
            .into_iter()
            .filter(|c| self.contains(*c))
            .map(Cipher::name)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Parses a meta value; unknown names (ciphers of newer builds) are skipped.
    pub fn from_meta(value: &str) -> CipherOffer {
        let known: Vec<Cipher> = value
            .split(',')
            .filter_map(|name| Cipher::from_name(name.trim()))
            .collect();
        CipherOffer::new(&known)
    }

    /// The offer in a member record's meta; `None` for a host that predates
    /// cipher negotiation.
    pub fn of_meta(meta: &BTreeMap<String, String>) -> Option<CipherOffer> {
        meta.get(META_CIPHERS).map(|v| CipherOffer::from_meta(v))
    }

    /// The byte mixed into the key derivation.
    pub fn wire_byte(self) -> u8 {
        self.0
    }
}

/// What a pair seals with: AES-256-GCM only if both offer it.
pub fn negotiate(a: Option<CipherOffer>, b: Option<CipherOffer>) -> Cipher {
    match (a, b) {
        (Some(a), Some(b)) if a.contains(Cipher::Aes256Gcm) && b.contains(Cipher::Aes256Gcm) => {
            Cipher::Aes256Gcm
        }
        _ => Cipher::ChaCha20Poly1305,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: CipherOffer = CipherOffer::ALL;

    #[test]
    fn both_aes_choose_aes_anything_else_chacha() {
        assert_eq!(negotiate(Some(FAST), Some(FAST)), Cipher::Aes256Gcm);
        // Mixed mesh: one host without AES hardware (or forced portable).
        assert_eq!(
            negotiate(Some(FAST), Some(CipherOffer::PORTABLE)),
            Cipher::ChaCha20Poly1305
        );
        assert_eq!(
            negotiate(Some(CipherOffer::PORTABLE), Some(FAST)),
            Cipher::ChaCha20Poly1305
        );
        // A host of an older build advertises nothing.
        assert_eq!(negotiate(Some(FAST), None), Cipher::ChaCha20Poly1305);
    }

    #[test]
    fn meta_round_trips_and_tolerates_unknown_names() {
        assert_eq!(FAST.to_meta(), "aes-256-gcm,chacha20-poly1305");
        assert_eq!(CipherOffer::from_meta(&FAST.to_meta()), FAST);
        assert_eq!(
            CipherOffer::from_meta("future-aead, aes-256-gcm"),
            FAST,
            "unknown names are skipped, chacha is implied"
        );
        assert_eq!(CipherOffer::from_meta(""), CipherOffer::PORTABLE);
        assert_eq!(CipherOffer::new(&[Cipher::Aes256Gcm]), FAST);
        let mut meta = BTreeMap::new();
        assert_eq!(CipherOffer::of_meta(&meta), None);
        meta.insert(META_CIPHERS.to_string(), "chacha20-poly1305".to_string());
        assert_eq!(CipherOffer::of_meta(&meta), Some(CipherOffer::PORTABLE));
    }
}
