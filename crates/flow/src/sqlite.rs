//! The run log on SQLite, sharing the application's pool (and so its file): the SQLite
//! [`Dialect`] of the one log in `sql`.
//!
//! A writing transaction takes the database's write lock up front (`BEGIN IMMEDIATE`), so the
//! ownership check and the write are one atomic unit and row locks have nothing to add.

use futures_util::future::BoxFuture;
use sqlx::{Pool, Sqlite};

use crate::log::LogError;
use crate::sql::{Dialect, SqlLog};

/// The SQLite run log.
pub type SqliteLog = SqlLog<Sqlite>;

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";
    const BEGIN: &'static str = "BEGIN IMMEDIATE";

    /// Numbered placeholders as `?N`, `json_each` for a JSON array's elements, and no row locks.
    fn sql(sql: &str) -> String {
        sql.replace(" FOR UPDATE SKIP LOCKED", "")
            .replace(" FOR UPDATE", "")
            .replace("jsonb_array_elements_text(", "json_each(")
            .replace('$', "?")
    }

    fn migrate(pool: &Pool<Self>) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            let mut migrator = sqlx::migrate!("./migrations/sqlite");
            migrator.dangerous_set_table_name("_flow_migrations");
            migrator.run(pool).await.map_err(crate::sql::migration_failed)
        })
    }
}
