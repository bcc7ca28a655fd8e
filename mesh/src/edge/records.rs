//! What the edge replicates: the pools of underlay addresses the operator
//! hands to the mesh, and the floating IPs taken from them with the
//! services they front. Host addresses on networks (`expose`) are plain
//! endpoint records (see [`HOST_ADDRESS_MARK`]).

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

use crate::records::EndpointRecord;

/// Floating-IP pools, keyed by the CIDR (`198.18.0.240/28`).
pub const POOLS_CHANNEL: &str = "fip-pools";
/// Floating IPs, keyed by the address.
pub const FIPS_CHANNEL: &str = "fips";

/// Marks the endpoint record of a host's own address on a network.
pub const HOST_ADDRESS_MARK: &str = "host-address";

pub fn is_host_address(e: &EndpointRecord) -> bool {
    e.version.as_deref() == Some(HOST_ADDRESS_MARK)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FipPool {
    pub cidr: Ipv4Net,
    /// Peer id (hex) of the host that added it.
    pub created_by: String,
}

pub fn pool_key(cidr: &Ipv4Net) -> String {
    cidr.to_string()
}

/// One service behind a floating IP, on one public port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FipBinding {
    pub network: String,
    pub service: String,
    pub public_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FipRecord {
    pub addr: Ipv4Addr,
    /// Peer id (hex) of the host that wrote this version of it.
    pub updated_by: String,
    pub bindings: Vec<FipBinding>,
}

pub fn fip_key(addr: Ipv4Addr) -> String {
    addr.to_string()
}
