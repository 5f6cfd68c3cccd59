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

/// `POST /admin/api-keys`. A key expires when `expires_in` or `expires_at` (not both) says;
/// without either it never does.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Storefront", "type": "publishable"}))]
pub struct CreateKeyBody {
    pub title: String,
    #[serde(rename = "type")]
    #[schema(inline)]
    pub key_type: KeyType,
    /// Seconds from now until the key expires: a whole number, at least 1
    #[schema(nullable = false, value_type = Option<u64>, minimum = 1)]
    pub expires_in: Option<f64>,
    /// When the key expires (ISO 8601, in the future)
    #[schema(nullable = false, format = DateTime)]
    pub expires_at: Option<String>,
    /// A JSON object of yours: at most 50 keys (1–40 letters, digits or _ - . :), 4 KiB
    #[schema(nullable = false, value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// A restricted secret key (its token starts rk_): what it may do, e.g. ["keys:verify"].
    /// Never more than the caller holds. Without it a secret key may do everything.
    #[schema(nullable = false, example = json!(["api_keys:read"]))]
    pub permissions: Option<Vec<String>>,
    /// The addresses and CIDR blocks the key works from, e.g. ["203.0.113.0/24"]
    #[schema(nullable = false, example = json!(["203.0.113.0/24"]))]
    pub allowed_ips: Option<Vec<String>>,
}

/// `POST /admin/api-keys/{id}`: a new title, expiry, metadata, permissions (of a restricted
/// key) or allowed addresses (one is required, as Medusa requires the title).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"title": "Storefront (EU)"}))]
pub struct UpdateKeyBody {
    #[schema(nullable = false)]
    pub title: Option<String>,
    /// When the key expires (ISO 8601, in the future); null removes its expiry
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
    /// New metadata, replacing the old; null removes it
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Option<Map<String, Value>>>,
    /// New permissions of a restricted key (never more than the caller holds)
    #[schema(nullable = false)]
    pub permissions: Option<Vec<String>>,
    /// New allowed addresses; null allows every address again
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>)]
    pub allowed_ips: Option<Option<Vec<String>>>,
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
    /// The address the key was presented from, for keys with allowed_ips; without it, the
    /// address of the caller of this route
    #[schema(nullable = false, example = "203.0.113.7")]
    pub ip: Option<String>,
    /// The permissions the key must hold, as a query: names joined by AND and OR, with
    /// parentheses; a valid key without them answers valid: false, code
    /// INSUFFICIENT_PERMISSIONS
    #[schema(nullable = false, example = "orders:read AND (orders:write OR refunds:write)")]
    pub permissions: Option<String>,
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
        /// Filter on expires_at (ISO 8601, or null for keys that never expire)
        expires_at,
        /// Filter on top-level metadata keys holding a string: metadata[plan]=pro
        metadata,
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

mod answers;
pub use answers::*;
