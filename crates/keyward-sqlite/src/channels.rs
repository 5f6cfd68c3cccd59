//! Sales channels and their links to publishable keys.

use async_trait::async_trait;
use keyward::cache::Change;
use keyward::filter::{ListOptions, SalesChannelField, SalesChannelFilter};
use keyward::store::{Blocked, ChannelStore, Guarded, db_error, stored_pairs};
use keyward::{ApiKeyId, ApiKeyType, Result, SalesChannel, SalesChannelId, Timestamp, UpdateSalesChannel, sql};

use super::{Channel, Sqlite, SqliteStore, insert_channel, json_ids, key_changes};

#[async_trait]
impl ChannelStore for SqliteStore {
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
}
