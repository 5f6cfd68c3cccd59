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
use keyward::idempotency::{IdempotencyRecord, StoredResponse};
use keyward::sql::Dialect;
use keyward::store::{ChannelRow, KeyRow, KeyShape, NewApiKey, Store, UserRow, db_error};
use keyward::{ApiKeyId, Error, Result, SalesChannel, Timestamp};
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

    fn push_metadata_eq(qb: &mut QueryBuilder<sqlx::Sqlite>, name: &str, value: &str) {
        // The member's JSON text against the value's, so a string matches a string only (as on
        // Postgres). The path quotes the name, so `.` and `:` in it are taken literally.
        qb.push("(\"metadata\" -> ")
            .push_bind(format!("$.\"{name}\""))
            .push(") = json_quote(")
            .push_bind(value.to_owned())
            .push(")");
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

mod channels;
mod keys;
mod notices;
mod users;

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
}

async fn insert_key(tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>, key: &NewApiKey) -> Result<()> {
    let (id, kind, at) = (key.id.as_str(), key.key_type.as_str(), key.created_at.millis());
    let expires = key.expires_at.map(|t| t.millis());
    let [meta, perms, ips] = key.policy.columns();
    sqlx::query!(
        "INSERT INTO api_key (id, token, salt, redacted, title, type, created_by, created_at, updated_at, expires_at,
                              metadata, permissions, allowed_ips)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        id,
        key.token,
        key.salt,
        key.redacted,
        key.title,
        kind,
        key.created_by,
        at,
        at,
        expires,
        meta,
        perms,
        ips
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
    // The columns every read of a key takes (`SELECT_KEYS`), in the writing transaction.
    let mut read = sqlx::QueryBuilder::new(keyward::sql::SELECT_KEYS);
    read.push(" WHERE id = ").push_bind(kid);
    let row: Option<Key> = read
        .build_query_as()
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
    let key = row.map(Key::into_key).transpose()?;
    let channels = sqlx::query_scalar!(
        r#"SELECT sales_channel_id AS "id!" FROM publishable_api_key_sales_channel
           WHERE publishable_key_id = ? AND deleted_at IS NULL ORDER BY sales_channel_id"#,
        kid
    )
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(shape.changed(key.as_ref(), &channels))
}

/// The keys of `ids` (a JSON array) whose revocation is scheduled before `at` (ms), read in the
/// writing transaction.
async fn scheduled_before(tx: &mut Tx, ids: &str, at: i64) -> Result<Vec<ApiKeyId>> {
    let mut read = sqlx::QueryBuilder::new(keyward::sql::SELECT_KEYS);
    read.push(" WHERE id IN (SELECT value FROM json_each(")
        .push_bind(ids)
        .push("))");
    let rows: Vec<Key> = read.build_query_as().fetch_all(&mut **tx).await.map_err(db_error)?;
    let mut sooner = Vec::new();
    for row in rows {
        let key = row.into_key()?;
        if key.revoked_at.is_some_and(|r| r.millis() < at) {
            sooner.push(key.id);
        }
    }
    Ok(sooner)
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
