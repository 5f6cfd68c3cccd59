//! keyward's HTTP server: the Medusa-compatible admin API, the store-side publishable key check,
//! the verification API, and health checks.
//!
//! [`app`] builds the whole router from an [`AppState`] without a socket, so tests can drive it
//! in-process; [`serve`] binds it and shuts down gracefully on SIGINT/SIGTERM.

pub mod activity;
pub mod admin;
pub mod auth;
pub mod client;
pub mod csrf;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod fields;
pub mod idempotency;
pub mod jwt;
pub mod layers;
pub mod limits;
pub mod list_query;
pub mod metrics;
pub mod openapi;
pub mod query;
pub mod request_id;
pub mod routes;
pub mod sessions;
pub mod store;
pub mod validate;
pub mod webhooks;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::HeaderValue;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router, middleware};
use keyward::{Keyward, Permission, Workflows};
use serde_json::{Value, json};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::jwt::Jwt;
pub use routes::{AdminRoute, admin_routes, route_permission};

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// What every handler can reach. Cloned for every middleware and handler of every request, so
/// it is one shared pointer: a clone is one atomic increment, not one per field (which, across
/// cores, was most of a request's cost).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The fields of [`AppState`].
#[derive(Clone)]
pub struct Shared {
    /// The module, for reads.
    pub kw: Keyward,
    /// The workflows every change runs through.
    pub flows: Workflows,
    pub jwt: Arc<Jwt>,
    pub metrics: Arc<metrics::Metrics>,
    pub limiter: Arc<limits::AuthLimiter>,
    /// Reverse proxies whose forwarding headers name the client (`KEYWARD_TRUSTED_PROXIES`).
    pub trusted_proxies: Arc<Vec<client::Cidr>>,
    /// The one header trusted proxies name the client in.
    pub client_header: client::ClientHeader,
    /// The URL browsers reach this server at (`KEYWARD_PUBLIC_URL`): its origin is the one
    /// cookie-authenticated changes must come from, and `https` makes the cookie `Secure`.
    pub public_url: Option<String>,
    /// A Bearer token that may read `/metrics` (`KEYWARD_METRICS_TOKEN`); admin credentials may too.
    pub metrics_token: Option<Arc<str>>,
    /// Origins allowed to call the API from a browser (CORS); none by default.
    pub cors_origins: Vec<String>,
    /// How event deliveries are retried.
    pub delivery: keyward_flow::DeliveryOptions,
}

impl AppState {
    pub fn new(flows: Workflows, jwt_secret: impl Into<Vec<u8>>) -> Self {
        Self(Arc::new(Shared {
            kw: flows.kw().clone(),
            flows,
            jwt: Arc::new(Jwt::new(jwt_secret)),
            metrics: Arc::default(),
            limiter: Arc::default(),
            trusted_proxies: Arc::default(),
            client_header: client::ClientHeader::default(),
            public_url: None,
            metrics_token: None,
            cors_origins: Vec::new(),
            delivery: keyward_flow::DeliveryOptions::default(),
        }))
    }

    pub fn with_delivery(mut self, delivery: keyward_flow::DeliveryOptions) -> Self {
        self.edit().delivery = delivery;
        self
    }

    pub fn with_cors_origins(mut self, origins: Vec<String>) -> Self {
        self.edit().cors_origins = origins;
        self
    }

    /// The URL browsers reach this server at (scheme, host, port; no path).
    pub fn with_public_url(mut self, url: Option<String>) -> Self {
        self.edit().public_url = url.map(|u| u.trim_end_matches('/').to_owned());
        self
    }

    /// The Bearer token a metrics scraper presents (none: admin credentials only).
    pub fn with_metrics_token(mut self, token: Option<String>) -> Self {
        self.edit().metrics_token = token.map(Arc::from);
        self
    }

    /// Reverse proxies trusted to name the client in `Forwarded` / `X-Forwarded-For`.
    /// Reads the client's address from `header` (behind a trusted proxy) instead of
    /// `X-Forwarded-For`.
    pub fn with_client_header(mut self, header: client::ClientHeader) -> Self {
        self.edit().client_header = header;
        self
    }

