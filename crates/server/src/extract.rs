//! Request extractors that fail the Medusa way: typed JSON bodies (an empty body is `{}`) and
//! `qs`-style query strings, checked against their type's schema.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::{IntoParams, PartialSchema};

use crate::error::{ApiError, ApiResult};

/// The body's bytes, checked as every JSON body is (size, Content-Type); `None` for no body.
async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Option<Bytes>, ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > crate::BODY_LIMIT as u64) {
        return Err(ApiError::TooLarge);
    }
    let content_type = req.headers().get(CONTENT_TYPE).cloned();
    let bytes = Bytes::from_request(req, state).await.map_err(|e| {
        let status = e.status();
        if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge
        } else {
            ApiError::invalid(format!("Could not read the request body: {e}"))
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Some(ct) = content_type {
        let ct = ct.to_str().unwrap_or("invalid").to_ascii_lowercase();
        if !ct.starts_with("application/json") && !ct.contains("+json") {
            return Err(ApiError::invalid(format!(
                "Expected a JSON body (Content-Type: application/json), got Content-Type: {ct}"
            )));
        }
    }
    Ok(Some(bytes))
}

fn parse_value(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid(format!("Malformed JSON body: {e}")))
}

/// Refuses text holding U+0000 anywhere in a request (a value or a name): Postgres can store it
/// neither as text nor in JSON, so both stores refuse it the same way, up front.
pub fn refuse_nul(value: &Value) -> ApiResult<()> {
    let nul = |s: &str| s.contains('\0');
    let found = match value {
        Value::String(s) => nul(s),
        Value::Array(items) => return items.iter().try_for_each(refuse_nul),
        Value::Object(map) => {
            if map.keys().any(|k| nul(k)) {
                true
            } else {
                return map.values().try_for_each(refuse_nul);
            }
        }
        _ => false,
    };
    if found {
        return Err(ApiError::invalid(
            "Invalid request: text may not contain the NUL character (U+0000)",
        ));
    }
    Ok(())
}

/// A JSON body read straight into `T`. Only a body `T` refuses is read again as JSON and
/// checked against the fields of `T`'s OpenAPI schema ([`crate::validate::body_specs`]), so it
/// is answered with the same words as every other route's; an accepted body costs one typed
/// parse.
#[derive(Debug)]
pub struct Typed<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + PartialSchema + 'static> FromRequest<S> for Typed<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = json_bytes(req, state)
            .await?
            .unwrap_or_else(|| Bytes::from_static(b"{}"));
        // `\u0000` is the only way to write U+0000 in JSON (a raw one is malformed).
        if bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"\\u0000")) {
            refuse_nul(&parse_value(&bytes)?)?;
        }
        match serde_json::from_slice::<T>(&bytes) {
            Ok(body) => Ok(Typed(body)),
            Err(refused) => {
                crate::validate::validate(&parse_value(&bytes)?, &crate::validate::body_specs::<T>(), false)?;
                // The schema let through what the type refused: say what the type said.
                Err(ApiError::invalid(format!("Invalid request: {refused}")))
            }
        }
    }
}

/// A query string checked against `T`'s parameters (Medusa's messages), then read into `T`;
/// `raw` keeps the checked values as sent, for the filters (`title[$like]=…`) a route builds.
#[derive(Debug)]
pub struct TypedQuery<T> {
    pub query: T,
    pub raw: Map<String, Value>,
}

impl<S: Send + Sync, T: DeserializeOwned + IntoParams + 'static> FromRequestParts<S> for TypedQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = crate::query::parse(parts.uri.query())?;
        refuse_nul(&value)?;
        let specs = crate::validate::query_specs::<T>();
        let raw = crate::validate::validate(&value, &specs, true)?;
        let typed = crate::validate::typed_query(raw.clone(), &specs);
        let query = serde_json::from_value(Value::Object(typed))
            .map_err(|e| ApiError::invalid(format!("Invalid request: {e}")))?;
        Ok(TypedQuery { query, raw })
    }
}

/// The query string as JSON.
#[derive(Debug)]
pub struct Query(pub Value);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let value = crate::query::parse(parts.uri.query())?;
        refuse_nul(&value)?;
        Ok(Query(value))
    }
}

/// An id from a path or a body (`apk_…`, `sc_…`), refused in one wording wherever it is read.
pub fn parse_id<T: TryFrom<String, Error = keyward::id::InvalidId>>(s: &str) -> ApiResult<T> {
    T::try_from(s.to_owned()).map_err(|e| ApiError::invalid(format!("Invalid request: '{s}' is not an id: {e}")))
}
