//! The store side: every `/store/*` route needs a valid publishable key in
//! `x-publishable-api-key`, and the verification API for other services. Both use the module's
//! one verification path.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use keyward::{SalesChannelId, Verification};
use serde_json::{Value, json};

use crate::AppState;
use crate::client::ClientAddr;
use crate::error::{ApiError, ApiResult};
use crate::extract::Typed;
use crate::wire::VerifyBody;

pub const HEADER: &str = "x-publishable-api-key";

/// The publishable key a store request was verified with.
#[derive(Debug, Clone)]
pub struct PublishableKey {
    pub verification: Verification,
}

impl PublishableKey {
    pub fn sales_channel_ids(&self) -> &[SalesChannelId] {
        self.verification.sales_channel_ids()
    }
}

pub async fn require_publishable_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let record = |code| state.metrics.verification("store", code);
    let origin = crate::client::origin(req.extensions());
    match crate::layers::check_publishable_recorded(&state.kw, req.headers(), origin, &record).await {
        Ok(key) => {
            req.extensions_mut().insert(key);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

/// `GET /store/sales-channels`: the channels the key may see.
#[utoipa::path(get, path = "/store/sales-channels", tag = "store", summary = "The sales channels of the calling publishable key", security(("publishable_key" = [])), responses((status = 200, description = "{sales_channels}", body = crate::wire::StoreChannels), (status = 400, description = "Missing or invalid publishable key", body = crate::wire::ErrorBody)))]
pub async fn sales_channels(
    State(state): State<AppState>,
    axum::Extension(key): axum::Extension<PublishableKey>,
) -> ApiResult<Response> {
    #[derive(serde::Serialize)]
    struct Channels<'a> {
        sales_channels: &'a [std::sync::Arc<keyward::SalesChannel>],
    }
    let channels = state.kw.sales_channels_by_id(key.sales_channel_ids()).await?;
    Ok(Json(Channels {
        sales_channels: &channels,
    })
    .into_response())
}

/// `GET /store/regions`: keyward holds no regions; the route exists so storefront clients see
/// the same key check as on a commerce server.
#[utoipa::path(get, path = "/store/regions", tag = "store", summary = "Regions (keyward holds none): the key check only", security(("publishable_key" = [])), responses((status = 200, description = "{regions, count, offset, limit}", body = crate::wire::EmptyPage), (status = 400, description = "Missing or invalid publishable key", body = crate::wire::ErrorBody)))]
pub async fn regions() -> Json<Value> {
    Json(json!({"regions": [], "count": 0, "offset": 0, "limit": 50}))
}

/// `GET /store/products`: keyward holds no catalogue, but applies the key's sales-channel scope
/// exactly as a catalogue route must (see [`keyward::Verification::scope`]).
#[utoipa::path(get, path = "/store/products", tag = "store", summary = "Products (keyward holds none): the key and sales-channel scope checks only", security(("publishable_key" = [])), params(("sales_channel_id" = Option<String>, Query, description = "Must be one of the key's channels")), responses((status = 200, description = "{products, count, offset, limit}", body = crate::wire::EmptyPage), (status = 400, description = "Missing or invalid key, or channel out of scope", body = crate::wire::ErrorBody)))]
pub async fn products(
    axum::Extension(key): axum::Extension<PublishableKey>,
    crate::extract::Query(q): crate::extract::Query,
) -> ApiResult<Json<Value>> {
    let requested: Vec<SalesChannelId> = match q.get("sales_channel_id") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![channel(s)?],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(channel)
            .collect::<ApiResult<_>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid request: Expected type: 'string' for field 'sales_channel_id'",
            ));
        }
    };
    key.verification.scope(&requested)?;
    Ok(Json(json!({"products": [], "count": 0, "offset": 0, "limit": 50})))
}

fn channel(s: &str) -> ApiResult<SalesChannelId> {
    crate::extract::parse_id(s)
}

/// The verdict, serialized straight from the verification (field order as documented).
#[derive(serde::Serialize)]
struct Verdict<'a> {
    valid: bool,
    code: keyward::VerifyCode,
    sales_channel_ids: &'a [SalesChannelId],
    permissions: Option<&'a [keyward::Permission]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    api_key: Option<VerdictKey<'a>>,
}

#[derive(serde::Serialize)]
struct VerdictKey<'a> {
    id: &'a keyward::ApiKeyId,
    #[serde(rename = "type")]
    key_type: keyward::ApiKeyType,
    title: &'a str,
    redacted: &'a str,
    revoked_at: Option<keyward::Timestamp>,
    last_used_at: Option<keyward::Timestamp>,
    created_at: keyward::Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<keyward::Timestamp>,
    #[serde(flatten)]
    policy: &'a keyward::KeyPolicy,
}

/// `POST /v1/keys/verify {key, ip?, permissions?}` → always 200 with the verdict. A key with
/// `allowed_ips` is judged from `ip` when given (the address the key was presented from, for a
/// service that verifies on its clients' behalf), else from the caller's own address; with
/// `permissions` (a query such as `orders:read AND (orders:write OR refunds:write)`) a valid key
/// lacking them answers `INSUFFICIENT_PERMISSIONS`.
#[utoipa::path(post, path = "/v1/keys/verify", tag = "verification", summary = "Verify a key: always 200 with valid, code (VALID NOT_FOUND REVOKED EXPIRED MALFORMED FORBIDDEN_ORIGIN INSUFFICIENT_PERMISSIONS), the key's permissions and the key", request_body = crate::wire::VerifyBody, responses((status = 200, description = "{valid, code, api_key?, sales_channel_ids}", body = crate::wire::VerifyAnswer), crate::wire::Refusals))]
pub async fn verify_key(
    State(state): State<AppState>,
    Extension(client): Extension<ClientAddr>,
    Typed(body): Typed<VerifyBody>,
) -> ApiResult<Response> {
    let origin = match body.ip.as_deref() {
        Some(text) => Some(
            text.trim()
                .parse::<std::net::IpAddr>()
                .map_err(|_| ApiError::invalid(format!("ip must be an IPv4 or IPv6 address, but got: '{text}'")))?,
        ),
        None => client.ip,
    };
    let query = body
        .permissions
        .as_deref()
        .map(keyward::PermissionQuery::parse)
        .transpose()
        .map_err(|e| ApiError::invalid(format!("Invalid request: {}", e.message)))?;
    let mut v = state.kw.verify_from(&body.key, origin).await?;
    if let Some(q) = &query {
        v = v.requiring(q);
    }
    state.metrics.verification("verify_api", v.code.as_str());
    let verdict = Verdict {
        valid: v.is_valid(),
        code: v.code,
        sales_channel_ids: v.sales_channel_ids(),
        permissions: v.permissions(),
        api_key: v.key().map(|k| VerdictKey {
            id: &k.id,
            key_type: k.key_type,
            title: &k.title,
            redacted: &k.redacted,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
            created_at: k.created_at,
            expires_at: k.expires_at,
            policy: &k.policy,
        }),
    };
    Ok(Json(verdict).into_response())
}
