//! Opens the store a database URL names. The one place that knows every backend, so the CLI, the
//! server and the tests choose a store the same way.

use std::sync::Arc;

use keyward::{Error, Result, Store};
use keyward_flow::{Clock, PostgresLog, RunLog, SqliteLog, SystemClock};
use keyward_postgres::PostgresStore;
use keyward_sqlite::SqliteStore;

/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://keyward.db";

/// Which backend a URL names, or why it names none.
pub fn backend_of(url: &str) -> Result<&'static str> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "sqlite" => Ok("sqlite"),
        "postgres" | "postgresql" => Ok("postgres"),
        _ => Err(Error::invalid_data(format!(
            "unsupported database URL '{}': use sqlite://PATH or postgres://USER@HOST/DB",
            keyward_postgres::redact_url(url)
        ))),
    }
}

/// Connects to the database at `url`. Does not migrate.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    Ok(match backend_of(url)? {
        "sqlite" => Arc::new(SqliteStore::connect(url).await?),
        _ => Arc::new(PostgresStore::connect(url).await?),
    })
}

/// Connects to the database at `url` and opens both the store and the workflow run log on it
/// (one pool, so a change and the record of the step that made it live in one database).
/// Does not migrate.
pub async fn open(url: &str) -> Result<(Arc<dyn Store>, Arc<dyn RunLog>)> {
    open_with_cache(url, keyward::cache::DEFAULT_CAPACITY).await
}

/// [`open`], with a verification cache of at most `capacity` keys.
pub async fn open_with_cache(url: &str, capacity: usize) -> Result<(Arc<dyn Store>, Arc<dyn RunLog>)> {
    open_on(url, capacity, Arc::new(SystemClock)).await
}

/// [`open_with_cache`], with the run log (and so every workflow engine on it) on `clock`.
pub async fn open_on(url: &str, capacity: usize, clock: Arc<dyn Clock>) -> Result<(Arc<dyn Store>, Arc<dyn RunLog>)> {
    Ok(match backend_of(url)? {
        "sqlite" => {
            let store = SqliteStore::connect(url).await?.with_cache_capacity(capacity);
            let log = SqliteLog::new(store.pool().clone()).with_clock(clock);
            (Arc::new(store), Arc::new(log))
        }
        _ => {
            let store = PostgresStore::connect(url).await?.with_cache_capacity(capacity);
            let log = PostgresLog::new(store.pool().clone()).with_clock(clock);
            (Arc::new(store), Arc::new(log))
        }
    })
}
