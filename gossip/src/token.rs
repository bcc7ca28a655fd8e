//! The mesh secret: 32 random bytes every member holds. It never travels on
//! the wire; members prove they know it with a MAC bound to each connection.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::Error;

const TOKEN_PREFIX: &str = "mesh1-";
const SECRET_LEN: usize = 32;

#[derive(Clone, PartialEq, Eq)]
pub struct MeshSecret([u8; SECRET_LEN]);

impl MeshSecret {
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .expect("the OS random source failed"); // unrecoverable: no safe secret possible
        MeshSecret(bytes)
    }

    /// `mesh1-` followed by the secret in unpadded base64url (48 chars in all).
    pub fn to_token(&self) -> String {
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(self.0))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// Reads a token file (as written by [`MeshSecret::save`]); `None` if absent.
    pub fn load(path: &Path) -> Result<Option<MeshSecret>, Error> {
        match std::fs::read_to_string(path) {
            Ok(text) => text.trim().parse().map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io(e)),
        }
    }

    /// Writes the token to `path` with 0600 permissions.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        Ok(mesh_sys::fs::write_atomic(
            path,
            self.to_token().as_bytes(),
            0o600,
        )?)
    }
}

impl fmt::Debug for MeshSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshSecret(<redacted>)")
    }
}

impl FromStr for MeshSecret {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let body = s.trim().strip_prefix(TOKEN_PREFIX).ok_or_else(|| {
            Error::InvalidToken(format!("a mesh token starts with \"{TOKEN_PREFIX}\""))
        })?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| {
            Error::InvalidToken("the part after \"mesh1-\" is not base64url".into())
        })?;
        let arr: [u8; SECRET_LEN] = bytes.try_into().map_err(|v: Vec<u8>| {
            Error::InvalidToken(format!(
                "the secret must be {SECRET_LEN} bytes, this one has {}",
                v.len()
            ))
        })?;
        Ok(MeshSecret(arr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let secret = MeshSecret::generate();
        let token = secret.to_token();
        assert!(token.starts_with("mesh1-"));
        assert_eq!(token.parse::<MeshSecret>().unwrap(), secret);
    }

    #[test]
    fn malformed_tokens_have_clear_errors() {
        for bad in ["", "mesh2-abc", "mesh1-!!!", "mesh1-AAAA"] {
            let err = bad.parse::<MeshSecret>().unwrap_err();
            assert!(matches!(err, Error::InvalidToken(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_redacts() {
        let secret = MeshSecret::generate();
        let shown = format!("{secret:?}");
        assert!(!shown.contains(&secret.to_token()[6..]));
        assert!(shown.contains("redacted"));
    }
}
