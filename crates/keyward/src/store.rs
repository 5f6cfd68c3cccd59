//! The storage interface the module stands on, implemented by `keyward-sqlite` and
//! `keyward-postgres`.
//!
//! Each method is one atomic unit. Where a rule must hold against concurrent writers (delete only
//! revoked keys, revoke a secret key once, link only existing channels to a publishable key) the
//! store checks it inside the same transaction as the write and reports what blocked it; the
//! module turns that report into the exact message. The rule's wording lives in the module once;
//! the stores only answer "which rows are in the way".

use async_trait::async_trait;

use crate::error::Result;
use crate::filter::{ApiKeyField, ApiKeyFilter, ListOptions, SalesChannelField, SalesChannelFilter};
use crate::id::{ApiKeyId, SalesChannelId, UserId};
use crate::model::{ApiKey, ApiKeyType, SalesChannel, UpdateApiKey, UpdateSalesChannel, User};
use crate::time::{Clock, Timestamp};

/// A key row as it is written. `token` is the stored form (digest for secret keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: ApiKeyId,
    pub token: String,
    pub salt: String,
    pub redacted: String,
    pub title: String,
    pub key_type: ApiKeyType,
    pub created_by: String,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub policy: crate::model::KeyPolicy,
}

/// A key as stored, with what verification needs beyond the public record. Also the snapshot a
/// delete keeps so its compensation can put the row back (the token is the stored form: a
/// secret key's digest, never its plain text).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredKey {
    pub key: ApiKey,
    /// The `token` column as stored (digest for secret keys).
    pub stored_token: String,
    /// Non-empty only for secret keys imported from Medusa (scrypt salt).
    pub salt: String,
}

/// A key's revocation as it is (or was): what a revoke's compensation puts back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revocation {
    pub id: ApiKeyId,
    pub revoked_by: Option<String>,
    pub revoked_at: Option<Timestamp>,
}

impl Revocation {
    /// The revocation `key` has now.
    pub fn of(key: &ApiKey) -> Self {
        Self {
            id: key.id.clone(),
            revoked_by: key.revoked_by.clone(),
            revoked_at: key.revoked_at,
        }
    }
}

/// A revocation this run wrote and the one to put back: a revoke's compensation. The store puts
/// `previous` back only where the row still holds `written`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RevocationUndo {
    pub written: Revocation,
    pub previous: Revocation,
}

/// The title and expiry an update wrote to a key and the ones to put back (only where the row
/// still holds both written ones). Runs recorded before expiries existed read with no expiry,
/// which is what their keys had.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpdateUndo {
    pub id: ApiKeyId,
    pub written: String,
    pub previous: String,
    #[serde(default)]
    pub written_expires_at: Option<Timestamp>,
    #[serde(default)]
    pub previous_expires_at: Option<Timestamp>,
    /// The metadata, permissions and allowed addresses written and the ones to put back (runs
    /// recorded before these existed read as keys without them, which is what they had).
    #[serde(default)]
    pub written_policy: crate::model::KeyPolicy,
    #[serde(default)]
    pub previous_policy: crate::model::KeyPolicy,
}

/// Which keys a revocation refuses to revoke again (those already revoked at `now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeOnce {
    /// Secret keys only: Medusa's rule (a publishable key can be revoked again).
    #[default]
    Secret,
    /// Every key: a roll replaces a key once, so a second roll of a revoked key is refused.
    Any,
}

/// What a key must still look like when a roll revokes it: the title, channels, expiry and
/// policy its successor copied. A roll whose key changed meanwhile is refused
/// (`Blocked::Changed`), so it is never half before and half after a concurrent change (a
/// successor never keeps permissions or addresses that were narrowed while it was made).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyShape {
    pub title: String,
    /// Ordered by id.
    pub channels: Vec<SalesChannelId>,
    /// The expiry and policy copied; none in plans recorded before they were (not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terms: Option<KeyTerms>,
}

/// A key's expiry and policy, as a roll copies them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyTerms {
    pub expires_at: Option<Timestamp>,
    pub policy: crate::model::KeyPolicy,
}

