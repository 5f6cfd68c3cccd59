//! The answers as the OpenAPI document describes them. The envelopes (`{api_key}`, a page, a
//! delete's answer, `{user}`) are the very types the handlers return. A record inside them is
//! shaped by the `fields` a request selects, so any attribute may be absent: the handlers build
//! it as JSON, and its documented form (`ApiKeyRecord`, …) is checked by a test against the lists
//! the shaping uses, and by schemathesis against every answer.
#![allow(
    dead_code,
    reason = "the record types describe shaped JSON for the OpenAPI document; nothing reads their fields"
)]

use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoResponses, ToSchema};

use super::{KeyType, RunStateName};

/// An API key as the admin routes answer it. Which attributes appear follows `fields`; by
/// default all but `deleted_at`. A secret key's `token` is `""` except in the create and roll
/// answers, which carry it once.
#[derive(ToSchema)]
#[schema(example = json!({"id": "apk_01JD7Q4ZC5N7G8W6J2M3X0RB1T", "title": "Storefront", "token": "pk_2b8Lx0…", "redacted": "pk_2b8***x0k", "type": "publishable", "last_used_at": null, "updated_at": "2026-12-01T10:00:00.000Z", "created_at": "2026-12-01T10:00:00.000Z", "created_by": "user_01JD7Q3W2N", "revoked_at": null, "revoked_by": null}))]
pub struct ApiKeyRecord {
    id: Option<String>,
    title: Option<String>,
    token: Option<String>,
    redacted: Option<String>,
    #[serde(rename = "type")]
    #[schema(inline, nullable = false)]
    key_type: Option<KeyType>,
    #[schema(value_type = Option<String>, format = DateTime)]
    last_used_at: Option<Option<String>>,
    #[schema(format = DateTime, nullable = false)]
    updated_at: Option<String>,
    #[schema(format = DateTime, nullable = false)]
    created_at: Option<String>,
    created_by: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    revoked_at: Option<Option<String>>,
    #[schema(value_type = Option<String>)]
    revoked_by: Option<Option<String>>,
    /// When the key stops verifying on its own; present only for a key that expires
    #[schema(format = DateTime, nullable = false)]
    expires_at: Option<String>,
    /// The owner's JSON object; present only when set
    #[schema(nullable = false, value_type = Option<Object>)]
    metadata: Option<Value>,
    /// A restricted secret key's permissions; present only for a restricted key
    #[schema(nullable = false)]
    permissions: Option<Vec<String>>,
    /// The addresses the key works from; present only when limited
    #[schema(nullable = false)]
    allowed_ips: Option<Vec<String>>,
    #[schema(value_type = Option<String>, format = DateTime)]
    deleted_at: Option<Option<String>>,
    /// With `fields=*sales_channels`
    #[schema(no_recursion, nullable = false)]
    sales_channels: Option<Vec<SalesChannelRecord>>,
}

/// A sales channel as the admin routes answer it; attributes follow `fields`.
#[derive(ToSchema)]
#[schema(example = json!({"id": "sc_01JD7Q4ZC5N7G8W6J2M3X0RB1T", "name": "Webshop", "description": null, "is_disabled": false, "created_at": "2026-12-01T10:00:00.000Z", "updated_at": "2026-12-01T10:00:00.000Z", "deleted_at": null, "metadata": null}))]
pub struct SalesChannelRecord {
    id: Option<String>,
    name: Option<String>,
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    #[schema(nullable = false)]
    is_disabled: Option<bool>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Option<Value>>,
    #[schema(format = DateTime, nullable = false)]
    created_at: Option<String>,
    #[schema(format = DateTime, nullable = false)]
    updated_at: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    deleted_at: Option<Option<String>>,
    /// With `fields=*publishable_api_keys`
    #[schema(no_recursion, nullable = false)]
    publishable_api_keys: Option<Vec<ApiKeyRecord>>,
}

/// `{api_key}`.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyAnswer {
    #[schema(value_type = ApiKeyRecord)]
    pub api_key: Value,
}

/// A roll's answer: the new key (its token shown this once) and the old one.
#[derive(Serialize, ToSchema)]
pub struct RolledAnswer {
    #[schema(value_type = ApiKeyRecord)]
    pub api_key: Value,
    #[schema(value_type = ApiKeyRecord)]
    pub previous_api_key: Value,
}

