//! `NetworkDriver.*`: a Docker network maps to a mesh network (made for it,
//! or an existing one); its endpoints are runtime attachments: the veth is
//! made at `CreateEndpoint`, recorded at `Join` (when dockerd moves it into
//! the container), undone at `Leave`/`DeleteEndpoint`.

use mesh_api::ErrorKind;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tracing::{info, warn};

use crate::ipam::{network_of_pool, parse_pool};
use crate::protocol::{self as p, InterfaceName, JoinAnswer};
use crate::store::{EndpointState, NetworkMapping, Pending};
use crate::{Error, Plugin};

/// The mesh network id for a Docker network created without `-o
/// mesh.network`: `dk` and the start of Docker's id (mesh ids have 11
/// characters at most).
pub(crate) fn default_mesh_id(docker_id: &str) -> String {
    let hex: String = docker_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(9)
        .collect();
    format!("dk{}", hex.to_ascii_lowercase())
}

fn unknown_network(id: &str) -> Error {
    Error::NetworkNotFound(format!(
        "Docker network {id} is not a mesh network on this host (create it with -d mesh --ipam-driver mesh)"
    ))
}

fn unknown_endpoint(id: &str) -> Error {
    Error::NotFound(format!("endpoint {id} is not known to the mesh plugin"))
}

