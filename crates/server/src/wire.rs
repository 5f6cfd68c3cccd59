//! The HTTP contract as types: every request body and query the API reads, and every answer it
//! documents. A request type is the one definition of what its route accepts: its OpenAPI schema
//! is derived from it, and [`crate::validate`] derives from that same schema the checks that
//! answer a bad request with Medusa's exact words, before serde reads the request into the type.
//!
//! Answers are built by the handlers (a key is shaped by the `fields` a request selects, so any
//! attribute may be absent); the answer types here describe them for the document, and a test
//! checks their attributes against the lists the shaping uses.

use serde::Deserialize;
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

// -- request bodies ------------------------------------------------------------------------------

/// A key's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Publishable,
    Secret,
}

impl From<KeyType> for keyward::ApiKeyType {
    fn from(t: KeyType) -> Self {
        match t {
            KeyType::Publishable => keyward::ApiKeyType::Publishable,
            KeyType::Secret => keyward::ApiKeyType::Secret,
        }
    }
}

/// `POST /admin/api-keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Storefront", "type": "publishable"}))]
pub struct CreateKeyBody {
    pub title: String,
    #[serde(rename = "type")]
    #[schema(inline)]
    pub key_type: KeyType,
}

/// `POST /admin/api-keys/{id}`: only the title can change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Storefront (EU)"}))]
pub struct UpdateKeyBody {
    pub title: String,
}

/// `POST /admin/api-keys/{id}/revoke` and `/roll`: revoke (the old key) now, or this many
/// seconds from now; `0` or less is now.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"revoke_in": 3600}))]
pub struct RevokeBody {
    #[schema(nullable = false)]
    pub revoke_in: Option<f64>,
}

impl RevokeBody {
    /// Whole seconds, saturating.
    pub fn seconds(&self) -> Option<i64> {
        self.revoke_in.map(|n| n.clamp(i64::MIN as f64, i64::MAX as f64) as i64)
    }
}

/// `POST /admin/api-keys/{id}/sales-channels`: channel ids to link and to unlink.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"add": ["sc_01JABCDEF0123456789ABCDEFG"], "remove": []}))]
pub struct LinkChannelsBody {
    #[schema(nullable = false)]
    pub add: Option<Vec<String>>,
    #[schema(nullable = false)]
    pub remove: Option<Vec<String>>,
}

/// `POST /admin/sales-channels`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Webshop", "description": "The EU storefront"}))]
pub struct CreateChannelBody {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[schema(nullable = false)]
    pub is_disabled: Option<bool>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

/// `POST /admin/sales-channels/{id}`: absent fields stay; `null` clears `description` and
/// `metadata`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"is_disabled": true}))]
pub struct UpdateChannelBody {
    #[schema(nullable = false)]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub description: Option<Option<String>>,
    #[schema(nullable = false)]
    pub is_disabled: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Option<Map<String, Value>>>,
}

/// A field that is present is `Some`, even when it is `null`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// `POST /auth/user/emailpass`. Anything but two strings is refused with 401, as Medusa does.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "admin@example.com", "password": "supersecret"}))]
pub struct LoginBody {
    /// A string
    pub email: Option<Value>,
    /// A string
    pub password: Option<Value>,
}

/// `POST /v1/keys/verify`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"key": "pk_2b8Lx0…"}))]
pub struct VerifyBody {
    pub key: String,
}

// -- queries -------------------------------------------------------------------------------------

/// `fields` of a read: a list replaces the defaults; `+f` adds, `-f` removes, `*relation`
/// expands a relation.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FieldsQuery {
    /// Fields to return: a list replaces the defaults; +f adds, -f removes, *relation expands
    pub fields: Option<String>,
}

/// Declares a list query: paging, order, selection and search, the filterable fields given
/// (each a value, a list, or operators), and the `$and`/`$or` groups.
macro_rules! list_query {
    ($(#[$doc:meta])* $name:ident, search: $search:tt, { $($(#[$fdoc:meta])* $field:ident $(as $rename:tt)?),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Deserialize, IntoParams)]
        #[serde(deny_unknown_fields)]
        #[into_params(parameter_in = Query)]
        pub struct $name {
            /// Fields to return: a list replaces the defaults; +f adds, -f removes, *relation expands
            pub fields: Option<String>,
            /// Rows to skip (default 0)
            #[param(value_type = Option<u64>, minimum = 0)]
            pub offset: Option<f64>,
            /// Rows to return (default 20)
            #[param(value_type = Option<u64>, minimum = 0)]
            pub limit: Option<f64>,
            /// Field to order by; -field for descending; several joined by commas
            pub order: Option<String>,
            /// Accepted for Medusa's clients; deleted records are gone
            pub with_deleted: Option<bool>,
            #[doc = $search]
            pub q: Option<String>,
            $(
                $(#[$fdoc])*
                $(#[serde(rename = $rename)])?
                pub $field: Option<Value>,
            )*
            /// Groups of filters that must all hold
            #[serde(rename = "$and")]
            pub and: Option<Value>,
            /// Groups of filters of which one must hold
            #[serde(rename = "$or")]
            pub or: Option<Value>,
        }
    };
}

list_query!(
    /// `GET /admin/api-keys`. Filters take a value, a list (`id[]=…`), or operators
    /// (`created_at[$gte]=…`, `title[$like]=…`; `$eq $ne $in $nin $lt $lte $gt $gte $like $ilike`).
    KeyListQuery,
    search: "Case-insensitive search in title and redacted token",
    {
        /// Key id (filter)
        id,
        /// Title (filter)
        title,
        /// A full token (filter); a secret key matches its own token only by equality
        token,
        /// publishable or secret (filter)
        key_type as "type",
        /// Filter on created_at (ISO 8601)
        created_at,
        /// Filter on updated_at (ISO 8601)
        updated_at,
        /// Filter on deleted_at (ISO 8601)
        deleted_at,
        /// Filter on revoked_at (ISO 8601, or null)
        revoked_at,
    }
);

list_query!(
    /// `GET /admin/sales-channels`; filters as for keys.
    ChannelListQuery,
    search: "Case-insensitive search in name and description",
    {
        /// Channel id (filter)
        id,
        /// Name (filter)
        name,
        /// Description (filter)
        description,
        /// true or false (filter)
        is_disabled,
        /// Filter on created_at (ISO 8601)
        created_at,
        /// Filter on updated_at (ISO 8601)
        updated_at,
        /// Filter on deleted_at (ISO 8601)
        deleted_at,
    }
);

/// A workflow run's state.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RunStateName {
    Running,
    Compensating,
    Done,
    Reverted,
    Failed,
}

/// `GET /admin/workflow-runs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs in this state
    #[param(inline)]
    pub state: Option<RunStateName>,
    /// Rows to return (default 20, at most 100)
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<f64>,
}

/// `GET /admin/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Rows to return (default 20, at most 100)
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100)]
    pub limit: Option<f64>,
}

