//! Secrets of networks restricted to a set of hosts.
//!
//! The creator of such a network draws a random secret and seals it to
//! each member host's static x25519 key (ECIES: an ephemeral x25519
//! exchange, HKDF-SHA256, ChaCha20-Poly1305). The sealed copies travel in
//! the replicated network definition, readable only by their member; the
//! data plane mixes the secret into the keys of that network's frames, so a
//! host outside the network cannot read them even though it shares
//! pairwise sessions with the members.

use anyhow::{anyhow, bail, Context, Result};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use std::path::Path;
use x25519_dalek::{PublicKey, StaticSecret};

/// Gossip metadata key under which a host advertises its public key.
pub const META_NETWORK_KEY: &str = "netkey";

/// This host's static x25519 key for receiving network secrets.
pub struct HostKey {
    secret: StaticSecret,
}

impl HostKey {
    pub fn load_or_create(path: &Path) -> Result<HostKey> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let arr: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| anyhow!("{} is not a 32-byte key", path.display()))?;
                Ok(HostKey {
                    secret: StaticSecret::from(arr),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = StaticSecret::random_from_rng(rand::rngs::OsRng);
                mesh_sys::fs::write_atomic(path, secret.as_bytes(), 0o600)?;
                Ok(HostKey { secret })
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn public_hex(&self) -> String {
        hex::encode(PublicKey::from(&self.secret).as_bytes())
    }

    /// Opens the copy of `network`'s secret sealed to this host.
    pub fn open(&self, network: &str, sealed_hex: &str) -> Result<[u8; 32]> {
        let sealed = hex::decode(sealed_hex).context("sealed network secret is not hex")?;
        if sealed.len() != 32 + 32 + 16 {
            bail!("sealed network secret has the wrong length");
        }
        let eph: [u8; 32] = sealed[..32].try_into().expect("checked length");
        let eph = PublicKey::from(eph);
        let me = PublicKey::from(&self.secret);
        let shared = self.secret.diffie_hellman(&eph);
        if !shared.was_contributory() {
            bail!("sealed network secret uses a degenerate key");
        }
        let key = wrap_key(shared.as_bytes(), eph.as_bytes(), me.as_bytes(), network);
        let mut body = sealed[32..].to_vec();
        let plain = key
            .open_in_place(zero_nonce(), Aad::from(network.as_bytes()), &mut body)
            .map_err(|_| anyhow!("the network secret was not sealed to this host's key"))?;
        plain
            .try_into()
            .map_err(|_| anyhow!("network secret has the wrong length"))
    }
}

/// Seals `secret` of `network` to the host whose public key is `member_hex`.
pub fn seal_for(member_hex: &str, network: &str, secret: &[u8; 32]) -> Result<String> {
    let member: [u8; 32] = hex::decode(member_hex)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("malformed host key {member_hex:?}"))?;
    let member = PublicKey::from(member);
    let eph = StaticSecret::random_from_rng(rand::rngs::OsRng);
    let eph_pub = PublicKey::from(&eph);
    let shared = eph.diffie_hellman(&member);
    if !shared.was_contributory() {
        bail!("host key {member_hex:?} is degenerate");
    }
    let key = wrap_key(
        shared.as_bytes(),
        eph_pub.as_bytes(),
        member.as_bytes(),
        network,
    );
    let mut body = secret.to_vec();
    key.seal_in_place_append_tag(zero_nonce(), Aad::from(network.as_bytes()), &mut body)
        .map_err(|_| anyhow!("sealing failed"))?;
    let mut out = eph_pub.as_bytes().to_vec();
    out.extend_from_slice(&body);
    Ok(hex::encode(out))
}

/// Why a restricted network's secret cannot be sealed to a member.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The member advertises no key (down, or an older meshd).
    #[error("host {0} advertises no network key (not up, or an older meshd)")]
    NoKey(String),
    #[error(transparent)]
    Seal(#[from] anyhow::Error),
}

/// A fresh secret for a network restricted to `members` (peer ids, hex),
/// sealed to each member's advertised key; empty for a network of every
/// host.
pub fn seal_to_members(
    network: &str,
    members: &[String],
    hosts: &mesh_model::hosts::HostSet,
    own: &HostKey,
) -> Result<std::collections::BTreeMap<String, String>, SealError> {
    use mesh_model::hosts::Members;
    let mut out = std::collections::BTreeMap::new();
    if members.is_empty() {
        return Ok(out);
    }
    let secret: [u8; 32] = rand::random();
    for h in members {
        let key = if *h == hosts.me() {
            own.public_hex()
        } else {
            hosts
                .peer(h)
                .and_then(|p| p.meta.get(META_NETWORK_KEY).cloned())
                .ok_or_else(|| SealError::NoKey(hosts.name_of(h)))?
        };
        out.insert(h.clone(), seal_for(&key, network, &secret)?);
    }
    Ok(out)
}

/// Every wrap key is used once (fresh ephemeral key), so a zero nonce is safe.
fn zero_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0u8; NONCE_LEN])
}

fn wrap_key(shared: &[u8; 32], eph: &[u8; 32], member: &[u8; 32], network: &str) -> LessSafeKey {
    let out = dataplane::keypair::hkdf_sha256_32(
        b"mesh network secret v1",
        shared,
        &[eph, member, network.as_bytes()],
    );
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &out).expect("32-byte key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_member_opens_its_copy() {
        let dir = std::env::temp_dir().join(format!("meshnk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = HostKey::load_or_create(&dir.join("a")).unwrap();
        let b = HostKey::load_or_create(&dir.join("b")).unwrap();
        // Persistent: loading again gives the same key.
        assert_eq!(
            HostKey::load_or_create(&dir.join("a"))
                .unwrap()
                .public_hex(),
            a.public_hex()
        );
        let secret = [7u8; 32];
        let sealed = seal_for(&a.public_hex(), "priv", &secret).unwrap();
        assert_eq!(a.open("priv", &sealed).unwrap(), secret);
        assert!(b.open("priv", &sealed).is_err(), "another host opened it");
        assert!(a.open("other", &sealed).is_err(), "bound to the network id");
        let mut tampered = sealed.clone();
        tampered.replace_range(100..102, "00");
        assert!(a.open("priv", &tampered).is_err() || tampered == sealed);
        assert!(a.open("priv", "zz").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
