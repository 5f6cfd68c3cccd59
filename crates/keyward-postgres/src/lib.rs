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

    async fn insert_api_keys(&self, keys: &[NewApiKey]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        for key in keys {
            insert_key(&mut tx, key).await?;
        }
        self.commit(tx, &Change::keys(keys.iter().map(|k| (k.key_type, k.token.as_str()))))
            .await
    }

    async fn list_api_keys(&self, filter: &ApiKeyFilter, options: &ListOptions<ApiKeyField>) -> Result<Vec<ApiKey>> {
        sql::fetch_list::<Postgres, _, Key>(&self.pool, sql::SELECT_KEYS, filter, options)
            .await?
            .into_iter()
            .map(Key::into_key)
            .collect()
    }

    async fn count_api_keys(&self, filter: &ApiKeyFilter) -> Result<u64> {
        sql::fetch_count::<Postgres, _>(&self.pool, "api_key", filter).await
    }

    async fn find_api_key_by_token(&self, stored_token: &str) -> Result<Option<StoredKey>> {
        let row = sqlx::query_as!(
            Key,
            r#"SELECT id, token, salt, redacted, title, type AS key_type, last_used_at, created_by,
                      revoked_by, revoked_at, created_at, updated_at, deleted_at
               FROM api_key WHERE token = $1"#,
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
            r#"SELECT id, token, salt, redacted, title, type AS key_type, last_used_at, created_by,
                      revoked_by, revoked_at, created_at, updated_at, deleted_at
               FROM api_key WHERE redacted = $1 AND type = 'secret' AND salt <> ''"#,
            redacted
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(Key::into_stored).collect()
    }

    async fn update_api_key_titles(&self, ids: &[ApiKeyId], title: &str, now: Timestamp) -> Result<Vec<ApiKeyId>> {
        let ids = strings(ids);
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let rows = sqlx::query_scalar!(
            "UPDATE api_key SET title = $1, updated_at = $2 WHERE id = ANY($3) RETURNING id",
            title,
            now.as_datetime(),
            &ids
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let changes = key_changes(&mut tx, &ids).await?;
        self.commit(tx, &changes).await?;
        keyward::store::stored_ids(rows)
    }

    async fn restore_api_key_titles(&self, undo: &[TitleUndo], now: Timestamp) -> Result<Vec<ApiKeyId>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let mut restored = Vec::new();
        for u in undo {
            let done = sqlx::query!(
                "UPDATE api_key SET title = $1, updated_at = $2 WHERE id = $3 AND title = $4",
                u.previous,
                now.as_datetime(),
                u.id.as_str(),
                u.written
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if done.rows_affected() > 0 {
                restored.push(u.id.clone());
            }
        }
        let changes = key_changes(&mut tx, &strings(&restored)).await?;
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
        let key_ids = ids;
        let ids = strings(ids);
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let locked = sqlx::query!(
            "SELECT id, type, revoked_at FROM api_key WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &ids
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        // Read once the row locks are held (see the trait).
        let now = clock.now();
        let revoked: Vec<String> = locked
            .into_iter()
            .filter(|r| {
                (once == RevokeOnce::Any || r.r#type == ApiKeyType::Secret.as_str())
                    && r.revoked_at.is_some_and(|at| at <= now.as_datetime())
            })
            .map(|r| r.id)
            .collect();
        if !revoked.is_empty() {
            return Ok(Err(Blocked::AlreadyRevoked(keyward::store::stored_ids(revoked)?)));
        }
        // The key row is locked above; a link change locks it too (FOR SHARE), so the links
        // read here cannot change before this transaction ends.
        if let (Some(shape), Some(key)) = (unchanged, key_ids.first())
            && shape_changed(&mut tx, key, shape).await?
        {
            return Ok(Err(Blocked::Changed(key.clone())));
        }
        // A key revoked at `now` is never given a later revocation: revocation is monotonic.
        sqlx::query!(
            "UPDATE api_key SET revoked_at = $1, revoked_by = $2, updated_at = $3
             WHERE id = ANY($4) AND ($1::timestamptz <= $3::timestamptz OR revoked_at IS NULL OR revoked_at > $3)",
            revoked_at.as_datetime(),
            revoked_by,
            now.as_datetime(),
            &ids
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let changes = key_changes(&mut tx, &ids).await?;
        self.commit(tx, &changes).await?;
        Ok(Ok(()))
    }

    async fn delete_api_keys(&self, ids: &[ApiKeyId], now: Timestamp) -> Result<Guarded<Vec<ApiKeyId>>> {
        let ids = strings(ids);
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let locked = sqlx::query!(
            "SELECT id, revoked_at FROM api_key WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &ids
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let unrevoked: Vec<String> = locked
            .into_iter()
            .filter(|r| r.revoked_at.is_none_or(|at| at > now.as_datetime()))
            .map(|r| r.id)
            .collect();
        if !unrevoked.is_empty() {
            return Ok(Err(Blocked::NotRevoked(keyward::store::stored_ids(unrevoked)?)));
        }
        let changes = key_changes(&mut tx, &ids).await?;
        sqlx::query!(
            "DELETE FROM publishable_api_key_sales_channel WHERE publishable_key_id = ANY($1)",
            &ids
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let deleted = sqlx::query_scalar!("DELETE FROM api_key WHERE id = ANY($1) RETURNING id", &ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        self.commit(tx, &changes).await?;
        Ok(Ok(keyward::store::stored_ids(deleted)?))
    }

    async fn stored_api_keys(&self, ids: &[ApiKeyId]) -> Result<Vec<StoredKey>> {
        let ids = strings(ids);
        let rows = sqlx::query_as!(
            Key,
            r#"SELECT id, token, salt, redacted, title, type AS key_type, last_used_at, created_by,
                      revoked_by, revoked_at, created_at, updated_at, deleted_at
               FROM api_key WHERE id = ANY($1) ORDER BY id"#,
            &ids
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(Key::into_stored).collect()
    }

    async fn restore_api_keys(&self, keys: &[StoredKey]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        for s in keys {
            let k = &s.key;
            sqlx::query!(
                "INSERT INTO api_key (id, token, salt, redacted, title, type, last_used_at, created_by, revoked_by,
                                      revoked_at, created_at, updated_at, deleted_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (id) DO NOTHING",
                k.id.as_str(),
                s.stored_token,
                s.salt,
                k.redacted,
                k.title,
                k.key_type.as_str(),
                k.last_used_at.map(|t| t.as_datetime()),
                k.created_by,
                k.revoked_by,
                k.revoked_at.map(|t| t.as_datetime()),
                k.created_at.as_datetime(),
                k.updated_at.as_datetime(),
                k.deleted_at.map(|t| t.as_datetime())
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        let changes = Change::keys(keys.iter().map(|s| (s.key.key_type, s.stored_token.as_str())));
        self.commit(tx, &changes).await
    }

    async fn restore_revocations(&self, undo: &[RevocationUndo], clock: &dyn Clock) -> Result<Vec<ApiKeyId>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let ids: Vec<String> = undo.iter().map(|u| u.previous.id.as_str().to_owned()).collect();
        sqlx::query!("SELECT id FROM api_key WHERE id = ANY($1) ORDER BY id FOR UPDATE", &ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let now = clock.now();
        let mut restored = Vec::new();
        for u in undo {
            // Only where the row holds this run's revocation, and never making a revoked key
            // valid again: ours has not taken effect, or the one put back already had.
            let done = sqlx::query!(
                "UPDATE api_key SET revoked_by = $1, revoked_at = $2, updated_at = $3
                 WHERE id = $4 AND revoked_by IS NOT DISTINCT FROM $5 AND revoked_at IS NOT DISTINCT FROM $6
                   AND (revoked_at IS NULL OR revoked_at > $3 OR $2 <= $3)",
                u.previous.revoked_by,
                u.previous.revoked_at.map(|t| t.as_datetime()),
                now.as_datetime(),
                u.previous.id.as_str(),
                u.written.revoked_by,
                u.written.revoked_at.map(|t| t.as_datetime())
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            if done.rows_affected() > 0 {
                restored.push(u.previous.id.clone());
            }
        }
        let changes = key_changes(&mut tx, &strings(&restored)).await?;
        self.commit(tx, &changes).await?;
        Ok(restored)
    }

    async fn upgrade_legacy_secret(&self, id: &ApiKeyId, legacy_hash: &str, digest: &str) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let done = sqlx::query!(
            "UPDATE api_key SET token = $1, salt = '' WHERE id = $2 AND token = $3 AND type = 'secret' AND salt <> ''",
            digest,
            id.as_str(),
            legacy_hash
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &Change::keys([(ApiKeyType::Secret, digest)])).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_legacy_secret_keys(&self) -> Result<u64> {
        let n = sqlx::query_scalar!(r#"SELECT COUNT(*) AS "n!" FROM api_key WHERE type = 'secret' AND salt <> ''"#)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        u64::try_from(n).map_err(|_| keyward::Error::unexpected("a negative count"))
    }

    async fn replace_api_keys(&self, pairs: &[(StoredKey, StoredKey)]) -> Result<Vec<ApiKeyId>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let mut replaced = Vec::new();
        for (old, new) in pairs {
            let (o, n) = (&old.key, &new.key);
            let done = sqlx::query!(
                "UPDATE api_key SET token = $1, salt = $2, redacted = $3, title = $4, created_by = $5, revoked_by = $6,
                                    revoked_at = $7, created_at = $8, updated_at = $9
                 WHERE id = $10 AND type = $11 AND token = $12 AND salt = $13 AND redacted = $14 AND title = $15
                   AND created_by = $16 AND revoked_by IS NOT DISTINCT FROM $17
                   AND revoked_at IS NOT DISTINCT FROM $18 AND created_at = $19 AND updated_at = $20",
                new.stored_token,
                new.salt,
                n.redacted,
                n.title,
                n.created_by,
                n.revoked_by,
                n.revoked_at.map(|t| t.as_datetime()),
                n.created_at.as_datetime(),
                n.updated_at.as_datetime(),
                o.id.as_str(),
                o.key_type.as_str(),
                old.stored_token,
                old.salt,
                o.redacted,
                o.title,
                o.created_by,
                o.revoked_by,
                o.revoked_at.map(|t| t.as_datetime()),
                o.created_at.as_datetime(),
                o.updated_at.as_datetime()
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
        let ids: Vec<String> = uses.iter().map(|(id, _)| id.as_str().to_owned()).collect();
        let ats: Vec<DateTime<Utc>> = uses.iter().map(|(_, at)| at.as_datetime()).collect();
        sqlx::query!(
            "UPDATE api_key k SET last_used_at = u.at
             FROM UNNEST($1::text[], $2::timestamptz[]) AS u(id, at)
             WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)",
            &ids,
            &ats
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn insert_sales_channels(&self, channels: &[SalesChannel]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
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
        sql::fetch_list::<Postgres, _, Channel>(&self.pool, sql::SELECT_CHANNELS, filter, options)
            .await?
            .into_iter()
            .map(Channel::into_channel)
            .collect()
    }

    async fn count_sales_channels(&self, filter: &SalesChannelFilter) -> Result<u64> {
        sql::fetch_count::<Postgres, _>(&self.pool, "sales_channel", filter).await
    }

    async fn update_sales_channel(
        &self,
        id: &SalesChannelId,
        patch: &UpdateSalesChannel,
        now: Timestamp,
    ) -> Result<Option<SalesChannel>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let row = sqlx::query_as!(
            Channel,
            "SELECT id, name, description, is_disabled, metadata, created_at, updated_at, deleted_at
             FROM sales_channel WHERE id = $1 FOR UPDATE",
            id.as_str()
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let Some(row) = row else { return Ok(None) };
        let mut channel = row.into_channel()?;
        keyward::store::apply_sales_channel_patch(&mut channel, patch, now);
        sqlx::query!(
            "UPDATE sales_channel SET name = $1, description = $2, is_disabled = $3, metadata = $4, updated_at = $5
             WHERE id = $6",
            channel.name,
            channel.description,
            channel.is_disabled,
            channel.metadata,
            channel.updated_at.as_datetime(),
            channel.id.as_str()
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &[Change::Channel(channel.id.clone())]).await?;
        Ok(Some(channel))
    }

    async fn restore_sales_channel(&self, written: &SalesChannel, previous: &SalesChannel) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let done = sqlx::query!(
            "UPDATE sales_channel SET name = $1, description = $2, is_disabled = $3, metadata = $4, updated_at = $5
             WHERE id = $6 AND name = $7 AND description IS NOT DISTINCT FROM $8 AND is_disabled = $9
               AND updated_at = $10",
            previous.name,
            previous.description,
            previous.is_disabled,
            previous.metadata,
            previous.updated_at.as_datetime(),
            previous.id.as_str(),
            written.name,
            written.description,
            written.is_disabled,
            written.updated_at.as_datetime()
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &[Change::Channel(previous.id.clone())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_sales_channels(&self, ids: &[SalesChannelId]) -> Result<Vec<SalesChannelId>> {
        let channel_ids = ids;
        let ids = strings(ids);
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let linked = sqlx::query!(
            "SELECT k.type, k.token FROM api_key k
             JOIN publishable_api_key_sales_channel l ON l.publishable_key_id = k.id
             WHERE l.sales_channel_id = ANY($1)",
            &ids
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let mut changes = Change::of_key_rows(linked.iter().map(|r| (r.r#type.as_str(), r.token.as_str())))?;
        changes.extend(channel_ids.iter().cloned().map(Change::Channel));
        sqlx::query!(
            "DELETE FROM publishable_api_key_sales_channel WHERE sales_channel_id = ANY($1)",
            &ids
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let deleted = sqlx::query_scalar!("DELETE FROM sales_channel WHERE id = ANY($1) RETURNING id", &ids)
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
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let found = sqlx::query_scalar!("SELECT type FROM api_key WHERE id = $1 FOR SHARE", key.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        match found {
            None => return Ok(Err(Blocked::UnknownKey)),
            Some(t) if t == ApiKeyType::Secret.as_str() => return Ok(Err(Blocked::SecretKey)),
            Some(_) => {}
        }
        let wanted = strings(channels);
        let existing = sqlx::query_scalar!("SELECT id FROM sales_channel WHERE id = ANY($1) FOR SHARE", &wanted)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let unknown: Vec<SalesChannelId> = channels
            .iter()
            .filter(|c| !existing.iter().any(|e| e == c.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Ok(Err(Blocked::UnknownSalesChannels(unknown)));
        }
        let linked = sqlx::query_scalar!(
            "INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, created_at, updated_at)
             SELECT $1, c, $3, $3 FROM UNNEST($2::text[]) AS c
             ON CONFLICT (publishable_key_id, sales_channel_id)
             DO UPDATE SET deleted_at = NULL, updated_at = excluded.updated_at
             WHERE publishable_api_key_sales_channel.deleted_at IS NOT NULL
             RETURNING sales_channel_id",
            key.as_str(),
            &wanted,
            now.as_datetime()
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let changes = key_changes(&mut tx, &strings(std::slice::from_ref(key))).await?;
        self.commit(tx, &changes).await?;
        Ok(Ok(keyward::store::stored_ids(linked)?))
    }

    async fn insert_links(
        &self,
        links: &[(ApiKeyId, SalesChannelId)],
        now: Timestamp,
    ) -> Result<Vec<(ApiKeyId, SalesChannelId)>> {
        let keys: Vec<String> = links.iter().map(|(k, _)| k.as_str().to_owned()).collect();
        let channels: Vec<String> = links.iter().map(|(_, c)| c.as_str().to_owned()).collect();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        // Hold the keys and channels the links name until the insert commits, as the one-key
        // link does: a delete committing between this statement's read and its foreign-key
        // check would otherwise fail the insert instead of leaving the link out.
        sqlx::query!("SELECT id FROM api_key WHERE id = ANY($1) ORDER BY id FOR SHARE", &keys)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        sqlx::query!(
            "SELECT id FROM sales_channel WHERE id = ANY($1) ORDER BY id FOR SHARE",
            &channels
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let rows = sqlx::query!(
            r#"INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, created_at, updated_at)
               SELECT k.id, c.id, $3, $3
               FROM UNNEST($1::text[], $2::text[]) AS l(kid, cid)
               JOIN api_key k ON k.id = l.kid AND k.type = 'publishable'
               JOIN sales_channel c ON c.id = l.cid
               ON CONFLICT (publishable_key_id, sales_channel_id)
               DO UPDATE SET deleted_at = NULL, updated_at = EXCLUDED.updated_at
               WHERE publishable_api_key_sales_channel.deleted_at IS NOT NULL
               RETURNING publishable_key_id AS "key!", sales_channel_id AS "channel!""#,
            &keys,
            &channels,
            now.as_datetime()
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let linked: Vec<(ApiKeyId, SalesChannelId)> = stored_pairs(rows.into_iter().map(|r| (r.key, r.channel)))?;
        let mut ids: Vec<String> = linked.iter().map(|(k, _)| k.as_str().to_owned()).collect();
        ids.dedup();
        let changes = key_changes(&mut tx, &ids).await?;
        self.commit(tx, &changes).await?;
        Ok(linked)
    }

    async fn unlink_sales_channels(
        &self,
        key: &ApiKeyId,
        channels: &[SalesChannelId],
        now: Timestamp,
    ) -> Result<Guarded<Vec<SalesChannelId>>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let found = sqlx::query_scalar!("SELECT type FROM api_key WHERE id = $1 FOR SHARE", key.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?;
        if found.is_none() {
            return Ok(Err(Blocked::UnknownKey));
        }
        let unlinked = sqlx::query_scalar!(
            "UPDATE publishable_api_key_sales_channel SET deleted_at = $1, updated_at = $1
             WHERE publishable_key_id = $2 AND sales_channel_id = ANY($3) AND deleted_at IS NULL
             RETURNING sales_channel_id",
            now.as_datetime(),
            key.as_str(),
            &strings(channels)
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let changes = key_changes(&mut tx, &strings(std::slice::from_ref(key))).await?;
        self.commit(tx, &changes).await?;
        Ok(Ok(keyward::store::stored_ids(unlinked)?))
    }

    async fn links_of_keys(&self, keys: &[ApiKeyId]) -> Result<Vec<(ApiKeyId, SalesChannelId)>> {
        let rows = sqlx::query!(
            "SELECT publishable_key_id AS owner, sales_channel_id AS item FROM publishable_api_key_sales_channel
             WHERE publishable_key_id = ANY($1) AND deleted_at IS NULL
             ORDER BY publishable_key_id, sales_channel_id",
            &strings(keys)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        stored_pairs(rows.into_iter().map(|r| (r.owner, r.item)))
    }

    async fn links_of_sales_channels(&self, channels: &[SalesChannelId]) -> Result<Vec<(SalesChannelId, ApiKeyId)>> {
        let rows = sqlx::query!(
            "SELECT sales_channel_id AS owner, publishable_key_id AS item FROM publishable_api_key_sales_channel
             WHERE sales_channel_id = ANY($1) AND deleted_at IS NULL
             ORDER BY sales_channel_id, publishable_key_id",
            &strings(channels)
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

    async fn insert_session(
        &self,
        id: &str,
        user: &UserId,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        sqlx::query!(
            "INSERT INTO admin_session (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            id,
            user.as_str(),
            created_at.as_datetime(),
            expires_at.as_datetime()
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn session_is_live(&self, id: &str, now: Timestamp) -> Result<bool> {
        let live = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!" FROM admin_session s JOIN admin_user u ON u.id = s.user_id
               WHERE s.id = $1 AND s.ended_at IS NULL AND s.expires_at > $2 AND u.deleted_at IS NULL"#,
            id,
            now.as_datetime()
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(live > 0)
    }

    async fn end_session(&self, id: &str, now: Timestamp) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let done = sqlx::query!(
            "UPDATE admin_session SET ended_at = $1 WHERE id = $2 AND ended_at IS NULL",
            now.as_datetime(),
            id
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &[Change::Session(id.to_owned())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_user_password(&self, user: &UserId, password_hash: &str, now: Timestamp) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let done = sqlx::query!(
            "UPDATE admin_user SET password_hash = $1, updated_at = $2 WHERE id = $3 AND deleted_at IS NULL",
            password_hash,
            now.as_datetime(),
            user.as_str()
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        end_sessions_of(&mut tx, user, now).await?;
        self.commit(tx, &[Change::User(user.as_str().to_owned())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user(&self, user: &UserId, now: Timestamp) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let done = sqlx::query!("DELETE FROM admin_user WHERE id = $1", user.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        end_sessions_of(&mut tx, user, now).await?;
        self.commit(tx, &[Change::User(user.as_str().to_owned())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<()> {
        sqlx::query!(
            "INSERT INTO admin_user (id, email, first_name, last_name, password_hash, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            user.id.as_str(),
            user.email,
            user.first_name,
            user.last_name,
            password_hash,
            user.created_at.as_datetime(),
            user.updated_at.as_datetime()
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<StoredUser>> {
        let row = sqlx::query_as!(
            Admin,
            "SELECT id, email, first_name, last_name, password_hash, created_at, updated_at, deleted_at
             FROM admin_user WHERE email = $1 AND deleted_at IS NULL",
            email
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(Admin::into_stored).transpose()
    }

    async fn get_user(&self, id: &UserId) -> Result<Option<User>> {
        let row = sqlx::query_as!(
            Admin,
            "SELECT id, email, first_name, last_name, password_hash, created_at, updated_at, deleted_at
             FROM admin_user WHERE id = $1 AND deleted_at IS NULL",
            id.as_str()
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(row.map(Admin::into_stored).transpose()?.map(|s| s.user))
    }

    async fn count_users(&self) -> Result<u64> {
        let n = sqlx::query_scalar!(r#"SELECT COUNT(*) AS "n!" FROM admin_user WHERE deleted_at IS NULL"#)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

async fn insert_key(tx: &mut sqlx::Transaction<'static, sqlx::Postgres>, key: &NewApiKey) -> Result<()> {
    sqlx::query!(
        "INSERT INTO api_key (id, token, salt, redacted, title, type, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        key.id.as_str(),
        key.token,
        key.salt,
        key.redacted,
        key.title,
        key.key_type.as_str(),
        key.created_by,
        key.created_at.as_datetime()
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
    let title = sqlx::query_scalar!("SELECT title FROM api_key WHERE id = $1", key.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_error)?;
    let channels = sqlx::query_scalar!(
        "SELECT sales_channel_id FROM publishable_api_key_sales_channel
         WHERE publishable_key_id = $1 AND deleted_at IS NULL ORDER BY sales_channel_id",
        key.as_str()
    )
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(shape.changed(title.as_deref(), &channels))
}

async fn key_changes(tx: &mut Tx, ids: &[String]) -> Result<Vec<Change>> {
    let rows = sqlx::query!("SELECT type, token FROM api_key WHERE id = ANY($1)", ids)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
    Change::of_key_rows(rows.iter().map(|r| (r.r#type.as_str(), r.token.as_str())))
}
