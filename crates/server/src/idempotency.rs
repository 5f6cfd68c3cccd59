//! `Idempotency-Key` on state-changing admin requests (POST, DELETE under `/admin`).
//!
//! The first request with a key runs and its answer is recorded (sealed: see
//! `keyward::idempotency`); a retry by the same actor with the same method, path and body gets
//! that answer again, with `Idempotent-Replayed: true` — a create's or a roll's new token
//! included. The same key with another request is refused with 422, and while the first request
//! still runs with 409. The request runs in a task of its own ([`detach`]), so a client that
//! hangs up before the answer does not stop it from being recorded: its retry gets it.
//!
//! Answers under 500 are recorded, except 409 (a conflict is worth retrying under the same key);
//! a 5xx gives the key up, so that the retry runs again.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keyward::idempotency::{Begin, IN_PROGRESS, IdempotencyKey, MISMATCH, request_digest};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::{AppState, BODY_LIMIT};

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// Set on an answer that is a replay of the first one.
pub const REPLAYED: &str = "idempotent-replayed";

fn refusal(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"type": kind, "message": message})),
    )
        .into_response()
}

/// The first answer again, marked as a replay.
fn replay(status: u16, body: Vec<u8>) -> Response {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
    res
}

/// The middleware (inside the admin guard, so the actor is known); `next` runs the request.
pub async fn idempotent<F, Fut>(state: &AppState, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let applies =
        (req.method() == Method::POST || req.method() == Method::DELETE) && req.uri().path().starts_with("/admin/");
    let (Some(raw), true) = (req.headers().get(HEADER), applies) else {
        return next(req).await;
    };
    let Some(actor) = req.extensions().get::<Caller>().map(|a| a.id().to_owned()) else {
        return next(req).await;
    };
    let key = match raw
        .to_str()
        .map_err(|_| ())
        .and_then(|k| IdempotencyKey::parse(k).map_err(|_| ()))
    {
        Ok(key) => key,
        Err(()) => {
            return ApiError::invalid(format!(
                "The Idempotency-Key header must be 1 to {} visible ASCII characters",
                keyward::idempotency::MAX_KEY_LEN
            ))
            .into_response();
        }
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, BODY_LIMIT).await else {
        return ApiError::TooLarge.into_response();
    };
    let target = parts.uri.path_and_query().map_or("", |p| p.as_str());
    let digest = request_digest(&[parts.method.as_str().as_bytes(), target.as_bytes(), &bytes]);
    let req = Request::from_parts(parts, Body::from(bytes));
    let kw = &state.kw;
    let claim = match kw.begin_idempotent(&actor, &key, &digest).await {
        Err(e) => return ApiError::Module(e).into_response(),
        Ok(Begin::Mismatch) => return refusal(StatusCode::UNPROCESSABLE_ENTITY, "invalid_data", MISMATCH),
        Ok(Begin::InProgress) => return refusal(StatusCode::CONFLICT, "conflict", IN_PROGRESS),
        Ok(Begin::Replay { status, body }) => return replay(status, body),
        Ok(Begin::Run(claim)) => claim,
    };
    let (parts, body) = next(req).await.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let status = parts.status;
    let recorded = if status.is_server_error() || status == StatusCode::CONFLICT {
        kw.abandon_idempotent(&claim).await
    } else {
        kw.finish_idempotent(claim, status.as_u16(), &bytes).await
    };
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "could not record an idempotent answer");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Outermost: a request that carries an Idempotency-Key is handled in a task of its own, so
/// that a client hanging up (which makes the server drop the request's future) stops neither
/// the change nor the recording of its answer. The retry then gets that answer.
pub async fn detach<Fut>(req: Request, run: impl FnOnce(Request) -> Fut) -> Response
where
    Fut: Future<Output = Response> + Send + 'static,
{
    if !req.headers().contains_key(HEADER) {
        return run(req).await;
    }
    tokio::spawn(run(req)).await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "an idempotent request's task failed");
        ApiError::Module(keyward::Error::unexpected("an idempotent request's task failed")).into_response()
    })
}
