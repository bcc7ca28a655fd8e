//! What Docker's network plugin asks of the daemon (see [`crate::docker`]),
//! apart from the daemon's own wiring in `daemon.rs`.

use std::collections::BTreeMap;

use tracing::warn;

use super::Daemon;
use crate::api;
use crate::error::ApiError;
use mesh_model::records::{self, NetworkDef};

/// What Docker's network plugin ([`crate::docker`]) asks of the daemon:
/// the same networks, addresses and attachments as every other way in.
impl Daemon {
    pub(crate) fn network_defs(&self) -> BTreeMap<String, NetworkDef> {
        records::live(&self.channels.networks)
    }

    /// A veth on the bridge of `network` for the runtime to move.
    pub(crate) async fn runtime_veth(
        &self,
        network: &str,
    ) -> Result<crate::attach::RuntimeVeth, ApiError> {
        let net = self.network_here(network)?;
        // Held so the bridge stays while the veth is put on it.
        let devices = self.devices.lock().await;
        let Some(&wire) = devices.wires.get(&net.id) else {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "network {} has no bridge on this host; see the meshd log",
                net.id
            )));
        };
        self.attacher.runtime_veth(wire).await
    }

    /// Records a runtime-plumbed attachment holding the reserved `ip`;
    /// the reservation is handed over to it.
    pub(crate) async fn record_runtime_attachment(
        &self,
        network: &str,
        veth: &crate::attach::RuntimeVeth,
        ip: std::net::Ipv4Addr,
        netns: &str,
        ifname: &str,
    ) -> Result<api::Attachment, ApiError> {
        let net = self.network_here(network)?;
        let a = self
            .attacher
            .record_runtime(&net, veth, ip, netns, ifname)
            .await?;
        // If the hand-over cannot be saved both hold the address; the
        // runtime's release of it ends the reservation later.
        if let Err(e) = self.reservations.hand_over(&net.id, ip).await {
            warn!(network = %net.id, %ip, "cannot hand the reservation over to the attachment: {e:#}");
        }
        if let Err(e) = self.ready(&a, false).await {
            let _ = self.detach_runtime_attachment(&veth.host_if).await;
            return Err(ApiError::Internal(anyhow::anyhow!(e)));
        }
        Ok(a)
    }

    pub(crate) async fn identify_runtime_attachment(
        &self,
        network: &str,
        host_if: &str,
        who: crate::attach::RuntimeIdentity,
    ) -> Result<Option<api::Attachment>, ApiError> {
        let net = self.network(network)?;
        let a = self.attacher.identify_runtime(&net, host_if, who).await?;
        if let Some(a) = &a {
            self.services.note_attachment(a);
        }
        Ok(a)
    }

    pub(crate) async fn detach_runtime_attachment(
        &self,
        host_if: &str,
    ) -> Result<Option<api::Attachment>, ApiError> {
        self.attacher.detach_runtime(host_if).await
    }
}