// -- answers -------------------------------------------------------------------------------------

/// An API key as the admin routes answer it. Which attributes appear follows `fields`; by
/// default all but `deleted_at`. A secret key's `token` is `""` except in the create and roll
/// answers, which carry it once.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
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
    #[schema(value_type = Option<String>, format = DateTime)]
    deleted_at: Option<Option<String>>,
    /// With `fields=*sales_channels`
    #[schema(no_recursion, nullable = false)]
    sales_channels: Option<Vec<SalesChannelRecord>>,
}

/// A sales channel as the admin routes answer it; attributes follow `fields`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
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
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct ApiKeyAnswer {
    api_key: ApiKeyRecord,
}

/// A roll's answer: the new key (its token shown this once) and the old one.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct RolledAnswer {
    api_key: ApiKeyRecord,
    previous_api_key: ApiKeyRecord,
}

/// A page of keys: `count` matches overall.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct ApiKeyList {
    api_keys: Vec<ApiKeyRecord>,
    count: u64,
    offset: u64,
    limit: u64,
}

/// `{sales_channel}`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct SalesChannelAnswer {
    sales_channel: SalesChannelRecord,
}

/// A page of sales channels: `count` matches overall.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct SalesChannelList {
    sales_channels: Vec<SalesChannelRecord>,
    count: u64,
    offset: u64,
    limit: u64,
}

/// A delete's answer (a delete of an unknown id answers the same).
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
#[schema(example = json!({"id": "apk_01JD7Q4ZC5N7G8W6J2M3X0RB1T", "object": "api_key", "deleted": true}))]
pub struct Deleted {
    id: String,
    /// `api_key` or `sales-channel`
    object: String,
    deleted: bool,
}

/// An admin user.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
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
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct UserAnswer {
    user: UserRecord,
}

/// Every refusal: `message` always; `type` (Medusa's `invalid_data`, `not_found`, `not_allowed`,
/// `duplicate_error`, `unauthorized`, …) on all but a failed admin authentication.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
#[schema(example = json!({"type": "invalid_data", "message": "Invalid request: Field 'title' is required"}))]
pub struct ErrorBody {
    #[serde(rename = "type")]
    #[schema(nullable = false)]
    kind: Option<String>,
    message: String,
    #[schema(nullable = false)]
    code: Option<String>,
}

/// A sign-in's answer: a login token (JWT) for `Authorization: Bearer` or `POST /auth/session`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct LoginAnswer {
    token: String,
}

/// A verdict's code.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCodeName {
    Valid,
    NotFound,
    Revoked,
    Expired,
    Malformed,
}

/// The key a verdict names (no token).
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
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
}

/// `POST /v1/keys/verify`'s answer, always 200: whether the key works, why not, and the key.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
#[schema(example = json!({"valid": true, "code": "VALID", "sales_channel_ids": ["sc_01JD7Q4ZC5N7G8W6J2M3X0RB1T"], "api_key": {"id": "apk_01JD7Q4ZC5N7G8W6J2M3X0RB1T", "type": "publishable", "title": "Storefront", "redacted": "pk_2b8***x0k", "revoked_at": null, "last_used_at": null, "created_at": "2026-12-01T10:00:00.000Z"}}))]
pub struct VerifyAnswer {
    valid: bool,
    #[schema(inline)]
    code: VerifyCodeName,
    sales_channel_ids: Vec<String>,
    #[schema(nullable = false)]
    api_key: Option<VerdictKeyRecord>,
}

/// A store route's channels: the calling key's.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct StoreChannels {
    sales_channels: Vec<SalesChannelRecord>,
}

/// An empty page (keyward holds no regions or products).
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
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
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct Status {
    status: String,
    #[schema(nullable = false)]
    message: Option<String>,
}

/// A session started (`{user: {id}}`) or ended (`{success: true}`).
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct SessionAnswer {
    #[schema(nullable = false, value_type = Option<Object>)]
    user: Option<Value>,
    #[schema(nullable = false)]
    success: Option<bool>,
}

/// One step of a run.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct StepRecord {
    step: String,
    position: u32,
    state: String,
    attempts: u32,
    error: Option<String>,
}

/// A workflow run, without its input, outputs or result (a create's result holds a token).
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
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
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
pub struct RunList {
    workflow_runs: Vec<RunRecord>,
    limit: u32,
}

/// One subscriber's delivery of an event.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
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
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
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
#[allow(dead_code, reason = "describes an answer for the OpenAPI document")]
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
