//! HTTP errors: every module error kind maps to one status in one exhaustive match.
//!
//! Bodies are Medusa's `{type, message}` (plus `code` for duplicates). Unexpected errors answer
//! an opaque 500; their cause is logged inside the request's span, never sent to the client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keyward::{Error, ErrorKind};
use serde_json::json;

/// An error answered over HTTP.
#[derive(Debug)]
pub enum ApiError {
    /// A module error, answered by its kind.
    Module(Error),
    /// Failed admin authentication: `401 {"message": "Unauthorized"}` or a dedicated message.
    Unauthorized(&'static str),
    /// The body is over the limit: 413, refused before it is read.
    TooLarge,
    /// Too many login attempts from this address or for this email: 429, retry after the
    /// seconds given.
    TooManyFailures(u64),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Module(e)
    }
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::Module(Error::invalid_data(message))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::Module(Error::not_found(message))
    }
}

pub const UNAUTHORIZED: &str = "Unauthorized";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = match self {
            ApiError::Unauthorized(message) => {
                return (StatusCode::UNAUTHORIZED, Json(json!({ "message": message }))).into_response();
            }
            ApiError::TooManyFailures(seconds) => {
                let message =
                    format!("Too many login attempts from this address or for this email; try again in {seconds} s");
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(axum::http::header::RETRY_AFTER, seconds.to_string())],
                    Json(json!({"type": "too_many_requests", "message": message})),
                )
                    .into_response();
            }
            ApiError::TooLarge => {
                let message = format!("Request body is too large (the limit is {} bytes)", crate::BODY_LIMIT);
                return (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Json(json!({"type": "invalid_data", "message": message})),
                )
                    .into_response();
            }
            ApiError::Module(e) => e,
        };
        let status = match e.kind {
            ErrorKind::InvalidData | ErrorKind::NotAllowed => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Duplicate => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unexpected => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = match e.kind {
            ErrorKind::Unexpected => {
                tracing::error!(cause = %e.message, "request failed unexpectedly");
                json!({"code": "unknown_error", "type": "unknown_error", "message": "An unknown error occurred."})
            }
            ErrorKind::Unavailable => {
                tracing::warn!(cause = %e.message, "database unavailable");
                json!({"type": "database_unavailable", "message": "The database is unavailable; try again shortly."})
            }
            ErrorKind::Duplicate => {
                json!({"type": e.kind.as_str(), "message": e.message, "code": "invalid_request_error"})
            }
            _ => json!({"type": e.kind.as_str(), "message": e.message}),
        };
        (status, Json(body)).into_response()
    }
}
