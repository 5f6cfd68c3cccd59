//! keyward's shared store: PostgreSQL, so several keyward nodes can serve one set of keys.
//!
//! Static queries are checked at compile time against this crate's migrations (`sqlx.toml`,
//! `.sqlx/`); id lists are bound as one `text[]` (`= ANY($1)`), so those are checked too. Only
//! list filters are built at run time by `keyward::sql`. Guarded writes lock the rows they check
//! (`FOR UPDATE`) so two nodes cannot both pass a rule the other is about to break.

pub mod medusa;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keyward::cache::{Cache, Change, WatchGuard};
use keyward::idempotency::{IdempotencyRecord, StoredResponse};
use keyward::sql::Dialect;
use keyward::store::{ChannelRow, KeyRow, KeyShape, NewApiKey, Store, UserRow, db_error};
use keyward::{ApiKeyId, Error, Result, SalesChannel, Timestamp, UserId};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, QueryBuilder};

/// The Postgres store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    cache: Arc<Cache>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user@host:5432/db`). Fails fast (5 s) when the server is
    /// unreachable. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::invalid_data(format!("'{}' is not a Postgres URL: {e}", redact_url(url))))?;
        let unreachable =
            |e: String| Error::unavailable(format!("cannot connect to Postgres at '{}': {e}", redact_url(url)));
        // One direct attempt first: a pool would only say "timed out", hiding the cause
        // (connection refused, unknown database, bad password).
        let probe = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&options)).await;
        match probe {
            Err(_) => return Err(unreachable("no answer within 5 s".to_owned())),
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
        }
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Self::from_pool(pool))
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Arc::new(Cache::default()),
        }
    }

    /// Keeps at most `capacity` keys in the verification cache.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = Arc::new(Cache::new(capacity));
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Sends `changes` as notices inside `tx` (Postgres delivers them at commit, to every
    /// listening node, in commit order), commits, then drops what they name from this node's
    /// cache (also when the commit failed: dropping entries is always safe).
    async fn commit(&self, mut tx: Tx, changes: &[Change]) -> Result<()> {
        for payload in Change::pack(changes, self.cache.origin()) {
            // Not a checked query: the macros cannot describe pg_notify's `void` result.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTICE_CHANNEL)
                .bind(payload)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        let done = tx.commit().await;
        self.cache.apply(changes);
        done.map_err(db_error)
    }

    /// Listens for other nodes' changes until the connection is lost. The cache is online only
    /// while the LISTEN holds.
    async fn follow_changes(&self) -> Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await.map_err(db_error)?;
        // A lost connection is reported at once (`None`), not silently re-established: notices
        // sent meanwhile are gone, so the cache must be emptied.
        listener.eager_reconnect(false);
        listener.listen(NOTICE_CHANNEL).await.map_err(db_error)?;
        self.cache.set_online(true);
        while let Some(notice) = listener.try_recv().await.map_err(db_error)? {
            self.cache.apply_notice(notice.payload());
        }
        Ok(())
    }
}

/// The channel cache notices travel on.
pub const NOTICE_CHANNEL: &str = "keyward_cache";
/// The pause before listening again after the connection was lost.
const RETRY_EVERY: Duration = Duration::from_millis(100);

type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// The URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

struct Postgres;

impl Dialect for Postgres {
    type DB = sqlx::Postgres;

    fn push_time(qb: &mut QueryBuilder<sqlx::Postgres>, t: Timestamp) {
        qb.push_bind(t.as_datetime());
    }

    fn push_page(qb: &mut QueryBuilder<sqlx::Postgres>, skip: u64, take: Option<u64>) {
        if let Some(take) = take {
            qb.push(" LIMIT ").push_bind(clamp(take));
        }
        qb.push(" OFFSET ").push_bind(clamp(skip));
    }

    fn push_metadata_eq(qb: &mut QueryBuilder<sqlx::Postgres>, name: &str, value: &str) {
        // JSONB equality with the string: a number or boolean that prints the same is no match.
        qb.push("(\"metadata\" -> ")
            .push_bind(name.to_owned())
            .push(") = to_jsonb(")
            .push_bind(value.to_owned())
            .push("::text)");
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn strings<T: AsRef<str>>(ids: &[T]) -> Vec<String> {
    ids.iter().map(|i| i.as_ref().to_owned()).collect()
}

/// The shared rows with this store's instant type.
type Key = KeyRow<DateTime<Utc>>;
type Channel = ChannelRow<DateTime<Utc>>;
type Admin = UserRow<DateTime<Utc>>;

mod channels;
mod keys;
mod notices;
mod users;

#[async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn cache(&self) -> &Arc<Cache> {
        &self.cache
    }

