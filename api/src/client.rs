//! The client half, used by `meshctl`, the CNI and Docker plugins and the
//! lab: one
//! typed method per route, over a Unix-socket HTTP/1.1 connection.

use crate::error::{ErrorBody, ErrorKind};
use crate::{journal::*, observe::*, routes, runtime::*, services::*, types::*};
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
    /// meshd answered with an error: branch on `kind`, show `message`.
    #[error("{message}")]
    Api {
        status: u16,
        kind: ErrorKind,
        message: String,
    },
    #[error("unexpected answer from meshd: {0}")]
    Decode(String),
}

impl ClientError {
    /// The kind meshd gave its error; `None` when meshd did not answer one
    /// (not running, unreachable, an undecodable answer).
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            ClientError::Api { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// meshd could not be reached at all (as opposed to answering an error).
    pub fn is_unreachable_daemon(&self) -> bool {
        matches!(
            self,
            ClientError::NotRunning(_) | ClientError::Connect { .. }
        )
    }
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

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub async fn status(&self) -> Result<StatusResponse, ClientError> {
        self.get(routes::STATUS).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerStatus>, ClientError> {
        self.get(routes::PEERS).await
    }

    pub async fn token(&self) -> Result<TokenResponse, ClientError> {
        self.get(routes::TOKEN).await
    }

    /// The web console's login token (made on first use).
    pub async fn console_token(&self) -> Result<TokenResponse, ClientError> {
        self.get(routes::CONSOLE_TOKEN).await
    }

    /// Rotates the mesh secret (revocation); returns the new token.
    pub async fn rotate_token(&self) -> Result<TokenResponse, ClientError> {
        self.post(routes::TOKEN_ROTATE, &serde_json::json!({}))
            .await
    }

    pub async fn join(&self, req: &JoinRequest) -> Result<JoinResponse, ClientError> {
        self.post(routes::JOIN, req).await
    }

    pub async fn networks(&self) -> Result<Vec<Network>, ClientError> {
        self.get(routes::NETWORKS).await
    }

    pub async fn create_network(&self, req: &CreateNetworkRequest) -> Result<Network, ClientError> {
        self.post(routes::NETWORKS, req).await
    }

    pub async fn remove_network(&self, id: &str, force: bool) -> Result<Network, ClientError> {
        self.delete(&format!("{}?force={force}", routes::network(id)))
            .await
    }

    /// Changes a network's settings (policy mode, egress).
    pub async fn update_network(
        &self,
        id: &str,
        req: &UpdateNetworkRequest,
    ) -> Result<Network, ClientError> {
        let body = self
            .call(Method::PATCH, &routes::network(id), Some(req))
            .await?;
        decode(&body)
    }

    pub async fn policies(&self) -> Result<Vec<PolicyRule>, ClientError> {
        self.get(routes::POLICIES).await
    }

    pub async fn add_policy(&self, req: &PolicyAddRequest) -> Result<PolicyRule, ClientError> {
        self.post(routes::POLICIES, req).await
    }

    pub async fn remove_policy(
        &self,
        network: &str,
        name: &str,
    ) -> Result<PolicyRule, ClientError> {
        self.delete(&routes::policy(network, name)).await
    }

    pub async fn qos(&self) -> Result<Vec<QosEntry>, ClientError> {
        self.get(routes::QOS).await
    }

    pub async fn set_qos(&self, req: &QosSetRequest) -> Result<QosEntry, ClientError> {
        self.post(routes::QOS, req).await
    }

    pub async fn reset_qos(&self, req: &QosResetRequest) -> Result<Vec<QosEntry>, ClientError> {
        self.post(routes::QOS_RESET, req).await
    }

    pub async fn attachments(&self) -> Result<Vec<Attachment>, ClientError> {
        self.get(routes::ATTACHMENTS).await
    }

    pub async fn attach(&self, req: &AttachRequest) -> Result<Attachment, ClientError> {
        self.post(routes::ATTACH, req).await
    }

    pub async fn detach(&self, req: &DetachRequest) -> Result<Attachment, ClientError> {
        self.post(routes::DETACH, req).await
    }

    pub async fn ipam(&self) -> Result<Vec<IpamNetwork>, ClientError> {
        self.get(routes::IPAM).await
    }

    pub async fn reserve(&self, req: &ReserveRequest) -> Result<Reservation, ClientError> {
        self.post(routes::IPAM_RESERVE, req).await
    }

    pub async fn release(&self, req: &ReleaseRequest) -> Result<Reservation, ClientError> {
        self.post(routes::IPAM_RELEASE, req).await
    }

    /// A veth on the bridge of `network` for the runtime to move.
    pub async fn runtime_veth(&self, network: &str) -> Result<RuntimeVeth, ClientError> {
        let req = RuntimeVethRequest {
            network: network.to_string(),
        };
        self.post(routes::RUNTIME_VETHS, &req).await
    }

    /// Records the attachment of a veth the runtime has moved in.
    pub async fn record_runtime(
        &self,
        req: &RecordRuntimeRequest,
    ) -> Result<Attachment, ClientError> {
        self.post(routes::RUNTIME_ATTACHMENTS, req).await
    }

    /// Names the container of a runtime attachment; `None` if it is gone.
    pub async fn identify_runtime(
        &self,
        req: &IdentifyRuntimeRequest,
    ) -> Result<Option<Attachment>, ClientError> {
        let a: RuntimeAttachment = self.post(routes::RUNTIME_IDENTIFY, req).await?;
        Ok(a.attachment)
    }

    /// Undoes the runtime attachment on `host_if`; `None` if there was none.
    pub async fn detach_runtime(&self, host_if: &str) -> Result<Option<Attachment>, ClientError> {
        let req = RuntimeInterface {
            host_if: host_if.to_string(),
        };
        let a: RuntimeAttachment = self.post(routes::RUNTIME_DETACH, &req).await?;
        Ok(a.attachment)
    }

    /// The IPv4 space a new network must stay out of on this host.
    pub async fn occupied(&self) -> Result<OccupiedPrefixes, ClientError> {
        self.get(routes::RUNTIME_OCCUPIED).await
    }

    /// This host's egress gateway on `network`, if any.
    pub async fn egress_gateway(&self, network: &str) -> Result<EgressGateway, ClientError> {
        self.get(&routes::runtime_gateway(network)).await
    }

    pub async fn dns(&self) -> Result<Vec<DnsRecord>, ClientError> {
        self.get(routes::DNS).await
    }

    pub async fn expose(&self, network: &str) -> Result<HostAddress, ClientError> {
        let req = ExposeRequest {
            network: network.to_string(),
        };
        self.post(routes::EXPOSE, &req).await
    }

    pub async fn hide(&self, network: &str) -> Result<HostAddress, ClientError> {
        let req = ExposeRequest {
            network: network.to_string(),
        };
        self.post(routes::HIDE, &req).await
    }

    pub async fn fip_pools(&self) -> Result<Vec<FipPool>, ClientError> {
        self.get(routes::FIP_POOLS).await
    }

    pub async fn add_fip_pool(&self, cidr: &str) -> Result<FipPool, ClientError> {
        let req = FipPoolRequest {
            cidr: cidr.to_string(),
        };
        self.post(routes::FIP_POOLS, &req).await
    }

    pub async fn remove_fip_pool(&self, cidr: &str) -> Result<FipPool, ClientError> {
        let req = FipPoolRequest {
            cidr: cidr.to_string(),
        };
        self.post(routes::FIP_POOLS_REMOVE, &req).await
    }

    pub async fn fips(&self) -> Result<Vec<Fip>, ClientError> {
        self.get(routes::FIPS).await
    }

    pub async fn create_fip(&self, req: &CreateFipRequest) -> Result<Fip, ClientError> {
        self.post(routes::FIPS, req).await
    }

    pub async fn associate_fip(
        &self,
        addr: &str,
        req: &FipAssociateRequest,
    ) -> Result<Fip, ClientError> {
        self.post(&routes::fip_associate(addr), req).await
    }

    pub async fn dissociate_fip(
        &self,
        addr: &str,
        req: &FipAssociateRequest,
    ) -> Result<Fip, ClientError> {
        self.post(&routes::fip_dissociate(addr), req).await
    }

    pub async fn release_fip(&self, addr: &str, force: bool) -> Result<Fip, ClientError> {
        self.delete(&format!("{}?force={force}", routes::fip(addr)))
            .await
    }

    pub async fn remove_peer(&self, peer: &str) -> Result<RemovePeerResponse, ClientError> {
        self.delete(&routes::peer(peer)).await
    }

    pub async fn services(&self) -> Result<Vec<Service>, ClientError> {
        self.get(routes::SERVICES).await
    }

    pub async fn create_service(&self, req: &CreateServiceRequest) -> Result<Service, ClientError> {
        self.post(routes::SERVICES, req).await
    }

    pub async fn update_service(
        &self,
        name: &str,
        req: &UpdateServiceRequest,
    ) -> Result<Service, ClientError> {
        let body = self
            .call(Method::PATCH, &routes::service(name), Some(req))
            .await?;
        decode(&body)
    }

    pub async fn add_service_target(
        &self,
        name: &str,
        req: &ServiceTargetRequest,
    ) -> Result<Service, ClientError> {
        self.post(&routes::service_targets(name), req).await
    }

    pub async fn remove_service_target(
        &self,
        name: &str,
        req: &ServiceTargetRequest,
    ) -> Result<Service, ClientError> {
        self.post(&routes::service_targets_remove(name), req).await
    }

    pub async fn delete_service(
        &self,
        name: &str,
        network: Option<&str>,
    ) -> Result<Service, ClientError> {
        let path = match network {
            Some(n) => format!("{}?network={n}", routes::service(name)),
            None => routes::service(name),
        };
        self.delete(&path).await
    }

    /// Prometheus text format.
    /// `peer`: one peer's checks (name or id) instead of every peer's.
    pub async fn doctor(&self, peer: Option<&str>) -> Result<DoctorReport, ClientError> {
        match peer {
            Some(p) => {
                self.get(&format!("{}?peer={}", routes::DOCTOR, query_escape(p)))
                    .await
            }
            None => self.get(routes::DOCTOR).await,
        }
    }

    /// The audit trail, filtered as `query` says.
    pub async fn log(&self, query: &LogQuery) -> Result<Vec<LogEntry>, ClientError> {
        let mut params = Vec::new();
        if let Some(ms) = query.since_ms {
            params.push(format!("since_ms={ms}"));
        }
        if let Some(h) = &query.host {
            params.push(format!("host={}", query_escape(h)));
        }
        match params.is_empty() {
            true => self.get(routes::LOG).await,
            false => {
                self.get(&format!("{}?{}", routes::LOG, params.join("&")))
                    .await
            }
        }
    }

    pub async fn attachment_stats(&self) -> Result<Vec<AttachmentStats>, ClientError> {
        self.get(routes::ATTACHMENT_STATS).await
    }

    pub async fn metrics(&self) -> Result<String, ClientError> {
        self.get_text(routes::METRICS).await
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.call(Method::GET, path, None::<&()>).await?;
        decode(&body)
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
        decode(&body)
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let body = self.call(Method::DELETE, path, None::<&()>).await?;
        decode(&body)
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
            let ErrorBody { error, kind } = ErrorBody::parse(status.as_u16(), &body);
            return Err(ClientError::Api {
                status: status.as_u16(),
                kind,
                message: error,
            });
        }
        Ok(body)
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Decode(e.to_string()))
}

/// Percent-encodes a query value (everything but RFC 3986's unreserved).
fn query_escape(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_escape("h-1.x_y~"), "h-1.x_y~");
        assert_eq!(query_escape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    /// A one-shot server on a fresh socket that answers `response` (a raw
    /// HTTP/1.1 answer) to the first request.
    async fn serve_once(response: &'static str) -> (PathBuf, tokio::task::JoinHandle<String>) {
        let dir = std::env::temp_dir().join(format!(
            "mesh-api-client-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            s.write_all(response.as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        (path, task)
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::SeqCst)
    }

    fn http(status: &str, body: &str) -> &'static str {
        Box::leak(
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_boxed_str(),
        )
    }

    #[tokio::test]
    async fn an_error_answer_carries_its_kind_and_message() {
        let (path, server) = serve_once(http(
            "409 Conflict",
            r#"{"error":"address 10.0.0.2 is already in use on network blue","kind":"conflict"}"#,
        ))
        .await;
        let req = AttachRequest {
            target: "/run/netns/x".into(),
            network: "blue".into(),
            ip: Some("10.0.0.2/24".into()),
            ifname: None,
            container_id: None,
            name: None,
            version: None,
            labels: Default::default(),
            mode: None,
            parent: None,
            origin: Default::default(),
        };
        let err = Client::new(&path).attach(&req).await.unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::Conflict));
        assert!(
            matches!(&err, ClientError::Api { status: 409, message, .. } if message.contains("in use")),
            "{err:?}"
        );
        let sent = server.await.unwrap();
        assert!(sent.starts_with("POST /v1/attach "), "{sent}");
        assert!(sent.contains(r#""network":"blue""#), "{sent}");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn a_typed_answer_decodes_and_a_wrong_shape_is_a_decode_error() {
        let (path, server) = serve_once(http("200 OK", r#"{"token":"s3cret"}"#)).await;
        let t = Client::new(&path).token().await.unwrap();
        assert_eq!(t.token, "s3cret");
        assert!(server.await.unwrap().starts_with("GET /v1/token "));

        let (path2, _server) = serve_once(http("200 OK", r#"{"nope":1}"#)).await;
        let err = Client::new(&path2).token().await.unwrap_err();
        assert!(matches!(err, ClientError::Decode(_)), "{err:?}");
        assert_eq!(err.kind(), None);
        for p in [path, path2] {
            std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
        }
    }

    #[tokio::test]
    async fn runtime_calls_use_their_routes() {
        let (path, server) = serve_once(http("200 OK", r#"{"attachment":null}"#)).await;
        let gone = Client::new(&path).detach_runtime("msv1").await.unwrap();
        assert_eq!(gone, None);
        let sent = server.await.unwrap();
        assert!(
            sent.starts_with("POST /v1/runtime/attachments/detach "),
            "{sent}"
        );
        assert!(sent.contains(r#""host_if":"msv1""#), "{sent}");

        let (path2, server) =
            serve_once(http("200 OK", r#"{"network":"web","gateway":"10.1.0.1"}"#)).await;
        let gw = Client::new(&path2).egress_gateway("web").await.unwrap();
        assert_eq!(gw.gateway.as_deref(), Some("10.1.0.1"));
        assert!(server
            .await
            .unwrap()
            .starts_with("GET /v1/runtime/gateway/web "));
        for p in [path, path2] {
            std::fs::remove_dir_all(p.parent().unwrap()).unwrap();
        }
    }

    #[tokio::test]
    async fn no_socket_means_not_running() {
        let err = Client::new("/nonexistent/meshd.sock")
            .status()
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::NotRunning(_)), "{err:?}");
        assert!(err.is_unreachable_daemon());
        assert_eq!(err.kind(), None);
    }
}
