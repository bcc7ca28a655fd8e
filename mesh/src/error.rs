//! Errors of the local API, each with the HTTP status it is answered with.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A peer we were asked to reach did not answer as it should.
    #[error("{0}")]
    BadGateway(String),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn bad(e: anyhow::Error) -> ApiError {
        ApiError::BadRequest(format!("{e:#}"))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
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
            }),
        )
            .into_response()
    }
}
