//! Verification: a token to a verdict from the cache (the digest), or on a miss from one indexed
//! read (after the checksum), Medusa's scrypt form upgraded on first use; `last_used_at` stamped
//! and flushed in batches.

use std::net::IpAddr;
use std::sync::Arc;

use crate::cache::{Cache, KeyRecord, TokenDigest};
use crate::error::{Error, Result};
use crate::id::SalesChannelId;
use crate::model::{ApiKey, ApiKeyType, SalesChannel};
use crate::policy::{Holds, Permission};
use crate::time::ClockExt;
use crate::time::Timestamp;
use crate::token;
use crate::token::TokenFormat;

use super::Keyward;

/// The answer to "is this token good?", for every caller (store check, admin auth, verify API).
/// Cheap to clone: it shares the cached record (a hit hands that one pointer over, nothing else).
#[derive(Debug, Clone)]
pub struct Verification {
    pub code: VerifyCode,
    record: Option<Arc<KeyRecord>>,
}

impl PartialEq for Verification {
    fn eq(&self, other: &Self) -> bool {
        self.code == other.code && self.key() == other.key() && self.sales_channel_ids() == other.sales_channel_ids()
    }
}

impl Eq for Verification {}

impl Verification {
    pub fn is_valid(&self) -> bool {
        self.code == VerifyCode::Valid
    }

    /// The key the token belongs to, when it belongs to one (also when revoked), as read from
    /// storage when its cache entry was filled (its `last_used_at` may be older than the last use).
    pub fn key(&self) -> Option<&Arc<ApiKey>> {
        self.record.as_ref().map(|r| &r.key)
    }

    /// The key's linked sales channels, when valid and publishable (else none).
    pub fn sales_channel_ids(&self) -> &[SalesChannelId] {
        match &self.record {
            Some(r) if self.is_valid() => &r.sales_channel_ids,
            _ => &[],
        }
    }

    /// The sales channels a store request may use: those it asks for (all must be the key's),
    /// or all the key's channels when it asks for none. A key with no channel may see nothing.
    pub fn scope(&self, requested: &[SalesChannelId]) -> Result<Vec<SalesChannelId>> {
        let own = self.sales_channel_ids();
        if own.is_empty() {
            return Err(Error::invalid_data(
                "Publishable key needs to have a sales channel configured",
            ));
        }
        if requested.iter().any(|r| !own.contains(r)) {
            return Err(Error::invalid_data(
                "Requested sales channel is not part of the publishable key",
            ));
        }
        Ok(if requested.is_empty() {
            own.to_vec()
        } else {
            requested.to_vec()
        })
    }

    fn refused(code: VerifyCode, record: Option<Arc<KeyRecord>>) -> Self {
        Self { code, record }
    }

    /// The key's permissions: a restricted key's list; `None` for an unrestricted secret key
    /// (it holds every permission), a publishable key or no key.
    pub fn permissions(&self) -> Option<&[Permission]> {
        self.key().and_then(|k| k.policy.permissions.as_deref())
    }

    /// This verdict for a caller that needs `query`: a valid secret key that does not satisfy
    /// it becomes `INSUFFICIENT_PERMISSIONS` (a publishable key holds no permission at all).
    pub fn requiring(mut self, query: &crate::policy::PermissionQuery) -> Self {
        let holds = match self.key() {
            Some(k) if k.key_type == ApiKeyType::Secret => Some(Holds::of(k.policy.permissions.as_deref())),
            _ => None,
        };
        if self.is_valid() && !holds.is_some_and(|h| query.satisfied_by(h)) {
            self.code = VerifyCode::InsufficientPermissions;
        }
        self
    }
}

/// Why a verification came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    Valid,
    NotFound,
    Revoked,
    Expired,
    Malformed,
    /// The key is good, but has an `allowed_ips` list the request's address is not in (or the
    /// address is unknown).
    ForbiddenOrigin,
    /// The key is good, but lacks the permissions the caller asked for.
    InsufficientPermissions,
}

impl VerifyCode {
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyCode::Valid => "VALID",
            VerifyCode::NotFound => "NOT_FOUND",
            VerifyCode::Revoked => "REVOKED",
            VerifyCode::Expired => "EXPIRED",
            VerifyCode::Malformed => "MALFORMED",
            VerifyCode::ForbiddenOrigin => "FORBIDDEN_ORIGIN",
            VerifyCode::InsufficientPermissions => "INSUFFICIENT_PERMISSIONS",
        }
    }
}

