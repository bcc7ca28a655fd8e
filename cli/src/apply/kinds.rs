//! The documents `meshctl apply` reads: mesh's own kinds (`apiVersion:
//! mesh/v1`) and the Kubernetes-shaped `v1/Service`. Their fields mirror
//! `meshctl`'s flags; unknown fields are errors, so a typo is caught
//! before anything changes.

use mesh_api::{PolicyMode, Scheduler};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `apiVersion` of mesh's own kinds.
pub const MESH_API: &str = "mesh/v1";
/// The annotation naming a Kubernetes Service's network.
pub const NETWORK_ANNOTATION: &str = "mesh/network";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub name: String,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Header of every mesh kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Named<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Meta,
    pub spec: S,
}

/// Kinds whose identity is in their spec (a CIDR, an address, a network).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Unnamed<S> {
    pub api_version: String,
    pub kind: String,
    pub spec: S,
}

/// `meshctl network create/set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkSpec {
    pub subnet: String,
    /// Default: a ULA /64 derived from the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Host names (or peer ids); empty: every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub policy: PolicyMode,
    #[serde(default, skip_serializing_if = "is_default")]
    pub egress: bool,
    /// Absent: what the smallest path allows (`--mtu auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// `meshctl service create` and `service add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    pub network: String,
    /// `PORT[:TARGET_PORT][/tcp|/udp]`, as `--port` (or a bare number).
    pub ports: Vec<PortText>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub scheduler: Scheduler,
    /// The VIP; absent: allocated (and then kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval_ms: Option<u64>,
    /// Explicit targets (`service add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetSpec {
    /// `ADDR[:PORT]`.
    pub addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `meshctl policy add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    pub network: String,
    /// Absent or empty: any container of the network.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub from: BTreeMap<String, String>,
    pub to: BTreeMap<String, String>,
    /// `PORT[/tcp|/udp]`; none: every port and protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortText>,
}

/// A port as `--port` takes it: `80` may be written as a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortText {
    Number(u32),
    Text(String),
}

impl PortText {
    pub fn text(&self) -> String {
        match self {
            PortText::Number(n) => n.to_string(),
            PortText::Text(t) => t.clone(),
        }
    }

    /// A bare number as a number, anything else as text.
    pub fn from_text(t: String) -> PortText {
        match t.parse() {
            Ok(n) => PortText::Number(n),
            Err(_) => PortText::Text(t),
        }
    }
}

/// A number, or text with a unit (`50ms`, `10%`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Amount {
    Number(f64),
    Text(String),
}

/// `meshctl network qos set`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct QosSpec {
    pub network: String,
    /// A container's name or address on the network; absent: every one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<u64>,
    /// `50ms`, `1.5s`, `200us` or milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Amount>,
    /// Percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<Amount>,
}

/// `meshctl fip pool add`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolSpec {
    pub cidr: String,
}

/// `meshctl fip create` and `fip associate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FipSpec {
    pub address: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub associations: Vec<AssociationSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AssociationSpec {
    pub service: String,
    pub network: String,
    /// The public port; absent: the service's first port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

// ---- Kubernetes v1/Service ---------------------------------------------

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeService {
    pub api_version: String,
    pub kind: String,
    pub metadata: KubeMeta,
    pub spec: KubeServiceSpec,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeMeta {
    pub name: String,
    /// The mesh network.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Accepted and not used: services have no labels on the mesh.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `mesh/network` names the network; others are not used.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeServiceSpec {
    /// `ClusterIP` (default) or `LoadBalancer`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<KubePort>,
    /// The floating IP in front of a `LoadBalancer`.
    #[serde(default, rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    /// The VIP.
    #[serde(default, rename = "clusterIP")]
    pub cluster_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubePort {
    #[serde(default)]
    pub name: Option<String>,
    pub port: u16,
    /// A number; named ports are refused (containers declare none here).
    #[serde(default)]
    pub target_port: Option<yaml_serde::Value>,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Option<String>,
}

/// One document, by kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Doc {
    Network(Named<NetworkSpec>),
    Service(Named<ServiceSpec>),
    Policy(Named<PolicySpec>),
    Qos(Unnamed<QosSpec>),
    Pool(Unnamed<PoolSpec>),
    Fip(Unnamed<FipSpec>),
    Kube(KubeService),
}

/// The kinds, as `kind:` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Network,
    Service,
    Policy,
    Qos,
    Pool,
    Fip,
    Kube,
}

impl Kind {
    pub fn of(api_version: &str, kind: &str) -> Result<Kind, String> {
        match (api_version, kind) {
            (MESH_API, "Network") => Ok(Kind::Network),
            (MESH_API, "Service") => Ok(Kind::Service),
            (MESH_API, "Policy") => Ok(Kind::Policy),
            (MESH_API, "Qos") => Ok(Kind::Qos),
            (MESH_API, "FloatingIPPool") => Ok(Kind::Pool),
            (MESH_API, "FloatingIP") => Ok(Kind::Fip),
            ("v1", "Service") => Ok(Kind::Kube),
            (MESH_API, other) => Err(format!(
                "kind: {other:?} is not a kind of {MESH_API} (Network, Service, Policy, Qos, FloatingIPPool, FloatingIP)"
            )),
            ("v1", other) => Err(format!("kind: v1/{other} is not supported (only v1/Service)")),
            (other, _) => Err(format!(
                "apiVersion: {other:?} is neither {MESH_API} nor v1 (Kubernetes Service)"
            )),
        }
    }

    /// Reads one document of this kind.
    pub fn read<'de, D: serde::Deserializer<'de>>(self, d: D) -> Result<Doc, D::Error> {
        Ok(match self {
            Kind::Network => Doc::Network(Deserialize::deserialize(d)?),
            Kind::Service => Doc::Service(Deserialize::deserialize(d)?),
            Kind::Policy => Doc::Policy(Deserialize::deserialize(d)?),
            Kind::Qos => Doc::Qos(Deserialize::deserialize(d)?),
            Kind::Pool => Doc::Pool(Deserialize::deserialize(d)?),
            Kind::Fip => Doc::Fip(Deserialize::deserialize(d)?),
            Kind::Kube => Doc::Kube(Deserialize::deserialize(d)?),
        })
    }
}

impl Doc {
    /// `Kind name` for messages.
    pub fn title(&self) -> String {
        match self {
            Doc::Network(d) => format!("Network {}", d.metadata.name),
            Doc::Service(d) => format!("Service {}", d.metadata.name),
            Doc::Policy(d) => format!("Policy {}", d.metadata.name),
            Doc::Qos(d) => format!("Qos {}", d.spec.network),
            Doc::Pool(d) => format!("FloatingIPPool {}", d.spec.cidr),
            Doc::Fip(d) => format!("FloatingIP {}", d.spec.address),
            Doc::Kube(d) => format!("v1/Service {}", d.metadata.name),
        }
    }
}
