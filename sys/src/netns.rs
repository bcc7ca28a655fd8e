//! Running code inside another namespace.
//!
//! Namespaces belong to threads, not processes: `setns` on a thread that a
//! pool reuses would leave later work in a container's namespace. So every
//! entry here happens on a fresh OS thread that exists only for that closure.

use nix::sched::CloneFlags;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Which namespace to enter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Net,
    Uts,
}

impl Kind {
    fn flag(self) -> CloneFlags {
        match self {
            Kind::Net => CloneFlags::CLONE_NEWNET,
            Kind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening namespace {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("entering namespace {what}: {source}")]
    Enter { what: String, source: nix::Error },
    #[error("the thread working inside namespace {0} panicked")]
    Panicked(String),
}

/// Opens the namespace file at `path` (`/run/netns/NAME`, `/proc/PID/ns/net`).
pub fn open(path: impl AsRef<Path>) -> Result<OwnedFd, Error> {
    let path = path.as_ref();
    std::fs::File::open(path)
        .map(OwnedFd::from)
        .map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })
}

/// Runs `f` on a fresh thread that has entered the namespace `fd` of `kind`
/// (`what` names it in errors) and returns its result.
pub fn run_in_fd<T, F>(fd: OwnedFd, kind: Kind, what: &str, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let label = what.to_string();
    std::thread::spawn(move || -> Result<T, Error> {
        nix::sched::setns(&fd, kind.flag()).map_err(|source| Error::Enter {
            what: label,
            source,
        })?;
        drop(fd);
        Ok(f())
    })
    .join()
    .map_err(|_| Error::Panicked(what.to_string()))?
}

/// Runs `f` on a fresh thread inside the namespace at `path`.
pub fn run_in<T, F>(path: impl AsRef<Path>, kind: Kind, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let path = path.as_ref();
    let fd = open(path)?;
    run_in_fd(fd, kind, &path.display().to_string(), f)
}

/// Runs `f` inside the network namespace at `path`.
pub fn run_in_net<T, F>(path: impl AsRef<Path>, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    run_in(path, Kind::Net, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_runs_the_closure_and_returns_its_value() {
        // Entering the namespace we are already in is allowed for root and
        // refused with EPERM otherwise: either way no panic, a clear error.
        match run_in_net("/proc/self/ns/net", || 41 + 1) {
            Ok(v) => assert_eq!(v, 42),
            Err(Error::Enter { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    #[test]
    fn a_missing_namespace_is_an_open_error_naming_the_path() {
        let err = run_in_net("/nonexistent/ns", || ()).unwrap_err();
        assert!(matches!(err, Error::Open { .. }));
        assert!(err.to_string().contains("/nonexistent/ns"), "{err}");
    }

    #[test]
    fn a_panic_inside_is_an_error_not_a_crash() {
        let fd = open("/proc/self/ns/net").unwrap();
        let r = run_in_fd::<(), _>(fd, Kind::Net, "self", || panic!("boom"));
        assert!(matches!(
            r,
            Err(Error::Panicked(_)) | Err(Error::Enter { .. })
        ));
    }
}
