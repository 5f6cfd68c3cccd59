//! Sales channels and their links to publishable keys.

use async_trait::async_trait;
use keyward::cache::Change;
use keyward::filter::{ListOptions, SalesChannelField, SalesChannelFilter};
use keyward::store::{Blocked, ChannelStore, Guarded, db_error, stored_pairs};
use keyward::{ApiKeyId, ApiKeyType, Result, SalesChannel, SalesChannelId, Timestamp, UpdateSalesChannel, sql};

use super::{Channel, Postgres, PostgresStore, insert_channel, key_changes, strings};

#[async_trait]
impl ChannelStore for PostgresStore {
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
}
