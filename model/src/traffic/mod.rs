//! What traffic control replicates: policy rules and shaping, on channels
//! written by any member, and the checks of user and peer input
//! ([`spec`]). The records themselves are the API's
//! ([`mesh_api::PolicyRule`], [`mesh_api::QosEntry`]).

pub mod spec;

use mesh_api::{PolicyRule, QosEntry};

use crate::records::Records;

/// Policy rules, keyed by [`policy_key`].
pub const POLICY_CHANNEL: &str = "network-policies";
/// Shaping, keyed by [`qos_key`].
pub const QOS_CHANNEL: &str = "network-qos";

pub fn policy_key(network: &str, name: &str) -> String {
    format!("{network}/{name}")
}

/// A network's shaping (`container` none) or one container's (its address).
pub fn qos_key(network: &str, container: Option<&str>) -> String {
    match container {
        Some(ip) => format!("{network}/{ip}"),
        None => network.to_string(),
    }
}

#[derive(Clone)]
pub struct TrafficChannels {
    pub policies: Records<PolicyRule>,
    pub qos: Records<QosEntry>,
}
