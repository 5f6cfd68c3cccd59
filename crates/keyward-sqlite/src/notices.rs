//! Expiry notices: which are due, and which a run has sent.

use async_trait::async_trait;
use keyward::store::db_error;
use keyward::store::{ExpiryNotice, NoticeStore, StoredInstant};
use keyward::{Result, Timestamp};

use super::SqliteStore;

#[async_trait]
impl NoticeStore for SqliteStore {
    async fn expiry_notices_due(&self, now: Timestamp, warn_until: Timestamp, limit: u32) -> Result<Vec<ExpiryNotice>> {
        let (now, warn_until, limit) = (now.millis(), warn_until.millis(), i64::from(limit));
        let rows = sqlx::query!(
            r#"SELECT id AS "id!", kind AS "kind!: String", expires_at AS "expires_at!: i64" FROM (
                 SELECT k.id, 'expiring' AS kind, k.expires_at FROM api_key k
                 WHERE k.expires_at > ? AND k.expires_at <= ? AND k.deleted_at IS NULL
                   AND (k.revoked_at IS NULL OR k.revoked_at > k.expires_at)
                   AND NOT EXISTS (SELECT 1 FROM api_key_notice n
                                   WHERE n.api_key_id = k.id AND n.kind = 'expiring' AND n.expires_at = k.expires_at)
                 UNION ALL
                 SELECT k.id, 'expired' AS kind, k.expires_at FROM api_key k
                 WHERE k.expires_at <= ? AND k.deleted_at IS NULL
                   AND (k.revoked_at IS NULL OR k.revoked_at > k.expires_at)
                   AND NOT EXISTS (SELECT 1 FROM api_key_notice n
                                   WHERE n.api_key_id = k.id AND n.kind = 'expired' AND n.expires_at = k.expires_at))
               ORDER BY expires_at, id, kind LIMIT ?"#,
            now,
            warn_until,
            now,
            limit
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|r| ExpiryNotice::stored(r.id, &r.kind, r.expires_at.into_timestamp()?))
            .collect()
    }

    async fn record_expiry_notices(
        &self,
        notices: &[ExpiryNotice],
        transaction_id: &str,
        now: Timestamp,
    ) -> Result<Vec<ExpiryNotice>> {
        let now = now.millis();
        let mut tx = self.begin_write().await?;
        for n in notices {
            let (id, kind, at) = (n.id.as_str(), n.kind.as_str(), n.expires_at.millis());
            sqlx::query!(
                "INSERT INTO api_key_notice (api_key_id, kind, expires_at, transaction_id, created_at)
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                id,
                kind,
                at,
                transaction_id,
                now
            )
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        }
        let rows = sqlx::query!(
            r#"SELECT api_key_id AS "id!", kind, expires_at FROM api_key_notice WHERE transaction_id = ?
               ORDER BY expires_at, api_key_id, kind"#,
            transaction_id
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        // Nothing a cache holds changed: a plain commit.
        tx.commit().await.map_err(db_error)?;
        rows.into_iter()
            .map(|r| ExpiryNotice::stored(r.id, &r.kind, r.expires_at.into_timestamp()?))
            .collect()
    }

    async fn forget_expiry_notices(&self, transaction_id: &str) -> Result<()> {
        sqlx::query!("DELETE FROM api_key_notice WHERE transaction_id = ?", transaction_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
