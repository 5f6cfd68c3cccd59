//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations, and a docs
//! page that renders it with nothing fetched from the internet.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "keyward",
        description = "API key management: publishable and secret keys, verification, revocation and sales-channel scoping, with a Medusa-compatible admin API."
    ),
    paths(
        crate::admin::list_keys,
        crate::admin::create_key,
        crate::admin::get_key,
        crate::admin::update_key,
        crate::admin::delete_key,
        crate::admin::revoke_key,
        crate::admin::roll_key,
        crate::admin::link_channels,
        crate::admin::list_channels,
        crate::admin::create_channel,
        crate::admin::get_channel,
        crate::admin::update_channel,
        crate::admin::delete_channel,
        crate::admin::me,
        crate::activity::workflow_runs,
        crate::activity::events,
        crate::store::verify_key,
        crate::store::sales_channels,
        crate::store::regions,
        crate::store::products,
        crate::sessions::login,
        crate::sessions::create_session,
        crate::sessions::delete_session,
        crate::health,
        crate::ready,
        crate::metrics_text,
        crate::openapi::document,
    ),
    modifiers(&Security),
    security(("bearer" = []), ("secret_key" = []), ("session" = []))
)]
pub struct ApiDoc;

/// The ways to authenticate, as security schemes.
struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "secret_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "A secret key as the user name: base64(\"sk_…:\"), or the raw sk_… token; a restricted key (rk_…) alike, limited to its permissions",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::auth::SESSION_COOKIE))),
        );
        components.add_security_scheme(
            "publishable_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new(crate::store::HEADER))),
        );
    }
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", summary = "This document", security(()), responses((status = 200, description = "OpenAPI 3.1", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// `GET /docs`: a page listing every operation, rendered from `/openapi.json` in the browser.
pub async fn page() -> axum::response::Response {
    crate::dashboard::asset(DOCS_PAGE, "text/html; charset=utf-8")
}

/// The page's script, served from this origin: the page runs under the dashboard's CSP, which
/// allows no inline script or style.
pub async fn page_script() -> axum::response::Response {
    crate::dashboard::asset(DOCS_SCRIPT, "text/javascript; charset=utf-8")
}

/// The page's style.
pub async fn page_style() -> axum::response::Response {
    crate::dashboard::asset(DOCS_STYLE, "text/css; charset=utf-8")
}

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>keyward API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs.css">
</head><body>
<h1>keyward API</h1><p id="about">Loading <a href="/openapi.json">/openapi.json</a>…</p><div id="ops"></div>
<script src="/docs.js"></script></body></html>"#;

const DOCS_STYLE: &str = r#"body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem 1.5rem;color:#1b1b1b}
h1{margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #ddd;text-transform:capitalize}
.op{margin:.6rem 0;padding:.5rem .75rem;border:1px solid #e3e3e3;border-radius:6px}
.m{display:inline-block;min-width:4.5rem;font-weight:700;font-family:monospace}
.get{color:#0a6b2d}.post{color:#0b57b0}.delete{color:#a11}
code{font-size:14px}.p{color:#555;font-size:13px;margin-top:.25rem}
"#;

const DOCS_SCRIPT: &str = r#"fetch("/openapi.json").then(r => r.json()).then(doc => {
  document.getElementById("about").textContent = doc.info.description + " (OpenAPI " + doc.openapi + ", raw document at /openapi.json)";
  const groups = {};
  for (const [path, item] of Object.entries(doc.paths)) for (const [method, op] of Object.entries(item)) {
    const tag = (op.tags || ["other"])[0];
    (groups[tag] = groups[tag] || []).push({path, method, op});
  }
  const root = document.getElementById("ops");
  for (const [tag, ops] of Object.entries(groups)) {
    const h = document.createElement("h2"); h.textContent = tag; root.appendChild(h);
    for (const {path, method, op} of ops) {
      const d = document.createElement("div"); d.className = "op";
      const m = document.createElement("span"); m.className = "m " + method; m.textContent = method.toUpperCase();
      const c = document.createElement("code"); c.textContent = path;
      const s = document.createElement("div"); s.textContent = op.summary || "";
      const p = document.createElement("div"); p.className = "p";
      p.textContent = (op.parameters || []).map(x => x.name + " (" + x.in + ")").join(", ");
      d.append(m, c, s, p); root.appendChild(d);
    }
  }
});
"#;
