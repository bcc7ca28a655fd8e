//! `IpamDriver.*`: pools are mesh networks' subnets (the pool id is the
//! subnet itself, so the driver keeps no pool state), addresses are mesh
//! IPAM reservations, and the gateway Docker insists on is the network's
//! DNS address, which no container ever gets.

use ipnet::Ipv4Net;
use mesh_api::ErrorKind;
use mesh_model::ipam::service_address;
use mesh_model::networks::overlaps;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::protocol::{self as p, AddressAnswer, PoolAnswer};
use crate::{Error, Plugin};

/// A mesh network as the plugin needs it: its id and IPv4 subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MeshNet {
    pub(crate) id: String,
    pub(crate) subnet: Ipv4Net,
}

/// meshd's networks by id (`GET /v1/networks`).
pub(crate) type MeshNets = BTreeMap<String, MeshNet>;

/// Where a self-chosen pool comes from when `--subnet` is not given.
const AUTO_POOLS: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(10, 200, 0, 0), 16) {
    Ok(n) => n,
    Err(_) => panic!("constant"),
};
const AUTO_POOL_LEN: u8 = 24;

pub(crate) fn parse_pool(text: &str) -> Result<Ipv4Net, Error> {
    let net: Ipv4Net = text.parse().map_err(|_| {
        Error::BadRequest(format!("pool {text:?} is not an IPv4 subnet (A.B.C.D/LEN)"))
    })?;
    if net.trunc() != net {
        return Err(Error::BadRequest(format!(
            "pool {text}: host bits are set (did you mean {}?)",
            net.trunc()
        )));
    }
    Ok(net)
}

/// Picks the pool for a `RequestPool`: the subnet asked for, checked
/// against the mesh's networks, else that of the network `--ipam-opt
/// mesh.network=ID` names, else a free /24 of 10.200.0.0/16.
pub(crate) fn choose_pool(
    asked: &str,
    hint: Option<&str>,
    nets: &MeshNets,
    occupied: &[Ipv4Net],
) -> Result<Ipv4Net, Error> {
    let named = match hint {
        Some(id) => Some(nets.get(id).ok_or_else(|| {
            Error::NetworkNotFound(format!(
                "mesh network {id:?} does not exist; give --subnet to create it"
            ))
        })?),
        None => None,
    };
    if asked.is_empty() {
        if let Some(n) = named {
            return Ok(n.subnet);
        }
        return AUTO_POOLS
            .subnets(AUTO_POOL_LEN)
            .map_err(|e| Error::Answer(format!("splitting {AUTO_POOLS}: {e}")))?
            .find(|c| {
                !nets.values().any(|n| overlaps(n.subnet, *c))
                    && !occupied.iter().any(|o| overlaps(*o, *c))
            })
            .ok_or_else(|| {
                Error::Conflict(format!(
                    "no free /{AUTO_POOL_LEN} left in {AUTO_POOLS}; give --subnet"
                ))
            });
    }
    let pool = parse_pool(asked)?;
    if let Some(n) = named {
        if n.subnet != pool {
            return Err(Error::Conflict(format!(
                "pool clash: mesh network {} has subnet {}, not {pool}",
                n.id, n.subnet
            )));
        }
    }
    if let Some(n) = nets
        .values()
        .find(|n| n.subnet != pool && overlaps(n.subnet, pool))
    {
        return Err(Error::Conflict(format!(
            "pool clash: {pool} overlaps mesh network {} ({})",
            n.id, n.subnet
        )));
    }
    Ok(pool)
}

/// The mesh network whose subnet is `pool`.
pub(crate) fn network_of_pool(pool: Ipv4Net, nets: &MeshNets) -> Option<&MeshNet> {
    nets.values().find(|n| n.subnet == pool)
}

impl Plugin {
    /// meshd's networks, by id.
    pub(crate) async fn mesh_networks(&self) -> Result<MeshNets, Error> {
        let mut nets = MeshNets::new();
        for n in self.meshd.networks().await? {
            let subnet = n.subnet.parse().map_err(|_| {
                Error::Answer(format!(
                    "meshd lists network {} with subnet {:?}",
                    n.id, n.subnet
                ))
            })?;
            nets.insert(n.id.clone(), MeshNet { id: n.id, subnet });
        }
        Ok(nets)
    }

