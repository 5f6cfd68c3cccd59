//! Tower layers any axum (or tower) service can use to require a key, on the same verification
//! path as keyward's own store routes and admin API.
//!
//! ```no_run
//! # async fn demo(kw: keyward::Keyward) {
//! use axum::{Router, routing::get, Extension};
//! use keyward_server::layers::{RequirePublishableKey, PublishableKey};
//!
//! async fn catalogue(Extension(key): Extension<PublishableKey>) -> String {
//!     format!("channels: {:?}", key.sales_channel_ids())
//! }
//! let app: Router = Router::new().route("/catalogue", get(catalogue)).layer(RequirePublishableKey::new(kw));
//! # }
//! ```

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use axum::response::{IntoResponse, Response};
use keyward::{ApiKey, Error, Holds, Keyward, PermissionQuery};
use tower::{Layer, Service};

use crate::error::{ApiError, UNAUTHORIZED};
pub use crate::store::PublishableKey;

const MISSING: &str = "Publishable API key required in the request header: x-publishable-api-key. You can manage your keys in settings in the dashboard.";
const INVALID: &str = "A valid publishable key is required to proceed with the request";

/// Checks `x-publishable-api-key` exactly as keyward's store routes do, for a request from
/// `origin` (the client's address, when known: a key with `allowed_ips` needs it).
pub async fn check_publishable(
    kw: &Keyward,
    headers: &HeaderMap,
    origin: Option<IpAddr>,
) -> Result<PublishableKey, ApiError> {
    check_publishable_recorded(kw, headers, origin, &|_| {}).await
}

/// [`check_publishable`], reporting the outcome code (`MISSING`, `AMBIGUOUS` or a verification
/// code) to `record`.
pub async fn check_publishable_recorded(
    kw: &Keyward,
    headers: &HeaderMap,
    origin: Option<IpAddr>,
    record: &(dyn Fn(&'static str) + Send + Sync),
) -> Result<PublishableKey, ApiError> {
    let values: Vec<_> = headers.get_all(crate::store::HEADER).iter().collect();
    let refuse = |code: &'static str, message: &str| {
        record(code);
        Err(ApiError::Module(Error::not_allowed(message)))
    };
    let token = match values.as_slice() {
        [] => return refuse("MISSING", MISSING),
        [one] => match one.to_str() {
            Ok(t) if t.trim().is_empty() => return refuse("MISSING", MISSING),
            Ok(t) => t.trim().to_owned(),
            Err(_) => return refuse("MALFORMED", INVALID),
        },
        // Sent twice: ambiguous, so refused.
        _ => return refuse("AMBIGUOUS", INVALID),
    };
    let verification = kw.verify_publishable_from(&token, origin).await?;
    record(verification.code.as_str());
    if verification.is_valid() {
        Ok(PublishableKey { verification })
    } else {
        Err(ApiError::Module(Error::not_allowed(INVALID)))
    }
}

/// The secret key that authenticated a request (`Authorization: Basic …`).
#[derive(Debug, Clone)]
pub struct SecretKey(pub std::sync::Arc<ApiKey>);

/// Checks `Authorization: Basic <secret key>` exactly as keyward's admin API does, for a request
/// from `origin`.
pub async fn check_secret(kw: &Keyward, headers: &HeaderMap, origin: Option<IpAddr>) -> Result<SecretKey, ApiError> {
    let token = crate::auth::basic_secret_of(headers).ok_or(ApiError::Unauthorized(UNAUTHORIZED))?;
    kw.authenticate_from(&token, origin)
        .await?
        .map(SecretKey)
        .ok_or(ApiError::Unauthorized(UNAUTHORIZED))
}

/// Requires a valid publishable key; puts [`PublishableKey`] in the request's extensions.
#[derive(Clone, Debug)]
pub struct RequirePublishableKey {
    kw: Keyward,
}

impl RequirePublishableKey {
    pub fn new(kw: Keyward) -> Self {
        Self { kw }
    }
}

/// Requires a valid secret key; puts [`SecretKey`] in the request's extensions. A restricted
/// key passes only when it holds what [`RequireSecretKey::with_permissions`] asks for.
#[derive(Clone, Debug)]
pub struct RequireSecretKey {
    kw: Keyward,
    check: Secret,
}

impl RequireSecretKey {
    /// Any valid secret key, restricted or not, whatever it holds.
    pub fn new(kw: Keyward) -> Self {
        Self {
            kw,
            check: Secret { needs: None },
        }
    }

    /// Requires the key to hold `query` (`orders:read AND (orders:write OR refunds:write)`;
    /// an unrestricted key holds everything): a key without them is answered 403. Refuses a
    /// query that does not parse.
    pub fn with_permissions(mut self, query: &str) -> Result<Self, Error> {
        self.check.needs = Some(std::sync::Arc::new(PermissionQuery::parse(query)?));
        Ok(self)
    }
}

/// The service a requirement layer wraps around `S`.
#[derive(Clone, Debug)]
pub struct Guarded<S, K> {
    inner: S,
    kw: Keyward,
    check: K,
}

/// Which check a [`Guarded`] service runs.
#[derive(Clone, Copy, Debug)]
pub struct Publishable;
/// The secret-key check, with the permissions it requires.
#[derive(Clone, Debug)]
pub struct Secret {
    needs: Option<std::sync::Arc<PermissionQuery>>,
}

impl<S> Layer<S> for RequirePublishableKey {
    type Service = Guarded<S, Publishable>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            kw: self.kw.clone(),
            check: Publishable,
        }
    }
}

