//! The run log, written once for SQLite and Postgres.
//!
//! Every operation is one algorithm over [`Dialect`]: the statements are Postgres's SQL, and
//! the SQLite dialect rewrites the little that differs (placeholders, the JSON-array function,
//! row locks). Writes that check ownership run in one transaction that first reads the run:
//! Postgres locks that row (`FOR UPDATE`), SQLite takes the database's write lock up front
//! (`BEGIN IMMEDIATE`), so a takeover and a late write by the old owner never interleave.
//! Claims (expired runs, due deliveries) pick rows with `FOR UPDATE SKIP LOCKED` on Postgres,
//! so two nodes never claim the same row; SQLite has one writer at a time.
//!
//! Instants are milliseconds since the Unix epoch read from the log's [`Clock`] — one clock for
//! the writes, the lease comparisons and the engines on the log, on both backends. Nodes of a
//! Postgres cluster therefore compare leases by their own clocks: keep them in sync (NTP) to
//! well within a lease (15 s by default).
//!
//! Queries are checked at run time, not compile time: sqlx checks a crate's macros against one
//! database, and this crate serves two; the engine tests run every statement on both.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::{Database, Pool};
use tokio::sync::Notify;

use crate::clock::{Clock, SystemClock, millis};
use crate::events::NewEvent;
use crate::log::{LogError, db};

mod exec;
mod rows;

use exec::{LogConn, LogRows, Stmt};

/// What the log needs of a backend beyond its sqlx driver: implemented for `sqlx::Sqlite` and
/// `sqlx::Postgres`.
pub trait Dialect: Database<Connection: LogConn, Row: LogRows> {
    /// `sqlite` or `postgres`.
    const BACKEND: &'static str;

    /// The statement that opens a transaction that writes.
    const BEGIN: &'static str;

    /// The backend's SQL for `sql`, written in Postgres's.
    fn sql(sql: &str) -> String;

    /// Applies the log's migrations (its own history, `_flow_migrations`).
    fn migrate(pool: &Pool<Self>) -> BoxFuture<'_, Result<(), LogError>>;

    /// A statement that tells other nodes, when its transaction commits, that events were
    /// published; `None` where there are no other nodes to tell.
    const ANNOUNCE: Option<&'static str> = None;

    /// Passes other nodes' announcements to `published` from now on.
    fn listen(pool: &Pool<Self>, published: Arc<Notify>) -> BoxFuture<'_, Result<(), LogError>> {
        let _ = (pool, published);
        Box::pin(async { Ok(()) })
    }
}

/// The run log on a sqlx pool: [`crate::SqliteLog`] or [`crate::PostgresLog`].
#[derive(Debug, Clone)]
pub struct SqlLog<DB: Database> {
    pool: Pool<DB>,
    clock: Arc<dyn Clock>,
    published: Arc<Notify>,
    listening: Arc<AtomicBool>,
}

impl<DB: Dialect> SqlLog<DB> {
    /// A log on `pool`, on the system clock. Call [`RunLog::migrate`] before use.
    pub fn new(pool: Pool<DB>) -> Self {
        Self {
            pool,
            clock: Arc::new(SystemClock),
            published: Arc::default(),
            listening: Arc::default(),
        }
    }

    /// The same log on another clock (a [`crate::ManualClock`] in tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> i64 {
        self.clock.now_millis()
    }

    fn until(&self, d: Duration) -> i64 {
        self.now().saturating_add(millis(d))
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, DB>, LogError> {
        self.pool.begin_with(DB::BEGIN).await.map_err(db)
    }

    async fn run(&self, stmt: Stmt<'_>) -> Result<u64, LogError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        conn.run(stmt).await
    }

    async fn rows(&self, stmt: Stmt<'_>) -> Result<Vec<DB::Row>, LogError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        conn.rows(stmt).await
    }

    /// Every row `stmt` returns, each read by `read`.
    async fn rows_as<T>(
        &self,
        stmt: Stmt<'_>,
        read: impl Fn(&DB::Row) -> Result<T, LogError>,
    ) -> Result<Vec<T>, LogError> {
        self.rows(stmt).await?.iter().map(read).collect()
    }
}

/// A statement in `DB`'s SQL.
fn stmt<'a, DB: Dialect>(sql: &str) -> Stmt<'a> {
    Stmt::new(DB::sql(sql))
}

const RUN: &str = "SELECT workflow, transaction_id, state, input, result, errors, owner, created_at, updated_at
    FROM flow_run WHERE workflow = $1 AND transaction_id = $2";

/// Turns an UPDATE's row count into "the writer no longer holds what it updated".
fn held(rows: u64) -> Result<(), LogError> {
    if rows == 0 { Err(LogError::LeaseLost) } else { Ok(()) }
}

fn to_json(v: &impl serde::Serialize) -> Result<Value, LogError> {
    serde_json::to_value(v).map_err(|e| LogError::Other(e.to_string()))
}

/// Locks the run row; fails with `LeaseLost` unless `owner` holds it.
async fn check_owner<DB: Dialect>(
    conn: &mut DB::Connection,
    owner: &str,
    workflow: &str,
    transaction_id: &str,
) -> Result<(), LogError> {
    let owned = stmt::<DB>(
        "SELECT 1 AS one FROM flow_run WHERE workflow = $1 AND transaction_id = $2 AND owner = $3 FOR UPDATE",
    )
    .bind(workflow)
    .bind(transaction_id)
    .bind(owner);
    if conn.rows(owned).await?.is_empty() {
        Err(LogError::LeaseLost)
    } else {
        Ok(())
    }
}

/// Writes events to the outbox at `now`, with a delivery for each subscriber that takes them.
async fn publish_in<DB: Dialect>(conn: &mut DB::Connection, events: &[NewEvent], now: i64) -> Result<(), LogError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut subscribers = Vec::new();
    for row in conn.rows(stmt::<DB>("SELECT id, events FROM flow_subscriber")).await? {
        let names: Vec<String> = row
            .json("events")?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        subscribers.push((row.text("id")?, names));
    }
    for e in events {
        let id = format!("evt_{}", crate::ids::new_ulid());
        let insert =
            stmt::<DB>("INSERT INTO flow_event (id, name, data, metadata, created_at) VALUES ($1, $2, $3, $4, $5)")
                .bind(&id)
                .bind(&e.name)
                .bind(&e.data)
                .bind(&e.metadata)
                .bind(now);
        conn.run(insert).await?;
        let takers: Vec<&str> = subscribers
            .iter()
            .filter(|(_, p)| crate::events::takes(p, &e.name))
            .map(|(id, _)| id.as_str())
            .collect();
        if !takers.is_empty() {
            let deliveries = stmt::<DB>(
                "INSERT INTO flow_delivery (event_id, subscriber, state, attempts, next_attempt_at)
                 SELECT $1, value, 'pending', 0, $2 FROM jsonb_array_elements_text($3)",
            )
            .bind(&id)
            .bind(now)
            .bind(to_json(&takers)?);
            conn.run(deliveries).await?;
        }
    }
    if let Some(announce) = DB::ANNOUNCE {
        conn.run(Stmt::new(announce.to_owned())).await?;
    }
    Ok(())
}

mod ops;

/// A migration that did not apply.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn migration_failed(e: sqlx::migrate::MigrateError) -> LogError {
    LogError::Unavailable(format!("migrating the workflow log failed: {e}"))
}