    /// The IPv4 space a new pool must stay out of on this host.
    async fn occupied(&self) -> Result<Vec<Ipv4Net>, Error> {
        let occupied = self.meshd.occupied().await?;
        occupied
            .v4
            .iter()
            .map(|n| {
                n.parse()
                    .map_err(|_| Error::Answer(format!("meshd answered {n:?} as occupied space")))
            })
            .collect()
    }

    pub(crate) async fn request_pool(&self, req: p::RequestPool) -> Result<PoolAnswer, Error> {
        if req.v6 {
            return Err(Error::BadRequest(
                "mesh IPAM hands out IPv4 pools only (mesh networks derive their IPv6 prefix themselves); leave --ipv6 out".into(),
            ));
        }
        if !req.sub_pool.is_empty() {
            return Err(Error::BadRequest(format!(
                "--ip-range {} is not supported: mesh IPAM serves the whole subnet",
                req.sub_pool
            )));
        }
        let _state = self.state.lock().await;
        let nets = self.mesh_networks().await?;
        let pool = choose_pool(
            &req.pool,
            req.options.get(p::NETWORK_OPTION).map(String::as_str),
            &nets,
            &self.occupied().await?,
        )?;
        Ok(PoolAnswer {
            pool_id: pool.to_string(),
            pool: pool.to_string(),
            data: BTreeMap::new(),
        })
    }

    pub(crate) async fn release_pool(&self, req: p::ReleasePool) -> Result<(), Error> {
        // Nothing is kept per pool; still refuse what was never ours.
        parse_pool(&req.pool_id).map(|_| ())
    }

    pub(crate) async fn request_address(
        &self,
        req: p::RequestAddress,
    ) -> Result<AddressAnswer, Error> {
        let pool = parse_pool(&req.pool_id)?;
        let answer = |ip: Ipv4Addr| AddressAnswer {
            address: format!("{ip}/{}", pool.prefix_len()),
            data: BTreeMap::new(),
        };
        let gateway = service_address(pool);
        if req.options.get(p::ADDRESS_TYPE_OPTION).map(String::as_str)
            == Some(p::GATEWAY_ADDRESS_TYPE)
        {
            if !req.address.is_empty() && req.address != gateway.to_string() {
                return Err(Error::BadRequest(format!(
                    "mesh networks route nothing through a gateway; {pool}'s gateway is its DNS address {gateway}: leave --gateway out"
                )));
            }
            return Ok(answer(gateway));
        }
        let mut state = self.state.lock().await;
        // A container's address: its mesh network must exist now (only
        // networks of this pool are settled here).
        self.settle_where(&mut state, |_, p| parse_pool(p).is_ok_and(|p| p == pool))
            .await?;
        let nets = self.mesh_networks().await?;
        let net = network_of_pool(pool, &nets).ok_or_else(|| {
            Error::NetworkNotFound(format!(
                "no mesh network has subnet {pool} (is the Docker network's driver mesh?)"
            ))
        })?;
        let got = self
            .meshd
            .reserve(&mesh_api::ReserveRequest {
                network: net.id.clone(),
                ip: (!req.address.is_empty()).then(|| req.address.clone()),
                label: Some("docker".into()),
            })
            .await?;
        let ip = mesh_model::records::parse_ipv4(&got.ip)
            .map_err(|e| Error::Answer(format!("reservation answered {:?}: {e}", got.ip)))?;
        Ok(answer(ip))
    }

