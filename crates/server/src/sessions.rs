//! Sign-in and sessions: a password login answers a login token (and sets the device cookie
//! that keeps the owner's own allowance, see [`crate::limits`]); `POST /auth/session` turns a
//! token into the HttpOnly session cookie; `DELETE /auth/session` ends the session everywhere.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::{HeaderValue, SET_COOKIE};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::{self, Caller, SESSION_COOKIE};
use crate::error::{self, ApiError, ApiResult};
use crate::extract::Typed;
use crate::wire::LoginBody;
use crate::{AppState, client, csrf, jwt};

impl AppState {
    /// The actor a login token names, if it verifies.
    /// The session a login token names, if its signature, claims and expiry hold.
    pub fn session_of(&self, token: &str) -> Option<(String, String)> {
        let claims = self.jwt.verify(token, self.now_seconds())?;
        if claims.get("actor_type")?.as_str()? != "user" {
            return None;
        }
        let id = claims.get("actor_id")?.as_str()?.to_owned();
        let sid = claims.get("sid")?.as_str()?.to_owned();
        Some((id, sid))
    }

    /// The user a login token stands for, while its session is live (ended by a logout, a
    /// deletion of the user or a change of its password).
    pub async fn actor_from_jwt(&self, token: &str) -> keyward::Result<Option<Caller>> {
        let Some((id, sid)) = self.session_of(token) else {
            return Ok(None);
        };
        if !self.kw.session_is_live(&sid).await? {
            return Ok(None);
        }
        Ok(Some(Caller {
            actor: keyward::Actor::user(id),
            by_cookie: false,
        }))
    }
}

/// `POST /auth/user/emailpass {email, password}` → `{token}`.
#[utoipa::path(post, path = "/auth/user/emailpass", tag = "auth", summary = "Sign in with email and password; returns a login token (JWT)", security(()), request_body = crate::wire::LoginBody, responses((status = 200, description = "{token}", body = crate::wire::LoginAnswer), (status = 400, description = "Invalid request: email or password given as something other than a string", body = crate::wire::ErrorBody), (status = 401, description = "Invalid email or password, or one of them missing (as Medusa answers)", body = crate::wire::ErrorBody), (status = 429, description = "Too many failed attempts", body = crate::wire::ErrorBody)))]
pub(crate) async fn login(
    State(state): State<AppState>,
    axum::Extension(client): axum::Extension<client::ClientAddr>,
    headers: HeaderMap,
    Typed(body): Typed<LoginBody>,
) -> ApiResult<Response> {
    let refused = |m: &str| ApiError::Module(keyward::Error::new(keyward::ErrorKind::Unauthorized, m));
    // A missing field is Medusa's 401; a field of another type is a malformed request (400).
    let text = |v: Option<Value>, name: &str, missing: &str| match v {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(refused(missing)),
        Some(_) => Err(ApiError::invalid(format!("Invalid request: {name} must be a string"))),
    };
    let email = text(body.email, "email", "Email should be a string")?;
    let password = text(body.password, "password", "Password should be a string")?;
    // A client that signed in as this email before keeps its own allowance.
    let device = auth::cookie(&headers, &[auth::DEVICE_COOKIE, auth::SECURE_DEVICE_COOKIE])
        .and_then(|c| state.jwt.device_of(c, &email));
    // Counted before the password is checked, so a burst cannot get more guesses evaluated.
    state
        .limiter
        .attempt(client.ip, &email, device)
        .map_err(ApiError::TooManyFailures)?;
    let user = state
        .kw
        .authenticate_user(&email, &password)
        .await?
        .ok_or_else(|| refused("Invalid email or password"))?;
    state.limiter.succeeded(client.ip, &email, device);
    let sid = state.kw.start_session(&user.id, jwt::TOKEN_TTL_SECONDS).await?;
    let token = state
        .jwt
        .user_token(user.id.as_str(), &sid, state.now_seconds())
        .ok_or_else(|| ApiError::Module(keyward::Error::unexpected("could not sign a login token")))?;
    let mut res = Json(json!({ "token": token })).into_response();
    let nonce = match device {
        Some(n) => n.to_owned(),
        None => new_nonce()?,
    };
    if let Some(value) = state.jwt.device_cookie(&email, &nonce) {
        let https = csrf::is_https(&state, &headers, client.peer_trusted);
        let (name, secure) = if https {
            (auth::SECURE_DEVICE_COOKIE, "; Secure")
        } else {
            (auth::DEVICE_COOKIE, "")
        };
        let cookie =
            format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={DEVICE_COOKIE_SECONDS}{secure}");
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            res.headers_mut().insert(SET_COOKIE, v);
        }
    }
    Ok(res)
}