/// A page of keys: `count` matches overall.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    #[schema(value_type = Vec<ApiKeyRecord>)]
    pub api_keys: Vec<Value>,
    pub count: u64,
    pub offset: u64,
    pub limit: u64,
}

/// `{sales_channel}`.
#[derive(Serialize, ToSchema)]
pub struct SalesChannelAnswer {
    #[schema(value_type = SalesChannelRecord)]
    pub sales_channel: Value,
}

/// A page of sales channels: `count` matches overall.
#[derive(Serialize, ToSchema)]
pub struct SalesChannelList {
    #[schema(value_type = Vec<SalesChannelRecord>)]
    pub sales_channels: Vec<Value>,
    pub count: u64,
    pub offset: u64,
    pub limit: u64,
}

/// A delete's answer (a delete of an unknown id answers the same).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"id": "apk_01JD7Q4ZC5N7G8W6J2M3X0RB1T", "object": "api_key", "deleted": true}))]
pub struct Deleted {
    pub id: String,
    /// `api_key` or `sales-channel`
    pub object: &'static str,
    pub deleted: bool,
}

impl Deleted {
    /// The answer to a delete of `id`, an `object`.
    pub fn of(id: impl ToString, object: &'static str) -> Self {
        Self {
            id: id.to_string(),
            object,
            deleted: true,
        }
    }
}

/// An admin user.
#[derive(ToSchema)]
pub struct UserRecord {
    id: String,
    email: String,
    first_name: Option<String>,
    last_name: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    #[schema(format = DateTime)]
    deleted_at: Option<String>,
}

/// `{user}`.
#[derive(Serialize, ToSchema)]
pub struct UserAnswer {
    #[schema(value_type = UserRecord)]
    pub user: Value,
}

/// Every refusal: `message` always; `type` (Medusa's `invalid_data`, `not_found`, `not_allowed`,
/// `duplicate_error`, `unauthorized`, …) on all but a failed admin authentication.
#[derive(ToSchema)]
#[schema(example = json!({"type": "invalid_data", "message": "Invalid request: Field 'title' is required"}))]
pub struct ErrorBody {
    #[serde(rename = "type")]
    #[schema(nullable = false)]
    kind: Option<String>,
    message: String,
    #[schema(nullable = false)]
    code: Option<String>,
}

/// The refusals every authenticated admin route documents.
#[derive(IntoResponses)]
pub enum Refusals {
    #[response(status = 400, description = "Invalid request")]
    Invalid(ErrorBody),
    #[response(status = 401, description = "Unauthorized")]
    Unauthorized(ErrorBody),
    #[response(
        status = 403,
        description = "Forbidden: a restricted key without the permission, or a key used from outside its allowed addresses"
    )]
    Forbidden(ErrorBody),
}

/// A route's record does not exist (listed beside [`Refusals`] by routes that name one).
#[derive(IntoResponses)]
#[response(status = 404, description = "Not found")]
pub struct NotFound(ErrorBody);

/// A sign-in's answer: a login token (JWT) for `Authorization: Bearer` or `POST /auth/session`.
#[derive(ToSchema)]
pub struct LoginAnswer {
    token: String,
}

/// A verdict's code.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCodeName {
    Valid,
    NotFound,
    Revoked,
    Expired,
    Malformed,
    ForbiddenOrigin,
    InsufficientPermissions,
}

/// The key a verdict names (no token).
#[derive(ToSchema)]
pub struct VerdictKeyRecord {
    id: String,
    #[serde(rename = "type")]
    #[schema(inline)]
    key_type: KeyType,
    title: String,
    redacted: String,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// Present only for a key that expires
    #[schema(format = DateTime, nullable = false)]
    expires_at: Option<String>,
    /// Present only when set
    #[schema(nullable = false, value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Present only for a restricted key
    #[schema(nullable = false)]
    permissions: Option<Vec<String>>,
    /// Present only for a key limited to some addresses
    #[schema(nullable = false)]
    allowed_ips: Option<Vec<String>>,
}

