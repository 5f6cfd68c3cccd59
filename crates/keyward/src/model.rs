//! The records keyward keeps, in the shapes Medusa's API returns them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::{ApiKeyId, SalesChannelId, UserId};
use crate::policy::{Cidr, Metadata, Permission};
use crate::time::Timestamp;
use crate::token::PlainToken;

/// Publishable keys are public and scope a storefront to sales channels; secret keys authenticate
/// admin callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiKeyType {
    Publishable,
    Secret,
}

impl ApiKeyType {
    pub const ALL: [ApiKeyType; 2] = [ApiKeyType::Publishable, ApiKeyType::Secret];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiKeyType::Publishable => "publishable",
            ApiKeyType::Secret => "secret",
        }
    }

    pub fn token_prefix(self) -> &'static str {
        match self {
            ApiKeyType::Publishable => "pk_",
            ApiKeyType::Secret => "sk_",
        }
    }
}

impl fmt::Display for ApiKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is neither `publishable` nor `secret`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Expected: 'publishable, secret' for field 'type', but got: '{0}'")]
pub struct UnknownKeyType(pub String);

impl FromStr for ApiKeyType {
    type Err = UnknownKeyType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "publishable" => Ok(ApiKeyType::Publishable),
            "secret" => Ok(ApiKeyType::Secret),
            other => Err(UnknownKeyType(other.to_owned())),
        }
    }
}

/// An API key as every read returns it. For a secret key `token` is always `""`: the stored
/// digest never leaves the store, and `salt` is not part of the type at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub token: String,
    pub redacted: String,
    pub title: String,
    #[serde(rename = "type")]
    pub key_type: ApiKeyType,
    pub last_used_at: Option<Timestamp>,
    pub created_by: String,
    pub revoked_by: Option<String>,
    pub revoked_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
    /// When the key stops verifying on its own; absent (and left out of answers, as Medusa
    /// has no such field) for a key that never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Metadata, permissions and allowed addresses; each left out of answers when unset.
    #[serde(flatten)]
    pub policy: KeyPolicy,
}

/// What a key may carry beyond Medusa's fields (see [`crate::policy`]). Unset fields change
/// nothing: such a key behaves as Medusa's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyPolicy {
    /// A JSON object of the owner's (at most 50 keys, 4 KiB). Boxed: every cached key holds a
    /// policy, and most have no metadata (72 bytes inline, 8 boxed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<Metadata>>,
    /// A restricted secret key's permissions; none is an unrestricted key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<Permission>>,
    /// The addresses the key works from; none is every address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Vec<Cidr>>,
}

impl KeyPolicy {
    /// Whether the key may be used from `origin`.
    pub fn allows_origin(&self, origin: Option<std::net::IpAddr>) -> bool {
        crate::policy::origin_allowed(self.allowed_ips.as_deref(), origin)
    }

    /// The three columns as JSON (none stays SQL NULL), in the order metadata, permissions,
    /// allowed_ips.
    pub fn columns(&self) -> [Option<serde_json::Value>; 3] {
        let json = |v: serde_json::Result<serde_json::Value>| v.ok();
        [
            self.metadata.as_deref().cloned().map(serde_json::Value::Object),
            self.permissions.as_ref().and_then(|p| json(serde_json::to_value(p))),
            self.allowed_ips.as_ref().and_then(|a| json(serde_json::to_value(a))),
        ]
    }

    /// Reads the three columns back.
    pub fn from_columns(
        metadata: Option<serde_json::Value>,
        permissions: Option<serde_json::Value>,
        allowed_ips: Option<serde_json::Value>,
    ) -> crate::Result<Self> {
        fn read<T: serde::de::DeserializeOwned>(
            column: &str,
            v: Option<serde_json::Value>,
        ) -> crate::Result<Option<T>> {
            v.filter(|v| !v.is_null())
                .map(|v| serde_json::from_value(v))
                .transpose()
                .map_err(|e| crate::Error::unexpected(format!("stored {column} does not read: {e}")))
        }
        Ok(Self {
            metadata: read::<Metadata>("metadata", metadata)?.map(Box::new),
            permissions: read("permissions", permissions)?,
            allowed_ips: read("allowed_ips", allowed_ips)?,
        })
    }