/// How close (ms) to the coarse clock a revocation or expiry must be for a verification to read
/// the precise clock; far more than the coarse clock's lag (one kernel tick).
const NEAR_MS: i64 = 1_000;

impl Keyward {
    /// The secret key this token belongs to, if it is valid now. Publishable tokens, unknown
    /// tokens, revoked keys and garbage all give `None`.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Arc<ApiKey>>> {
        self.authenticate_from(token, None).await
    }

    /// [`Keyward::authenticate`] for a request from `origin` (see [`Keyward::verify_from`]).
    pub async fn authenticate_from(&self, token: &str, origin: Option<IpAddr>) -> Result<Option<Arc<ApiKey>>> {
        let v = self.verify_from(token, origin).await?;
        Ok(match v.key() {
            Some(key) if v.is_valid() && key.key_type == ApiKeyType::Secret => Some(Arc::clone(key)),
            _ => None,
        })
    }

    /// Verifies a token of either type: the cache by the token's digest, then on a miss the
    /// checksum (garbage never reaches storage) and one indexed lookup by stored form. Only
    /// tokens that passed the checksum are ever cached, so a hit needs no checksum. The decision
    /// is made from the entry against the clock, so a scheduled revocation takes effect at its
    /// instant from a cached entry.
    ///
    /// The request's address is not known here: a key with an `allowed_ips` list is refused as
    /// `FORBIDDEN_ORIGIN` (use [`Keyward::verify_from`]).
    pub async fn verify(&self, raw: &str) -> Result<Verification> {
        self.verify_from(raw, None).await
    }

    /// [`Keyward::verify`] for a request from `origin`: a key with an `allowed_ips` list is
    /// valid only from an address inside it.
    pub async fn verify_from(&self, raw: &str, origin: Option<IpAddr>) -> Result<Verification> {
        let Some(kind) = token::claimed_kind(raw) else {
            return Ok(Verification::refused(VerifyCode::Malformed, None));
        };
        let digest = TokenDigest::of_token(raw);
        // Entries age, and uses are stamped, by the cheap clock; a revocation is judged by the
        // precise one, and only a key that has one reads it.
        let coarse = self.clock.coarse_now();
        let cache = self.store.cache();
        let record = match cache.key(&digest, coarse) {
            Some(cached) => cached,
            None => {
                let Ok(parsed) = token::parse(raw) else {
                    return Ok(Verification::refused(VerifyCode::Malformed, None));
                };
                // Boxed: the miss path's state stays out of the (hot) verification future.
                Box::pin(self.load_key(&parsed, digest, coarse)).await?
            }
        };
        let Some(record) = record.filter(|r| r.key.key_type == kind) else {
            return Ok(Verification::refused(VerifyCode::NotFound, None));
        };
        // Revocation and expiry are judged from the entry, so either takes effect at its instant
        // from a cached entry. The coarse clock trails the precise one by a tick at most, so an
        // instant more than a second past it is ahead of both: only a key whose revocation or
        // expiry is past or near reads the precise clock.
        let key = &record.key;
        let near = |at: Option<Timestamp>| at.is_some_and(|t| t.millis() <= coarse.millis().saturating_add(NEAR_MS));
        if near(key.revoked_at) || near(key.expires_at) {
            let now = self.now();
            let refused = if key.is_revoked_at(now) {
                Some(VerifyCode::Revoked)
            } else if key.is_expired_at(now) {
                Some(VerifyCode::Expired)
            } else {
                None
            };
            if let Some(code) = refused {
                return Ok(Verification::refused(code, Some(record)));
            }
        }
        if !key.policy.allows_origin(origin) {
            return Ok(Verification::refused(VerifyCode::ForbiddenOrigin, Some(record)));
        }
        cache.record_use(&record, coarse);
        Ok(Verification {
            code: VerifyCode::Valid,
            record: Some(record),
        })
    }

    /// Reads what the cache lacks for a token and keeps it (unless a change raced the read).
    async fn load_key(
        &self,
        parsed: &token::ParsedToken<'_>,
        digest: TokenDigest,
        now: Timestamp,
    ) -> Result<Option<Arc<KeyRecord>>> {
        let cache = self.store.cache();
        let mut fill = cache.begin_fill();
        let stored = parsed.stored_form();
        let mut found = self.store.find_api_key_by_token(&stored).await?;
        if found.is_none() && parsed.kind() == ApiKeyType::Secret && parsed.format() == TokenFormat::Legacy {
            // Perhaps a key imported from Medusa, still under its scrypt hash: checked once, then
            // stored under the digest. Only then is the answer cached (a legacy row does not
            // name its digest, so no notice of a change to it could reach a cache entry).
            if !self.upgrade_legacy_secret(parsed).await? {
                return Ok(None);
            }
            // Decide on the row as it is after the upgrade: a revoke or a delete may have
            // committed while scrypt ran.
            fill = cache.begin_fill();
            found = self.store.find_api_key_by_token(&stored).await?;
        }
        let key = match found {
            Some(found) if token::constant_time_eq(&found.stored_token, &stored) => Some(found.key),
            _ => None,
        };
        let record = match key {
            Some(key) => {
                let channels = if key.key_type == ApiKeyType::Publishable {
                    self.channel_ids_of(&key.id).await?
                } else {
                    Vec::new()
                };
                Some(Arc::new(KeyRecord::new(key, channels)))
            }
            None => None,
        };
        cache.fill_key(fill, digest, record.clone(), now);
        Ok(record)
    }

    /// Writes the `last_used_at` of every key verified since the last flush, in one statement
    /// batch. Returns how many keys were written. On failure the batch is kept for the next flush.
    pub async fn flush_usage(&self) -> Result<usize> {
        let cache = self.store.cache();
        let batch = cache.take_usage();
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(e) = self.store.record_last_used(&Cache::usage_rows(&batch)).await {
            cache.requeue_usage(batch);
            return Err(e);
        }
        Ok(batch.len())
    }

    /// Verifies a token as a publishable key (the storefront check): a valid secret token is
    /// refused as `NOT_FOUND`, so a secret can never open a store route.
    pub async fn verify_publishable(&self, raw: &str) -> Result<Verification> {
        self.verify_publishable_from(raw, None).await
    }

    /// [`Keyward::verify_publishable`] for a request from `origin`.
    pub async fn verify_publishable_from(&self, raw: &str, origin: Option<IpAddr>) -> Result<Verification> {
        let v = self.verify_from(raw, origin).await?;
        Ok(match v.key() {
            Some(k) if k.key_type == ApiKeyType::Secret => Verification::refused(VerifyCode::NotFound, None),
            _ => v,
        })
    }

    /// The sales channels with these ids, in this order, from the cache where it has them
    /// (unknown ids are skipped). What a store route shows of a key's channels.
    pub async fn sales_channels_by_id(&self, ids: &[SalesChannelId]) -> Result<Vec<Arc<SalesChannel>>> {
        let cache = self.store.cache();
        let now = self.now();
        let mut found: Vec<Option<Arc<SalesChannel>>> = ids.iter().map(|id| cache.channel(id, now)).collect();
        let missing: Vec<SalesChannelId> = ids
            .iter()
            .zip(&found)
            .filter(|(_, c)| c.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        if !missing.is_empty() {
            let fill = cache.begin_fill();
            for channel in self.channels_by_ids(&missing).await? {
                let channel = Arc::new(channel);
                cache.fill_channel(fill, Arc::clone(&channel), now);
                if let Some(slot) = ids.iter().position(|id| *id == channel.id) {
                    found[slot] = Some(channel);
                }
            }
        }
        Ok(found.into_iter().flatten().collect())
    }

    /// Secret keys imported from Medusa keep their scrypt hash until first use. The candidates
    /// are the legacy rows with this token's redacted form (an indexed lookup, never a scan);
    /// each costs one bounded scrypt run off the executor. On a match the row's hash is replaced
    /// by the fast digest, guarded on the hash it held, so two nodes upgrading at once both
    /// succeed and nothing else about the row changes. Whether the token matched a key.
    async fn upgrade_legacy_secret(&self, parsed: &token::ParsedToken<'_>) -> Result<bool> {
        let raw = parsed.as_str();
        let candidates = self.store.find_legacy_secret_keys(&token::redact(raw)).await?;
        for candidate in candidates {
            if !self
                .legacy
                .matches(raw, &candidate.salt, &candidate.stored_token)
                .await?
            {
                continue;
            }
            let upgraded = self
                .store
                .upgrade_legacy_secret(&candidate.key.id, &candidate.stored_token, &parsed.stored_form())
                .await?;
            if upgraded {
                tracing::info!(id = %candidate.key.id, "an imported Medusa secret key now verifies by its digest");
            }
            return Ok(true);
        }
        Ok(false)
    }
}
