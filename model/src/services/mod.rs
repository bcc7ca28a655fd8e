//! What services replicate: their definitions, the labels of attached
//! containers (what selectors match) and the health each host sees of its
//! own targets. Kept apart from [`crate::records`] so the two evolve alone.
//! [`spec`] checks what users (and peers) ask of services.

pub mod spec;

use gossip::{Channel, LwwMap};
use mesh_api::{Scheduler, ServicePort};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::records::Records;

/// Service definitions, keyed by [`service_key`].
pub const SERVICES_CHANNEL: &str = "services";
/// Labels of attached containers, keyed by [`crate::records::endpoint_key`].
pub const LABELS_CHANNEL: &str = "endpoint-labels";
/// Health of targets, keyed by [`health_key`]; written by the target's host.
pub const HEALTH_CHANNEL: &str = "service-health";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    pub network: String,
    pub name: String,
    pub vip: Ipv4Addr,
    pub vip6: Ipv6Addr,
    pub ports: Vec<ServicePort>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    #[serde(default)]
    pub scheduler: Scheduler,
    /// Targets added by address (`service add`).
    #[serde(default)]
    pub explicit: Vec<ExplicitTarget>,
    pub health_interval_ms: u64,
    /// Peer id (hex) of the host that created it.
    pub created_by: String,
}

impl ServiceDef {
    pub fn key(&self) -> String {
        service_key(&self.network, &self.name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplicitTarget {
    pub ip: Ipv4Addr,
    /// `None`: each service port's target port.
    pub port: Option<u16>,
    pub weight: u32,
}

pub fn service_key(network: &str, name: &str) -> String {
    format!("{network}/{name}")
}

/// The labels a container was attached with. Valid only while the
/// endpoint record of the same key has the same `mac` and `host`: a
/// detached container's labels never stick to the next owner of its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelRecord {
    pub network: String,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub host: String,
    pub labels: BTreeMap<String, String>,
}

/// A target's health on one port, as the target's own host checks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRecord {
    pub network: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub healthy: bool,
    pub host: String,
}

pub fn health_key(network: &str, ip: Ipv4Addr, port: u16) -> String {
    format!("{network}/{ip}:{port}")
}

#[derive(Clone)]
pub struct ServiceChannels {
    pub services: Records<ServiceDef>,
    pub labels: Records<LabelRecord>,
    pub health: Records<HealthRecord>,
}

impl ServiceChannels {
    /// Channels bound to no node (tests).
    pub fn detached() -> ServiceChannels {
        ServiceChannels {
            services: Channel::detached(SERVICES_CHANNEL, LwwMap::new()),
            labels: Channel::detached(LABELS_CHANNEL, LwwMap::new()),
            health: Channel::detached(HEALTH_CHANNEL, LwwMap::new()),
        }
    }
}
