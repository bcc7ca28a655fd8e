//! `NetworkDriver.*`: a Docker network maps to a mesh network (made for it,
//! or an existing one); its endpoints are runtime attachments: the veth is
//! made at `CreateEndpoint`, recorded at `Join` (when dockerd moves it into
//! the container), undone at `Leave`/`DeleteEndpoint`.

use std::net::Ipv4Addr;
use std::sync::Arc;
use tracing::{info, warn};

use super::ipam::{network_of_pool, parse_pool};
use super::protocol::{self as p, InterfaceName, JoinAnswer};
use super::store::{EndpointState, NetworkMapping};
use super::Plugin;
use crate::api;
use crate::error::ApiError;

/// The mesh network id for a Docker network created without `-o
/// mesh.network`: `dk` and the start of Docker's id (mesh ids have 11
/// characters at most).
pub(super) fn default_mesh_id(docker_id: &str) -> String {
    let hex: String = docker_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(9)
        .collect();
    format!("dk{}", hex.to_ascii_lowercase())
}

fn unknown_network(id: &str) -> ApiError {
    ApiError::NetworkNotFound(format!(
        "Docker network {id} is not a mesh network on this host (create it with -d mesh --ipam-driver mesh)"
    ))
}

fn unknown_endpoint(id: &str) -> ApiError {
    ApiError::NotFound(format!("endpoint {id} is not known to the mesh plugin"))
}

impl Plugin {
    pub(super) async fn create_network(&self, req: p::CreateNetwork) -> Result<(), ApiError> {
        if req.network_id.is_empty() {
            return Err(ApiError::BadRequest(
                "CreateNetwork without a NetworkID".into(),
            ));
        }
        let v4 = match req.ipv4_data.as_slice() {
            [one] => one,
            [] => return Err(ApiError::BadRequest(
                "the mesh driver needs an IPv4 pool: create the network with --ipam-driver mesh"
                    .into(),
            )),
            _ => {
                return Err(ApiError::BadRequest(
                    "a mesh network has one IPv4 subnet; give --subnet once".into(),
                ))
            }
        };
        if v4.address_space != p::ADDRESS_SPACE {
            return Err(ApiError::BadRequest(format!(
                "the mesh driver needs --ipam-driver mesh (this pool is from address space {:?})",
                v4.address_space
            )));
        }
        if !req.ipv6_data.is_empty() {
            return Err(ApiError::BadRequest(
                "the mesh driver takes no IPv6 pool; leave --ipv6 out".into(),
            ));
        }
        let pool = parse_pool(&v4.pool)?;
        let mut state = self.state.lock().await;
        let nets = self.daemon.network_defs();
        if let Some(m) = state.networks.get(&req.network_id) {
            // dockerd may ask again for a network it knows (a restart):
            // the same answer, as long as the mapping still holds.
            return match nets.get(&m.mesh) {
                Some(n) if n.subnet == pool => Ok(()),
                _ => Err(ApiError::Conflict(format!(
                    "Docker network {} maps to mesh network {}, which is gone or has another subnet now",
                    req.network_id, m.mesh
                ))),
            };
        }
        let wanted = req.driver_option(p::NETWORK_OPTION);
        let existing = match &wanted {
            Some(id) => nets.get(id),
            None => network_of_pool(pool, &nets),
        };
        let (mesh, created) = match existing {
            Some(n) if n.subnet != pool => {
                return Err(ApiError::Conflict(format!(
                    "pool clash: mesh network {} has subnet {}; create the Docker network with --subnet {}",
                    n.id, n.subnet, n.subnet
                )))
            }
            Some(n) => (n.id.clone(), false),
            None => {
                let id = wanted.unwrap_or_else(|| default_mesh_id(&req.network_id));
                let mtu = match req.driver_option(p::MTU_OPTION) {
                    None => None,
                    Some(v) => Some(v.parse::<u32>().map_err(|_| {
                        ApiError::BadRequest(format!("{}={v:?} is not a number", p::MTU_OPTION))
                    })?),
                };
                self.daemon
                    .create_network(api::CreateNetworkRequest {
                        id: id.clone(),
                        subnet: pool.to_string(),
                        subnet6: None,
                        labels: Default::default(),
                        hosts: Vec::new(),
                        policy: None,
                        egress: false,
                        mtu,
                    })
                    .await?;
                (id, true)
            }
        };
        let mapping = NetworkMapping {
            mesh: mesh.clone(),
            created_by_docker: created,
        };
        if let Err(e) = state.commit(&self.dir, |s| {
            s.networks.insert(req.network_id.clone(), mapping)
        }) {
            if created {
                let _ = self.daemon.remove_network(&mesh, false).await;
            }
            return Err(ApiError::Internal(e));
        }
        info!(docker = %req.network_id, %mesh, created, "Docker network mapped");
        Ok(())
    }

