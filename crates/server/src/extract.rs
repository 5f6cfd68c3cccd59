//! Request extractors that fail the Medusa way: JSON bodies (an empty body is `{}`), and
//! `qs`-style query strings, both as JSON for strict validation.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde_json::Value;

use crate::error::ApiError;

/// A JSON body; no body at all reads as `{}`.
#[derive(Debug)]
pub struct Body(pub Value);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > crate::BODY_LIMIT as u64) {
            return Err(ApiError::TooLarge);
        }
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("invalid").to_ascii_lowercase());
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            let status = e.status();
            if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::invalid(format!("Could not read the request body: {e}"))
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(Value::Object(Default::default())));
        }
        if let Some(ct) = content_type
            && !ct.starts_with("application/json")
            && !ct.contains("+json")
        {
            return Err(ApiError::invalid(format!(
                "Expected a JSON body (Content-Type: application/json), got Content-Type: {ct}"
            )));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::invalid(format!("Malformed JSON body: {e}")))
    }
}

/// The query string as JSON.
#[derive(Debug)]
pub struct Query(pub Value);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        crate::query::parse(parts.uri.query()).map(Query)
    }
}
