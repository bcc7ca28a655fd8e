//! A Docker network's name as its mesh network's id, so containers answer
//! as `web.NAME`.
//!
//! libnetwork tells a driver only the network's id at `CreateNetwork`
//! (its options are `-o` driver options; no name, no labels), and dockerd
//! lists the network only once that call has answered. So a network that
//! needs a new mesh network (no `-o mesh.network`, no mesh network with its
//! subnet) is answered at once and recorded as *pending*; the plugin then
//! asks dockerd for the name (`GET /networks/{id}`) and makes the mesh
//! network, named NAME when that is a valid mesh network id not taken yet,
//! else `dk` and the start of Docker's id. A container's address or
//! endpoint cannot be had before that: those calls settle whatever is
//! still pending first (with the `dk` form if dockerd cannot name it).

use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

use crate::ipam::{network_of_pool, parse_pool, MeshNets};
use crate::network::default_mesh_id;
use crate::store::{DockerState, NetworkMapping};
use crate::{Error, Plugin};

/// How often and how long to ask dockerd for a new network's name.
const POLL: Duration = Duration::from_millis(100);
const ASK_FOR: Duration = Duration::from_secs(30);
/// Longest wait for one answer from dockerd.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);
/// The label a Docker-made mesh network carries: its Docker network's name.
pub(crate) const NAME_LABEL: &str = "docker.network";

/// The mesh id for Docker network `docker_id` called `name`.
pub(crate) fn mesh_id_for(name: Option<&str>, docker_id: &str, nets: &MeshNets) -> String {
    match name {
        Some(n)
            if mesh_model::networks::validate_network_id(n).is_ok() && !nets.contains_key(n) =>
        {
            n.to_string()
        }
        _ => default_mesh_id(docker_id),
    }
}

