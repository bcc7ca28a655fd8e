//! The read-only web console (`console_listen`, off by default): pages of
//! topology, networks, services and this host's checks, drawn in the
//! browser by a small hand-written script (plain SVG, no library) from
//! one JSON snapshot the daemon builds at most once per interval. The
//! pages and their script are compiled into the binary; nothing is loaded
//! from elsewhere. Nothing it serves changes state: only GET and HEAD.

pub mod auth;
mod listener;
pub mod sample;
mod server;
pub mod view;

use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tracing::info;

use crate::daemon::Daemon;

pub use server::{router, ASSETS, PAGES};

/// Binds the console on `addr` and serves it in a task (a reload binds
/// first, so a bad address is its error and the old listener stays).
pub async fn bind(daemon: &Arc<Daemon>, addr: SocketAddr) -> Result<JoinHandle<()>> {
    let access = if addr.ip().is_loopback() {
        auth::Access::Open
    } else {
        // Made now, so a bad state directory is the bind's error.
        auth::load_or_create(&daemon.settings.state_dir)?;
        auth::Access::Token(daemon.settings.state_dir.clone())
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the console listener {addr}"))?;
    match access {
        auth::Access::Open => info!(%addr, "serving the console (loopback: no login)"),
        auth::Access::Token(_) => info!(
            %addr,
            "serving the console; every request needs the token `meshctl console token` prints"
        ),
    }
    let app = router(daemon.clone(), access);
    // Aborting this task (a reload) closes every connection it serves.
    Ok(tokio::spawn(listener::serve(listener, app)))
}
