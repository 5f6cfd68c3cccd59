//! Cross-site request forgery. A browser sends the session cookie with any request to this
//! host, even one a foreign page made it send; so a cookie-authenticated request that changes
//! something (anything but GET, HEAD, OPTIONS) must come from a page of this server's own origin
//! (or one of `KEYWARD_CORS_ORIGINS`) — `Origin`, or else `Sec-Fetch-Site: same-origin` — and,
//! when it has a body, carry it as JSON (a foreign page can post a form or plain text without a
//! CORS preflight, but not JSON). Bearer and Basic credentials are never sent by a browser on
//! its own, so those requests are not checked.

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

pub const FOREIGN_ORIGIN: &str = "This request carries the session cookie but comes from another origin; \
     send it from the dashboard's own origin, or authenticate with a Bearer token or a secret key";
pub const NOT_JSON: &str = "A request authenticated by the session cookie must send its body as application/json";

fn refuse(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(serde_json::json!({"type": kind, "message": message})),
    )
        .into_response()
}

/// Whether the request is served over https: `KEYWARD_PUBLIC_URL` says so, or a trusted proxy's
/// `X-Forwarded-Proto` does.
pub fn is_https(state: &AppState, headers: &HeaderMap, from_trusted_proxy: bool) -> bool {
    if let Some(url) = &state.public_url {
        return url.starts_with("https://");
    }
    from_trusted_proxy
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// This server's own origins as a browser names them: `KEYWARD_PUBLIC_URL`'s, or `http(s)://`
/// and the request's `Host`.
fn own_origins(state: &AppState, headers: &HeaderMap) -> Vec<String> {
    if let Some(url) = &state.public_url {
        return vec![url.trim_end_matches('/').to_owned()];
    }
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return Vec::new();
    };
    vec![format!("http://{host}"), format!("https://{host}")]
}

/// `Ok` when a cookie-authenticated request may go on; otherwise the refusal to send.
#[allow(clippy::result_large_err, reason = "a refusal is a response, built once")]
pub fn check(state: &AppState, method: &Method, headers: &HeaderMap) -> Result<(), Response> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    // One Origin, or none: a request naming two is not from one page.
    if headers.get_all(header::ORIGIN).iter().count() > 1 {
        return Err(refuse(StatusCode::FORBIDDEN, "not_allowed", FOREIGN_ORIGIN));
    }
    let same_origin = match headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
        Some(origin) => {
            let origin = origin.trim_end_matches('/');
            own_origins(state, headers).iter().any(|o| o == origin)
                || state
                    .cors_origins
                    .iter()
                    .any(|o| o.trim().trim_end_matches('/') == origin)
        }
        None => headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "same-origin"),
    };
    if !same_origin {
        return Err(refuse(StatusCode::FORBIDDEN, "not_allowed", FOREIGN_ORIGIN));
    }
    let has_body = *method != Method::DELETE
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|l| l != "0");
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if has_body && !json {
        return Err(refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_data", NOT_JSON));
    }
    Ok(())
}
