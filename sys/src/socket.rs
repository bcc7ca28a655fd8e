//! A root-only Unix socket to serve on: meshd's API and the Docker
//! plugin's socket. Bound with mode 0600 from the start (umask first), so
//! it is never reachable with wider permissions; a stale socket file (from
//! a crashed run) is replaced, but never one another process still serves.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::fs::Error as IoError;

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another process (meshd?) is serving {0}")]
    InUse(PathBuf),
    #[error(transparent)]
    Io(#[from] IoError),
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BindError + 'a {
    move |source| {
        BindError::Io(IoError {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Binds a root-only (0600) Unix socket at `path`, non-blocking (ready for
/// an async runtime), creating its directory if need be.
pub fn bind_private(path: &Path) -> Result<UnixListener, BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io("removing stale", path))?;
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(io("binding socket", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("setting the mode of", path))?;
    listener
        .set_nonblocking(true)
        .map_err(io("setting non-blocking", path))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn binds_root_only_replaces_stale_and_refuses_a_served_socket() {
        let dir = std::env::temp_dir().join(format!("mesh-sys-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub").join("s.sock");
        let l = bind_private(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(matches!(bind_private(&path), Err(BindError::InUse(_))));
        drop(l);
        // Nobody serves it now: stale, replaced.
        let _l = bind_private(&path).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
