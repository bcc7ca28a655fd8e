//! A plugin whose meshd is a stand-in: an axum router on a scratch
//! socket, answering what a test needs.

use axum::Router;
use mesh_api::Client;
use std::path::PathBuf;
use tokio::sync::Mutex;

use crate::store::DockerState;
use crate::{engine, Plugin};

/// The plugin, and the scratch directory to remove afterwards.
pub(crate) async fn plugin_with(meshd: Router) -> (Plugin, PathBuf) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mesh-docker-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("meshd.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(async move { axum::serve(listener, meshd).await });
    let plugin = Plugin {
        meshd: Client::new(&socket),
        file: dir.join("docker.json"),
        engine: engine::Engine::new(dir.join("no-dockerd.sock")),
        state: Mutex::new(DockerState::default()),
    };
    (plugin, dir)
}
