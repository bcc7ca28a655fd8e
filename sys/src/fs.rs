//! Atomic file replacement: a reader (or a crash) sees the old file or the
//! new one, never a torn write, and the file never exists with wider
//! permissions than asked for.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct Error {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` via `path.tmp`: write, fsync, chmod `mode`,
/// rename, fsync the directory. A stale temp file from a crash is reused,
/// and its old mode does not survive (`mode` in `open` applies only on
/// creation, so it is set explicitly).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err("creating", &tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(err("setting the mode of", &tmp))?;
    f.write_all(bytes).map_err(err("writing", &tmp))?;
    f.sync_all().map_err(err("syncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err("replacing", path))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable only once the directory entry is.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mesh-sys-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn replaces_content_with_the_given_mode() {
        let dir = scratch("replace");
        let p = dir.join("state");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(!dir.join("state.tmp").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_stale_world_readable_temp_file_does_not_widen_the_mode() {
        let dir = scratch("stale");
        let p = dir.join("key");
        let tmp = dir.join("key.tmp");
        std::fs::write(&tmp, b"old junk that is longer").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, b"secret", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let e = write_atomic(Path::new("/nonexistent-dir/x"), b"", 0o600).unwrap_err();
        assert!(e.to_string().contains("/nonexistent-dir/x.tmp"), "{e}");
    }
}
