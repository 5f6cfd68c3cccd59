//! Admin authentication. Any one method is enough; a failing one falls through to the next:
//! `Authorization: Bearer <jwt>`, `Authorization: Basic <secret key>` (base64 of `sk_…:` or
//! `sk_…`, or the raw `sk_…`; a restricted key's `rk_…` alike; scheme case-insensitive), then the
//! session cookie.
//!
//! A restricted key (one with `permissions`) then reaches only the routes whose permission it
//! holds: [`crate::admin_routes`] names one permission per route and method, and a path that
//! names none (an unknown one) is refused too. A key with `allowed_ips` authenticates only from
//! an address inside them (403 from elsewhere).

use std::net::IpAddr;

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use keyward::{Actor, Permission};

use crate::AppState;
use crate::error::{ApiError, UNAUTHORIZED};

/// Who is calling the admin API: the module's [`Actor`] (a user or a secret key with what it
/// holds), and how it authenticated. What the actor may do is the module's to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub actor: Actor,
    /// Authenticated by the session cookie (which a browser sends by itself: CSRF rules apply).
    pub by_cookie: bool,
}

impl Caller {
    /// `user_…`, or `apk_…` when a secret key made the call.
    pub fn id(&self) -> &str {
        self.actor.id().unwrap_or_default()
    }

    /// Refuses with 403 unless the caller holds `needed`.
    pub fn require(&self, needed: Permission) -> Result<(), ApiError> {
        self.actor.require(needed).map_err(ApiError::Module)
    }
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::Module(keyward::Error::forbidden(message))
}

/// The refusal of a key with `allowed_ips` used from elsewhere.
pub const FORBIDDEN_ORIGIN: &str = "This API key may not be used from this address";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "keyward_session";

/// The session cookie's name over https: the `__Host-` prefix makes browsers keep it to this
/// host, `Secure` and `Path=/` only.
pub const SECURE_SESSION_COOKIE: &str = "__Host-keyward_session";

/// The device cookie's name: set on a successful sign-in, it keeps that client's own login
/// allowance when strangers exhaust the email's (see [`crate::limits`]).
pub const DEVICE_COOKIE: &str = "keyward_device";

/// The device cookie's name over https.
pub const SECURE_DEVICE_COOKIE: &str = "__Host-keyward_device";

const BEARER_SECRET: &str = "A secret API key was passed as a Bearer token. Secret API keys must be sent using HTTP Basic authentication instead (Authorization: Basic <secret-api-key>).";

/// Whether a path needs an admin credential: everything under `/admin` and `/v1`, matched by a
/// route or not, so an unknown path there reveals nothing.
pub fn is_protected(path: &str) -> bool {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under("/admin") || under("/v1")
}

