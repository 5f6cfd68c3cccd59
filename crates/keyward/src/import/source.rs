//! The source: Medusa's rows as read, and the checks that turn them into keyward's types.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::{ApiKey, ApiKeyType, SalesChannel};
use crate::store::StoredKey;
use crate::time::Timestamp;
use crate::{legacy, token};

use super::Kind;

/// A live row of Medusa's `api_key` table, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedusaKey {
    pub id: String,
    /// A publishable key's token; a secret key's scrypt hash (hex).
    pub token: String,
    pub salt: String,
    pub redacted: String,
    pub title: String,
    pub key_type: String,
    pub last_used_at: Option<Timestamp>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub revoked_by: Option<String>,
    pub revoked_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

/// A live row of Medusa's `sales_channel` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedusaChannel {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_disabled: bool,
    pub metadata: Option<serde_json::Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A live row of Medusa's `publishable_api_key_sales_channel` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedusaLink {
    pub publishable_key_id: String,
    pub sales_channel_id: String,
}

/// What a Medusa database holds that concerns keys: its live rows, and how many rows it marks
/// deleted (left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedusaSnapshot {
    pub keys: Vec<MedusaKey>,
    pub channels: Vec<MedusaChannel>,
    pub links: Vec<MedusaLink>,
    pub deleted_keys: u64,
    pub deleted_channels: u64,
    pub deleted_links: u64,
}

/// A link of the source left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub kind: Kind,
    pub id: String,
    pub reason: String,
}

/// The source in keyward's types: every row checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSet {
    pub keys: Vec<StoredKey>,
    pub channels: Vec<SalesChannel>,
    pub links: Vec<(ApiKeyId, SalesChannelId)>,
    /// Links that point at no live key or channel of the source, or at a secret key.
    pub skipped: Vec<Skipped>,
    pub deleted_keys: u64,
    pub deleted_channels: u64,
    pub deleted_links: u64,
}

fn bad_key(id: &str, what: impl std::fmt::Display) -> Error {
    Error::invalid_data(format!("api_key row {id:?}: {what}; nothing was imported"))
}

fn bad_channel(id: &str, what: impl std::fmt::Display) -> Error {
    Error::invalid_data(format!("sales_channel row {id:?}: {what}; nothing was imported"))
}

/// `pk_abc***xyz`: what Medusa (and keyward) store as `redacted`.
fn is_redaction(s: &str, kind: ApiKeyType) -> bool {
    let b = s.as_bytes();
    b.len() == 12 && s.starts_with(kind.token_prefix()) && &b[6..9] == b"***"
}

impl ImportSet {
    /// Checks every row of `source`; the first bad one refuses the whole snapshot, by name.
    pub fn from_medusa(source: MedusaSnapshot) -> Result<Self> {
        let mut keys = Vec::with_capacity(source.keys.len());
        for row in source.keys {
            keys.push(checked_key(row)?);
        }
        let channels = source
            .channels
            .into_iter()
            .map(checked_channel)
            .collect::<Result<Vec<_>>>()?;
        let key_types: HashMap<&str, ApiKeyType> = keys.iter().map(|k| (k.key.id.as_str(), k.key.key_type)).collect();
        let channel_ids: HashSet<&str> = channels.iter().map(|c| c.id.as_str()).collect();
        let mut links = Vec::with_capacity(source.links.len());
        let mut skipped = Vec::new();
        for l in source.links {
            let name = format!("{} → {}", l.publishable_key_id, l.sales_channel_id);
            let reason = match key_types.get(l.publishable_key_id.as_str()) {
                None => Some("its key is not a live row of the source"),
                Some(ApiKeyType::Secret) => Some("its key is a secret key"),
                Some(ApiKeyType::Publishable) if !channel_ids.contains(l.sales_channel_id.as_str()) => {
                    Some("its sales channel is not a live row of the source")
                }
                Some(ApiKeyType::Publishable) => None,
            };
            match reason {
                Some(reason) => skipped.push(Skipped {
                    kind: Kind::Link,
                    id: name,
                    reason: reason.to_owned(),
                }),
                None => links.push((
                    ApiKeyId::parse(&l.publishable_key_id).map_err(|e| Error::invalid_data(e.to_string()))?,
                    SalesChannelId::parse(&l.sales_channel_id).map_err(|e| Error::invalid_data(e.to_string()))?,
                )),
            }
        }
        links.sort();
        links.dedup();
        Ok(Self {
            keys,
            channels,
            links,
            skipped,
            deleted_keys: source.deleted_keys,
            deleted_channels: source.deleted_channels,
            deleted_links: source.deleted_links,
        })
    }
}