    pub fn with_trusted_proxies(mut self, proxies: Vec<client::Cidr>) -> Self {
        self.edit().trusted_proxies = Arc::new(proxies);
        self
    }

    pub fn with_limiter(mut self, limiter: limits::AuthLimiter) -> Self {
        self.edit().limiter = Arc::new(limiter);
        self
    }

    /// The fields, to change while the state is being built (before it is shared).
    fn edit(&mut self) -> &mut Shared {
        Arc::make_mut(&mut self.0)
    }

    fn now_seconds(&self) -> i64 {
        self.kw.now().millis() / 1000
    }
}

/// The whole router.
///
/// The layers every request passes (request id, tracing, timeout, body limit, CORS, the
/// client's address, the admin guard, Idempotency-Key) wrap the routes once, as one service,
/// instead of being applied to each route: a layer applied per route boxes that route again,
/// and a request clones every box on its way in.
pub fn app(state: AppState) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter<AppState>)> = Vec::new();
    for r in admin_routes() {
        match by_path.iter_mut().find(|(p, _)| *p == r.path) {
            Some((_, handlers)) => *handlers = std::mem::take(handlers).merge(r.handler),
            None => by_path.push((r.path, r.handler)),
        }
    }
    let mut routes = Router::new();
    for (path, handlers) in by_path {
        routes = routes.route(path, handlers);
    }
    let storefront = Router::new()
        .route("/store/sales-channels", get(store::sales_channels))
        .route("/store/regions", get(store::regions))
        .route("/store/products", get(store::products))
        .route("/store/{*rest}", get(not_found))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            store::require_publishable_key,
        ));
    let routes = routes
        .merge(storefront)
        .route("/auth/user/emailpass", post(sessions::login))
        .route(
            "/auth/session",
            post(sessions::create_session).delete(sessions::delete_session),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(openapi::page))
        .route("/docs.js", get(openapi::page_script))
        .route("/docs.css", get(openapi::page_style))
        .route("/", get(dashboard::root))
        .route("/app", get(dashboard::index))
        .route("/app/", get(dashboard::index))
        .route("/app/app.js", get(dashboard::script))
        .route("/app/ui.js", get(dashboard::script_ui))
        .route("/app/app.css", get(dashboard::style))
        .route("/app/icon.svg", get(dashboard::icon))
        .route_layer(middleware::from_fn_with_state(state.clone(), metrics::record))
        .fallback(not_found)
        .with_state(state.clone());
    // Outermost first. Outside the routes, so they see every request, matched or not.
    let service = tower::ServiceBuilder::new()
        // Every answer, whatever made it (a route, the fallback, a timeout), tells browsers not
        // to guess its type: a JSON error echoing input is never run as a page or a script.
        .map_response(|mut res: axum::http::Response<_>| {
            res.headers_mut()
                .entry(axum::http::header::X_CONTENT_TYPE_OPTIONS)
                .or_insert(HeaderValue::from_static("nosniff"));
            res
        })
        .layer(SetRequestIdLayer::x_request_id(request_id::MakeId::default()))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_id::request_span::<axum::body::Body>))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(30),
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .option_layer(cors_layer(&state.cors_origins))
        .layer(middleware::from_fn_with_state(state, front))
        .service(routes);
    Router::new().fallback_service(service)
}

/// What every request passes before the routes, as one middleware (each layer of its own
/// would box the request's future and the service behind it again): a request with an
/// Idempotency-Key detached into a task of its own, the client's address, the admin guard,
/// and Idempotency-Key inside it (where the actor is known).
async fn front(State(state): State<AppState>, req: axum::extract::Request, next: middleware::Next) -> Response {
    idempotency::detach(req, move |req| async move {
        client::client_address(&state, req, |req| {
            auth::guard_admin_paths(&state, req, |req| {
                idempotency::idempotent(&state, req, |req| next.run(req))
            })
        })
        .await
    })
    .await
}

