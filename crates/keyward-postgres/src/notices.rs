//! Expiry notices: which are due, and which a run has sent.

use async_trait::async_trait;
use keyward::store::db_error;
use keyward::store::{ExpiryNotice, NoticeStore};
use keyward::{Result, Timestamp};

use super::PostgresStore;

#[async_trait]
impl NoticeStore for PostgresStore {
    async fn expiry_notices_due(&self, now: Timestamp, warn_until: Timestamp, limit: u32) -> Result<Vec<ExpiryNotice>> {
        let rows = sqlx::query!(
            r#"SELECT id AS "id!", kind AS "kind!", expires_at AS "expires_at!" FROM (
                 SELECT k.id, 'expiring' AS kind, k.expires_at FROM api_key k
                 WHERE k.expires_at > $1 AND k.expires_at <= $2 AND k.deleted_at IS NULL
                   AND (k.revoked_at IS NULL OR k.revoked_at > k.expires_at)
                   AND NOT EXISTS (SELECT 1 FROM api_key_notice n
                                   WHERE n.api_key_id = k.id AND n.kind = 'expiring' AND n.expires_at = k.expires_at)
                 UNION ALL
                 SELECT k.id, 'expired' AS kind, k.expires_at FROM api_key k
                 WHERE k.expires_at <= $1 AND k.deleted_at IS NULL
                   AND (k.revoked_at IS NULL OR k.revoked_at > k.expires_at)
                   AND NOT EXISTS (SELECT 1 FROM api_key_notice n
                                   WHERE n.api_key_id = k.id AND n.kind = 'expired' AND n.expires_at = k.expires_at)) due
               ORDER BY expires_at, id, kind LIMIT $3"#,
            now.as_datetime(),
            warn_until.as_datetime(),
            i64::from(limit)
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.into_iter()
            .map(|r| ExpiryNotice::stored(r.id, &r.kind, Timestamp::from_datetime(r.expires_at)))
            .collect()
    }

    async fn record_expiry_notices(
        &self,
        notices: &[ExpiryNotice],
        transaction_id: &str,
        now: Timestamp,
    ) -> Result<Vec<ExpiryNotice>> {
        let ids: Vec<String> = notices.iter().map(|n| n.id.as_str().to_owned()).collect();
        let kinds: Vec<String> = notices.iter().map(|n| n.kind.as_str().to_owned()).collect();
        let instants: Vec<chrono::DateTime<chrono::Utc>> = notices.iter().map(|n| n.expires_at.as_datetime()).collect();
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        sqlx::query!(
            "INSERT INTO api_key_notice (api_key_id, kind, expires_at, transaction_id, created_at)
             SELECT id, kind, at, $4, $5 FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS n (id, kind, at)
             ON CONFLICT DO NOTHING",
            &ids,
            &kinds,
            &instants,
            transaction_id,
            now.as_datetime()
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        let rows = sqlx::query!(
            "SELECT api_key_id, kind, expires_at FROM api_key_notice WHERE transaction_id = $1
             ORDER BY expires_at, api_key_id, kind",
            transaction_id
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db_error)?;
        // Nothing a cache holds changed: a plain commit.
        tx.commit().await.map_err(db_error)?;
        rows.into_iter()
            .map(|r| ExpiryNotice::stored(r.api_key_id, &r.kind, Timestamp::from_datetime(r.expires_at)))
            .collect()
    }

    async fn forget_expiry_notices(&self, transaction_id: &str) -> Result<()> {
        sqlx::query!("DELETE FROM api_key_notice WHERE transaction_id = $1", transaction_id)
            .execute(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(())
    }
}
