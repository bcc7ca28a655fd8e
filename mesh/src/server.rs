//! The local API server: axum on a root-only Unix socket.

use anyhow::{Context, Result};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::Uri;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;

use crate::api::{self, routes};
use crate::daemon::Daemon;
use crate::error::ApiError;

type D = State<Arc<Daemon>>;
type ApiResult<T> = Result<Json<T>, ApiError>;

pub fn router(daemon: Arc<Daemon>) -> Router {
    Router::new()
        .route(routes::STATUS, get(status))
        .route(routes::METRICS, get(metrics))
        .route(routes::PEERS, get(peers))
        .route(routes::TOKEN, get(token))
        .route(routes::TOKEN_ROTATE, post(rotate_token))
        .route(routes::JOIN, post(join))
        .route(routes::NETWORKS, get(list_networks).post(create_network))
        .route(
            &format!("{}/{{id}}", routes::NETWORKS),
            delete(remove_network).patch(update_network),
        )
        .route(routes::ATTACHMENTS, get(attachments))
        .route(routes::ATTACHMENT_STATS, get(attachment_stats))
        .route(routes::DOCTOR, get(doctor))
        .route(routes::LOG, get(journal))
        .route(routes::CONSOLE_TOKEN, get(console_token))
        .route(routes::ATTACH, post(attach))
        .route(routes::DETACH, post(detach))
        .route(routes::IPAM, get(ipam))
        .route(routes::IPAM_RESERVE, post(reserve))
        .route(routes::IPAM_RELEASE, post(release))
        .route(routes::DNS, get(dns))
        .route(&format!("{}/{{peer}}", routes::PEERS), delete(remove_peer))
        .route(routes::RUNTIME_VETHS, post(runtime_veth))
        .route(routes::RUNTIME_ATTACHMENTS, post(record_runtime))
        .route(routes::RUNTIME_IDENTIFY, post(identify_runtime))
        .route(routes::RUNTIME_DETACH, post(detach_runtime))
        .route(routes::RUNTIME_OCCUPIED, get(occupied))
        .route(&routes::runtime_gateway("{network}"), get(egress_gateway))
        .route(routes::SERVICES, get(list_services).post(create_service))
        .route(
            &routes::service("{name}"),
            delete(delete_service).patch(update_service),
        )
        .route(&routes::service_targets("{name}"), post(add_service_target))
        .route(
            &routes::service_targets_remove("{name}"),
            post(remove_service_target),
        )
        .route(routes::POLICIES, get(list_policies).post(add_policy))
        .route(
            &routes::policy("{network}", "{name}"),
            delete(remove_policy),
        )
        .route(routes::QOS, get(list_qos).post(set_qos))
        .route(routes::QOS_RESET, post(reset_qos))
        .route(routes::EXPOSE, post(expose))
        .route(routes::HIDE, post(hide))
        .route(routes::FIP_POOLS, get(list_pools).post(add_pool))
        .route(routes::FIP_POOLS_REMOVE, post(remove_pool))
        .route(routes::FIPS, get(list_fips).post(create_fip))
        .route(&routes::fip("{addr}"), delete(release_fip))
        .route(&routes::fip_associate("{addr}"), post(associate_fip))
        .route(&routes::fip_dissociate("{addr}"), post(dissociate_fip))
        .route(routes::WG_CLIENTS, get(wg_list).post(wg_add))
        .route(&routes::wg_client("{name}"), delete(wg_rm))
        .route(&routes::wg_move("{name}"), post(wg_move))
        .fallback(no_route)
        .with_state(daemon)
}

/// A JSON body whose rejection (malformed JSON, a missing field) is an
/// [`ApiError`] with its kind, like every other error of the API.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    ApiError::BadRequest(format!("request body: {}", e.body_text()))
}

/// A query string whose rejection is an [`ApiError`] too.
struct Query<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(query_rejection(e)),
        }
    }
}

fn query_rejection(e: QueryRejection) -> ApiError {
    ApiError::BadRequest(format!("query string: {}", e.body_text()))
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no API route {}", uri.path()))
}

/// Serves the API until the process ends, on a socket bound with
/// [`bind_private_socket`] (root-only; a stale socket file from a crashed
/// run is replaced).
pub async fn serve(daemon: Arc<Daemon>, listener: tokio::net::UnixListener) -> Result<()> {
    axum::serve(listener, router(daemon)).await?;
    Ok(())
}