fn checked_channel(row: MedusaChannel) -> Result<SalesChannel> {
    let id = SalesChannelId::parse(&row.id).map_err(|e| bad_channel(&row.id, e))?;
    if row.name.trim().is_empty() {
        return Err(bad_channel(&row.id, "the name is empty"));
    }
    if row.metadata.as_ref().is_some_and(|m| !m.is_object()) {
        return Err(bad_channel(&row.id, "metadata is not a JSON object"));
    }
    Ok(SalesChannel {
        id,
        name: row.name,
        description: row.description,
        is_disabled: row.is_disabled,
        metadata: row.metadata,
        created_at: row.created_at,
        updated_at: row.updated_at,
        deleted_at: None,
    })
}

/// A publishable row's token: a `pk_` token matching its redacted form, and no salt.
fn checked_publishable(row: &MedusaKey) -> Result<String> {
    match token::parse(&row.token) {
        Ok(t) if t.kind() == ApiKeyType::Publishable => {}
        _ => return Err(bad_key(&row.id, "the token of a publishable key is not a pk_ token")),
    }
    if !row.salt.is_empty() {
        return Err(bad_key(&row.id, "a publishable key has a salt"));
    }
    if token::redact(&row.token) != row.redacted {
        return Err(bad_key(&row.id, "redacted does not match the token"));
    }
    Ok(row.token.clone())
}

/// A secret row: Medusa's salt and scrypt hash, of their shapes.
fn checked_secret(row: &MedusaKey) -> Result<()> {
    if !legacy::is_salt(&row.salt) {
        return Err(bad_key(
            &row.id,
            format_args!(
                "salt {:?} is not {} lower-case hexadecimal characters (Medusa's scrypt salt)",
                row.salt,
                legacy::SALT_HEX_LEN
            ),
        ));
    }
    if !legacy::is_hash(&row.token) {
        // The column's content is not shown: it may be a secret in some other form.
        return Err(bad_key(
            &row.id,
            format_args!(
                "the token column does not hold a Medusa scrypt hash ({} lower-case hexadecimal characters)",
                legacy::HASH_HEX_LEN
            ),
        ));
    }
    Ok(())
}

pub(super) fn checked_key(row: MedusaKey) -> Result<StoredKey> {
    let id = ApiKeyId::parse(&row.id).map_err(|e| bad_key(&row.id, e))?;
    let kind: ApiKeyType = row.key_type.parse().map_err(|_| {
        bad_key(
            &row.id,
            format_args!("type {:?} is neither 'publishable' nor 'secret'", row.key_type),
        )
    })?;
    if !is_redaction(&row.redacted, kind) {
        return Err(bad_key(
            &row.id,
            format_args!(
                "redacted {:?} is not of the form {}abc***xyz",
                row.redacted,
                kind.token_prefix()
            ),
        ));
    }
    let (public_token, salt) = match kind {
        ApiKeyType::Publishable => (checked_publishable(&row)?, String::new()),
        ApiKeyType::Secret => {
            checked_secret(&row)?;
            (String::new(), row.salt.clone())
        }
    };
    Ok(StoredKey {
        key: ApiKey {
            id,
            token: public_token,
            redacted: row.redacted,
            title: row.title,
            key_type: kind,
            last_used_at: row.last_used_at,
            created_by: row.created_by,
            revoked_by: row.revoked_by,
            revoked_at: row.revoked_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: None,
            // Medusa's keys never expire.
            expires_at: None,
            policy: Default::default(),
        },
        stored_token: row.token,
        salt,
    })
}
