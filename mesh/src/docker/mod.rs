//! Docker's network plugin: meshd serves libnetwork's remote NetworkDriver
//! and IpamDriver protocols on a Unix socket in dockerd's plugin directory,
//! so `docker network create -d mesh --ipam-driver mesh …` and `docker run
//! --network …` put containers on mesh networks.
//!
//! Every step goes through the paths the other runtimes use: addresses are
//! reservations of mesh IPAM until the endpoint joins (then the attachment
//! holds them), veths are the [`crate::attach`] runtime attachments, DNS
//! names and labels are the attachment's. The driver is never told the
//! container's name: after `Join`, the plugin asks dockerd's API
//! ([`engine`]) which container holds the endpoint.

mod engine;
mod ipam;
mod network;
pub mod protocol;
mod server;
mod store;

use anyhow::Result;
use std::sync::Arc;
use tokio::sync::Mutex;

use crate::config::DockerSettings;
use crate::daemon::Daemon;
use crate::state::StateDir;
use store::DockerState;

pub struct Plugin {
    daemon: Arc<Daemon>,
    dir: StateDir,
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
        let live: Vec<String> = self
            .daemon
            .list_attachments()
            .await
            .into_iter()
            .map(|a| a.host_ifname)
            .collect();
        let mut state = self.state.lock().await;
        let dead: Vec<(String, store::EndpointState)> = state
            .endpoints
            .iter()
            .filter(|(_, e)| !live.contains(&e.veth.host_if))
            .map(|(id, e)| (id.clone(), e.clone()))
            .collect();
        for (id, ep) in dead {
            let released = self
                .daemon
                .release_reservation(crate::api::ReleaseRequest {
                    network: ep.mesh.clone(),
                    ip: ep.ip.to_string(),
                })
                .await;
            if let Err(e) = released {
                if !matches!(e, crate::error::ApiError::NotFound(_)) {
                    tracing::warn!(endpoint = %id, "cannot release a dead endpoint's address: {e}");
                }
            }
            if let Err(e) = state.commit(&self.dir, |s| s.endpoints.remove(&id)) {
                tracing::warn!(endpoint = %id, "cannot forget a dead endpoint: {e:#}");
            }
            tracing::info!(endpoint = %id, ip = %ep.ip, "forgot a Docker endpoint whose veth is gone");
        }
    }
}

/// Loads the plugin's state and serves the plugin socket in the background.
pub async fn spawn(daemon: Arc<Daemon>, settings: DockerSettings) -> Result<()> {
    let dir = StateDir::open(&daemon.settings.state_dir)?;
    let state = DockerState::load(&dir)?;
    let plugin = Arc::new(Plugin {
        daemon,
        dir,
        engine: engine::Engine::new(settings.docker_host.clone()),
        state: Mutex::new(state),
    });
    plugin.forget_dead_endpoints().await;
    let listener = crate::server::bind_private_socket(&settings.plugin_socket).await?;
    tracing::info!(socket = %settings.plugin_socket.display(), "serving the Docker network plugin");
    tokio::spawn(async move {
        if let Err(e) = server::serve(plugin, listener).await {
            tracing::error!("Docker plugin socket: {e:#}");
        }
    });
    Ok(())
}
