//! Services: a VIP and a DNS name in front of a fleet of targets.
//!
//! - what is replicated (definitions, container labels, health) is
//!   [`mesh_model::services`], and parsing and checking user input
//!   [`mesh_model::services::spec`],
//! - [`targets`]: who the targets are and which are in rotation (pure),
//! - [`lb`]: the nftables rules in client namespaces, and applying them,
//! - [`sync`]: keeping every local container's rules in line with the records,
//! - [`health`]: checking this host's own targets and publishing the result,
//! - [`view`]: API views and metrics.
//!
//! [`Services`] answers the API operations; the daemon wires it in.

pub mod health;
pub mod lb;
pub mod sync;
pub mod targets;
pub mod view;

use gossip::PeerId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tracing::info;

use crate::alloc::Allocator;
use crate::api::{self, Attachment};
use crate::attach::Attacher;
use crate::error::ApiError;
use crate::liveness::Liveness;
use mesh_model::hosts::HostSet;
use mesh_model::records::{self as rec, Channels, EndpointRecord, NetworkDef};
use mesh_model::services::{self as records, spec};
use mesh_model::services::{ExplicitTarget, LabelRecord, ServiceChannels, ServiceDef};

/// What DNS answers for the services of `network`: `NAME` → its VIPs (A
/// and AAAA), as records the DNS server already serves; `host` is the
/// answering host, which is always live.
pub fn dns_records(ch: &ServiceChannels, network: &str, host: &str) -> Vec<EndpointRecord> {
    rec::live(&ch.services)
        .into_values()
        .filter(|s| s.network == network)
        .map(|s| EndpointRecord {
            network: s.network.clone(),
            ip: IpAddr::V4(s.vip),
            ip6: Some(s.vip6),
            mac: String::new(),
            host: host.to_string(),
            name: Some(s.name.clone()),
            version: None,
        })
        .collect()
}

/// Marks a VIP's address claim (an endpoint record without a container).
const VIP_MARK: &str = "service:";

pub fn is_vip_claim(e: &EndpointRecord) -> bool {
    e.mac.is_empty()
        && e.version
            .as_deref()
            .is_some_and(|v| v.starts_with(VIP_MARK))
}

/// The mesh's hosts as last observed (`crate::roster`).
pub type HostsFn = Arc<dyn Fn() -> Arc<HostSet> + Send + Sync>;

pub struct Services {
    me: PeerId,
    pub(crate) ch: ServiceChannels,
    channels: Channels,
    alloc: Arc<Allocator>,
    attacher: Arc<Attacher>,
    hosts: HostsFn,
    /// The script last installed in each namespace.
    programmed: Mutex<BTreeMap<PathBuf, String>>,
    /// New connections per counter name, summed over this host's namespaces.
    counters: Mutex<BTreeMap<String, u64>>,
    /// When the counters were last read (every `sync::COUNTER_READ`).
    counters_read: Mutex<Option<std::time::Instant>>,
    liveness: Arc<Liveness>,
}

