//! Admin users and their sessions.

use async_trait::async_trait;
use keyward::cache::Change;
use keyward::store::{StoredUser, UserStore, db_error};
use keyward::{Result, Timestamp, User, UserId};

use super::{Admin, PostgresStore, end_sessions_of};

#[async_trait]
impl UserStore for PostgresStore {
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
