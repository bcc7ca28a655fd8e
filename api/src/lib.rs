//! The local control API of `meshd`: HTTP/1.1 + JSON over a Unix socket.
//!
//! These types are the one definition shared by the daemon (server side) and
//! `meshctl` (client side). Every route lives under `/v1`; see
//! [`routes`] for the table and `README.md` for examples.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Route paths, so server and client cannot drift apart.
pub mod routes {
    pub const STATUS: &str = "/v1/status";
    /// Prometheus text format (not JSON).
    pub const METRICS: &str = "/metrics";
    pub const PEERS: &str = "/v1/peers";
    pub const TOKEN: &str = "/v1/token";
    pub const JOIN: &str = "/v1/join";
    pub const NETWORKS: &str = "/v1/networks";
    pub const ATTACHMENTS: &str = "/v1/attachments";
    pub const ATTACH: &str = "/v1/attach";
    pub const DETACH: &str = "/v1/detach";
    pub const IPAM: &str = "/v1/ipam";
    pub const IPAM_RESERVE: &str = "/v1/ipam/reserve";
    pub const IPAM_RELEASE: &str = "/v1/ipam/release";
    pub const DNS: &str = "/v1/dns";

    /// `DELETE /v1/peers/{peer}`: the peer is gone for good.
    pub fn peer(id: &str) -> String {
        format!("{PEERS}/{id}")
    }

    /// `DELETE /v1/networks/{id}?force=true`
    pub fn network(id: &str) -> String {
        format!("{NETWORKS}/{id}")
    }
}

/// Body of every non-2xx answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// `host:port` of any member of the mesh to join (its control port).
    pub address: String,
    pub token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The peer we reached.
    pub peer: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    Connecting,
    Up,
    Down,
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            PeerState::Connecting => "connecting",
            PeerState::Up => "up",
            PeerState::Down => "down",
        })
    }
}