impl KeyShape {
    /// Whether a key read as `key` (none: the row is gone) with `channels` (ordered by id) no
    /// longer has this shape.
    pub fn changed(&self, key: Option<&ApiKey>, channels: &[String]) -> bool {
        let same_channels =
            channels.len() == self.channels.len() && channels.iter().zip(&self.channels).all(|(a, b)| a == b.as_str());
        let differs = key.is_some_and(|k| {
            k.title != self.title
                || self
                    .terms
                    .as_ref()
                    .is_some_and(|t| t.expires_at != k.expires_at || t.policy != k.policy)
        });
        differs || !same_channels
    }
}

/// Why a guarded write did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Keys that are not revoked at the given instant (delete).
    NotRevoked(Vec<ApiKeyId>),
    /// Secret keys already revoked at the given instant (revoke).
    AlreadyRevoked(Vec<ApiKeyId>),
    /// The key does not exist (link).
    UnknownKey,
    /// The key is a secret key (link).
    SecretKey,
    /// Channel ids that do not exist (link).
    UnknownSalesChannels(Vec<SalesChannelId>),
    /// The key no longer has the title or channels expected (a roll's revoke).
    Changed(ApiKeyId),
    /// Keys whose revocation is scheduled earlier than a key's revocation would set (revoke).
    Postponed(Vec<ApiKeyId>),
}

/// The outcome of a guarded write: done, or blocked with the rows in the way.
pub type Guarded<T = ()> = std::result::Result<T, Blocked>;

/// A user with the hash of their password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUser {
    pub user: User,
    pub password_hash: String,
}

/// Persistence for keys, sales channels, their links and admin users: one room per kind of
/// record ([`KeyStore`], [`ChannelStore`], [`UserStore`]), plus what the whole database does.
#[async_trait]
pub trait Store: KeyStore + ChannelStore + UserStore + NoticeStore + Send + Sync + 'static {
    /// Which backend this is (`sqlite`, `postgres`), for logs and `--help` output.
    fn backend(&self) -> &'static str;

    /// The verification cache this store keeps true: every write below that changes a fact
    /// the cache holds records a [`crate::cache::Change`] in its own transaction, for every
    /// node, and applies it here before returning.
    fn cache(&self) -> &std::sync::Arc<crate::cache::Cache>;

    /// Receives the changes other nodes (and processes) make into [`Store::cache`], which is
    /// used only while this runs and is connected; never returns. Run one per store, for as long
    /// as the store is used (`keyward serve` does); dropping it takes the cache offline.
    async fn watch_changes(&self);

    /// Applies pending migrations. Idempotent.
    async fn migrate(&self) -> Result<()>;

    /// Checks the database answers.
    async fn ping(&self) -> Result<()>;

    /// Whether the first-start seed (default channel and key) has been written.
    async fn is_seeded(&self) -> Result<bool>;

    /// Writes the seed and marks it written, in one transaction. Does nothing if already seeded.
    async fn seed(&self, channel: &SalesChannel, key: &NewApiKey) -> Result<()>;

    /// Claims the record `key_digest` in one transaction, first dropping every record that
    /// expired (`expires_at <= now`) and this one if it was abandoned while running (created
    /// before `abandoned_before`). `None` when this call claimed it (a `running` record with
    /// `request_digest` now exists); otherwise the record that holds it.
    async fn claim_idempotency_key(
        &self,
        key_digest: &str,
        request_digest: &str,
        now: Timestamp,
        expires_at: Timestamp,
        abandoned_before: Timestamp,
    ) -> Result<Option<crate::idempotency::IdempotencyRecord>>;

    /// Stores the sealed answer of a claimed record.
    async fn finish_idempotency_key(
        &self,
        key_digest: &str,
        response: &crate::idempotency::StoredResponse,
    ) -> Result<()>;

    /// Drops a claimed record (its request is to run again next time).
    async fn release_idempotency_key(&self, key_digest: &str) -> Result<()>;

    /// The setting `name`; if there is none yet, `value` is stored and returned. Of nodes that
    /// race to set it, one wins and every one gets the winner's value.
    async fn setting_or_insert(&self, name: &str, value: &str, now: Timestamp) -> Result<String>;
}

