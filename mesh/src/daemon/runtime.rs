//! The runtime routes (`/v1/runtime/...`, see [`mesh_api::runtime`]):
//! what a runtime that moves the container's interface in itself (Docker's
//! network plugin, the `mesh-docker` crate) asks of the daemon, apart from
//! the routes every client has. The same networks, addresses and
//! attachments as every other way in.

use tracing::warn;

use super::Daemon;
use crate::api;
use crate::error::ApiError;

impl Daemon {
    /// A veth on the bridge of `network` for the runtime to move.
    pub async fn runtime_veth(&self, network: &str) -> Result<api::RuntimeVeth, ApiError> {
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

    /// Records a runtime-plumbed attachment holding the reserved address;
    /// the reservation is handed over to it.
    pub async fn record_runtime_attachment(
        &self,
        req: api::RecordRuntimeRequest,
    ) -> Result<api::Attachment, ApiError> {
        let ip: std::net::Ipv4Addr = req.ip.parse().map_err(|_| {
            ApiError::BadRequest(format!("address {:?} is not IPv4 A.B.C.D", req.ip))
        })?;
        let net = self.network_here(&req.network)?;
        let a = self
            .attacher
            .record_runtime(&net, &req.veth, ip, &req.netns, &req.ifname)
            .await?;
        // If the hand-over cannot be saved both hold the address; the
        // runtime's release of it ends the reservation later.
        if let Err(e) = self.reservations.hand_over(&net.id, ip).await {
            warn!(network = %net.id, %ip, "cannot hand the reservation over to the attachment: {e:#}");
        }
        if let Err(e) = self.ready(&a, false).await {
            let _ = self.detach_runtime_attachment(&req.veth.host_if).await;
            return Err(ApiError::Internal(anyhow::anyhow!(e)));
        }
        Ok(a)
    }

    /// Names the container of the attachment on `req.host_if`; `None` if
    /// there is no such attachment (any more).
    pub async fn identify_runtime_attachment(
        &self,
        req: api::IdentifyRuntimeRequest,
    ) -> Result<Option<api::Attachment>, ApiError> {
        let net = self.network(&req.network)?;
        let a = self
            .attacher
            .identify_runtime(&net, &req.host_if, req.who)
            .await?;
        if let Some(a) = &a {
            self.services.note_attachment(a);
        }
        Ok(a)
    }

    pub async fn detach_runtime_attachment(
        &self,
        host_if: &str,
    ) -> Result<Option<api::Attachment>, ApiError> {
        self.attacher.detach_runtime(host_if).await
    }

    /// The IPv4 space a new network must stay out of here.
    pub fn occupied_prefixes(&self) -> api::OccupiedPrefixes {
        api::OccupiedPrefixes {
            v4: self
                .occupied_v4()
                .into_iter()
                .map(|n| n.to_string())
                .collect(),
        }
    }

    /// This host's address on `network` if it routes the network's egress.
    pub fn egress_gateway(&self, network: &str) -> api::EgressGateway {
        api::EgressGateway {
            network: network.to_string(),
            gateway: self.edge.egress_gateway(network).map(|g| g.to_string()),
        }
    }
}