/// Traffic counters of one direction.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Traffic {
    pub bytes: u64,
    pub packets: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub id: String,
    pub name: String,
    /// Control (QUIC) address of the peer.
    pub address: String,
    /// Data-plane (UDP) address frames are sent to, once known.
    pub data_address: Option<String>,
    pub state: PeerState,
    /// "direct" today; "relayed" once relaying exists.
    pub path: String,
    pub rtt_ms: Option<f64>,
    pub key_generation: Option<u64>,
    pub key_age_secs: Option<f64>,
    pub tx: Traffic,
    pub rx: Traffic,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostStatus {
    pub id: String,
    pub name: String,
    pub control_address: String,
    pub data_address: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub host: HostStatus,
    /// Hosts in the mesh, this one included.
    pub mesh_size: usize,
    pub peers: Vec<PeerStatus>,
    pub networks: usize,
    pub attachments: usize,
    /// Data-plane datagrams dropped, by reason.
    pub drops: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateNetworkRequest {
    pub id: String,
    /// IPv4 subnet in CIDR form, e.g. `10.40.0.0/24`.
    pub subnet: String,
    /// IPv6 prefix; default: a ULA /64 derived from the id.
    #[serde(default)]
    pub subnet6: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Restrict the network to these hosts (names or peer ids); empty = all.
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Network {
    pub id: String,
    pub subnet: String,
    pub subnet6: String,
    /// Address of the DNS server on this network (on every host).
    pub dns: String,
    pub dns6: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Peer ids the network is restricted to; empty = every host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Identifier carried on the wire (derived from `id`).
    pub wire_id: u32,
    /// Bridge on this host.
    pub bridge: String,
    pub mtu: u32,
    /// Host that created it.
    pub created_by: String,
}

/// What `attach`/`detach` act on: a process (its network namespace) or a
/// network namespace file such as `/run/netns/NAME`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttachRequest {
    /// A PID or a path to a network namespace.
    pub target: String,
    pub network: String,
    /// `ADDR/LEN`; required until address allocation lands.
    pub ip: Option<String>,
    /// Interface name inside the container; default `eth-<network>`.
    pub ifname: Option<String>,
    /// The runtime's container id (CNI, OCI hooks): lets a later detach find
    /// the attachment after the namespace is gone.
    #[serde(default)]
    pub container_id: Option<String>,
    /// DNS name of the container on the network.
    #[serde(default)]
    pub name: Option<String>,
    /// Deployment version label, for version-aware DNS answers.
    #[serde(default)]
    pub version: Option<String>,
}

/// Detach by namespace (`target`) or by `container_id`; one must be given.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DetachRequest {
    #[serde(default)]
    pub target: Option<String>,
    pub network: String,
    #[serde(default)]
    pub container_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Attachment {
    pub network: String,
    /// Namespace file the attachment was made into.
    pub netns: String,
    pub ifname: String,
    pub host_ifname: String,
    /// `ADDR/LEN`.
    pub ip: String,
    /// `ADDR/LEN` (derived from the network's IPv6 prefix).
    #[serde(default)]
    pub ip6: Option<String>,
    pub mac: String,
    /// Resolver for the container: the network's DNS address.
    #[serde(default)]
    pub dns_server: Option<String>,
    /// Search domain: the network id, so `name` resolves as `name.<network>`.
    #[serde(default)]
    pub dns_search: Option<String>,
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemovePeerResponse {
    pub removed: String,
}

/// One range of a network's address space and its owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpamRange {
    pub start: String,
    pub end: String,
    pub size: u64,
    pub used: u64,
    pub owner: String,
    pub owner_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpamAllocation {
    pub ip: String,
    pub host: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IpamNetwork {
    pub network: String,
    pub subnet: String,
    pub ranges: Vec<IpamRange>,
    pub allocations: Vec<IpamAllocation>,
}

/// Take an address without attaching anything (for a service, a VM, or a
/// runtime that plumbs the interface itself).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveRequest {
    pub network: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub network: String,
    pub ip: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reservation {
    pub network: String,
    pub ip: String,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsRecord {
    /// `<name>.<network>`
    pub fqdn: String,
    pub ip: String,
    pub ip6: Option<String>,
    pub version: Option<String>,
    pub host: String,
    /// False while the container's host is down: not served then.
    pub live: bool,
}

pub use client::{Client, ClientError};

/// The client half, used by `meshctl` and the lab.
pub mod client {
    use super::ErrorBody;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper::{Method, Request, StatusCode};
    use serde::{de::DeserializeOwned, Serialize};
    use std::path::{Path, PathBuf};
    use tokio::net::UnixStream;

    #[derive(Debug, thiserror::Error)]
    pub enum ClientError {
        #[error("meshd is not running (no socket at {0}); start it with `meshd` or pass --socket")]
        NotRunning(PathBuf),
        #[error("permission denied on {0}: the API socket is root-only")]
        PermissionDenied(PathBuf),
        #[error("cannot reach meshd at {path}: {source}")]
        Connect {
            path: PathBuf,
            source: std::io::Error,
        },
        #[error("HTTP to meshd failed: {0}")]
        Http(#[from] hyper::Error),
        #[error("{message}")]
        Api { status: u16, message: String },
        #[error("unexpected answer from meshd: {0}")]
        Decode(String),
    }

    /// One request per connection: the CLI issues one or two, so pooling
    /// buys nothing.
    #[derive(Debug, Clone)]
    pub struct Client {
        socket: PathBuf,
    }

    impl Client {
        pub fn new(socket: impl AsRef<Path>) -> Self {
            Client {
                socket: socket.as_ref().to_path_buf(),
            }
        }

        pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
            let body = self.call(Method::GET, path, None::<&()>).await?;
            serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
        }

        /// A non-JSON answer (metrics).
        pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
            let body = self.call(Method::GET, path, None::<&()>).await?;
            Ok(String::from_utf8_lossy(&body).into_owned())
        }

        pub async fn post<B: Serialize, T: DeserializeOwned>(
            &self,
            path: &str,
            body: &B,
        ) -> Result<T, ClientError> {
            let body = self.call(Method::POST, path, Some(body)).await?;
            serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
        }

        pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
            let body = self.call(Method::DELETE, path, None::<&()>).await?;
            serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
        }

        async fn call<B: Serialize>(
            &self,
            method: Method,
            path: &str,
            body: Option<&B>,
        ) -> Result<Bytes, ClientError> {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                        ClientError::NotRunning(self.socket.clone())
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        ClientError::PermissionDenied(self.socket.clone())
                    }
                    _ => ClientError::Connect {
                        path: self.socket.clone(),
                        source: e,
                    },
                })?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let bytes = match body {
                Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Decode(e.to_string()))?,
                None => Vec::new(),
            };
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", "meshd")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(bytes)))
                .map_err(|e| ClientError::Decode(e.to_string()))?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            if status != StatusCode::OK {
                let message = serde_json::from_slice::<ErrorBody>(&body)
                    .map(|b| b.error)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
                return Err(ClientError::Api {
                    status: status.as_u16(),
                    message,
                });
            }
            Ok(body)
        }
    }
}
