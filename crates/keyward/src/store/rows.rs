//! Rows as the stores read them.
//!
//! Both stores read the same columns; only the type of an instant differs (INTEGER milliseconds
//! on SQLite, timestamptz on Postgres). The rows are generic over that type so the mapping to
//! domain types is written once.

use crate::error::Result;
use crate::model::{ApiKey, ApiKeyType, SalesChannel, User};
use crate::time::Timestamp;

use super::{StoredKey, StoredUser};

/// An instant as a store keeps it.
pub trait StoredInstant {
    fn into_timestamp(self) -> Result<Timestamp>;
}

impl StoredInstant for i64 {
    fn into_timestamp(self) -> Result<Timestamp> {
        Timestamp::from_millis(self)
            .ok_or_else(|| crate::Error::unexpected(format!("stored instant {self} is out of range")))
    }
}

impl StoredInstant for chrono::DateTime<chrono::Utc> {
    fn into_timestamp(self) -> Result<Timestamp> {
        Ok(Timestamp::from_datetime(self))
    }
}

fn opt_instant<T: StoredInstant>(t: Option<T>) -> Result<Option<Timestamp>> {
    t.map(StoredInstant::into_timestamp).transpose()
}

/// Parses an id read from the store (a bad one is data corruption, not the caller's fault).
pub fn stored_id<I: TryFrom<String, Error = crate::id::InvalidId>>(s: String) -> Result<I> {
    I::try_from(s.clone()).map_err(|e| crate::Error::unexpected(format!("stored id {s:?}: {e}")))
}

/// An `api_key` row.
#[derive(Debug, sqlx::FromRow)]
pub struct KeyRow<T> {
    pub id: String,
    pub token: String,
    pub salt: String,
    pub redacted: String,
    pub title: String,
    #[sqlx(rename = "type")]
    pub key_type: String,
    pub last_used_at: Option<T>,
    pub created_by: String,
    pub revoked_by: Option<String>,
    pub revoked_at: Option<T>,
    pub created_at: T,
    pub updated_at: T,
    pub deleted_at: Option<T>,
    pub expires_at: Option<T>,
    pub metadata: Option<serde_json::Value>,
    pub permissions: Option<serde_json::Value>,
    pub allowed_ips: Option<serde_json::Value>,
}

impl<T: StoredInstant> KeyRow<T> {
    pub fn into_stored(self) -> Result<StoredKey> {
        let key_type: ApiKeyType = self
            .key_type
            .parse()
            .map_err(|e: crate::model::UnknownKeyType| crate::Error::unexpected(e.to_string()))?;
        let key = ApiKey {
            id: stored_id(self.id)?,
            // A secret key's stored form never leaves the store in an ApiKey.
            token: match key_type {
                ApiKeyType::Publishable => self.token.clone(),
                ApiKeyType::Secret => String::new(),
            },
            redacted: self.redacted,
            title: self.title,
            key_type,
            last_used_at: opt_instant(self.last_used_at)?,
            created_by: self.created_by,
            revoked_by: self.revoked_by,
            revoked_at: opt_instant(self.revoked_at)?,
            created_at: self.created_at.into_timestamp()?,
            updated_at: self.updated_at.into_timestamp()?,
            deleted_at: opt_instant(self.deleted_at)?,
            expires_at: opt_instant(self.expires_at)?,
            policy: crate::model::KeyPolicy::from_columns(self.metadata, self.permissions, self.allowed_ips)?,
        };
        Ok(StoredKey {
            key,
            stored_token: self.token,
            salt: self.salt,
        })
    }

    pub fn into_key(self) -> Result<ApiKey> {
        self.into_stored().map(|s| s.key)
    }
}

/// A `sales_channel` row.
#[derive(Debug, sqlx::FromRow)]
pub struct ChannelRow<T> {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_disabled: bool,
    pub metadata: Option<serde_json::Value>,
    pub created_at: T,
    pub updated_at: T,
    pub deleted_at: Option<T>,
}

impl<T: StoredInstant> ChannelRow<T> {
    pub fn into_channel(self) -> Result<SalesChannel> {
        Ok(SalesChannel {
            id: stored_id(self.id)?,
            name: self.name,
            description: self.description,
            is_disabled: self.is_disabled,
            metadata: self.metadata,
            created_at: self.created_at.into_timestamp()?,
            updated_at: self.updated_at.into_timestamp()?,
            deleted_at: opt_instant(self.deleted_at)?,
        })
    }
}

/// An `admin_user` row.
#[derive(Debug)]
pub struct UserRow<T> {
    pub id: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub password_hash: String,
    pub created_at: T,
    pub updated_at: T,
    pub deleted_at: Option<T>,
}

impl<T: StoredInstant> UserRow<T> {
    pub fn into_stored(self) -> Result<StoredUser> {
        Ok(StoredUser {
            user: User {
                id: stored_id(self.id)?,
                email: self.email,
                first_name: self.first_name,
                last_name: self.last_name,
                created_at: self.created_at.into_timestamp()?,
                updated_at: self.updated_at.into_timestamp()?,
                deleted_at: opt_instant(self.deleted_at)?,
            },
            password_hash: self.password_hash,
        })
    }
}

/// An `idempotency_key` row (the record's status as the store's integer type allows).
#[derive(Debug)]
pub struct IdempotencyRow {
    pub request_digest: String,
    pub status: Option<i64>,
    pub response: Option<String>,
}

impl IdempotencyRow {
    pub fn into_record(self) -> Result<crate::idempotency::IdempotencyRecord> {
        Ok(crate::idempotency::IdempotencyRecord {
            request_digest: self.request_digest,
            response: match (self.status, self.response) {
                (Some(status), Some(sealed)) => Some(crate::idempotency::StoredResponse {
                    status: u16::try_from(status)
                        .map_err(|_| crate::Error::unexpected(format!("stored status {status} is out of range")))?,
                    sealed,
                }),
                _ => None,
            },
        })
    }
}

/// Parses ids read from the store.
pub fn stored_ids<I: TryFrom<String, Error = crate::id::InvalidId>>(
    ids: impl IntoIterator<Item = String>,
) -> Result<Vec<I>> {
    ids.into_iter().map(stored_id).collect()
}

/// Parses `(owner, item)` id pairs read from a link table.
pub fn stored_pairs<O, I>(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Vec<(O, I)>>
where
    O: TryFrom<String, Error = crate::id::InvalidId>,
    I: TryFrom<String, Error = crate::id::InvalidId>,
{
    pairs
        .into_iter()
        .map(|(o, i)| Ok((stored_id(o)?, stored_id(i)?)))
        .collect()
}
