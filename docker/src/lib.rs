//! Docker's network plugin: serves libnetwork's remote NetworkDriver and
//! IpamDriver protocols on a Unix socket in dockerd's plugin directory, so
//! `docker network create -d mesh --ipam-driver mesh …` and `docker run
//! --network …` put containers on mesh networks.
//!
//! The plugin reaches meshd only through its local API
//! ([`mesh_api::Client`]), as the CNI plugin does; `meshd --docker-plugin`
//! runs it inside meshd's process with a client of meshd's own socket.
//! Every step goes through the paths the other runtimes use: addresses are
//! reservations of mesh IPAM (`/v1/ipam/reserve`) until the endpoint joins
//! (then the attachment holds them), veths are runtime attachments
//! (`/v1/runtime/...`, see [`mesh_api::runtime`]), DNS names and labels
//! are the attachment's. The driver is never told the container's name:
//! after `Join`, the plugin asks dockerd's API ([`engine`]) which
//! container holds the endpoint.
//!
//! - [`protocol`]: the protocols' messages;
//! - `server`: the plugin socket, one route per call;
//! - `network`, `ipam`: the NetworkDriver and IpamDriver calls;
//! - `naming`: the Docker network's name as its mesh network's id;
//! - `store`: what the plugin remembers (`docker.json` in meshd's state
//!   directory);
//! - [`engine`]: dockerd's API, asked who a container is and what a
//!   network is called.

#![warn(unreachable_pub)]

pub mod engine;
mod error;
mod ipam;
mod naming;
mod network;
pub mod protocol;
mod server;
mod store;
#[cfg(test)]
mod testing;

pub use error::{Error, StoreError};

use mesh_api::Client;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Mutex;

use store::DockerState;

/// Where the plugin listens, whom it asks, where it keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The plugin socket (dockerd finds `mesh` by this file name).
    pub plugin_socket: PathBuf,
    /// dockerd's API socket, asked for containers' names and labels.
    pub docker_host: PathBuf,
    /// meshd's state directory: the plugin keeps `docker.json` there.
    pub state_dir: PathBuf,
}

struct Plugin {
    meshd: Client,
    /// `docker.json`, written only by this crate.
    file: PathBuf,
    engine: engine::Engine,
    /// Held for the whole of each call: dockerd calls concurrently, and a
    /// call's checks must still hold when it changes things.
    state: Mutex<DockerState>,
}

impl Plugin {
    /// At start: endpoints whose veth is gone (their container went while
    /// meshd was down, or they never joined: meshd's start removes veths
    /// no attachment holds) are forgotten, and their addresses released;
    /// dockerd's own later calls for them then find nothing to undo.
    async fn forget_dead_endpoints(&self) {
        let live: Vec<String> = match self.meshd.attachments().await {
            Ok(list) => list.into_iter().map(|a| a.host_ifname).collect(),
            Err(e) => {
                tracing::warn!(
                    "cannot list meshd's attachments, so no dead Docker endpoint is forgotten: {e}"
                );
                return;
            }
        };
        let mut state = self.state.lock().await;
        let dead: Vec<(String, store::EndpointState)> = state
            .endpoints
            .iter()
            .filter(|(_, e)| !live.contains(&e.veth.host_if))
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        for (id, ep) in dead {
            let released = self
                .meshd
                .release(&mesh_api::ReleaseRequest {
                    network: ep.mesh.clone(),
                    ip: ep.ip.to_string(),
                })
                .await;
            if let Err(e) = released {
                if e.kind() != Some(mesh_api::ErrorKind::NotFound) {
                    tracing::warn!(endpoint = %id, "cannot release a dead endpoint's address: {e}");
                }
            }
            if let Err(e) = state.commit(&self.file, |s| s.endpoints.remove(&id)) {
                tracing::warn!(endpoint = %id, "cannot forget a dead endpoint: {e}");
            }
            tracing::info!(endpoint = %id, ip = %ep.ip, "forgot a Docker endpoint whose veth is gone");
        }
    }
}

/// Loads the plugin's state, forgets endpoints whose veth is gone, and
/// serves the plugin socket in the background. `meshd` must answer on
/// `meshd`'s socket already.
pub async fn spawn(meshd: Client, settings: Settings) -> Result<(), Error> {
    let file = store::open(&settings.state_dir)?;
    let state = DockerState::load(&file)?;
    let plugin = Arc::new(Plugin {
        meshd,
        file,
        engine: engine::Engine::new(settings.docker_host.clone()),
        state: Mutex::new(state),
    });
    plugin.forget_dead_endpoints().await;
    let listener = mesh_sys::socket::bind_private(&settings.plugin_socket)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(|source| {
        mesh_sys::socket::BindError::Io(mesh_sys::fs::Error {
            action: "serving",
            path: settings.plugin_socket.clone(),
            source,
        })
    })?;
    tracing::info!(socket = %settings.plugin_socket.display(), "serving the Docker network plugin");
    tokio::spawn(async move {
        if let Err(e) = server::serve(plugin, listener).await {
            tracing::error!("Docker plugin socket: {e}");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The plugin reaches meshd through the API only: no dependency of any
    /// kind on the `mesh` crate (meshd's library).
    #[test]
    fn the_plugin_does_not_depend_on_meshd() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let manifest: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
        let sections = ["dependencies", "dev-dependencies", "build-dependencies"];
        let mut found = Vec::new();
        for section in sections {
            let Some(deps) = manifest.get(section).and_then(|d| d.as_table()) else {
                continue;
            };
            for (name, spec) in deps {
                let package = spec.get("package").and_then(|p| p.as_str());
                let path = spec.get("path").and_then(|p| p.as_str());
                if name == "mesh"
                    || package == Some("mesh")
                    || path.is_some_and(|p| p.trim_end_matches('/').ends_with("../mesh"))
                {
                    found.push(format!("[{section}] {name}"));
                }
            }
        }
        assert!(
            manifest.get("target").is_none(),
            "no target-specific dependencies expected"
        );
        assert!(
            found.is_empty(),
            "mesh-docker depends on meshd's crate: {found:?}"
        );
        assert!(manifest["dependencies"].get("mesh-api").is_some());
    }
}
