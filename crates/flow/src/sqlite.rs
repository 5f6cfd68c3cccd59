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
        numbered_placeholders(
            &sql.replace(" FOR UPDATE SKIP LOCKED", "")
                .replace(" FOR UPDATE", "")
                .replace("jsonb_array_elements_text(", "json_each("),
        )
    }

    fn migrate(pool: &Pool<Self>) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            let mut migrator = sqlx::migrate!("./migrations/sqlite");
            migrator.dangerous_set_table_name("_flow_migrations");
            migrator.run(pool).await.map_err(crate::sql::migration_failed)
        })
    }
}

/// Postgres's placeholders (`$1`) as SQLite's numbered ones (`?1`): only a `$` followed by a digit
/// and outside a quoted string or identifier is one, so a `$` in a literal (a JSON path) stays.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('?');
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod placeholder_tests {
    use super::numbered_placeholders;

    #[test]
    fn only_placeholders_change() {
        assert_eq!(
            numbered_placeholders("SELECT '$1', \"a$2\", x->>'$.k' FROM t WHERE a = $1 AND b = $12"),
            "SELECT '$1', \"a$2\", x->>'$.k' FROM t WHERE a = ?1 AND b = ?12"
        );
        assert_eq!(numbered_placeholders("WHERE a = $ 1"), "WHERE a = $ 1");
    }
}