    /// Checks what a key is created with: metadata within bounds, permissions only on a secret
    /// key and at least one, an address list of one block at least.
    pub fn checked(mut self, key_type: ApiKeyType) -> crate::Result<Self> {
        if let Some(m) = &self.metadata {
            crate::policy::check_metadata(m)?;
        }
        if let Some(p) = self.permissions.take() {
            if key_type != ApiKeyType::Secret {
                return Err(crate::Error::invalid_data("Only secret keys carry permissions"));
            }
            self.permissions = Some(crate::policy::checked_permissions(p)?);
        }
        if let Some(a) = self.allowed_ips.take() {
            self.allowed_ips = Some(crate::policy::checked_allowed_ips(a)?);
        }
        Ok(self)
    }
}

impl ApiKey {
    /// Revoked at `now`: `revoked_at` is set and not in the future. A key whose revocation is
    /// scheduled keeps working until then.
    pub fn is_revoked_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_some_and(|at| at <= now)
    }

    /// Expired at `now`: `expires_at` is set and not in the future.
    pub fn is_expired_at(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The result of create (and roll): the key plus its plain token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedApiKey {
    pub key: ApiKey,
    pub token: PlainToken,
}

impl Serialize for CreatedApiKey {
    /// The create response: the key with its raw token, in Medusa's field order.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let k = &self.key;
        let mut st = s.serialize_struct("ApiKey", 12)?;
        st.serialize_field("id", &k.id)?;
        st.serialize_field("token", self.token.expose())?;
        st.serialize_field("redacted", &k.redacted)?;
        st.serialize_field("title", &k.title)?;
        st.serialize_field("type", &k.key_type)?;
        st.serialize_field("last_used_at", &k.last_used_at)?;
        st.serialize_field("created_by", &k.created_by)?;
        st.serialize_field("revoked_by", &k.revoked_by)?;
        st.serialize_field("revoked_at", &k.revoked_at)?;
        st.serialize_field("created_at", &k.created_at)?;
        st.serialize_field("updated_at", &k.updated_at)?;
        st.serialize_field("deleted_at", &k.deleted_at)?;
        optional_field(&mut st, "expires_at", &k.expires_at)?;
        optional_field(&mut st, "metadata", &k.policy.metadata)?;
        optional_field(&mut st, "permissions", &k.policy.permissions)?;
        optional_field(&mut st, "allowed_ips", &k.policy.allowed_ips)?;
        st.end()
    }
}

/// Writes a field only when it is set (keyward's own fields, absent from Medusa's answers).
fn optional_field<S: serde::ser::SerializeStruct, T: Serialize>(
    st: &mut S,
    name: &'static str,
    value: &Option<T>,
) -> Result<(), S::Error> {
    match value {
        Some(v) => st.serialize_field(name, v),
        None => st.skip_field(name),
    }
}

/// The longest `expires_in` a key is created with: a hundred years.
pub const MAX_EXPIRES_IN: i64 = 100 * 365 * 86_400;

/// When a key given `expires_in = seconds` at `now` expires: 1 s to [`MAX_EXPIRES_IN`] ahead,
/// or refused. One rule for create and update, the API and the CLI.
pub fn expiry_in(now: Timestamp, seconds: i64) -> crate::Result<Timestamp> {
    if !(1..=MAX_EXPIRES_IN).contains(&seconds) {
        return Err(crate::Error::invalid_data(format!(
            "expires_in must be between 1 and {MAX_EXPIRES_IN} seconds, but got: {seconds}"
        )));
    }
    Ok(now.plus_seconds(seconds))
}

