//! The gateway's own WireGuard key pair: made once, kept 0600 in the state
//! directory (`wg.key`, 32 raw bytes), so a restart keeps the public key
//! every client's configuration names.

use anyhow::{anyhow, Context, Result};
use std::path::Path;
use x25519_dalek::{PublicKey, StaticSecret};

pub struct GatewayKey {
    pub secret: StaticSecret,
    pub public: PublicKey,
}

impl GatewayKey {
    pub fn load_or_create(path: &Path) -> Result<GatewayKey> {
        let secret = match std::fs::read(path) {
            Ok(bytes) => {
                let arr: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| anyhow!("{} is not a 32-byte key", path.display()))?;
                StaticSecret::from(arr)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = StaticSecret::random_from_rng(rand::rngs::OsRng);
                mesh_sys::fs::write_atomic(path, secret.as_bytes(), 0o600)?;
                secret
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let public = PublicKey::from(&secret);
        Ok(GatewayKey { secret, public })
    }

    /// A key of this run only: for a host that serves no gateway (its
    /// key file unreadable), so nothing else needs to know.
    pub fn ephemeral() -> GatewayKey {
        let secret = StaticSecret::random_from_rng(rand::rngs::OsRng);
        let public = PublicKey::from(&secret);
        GatewayKey { secret, public }
    }

    pub fn public_base64(&self) -> String {
        mesh_model::wireguard::encode_key(self.public.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_kept_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("mesh-wgkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wg.key");
        let a = GatewayKey::load_or_create(&path).unwrap();
        let b = GatewayKey::load_or_create(&path).unwrap();
        assert_eq!(a.public_base64(), b.public_base64());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").unwrap();
        assert!(GatewayKey::load_or_create(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
