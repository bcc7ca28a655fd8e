//! Persistent host identity: an Ed25519 keypair whose public key *is* the peer id.
//!
//! The same key signs the host's self-signed TLS certificate, so the TLS
//! handshake proves possession of the key behind a [`PeerId`]; no CA is involved.
//! Membership in the mesh is proven separately with the mesh secret (see `auth`).

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::Error;

/// A host's id: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId(pub [u8; 32]);

impl PeerId {
    /// Full lowercase hex (64 chars).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PeerId {
    /// Short form (first 12 hex chars), enough to tell hosts apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..6]))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

impl FromStr for PeerId {
    type Err = Error;
    /// Accepts the full 64-char hex form only (prefix lookup needs a member list:
    /// resolve prefixes against `Node::members()`).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bytes = hex::decode(s.trim())
            .map_err(|e| Error::Identity(format!("peer id is not hex: {e}")))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Identity("peer id must be 64 hex characters".into()))?;
        Ok(PeerId(arr))
    }
}

/// The host's keypair (PKCS#8 v2 DER, as produced by ring).
pub struct Identity {
    pkcs8: Vec<u8>,
    public: [u8; 32],
    pair: Arc<Ed25519KeyPair>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            pkcs8: self.pkcs8.clone(),
            public: self.public,
            pair: self.pair.clone(),
        }
    }
}

impl Identity {
    /// A fresh in-memory identity (tests, or hosts without a state dir).
    pub fn generate() -> Result<Identity, Error> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| Error::Identity("key generation failed".into()))?;
        Self::from_pkcs8(pkcs8.as_ref().to_vec())
    }

    /// The identity whose private key is `seed` (RFC 8032): deterministic
    /// hosts for tests and simulations.
    pub fn from_seed(seed: [u8; 32]) -> Result<Identity, Error> {
        // PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410, section 7).
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&seed);
        Self::from_pkcs8(pkcs8)
    }

    /// Loads the identity at `path`, creating it (mode 0600) if missing.
    pub fn load_or_create(path: &Path) -> Result<Identity, Error> {
        match std::fs::read(path) {
            Ok(bytes) => Self::from_pkcs8(bytes)
                .map_err(|e| Error::Identity(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Self::generate()?;
                if let Some(dir) = path.parent() {
                    if !dir.as_os_str().is_empty() {
                        std::fs::create_dir_all(dir)?;
                    }
                }
                mesh_sys::fs::write_atomic(path, &identity.pkcs8, 0o600)?;
                tracing::info!(peer = %identity.peer_id(), path = %path.display(), "created host identity");
                Ok(identity)
            }
            Err(e) => Err(Error::Io(e)),
        }
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Identity, Error> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|e| Error::Identity(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let public: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| Error::Identity("unexpected public key length".into()))?;
        let pair = Arc::new(pair);
        crate::signed::register(PeerId(public), pair.clone());
        Ok(Identity {
            pkcs8,
            public,
            pair,
        })
    }

    /// Signs `message` under `domain` (see [`crate::signed`]).
    pub fn sign(&self, domain: &str, message: &[u8]) -> crate::signed::Signature {
        crate::signed::sign_with(&self.pair, domain, message)
    }

    pub fn peer_id(&self) -> PeerId {
        PeerId(self.public)
    }

    /// Self-signed certificate over this key, plus the key for rustls.
    pub(crate) fn tls_credentials(
        &self,
    ) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), Error> {
        let der = PrivatePkcs8KeyDer::from(self.pkcs8.clone());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
            .map_err(|e| Error::Tls(format!("rcgen key: {e}")))?;
        let params = rcgen::CertificateParams::new(vec!["mesh".to_string()])
            .map_err(|e| Error::Tls(format!("rcgen params: {e}")))?;
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| Error::Tls(format!("self-signed cert: {e}")))?;
        Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(der)))
    }
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the key follows.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The peer id a certificate speaks for, if it carries an Ed25519 key.
pub(crate) fn peer_id_from_cert(cert: &CertificateDer<'_>) -> Option<PeerId> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert).ok()?;
    let spki = parsed.subject_public_key_info();
    let bytes: &[u8] = spki.as_ref();
    let key = bytes.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    Some(PeerId(key.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_persists_with_private_permissions() {
        let dir = std::env::temp_dir().join(format!("gossip-id-{}", rand::random::<u64>()));
        let path = dir.join("identity");
        let first = Identity::load_or_create(&path).unwrap();
        let second = Identity::load_or_create(&path).unwrap();
        assert_eq!(first.peer_id(), second.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn certificate_carries_peer_id() {
        let id = Identity::generate().unwrap();
        let (cert, _) = id.tls_credentials().unwrap();
        assert_eq!(peer_id_from_cert(&cert), Some(id.peer_id()));
    }

    #[test]
    fn peer_id_display_and_parse() {
        let id = Identity::generate().unwrap().peer_id();
        assert_eq!(id.to_string().len(), 12);
        assert_eq!(id.to_hex().parse::<PeerId>().unwrap(), id);
        assert!("zz".parse::<PeerId>().is_err());
        assert!(id.to_string().parse::<PeerId>().is_err());
    }
}