/// CORS for the configured origins (credentials allowed, for cookie sessions), or none.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use axum::http::{Method, header};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim()).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    Some(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::HeaderName::from_static(store::HEADER),
                header::HeaderName::from_static(idempotency::HEADER),
            ])
            .expose_headers([header::HeaderName::from_static(idempotency::REPLAYED)]),
    )
}

#[utoipa::path(get, path = "/metrics", tag = "operations", summary = "Prometheus metrics: an admin credential, or the KEYWARD_METRICS_TOKEN as Bearer", security(("bearer" = [])), responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain"), (status = 401, description = "Unauthorized", body = crate::wire::ErrorBody), (status = 403, description = "Forbidden: a restricted key without metrics:read, or a key used from outside its allowed addresses", body = crate::wire::ErrorBody)))]
async fn metrics_text(
    State(state): State<AppState>,
    client: Option<axum::Extension<client::ClientAddr>>,
    headers: HeaderMap,
) -> Response {
    let scraper = state.metrics_token.as_deref().is_some_and(|want| {
        auth::authorization(&headers)
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, got)| keyward::token::constant_time_eq(got, want))
    });
    // Verification outcomes by code are not for anonymous callers.
    if !scraper {
        let origin = client.and_then(|c| c.ip);
        if let Err(e) = auth::authenticate(&state, &headers, origin)
            .await
            .and_then(|actor| actor.require(Permission::MetricsRead))
        {
            return e.into_response();
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&state.kw.cache().stats()),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found("Route not found")
}

#[utoipa::path(get, path = "/health", tag = "operations", summary = "Liveness", security(()), responses((status = 200, description = "Alive", body = crate::wire::Status)))]
async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/ready", tag = "operations", summary = "Readiness: the database answers", security(()), responses((status = 200, description = "Ready", body = crate::wire::Status), (status = 503, description = "Database unreachable", body = crate::wire::ErrorBody)))]
async fn ready(State(state): State<AppState>) -> Response {
    match state.kw.ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(cause = %e.message, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "message": "The database is unreachable"})),
            )
                .into_response()
        }
    }
}

/// How often `last_used_at` is flushed while serving.
pub const USAGE_FLUSH_EVERY: Duration = Duration::from_secs(5);

/// Serves on `listener` until SIGINT or SIGTERM, letting requests in flight finish. Named
/// background tasks keep the verification cache true (the store's change watcher: while it is
/// connected, verification is answered from memory), flush `last_used_at` every
/// [`USAGE_FLUSH_EVERY`] (and once more on the way out), take over workflow runs whose node died (every half lease), deliver events to the
/// engine's subscribers, and run its scheduled jobs.
pub async fn serve(state: AppState, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    serve_router(state.clone(), app(state), listener).await
}

/// Like [`serve`], for a router of your own that contains keyward's ([`app`] merged with your
/// routes): the same background tasks run beside it.
pub async fn serve_router(state: AppState, router: Router, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let recovery = state.flows.engine().spawn_recovery(stopped.clone());
    let dispatcher = state.flows.engine().spawn_dispatcher(state.delivery, stopped.clone());
    let scheduler = state.flows.engine().spawn_scheduler(stopped.clone());
    let watcher = state.kw.clone();
    let mut watch_stopped = stopped.clone();
    let cache_watcher = tokio::spawn(async move {
        tokio::select! {
            () = watcher.watch_changes() => {}
            _ = watch_stopped.changed() => {}
        }
    });
    let kw = state.kw.clone();
    let usage_flusher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(USAGE_FLUSH_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => flush_usage(&kw).await,
                _ = stopped.changed() => break,
            }
        }
        flush_usage(&kw).await;
    });
    let served = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await;
    let _ = stop.send(true);
    let _ = usage_flusher.await;
    let _ = cache_watcher.await;
    let _ = recovery.await;
    let _ = dispatcher.await;
    let _ = scheduler.await;
    served
}

async fn flush_usage(kw: &Keyward) {
    if let Err(e) = kw.flush_usage().await {
        tracing::warn!(task = "usage-flusher", cause = %e.message, "could not record last_used_at; will retry");
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