/// `POST /v1/keys/verify`'s answer, always 200: whether the key works, why not, and the key.
#[derive(ToSchema)]
#[schema(example = json!({"valid": true, "code": "VALID", "sales_channel_ids": ["sc_01JD7Q4ZC5N7G8W6J2M3X0RB1T"], "api_key": {"id": "apk_01JD7Q4ZC5N7G8W6J2M3X0RB1T", "type": "publishable", "title": "Storefront", "redacted": "pk_2b8***x0k", "revoked_at": null, "last_used_at": null, "created_at": "2026-12-01T10:00:00.000Z"}}))]
pub struct VerifyAnswer {
    valid: bool,
    #[schema(inline)]
    code: VerifyCodeName,
    sales_channel_ids: Vec<String>,
    /// The key's permissions (keyward's own and your own); null for an unrestricted secret
    /// key (it holds every permission), a publishable key, or no key
    permissions: Option<Vec<String>>,
    #[schema(nullable = false)]
    api_key: Option<VerdictKeyRecord>,
}

/// A store route's channels: the calling key's.
#[derive(ToSchema)]
pub struct StoreChannels {
    sales_channels: Vec<SalesChannelRecord>,
}

/// An empty page (keyward holds no regions or products).
#[derive(ToSchema)]
pub struct EmptyPage {
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    regions: Option<Vec<Value>>,
    #[schema(nullable = false, value_type = Option<Vec<Object>>)]
    products: Option<Vec<Value>>,
    count: u64,
    offset: u64,
    limit: u64,
}

/// A status: `ok`, `ready`, or `unavailable` with a message.
#[derive(ToSchema)]
pub struct Status {
    status: String,
    #[schema(nullable = false)]
    message: Option<String>,
}

/// A session started (`{user: {id}}`) or ended (`{success: true}`).
#[derive(ToSchema)]
pub struct SessionAnswer {
    #[schema(nullable = false, value_type = Option<Object>)]
    user: Option<Value>,
    #[schema(nullable = false)]
    success: Option<bool>,
}

/// One step of a run.
#[derive(ToSchema)]
pub struct StepRecord {
    step: String,
    position: u32,
    state: String,
    attempts: u32,
    error: Option<String>,
}

/// A workflow run, without its input, outputs or result (a create's result holds a token).
#[derive(ToSchema)]
pub struct RunRecord {
    workflow: String,
    transaction_id: String,
    #[schema(inline)]
    state: RunStateName,
    owner: Option<String>,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    #[schema(format = DateTime)]
    updated_at: Option<String>,
    #[schema(value_type = Vec<Object>)]
    errors: Vec<Value>,
    #[schema(value_type = Vec<Object>)]
    conflicts: Vec<Value>,
    compensations: u64,
    steps: Vec<StepRecord>,
}

/// `{workflow_runs, limit}`.
#[derive(ToSchema)]
pub struct RunList {
    workflow_runs: Vec<RunRecord>,
    limit: u32,
}

/// One subscriber's delivery of an event.
#[derive(ToSchema)]
pub struct DeliveryRecord {
    subscriber: String,
    state: String,
    attempts: u32,
    last_error: Option<String>,
    #[schema(format = DateTime)]
    next_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    delivered_at: Option<String>,
}

/// An event with its deliveries.
#[derive(ToSchema)]
pub struct EventRecord {
    id: String,
    name: String,
    #[schema(value_type = Object)]
    data: Value,
    #[schema(value_type = Object)]
    metadata: Value,
    #[schema(format = DateTime)]
    created_at: Option<String>,
    deliveries: Vec<DeliveryRecord>,
}

/// `{events, limit}`.
#[derive(ToSchema)]
pub struct EventList {
    events: Vec<EventRecord>,
    limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    fn properties<T: PartialSchema>() -> Vec<String> {
        let schema = serde_json::to_value(T::schema()).unwrap();
        schema["properties"].as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn the_documented_records_have_the_attributes_the_answers_are_shaped_from() {
        let mut key = crate::fields::KEY_FIELDS.to_vec();
        key.push("sales_channels");
        assert_eq!(properties::<ApiKeyRecord>(), key);
        let mut channel = crate::fields::CHANNEL_FIELDS.to_vec();
        channel.push("publishable_api_keys");
        let mut documented = properties::<SalesChannelRecord>();
        documented.sort();
        channel.sort();
        assert_eq!(documented, channel);
    }
}