impl Services {
    pub fn new(
        me: PeerId,
        ch: ServiceChannels,
        channels: Channels,
        alloc: Arc<Allocator>,
        attacher: Arc<Attacher>,
        hosts: HostsFn,
        liveness: Arc<Liveness>,
    ) -> Arc<Services> {
        Arc::new(Services {
            me,
            ch,
            channels,
            alloc,
            attacher,
            hosts,
            programmed: Mutex::new(BTreeMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            counters_read: Mutex::new(None),
            liveness,
        })
    }

    fn me_hex(&self) -> String {
        self.me.to_hex()
    }

    pub fn all(&self) -> BTreeMap<String, ServiceDef> {
        rec::live(&self.ch.services)
    }

    /// The services of `network`.
    pub fn on_network(&self, network: &str) -> Vec<ServiceDef> {
        self.all()
            .into_values()
            .filter(|s| s.network == network)
            .collect()
    }

    /// Endpoint keys of every VIP: addresses no attachment backs but which
    /// stay taken.
    pub fn vip_keys(&self) -> Vec<String> {
        self.all()
            .values()
            .map(|s| rec::endpoint_key(&s.network, IpAddr::V4(s.vip)))
            .collect()
    }

    /// Finds the service `name`; `network` is needed only when the name
    /// exists on several networks.
    pub fn find(&self, name: &str, network: Option<&str>) -> Result<ServiceDef, ApiError> {
        let found: Vec<ServiceDef> = self
            .all()
            .into_values()
            .filter(|s| s.name == name && network.is_none_or(|n| n == s.network))
            .collect();
        match found.len() {
            0 => Err(ApiError::NotFound(match network {
                Some(n) => format!("no service {name:?} on network {n:?}"),
                None => format!("no service {name:?} (see `meshctl service list`)"),
            })),
            1 => Ok(found.into_iter().next().expect("one")),
            _ => Err(ApiError::BadRequest(format!(
                "service {name:?} exists on networks {}; pass --network",
                found
                    .iter()
                    .map(|s| s.network.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub async fn create(&self, req: &api::CreateServiceRequest) -> Result<api::Service, ApiError> {
        let net: NetworkDef = rec::get(&self.channels.networks, &req.network)
            .ok_or_else(|| ApiError::network_not_found(&req.network))?;
        let net = &net;
        spec::check_name(&req.name)?;
        let ports = spec::parse_ports(&req.ports)?;
        let selector = spec::parse_selector(&req.selector)?;
        let scheduler = spec::parse_scheduler(req.scheduler.as_deref())?;
        let health_interval_ms = spec::check_health_interval(req.health_interval_ms)?;
        let key = records::service_key(&net.id, &req.name);
        if self.all().contains_key(&key) {
            return Err(ApiError::Conflict(format!(
                "service {:?} already exists on network {}",
                req.name, net.id
            )));
        }
        let want = match req.ip.as_deref() {
            Some(t) => Some(
                mesh_model::networks::parse_member_address(t, net)
                    .map_err(ApiError::bad)?
                    .0,
            ),
            None => None,
        };
        let hosts = (self.hosts)();
        let vip = self.alloc.allocate(net, want, &*hosts).await?;
        let def = ServiceDef {
            network: net.id.clone(),
            name: req.name.clone(),
            vip,
            vip6: net.ipv6_for(vip),
            ports,
            selector,
            scheduler,
            explicit: Vec::new(),
            health_interval_ms,
            created_by: self.me_hex(),
        };
        self.claim_vip(&def);
        rec::put(&self.ch.services, self.me, &key, def.clone());
        info!(service = %key, vip = %vip, "service created");
        Ok(self.view(&def))
    }

    /// Changes a service in place: one signed write, so the VIP, its
    /// explicit targets and floating-IP associations stay. A new VIP is
    /// taken before the old one is given back.
    pub async fn update(
        &self,
        name: &str,
        req: &api::UpdateServiceRequest,
    ) -> Result<api::Service, ApiError> {
        let mut def = self.find(name, req.network.as_deref())?;
        if let Some(p) = &req.ports {
            def.ports = spec::parse_ports(p)?;
        }
        if let Some(s) = &req.selector {
            def.selector = spec::parse_selector(s)?;
        }
        if req.scheduler.is_some() {
            def.scheduler = spec::parse_scheduler(req.scheduler.as_deref())?;
        }
        if req.health_interval_ms.is_some() {
            def.health_interval_ms = spec::check_health_interval(req.health_interval_ms)?;
        }
        let mut freed = None;
        if let Some(text) = &req.ip {
            let net: NetworkDef = rec::get(&self.channels.networks, &def.network)
                .ok_or_else(|| ApiError::network_not_found(&def.network))?;
            let (want, _) =
                mesh_model::networks::parse_member_address(text, &net).map_err(ApiError::bad)?;
            if want != def.vip {
                let hosts = (self.hosts)();
                let vip = self.alloc.allocate(&net, Some(want), &*hosts).await?;
                freed = Some(def.vip);
                def.vip = vip;
                def.vip6 = net.ipv6_for(vip);
            }
        }
        self.claim_vip(&def);
        rec::put(&self.ch.services, self.me, &def.key(), def.clone());
        if let Some(old) = freed {
            self.unclaim_vip(&def.network, old);
        }
        info!(service = %def.key(), vip = %def.vip, "service changed");
        Ok(self.view(&def))
    }

    /// Keeps the VIP taken on the network (an endpoint record without a
    /// container), so IPAM never hands it to anything else.
    fn claim_vip(&self, def: &ServiceDef) {
        rec::put(
            &self.channels.endpoints,
            self.me,
            &rec::endpoint_key(&def.network, IpAddr::V4(def.vip)),
            EndpointRecord {
                network: def.network.clone(),
                ip: IpAddr::V4(def.vip),
                ip6: Some(def.vip6),
                mac: String::new(),
                host: self.me_hex(),
                name: None,
                version: Some(format!("{VIP_MARK}{}", def.name)),
            },
        );
    }

    pub fn add_target(
        &self,
        name: &str,
        req: &api::ServiceTargetRequest,
    ) -> Result<api::Service, ApiError> {
        let mut def = self.find(name, req.network.as_deref())?;
        let (ip, port) = spec::parse_target(&req.addr)?;
        let weight = spec::check_weight(req.weight)?;
        if ip == def.vip {
            return Err(ApiError::BadRequest(format!(
                "{ip} is the service's own VIP, not a target"
            )));
        }
        let t = ExplicitTarget { ip, port, weight };
        match def
            .explicit
            .iter_mut()
            .find(|x| x.ip == ip && x.port == port)
        {
            Some(x) => *x = t,
            None => def.explicit.push(t),
        }
        rec::put(&self.ch.services, self.me, &def.key(), def.clone());
        Ok(self.view(&def))
    }

    pub fn remove_target(
        &self,
        name: &str,
        req: &api::ServiceTargetRequest,
    ) -> Result<api::Service, ApiError> {
        let mut def = self.find(name, req.network.as_deref())?;
        let (ip, port) = spec::parse_target(&req.addr)?;
        let before = def.explicit.len();
        def.explicit.retain(|x| !(x.ip == ip && x.port == port));
        if def.explicit.len() == before {
            return Err(ApiError::NotFound(format!(
                "{} is not an explicit target of service {name:?}",
                req.addr
            )));
        }
        rec::put(&self.ch.services, self.me, &def.key(), def.clone());
        Ok(self.view(&def))
    }

    pub fn delete(&self, name: &str, network: Option<&str>) -> Result<api::Service, ApiError> {
        let def = self.find(name, network)?;
        let view = self.view(&def);
        self.forget(&def);
        info!(service = %def.key(), "service deleted");
        Ok(view)
    }

    fn forget(&self, def: &ServiceDef) {
        rec::remove(&self.ch.services, self.me, &def.key());
        self.unclaim_vip(&def.network, def.vip);
    }

    fn unclaim_vip(&self, network: &str, vip: std::net::Ipv4Addr) {
        rec::remove(
            &self.channels.endpoints,
            self.me,
            &rec::endpoint_key(network, IpAddr::V4(vip)),
        );
        self.alloc.release(network, vip);
    }

    /// `network rm` is refused while the network has services, unless forced.
    pub fn check_network_removal(&self, network: &str, force: bool) -> Result<(), ApiError> {
        let services = self.on_network(network);
        if services.is_empty() || force {
            return Ok(());
        }
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        Err(ApiError::Conflict(format!(
            "network {network:?} has {} service(s) ({}); delete them first or pass --force",
            names.len(),
            names.join(", ")
        )))
    }

    /// `network rm --force`: its services go with it.
    pub fn remove_network_services(&self, network: &str) {
        for def in self.on_network(network) {
            self.forget(&def);
        }
    }

    /// Publishes the labels of a new attachment (or clears stale ones).
    pub fn note_attachment(&self, a: &Attachment) {
        let Ok(ip) = rec::parse_ipv4(&a.ip) else {
            return;
        };
        let key = rec::endpoint_key(&a.network, IpAddr::V4(ip));
        if a.labels.is_empty() {
            if rec::get(&self.ch.labels, &key).is_some() {
                rec::remove(&self.ch.labels, self.me, &key);
            }
            return;
        }
        let record = LabelRecord {
            network: a.network.clone(),
            ip,
            mac: a.mac.clone(),
            host: self.me_hex(),
            labels: a.labels.clone(),
        };
        if rec::get(&self.ch.labels, &key).as_ref() != Some(&record) {
            rec::put(&self.ch.labels, self.me, &key, record);
        }
    }

    /// The labels every container was attached with, mesh-wide (the
    /// replicated label records), by (network, IPv4 address).
    pub fn labels_by_address(&self) -> BTreeMap<(String, String), BTreeMap<String, String>> {
        rec::live(&self.ch.labels)
            .into_values()
            .map(|l| ((l.network, l.ip.to_string()), l.labels))
            .collect()
    }

    pub fn list(&self) -> Vec<api::Service> {
        self.all().values().map(|d| self.view(d)).collect()
    }

    /// Hosts up (by gossip, and heard from lately: [`crate::liveness`]) and
    /// not removed; this one always.
    fn live_hosts(&self, hosts: &HostSet) -> BTreeSet<String> {
        let removed = self.channels.removed_hosts();
        let stale = self.liveness.stale(std::time::Instant::now());
        let me = self.me_hex();
        hosts
            .live()
            .into_iter()
            .filter(|h| !removed.contains(h) && (*h == me || !stale.contains(h)))
            .collect()
    }
}