    pub(super) async fn delete_network(&self, req: p::NetworkRef) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        let Some(m) = state.networks.get(&req.network_id).cloned() else {
            return Ok(()); // Already gone: let dockerd finish.
        };
        let last = !state.mesh_in_use(&m.mesh, &req.network_id);
        state
            .commit(&self.dir, |s| s.networks.remove(&req.network_id))
            .map_err(ApiError::Internal)?;
        if m.created_by_docker && last {
            // Containers of other hosts keep it (remove_network refuses).
            match self.daemon.remove_network(&m.mesh, false).await {
                Ok(_) => info!(mesh = %m.mesh, "removed the mesh network Docker created"),
                Err(ApiError::Conflict(why)) | Err(ApiError::BadRequest(why)) => {
                    info!(mesh = %m.mesh, "keeping the mesh network: {why}")
                }
                Err(ApiError::NetworkNotFound(_)) => {}
                Err(e) => warn!(mesh = %m.mesh, "cannot remove the mesh network: {e}"),
            }
        }
        Ok(())
    }

    pub(super) async fn create_endpoint(&self, req: p::CreateEndpoint) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        let m = state
            .networks
            .get(&req.network_id)
            .cloned()
            .ok_or_else(|| unknown_network(&req.network_id))?;
        if state.endpoints.contains_key(&req.endpoint_id) {
            return Err(ApiError::Conflict(format!(
                "endpoint {} exists already",
                req.endpoint_id
            )));
        }
        if !req.interface.mac_address.is_empty() {
            return Err(ApiError::BadRequest(
                "the mesh driver picks the MAC address itself; leave --mac-address out".into(),
            ));
        }
        let ip = endpoint_address(&req.interface.address)?;
        let veth = self.daemon.runtime_veth(&m.mesh).await?;
        let ep = EndpointState {
            network: req.network_id.clone(),
            mesh: m.mesh.clone(),
            ip,
            veth: veth.clone(),
            joined: false,
        };
        if let Err(e) = state.commit(&self.dir, |s| {
            s.endpoints.insert(req.endpoint_id.clone(), ep)
        }) {
            let _ = self.daemon.detach_runtime_attachment(&veth.host_if).await;
            return Err(ApiError::Internal(e));
        }
        Ok(())
    }

    pub(super) async fn delete_endpoint(&self, req: p::EndpointRef) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        let Some(ep) = state.endpoints.get(&req.endpoint_id).cloned() else {
            return Ok(());
        };
        self.daemon
            .detach_runtime_attachment(&ep.veth.host_if)
            .await?;
        state
            .commit(&self.dir, |s| s.endpoints.remove(&req.endpoint_id))
            .map_err(ApiError::Internal)?;
        Ok(())
    }

    pub(super) async fn endpoint_info(
        &self,
        req: p::EndpointRef,
    ) -> Result<serde_json::Value, ApiError> {
        let state = self.state.lock().await;
        let ep = state
            .endpoints
            .get(&req.endpoint_id)
            .ok_or_else(|| unknown_endpoint(&req.endpoint_id))?;
        Ok(serde_json::json!({ "Value": {
            "mesh.network": ep.mesh,
            "mesh.host_ifname": ep.veth.host_if,
            "mesh.ip": ep.ip.to_string(),
        }}))
    }

    pub(super) async fn join(self: &Arc<Self>, req: p::Join) -> Result<JoinAnswer, ApiError> {
        let mut state = self.state.lock().await;
        let ep = state
            .endpoints
            .get(&req.endpoint_id)
            .cloned()
            .ok_or_else(|| unknown_endpoint(&req.endpoint_id))?;
        self.daemon
            .record_runtime_attachment(&ep.mesh, &ep.veth, ep.ip, &req.sandbox_key, p::DST_PREFIX)
            .await?;
        let saved = state.commit(&self.dir, |s| {
            if let Some(e) = s.endpoints.get_mut(&req.endpoint_id) {
                e.joined = true;
            }
        });
        if let Err(e) = saved {
            let _ = self
                .daemon
                .detach_runtime_attachment(&ep.veth.host_if)
                .await;
            return Err(ApiError::Internal(e));
        }
        let src_name = ep.veth.peer_if.clone();
        let gateway = self.daemon.edge().egress_gateway(&ep.mesh);
        self.clone().learn_identity(req.endpoint_id.clone(), ep);
        Ok(JoinAnswer {
            interface_name: InterfaceName {
                src_name,
                dst_prefix: p::DST_PREFIX.into(),
            },
            gateway: gateway.map(|g| g.to_string()).unwrap_or_default(),
            disable_gateway_service: true,
        })
    }

    pub(super) async fn leave(&self, req: p::EndpointRef) -> Result<(), ApiError> {
        let mut state = self.state.lock().await;
        let Some(ep) = state.endpoints.get(&req.endpoint_id).cloned() else {
            return Err(unknown_endpoint(&req.endpoint_id));
        };
        self.daemon
            .detach_runtime_attachment(&ep.veth.host_if)
            .await?;
        state
            .commit(&self.dir, |s| {
                if let Some(e) = s.endpoints.get_mut(&req.endpoint_id) {
                    e.joined = false;
                }
            })
            .map_err(ApiError::Internal)?;
        Ok(())
    }

    /// After `Join`, in the background: ask dockerd which container holds
    /// the endpoint, and give the attachment its name and labels.
    fn learn_identity(self: Arc<Self>, endpoint: String, ep: EndpointState) {
        tokio::spawn(async move {
            let who = match self.engine.identify(&ep.network, &endpoint).await {
                Ok(who) => who,
                Err(e) => {
                    warn!(%endpoint, "no DNS name for the Docker container: {e:#}");
                    return;
                }
            };
            let name = who.name.clone();
            match self
                .daemon
                .identify_runtime_attachment(&ep.mesh, &ep.veth.host_if, who)
                .await
            {
                Ok(Some(a)) => {
                    info!(network = %a.network, ip = %a.ip, name = ?name, "Docker container named")
                }
                Ok(None) => {} // Left already.
                Err(e) => warn!(%endpoint, "cannot name the Docker container: {e}"),
            }
        });
    }
}

/// The endpoint's address from mesh IPAM (`A.B.C.D/LEN`).
fn endpoint_address(text: &str) -> Result<Ipv4Addr, ApiError> {
    if text.is_empty() {
        return Err(ApiError::BadRequest(
            "the endpoint has no IPv4 address: the mesh driver needs --ipam-driver mesh".into(),
        ));
    }
    mesh_model::records::parse_ipv4(text).map_err(|_| {
        ApiError::BadRequest(format!("endpoint address {text:?} is not IPv4 A.B.C.D/LEN"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_are_valid_mesh_ids() {
        let id = default_mesh_id("3F2A1B4C5E6D7F8091a2b3c4d5e6f708");
        assert_eq!(id, "dk3f2a1b4c5");
        mesh_model::networks::validate_network_id(&id).unwrap();
        assert!(endpoint_address("").is_err());
        assert_eq!(
            endpoint_address("10.1.0.2/24").unwrap(),
            Ipv4Addr::new(10, 1, 0, 2)
        );
        assert!(endpoint_address("fd00::1/64").is_err());
    }
}