    pub(crate) async fn release_address(&self, req: p::ReleaseAddress) -> Result<(), Error> {
        let pool = parse_pool(&req.pool_id)?;
        if req.address == service_address(pool).to_string() {
            return Ok(());
        }
        let _state = self.state.lock().await;
        let nets = self.mesh_networks().await?;
        let Some(net) = network_of_pool(pool, &nets) else {
            return Ok(()); // The network went, and its addresses with it.
        };
        match self
            .meshd
            .release(&mesh_api::ReleaseRequest {
                network: net.id.clone(),
                ip: req.address.clone(),
            })
            .await
        {
            Ok(_) => Ok(()),
            // Handed over to the attachment, which released it on Leave.
            Err(e) if e.kind() == Some(ErrorKind::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(id: &str, subnet: &str) -> (String, MeshNet) {
        let subnet: Ipv4Net = subnet.parse().unwrap();
        (
            id.into(),
            MeshNet {
                id: id.into(),
                subnet,
            },
        )
    }

    #[test]
    fn pools_are_checked_against_the_mesh() {
        let nets: BTreeMap<_, _> =
            [net("web", "10.40.0.0/24"), net("auto", "10.200.0.0/24")].into();
        // The subnet of an existing network, or a free one.
        assert_eq!(
            choose_pool("10.40.0.0/24", None, &nets, &[])
                .unwrap()
                .to_string(),
            "10.40.0.0/24"
        );
        assert_eq!(
            choose_pool("10.41.0.0/24", None, &nets, &[])
                .unwrap()
                .to_string(),
            "10.41.0.0/24"
        );
        // Named network: its subnet; a different one is a clash.
        assert_eq!(
            choose_pool("", Some("web"), &nets, &[])
                .unwrap()
                .to_string(),
            "10.40.0.0/24"
        );
        let e = choose_pool("10.41.0.0/24", Some("web"), &nets, &[]).unwrap_err();
        assert!(
            matches!(e, Error::Conflict(_)) && e.to_string().contains("pool clash"),
            "{e}"
        );
        assert!(matches!(
            choose_pool("", Some("nope"), &nets, &[]),
            Err(Error::NetworkNotFound(_))
        ));
        // Overlap without equality.
        let e = choose_pool("10.40.0.0/16", None, &nets, &[]).unwrap_err();
        assert!(e.to_string().contains("overlaps mesh network web"), "{e}");
        // Self-chosen: the first free /24.
        assert_eq!(
            choose_pool("", None, &nets, &[]).unwrap().to_string(),
            "10.200.1.0/24"
        );
        // Nor a LAN or a route of the host.
        let lan: Ipv4Net = "10.200.1.0/24".parse().unwrap();
        assert_eq!(
            choose_pool("", None, &nets, &[lan]).unwrap().to_string(),
            "10.200.2.0/24"
        );
        assert!(matches!(
            choose_pool("10.40.0.1/24", None, &nets, &[]),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            choose_pool("bogus", None, &nets, &[]),
            Err(Error::BadRequest(_))
        ));
        assert_eq!(
            network_of_pool("10.40.0.0/24".parse().unwrap(), &nets)
                .unwrap()
                .id,
            "web"
        );
    }

    /// Through meshd's API: its networks and occupied space shape the
    /// pool; a reservation meshd no longer has (handed over to the
    /// attachment) is no error to release.
    #[tokio::test]
    async fn pools_and_releases_go_through_meshd() {
        use axum::http::StatusCode;
        use axum::routing::{get, post};
        use axum::Json;
        use serde_json::json;

        let network = |id: &str, subnet: &str| {
            json!({"id": id, "subnet": subnet, "subnet6": "fd00::/64", "dns": "", "dns6": "",
                   "wire_id": 1, "bridge": "b", "mtu": 1422, "created_by": "h"})
        };
        let nets = json!([
            network("web", "10.40.0.0/24"),
            network("auto", "10.200.0.0/24")
        ]);
        let meshd = axum::Router::new()
            .route(
                mesh_api::routes::NETWORKS,
                get(move || async move { Json(nets) }),
            )
            .route(
                mesh_api::routes::RUNTIME_OCCUPIED,
                get(|| async { Json(json!({"v4": ["10.200.1.0/24"]})) }),
            )
            .route(
                mesh_api::routes::IPAM_RELEASE,
                post(|| async {
                    (
                        StatusCode::NOT_FOUND,
                        Json(json!({"error": "no reservation", "kind": "not_found"})),
                    )
                }),
            );
        let (plugin, dir) = crate::testing::plugin_with(meshd).await;
        let got = plugin
            .request_pool(p::RequestPool::default())
            .await
            .unwrap();
        assert_eq!(got.pool, "10.200.2.0/24");
        let named = p::RequestPool {
            options: [(p::NETWORK_OPTION.to_string(), "web".to_string())].into(),
            ..Default::default()
        };
        assert_eq!(
            plugin.request_pool(named).await.unwrap().pool,
            "10.40.0.0/24"
        );
        plugin
            .release_address(p::ReleaseAddress {
                pool_id: "10.40.0.0/24".into(),
                address: "10.40.0.7".into(),
            })
            .await
            .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