/// How long a device cookie keeps its client's login allowance: a year.
const DEVICE_COOKIE_SECONDS: u64 = 365 * 24 * 3600;

/// 128 random bits, URL-safe: a device cookie's nonce.
fn new_nonce() -> ApiResult<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Module(keyward::Error::unexpected(format!("no random source: {e}"))))?;
    Ok(base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        bytes,
    ))
}

/// `POST /auth/session` with a Bearer login token: sets the HttpOnly session cookie.
#[utoipa::path(post, path = "/auth/session", tag = "auth", summary = "Turn a Bearer login token into an HttpOnly session cookie", security(("bearer" = [])), responses((status = 200, description = "Session started", body = crate::wire::SessionAnswer), (status = 401, description = "Unauthorized", body = crate::wire::ErrorBody)))]
pub(crate) async fn create_session(
    State(state): State<AppState>,
    axum::Extension(client): axum::Extension<client::ClientAddr>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let token = auth::authorization(&headers)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token)
        .ok_or(ApiError::Unauthorized(error::UNAUTHORIZED))?;
    let actor = state
        .actor_from_jwt(token)
        .await?
        .ok_or(ApiError::Unauthorized(error::UNAUTHORIZED))?;
    let cookie = if csrf::is_https(&state, &headers, client.peer_trusted) {
        format!(
            "{}={token}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
            auth::SECURE_SESSION_COOKIE,
            jwt::TOKEN_TTL_SECONDS
        )
    } else {
        format!(
            "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
            jwt::TOKEN_TTL_SECONDS
        )
    };
    let mut res = Json(json!({"user": {"id": actor.id()}})).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(SET_COOKIE, v);
    }
    Ok(res)
}

/// `DELETE /auth/session`: clears the cookie.
#[utoipa::path(delete, path = "/auth/session", tag = "auth", summary = "End the session", security(()), responses((status = 200, description = "Session ended", body = crate::wire::SessionAnswer), (status = 403, description = "A logout by cookie from another origin", body = crate::wire::ErrorBody), (status = 415, description = "A logout by cookie with a body that is not JSON", body = crate::wire::ErrorBody)))]
pub(crate) async fn delete_session(State(state): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    // A logout by cookie is a change the browser could be made to send from another site: it
    // is checked like every other cookie change.
    // A valid Bearer login token names the session to end; otherwise the cookie does, and then
    // the logout is a change the browser could be made to send from another site: it is checked
    // like every other cookie change (a bogus Bearer header beside the cookie changes nothing).
    let bearer = auth::authorization(&headers)
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|(_, t)| state.session_of(t));
    let session = match bearer {
        Some(s) => Some(s),
        None => match auth::session_token(&headers) {
            Some(cookie) => {
                if let Err(refused) = csrf::check(&state, &axum::http::Method::DELETE, &headers) {
                    return Ok(refused);
                }
                state.session_of(cookie)
            }
            None => None,
        },
    };
    // The session ends for every copy of its token, on every node, not only in this browser.
    if let Some((_, sid)) = session {
        state.kw.end_session(&sid).await?;
    }
    let mut res = Json(json!({"success": true})).into_response();
    for cleared in [
        format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"),
        format!(
            "{}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0",
            auth::SECURE_SESSION_COOKIE
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cleared) {
            res.headers_mut().append(SET_COOKIE, v);
        }
    }
    Ok(res)
}
