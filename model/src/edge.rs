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
/// Services behind floating IPs, keyed by [`binding_key`]: one record per
/// association, so that associations made at once on different hosts
/// never overwrite each other.
pub const BINDINGS_CHANNEL: &str = "fip-bindings";

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
    /// Peer id (hex) of the host that wrote it.
    pub updated_by: String,
}

/// One association as replicated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FipBindingRecord {
    pub addr: Ipv4Addr,
    // Not `#[serde(flatten)]`: the gossip encoding is not self-describing.
    pub binding: FipBinding,
    /// Peer id (hex) of the host that wrote it.
    pub updated_by: String,
}

pub fn binding_key(addr: Ipv4Addr, network: &str, service: &str) -> String {
    format!("{addr}/{network}/{service}")
}

/// A floating IP with the services in effect behind it (see
/// `edge::fip::effective` in meshd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fip {
    pub addr: Ipv4Addr,
    pub bindings: Vec<FipBinding>,
}

pub fn fip_key(addr: Ipv4Addr) -> String {
    addr.to_string()
}