/// What create takes for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateApiKey {
    pub title: String,
    #[serde(rename = "type")]
    pub key_type: ApiKeyType,
    #[serde(default)]
    pub created_by: String,
    /// Keep this id instead of generating one (imports, seeds).
    #[serde(default)]
    pub id: Option<ApiKeyId>,
    /// When the key expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Seconds from now until the key expires, instead of `expires_at`: planning turns it into
    /// that instant, so a resumed run acts on the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// Metadata, permissions (a restricted secret key) and allowed addresses.
    #[serde(flatten)]
    pub policy: KeyPolicy,
}

impl CreateApiKey {
    pub fn new(title: impl Into<String>, key_type: ApiKeyType, created_by: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            key_type,
            created_by: created_by.into(),
            id: None,
            expires_at: None,
            expires_in: None,
            policy: KeyPolicy::default(),
        }
    }
}

/// An update of keys: what is given changes, the rest stays. `expires_at: Some(None)` (JSON
/// `null`) removes the expiry.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpdateApiKey {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Option<Timestamp>>,
    /// New metadata (replacing the old whole); `null` removes it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Option<Metadata>>,
    /// New permissions of a restricted key (it stays restricted: a list, never `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<Permission>>,
    /// New allowed addresses; `null` allows every address again.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub allowed_ips: Option<Option<Vec<Cidr>>>,
}

impl UpdateApiKey {
    /// A new title, nothing else.
    pub fn title(title: impl Into<String>) -> Self {
        Self {
            title: Some(title.into()),
            ..Self::default()
        }
    }

    /// Whether it changes any of the policy fields.
    pub fn touches_policy(&self) -> bool {
        self.metadata.is_some() || self.permissions.is_some() || self.allowed_ips.is_some()
    }

    /// For each policy column (metadata, permissions, allowed_ips): whether this update sets it,
    /// and to what (none: NULL).
    pub fn policy_columns(&self) -> [(bool, Option<serde_json::Value>); 3] {
        let set = KeyPolicy {
            metadata: self.metadata.clone().flatten().map(Box::new),
            permissions: self.permissions.clone(),
            allowed_ips: self.allowed_ips.clone().flatten(),
        };
        let [metadata, permissions, allowed_ips] = set.columns();
        [
            (self.metadata.is_some(), metadata),
            (self.permissions.is_some(), permissions),
            (self.allowed_ips.is_some(), allowed_ips),
        ]
    }

    /// The policy a key has after this update, given the one it had.
    pub fn applied_to(&self, before: &KeyPolicy) -> KeyPolicy {
        KeyPolicy {
            metadata: match &self.metadata {
                Some(set) => set.clone().map(Box::new),
                None => before.metadata.clone(),
            },
            permissions: self.permissions.clone().or_else(|| before.permissions.clone()),
            allowed_ips: self.allowed_ips.clone().unwrap_or_else(|| before.allowed_ips.clone()),
        }
    }
}

/// What revoke takes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RevokeApiKey {
    pub revoked_by: String,
    /// Seconds from now; `None` or `<= 0` revokes at once.
    #[serde(default)]
    pub revoke_in: Option<i64>,
}

/// A sales channel: what a publishable key scopes a storefront to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesChannel {
    pub id: SalesChannelId,
    pub name: String,
    pub description: Option<String>,
    pub is_disabled: bool,
    pub metadata: Option<serde_json::Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}

/// What creating a sales channel takes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateSalesChannel {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub is_disabled: bool,
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub id: Option<SalesChannelId>,
}

/// A partial update of a sales channel; absent fields stay as they are. `Some(None)` clears a
/// field (JSON `null`), which survives a round trip through JSON (the workflow log).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UpdateSalesChannel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub description: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_disabled: Option<bool>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Option<serde_json::Value>>,
}

/// A field that is present is `Some`, even when it is `null`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// An admin user of the dashboard and admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}
