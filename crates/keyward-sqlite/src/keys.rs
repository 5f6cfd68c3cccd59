//! API keys: inserts, reads, the guarded revoke and delete, what compensations put back, last use.

use async_trait::async_trait;
use keyward::ClockExt;
use keyward::cache::Change;
use keyward::filter::{ApiKeyField, ApiKeyFilter, ListOptions};
use keyward::store::{
    Blocked, Guarded, KeyShape, KeyStore, NewApiKey, RevocationUndo, RevokeOnce, StoredKey, UpdateUndo, db_error,
};
use keyward::{ApiKey, ApiKeyId, ApiKeyType, Clock, Result, Timestamp, UpdateApiKey, sql};

use super::{Key, Sqlite, SqliteStore, insert_key, json_ids, key_changes, scheduled_before, shape_changed};

#[async_trait]
impl KeyStore for SqliteStore {
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
                      revoked_by, revoked_at, created_at, updated_at, deleted_at, expires_at,
                      metadata AS "metadata: serde_json::Value", permissions AS "permissions: serde_json::Value",
                      allowed_ips AS "allowed_ips: serde_json::Value"
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
                      revoked_by, revoked_at, created_at, updated_at, deleted_at, expires_at,
                      metadata AS "metadata: serde_json::Value", permissions AS "permissions: serde_json::Value",
                      allowed_ips AS "allowed_ips: serde_json::Value"
               FROM api_key WHERE redacted = ? AND type = 'secret' AND salt <> ''"#,
            redacted
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter().map(Key::into_stored).collect()
    }

    async fn update_api_keys(&self, ids: &[ApiKeyId], update: &UpdateApiKey, now: Timestamp) -> Result<Vec<ApiKeyId>> {
        let (ids, now) = (json_ids(ids), now.millis());
        let (sets_expiry, expires) = (
            update.expires_at.is_some(),
            update.expires_at.flatten().map(|t| t.millis()),
        );
        let [(sets_meta, meta), (sets_perms, perms), (sets_ips, ips)] = update.policy_columns();
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query!(
            r#"UPDATE api_key SET title = COALESCE(?, title), expires_at = CASE WHEN ? THEN ? ELSE expires_at END,
                   metadata = CASE WHEN ? THEN ? ELSE metadata END,
                   permissions = CASE WHEN ? THEN ? ELSE permissions END,
                   allowed_ips = CASE WHEN ? THEN ? ELSE allowed_ips END,
                   updated_at = ?
               WHERE id IN (SELECT value FROM json_each(?))
               RETURNING id AS "id!""#,
            update.title,
            sets_expiry,
            expires,
            sets_meta,
            meta,
            sets_perms,
            perms,
            sets_ips,
            ips,
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

    async fn restore_api_key_updates(&self, undo: &[UpdateUndo], now: Timestamp) -> Result<Vec<ApiKeyId>> {
        let now = now.millis();
        let mut tx = self.begin_write().await?;
        let mut restored = Vec::new();
        for u in undo {
            let id = u.id.as_str();
            let (previous, written) = (
                u.previous_expires_at.map(|t| t.millis()),
                u.written_expires_at.map(|t| t.millis()),
            );
            let [old_meta, old_perms, old_ips] = u.previous_policy.columns();
            let [new_meta, new_perms, new_ips] = u.written_policy.columns();
            let done = sqlx::query!(
                "UPDATE api_key SET title = ?, expires_at = ?, metadata = ?, permissions = ?, allowed_ips = ?,
                        updated_at = ?
                 WHERE id = ? AND title = ? AND expires_at IS ? AND metadata IS ? AND permissions IS ?
                   AND allowed_ips IS ?",
                u.previous,
                previous,
                old_meta,
                old_perms,
                old_ips,
                now,
                id,
                u.written,
                written,
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
        forward_only: bool,
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
        if forward_only {
            let sooner = scheduled_before(&mut tx, &ids, revoked_at).await?;
            if !sooner.is_empty() {
                return Ok(Err(Blocked::Postponed(sooner)));
            }
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
                      revoked_by, revoked_at, created_at, updated_at, deleted_at, expires_at,
                      metadata AS "metadata: serde_json::Value", permissions AS "permissions: serde_json::Value",
                      allowed_ips AS "allowed_ips: serde_json::Value"
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
            let expires = k.expires_at.map(|t| t.millis());
            let [meta, perms, ips] = k.policy.columns();
            sqlx::query!(
                "INSERT INTO api_key (id, token, salt, redacted, title, type, last_used_at, created_by, revoked_by,
                                      revoked_at, created_at, updated_at, deleted_at, expires_at, metadata,
                                      permissions, allowed_ips)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
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
                deleted,
                expires,
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
}
