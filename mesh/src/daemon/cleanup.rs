//! `meshd --cleanup`.

use anyhow::Result;
use tracing::{info, warn};

use crate::config::Settings;
use crate::netdev::Netlink;
use crate::state::{AttachmentStore, StateDir};
use crate::{isolation, traffic};
use mesh_model::networks;

/// `meshd --cleanup`: remove every device this daemon creates, and forget
/// the attachments (their veths are gone with the host ends).
pub async fn cleanup(settings: &Settings) -> Result<usize> {
    let nl = Netlink::connect()?;
    let mut removed = 0;
    for link in nl.links().await? {
        if networks::is_ours(&settings.link_prefix, &link.name) {
            nl.delete(&link.name).await?;
            removed += 1;
        }
    }
    if let Err(e) = isolation::remove(&settings.link_prefix) {
        warn!("cannot remove the isolation table: {e:#}");
    }
    if let Err(e) = traffic::policy::remove(&settings.link_prefix) {
        warn!("cannot remove the policy table: {e:#}");
    }
    if let Err(e) = traffic::ports::remove(&settings.link_prefix) {
        warn!("cannot remove the port-security table: {e:#}");
    }
    if let Err(e) = crate::edge::cleanup(&settings.link_prefix) {
        warn!("cannot remove the edge table: {e:#}");
    }
    if settings.state_dir.exists() {
        let state = StateDir::open(&settings.state_dir)?;
        AttachmentStore::clear(&state)?;
        match crate::edge::hostaddr::restore_forwarding(&state) {
            Ok(true) => info!("net.ipv4.ip_forward is 0 again, as before meshd"),
            Ok(false) => {}
            Err(e) => warn!("cannot restore net.ipv4.ip_forward: {e:#}"),
        }
    }
    Ok(removed)
}
