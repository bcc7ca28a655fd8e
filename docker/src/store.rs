//! What the plugin remembers across meshd restarts, in `docker.json` of the
//! state directory (written only here): which Docker network maps to which
//! mesh network and whether Docker created it, and each endpoint's veth
//! and address.

use mesh_api::RuntimeVeth;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::error::StoreError;

const FILE: &str = "docker.json";

/// The state file in `state_dir`, the directory made (root-only) if meshd
/// has not made it yet.
pub(crate) fn open(state_dir: &Path) -> Result<PathBuf, StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)
        .map_err(|source| StoreError::Dir {
            path: state_dir.to_path_buf(),
            source,
        })?;
    Ok(state_dir.join(FILE))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DockerState {
    /// By Docker network id.
    #[serde(default)]
    pub(crate) networks: BTreeMap<String, NetworkMapping>,
    /// By Docker endpoint id.
    #[serde(default)]
    pub(crate) endpoints: BTreeMap<String, EndpointState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NetworkMapping {
    pub(crate) mesh: String,
    /// The mesh network was made for this Docker network (and may go with it).
    pub(crate) created_by_docker: bool,
    /// Set while the mesh network is still to be made (see `naming`):
    /// `mesh` is then the `dk` form it falls back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) pending: Option<Pending>,
}

/// What a pending mesh network is made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// The IPv4 subnet dockerd's pool has.
    pub(crate) pool: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EndpointState {
    pub(crate) network: String,
    pub(crate) mesh: String,
    pub(crate) ip: Ipv4Addr,
    pub(crate) veth: RuntimeVeth,
    #[serde(default)]
    pub(crate) joined: bool,
}

impl DockerState {
    /// The state in `file`; none yet is the empty state.
    pub(crate) fn load(file: &Path) -> Result<DockerState, StoreError> {
        match std::fs::read(file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: file.to_path_buf(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerState::default()),
            Err(source) => Err(StoreError::Read {
                path: file.to_path_buf(),
                source,
            }),
        }
    }

    /// Replaces `file` atomically, root-only.
    pub(crate) fn save(&self, file: &Path) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(StoreError::Encode)?;
        Ok(mesh_sys::fs::write_atomic(file, &bytes, 0o600)?)
    }

    /// Whether a Docker network other than `except` maps to `mesh`.
    pub(crate) fn mesh_in_use(&self, mesh: &str, except: &str) -> bool {
        self.networks
            .iter()
            .any(|(id, m)| id != except && m.mesh == mesh)
    }

    /// Applies `change` and saves; if saving fails, nothing changed.
    pub(crate) fn commit<T>(
        &mut self,
        file: &Path,
        change: impl FnOnce(&mut DockerState) -> T,
    ) -> Result<T, StoreError> {
        let mut next = self.clone();
        let out = change(&mut next);
        next.save(file)?;
        *self = next;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_failed_save_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("meshdocker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sd = open(&dir).unwrap();
        let mut s = DockerState::load(&sd).unwrap();
        assert_eq!(s, DockerState::default());
        s.commit(&sd, |s| {
            s.networks.insert(
                "d1".into(),
                NetworkMapping {
                    mesh: "web".into(),
                    created_by_docker: true,
                    pending: None,
                },
            )
        })
        .unwrap();
        assert_eq!(DockerState::load(&sd).unwrap(), s);
        assert!(s.mesh_in_use("web", "d2"));
        assert!(!s.mesh_in_use("web", "d1"));
        std::fs::remove_dir_all(&dir).unwrap();
        let before = s.clone();
        assert!(s.commit(&sd, |s| s.networks.clear()).is_err());
        assert_eq!(s, before);
    }
}
