//! keyward's embedded store: one SQLite file, WAL mode, created and migrated on first use.
//!
//! Static queries are checked at compile time against this crate's migrations (`sqlx.toml`,
//! `.sqlx/`); lists of ids are passed as one JSON array and unpacked with `json_each`, so those
//! queries are checked too. Only list filters, whose shape the caller decides, are built at run
//! time by `keyward::sql`. Write transactions start with `BEGIN IMMEDIATE`: SQLite then takes the
//! write lock up front instead of failing a read-to-write upgrade under contention.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keyward::cache::{Cache, Change, WatchGuard};
use keyward::filter::{ApiKeyField, ApiKeyFilter, ListOptions, SalesChannelField, SalesChannelFilter};
use keyward::idempotency::{IdempotencyRecord, StoredResponse};
use keyward::sql::{self, Dialect};
use keyward::store::{
    Blocked, ChannelRow, Guarded, KeyRow, KeyShape, NewApiKey, RevocationUndo, RevokeOnce, Store, StoredKey,
    StoredUser, TitleUndo, UserRow, db_error, stored_pairs,
};
use keyward::{
    ApiKey, ApiKeyId, ApiKeyType, Clock, Error, Result, SalesChannel, SalesChannelId, Timestamp, UpdateSalesChannel,
    User, UserId,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, SqlitePool};

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    cache: Arc<Cache>,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://keyward.db`,
    /// `sqlite:///abs/path.db`). Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::invalid_data(format!("'{url}' is not a SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // `$like` is case-sensitive, as on Postgres; `$ilike` is the case-blind one.
            .pragma("case_sensitive_like", "ON");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| Error::unavailable(format!("cannot open the SQLite database '{url}': {e}")))?;
        Ok(Self {
            pool,
            cache: Arc::new(Cache::default()),
        })
    }

    /// Keeps at most `capacity` keys in the verification cache.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = Arc::new(Cache::new(capacity));
        self
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<Tx> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)
    }

    /// Records `changes` in the change log inside `tx`, commits, then drops what they name from
    /// this node's cache (also when the commit failed: dropping entries is always safe).
    async fn commit(&self, mut tx: Tx, changes: &[Change]) -> Result<()> {
        let at = wall_millis();
        // The log keeps what a reader could still need (see KEEP_CHANGES_MS), whether or not a
        // watcher runs; the index makes this a lookup when there is nothing to remove.
        let before = at - KEEP_CHANGES_MS;
        sqlx::query!("DELETE FROM keyward_change WHERE created_at < ?", before)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        for payload in Change::pack(changes, self.cache.origin()) {
            sqlx::query!(
                "INSERT INTO keyward_change (payload, created_at) VALUES (?, ?)",
                payload,
                at
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        let done = tx.commit().await;
        self.cache.apply(changes);
        done.map_err(db_error)
    }

    /// Follows the change log until reading it fails: other processes' changes reach this
    /// node's cache within [`POLL_EVERY`] (plus one query).
    async fn follow_changes(&self) -> Result<()> {
        let mut last = sqlx::query_scalar!(r#"SELECT COALESCE(MAX(seq), 0) AS "seq!: i64" FROM keyward_change"#)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        self.cache.set_online(true);
        loop {
            tokio::time::sleep(POLL_EVERY).await;
            let rows = sqlx::query!(
                r#"SELECT seq AS "seq!", payload FROM keyward_change WHERE seq > ? ORDER BY seq LIMIT 1000"#,
                last
            )
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
            for row in rows {
                self.cache.apply_notice(&row.payload);
                last = row.seq;
            }
        }
    }
}

/// How often a node reads the change log.
pub const POLL_EVERY: Duration = Duration::from_millis(5);
/// How long change-log rows are kept: longer than any cache entry lives
/// ([`keyward::cache::ENTRY_TTL`]), so a node that fell behind still finds every change that
/// could concern an entry it holds.
const KEEP_CHANGES_MS: i64 = 120_000;
/// The pause before the change log is read again after a failure.
const RETRY_EVERY: Duration = Duration::from_millis(200);

type Tx = sqlx::Transaction<'static, sqlx::Sqlite>;

fn wall_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

struct Sqlite;

impl Dialect for Sqlite {
    type DB = sqlx::Sqlite;

    fn push_time(qb: &mut QueryBuilder<sqlx::Sqlite>, t: Timestamp) {
        qb.push_bind(t.millis());
    }

    fn push_page(qb: &mut QueryBuilder<sqlx::Sqlite>, skip: u64, take: Option<u64>) {
        // SQLite needs a LIMIT before OFFSET; -1 means none.
        qb.push(" LIMIT ")
            .push_bind(take.map_or(-1, clamp))
            .push(" OFFSET ")
            .push_bind(clamp(skip));
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn json_ids<T: AsRef<str>>(ids: &[T]) -> String {
    serde_json::Value::from(ids.iter().map(|i| i.as_ref()).collect::<Vec<_>>()).to_string()
}

/// The shared rows with this store's instant type.
type Key = KeyRow<i64>;
type Channel = ChannelRow<i64>;
type Admin = UserRow<i64>;

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    async fn watch_changes(&self) {
        let _offline_when_dropped = WatchGuard(&self.cache);
        loop {
            if let Err(e) = self.follow_changes().await {
                self.cache.set_online(false);
                tracing::warn!(task = "cache-watcher", cause = %e.message, "cannot read the change log; verifying from the database until it can");
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(|e| Error::unavailable(format!("migrating the SQLite database failed: {e}")))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query!("SELECT 1 AS one")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    async fn is_seeded(&self) -> Result<bool> {
        let row = sqlx::query!("SELECT value FROM keyward_meta WHERE key = 'seeded'")
            .fetch_optional(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(row.is_some())
    }

    async fn seed(&self, channel: &SalesChannel, key: &NewApiKey) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query!("SELECT value FROM keyward_meta WHERE key = 'seeded'")
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if done.is_some() {
            return Ok(());
        }
        insert_channel(&mut tx, channel).await?;
        insert_key(&mut tx, key).await?;
        let (kid, cid, at) = (key.id.as_str(), channel.id.as_str(), key.created_at.millis());
        sqlx::query!(
            "INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, created_at, updated_at)
             VALUES (?, ?, ?, ?)",
            kid,
            cid,
            at,
            at
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        sqlx::query!("INSERT INTO keyward_meta (key, value) VALUES ('seeded', 'true')")
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        self.commit(tx, &Change::keys([(key.key_type, key.token.as_str())]))
            .await
    }

    async fn insert_api_keys(&self, keys: &[NewApiKey]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for key in keys {
            insert_key(&mut tx, key).await?;
        }
        self.commit(tx, &Change::keys(keys.iter().map(|k| (k.key_type, k.token.as_str()))))
            .await
    }

    async fn list_api_keys(&self, filter: &ApiKeyFilter, options: &ListOptions<ApiKeyField>) -> Result<Vec<ApiKey>> {
        sql::fetch_list::<Sqlite, _, Key>(&self.pool, sql::SELECT_KEYS, filter, options)
            .await?
            .into_iter()
            .map(Key::into_key)
            .collect()
    }

    async fn count_api_keys(&self, filter: &ApiKeyFilter) -> Result<u64> {
        sql::fetch_count::<Sqlite, _>(&self.pool, "api_key", filter).await
    }

    async fn find_api_key_by_token(&self, stored_token: &str) -> Result<Option<StoredKey>> {
        let row = sqlx::query_as!(
            Key,
            r#"SELECT id AS "id!", token, salt, redacted, title, type AS key_type, last_used_at, created_by,
                      revoked_by, revoked_at, created_at, updated_at, deleted_at
               FROM api_key WHERE token = ?"#,
            stored_token
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(Key::into_stored).transpose()
    }

    async fn find_legacy_secret_keys(&self, redacted: &str) -> Result<Vec<StoredKey>> {
        let rows = sqlx::query_as!(
            Key,
            r#"SELECT id AS "id!", token, salt, redacted, title, type AS key_type, last_used_at, created_by,
                      revoked_by, revoked_at, created_at, updated_at, deleted_at
               FROM api_key WHERE redacted = ? AND type = 'secret' AND salt <> ''"#,
            redacted
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(Key::into_stored).collect()
    }

    async fn update_api_key_titles(&self, ids: &[ApiKeyId], title: &str, now: Timestamp) -> Result<Vec<ApiKeyId>> {
        let (ids, now) = (json_ids(ids), now.millis());
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query!(
            r#"UPDATE api_key SET title = ?, updated_at = ? WHERE id IN (SELECT value FROM json_each(?))
               RETURNING id AS "id!""#,
            title,
            now,
            ids
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let changes = key_changes(&mut tx, &ids).await?;
        self.commit(tx, &changes).await?;
        keyward::store::stored_ids(rows.into_iter().map(|r| r.id))
    }

    async fn restore_api_key_titles(&self, undo: &[TitleUndo], now: Timestamp) -> Result<Vec<ApiKeyId>> {
        let now = now.millis();
        let mut tx = self.begin_write().await?;
        let mut restored = Vec::new();
        for u in undo {
            let id = u.id.as_str();
            let done = sqlx::query!(
                "UPDATE api_key SET title = ?, updated_at = ? WHERE id = ? AND title = ?",
                u.previous,
                now,
                id,
                u.written
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if done.rows_affected() > 0 {
                restored.push(u.id.clone());
            }
        }
        let changes = key_changes(&mut tx, &json_ids(&restored)).await?;
        self.commit(tx, &changes).await?;
        Ok(restored)
    }

    async fn revoke_api_keys(
        &self,
        ids: &[ApiKeyId],
        revoked_by: &str,
        revoked_at: Timestamp,
        clock: &dyn Clock,
        once: RevokeOnce,
        unchanged: Option<&KeyShape>,
    ) -> Result<Guarded> {
        let (key_ids, ids, revoked_at) = (ids, json_ids(ids), revoked_at.millis());
        let any = once == RevokeOnce::Any;
        let mut tx = self.begin_write().await?;
        // Read once the write lock is held (see the trait).
        let now = clock.now().millis();
        let revoked = sqlx::query!(
            r#"SELECT id AS "id!" FROM api_key
               WHERE id IN (SELECT value FROM json_each(?)) AND (type = 'secret' OR ?)
                 AND revoked_at IS NOT NULL AND revoked_at <= ?
               ORDER BY id"#,
            ids,
            any,
            now
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        if !revoked.is_empty() {
            return Ok(Err(Blocked::AlreadyRevoked(keyward::store::stored_ids(
                revoked.into_iter().map(|r| r.id),
            )?)));
        }
        if let (Some(shape), Some(key)) = (unchanged, key_ids.first())
            && shape_changed(&mut tx, key, shape).await?
        {
            return Ok(Err(Blocked::Changed(key.clone())));
        }
        // A key revoked at `now` is never given a later revocation: revocation is monotonic.
        sqlx::query!(
            "UPDATE api_key SET revoked_at = ?, revoked_by = ?, updated_at = ?
             WHERE id IN (SELECT value FROM json_each(?))
               AND (? <= ? OR revoked_at IS NULL OR revoked_at > ?)",
            revoked_at,
            revoked_by,
            now,
            ids,
            revoked_at,
            now,
            now
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let changes = key_changes(&mut tx, &ids).await?;
        self.commit(tx, &changes).await?;
        Ok(Ok(()))
    }

    async fn delete_api_keys(&self, ids: &[ApiKeyId], now: Timestamp) -> Result<Guarded<Vec<ApiKeyId>>> {
        let (ids, now) = (json_ids(ids), now.millis());
        let mut tx = self.begin_write().await?;
        let unrevoked = sqlx::query!(
            r#"SELECT id AS "id!" FROM api_key
               WHERE id IN (SELECT value FROM json_each(?)) AND (revoked_at IS NULL OR revoked_at > ?)
               ORDER BY id"#,
            ids,
            now
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        if !unrevoked.is_empty() {
            return Ok(Err(Blocked::NotRevoked(keyward::store::stored_ids(
                unrevoked.into_iter().map(|r| r.id),
            )?)));
        }
        let changes = key_changes(&mut tx, &ids).await?;
        sqlx::query!(
            "DELETE FROM publishable_api_key_sales_channel WHERE publishable_key_id IN (SELECT value FROM json_each(?))",
            ids
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let deleted = sqlx::query_scalar!(
            r#"DELETE FROM api_key WHERE id IN (SELECT value FROM json_each(?)) RETURNING id AS "id!""#,
            ids
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &changes).await?;
        Ok(Ok(keyward::store::stored_ids(deleted)?))
    }

    async fn stored_api_keys(&self, ids: &[ApiKeyId]) -> Result<Vec<StoredKey>> {
        let ids = json_ids(ids);
        let rows = sqlx::query_as!(
            Key,
            r#"SELECT id AS "id!", token, salt, redacted, title, type AS key_type, last_used_at, created_by,
                      revoked_by, revoked_at, created_at, updated_at, deleted_at
               FROM api_key WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"#,
            ids
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(Key::into_stored).collect()
    }

    async fn restore_api_keys(&self, keys: &[StoredKey]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for s in keys {
            let k = &s.key;
            let (id, kind) = (k.id.as_str(), k.key_type.as_str());
            let (used, revoked) = (k.last_used_at.map(|t| t.millis()), k.revoked_at.map(|t| t.millis()));
            let (created, updated, deleted) = (
                k.created_at.millis(),
                k.updated_at.millis(),
                k.deleted_at.map(|t| t.millis()),
            );
            sqlx::query!(
                "INSERT INTO api_key (id, token, salt, redacted, title, type, last_used_at, created_by, revoked_by,
                                      revoked_at, created_at, updated_at, deleted_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (id) DO NOTHING",
                id,
                s.stored_token,
                s.salt,
                k.redacted,
                k.title,
                kind,
                used,
                k.created_by,
                k.revoked_by,
                revoked,
                created,
                updated,
                deleted
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        let changes = Change::keys(keys.iter().map(|s| (s.key.key_type, s.stored_token.as_str())));
        self.commit(tx, &changes).await
    }

    async fn restore_revocations(&self, undo: &[RevocationUndo], clock: &dyn Clock) -> Result<Vec<ApiKeyId>> {
        let mut tx = self.begin_write().await?;
        let now = clock.now().millis();
        let mut restored = Vec::new();
        for u in undo {
            let (id, at) = (u.previous.id.as_str(), u.previous.revoked_at.map(|t| t.millis()));
            let written_at = u.written.revoked_at.map(|t| t.millis());
            // Only where the row holds this run's revocation, and never making a revoked key
            // valid again: ours has not taken effect, or the one put back already had.
            let done = sqlx::query!(
                "UPDATE api_key SET revoked_by = ?, revoked_at = ?, updated_at = ?
                 WHERE id = ? AND revoked_by IS ? AND revoked_at IS ?
                   AND (revoked_at IS NULL OR revoked_at > ? OR ? <= ?)",
                u.previous.revoked_by,
                at,
                now,
                id,
                u.written.revoked_by,
                written_at,
                now,
                at,
                now
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if done.rows_affected() > 0 {
                restored.push(u.previous.id.clone());
            }
        }
        let changes = key_changes(&mut tx, &json_ids(&restored)).await?;
        self.commit(tx, &changes).await?;
        Ok(restored)
    }

    async fn upgrade_legacy_secret(&self, id: &ApiKeyId, legacy_hash: &str, digest: &str) -> Result<bool> {
        let id = id.as_str();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query!(
            "UPDATE api_key SET token = ?, salt = '' WHERE id = ? AND token = ? AND type = 'secret' AND salt <> ''",
            digest,
            id,
            legacy_hash
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &Change::keys([(ApiKeyType::Secret, digest)])).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_legacy_secret_keys(&self) -> Result<u64> {
        let n =
            sqlx::query_scalar!(r#"SELECT COUNT(*) AS "n!: i64" FROM api_key WHERE type = 'secret' AND salt <> ''"#)
                .fetch_one(&self.pool)
                .await
                .map_err(db_error)?;
        u64::try_from(n).map_err(|_| keyward::Error::unexpected("a negative count"))
    }

    async fn replace_api_keys(&self, pairs: &[(StoredKey, StoredKey)]) -> Result<Vec<ApiKeyId>> {
        let mut tx = self.begin_write().await?;
        let mut replaced = Vec::new();
        for (old, new) in pairs {
            let (o, n) = (&old.key, &new.key);
            let (o_revoked, n_revoked) = (o.revoked_at.map(|t| t.millis()), n.revoked_at.map(|t| t.millis()));
            let (o_created, n_created) = (o.created_at.millis(), n.created_at.millis());
            let (o_updated, n_updated) = (o.updated_at.millis(), n.updated_at.millis());
            let (id, kind) = (o.id.as_str(), o.key_type.as_str());
            let done = sqlx::query!(
                "UPDATE api_key SET token = ?, salt = ?, redacted = ?, title = ?, created_by = ?, revoked_by = ?,
                                    revoked_at = ?, created_at = ?, updated_at = ?
                 WHERE id = ? AND type = ? AND token = ? AND salt = ? AND redacted = ? AND title = ?
                   AND created_by = ? AND revoked_by IS ? AND revoked_at IS ? AND created_at = ? AND updated_at = ?",
                new.stored_token,
                new.salt,
                n.redacted,
                n.title,
                n.created_by,
                n.revoked_by,
                n_revoked,
                n_created,
                n_updated,
                id,
                kind,
                old.stored_token,
                old.salt,
                o.redacted,
                o.title,
                o.created_by,
                o.revoked_by,
                o_revoked,
                o_created,
                o_updated
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if done.rows_affected() > 0 {
                replaced.push(o.id.clone());
            }
        }
        let changes = Change::replaced(pairs);
        self.commit(tx, &changes).await?;
        Ok(replaced)
    }

    async fn record_last_used(&self, uses: &[(ApiKeyId, Timestamp)]) -> Result<()> {
        // One statement for the whole batch: `[[id, at], …]` unpacked by json_each.
        let batch = serde_json::Value::from(
            uses.iter()
                .map(|(id, at)| serde_json::json!([id.as_str(), at.millis()]))
                .collect::<Vec<_>>(),
        )
        .to_string();
        sqlx::query!(
            "UPDATE api_key SET last_used_at = u.at
             FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS at FROM json_each(?)) AS u
             WHERE api_key.id = u.id AND (api_key.last_used_at IS NULL OR api_key.last_used_at < u.at)",
            batch
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn insert_sales_channels(&self, channels: &[SalesChannel]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for c in channels {
            insert_channel(&mut tx, c).await?;
        }
        tx.commit().await.map_err(db_error)
    }

    async fn list_sales_channels(
        &self,
        filter: &SalesChannelFilter,
        options: &ListOptions<SalesChannelField>,
    ) -> Result<Vec<SalesChannel>> {
        sql::fetch_list::<Sqlite, _, Channel>(&self.pool, sql::SELECT_CHANNELS, filter, options)
            .await?
            .into_iter()
            .map(Channel::into_channel)
            .collect()
    }

    async fn count_sales_channels(&self, filter: &SalesChannelFilter) -> Result<u64> {
        sql::fetch_count::<Sqlite, _>(&self.pool, "sales_channel", filter).await
    }

    async fn update_sales_channel(
        &self,
        id: &SalesChannelId,
        patch: &UpdateSalesChannel,
        now: Timestamp,
    ) -> Result<Option<SalesChannel>> {
        let mut tx = self.begin_write().await?;
        let id = id.as_str();
        let row = sqlx::query_as!(
            Channel,
            r#"SELECT id AS "id!", name, description, is_disabled AS "is_disabled: bool",
                      metadata AS "metadata: serde_json::Value",
                      created_at, updated_at, deleted_at
               FROM sales_channel WHERE id = ?"#,
            id
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let mut channel = row.into_channel()?;
        keyward::store::apply_sales_channel_patch(&mut channel, patch, now);
        let updated = channel.updated_at.millis();
        sqlx::query!(
            "UPDATE sales_channel SET name = ?, description = ?, is_disabled = ?, metadata = ?, updated_at = ? WHERE id = ?",
            channel.name,
            channel.description,
            channel.is_disabled,
            channel.metadata,
            updated,
            id
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &[Change::Channel(channel.id.clone())]).await?;
        Ok(Some(channel))
    }

    async fn restore_sales_channel(&self, written: &SalesChannel, previous: &SalesChannel) -> Result<bool> {
        let (id, written_at, previous_at) = (
            previous.id.as_str(),
            written.updated_at.millis(),
            previous.updated_at.millis(),
        );
        let mut tx = self.begin_write().await?;
        let done = sqlx::query!(
            "UPDATE sales_channel SET name = ?, description = ?, is_disabled = ?, metadata = ?, updated_at = ?
             WHERE id = ? AND name = ? AND description IS ? AND is_disabled = ? AND updated_at = ?",
            previous.name,
            previous.description,
            previous.is_disabled,
            previous.metadata,
            previous_at,
            id,
            written.name,
            written.description,
            written.is_disabled,
            written_at
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &[Change::Channel(previous.id.clone())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_sales_channels(&self, ids: &[SalesChannelId]) -> Result<Vec<SalesChannelId>> {
        let channel_ids = ids;
        let ids = json_ids(ids);
        let mut tx = self.begin_write().await?;
        let linked = sqlx::query!(
            r#"SELECT k.type AS "kind!", k.token AS "token!" FROM api_key k
               JOIN publishable_api_key_sales_channel l ON l.publishable_key_id = k.id
               WHERE l.sales_channel_id IN (SELECT value FROM json_each(?))"#,
            ids
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut changes = Change::of_key_rows(linked.iter().map(|r| (r.kind.as_str(), r.token.as_str())))?;
        changes.extend(channel_ids.iter().cloned().map(Change::Channel));
        sqlx::query!(
            "DELETE FROM publishable_api_key_sales_channel WHERE sales_channel_id IN (SELECT value FROM json_each(?))",
            ids
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let deleted = sqlx::query_scalar!(
            r#"DELETE FROM sales_channel WHERE id IN (SELECT value FROM json_each(?)) RETURNING id AS "id!""#,
            ids
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &changes).await?;
        keyward::store::stored_ids(deleted)
    }

    async fn link_sales_channels(
        &self,
        key: &ApiKeyId,
        channels: &[SalesChannelId],
        now: Timestamp,
    ) -> Result<Guarded<Vec<SalesChannelId>>> {
        let mut tx = self.begin_write().await?;
        let kid = key.as_str();
        let found = sqlx::query!("SELECT type FROM api_key WHERE id = ?", kid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        match found.map(|r| r.r#type) {
            None => return Ok(Err(Blocked::UnknownKey)),
            Some(t) if t == ApiKeyType::Secret.as_str() => return Ok(Err(Blocked::SecretKey)),
            Some(_) => {}
        }
        let wanted = json_ids(channels);
        let existing = sqlx::query!(
            r#"SELECT id AS "id!" FROM sales_channel WHERE id IN (SELECT value FROM json_each(?))"#,
            wanted
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let existing: Vec<String> = existing.into_iter().map(|r| r.id).collect();
        let unknown: Vec<SalesChannelId> = channels
            .iter()
            .filter(|c| !existing.iter().any(|e| e == c.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Ok(Err(Blocked::UnknownSalesChannels(unknown)));
        }
        let at = now.millis();
        let mut linked = Vec::new();
        for c in channels {
            let cid = c.as_str();
            let done = sqlx::query!(
                "INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, created_at, updated_at)
                 VALUES (?, ?, ?, ?)
                 ON CONFLICT (publishable_key_id, sales_channel_id)
                 DO UPDATE SET deleted_at = NULL, updated_at = excluded.updated_at WHERE deleted_at IS NOT NULL",
                kid,
                cid,
                at,
                at
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if done.rows_affected() > 0 {
                linked.push(c.clone());
            }
        }
        let changes = key_changes(&mut tx, &json_ids(std::slice::from_ref(key))).await?;
        self.commit(tx, &changes).await?;
        Ok(Ok(linked))
    }

    async fn insert_links(
        &self,
        links: &[(ApiKeyId, SalesChannelId)],
        now: Timestamp,
    ) -> Result<Vec<(ApiKeyId, SalesChannelId)>> {
        // `[[key, channel], …]` unpacked by json_each: one statement for the batch.
        let pairs = serde_json::Value::from(
            links
                .iter()
                .map(|(k, c)| serde_json::json!([k.as_str(), c.as_str()]))
                .collect::<Vec<_>>(),
        )
        .to_string();
        let at = now.millis();
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query!(
            r#"INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, created_at, updated_at)
               SELECT k.id, c.id, ?, ?
               FROM (SELECT json_extract(value, '$[0]') AS kid, json_extract(value, '$[1]') AS cid FROM json_each(?)) AS l
               JOIN api_key k ON k.id = l.kid AND k.type = 'publishable'
               JOIN sales_channel c ON c.id = l.cid
               WHERE true
               ON CONFLICT (publishable_key_id, sales_channel_id)
               DO UPDATE SET deleted_at = NULL, updated_at = excluded.updated_at WHERE deleted_at IS NOT NULL
               RETURNING publishable_key_id AS "key!", sales_channel_id AS "channel!""#,
            at,
            at,
            pairs
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let linked: Vec<(ApiKeyId, SalesChannelId)> = stored_pairs(rows.into_iter().map(|r| (r.key, r.channel)))?;
        let mut keys: Vec<ApiKeyId> = linked.iter().map(|(k, _)| k.clone()).collect();
        keys.dedup();
        let changes = key_changes(&mut tx, &json_ids(&keys)).await?;
        self.commit(tx, &changes).await?;
        Ok(linked)
    }

    async fn unlink_sales_channels(
        &self,
        key: &ApiKeyId,
        channels: &[SalesChannelId],
        now: Timestamp,
    ) -> Result<Guarded<Vec<SalesChannelId>>> {
        let mut tx = self.begin_write().await?;
        let kid = key.as_str();
        let found = sqlx::query!("SELECT type FROM api_key WHERE id = ?", kid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if found.is_none() {
            return Ok(Err(Blocked::UnknownKey));
        }
        let (ids, at) = (json_ids(channels), now.millis());
        let unlinked = sqlx::query_scalar!(
            r#"UPDATE publishable_api_key_sales_channel SET deleted_at = ?, updated_at = ?
               WHERE publishable_key_id = ? AND sales_channel_id IN (SELECT value FROM json_each(?)) AND deleted_at IS NULL
               RETURNING sales_channel_id AS "id!""#,
            at,
            at,
            kid,
            ids
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let changes = key_changes(&mut tx, &json_ids(std::slice::from_ref(key))).await?;
        self.commit(tx, &changes).await?;
        Ok(Ok(keyward::store::stored_ids(unlinked)?))
    }

    async fn links_of_keys(&self, keys: &[ApiKeyId]) -> Result<Vec<(ApiKeyId, SalesChannelId)>> {
        let ids = json_ids(keys);
        let rows = sqlx::query!(
            r#"SELECT publishable_key_id AS "owner!", sales_channel_id AS "item!" FROM publishable_api_key_sales_channel
               WHERE publishable_key_id IN (SELECT value FROM json_each(?)) AND deleted_at IS NULL
               ORDER BY publishable_key_id, sales_channel_id"#,
            ids
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        stored_pairs(rows.into_iter().map(|r| (r.owner, r.item)))
    }

    async fn links_of_sales_channels(&self, channels: &[SalesChannelId]) -> Result<Vec<(SalesChannelId, ApiKeyId)>> {
        let ids = json_ids(channels);
        let rows = sqlx::query!(
            r#"SELECT sales_channel_id AS "owner!", publishable_key_id AS "item!" FROM publishable_api_key_sales_channel
               WHERE sales_channel_id IN (SELECT value FROM json_each(?)) AND deleted_at IS NULL
               ORDER BY sales_channel_id, publishable_key_id"#,
            ids
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        stored_pairs(rows.into_iter().map(|r| (r.owner, r.item)))
    }

    async fn claim_idempotency_key(
        &self,
        key_digest: &str,
        request_digest: &str,
        now: Timestamp,
        expires_at: Timestamp,
        abandoned_before: Timestamp,
    ) -> Result<Option<IdempotencyRecord>> {
        let (now, expires, abandoned) = (now.millis(), expires_at.millis(), abandoned_before.millis());
        let mut tx = self.begin_write().await?;
        sqlx::query!("DELETE FROM idempotency_key WHERE expires_at <= ?", now)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query!(
            "DELETE FROM idempotency_key WHERE key_digest = ? AND response IS NULL AND created_at < ?",
            key_digest,
            abandoned
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let claimed = sqlx::query!(
            "INSERT INTO idempotency_key (key_digest, request_digest, created_at, expires_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (key_digest) DO NOTHING",
            key_digest,
            request_digest,
            now,
            expires
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let held = if claimed.rows_affected() > 0 {
            None
        } else {
            let row = sqlx::query!(
                r#"SELECT request_digest, status AS "status: i64", response
                   FROM idempotency_key WHERE key_digest = ?"#,
                key_digest
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            let row = keyward::store::IdempotencyRow {
                request_digest: row.request_digest,
                status: row.status,
                response: row.response,
            };
            Some(row.into_record()?)
        };
        tx.commit().await.map_err(db_error)?;
        Ok(held)
    }

    async fn finish_idempotency_key(&self, key_digest: &str, response: &StoredResponse) -> Result<()> {
        let status = i64::from(response.status);
        sqlx::query!(
            "UPDATE idempotency_key SET status = ?, response = ? WHERE key_digest = ?",
            status,
            response.sealed,
            key_digest
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn release_idempotency_key(&self, key_digest: &str) -> Result<()> {
        sqlx::query!(
            "DELETE FROM idempotency_key WHERE key_digest = ? AND response IS NULL",
            key_digest
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn setting_or_insert(&self, name: &str, value: &str, now: Timestamp) -> Result<String> {
        let now = now.millis();
        let mut tx = self.begin_write().await?;
        sqlx::query!(
            "INSERT INTO keyward_setting (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
            name,
            value,
            now
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let stored = sqlx::query_scalar!("SELECT value FROM keyward_setting WHERE name = ?", name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(stored)
    }

    async fn insert_session(
        &self,
        id: &str,
        user: &UserId,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        let (user, created, expires) = (user.as_str(), created_at.millis(), expires_at.millis());
        sqlx::query!(
            "INSERT INTO admin_session (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            id,
            user,
            created,
            expires
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn session_is_live(&self, id: &str, now: Timestamp) -> Result<bool> {
        let now = now.millis();
        let live = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!: i64" FROM admin_session s JOIN admin_user u ON u.id = s.user_id
               WHERE s.id = ? AND s.ended_at IS NULL AND s.expires_at > ? AND u.deleted_at IS NULL"#,
            id,
            now
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(live > 0)
    }

    async fn end_session(&self, id: &str, now: Timestamp) -> Result<bool> {
        let now = now.millis();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query!(
            "UPDATE admin_session SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
            now,
            id
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &[Change::Session(id.to_owned())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_user_password(&self, user: &UserId, password_hash: &str, now: Timestamp) -> Result<bool> {
        let (user, now) = (user.as_str(), now.millis());
        let mut tx = self.begin_write().await?;
        let done = sqlx::query!(
            "UPDATE admin_user SET password_hash = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
            password_hash,
            now,
            user
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        end_sessions_of(&mut tx, user, now).await?;
        self.commit(tx, &[Change::User(user.to_owned())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user(&self, user: &UserId, now: Timestamp) -> Result<bool> {
        let (user, now) = (user.as_str(), now.millis());
        let mut tx = self.begin_write().await?;
        let done = sqlx::query!("DELETE FROM admin_user WHERE id = ?", user)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        end_sessions_of(&mut tx, user, now).await?;
        self.commit(tx, &[Change::User(user.to_owned())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<()> {
        let (created, updated) = (user.created_at.millis(), user.updated_at.millis());
        let id = user.id.as_str();
        sqlx::query!(
            "INSERT INTO admin_user (id, email, first_name, last_name, password_hash, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            id,
            user.email,
            user.first_name,
            user.last_name,
            password_hash,
            created,
            updated
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<StoredUser>> {
        let row = sqlx::query_as!(
            Admin,
            r#"SELECT id AS "id!", email, first_name, last_name, password_hash, created_at, updated_at, deleted_at
               FROM admin_user WHERE email = ? AND deleted_at IS NULL"#,
            email
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(Admin::into_stored).transpose()
    }

    async fn get_user(&self, id: &UserId) -> Result<Option<User>> {
        let id = id.as_str();
        let row = sqlx::query_as!(
            Admin,
            r#"SELECT id AS "id!", email, first_name, last_name, password_hash, created_at, updated_at, deleted_at
               FROM admin_user WHERE id = ? AND deleted_at IS NULL"#,
            id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(row.map(Admin::into_stored).transpose()?.map(|s| s.user))
    }

    async fn count_users(&self) -> Result<u64> {
        let n = sqlx::query_scalar!(r#"SELECT COUNT(*) AS "n!: i64" FROM admin_user WHERE deleted_at IS NULL"#)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

async fn insert_key(tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>, key: &NewApiKey) -> Result<()> {
    let (id, kind, at) = (key.id.as_str(), key.key_type.as_str(), key.created_at.millis());
    sqlx::query!(
        "INSERT INTO api_key (id, token, salt, redacted, title, type, created_by, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        id,
        key.token,
        key.salt,
        key.redacted,
        key.title,
        kind,
        key.created_by,
        at,
        at
    )
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn insert_channel(tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>, c: &SalesChannel) -> Result<()> {
    let (id, created, updated) = (c.id.as_str(), c.created_at.millis(), c.updated_at.millis());
    sqlx::query!(
        "INSERT INTO sales_channel (id, name, description, is_disabled, metadata, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        id,
        c.name,
        c.description,
        c.is_disabled,
        c.metadata,
        created,
        updated
    )
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Ends every live session of `user` inside `tx` (a password change, a deleted user).
async fn end_sessions_of(tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>, user: &str, now: i64) -> Result<()> {
    sqlx::query!(
        "UPDATE admin_session SET ended_at = ? WHERE user_id = ? AND ended_at IS NULL",
        now,
        user
    )
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The cache changes of the keys with these ids (a JSON array), read inside `tx`.
/// Whether the key's title or live links differ from `shape` (read in the writing transaction).
async fn shape_changed(tx: &mut Tx, key: &ApiKeyId, shape: &KeyShape) -> Result<bool> {
    let kid = key.as_str();
    let title = sqlx::query_scalar!("SELECT title FROM api_key WHERE id = ?", kid)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
    let channels = sqlx::query_scalar!(
        r#"SELECT sales_channel_id AS "id!" FROM publishable_api_key_sales_channel
           WHERE publishable_key_id = ? AND deleted_at IS NULL ORDER BY sales_channel_id"#,
        kid
    )
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(shape.changed(title.as_deref(), &channels))
}

async fn key_changes(tx: &mut Tx, ids: &str) -> Result<Vec<Change>> {
    let rows = sqlx::query!(
        r#"SELECT type AS "kind!", token AS "token!" FROM api_key WHERE id IN (SELECT value FROM json_each(?))"#,
        ids
    )
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    Change::of_key_rows(rows.iter().map(|r| (r.kind.as_str(), r.token.as_str())))
}
