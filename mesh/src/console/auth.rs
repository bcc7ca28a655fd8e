//! Who may read the console. A loopback listener is open to whoever can
//! reach it (someone on this host, or through an SSH tunnel). Any other
//! listener checks every request, static files included: the console
//! token (32 random bytes, hex) as `Authorization: Bearer TOKEN`, or the
//! cookie `/login?token=TOKEN` sets. The token lives 0600 in the state
//! directory; `meshctl console token` prints it.

use axum::http::{header, HeaderMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// The token's file in meshd's state directory.
pub const TOKEN_FILE: &str = "console.token";
/// The cookie `/login` sets.
pub const COOKIE: &str = "mesh_console";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the console token {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the console token {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the console token {path} is not 64 hex digits; delete it and a new one is made")]
    Malformed { path: PathBuf },
}

/// The token in `state_dir`, made (0600) on first use: written whole to a
/// file of its own and linked into place, so a reader never sees half a
/// token and two makers agree on one.
pub fn load_or_create(state_dir: &Path) -> Result<String, TokenError> {
    let path = state_dir.join(TOKEN_FILE);
    if path.exists() {
        return read(&path);
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let tmp = state_dir.join(format!(".{TOKEN_FILE}.{}", std::process::id()));
    let write_err = |source| TokenError::Write {
        path: path.clone(),
        source,
    };
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(write_err)?;
    let written = f
        .write_all(format!("{token}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::hard_link(&tmp, &path));
    let _ = std::fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(token),
        // Made by another caller meanwhile: theirs is the token.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(&path),
        Err(source) => Err(write_err(source)),
    }
}

fn read(path: &Path) -> Result<String, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.trim();
    if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TokenError::Malformed {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_ascii_lowercase())
}

/// Whether a request's `Host` names this machine's loopback (`localhost`,
/// `127.0.0.1`, `[::1]`, any port): an open listener answers nothing else,
/// so a web page whose name an attacker re-points at 127.0.0.1 (DNS
/// rebinding) cannot read it from the operator's browser. A request
/// without `Host` (HTTP/1.0 tools) is not from a browser.
pub fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What a listener asks of a request.
#[derive(Clone)]
pub enum Access {
    /// Loopback: nothing.
    Open,
    /// Elsewhere: the token in this state directory, read on every
    /// check, so a new token (file deleted, `meshctl console token` makes
    /// the next) is in force at once.
    Token(PathBuf),
}

impl Access {
    /// The token now in force; none if its file cannot be read (then
    /// nothing is let in, and the log says why).
    pub fn token(&self) -> Option<String> {
        let Access::Token(dir) = self else {
            return None;
        };
        load_or_create(dir)
            .inspect_err(|e| tracing::warn!("console: {e}"))
            .ok()
    }

    /// Whether `headers` carry the token (always, for an open listener).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        if matches!(self, Access::Open) {
            return true;
        }
        let Some(token) = self.token() else {
            return false;
        };
        let session = session(&token);
        bearer(headers).is_some_and(|given| same(given, &token))
            || cookies(headers).any(|given| same(given, &session))
    }
}

/// Constant time in the token's content, so a guess learns nothing from
/// how fast it fails.
pub(crate) fn same(given: &str, token: &str) -> bool {
    given.as_bytes().ct_eq(token.as_bytes()).into()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

fn cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// The cookie's value: derived from the token, not the token, since a
/// browser sends a host's cookies to every port of it.
pub fn session(token: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, token.as_bytes());
    hex::encode(ring::hmac::sign(&key, b"mesh console session").as_ref())
}

/// The `Set-Cookie` value `/login` answers: not readable by scripts, sent
/// only to this site, for a day.
pub fn set_cookie(token: &str) -> String {
    format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=86400",
        session(token)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_token_is_made_once_0600_and_a_bad_file_is_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TokenDir::new("made", "x");
        std::fs::remove_file(dir.0.join(TOKEN_FILE)).unwrap();
        let dir = &dir.0;
        let a = load_or_create(dir).unwrap();
        let b = load_or_create(dir).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 64);
        let mode = std::fs::metadata(dir.join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.join(TOKEN_FILE), "short\n").unwrap();
        let e = load_or_create(dir).unwrap_err().to_string();
        assert!(e.contains(TOKEN_FILE) && e.contains("64 hex"), "{e}");
    }

    #[test]
    fn only_loopback_names_reach_an_open_listener() {
        let with = |host: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            loopback_host(&h)
        };
        for ok in [
            "127.0.0.1:7880",
            "localhost:9000",
            "LOCALHOST",
            "[::1]:7880",
            "127.0.0.2",
        ] {
            assert!(with(ok), "{ok}");
        }
        for bad in [
            "evil.example:7880",
            "evil.example",
            "10.0.0.1:7880",
            "[fe80::1]:80",
            "localhost.evil.example",
        ] {
            assert!(!with(bad), "{bad}");
        }
        assert!(loopback_host(&HeaderMap::new()), "no Host: not a browser");
    }

    /// A state directory holding `token`, removed on drop.
    pub(crate) struct TokenDir(pub PathBuf);
    impl TokenDir {
        pub(crate) fn new(tag: &str, token: &str) -> TokenDir {
            let dir =
                std::env::temp_dir().join(format!("meshconsole-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(TOKEN_FILE), format!("{token}\n")).unwrap();
            TokenDir(dir)
        }
    }
    impl Drop for TokenDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn bearer_or_cookie_carries_the_token_in_force() {
        let t = "ab".repeat(32);
        let dir = TokenDir::new("carry", &t);
        let access = Access::Token(dir.0.clone());
        let mut h = HeaderMap::new();
        assert!(!access.allows(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        assert!(access.allows(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert!(!access.allows(&h));
        let cookie = |v: &str| HeaderValue::from_str(&format!("a=b; {COOKIE}={v}")).unwrap();
        h.insert(header::COOKIE, cookie(&session(&t)));
        assert!(access.allows(&h));
        // The cookie is the session value, never the token itself.
        h.insert(header::COOKIE, cookie(&t));
        assert!(!access.allows(&h));
        h.insert(header::COOKIE, cookie(&format!("x{}", session(&t))));
        assert!(!access.allows(&h));
        assert!(Access::Open.allows(&HeaderMap::new()));
        // A new token (the file deleted, then made again) is in force at
        // once; the old one is not.
        std::fs::remove_file(dir.0.join(TOKEN_FILE)).unwrap();
        let fresh = load_or_create(&dir.0).unwrap();
        assert_ne!(fresh, t);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
        assert!(!access.allows(&h));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {fresh}")).unwrap(),
        );
        assert!(access.allows(&h));
    }
}
