//! API keys: inserts, reads, the guarded revoke and delete, what compensations put back, last use.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use keyward::ClockExt;
use keyward::cache::Change;
use keyward::filter::{ApiKeyField, ApiKeyFilter, ListOptions};
use keyward::store::{
    Blocked, Guarded, KeyShape, KeyStore, NewApiKey, RevocationUndo, RevokeOnce, StoredKey, UpdateUndo, db_error,
};
use keyward::{ApiKey, ApiKeyId, ApiKeyType, Clock, Result, Timestamp, UpdateApiKey, sql};

use super::{Key, Postgres, PostgresStore, insert_key, key_changes, shape_changed, strings};

#[async_trait]
impl KeyStore for PostgresStore {
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
                      revoked_by, revoked_at, created_at, updated_at, deleted_at, expires_at,
                      metadata, permissions, allowed_ips
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
                      revoked_by, revoked_at, created_at, updated_at, deleted_at, expires_at,
                      metadata, permissions, allowed_ips
               FROM api_key WHERE redacted = $1 AND type = 'secret' AND salt <> ''"#,
            redacted
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(Key::into_stored).collect()
    }

    async fn update_api_keys(&self, ids: &[ApiKeyId], update: &UpdateApiKey, now: Timestamp) -> Result<Vec<ApiKeyId>> {
        let ids = strings(ids);
        let [(sets_meta, meta), (sets_perms, perms), (sets_ips, ips)] = update.policy_columns();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let rows = sqlx::query_scalar!(
            "UPDATE api_key SET title = COALESCE($1, title), expires_at = CASE WHEN $2 THEN $3 ELSE expires_at END,
                 metadata = CASE WHEN $6 THEN $7 ELSE metadata END,
                 permissions = CASE WHEN $8 THEN $9 ELSE permissions END,
                 allowed_ips = CASE WHEN $10 THEN $11 ELSE allowed_ips END,
                 updated_at = $4
             WHERE id = ANY($5) RETURNING id",
            update.title.as_deref(),
            update.expires_at.is_some(),
            update.expires_at.flatten().map(|t| t.as_datetime()),
            now.as_datetime(),
            &ids,
            sets_meta,
            meta,
            sets_perms,
            perms,
            sets_ips,
            ips
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        let changes = key_changes(&mut tx, &ids).await?;
        self.commit(tx, &changes).await?;
        keyward::store::stored_ids(rows)
    }

    async fn restore_api_key_updates(&self, undo: &[UpdateUndo], now: Timestamp) -> Result<Vec<ApiKeyId>> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let mut restored = Vec::new();
        for u in undo {
            let [old_meta, old_perms, old_ips] = u.previous_policy.columns();
            let [new_meta, new_perms, new_ips] = u.written_policy.columns();
            let done = sqlx::query!(
                "UPDATE api_key SET title = $1, expires_at = $2, updated_at = $3, metadata = $7, permissions = $8,
                        allowed_ips = $9
                 WHERE id = $4 AND title = $5 AND expires_at IS NOT DISTINCT FROM $6
                   AND metadata IS NOT DISTINCT FROM $10 AND permissions IS NOT DISTINCT FROM $11
                   AND allowed_ips IS NOT DISTINCT FROM $12",
                u.previous,
                u.previous_expires_at.map(|t| t.as_datetime()),
                now.as_datetime(),
                u.id.as_str(),
                u.written,
                u.written_expires_at.map(|t| t.as_datetime()),
                old_meta,
                old_perms,
                old_ips,
                new_meta,
                new_perms,
                new_ips
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
        forward_only: bool,
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
        let sooner: Vec<String> = locked
            .iter()
            .filter(|r| forward_only && r.revoked_at.is_some_and(|at| at < revoked_at.as_datetime()))
            .map(|r| r.id.clone())
            .collect();
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
        if !sooner.is_empty() {
            return Ok(Err(Blocked::Postponed(keyward::store::stored_ids(sooner)?)));
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
                      revoked_by, revoked_at, created_at, updated_at, deleted_at, expires_at,
                      metadata, permissions, allowed_ips
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
            let [meta, perms, ips] = k.policy.columns();
            sqlx::query!(
                "INSERT INTO api_key (id, token, salt, redacted, title, type, last_used_at, created_by, revoked_by,
                                      revoked_at, created_at, updated_at, deleted_at, expires_at, metadata,
                                      permissions, allowed_ips)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
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
                k.deleted_at.map(|t| t.as_datetime()),
                k.expires_at.map(|t| t.as_datetime()),
                meta,
                perms,
                ips
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
}