/// Binds a root-only (0600) Unix socket at `path`, replacing a stale one
/// but never one another process still serves.
pub fn bind_private_socket(path: &std::path::Path) -> Result<tokio::net::UnixListener> {
    let listener = mesh_sys::socket::bind_private(path)?;
    tokio::net::UnixListener::from_std(listener)
        .with_context(|| format!("serving {}", path.display()))
}

/// `GET /metrics` alone, over TCP, for a Prometheus scraper.
pub async fn serve_metrics(daemon: Arc<Daemon>, addr: std::net::SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics listener {addr}"))?;
    serve_metrics_on(daemon, listener).await
}

/// [`serve_metrics`] on a listener already bound (a reload binds first,
/// so a bad address is its error).
pub async fn serve_metrics_on(
    daemon: Arc<Daemon>,
    listener: tokio::net::TcpListener,
) -> Result<()> {
    let app = Router::new()
        .route(routes::METRICS, get(metrics))
        .with_state(daemon);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn status(State(d): D) -> ApiResult<api::StatusResponse> {
    Ok(Json(d.status()))
}

#[derive(Deserialize)]
struct DoctorQuery {
    peer: Option<String>,
}

async fn doctor(State(d): D, Query(q): Query<DoctorQuery>) -> ApiResult<api::DoctorReport> {
    Ok(Json(d.doctor(q.peer.as_deref()).await?))
}

async fn journal(State(d): D, Query(q): Query<api::LogQuery>) -> ApiResult<Vec<api::LogEntry>> {
    Ok(Json(d.journal.list(&q)))
}

async fn attachment_stats(State(d): D) -> ApiResult<Vec<api::AttachmentStats>> {
    Ok(Json(d.attachment_stats().await))
}

async fn peers(State(d): D) -> ApiResult<Vec<api::PeerStatus>> {
    Ok(Json(d.peers()))
}

async fn token(State(d): D) -> ApiResult<api::TokenResponse> {
    Ok(Json(api::TokenResponse { token: d.token() }))
}

async fn console_token(State(d): D) -> ApiResult<api::TokenResponse> {
    let token = crate::console::auth::load_or_create(&d.settings.state_dir)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(Json(api::TokenResponse { token }))
}

async fn rotate_token(State(d): D) -> ApiResult<api::TokenResponse> {
    Ok(Json(api::TokenResponse {
        token: d.rotate_token()?,
    }))
}

async fn join(State(d): D, Body(req): Body<api::JoinRequest>) -> ApiResult<api::JoinResponse> {
    Ok(Json(d.join(req).await?))
}

async fn list_networks(State(d): D) -> ApiResult<Vec<api::Network>> {
    Ok(Json(d.list_networks()))
}

async fn create_network(
    State(d): D,
    Body(req): Body<api::CreateNetworkRequest>,
) -> ApiResult<api::Network> {
    Ok(Json(d.create_network(req).await?))
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove_network(
    State(d): D,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<api::Network> {
    Ok(Json(d.remove_network(&id, q.force).await?))
}

async fn update_network(
    State(d): D,
    Path(id): Path<String>,
    Body(req): Body<api::UpdateNetworkRequest>,
) -> ApiResult<api::Network> {
    Ok(Json(d.update_network(&id, req)?))
}

async fn attachments(State(d): D) -> ApiResult<Vec<api::Attachment>> {
    Ok(Json(d.list_attachments().await))
}

async fn attach(State(d): D, Body(req): Body<api::AttachRequest>) -> ApiResult<api::Attachment> {
    Ok(Json(d.attach(req).await?))
}

async fn detach(State(d): D, Body(req): Body<api::DetachRequest>) -> ApiResult<api::Attachment> {
    Ok(Json(d.detach(req).await?))
}

async fn reserve(State(d): D, Body(req): Body<api::ReserveRequest>) -> ApiResult<api::Reservation> {
    Ok(Json(d.reserve(req).await?))
}

async fn release(State(d): D, Body(req): Body<api::ReleaseRequest>) -> ApiResult<api::Reservation> {
    Ok(Json(d.release_reservation(req).await?))
}

async fn ipam(State(d): D) -> ApiResult<Vec<api::IpamNetwork>> {
    Ok(Json(d.ipam_view()))
}

async fn dns(State(d): D) -> ApiResult<Vec<api::DnsRecord>> {
    Ok(Json(d.dns_view()))
}

async fn remove_peer(State(d): D, Path(peer): Path<String>) -> ApiResult<api::RemovePeerResponse> {
    Ok(Json(d.remove_peer(&peer).await?))
}

async fn metrics(State(d): D) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::services::view::append(
            &crate::services::view::append(
                &crate::services::view::append(
                    &crate::metrics::render(&d.status(), &d.attachment_stats().await),
                    &crate::services::view::render(&d.services().list()),
                ),
                &d.traffic().metrics(),
            ),
            &d.wg_metrics(),
        ),
    )
}

// ---- Runtimes that plumb containers themselves (Docker) -------------------

async fn runtime_veth(
    State(d): D,
    Body(req): Body<api::RuntimeVethRequest>,
) -> ApiResult<api::RuntimeVeth> {
    Ok(Json(d.runtime_veth(&req.network).await?))
}

async fn record_runtime(
    State(d): D,
    Body(req): Body<api::RecordRuntimeRequest>,
) -> ApiResult<api::Attachment> {
    Ok(Json(d.record_runtime_attachment(req).await?))
}

async fn identify_runtime(
    State(d): D,
    Body(req): Body<api::IdentifyRuntimeRequest>,
) -> ApiResult<api::RuntimeAttachment> {
    let attachment = d.identify_runtime_attachment(req).await?;
    Ok(Json(api::RuntimeAttachment { attachment }))
}

async fn detach_runtime(
    State(d): D,
    Body(req): Body<api::RuntimeInterface>,
) -> ApiResult<api::RuntimeAttachment> {
    let attachment = d.detach_runtime_attachment(&req.host_if).await?;
    Ok(Json(api::RuntimeAttachment { attachment }))
}

async fn occupied(State(d): D) -> ApiResult<api::OccupiedPrefixes> {
    Ok(Json(d.occupied_prefixes()))
}

async fn egress_gateway(State(d): D, Path(network): Path<String>) -> ApiResult<api::EgressGateway> {
    Ok(Json(d.egress_gateway(&network)))
}

// ---- Policy and QoS ------------------------------------------------------

async fn list_policies(State(d): D) -> Json<Vec<api::PolicyRule>> {
    Json(d.traffic().policies())
}

async fn add_policy(
    State(d): D,
    Body(req): Body<api::PolicyAddRequest>,
) -> ApiResult<api::PolicyRule> {
    Ok(Json(d.traffic().add_policy(req)?))
}

async fn remove_policy(
    State(d): D,
    Path((network, name)): Path<(String, String)>,
) -> ApiResult<api::PolicyRule> {
    Ok(Json(d.traffic().remove_policy(&network, &name)?))
}

async fn list_qos(State(d): D) -> Json<Vec<api::QosEntry>> {
    Json(d.traffic().qos())
}

async fn set_qos(State(d): D, Body(req): Body<api::QosSetRequest>) -> ApiResult<api::QosEntry> {
    Ok(Json(d.traffic().set_qos(req)?))
}

async fn reset_qos(
    State(d): D,
    Body(req): Body<api::QosResetRequest>,
) -> ApiResult<Vec<api::QosEntry>> {
    Ok(Json(d.traffic().reset_qos(req)?))
}

// ---- Services ------------------------------------------------------------

async fn list_services(State(d): D) -> Json<Vec<api::Service>> {
    Json(d.services().list())
}

async fn create_service(
    State(d): D,
    Body(req): Body<api::CreateServiceRequest>,
) -> ApiResult<api::Service> {
    Ok(Json(d.services().create(&req).await?))
}

async fn update_service(
    State(d): D,
    Path(name): Path<String>,
    Body(req): Body<api::UpdateServiceRequest>,
) -> ApiResult<api::Service> {
    Ok(Json(d.services().update(&name, &req).await?))
}

async fn add_service_target(
    State(d): D,
    Path(name): Path<String>,
    Body(req): Body<api::ServiceTargetRequest>,
) -> ApiResult<api::Service> {
    Ok(Json(d.services().add_target(&name, &req)?))
}

async fn remove_service_target(
    State(d): D,
    Path(name): Path<String>,
    Body(req): Body<api::ServiceTargetRequest>,
) -> ApiResult<api::Service> {
    Ok(Json(d.services().remove_target(&name, &req)?))
}

#[derive(Deserialize)]
struct ServiceQuery {
    network: Option<String>,
}

async fn delete_service(
    State(d): D,
    Path(name): Path<String>,
    Query(q): Query<ServiceQuery>,
) -> ApiResult<api::Service> {
    Ok(Json(d.services().delete(&name, q.network.as_deref())?))
}

// ---- The edge ------------------------------------------------------------

async fn expose(State(d): D, Body(req): Body<api::ExposeRequest>) -> ApiResult<api::HostAddress> {
    Ok(Json(d.edge().expose(&req.network).await?))
}

async fn hide(State(d): D, Body(req): Body<api::ExposeRequest>) -> ApiResult<api::HostAddress> {
    Ok(Json(d.edge().hide(&req.network).await?))
}

async fn list_pools(State(d): D) -> Json<Vec<api::FipPool>> {
    Json(d.edge().list_pools())
}

async fn add_pool(State(d): D, Body(req): Body<api::FipPoolRequest>) -> ApiResult<api::FipPool> {
    Ok(Json(d.edge().add_pool(&req.cidr)?))
}

async fn remove_pool(State(d): D, Body(req): Body<api::FipPoolRequest>) -> ApiResult<api::FipPool> {
    Ok(Json(d.edge().remove_pool(&req.cidr)?))
}

async fn list_fips(State(d): D) -> Json<Vec<api::Fip>> {
    Json(d.edge().list_fips())
}

async fn create_fip(State(d): D, Body(req): Body<api::CreateFipRequest>) -> ApiResult<api::Fip> {
    Ok(Json(d.edge().create_fip(&req).await?))
}

async fn associate_fip(
    State(d): D,
    Path(addr): Path<String>,
    Body(req): Body<api::FipAssociateRequest>,
) -> ApiResult<api::Fip> {
    Ok(Json(d.edge().associate(&addr, &req)?))
}

async fn dissociate_fip(
    State(d): D,
    Path(addr): Path<String>,
    Body(req): Body<api::FipAssociateRequest>,
) -> ApiResult<api::Fip> {
    Ok(Json(d.edge().dissociate(&addr, &req)?))
}

async fn release_fip(
    State(d): D,
    Path(addr): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<api::Fip> {
    Ok(Json(d.edge().release(&addr, q.force)?))
}

// ---- WireGuard clients -------------------------------------------------------

async fn wg_list(State(d): D) -> Json<Vec<api::WgClient>> {
    Json(d.wg_list())
}

async fn wg_add(State(d): D, Body(req): Body<api::WgAddRequest>) -> ApiResult<api::WgClient> {
    Ok(Json(d.wg_add(req).await?))
}

async fn wg_rm(State(d): D, Path(name): Path<String>) -> ApiResult<api::WgClient> {
    Ok(Json(d.wg_rm(&name).await?))
}

async fn wg_move(
    State(d): D,
    Path(name): Path<String>,
    Body(req): Body<api::WgMoveRequest>,
) -> ApiResult<api::WgClient> {
    Ok(Json(d.wg_move(&name, &req.host).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Client, ClientError, ErrorKind};

    /// Serves `app` on a fresh socket and returns a client of it.
    async fn serve(app: Router) -> (Client, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "meshd-server-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (Client::new(&path), dir)
    }

    #[tokio::test]
    async fn rejected_bodies_queries_and_routes_carry_kinds() {
        async fn join(Body(req): Body<api::JoinRequest>) -> ApiResult<api::JoinResponse> {
            Ok(Json(api::JoinResponse { peer: req.address }))
        }
        async fn rm(Query(q): Query<RemoveQuery>) -> ApiResult<api::TokenResponse> {
            Ok(Json(api::TokenResponse {
                token: q.force.to_string(),
            }))
        }
        let app = Router::new()
            .route(routes::JOIN, post(join))
            .route(routes::TOKEN, get(rm))
            .fallback(no_route);
        let (c, dir) = serve(app).await;

        let ok: api::JoinResponse = c
            .post(
                routes::JOIN,
                &serde_json::json!({"address": "h:1", "token": "t"}),
            )
            .await
            .unwrap();
        assert_eq!(ok.peer, "h:1");
        // A missing field: axum would answer 422 in plain text.
        let err = c
            .post::<_, api::JoinResponse>(routes::JOIN, &serde_json::json!({"address": "h:1"}))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::BadRequest), "{err}");
        assert!(err.to_string().contains("token"), "{err}");

        let err = c
            .get::<api::TokenResponse>(&format!("{}?force=maybe", routes::TOKEN))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), Some(ErrorKind::BadRequest), "{err}");

        let err = c.get::<api::TokenResponse>("/v1/nope").await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Api { status: 404, kind: ErrorKind::NotFound, message } if message.contains("/v1/nope")),
            "{err:?}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
