//! Admin users and their sessions.

use async_trait::async_trait;
use keyward::cache::Change;
use keyward::store::{StoredUser, UserStore, db_error};
use keyward::{Result, Timestamp, User, UserId};

use super::{Admin, SqliteStore, end_sessions_of};

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert_session(
        &self,
        id: &str,
        user: &UserId,
        created_at: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        let (user, created, expires) = (user.as_str(), created_at.millis(), expires_at.millis());
        sqlx::query!(
            "INSERT INTO admin_session (id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
            id,
            user,
            created,
            expires
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn session_is_live(&self, id: &str, now: Timestamp) -> Result<bool> {
        let now = now.millis();
        let live = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!: i64" FROM admin_session s JOIN admin_user u ON u.id = s.user_id
               WHERE s.id = ? AND s.ended_at IS NULL AND s.expires_at > ? AND u.deleted_at IS NULL"#,
            id,
            now
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(live > 0)
    }

    async fn end_session(&self, id: &str, now: Timestamp) -> Result<bool> {
        let now = now.millis();
        let mut tx = self.begin_write().await?;
        let done = sqlx::query!(
            "UPDATE admin_session SET ended_at = ? WHERE id = ? AND ended_at IS NULL",
            now,
            id
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        self.commit(tx, &[Change::Session(id.to_owned())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_user_password(&self, user: &UserId, password_hash: &str, now: Timestamp) -> Result<bool> {
        let (user, now) = (user.as_str(), now.millis());
        let mut tx = self.begin_write().await?;
        let done = sqlx::query!(
            "UPDATE admin_user SET password_hash = ?, updated_at = ? WHERE id = ? AND deleted_at IS NULL",
            password_hash,
            now,
            user
        )
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        end_sessions_of(&mut tx, user, now).await?;
        self.commit(tx, &[Change::User(user.to_owned())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_user(&self, user: &UserId, now: Timestamp) -> Result<bool> {
        let (user, now) = (user.as_str(), now.millis());
        let mut tx = self.begin_write().await?;
        let done = sqlx::query!("DELETE FROM admin_user WHERE id = ?", user)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        end_sessions_of(&mut tx, user, now).await?;
        self.commit(tx, &[Change::User(user.to_owned())]).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_user(&self, user: &User, password_hash: &str) -> Result<()> {
        let (created, updated) = (user.created_at.millis(), user.updated_at.millis());
        let id = user.id.as_str();
        sqlx::query!(
            "INSERT INTO admin_user (id, email, first_name, last_name, password_hash, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            id,
            user.email,
            user.first_name,
            user.last_name,
            password_hash,
            created,
            updated
        )
        .execute(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn find_user_by_email(&self, email: &str) -> Result<Option<StoredUser>> {
        let row = sqlx::query_as!(
            Admin,
            r#"SELECT id AS "id!", email, first_name, last_name, password_hash, created_at, updated_at, deleted_at
               FROM admin_user WHERE email = ? AND deleted_at IS NULL"#,
            email
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        row.map(Admin::into_stored).transpose()
    }

    async fn get_user(&self, id: &UserId) -> Result<Option<User>> {
        let id = id.as_str();
        let row = sqlx::query_as!(
            Admin,
            r#"SELECT id AS "id!", email, first_name, last_name, password_hash, created_at, updated_at, deleted_at
               FROM admin_user WHERE id = ? AND deleted_at IS NULL"#,
            id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error)?;
        Ok(row.map(Admin::into_stored).transpose()?.map(|s| s.user))
    }

    async fn count_users(&self) -> Result<u64> {
        let n = sqlx::query_scalar!(r#"SELECT COUNT(*) AS "n!: i64" FROM admin_user WHERE deleted_at IS NULL"#)
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
