//! The dashboard at `/app`: static files compiled into the binary (`crates/server/dashboard/`),
//! written by hand with no build step, so a fresh clone serves it without Node.js and there is
//! no generated bundle to drift from its source. The page talks only to the admin JSON API,
//! with the session cookie, like any other client.
//!
//! Every answer carries a Content-Security-Policy that allows nothing but this origin — no
//! inline script or style, no other host — and forbids framing.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderName, HeaderValue, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// The policy of every dashboard answer.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../dashboard/index.html");
const SCRIPT: &str = include_str!("../dashboard/app.js");
const SCRIPT_UI: &str = include_str!("../dashboard/ui.js");
const STYLE: &str = include_str!("../dashboard/app.css");
const ICON: &str = include_str!("../dashboard/icon.svg");

/// A static answer under the dashboard's headers (CSP, no-cache, nosniff, no framing).
pub(crate) fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    // The files change only with the binary; revalidating each load keeps an upgrade visible.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        HeaderName::from_static("x-frame-options"),
        HeaderValue::from_static("DENY"),
    );
    (StatusCode::OK, headers, body).into_response()
}

/// `GET /`: a browser opening the printed address is sent to the dashboard.
pub async fn root() -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, HeaderValue::from_static("/app"))]).into_response()
}

/// `GET /app`: the page (every view is a `#/…` fragment of it).
pub async fn index() -> Response {
    asset(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn script_ui() -> Response {
    asset(SCRIPT_UI, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    asset(STYLE, "text/css; charset=utf-8")
}

pub async fn icon() -> Response {
    asset(ICON, "image/svg+xml")
}