/// API keys: their rows, guarded revokes and deletes, what compensations put back, and use.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Inserts keys in one transaction. A taken id or token is a `duplicate_error`.
    async fn insert_api_keys(&self, keys: &[NewApiKey]) -> Result<()>;

    async fn list_api_keys(&self, filter: &ApiKeyFilter, options: &ListOptions<ApiKeyField>) -> Result<Vec<ApiKey>>;

    async fn count_api_keys(&self, filter: &ApiKeyFilter) -> Result<u64>;

    /// The key whose `token` column equals `stored_token`, revoked or not.
    async fn find_api_key_by_token(&self, stored_token: &str) -> Result<Option<StoredKey>>;

    /// Secret keys imported from Medusa (non-empty salt) with this redacted form.
    async fn find_legacy_secret_keys(&self, redacted: &str) -> Result<Vec<StoredKey>>;

    /// Sets what `update` gives (title, expiry) on these keys; returns the ids that exist.
    async fn update_api_keys(&self, ids: &[ApiKeyId], update: &UpdateApiKey, now: Timestamp) -> Result<Vec<ApiKeyId>>;

    /// Puts each `previous` title and expiry back where the key still holds the written ones,
    /// in one transaction; returns the ids it changed. Compensation of an update.
    async fn restore_api_key_updates(&self, undo: &[UpdateUndo], now: Timestamp) -> Result<Vec<ApiKeyId>>;

    /// Sets `revoked_at`/`revoked_by` on these keys unless one of them is already revoked and
    /// `once` covers its type (blocked: `AlreadyRevoked`). Unknown ids are skipped. Revocation
    /// is monotonic: a key already revoked is never given a `revoked_at` in the future (it is
    /// left as it is). "Already" is judged by `clock` read *inside* the writing transaction,
    /// after its locks are held: an instant read before waiting for them could be older than a
    /// revocation that committed meanwhile.
    ///
    /// With `unchanged` (one key), the key must still have that title and those channels. With
    /// `forward_only` (a key revoking), no key whose revocation is scheduled earlier than
    /// `revoked_at` is touched (blocked: `Postponed`): judged in the writing transaction, so a
    /// revocation moved earlier since the plan is never pushed back.
    #[allow(
        clippy::too_many_arguments,
        reason = "one guarded write; each argument is one guard of it"
    )]
    async fn revoke_api_keys(
        &self,
        ids: &[ApiKeyId],
        revoked_by: &str,
        revoked_at: Timestamp,
        clock: &dyn Clock,
        once: RevokeOnce,
        unchanged: Option<&KeyShape>,
        forward_only: bool,
    ) -> Result<Guarded>;

    /// Deletes these keys and their sales-channel links unless one of them is not revoked at
    /// `now` (blocked: `NotRevoked`). Unknown ids are ignored; returns the ids it deleted.
    async fn delete_api_keys(&self, ids: &[ApiKeyId], now: Timestamp) -> Result<Guarded<Vec<ApiKeyId>>>;

    /// Full rows of these keys, ordered by id (unknown ids are skipped).
    async fn stored_api_keys(&self, ids: &[ApiKeyId]) -> Result<Vec<StoredKey>>;

    /// Writes keys back exactly as a snapshot had them, in one transaction; ids that exist are
    /// left alone. Compensation of a delete.
    async fn restore_api_keys(&self, keys: &[StoredKey]) -> Result<()>;

    /// Puts each `previous` revocation back where the key still holds exactly `written` and
    /// doing so does not make a revoked key valid again (judged by `clock` inside the
    /// transaction), in one transaction; returns the ids it changed. Compensation of a revoke.
    async fn restore_revocations(&self, undo: &[RevocationUndo], clock: &dyn Clock) -> Result<Vec<ApiKeyId>>;

    /// Replaces an imported Medusa key's scrypt hash (and salt) by the fast digest where the row
    /// still holds `legacy_hash`; whether it did. Nothing else about the key changes.
    async fn upgrade_legacy_secret(&self, id: &ApiKeyId, legacy_hash: &str, digest: &str) -> Result<bool>;

    /// How many secret keys still hold a Medusa scrypt hash (not used since their import).
    async fn count_legacy_secret_keys(&self) -> Result<u64>;

    /// Writes each `new` row over the key that still holds exactly `expected` (every column but
    /// `last_used_at`, which neither side decides), in one transaction; returns the ids it
    /// changed. How an import applies a source's changes, and how it puts them back.
    async fn replace_api_keys(&self, pairs: &[(StoredKey, StoredKey)]) -> Result<Vec<ApiKeyId>>;

    /// Records when keys were last used (batched by the caller). Not a change the cache is
    /// told of: a cached key's `last_used_at` is the one read with it.
    async fn record_last_used(&self, uses: &[(ApiKeyId, Timestamp)]) -> Result<()>;
}

