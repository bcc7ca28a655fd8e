//! Errors of the local API. Each variant is answered with an
//! [`ErrorKind`] (and so an HTTP status) next to its message, so clients
//! branch on the kind, never on the text. The model's errors (see
//! `mesh_model`) become API errors here, and only here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{ErrorBody, ErrorKind};
use mesh_model::networks::NetworkError;
use mesh_model::services::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    /// Something the request names (an attachment, a process, a peer, a
    /// reservation) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The network the request names does not exist: a configuration
    /// error to the CNI plugin, unlike [`ApiError::NotFound`].
    #[error("{0}")]
    NetworkNotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A peer we were asked to reach did not answer as it should.
    #[error("{0}")]
    BadGateway(String),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad(e: impl Into<anyhow::Error>) -> ApiError {
        ApiError::BadRequest(format!("{:#}", e.into()))
    }

    /// The standard answer for an unknown network id.
    pub fn network_not_found(id: &str) -> ApiError {
        ApiError::NetworkNotFound(format!(
            "network {id:?} does not exist (see `meshctl network list`)"
        ))
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::BadRequest(_) => ErrorKind::BadRequest,
            ApiError::Forbidden(_) => ErrorKind::Forbidden,
            ApiError::NotFound(_) => ErrorKind::NotFound,
            ApiError::NetworkNotFound(_) => ErrorKind::NetworkNotFound,
            ApiError::Conflict(_) => ErrorKind::Conflict,
            ApiError::BadGateway(_) => ErrorKind::Unreachable,
            ApiError::Internal(_) => ErrorKind::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.kind().status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// A service or traffic request that does not check out.
impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> ApiError {
        ApiError::BadRequest(e.0)
    }
}

/// A network id, address, subnet, interface name or MTU refused.
impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> ApiError {
        ApiError::BadRequest(e.0)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Internal(_)) {
            tracing::warn!("API request failed: {self}");
        }
        (
            self.status(),
            Json(ErrorBody {
                error: self.to_string(),
                kind: self.kind(),
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn answer(e: ApiError) -> (u16, serde_json::Value) {
        let resp = e.into_response();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn every_variant_answers_its_kind_and_status() {
        let cases = [
            (ApiError::BadRequest("b".into()), 400, "bad_request"),
            (ApiError::Forbidden("f".into()), 403, "forbidden"),
            (ApiError::NotFound("n".into()), 404, "not_found"),
            (
                ApiError::network_not_found("blue"),
                404,
                "network_not_found",
            ),
            (ApiError::Conflict("c".into()), 409, "conflict"),
            (ApiError::BadGateway("g".into()), 502, "unreachable"),
            (
                ApiError::Internal(anyhow::anyhow!("disk full")),
                500,
                "internal",
            ),
        ];
        for (err, status, kind) in cases {
            let message = err.to_string();
            let (got_status, body) = answer(err).await;
            assert_eq!(got_status, status, "{body}");
            assert_eq!(body["kind"], kind);
            assert_eq!(body["error"], message.as_str());
        }
    }

    #[tokio::test]
    async fn the_client_reads_back_what_the_server_says() {
        let (status, body) = answer(ApiError::network_not_found("nope")).await;
        let parsed = ErrorBody::parse(status, body.to_string().as_bytes());
        assert_eq!(parsed.kind, ErrorKind::NetworkNotFound);
        assert!(parsed.error.contains("\"nope\" does not exist"));
    }
}
