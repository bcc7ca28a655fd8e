//! The plugin socket: one POST route per protocol call, dispatched by path.
//! Operation errors answer `{"Err": "…"}` (HTTP 500, as dockerd's plugin
//! client expects), undecodable bodies 400, unknown calls 404 so dockerd
//! knows the call is not implemented (and the log says which).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

use crate::protocol::{ErrAnswer, CONTENT_TYPE};
use crate::{Error, Plugin};

pub(crate) async fn serve(
    plugin: Arc<Plugin>,
    listener: tokio::net::UnixListener,
) -> std::io::Result<()> {
    let app = Router::new().fallback(dispatch).with_state(plugin);
    axum::serve(listener, app).await
}

fn reply(status: StatusCode, body: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    (status, [(header::CONTENT_TYPE, CONTENT_TYPE)], bytes).into_response()
}

fn answer<T: Serialize>(call: &str, result: Result<T, Error>) -> Response {
    match result {
        Ok(v) => reply(StatusCode::OK, &v),
        Err(e) => {
            tracing::info!(call, "Docker plugin call refused: {e}");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &ErrAnswer { err: e.to_string() },
            )
        }
    }
}

/// The body as `T`; dockerd sends no body (or `null`) for calls without one.
fn parse<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, String> {
    let text = std::str::from_utf8(body).unwrap_or("").trim();
    if text.is_empty() || text == "null" {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("cannot decode the request: {e}"))
}

macro_rules! call {
    ($name:expr, $body:expr, |$req:ident| $op:expr) => {
        match parse(&$body) {
            Ok($req) => answer($name, $op.await),
            Err(err) => reply(StatusCode::BAD_REQUEST, &ErrAnswer { err }),
        }
    };
}

/// `{}`: what calls without a payload of their own answer.
fn empty(r: Result<(), Error>) -> Result<serde_json::Value, Error> {
    r.map(|()| json!({}))
}

async fn dispatch(State(p): State<Arc<Plugin>>, uri: Uri, body: Bytes) -> Response {
    let call = uri.path().trim_start_matches('/').to_string();
    tracing::debug!(call, "Docker plugin call");
    let c = call.as_str();
    match c {
        "Plugin.Activate" => reply(
            StatusCode::OK,
            &json!({"Implements": ["NetworkDriver", "IpamDriver"]}),
        ),
        "NetworkDriver.GetCapabilities" => reply(
            StatusCode::OK,
            &json!({"Scope": "local", "ConnectivityScope": "global"}),
        ),
        "NetworkDriver.CreateNetwork" => {
            call!(c, body, |r| async { empty(p.create_network(r).await) })
        }
        "NetworkDriver.DeleteNetwork" => {
            call!(c, body, |r| async { empty(p.delete_network(r).await) })
        }
        "NetworkDriver.CreateEndpoint" => {
            call!(c, body, |r| async { empty(p.create_endpoint(r).await) })
        }
        "NetworkDriver.DeleteEndpoint" => {
            call!(c, body, |r| async { empty(p.delete_endpoint(r).await) })
        }
        "NetworkDriver.EndpointOperInfo" => call!(c, body, |r| p.endpoint_info(r)),
        "NetworkDriver.Join" => call!(c, body, |r| p.join(r)),
        "NetworkDriver.Leave" => call!(c, body, |r| async { empty(p.leave(r).await) }),
        // Nothing to do: mesh networks have no outside connectivity to
        // program, no node discovery, and are not swarm-allocated.
        "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity"
        | "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete"
        | "NetworkDriver.AllocateNetwork"
        | "NetworkDriver.FreeNetwork"
        | "IpamDriver.DiscoverNew"
        | "IpamDriver.DiscoverDelete" => reply(StatusCode::OK, &json!({})),
        "IpamDriver.GetCapabilities" => {
            reply(StatusCode::OK, &json!({"RequiresMACAddress": false}))
        }
        "IpamDriver.GetDefaultAddressSpaces" => reply(
            StatusCode::OK,
            &json!({
                "LocalDefaultAddressSpace": crate::protocol::ADDRESS_SPACE,
                "GlobalDefaultAddressSpace": crate::protocol::ADDRESS_SPACE,
            }),
        ),
        "IpamDriver.RequestPool" => call!(c, body, |r| p.request_pool(r)),
        "IpamDriver.ReleasePool" => call!(c, body, |r| async { empty(p.release_pool(r).await) }),
        "IpamDriver.RequestAddress" => call!(c, body, |r| p.request_address(r)),
        "IpamDriver.ReleaseAddress" => {
            call!(c, body, |r| async { empty(p.release_address(r).await) })
        }
        other => {
            tracing::warn!(call = other, "Docker plugin call not implemented");
            reply(
                StatusCode::NOT_FOUND,
                &ErrAnswer {
                    err: format!("{other} is not implemented by the mesh plugin"),
                },
            )
        }
    }
}