impl Plugin {
    pub(crate) async fn create_network(
        self: &Arc<Self>,
        req: p::CreateNetwork,
    ) -> Result<(), Error> {
        if req.network_id.is_empty() {
            return Err(Error::BadRequest(
                "CreateNetwork without a NetworkID".into(),
            ));
        }
        let v4 = match req.ipv4_data.as_slice() {
            [one] => one,
            [] => return Err(Error::BadRequest(
                "the mesh driver needs an IPv4 pool: create the network with --ipam-driver mesh"
                    .into(),
            )),
            _ => {
                return Err(Error::BadRequest(
                    "a mesh network has one IPv4 subnet; give --subnet once".into(),
                ))
            }
        };
        if v4.address_space != p::ADDRESS_SPACE {
            return Err(Error::BadRequest(format!(
                "the mesh driver needs --ipam-driver mesh (this pool is from address space {:?})",
                v4.address_space
            )));
        }
        if !req.ipv6_data.is_empty() {
            return Err(Error::BadRequest(
                "the mesh driver takes no IPv6 pool; leave --ipv6 out".into(),
            ));
        }
        let pool = parse_pool(&v4.pool)?;
        let mut state = self.state.lock().await;
        let nets = self.mesh_networks().await?;
        if let Some(m) = state.networks.get(&req.network_id) {
            // dockerd may ask again for a network it knows (a restart):
            // the same answer, as long as the mapping still holds.
            if let Some(p) = &m.pending {
                return match p.pool == pool.to_string() {
                    true => Ok(()),
                    false => Err(Error::Conflict(format!(
                        "Docker network {} has subnet {}, not {pool}",
                        req.network_id, p.pool
                    ))),
                };
            }
            return match nets.get(&m.mesh) {
                Some(n) if n.subnet == pool => Ok(()),
                _ => Err(Error::Conflict(format!(
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
                return Err(Error::Conflict(format!(
                    "pool clash: mesh network {} has subnet {}; create the Docker network with --subnet {}",
                    n.id, n.subnet, n.subnet
                )))
            }
            Some(n) => (n.id.clone(), false),
            None => {
                let mtu = match req.driver_option(p::MTU_OPTION) {
                    None => None,
                    Some(v) => Some(v.parse::<u32>().map_err(|_| {
                        Error::BadRequest(format!("{}={v:?} is not a number", p::MTU_OPTION))
                    })?),
                };
                let Some(id) = wanted else {
                    // Named after the Docker network once dockerd says
                    // what it is called (see `naming`).
                    let mapping = NetworkMapping {
                        mesh: default_mesh_id(&req.network_id),
                        created_by_docker: true,
                        pending: Some(Pending {
                            pool: pool.to_string(),
                            mtu,
                        }),
                    };
                    state
                        .commit(&self.file, |s| {
                            s.networks.insert(req.network_id.clone(), mapping)
                        })
                        .map_err(Error::Store)?;
                    self.settle_soon(req.network_id.clone());
                    return Ok(());
                };
                self.make(&id, pool, mtu, None).await?;
                (id, true)
            }
        };
        let mapping = NetworkMapping {
            mesh: mesh.clone(),
            created_by_docker: created,
            pending: None,
        };
        if let Err(e) = state.commit(&self.file, |s| {
            s.networks.insert(req.network_id.clone(), mapping)
        }) {
            if created {
                let _ = self.meshd.remove_network(&mesh, false).await;
            }
            return Err(Error::Store(e));
        }
        info!(docker = %req.network_id, %mesh, created, "Docker network mapped");
        Ok(())
    }

    pub(crate) async fn delete_network(&self, req: p::NetworkRef) -> Result<(), Error> {
        let mut state = self.state.lock().await;
        let Some(m) = state.networks.get(&req.network_id).cloned() else {
            return Ok(()); // Already gone: let dockerd finish.
        };
        let last = !state.mesh_in_use(&m.mesh, &req.network_id);
        state
            .commit(&self.file, |s| s.networks.remove(&req.network_id))
            .map_err(Error::Store)?;
        if m.created_by_docker && last {
            // Containers of other hosts keep it (remove_network refuses).
            match self.meshd.remove_network(&m.mesh, false).await {
                Ok(_) => info!(mesh = %m.mesh, "removed the mesh network Docker created"),
                Err(why) => match why.kind() {
                    Some(ErrorKind::Conflict | ErrorKind::BadRequest) => {
                        info!(mesh = %m.mesh, "keeping the mesh network: {why}")
                    }
                    Some(ErrorKind::NetworkNotFound) => {}
                    _ => warn!(mesh = %m.mesh, "cannot remove the mesh network: {why}"),
                },
            }
        }
        Ok(())
    }

    pub(crate) async fn create_endpoint(&self, req: p::CreateEndpoint) -> Result<(), Error> {
        let mut state = self.state.lock().await;
        if state
            .networks
            .get(&req.network_id)
            .is_some_and(|m| m.pending.is_some())
        {
            let id = req.network_id.clone();
            self.settle_where(&mut state, |docker_id, _| docker_id == id)
                .await?;
        }
        let m = state
            .networks
            .get(&req.network_id)
            .cloned()
            .ok_or_else(|| unknown_network(&req.network_id))?;
        if state.endpoints.contains_key(&req.endpoint_id) {
            return Err(Error::Conflict(format!(
                "endpoint {} exists already",
                req.endpoint_id
            )));
        }
        if !req.interface.mac_address.is_empty() {
            return Err(Error::BadRequest(
                "the mesh driver picks the MAC address itself; leave --mac-address out".into(),
            ));
        }
        let ip = endpoint_address(&req.interface.address)?;
        let veth = self.meshd.runtime_veth(&m.mesh).await?;
        let ep = EndpointState {
            network: req.network_id.clone(),
            mesh: m.mesh.clone(),
            ip,
            veth: veth.clone(),
            joined: false,
        };
        if let Err(e) = state.commit(&self.file, |s| {
            s.endpoints.insert(req.endpoint_id.clone(), ep)
        }) {
            let _ = self.meshd.detach_runtime(&veth.host_if).await;
            return Err(Error::Store(e));
        }
        Ok(())
    }

    pub(crate) async fn delete_endpoint(&self, req: p::EndpointRef) -> Result<(), Error> {
        let mut state = self.state.lock().await;
        let Some(ep) = state.endpoints.get(&req.endpoint_id).cloned() else {
            return Ok(());
        };
        self.meshd.detach_runtime(&ep.veth.host_if).await?;
        state
            .commit(&self.file, |s| s.endpoints.remove(&req.endpoint_id))
            .map_err(Error::Store)?;
        Ok(())
    }

    pub(crate) async fn endpoint_info(
        &self,
        req: p::EndpointRef,
    ) -> Result<serde_json::Value, Error> {
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

    pub(crate) async fn join(self: &Arc<Self>, req: p::Join) -> Result<JoinAnswer, Error> {
        let mut state = self.state.lock().await;
        let ep = state
            .endpoints
            .get(&req.endpoint_id)
            .cloned()
            .ok_or_else(|| unknown_endpoint(&req.endpoint_id))?;
        // Asked first: once the attachment is recorded, nothing should fail.
        let gateway = self.meshd.egress_gateway(&ep.mesh).await?.gateway;
        self.meshd
            .record_runtime(&mesh_api::RecordRuntimeRequest {
                network: ep.mesh.clone(),
                veth: ep.veth.clone(),
                ip: ep.ip.to_string(),
                netns: req.sandbox_key.clone(),
                ifname: p::DST_PREFIX.into(),
            })
            .await?;
        let saved = state.commit(&self.file, |s| {
            if let Some(e) = s.endpoints.get_mut(&req.endpoint_id) {
                e.joined = true;
            }
        });
        if let Err(e) = saved {
            let _ = self.meshd.detach_runtime(&ep.veth.host_if).await;
            return Err(Error::Store(e));
        }
        let src_name = ep.veth.peer_if.clone();
        self.clone().learn_identity(req.endpoint_id.clone(), ep);
        Ok(JoinAnswer {
            interface_name: InterfaceName {
                src_name,
                dst_prefix: p::DST_PREFIX.into(),
            },
            gateway: gateway.unwrap_or_default(),
            disable_gateway_service: true,
        })
    }

    pub(crate) async fn leave(&self, req: p::EndpointRef) -> Result<(), Error> {
        let mut state = self.state.lock().await;
        let Some(ep) = state.endpoints.get(&req.endpoint_id).cloned() else {
            return Err(unknown_endpoint(&req.endpoint_id));
        };
        self.meshd.detach_runtime(&ep.veth.host_if).await?;
        state
            .commit(&self.file, |s| {
                if let Some(e) = s.endpoints.get_mut(&req.endpoint_id) {
                    e.joined = false;
                }
            })
            .map_err(Error::Store)?;
        Ok(())
    }

    /// After `Join`, in the background: ask dockerd which container holds
    /// the endpoint, and give the attachment its name and labels.
    fn learn_identity(self: Arc<Self>, endpoint: String, ep: EndpointState) {
        tokio::spawn(async move {
            let who = match self.engine.identify(&ep.network, &endpoint).await {
                Ok(who) => who,
                Err(e) => {
                    warn!(%endpoint, "no DNS name for the Docker container: {e}");
                    return;
                }
            };
            let name = who.name.clone();
            let req = mesh_api::IdentifyRuntimeRequest {
                network: ep.mesh.clone(),
                host_if: ep.veth.host_if.clone(),
                who,
            };
            match self.meshd.identify_runtime(&req).await {
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
fn endpoint_address(text: &str) -> Result<Ipv4Addr, Error> {
    if text.is_empty() {
        return Err(Error::BadRequest(
            "the endpoint has no IPv4 address: the mesh driver needs --ipam-driver mesh".into(),
        ));
    }
    mesh_model::records::parse_ipv4(text).map_err(|_| {
        Error::BadRequest(format!("endpoint address {text:?} is not IPv4 A.B.C.D/LEN"))
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
