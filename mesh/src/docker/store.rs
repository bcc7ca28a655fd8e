//! What the plugin remembers across meshd restarts, in `docker.json` of the
//! state directory (written only here): which Docker network maps to which
//! mesh network and whether Docker created it, and each endpoint's veth
//! and address.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::attach::RuntimeVeth;
use crate::state::StateDir;

const FILE: &str = "docker.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerState {
    /// By Docker network id.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkMapping>,
    /// By Docker endpoint id.
    #[serde(default)]
    pub endpoints: BTreeMap<String, EndpointState>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkMapping {
    pub mesh: String,
    /// The mesh network was made for this Docker network (and may go with it).
    pub created_by_docker: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    pub network: String,
    pub mesh: String,
    pub ip: Ipv4Addr,
    pub veth: RuntimeVeth,
    #[serde(default)]
    pub joined: bool,
}

impl DockerState {
    pub fn load(dir: &StateDir) -> Result<DockerState> {
        Ok(dir.load_json(FILE)?.unwrap_or_default())
    }

    pub fn save(&self, dir: &StateDir) -> Result<()> {
        dir.save_json(FILE, self)
    }

    /// Whether a Docker network other than `except` maps to `mesh`.
    pub fn mesh_in_use(&self, mesh: &str, except: &str) -> bool {
        self.networks
            .iter()
            .any(|(id, m)| id != except && m.mesh == mesh)
    }

    /// Applies `change` and saves; if saving fails, nothing changed.
    pub fn commit<T>(
        &mut self,
        dir: &StateDir,
        change: impl FnOnce(&mut DockerState) -> T,
    ) -> Result<T> {
        let mut next = self.clone();
        let out = change(&mut next);
        next.save(dir)?;
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
        let sd = StateDir::open(&dir).unwrap();
        let mut s = DockerState::load(&sd).unwrap();
        assert_eq!(s, DockerState::default());
        s.commit(&sd, |s| {
            s.networks.insert(
                "d1".into(),
                NetworkMapping {
                    mesh: "web".into(),
                    created_by_docker: true,
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