impl<S> Layer<S> for RequireSecretKey {
    type Service = Guarded<S, Secret>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            kw: self.kw.clone(),
            check: self.check.clone(),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A check that runs before the inner service and may answer instead of it: it finds the key
/// the request carries and leaves it in the request's extensions for the handler.
trait Check: Clone + Send + Sync + 'static {
    type Key: Clone + Send + Sync + 'static;

    fn key(
        &self,
        kw: &Keyward,
        headers: &HeaderMap,
        origin: Option<IpAddr>,
    ) -> impl Future<Output = Result<Self::Key, ApiError>> + Send;

    fn run(self, kw: Keyward, mut req: Request<Body>) -> BoxFuture<Result<Request<Body>, Response>> {
        Box::pin(async move {
            let origin = crate::client::origin(req.extensions());
            let key = self
                .key(&kw, req.headers(), origin)
                .await
                .map_err(IntoResponse::into_response)?;
            req.extensions_mut().insert(key);
            Ok(req)
        })
    }
}

impl Check for Publishable {
    type Key = PublishableKey;

    async fn key(&self, kw: &Keyward, headers: &HeaderMap, origin: Option<IpAddr>) -> Result<PublishableKey, ApiError> {
        check_publishable(kw, headers, origin).await
    }
}

impl Check for Secret {
    type Key = SecretKey;

    async fn key(&self, kw: &Keyward, headers: &HeaderMap, origin: Option<IpAddr>) -> Result<SecretKey, ApiError> {
        let key = check_secret(kw, headers, origin).await?;
        match &self.needs {
            Some(q) if !q.satisfied_by(Holds::of(key.0.policy.permissions.as_deref())) => {
                Err(ApiError::Module(Error::forbidden(format!(
                    "This API key does not hold the permissions this route requires: {q}"
                ))))
            }
            _ => Ok(key),
        }
    }
}

impl<S, K> Service<Request<Body>> for Guarded<S, K>
where
    S: Service<Request<Body>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    K: Check,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request; the fresh clone waits its turn.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (kw, check) = (self.kw.clone(), self.check.clone());
        Box::pin(async move {
            match check.run(kw, req).await {
                Ok(req) => inner.call(req).await,
                Err(refusal) => Ok(refusal),
            }
        })
    }
}
