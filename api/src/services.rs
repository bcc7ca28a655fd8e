//! Services: their definitions as the API shows them, and the requests
//! that create, change and fill them (`meshctl service`, `meshctl apply`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::types::Protocol;

/// How a service spreads new connections over its targets.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin: every target in turn.
    #[default]
    Rr,
    /// Weighted round robin: in proportion to the targets' weights.
    Wrr,
}

impl std::fmt::Display for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
        })
    }
}

/// `PORT[:TARGET_PORT][/tcp|/udp]`, parsed.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u16,
    pub target_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateServiceRequest {
    /// A DNS label: the service answers as `NAME.<network>`.
    pub name: String,
    pub network: String,
    /// `PORT[:TARGET_PORT][/tcp|/udp]`, at least one.
    pub ports: Vec<String>,
    /// `KEY=VALUE`: containers whose labels include all of them are targets.
    #[serde(default)]
    pub selector: Vec<String>,
    /// `rr` (default) or `wrr`.
    #[serde(default)]
    pub scheduler: Option<String>,
    /// The VIP (`ADDR` or `ADDR/LEN` in the subnet); default: allocated.
    #[serde(default)]
    pub ip: Option<String>,
    /// Health check interval of TCP targets (default 1000 ms).
    #[serde(default)]
    pub health_interval_ms: Option<u64>,
}

/// `PATCH /v1/services/{name}`: change a service in place; absent fields
/// stay as they are. Explicit targets and floating-IP associations stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UpdateServiceRequest {
    /// Needed only when the name exists on more than one network.
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub ports: Option<Vec<String>>,
    #[serde(default)]
    pub selector: Option<Vec<String>>,
    #[serde(default)]
    pub scheduler: Option<String>,
    /// A new VIP (`ADDR` or `ADDR/LEN` in the subnet); the old one is freed.
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub health_interval_ms: Option<u64>,
}

/// `service add`/`service remove`: an explicit target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceTargetRequest {
    /// Needed only when the name exists on more than one network.
    #[serde(default)]
    pub network: Option<String>,
    /// `ADDR[:PORT]` (default port: each port's target port).
    pub addr: String,
    #[serde(default)]
    pub weight: Option<u32>,
}

/// Health of a target as its host last saw it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetHealth {
    Healthy,
    Unhealthy,
    /// Nobody checks it (UDP only, or not a container of the mesh).
    Unchecked,
}

impl std::fmt::Display for TargetHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            TargetHealth::Healthy => "healthy",
            TargetHealth::Unhealthy => "unhealthy",
            TargetHealth::Unchecked => "unchecked",
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceTarget {
    pub ip: String,
    #[serde(default)]
    pub ip6: Option<String>,
    /// Explicit port; `None`: each service port's target port.
    #[serde(default)]
    pub port: Option<u16>,
    /// Name of the host the target lives on, if it is a mesh container.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub weight: u32,
    /// True if added with `service add`, false if found by the selector.
    pub explicit: bool,
    pub health: TargetHealth,
    /// In the rotation now (healthy or unchecked, on a live host).
    pub active: bool,
    /// New connections to it from containers on this host.
    pub connections: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub network: String,
    pub vip: String,
    pub vip6: String,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
    pub scheduler: Scheduler,
    pub health_interval_ms: u64,
    pub targets: Vec<ServiceTarget>,
}