    async fn watch_changes(&self) {
        let _offline_when_dropped = WatchGuard(&self.cache);
        loop {
            let lost = self.follow_changes().await;
            self.cache.set_online(false);
            match lost {
                Ok(()) => tracing::warn!(
                    task = "cache-watcher",
                    "lost the notice connection; verifying from the database until it is back"
                ),
                Err(e) => {
                    tracing::warn!(task = "cache-watcher", cause = %e.message, "cannot listen for notices; verifying from the database until it can")
                }
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    async fn migrate(&self) -> Result<()> {
        // sqlx takes an advisory lock while migrating, so nodes starting together are safe.
        sqlx::migrate!("./migrations")
            .run(&self.pool)
            .await
            .map_err(|e| Error::unavailable(format!("migrating the Postgres database failed: {e}")))
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // The seed marker is claimed first: of several nodes starting at once, one seeds.
        let claimed =
            sqlx::query!("INSERT INTO keyward_meta (key, value) VALUES ('seeded', 'true') ON CONFLICT DO NOTHING")
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        if claimed.rows_affected() == 0 {
            return Ok(());
        }
        insert_channel(&mut tx, channel).await?;
        insert_key(&mut tx, key).await?;
        sqlx::query!(
            "INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, created_at, updated_at)
             VALUES ($1, $2, $3, $3)",
            key.id.as_str(),
            channel.id.as_str(),
            key.created_at.as_datetime()
        )
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query!("DELETE FROM idempotency_key WHERE expires_at <= $1", now.as_datetime())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query!(
            "DELETE FROM idempotency_key WHERE key_digest = $1 AND response IS NULL AND created_at < $2",
            key_digest,
            abandoned_before.as_datetime()
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let claimed = sqlx::query!(
            "INSERT INTO idempotency_key (key_digest, request_digest, created_at, expires_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (key_digest) DO NOTHING",
            key_digest,
            request_digest,
            now.as_datetime(),
            expires_at.as_datetime()
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let held = if claimed.rows_affected() > 0 {
            None
        } else {
            let row = sqlx::query!(
                "SELECT request_digest, status, response FROM idempotency_key WHERE key_digest = $1",
                key_digest
            )
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
            let row = keyward::store::IdempotencyRow {
                request_digest: row.request_digest,
                status: row.status.map(i64::from),
                response: row.response,
            };
            Some(row.into_record()?)
        };
        tx.commit().await.map_err(db_error)?;
        Ok(held)
    }

    async fn finish_idempotency_key(&self, key_digest: &str, response: &StoredResponse) -> Result<()> {
        sqlx::query!(
            "UPDATE idempotency_key SET status = $1, response = $2 WHERE key_digest = $3",
            i32::from(response.status),
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
            "DELETE FROM idempotency_key WHERE key_digest = $1 AND response IS NULL",
            key_digest
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn setting_or_insert(&self, name: &str, value: &str, now: Timestamp) -> Result<String> {
        sqlx::query!(
            "INSERT INTO keyward_setting (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
            name,
            value,
            now.as_datetime()
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        sqlx::query_scalar!("SELECT value FROM keyward_setting WHERE name = $1", name)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)
    }
}

async fn insert_key(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, key: &NewApiKey) -> Result<()> {
    let [meta, perms, ips] = key.policy.columns();
    sqlx::query!(
        "INSERT INTO api_key (id, token, salt, redacted, title, type, created_by, created_at, updated_at, expires_at,
                              metadata, permissions, allowed_ips)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12)",
        key.id.as_str(),
        key.token,
        key.salt,
        key.redacted,
        key.title,
        key.key_type.as_str(),
        key.created_by,
        key.created_at.as_datetime(),
        key.expires_at.map(|t| t.as_datetime()),
        meta,
        perms,
        ips
    )
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

async fn insert_channel(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, c: &SalesChannel) -> Result<()> {
    sqlx::query!(
        "INSERT INTO sales_channel (id, name, description, is_disabled, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        c.id.as_str(),
        c.name,
        c.description,
        c.is_disabled,
        c.metadata,
        c.created_at.as_datetime(),
        c.updated_at.as_datetime()
    )
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Ends every live session of `user` inside `tx` (a password change, a deleted user).
async fn end_sessions_of(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    user: &UserId,
    now: Timestamp,
) -> Result<()> {
    sqlx::query!(
        "UPDATE admin_session SET ended_at = $1 WHERE user_id = $2 AND ended_at IS NULL",
        now.as_datetime(),
        user.as_str()
    )
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The cache changes of the keys with these ids, read inside `tx`.
/// Whether the key's title or live links differ from `shape` (read in the writing transaction).
async fn shape_changed(tx: &mut Tx, key: &ApiKeyId, shape: &KeyShape) -> Result<bool> {
    // The columns every read of a key takes (`SELECT_KEYS`), in the writing transaction.
    let mut read = sqlx::QueryBuilder::new(keyward::sql::SELECT_KEYS);
    read.push(" WHERE id = ").push_bind(key.as_str());
    let row: Option<Key> = read
        .build_query_as()
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
    let found = row.map(Key::into_key).transpose()?;
    let channels = sqlx::query_scalar!(
        "SELECT sales_channel_id FROM publishable_api_key_sales_channel
         WHERE publishable_key_id = $1 AND deleted_at IS NULL ORDER BY sales_channel_id",
        key.as_str()
    )
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(shape.changed(found.as_ref(), &channels))
}

async fn key_changes(tx: &mut Tx, ids: &[String]) -> Result<Vec<Change>> {
    let rows = sqlx::query!("SELECT type, token FROM api_key WHERE id = ANY($1)", ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
    Change::of_key_rows(rows.iter().map(|r| (r.r#type.as_str(), r.token.as_str())))
}