impl Plugin {
    /// Settles `docker_id` as soon as dockerd lists it (in the background:
    /// `CreateNetwork` has answered by then).
    pub(crate) fn settle_soon(self: &Arc<Self>, docker_id: String) {
        let p = self.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(POLL).await;
                let mut state = p.state.lock().await;
                let give_up = start.elapsed() > ASK_FOR;
                match p.settle(&mut state, &docker_id, give_up).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => {
                        warn!(docker = %docker_id, "cannot make the mesh network yet (retried at its first container): {e}");
                        return;
                    }
                }
            }
        });
    }

    /// Settles the pending networks a container's address or endpoint
    /// needs: those `wanted` picks (by Docker id and pool), never others, so
    /// one network that cannot be made fails only its own containers.
    pub(crate) async fn settle_where(
        &self,
        state: &mut DockerState,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> Result<(), Error> {
        let pending: Vec<String> = state
            .networks
            .iter()
            .filter(|(id, m)| m.pending.as_ref().is_some_and(|p| wanted(id, &p.pool)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in pending {
            self.settle(state, &id, true).await?;
        }
        Ok(())
    }

    /// Makes the mesh network of pending `docker_id` (or maps it to the
    /// one that has its subnet by now). False while dockerd does not name
    /// it, unless `anyhow`: then it gets the `dk` form.
    async fn settle(
        &self,
        state: &mut DockerState,
        docker_id: &str,
        anyhow: bool,
    ) -> Result<bool, Error> {
        let Some(pending) = state
            .networks
            .get(docker_id)
            .and_then(|m| m.pending.clone())
        else {
            return Ok(true); // Settled already, or removed.
        };
        // Bounded: the plugin's state is locked meanwhile.
        // Bounded (the plugin's state is locked meanwhile): a dockerd that
        // does not answer in time has not named the network yet.
        let asked = tokio::time::timeout(ASK_TIMEOUT, self.engine.network_name(docker_id)).await;
        let name = match asked.unwrap_or(Ok(None)) {
            Ok(Some(name)) => Some(name),
            Ok(None) if !anyhow => return Ok(false),
            Err(e) if !anyhow => {
                tracing::debug!("asking dockerd for a network's name: {e}");
                return Ok(false);
            }
            _ => None,
        };
        let pool = parse_pool(&pending.pool)?;
        let nets = self.mesh_networks().await?;
        let (mesh, created) = match network_of_pool(pool, &nets) {
            Some(n) => (n.id.clone(), false),
            None => {
                let id = mesh_id_for(name.as_deref(), docker_id, &nets);
                match self.make(&id, pool, pending.mtu, name.as_deref()).await {
                    Ok(()) => (id, true),
                    // Taken meanwhile (another host made it): the dk form.
                    Err(e) if id != default_mesh_id(docker_id) => {
                        warn!(docker = %docker_id, "cannot make mesh network {id}: {e}; using the dk form");
                        let id = default_mesh_id(docker_id);
                        self.make(&id, pool, pending.mtu, name.as_deref()).await?;
                        (id, true)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let mapping = NetworkMapping {
            mesh: mesh.clone(),
            created_by_docker: created,
            pending: None,
        };
        if let Err(e) = state.commit(&self.file, |s| {
            s.networks.insert(docker_id.to_string(), mapping)
        }) {
            if created {
                let _ = self.meshd.remove_network(&mesh, false).await;
            }
            return Err(Error::Store(e));
        }
        info!(docker = %docker_id, name = name.as_deref().unwrap_or("?"), %mesh, created, "Docker network mapped");
        Ok(true)
    }

    /// Creates mesh network `id` for a Docker network called `name`.
    pub(crate) async fn make(
        &self,
        id: &str,
        pool: Ipv4Net,
        mtu: Option<u32>,
        name: Option<&str>,
    ) -> Result<(), Error> {
        let labels: BTreeMap<String, String> = name
            .map(|n| (NAME_LABEL.to_string(), n.to_string()))
            .into_iter()
            .collect();
        self.meshd
            .create_network(&mesh_api::CreateNetworkRequest {
                id: id.to_string(),
                subnet: pool.to_string(),
                subnet6: None,
                labels,
                hosts: Vec::new(),
                policy: None,
                egress: false,
                mtu,
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::MeshNet;

    #[test]
    fn valid_free_names_become_the_mesh_id_others_keep_the_dk_form() {
        let docker = "3f2a1b4c5d6e7f";
        let nets: MeshNets = [(
            "taken".to_string(),
            MeshNet {
                id: "taken".into(),
                subnet: "10.1.0.0/24".parse().unwrap(),
            },
        )]
        .into();
        assert_eq!(mesh_id_for(Some("dnet"), docker, &nets), "dnet");
        assert_eq!(mesh_id_for(Some("web-2"), docker, &nets), "web-2");
        for bad in ["Web", "my_net", "a-very-long-name", "-x", "taken", ""] {
            assert_eq!(
                mesh_id_for(Some(bad), docker, &nets),
                "dk3f2a1b4c5",
                "{bad}"
            );
        }
        assert_eq!(mesh_id_for(None, docker, &nets), "dk3f2a1b4c5");
    }

    /// A fake meshd (networks listed and created) and a fake dockerd that
    /// names `d1` `dnet`, `d2` `Bad_Name` and does not list `d3`.
    #[tokio::test]
    async fn pending_networks_are_named_after_dockerds_name_or_get_the_dk_form() {
        use crate::protocol as p;
        use axum::extract::Path;
        use axum::routing::get;
        use axum::Json;
        use serde_json::{json, Value};
        use std::sync::Mutex;

        let nets: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (list, add) = (nets.clone(), nets.clone());
        let meshd = axum::Router::new().route(
            mesh_api::routes::NETWORKS,
            get(move || async move { Json(Value::from(list.lock().unwrap().clone())) }).post(
                move |Json(req): Json<Value>| async move {
                    let n = json!({"id": req["id"], "subnet": req["subnet"], "subnet6": "fd00::/64",
                        "dns": "", "dns6": "", "labels": req["labels"], "wire_id": 1,
                        "bridge": "b", "mtu": 1422, "created_by": "h"});
                    add.lock().unwrap().push(n.clone());
                    Json(n)
                },
            ),
        );
        let (plugin, dir) = crate::testing::plugin_with(meshd).await;
        let dockerd = axum::Router::new().route(
            "/networks/{id}",
            get(|Path(id): Path<String>| async move {
                match id.as_str() {
                    "d1" => Ok(Json(json!({"Name": "dnet", "Id": "d1"}))),
                    "d2" => Ok(Json(json!({"Name": "Bad_Name", "Id": "d2"}))),
                    _ => Err(axum::http::StatusCode::NOT_FOUND),
                }
            }),
        );
        let listener = tokio::net::UnixListener::bind(dir.join("no-dockerd.sock")).unwrap();
        tokio::spawn(async move { axum::serve(listener, dockerd).await });
        let plugin = Arc::new(plugin);
        let create = |id: &str, pool: &str| p::CreateNetwork {
            network_id: id.into(),
            ipv4_data: vec![p::IpamData {
                address_space: p::ADDRESS_SPACE.into(),
                pool: pool.into(),
                gateway: String::new(),
            }],
            ..Default::default()
        };
        let mapped = |id: &'static str| {
            let plugin = plugin.clone();
            async move {
                for _ in 0..100 {
                    if let Some(m) = plugin.state.lock().await.networks.get(id) {
                        if m.pending.is_none() {
                            return m.clone();
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("{id} is still pending");
            }
        };
        plugin
            .create_network(create("d1", "10.9.1.0/24"))
            .await
            .unwrap();
        let m = mapped("d1").await;
        assert_eq!((m.mesh.as_str(), m.created_by_docker), ("dnet", true));
        let made = nets.lock().unwrap()[0].clone();
        assert_eq!(made["labels"][NAME_LABEL], "dnet");
        // dockerd asking again (a restart) gets the same answer.
        plugin
            .create_network(create("d1", "10.9.1.0/24"))
            .await
            .unwrap();

        plugin
            .create_network(create("d2", "10.9.2.0/24"))
            .await
            .unwrap();
        assert_eq!(mapped("d2").await.mesh, default_mesh_id("d2"));

        // Not listed: a container's address or endpoint settles it anyway.
        plugin
            .create_network(create("d3", "10.9.3.0/24"))
            .await
            .unwrap();
        let mut state = plugin.state.lock().await;
        assert!(state.networks["d3"].pending.is_some());
        plugin.settle_where(&mut state, |_, _| true).await.unwrap();
        assert_eq!(state.networks["d3"].mesh, default_mesh_id("d3"));
        assert!(state.networks["d3"].pending.is_none());
        drop(state);
        // A subnet some mesh network has maps to it at once, not Docker-made.
        plugin
            .create_network(create("d4", "10.9.1.0/24"))
            .await
            .unwrap();
        let m = mapped("d4").await;
        assert_eq!((m.mesh.as_str(), m.created_by_docker), ("dnet", false));
        assert_eq!(nets.lock().unwrap().len(), 3);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