/// The notices of keys' expiries: which are due, and which a run has sent.
#[async_trait]
pub trait NoticeStore: Send + Sync {
    /// The expiry notices due at `now`: `expiring` for keys that expire after `now` and by
    /// `warn_until`, `expired` for keys expired by `now` — never one already sent for the key's
    /// expiry instant, nor for a key revoked before it expires. Soonest first, at most `limit`.
    async fn expiry_notices_due(&self, now: Timestamp, warn_until: Timestamp, limit: u32) -> Result<Vec<ExpiryNotice>>;

    /// Records `notices` as sent by the run `transaction_id` at `now` (one another run sent
    /// stays that run's); returns every notice this run holds, soonest first.
    async fn record_expiry_notices(
        &self,
        notices: &[ExpiryNotice],
        transaction_id: &str,
        now: Timestamp,
    ) -> Result<Vec<ExpiryNotice>>;

    /// Forgets the notices of the run `transaction_id` (its compensation: they were not sent).
    async fn forget_expiry_notices(&self, transaction_id: &str) -> Result<()>;
}

/// Which notice of a key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeKind {
    /// A set time before the instant.
    Expiring,
    /// At the instant.
    Expired,
}

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Expiring => "expiring",
            NoticeKind::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "expiring" => Ok(NoticeKind::Expiring),
            "expired" => Ok(NoticeKind::Expired),
            other => Err(crate::Error::unexpected(format!("stored notice kind {other:?}"))),
        }
    }
}

/// One notice of one key's expiry at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ExpiryNotice {
    pub id: ApiKeyId,
    pub kind: NoticeKind,
    pub expires_at: Timestamp,
}

impl ExpiryNotice {
    /// A notice as a store reads it back.
    pub fn stored(id: String, kind: &str, expires_at: Timestamp) -> Result<Self> {
        Ok(Self {
            id: rows::stored_id(id)?,
            kind: NoticeKind::parse(kind)?,
            expires_at,
        })
    }
}

/// Sales channels and their links to publishable keys.
#[async_trait]
pub trait ChannelStore: Send + Sync {
    async fn insert_sales_channels(&self, channels: &[SalesChannel]) -> Result<()>;

    async fn list_sales_channels(
        &self,
        filter: &SalesChannelFilter,
        options: &ListOptions<SalesChannelField>,
    ) -> Result<Vec<SalesChannel>>;

    async fn count_sales_channels(&self, filter: &SalesChannelFilter) -> Result<u64>;

    /// Applies a partial update; `None` when the channel does not exist.
    async fn update_sales_channel(
        &self,
        id: &SalesChannelId,
        patch: &UpdateSalesChannel,
        now: Timestamp,
    ) -> Result<Option<SalesChannel>>;

    /// Puts `previous` back where the channel still holds what `written` says (name,
    /// description, disabled flag and `updated_at`); whether it did. Compensation of an update.
    async fn restore_sales_channel(&self, written: &SalesChannel, previous: &SalesChannel) -> Result<bool>;

    /// Deletes channels and their key links. Unknown ids are ignored; returns the ids it
    /// deleted.
    async fn delete_sales_channels(&self, ids: &[SalesChannelId]) -> Result<Vec<SalesChannelId>>;

    /// Links channels to a publishable key (re-linking is a no-op), checking in the same
    /// transaction that the key exists and is publishable and that every channel exists.
    /// Returns the channels it linked (not those already linked).
    async fn link_sales_channels(
        &self,
        key: &ApiKeyId,
        channels: &[SalesChannelId],
        now: Timestamp,
    ) -> Result<Guarded<Vec<SalesChannelId>>>;

    /// Links each pair's channel to its key where the key exists and is publishable and the
    /// channel exists (re-linking is a no-op), in one transaction; returns the links it made.
    /// How an import writes its links, a thousand at a time.
    async fn insert_links(
        &self,
        links: &[(ApiKeyId, SalesChannelId)],
        now: Timestamp,
    ) -> Result<Vec<(ApiKeyId, SalesChannelId)>>;

