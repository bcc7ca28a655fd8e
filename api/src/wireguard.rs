//! WireGuard clients (`meshctl wg …`): request and response bodies, and
//! the typed client's calls. Routes are in [`crate::routes`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::{routes, Client, ClientError};

/// `POST /v1/wg`: put a WireGuard client on a network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WgAddRequest {
    /// A DNS label: the client answers as NAME.<network>.
    pub name: String,
    pub network: String,
    /// The gateway host (name or id prefix); default: the host asked.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A static address (default: allocated).
    #[serde(default)]
    pub ip: Option<String>,
    /// The client's public key (base64); its private key stays with the
    /// caller.
    pub public_key: String,
}

/// `POST /v1/wg/{name}/move`: another host becomes the client's gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WgMoveRequest {
    pub host: String,
}

/// A WireGuard client and what its configuration needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgClient {
    pub name: String,
    pub network: String,
    /// `ADDR/32`, `None` while its gateway has not plumbed it yet.
    pub ip: Option<String>,
    /// `ADDR/128` (the network's IPv6 address paired with `ip`).
    pub ip6: Option<String>,
    pub public_key: String,
    pub labels: BTreeMap<String, String>,
    /// The gateway host's name and peer id.
    pub gateway: String,
    pub gateway_id: String,
    /// What the client dials (`host:port`), if the gateway advertises it.
    pub endpoint: Option<String>,
    /// The gateway's WireGuard public key, if it advertises one.
    pub gateway_public_key: Option<String>,
    /// The network's DNS address (the client's resolver).
    pub dns: String,
    /// The network's prefixes (IPv4 and IPv6): the client's AllowedIPs.
    pub allowed_ips: Vec<String>,
    /// The network's MTU here (the client's tunnel MTU).
    pub mtu: Option<u32>,
    /// The tunnel's counters, when the answering host is the gateway.
    pub stats: Option<WgStats>,
}

/// A tunnel's counters on its gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgStats {
    /// Unix time (ms) of the last completed handshake.
    pub last_handshake_ms: Option<u64>,
    /// IP bytes from the client into the network, and back.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets from the client with a source other than its address.
    pub spoofed: u64,
    /// The client's address as last seen (`ip:port`).
    pub endpoint: Option<String>,
}

impl Client {
    pub async fn wg_clients(&self) -> Result<Vec<WgClient>, ClientError> {
        self.get(routes::WG_CLIENTS).await
    }

    pub async fn wg_add(&self, req: &WgAddRequest) -> Result<WgClient, ClientError> {
        self.post(routes::WG_CLIENTS, req).await
    }

    pub async fn wg_rm(&self, name: &str) -> Result<WgClient, ClientError> {
        self.delete(&routes::wg_client(name)).await
    }

    pub async fn wg_move(&self, name: &str, host: &str) -> Result<WgClient, ClientError> {
        let req = WgMoveRequest {
            host: host.to_string(),
        };
        self.post(&routes::wg_move(name), &req).await
    }
}
