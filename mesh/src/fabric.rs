//! This host's devices for its networks: per network a bridge with the
//! service addresses, a TAP the data plane reads and writes, and a DNS
//! server on the bridge. Which networks to carry is decided elsewhere; this
//! module makes the kernel and the data plane match.

use anyhow::{Context, Result};
use dataplane::{Dataplane, NetworkId};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::netdev::Netlink;
use crate::netsecret::HostKey;
use crate::peers::NetworkScope;
use mesh_dns::Resolver;
use mesh_model::ipam;
use mesh_model::networks;
use mesh_model::records::NetworkDef;

/// The networks carried here now. Held under the daemon's lock that
/// serialises every change to this host's devices.
#[derive(Default)]
pub struct Realized {
    /// Network id → wire id.
    pub wires: BTreeMap<String, u32>,
    dns_tasks: BTreeMap<String, Vec<JoinHandle<()>>>,
}

pub struct Fabric {
    pub nl: Netlink,
    dp: Dataplane,
    prefix: String,
    mtu: Arc<crate::mtu::Mtus>,
    resolver: Arc<Resolver>,
    host_key: Arc<HostKey>,
    me: String,
}

impl Fabric {
    pub fn new(
        nl: Netlink,
        dp: Dataplane,
        prefix: String,
        mtu: Arc<crate::mtu::Mtus>,
        resolver: Arc<Resolver>,
        host_key: Arc<HostKey>,
        me: String,
    ) -> Fabric {
        Fabric {
            nl,
            dp,
            prefix,
            mtu,
            resolver,
            host_key,
            me,
        }
    }

    /// The DNS servers' resolver (one for every network here): a reload
    /// replaces its upstreams.
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    pub fn mtus(&self) -> &Arc<crate::mtu::Mtus> {
        &self.mtu
    }

    pub fn bridge_of(&self, wire: u32) -> String {
        networks::bridge_name(&self.prefix, wire)
    }

    /// The device names the networks in `defs` use here (kept at start).
    pub fn device_names<'a>(&self, defs: impl Iterator<Item = &'a NetworkDef>) -> Vec<String> {
        defs.flat_map(|n| {
            let w = networks::wire_id(&n.id);
            [
                networks::bridge_name(&self.prefix, w),
                networks::tap_name(&self.prefix, w),
            ]
        })
        .collect()
    }

    /// Sets up what `desired` has and `realized` lacks; returns the networks
    /// to take down (the caller first detaches their containers, then calls
    /// [`Fabric::teardown`]).
    pub async fn realize_missing(
        &self,
        realized: &mut Realized,
        desired: &BTreeMap<String, NetworkDef>,
    ) -> Vec<(String, u32)> {
        for (id, def) in desired {
            if realized.wires.contains_key(id) {
                continue;
            }
            match self.realize(def).await {
                Ok(w) => {
                    realized.wires.insert(id.clone(), w);
                }
                Err(e) => warn!(network = %id, "cannot set up network: {e:#}"),
            }
        }
        realized
            .wires
            .iter()
            .filter(|(id, _)| !desired.contains_key(*id))
            .map(|(id, w)| (id.clone(), *w))
            .collect()
    }

    /// Starts the DNS servers missing and returns the scopes the data plane
    /// gives peers.
    pub fn finish(
        &self,
        realized: &mut Realized,
        desired: &BTreeMap<String, NetworkDef>,
    ) -> Vec<NetworkScope> {
        for id in realized.wires.keys().cloned().collect::<Vec<_>>() {
            if realized.dns_tasks.contains_key(&id) {
                continue;
            }
            if let Some(def) = desired.get(&id) {
                match self.start_dns(def) {
                    Ok(tasks) => {
                        realized.dns_tasks.insert(id, tasks);
                    }
                    Err(e) => warn!(network = %id, "cannot serve DNS: {e:#}"),
                }
            }
        }
        realized
            .wires
            .iter()
            .map(|(id, w)| NetworkScope {
                id: NetworkId(*w),
                hosts: desired.get(id).map(|n| n.hosts.clone()).unwrap_or_default(),
            })
            .collect()
    }

    /// DNS over UDP and TCP per address family on the network's bridge.
    fn start_dns(&self, def: &NetworkDef) -> Result<Vec<JoinHandle<()>>> {
        let bridge = self.bridge_of(networks::wire_id(&def.id));
        let svc = ipam::service_address(def.subnet);
        let mut tasks = Vec::new();
        for addr in [IpAddr::V4(svc), IpAddr::V6(def.ipv6_for(svc))] {
            tasks.extend(
                mesh_dns::serve_on(self.resolver.clone(), &def.id, addr, &bridge)
                    .with_context(|| format!("binding DNS on {addr}:53 ({bridge})"))?,
            );
        }
        Ok(tasks)
    }

    async fn realize(&self, def: &NetworkDef) -> Result<u32> {
        let w = networks::wire_id(&def.id);
        // The same MAC and service addresses on every host: a container
        // always reaches its own host's bridge for DNS, never a remote one.
        let bridge_name = self.bridge_of(w);
        let mtu = self.mtu.of(&def.id);
        let bridge = self
            .nl
            .ensure_bridge(&bridge_name, mtu, networks::service_mac(w))
            .await?;
        let svc = ipam::service_address(def.subnet);
        self.nl
            .add_address(&bridge_name, IpAddr::V4(svc), 32, false)
            .await?;
        // IPv6 needs the on-link prefix for replies to leave through the
        // bridge (IPv4 assumes on-link when the socket is bound to it).
        self.nl
            .add_address(
                &bridge_name,
                IpAddr::V6(def.ipv6_for(svc)),
                def.subnet6.prefix_len(),
                true,
            )
            .await?;
        let tap = networks::tap_name(&self.prefix, w);
        self.dp
            .add_network(NetworkId(w), &tap)
            .with_context(|| format!("opening TAP {tap}"))?;
        self.nl.enslave(&tap, &bridge, mtu).await?;
        self.mtu.note_applied(&def.id, mtu);
        let secret = if def.hosts.is_empty() {
            None
        } else {
            let sealed = def
                .sealed_secrets
                .get(&self.me)
                .context("the network's secret was not sealed to this host")?;
            Some(self.host_key.open(&def.id, sealed)?)
        };
        self.dp.set_network_secret(NetworkId(w), secret);
        info!(network = %def.id, bridge = %bridge.name, %tap, mtu, "network ready");
        Ok(w)
    }

    /// Takes a network's devices down (its containers are detached first).
    pub async fn teardown(&self, realized: &mut Realized, id: &str, w: u32) -> Result<()> {
        for t in realized.dns_tasks.remove(id).unwrap_or_default() {
            t.abort();
        }
        realized.wires.remove(id);
        self.mtu.forget(id);
        self.dp.remove_network(NetworkId(w));
        self.nl.delete(&networks::tap_name(&self.prefix, w)).await?;
        self.nl
            .delete(&networks::bridge_name(&self.prefix, w))
            .await?;
        info!(network = %id, "network removed");
        Ok(())
    }
}
