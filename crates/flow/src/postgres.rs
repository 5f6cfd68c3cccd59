//! The run log on PostgreSQL, shared by every node of a cluster: the Postgres [`Dialect`] of
//! the one log in `sql`, and the `LISTEN` that wakes a node's dispatcher when another node
//! publishes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::{Pool, Postgres};
use tokio::sync::Notify;

use crate::log::{LogError, db};
use crate::sql::{Dialect, SqlLog};

/// The Postgres run log.
pub type PostgresLog = SqlLog<Postgres>;

/// The channel publications are announced on (a macro, so the announcing statement is built
/// from the same name at compile time).
macro_rules! channel {
    () => {
        "keyward_flow_events"
    };
}
const CHANNEL: &str = channel!();

impl Dialect for Postgres {
    const BACKEND: &'static str = "postgres";
    const BEGIN: &'static str = "BEGIN";
    const ANNOUNCE: Option<&'static str> = Some(concat!("SELECT pg_notify('", channel!(), "', '')"));

    /// The log's statements are written in Postgres's SQL.
    fn sql(sql: &str) -> String {
        sql.to_owned()
    }

    fn migrate(pool: &Pool<Self>) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            let mut migrator = sqlx::migrate!("./migrations/postgres");
            migrator.dangerous_set_table_name("_flow_migrations");
            migrator.run(pool).await.map_err(crate::sql::migration_failed)
        })
    }

    fn listen(pool: &Pool<Self>, published: Arc<Notify>) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            let mut listener = sqlx::postgres::PgListener::connect_with(pool).await.map_err(db)?;
            listener.listen(CHANNEL).await.map_err(db)?;
            tokio::spawn(async move {
                loop {
                    // `try_recv` gives `None` when the connection dropped; the listener
                    // reconnects on the next call. Anything published meanwhile is found by polling.
                    match listener.try_recv().await {
                        Ok(_) => published.notify_one(),
                        Err(e) => {
                            tracing::warn!(error = %e, "event listener lost its connection; retrying");
                            // A real network's back-off, not the engine's clock.
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
            Ok(())
        })
    }
}