    /// Removes links (unknown ones are ignored), checking the key exists. Returns the
    /// channels it unlinked.
    async fn unlink_sales_channels(
        &self,
        key: &ApiKeyId,
        channels: &[SalesChannelId],
        now: Timestamp,
    ) -> Result<Guarded<Vec<SalesChannelId>>>;

    /// The live links of these keys, ordered by key then channel id.
    async fn links_of_keys(&self, keys: &[ApiKeyId]) -> Result<Vec<(ApiKeyId, SalesChannelId)>>;

    /// The live links of these channels, ordered by channel then key id.
    async fn links_of_sales_channels(&self, channels: &[SalesChannelId]) -> Result<Vec<(SalesChannelId, ApiKeyId)>>;
}

/// Admin users and their sessions.
#[async_trait]
pub trait UserStore: Send + Sync {
    async fn insert_session(&self, id: &str, user: &UserId, created_at: Timestamp, expires_at: Timestamp)
    -> Result<()>;

    /// Whether the session is live at `now`: not ended, not expired, and its user still exists.
    async fn session_is_live(&self, id: &str, now: Timestamp) -> Result<bool>;

    /// Ends one session; whether it was live.
    async fn end_session(&self, id: &str, now: Timestamp) -> Result<bool>;

    /// Sets a user's password hash and ends its sessions, in one transaction; whether the user
    /// exists.
    async fn set_user_password(&self, user: &UserId, password_hash: &str, now: Timestamp) -> Result<bool>;

    /// Deletes a user and ends its sessions, in one transaction; whether it existed.
    async fn delete_user(&self, user: &UserId, now: Timestamp) -> Result<bool>;

    /// Inserts a user; a taken email is a `duplicate_error`.
    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<()>;

    async fn find_user_by_email(&self, email: &str) -> Result<Option<StoredUser>>;

    async fn get_user(&self, id: &UserId) -> Result<Option<User>>;

    async fn count_users(&self) -> Result<u64>;
}

/// Maps a database error to the module's error, in one place for both stores: a unique
/// violation is a `duplicate_error` naming what was taken, connection trouble is `unavailable`
/// (retryable), and anything else is unexpected (logged, never shown to clients).
pub fn db_error(e: sqlx::Error) -> crate::Error {
    use crate::Error;
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            let what = match db.constraint().unwrap_or_default() {
                c if c.contains("email") => "a user with this email",
                c if c.contains("token") => "an api key with this token",
                _ if db.message().contains("admin_user.email") => "a user with this email",
                _ if db.message().contains("api_key.token") => "an api key with this token",
                _ => "a record with this id",
            };
            Error::duplicate(format!("There already is {what}"))
        }
        // Postgres SQLSTATE classes meaning "the database is not there to talk to": connection
        // exceptions (08), operator intervention such as a shutdown (57), insufficient
        // resources (53), and a database that no longer exists (3D000). SQLite's "busy" and
        // "locked" (5, 6) are the same kind of trouble: retryable, not the caller's fault.
        sqlx::Error::Database(db)
            if db.code().is_some_and(|c| {
                c.starts_with("08")
                    || c.starts_with("57")
                    || c.starts_with("53")
                    || c == "3D000"
                    || c == "5"
                    || c == "6"
            }) =>
        {
            Error::unavailable(format!("the database is unavailable: {e}"))
        }
        // Never connected: nothing was written.
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            Error::unavailable(format!("the database is unavailable: {e}"))
        }
        // The connection broke while a statement or a commit was under way: it may have been
        // committed. (A statement the database refused rolls its transaction back: not this.)
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Protocol(_) => {
            Error::unavailable(format!("the database is unavailable: {e}")).with_unknown_outcome()
        }
        _ => Error::unexpected(format!("database error: {e}")),
    }
}

/// Applies a partial sales-channel update in memory; stores then write the whole row.
pub fn apply_sales_channel_patch(channel: &mut SalesChannel, patch: &UpdateSalesChannel, now: Timestamp) {
    if let Some(name) = &patch.name {
        channel.name.clone_from(name);
    }
    if let Some(description) = &patch.description {
        channel.description.clone_from(description);
    }
    if let Some(is_disabled) = patch.is_disabled {
        channel.is_disabled = is_disabled;
    }
    if let Some(metadata) = &patch.metadata {
        channel.metadata.clone_from(metadata);
    }
    channel.updated_at = now;
}

mod rows;
pub use rows::*;