/// Middleware over the whole app: on protected paths, puts the [`Caller`] in the request or
/// answers 401; other paths pass untouched.
pub async fn guard_admin_paths<F, Fut>(state: &AppState, mut req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if !is_protected(req.uri().path()) {
        return next(req).await;
    }
    let origin = crate::client::origin(req.extensions());
    match authenticate(state, req.headers(), origin).await {
        Ok(actor) => {
            if actor.by_cookie
                && let Err(refused) = crate::csrf::check(state, req.method(), req.headers())
            {
                return refused;
            }
            if actor.actor.holds() != keyward::Holds::Everything {
                let needed = crate::route_permission(req.method(), req.uri().path());
                let allowed = match needed {
                    Some(p) => actor.require(p),
                    None => Err(forbidden(
                        "A restricted API key may use only the routes its permissions name",
                    )),
                };
                if let Err(refused) = allowed {
                    return refused.into_response();
                }
            }
            req.extensions_mut().insert(actor);
            next(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// Tries every method in turn, for a request from `origin`.
pub async fn authenticate(state: &AppState, headers: &HeaderMap, origin: Option<IpAddr>) -> Result<Caller, ApiError> {
    let mut secret_as_bearer = false;
    if let Some((scheme, credential)) = authorization(headers) {
        if scheme.eq_ignore_ascii_case("bearer") {
            if is_secret_token(credential) {
                secret_as_bearer = true;
            } else if let Some(actor) = state.actor_from_jwt(credential).await? {
                return Ok(actor);
            }
        } else if scheme.eq_ignore_ascii_case("basic")
            && let Some(token) = basic_secret(credential)
        {
            let v = state.kw.verify_from(&token, origin).await?;
            state.metrics.verification("admin_basic", v.code.as_str());
            if let Some(key) = v.key().filter(|k| k.key_type == keyward::ApiKeyType::Secret) {
                if v.is_valid() {
                    return Ok(Caller {
                        actor: Actor::key(key),
                        by_cookie: false,
                    });
                }
                if v.code == keyward::VerifyCode::ForbiddenOrigin {
                    return Err(forbidden(FORBIDDEN_ORIGIN));
                }
            }
        }
    }
    if let Some(token) = session_token(headers)
        && let Some(mut actor) = state.actor_from_jwt(token).await?
    {
        actor.by_cookie = true;
        return Ok(actor);
    }
    Err(ApiError::Unauthorized(if secret_as_bearer {
        BEARER_SECRET
    } else {
        UNAUTHORIZED
    }))
}

pub(crate) fn authorization(headers: &HeaderMap) -> Option<(&str, &str)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, credential) = value.split_once(' ')?;
    Some((scheme, credential.trim()))
}

/// The secret token of a request's `Authorization: Basic …` header, if it carries one.
pub fn basic_secret_of(headers: &HeaderMap) -> Option<String> {
    let (scheme, credential) = authorization(headers)?;
    scheme
        .eq_ignore_ascii_case("basic")
        .then(|| basic_secret(credential))
        .flatten()
}

/// Whether a string looks like a secret key's token: `sk_…`, or a restricted key's `rk_…`.
fn is_secret_token(s: &str) -> bool {
    s.starts_with("sk_") || keyward::token::is_restricted(s)
}

/// The secret token in a Basic credential: raw `sk_…`/`rk_…`, or base64 of it (with or
/// without a trailing `:`).
fn basic_secret(credential: &str) -> Option<String> {
    if is_secret_token(credential) {
        return Some(credential.to_owned());
    }
    let decoded = String::from_utf8(STANDARD.decode(credential).ok()?).ok()?;
    let user = decoded.split(':').next()?;
    is_secret_token(user).then(|| user.to_owned())
}

/// The session cookie's token, if the request carries one.
pub fn session_token(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, &[SESSION_COOKIE, SECURE_SESSION_COOKIE])
}

/// The value of the first cookie named one of `names`.
pub fn cookie<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| names.contains(name))
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_and_v1_trees_are_protected_and_nothing_else() {
        for p in ["/admin", "/admin/", "/admin/api-keys", "/v1", "/v1/keys/verify"] {
            assert!(is_protected(p), "{p}");
        }
        for p in [
            "/administrator",
            "/v10",
            "/store/regions",
            "/auth/session",
            "/health",
            "/",
        ] {
            assert!(!is_protected(p), "{p}");
        }
    }

    #[test]
    fn basic_credentials_in_every_medusa_form() {
        let sk = "sk_abc";
        assert_eq!(basic_secret(sk).as_deref(), Some(sk));
        assert_eq!(basic_secret(&STANDARD.encode("sk_abc:")).as_deref(), Some(sk));
        assert_eq!(basic_secret(&STANDARD.encode("sk_abc")).as_deref(), Some(sk));
        assert_eq!(basic_secret(&STANDARD.encode("rk_abc:")).as_deref(), Some("rk_abc"));
        assert_eq!(basic_secret(&STANDARD.encode("user:pass")), None);
        assert_eq!(basic_secret("%%%"), None);
    }
}
