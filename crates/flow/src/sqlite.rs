//! The run log on SQLite, sharing the application's pool (and so its file).
//!
//! Queries are checked at run time, not compile time: this crate serves two backends and sqlx
//! checks a crate's macros against one database; the engine tests run every query on both.
//! Each write is one `BEGIN IMMEDIATE` transaction that first checks the writer still owns the
//! run, so ownership and the write are one atomic unit.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{Row, SqlitePool};
use tokio::sync::Notify;

use crate::events::{Claimed, DeliveryRecord, Event, NewEvent};
use crate::jobs::{JobOutcome, JobRunRecord};

use crate::log::{
    FailureRecord, LogError, RunLog, RunRecord, RunState, Started, StepRecord, db, delivery_from, errors_json,
    event_from, event_id, held, job_run_from, millis, now_millis, run_from, step_from, takers,
};

/// The SQLite run log.
#[derive(Debug, Clone)]
pub struct SqliteLog {
    pool: SqlitePool,
    published: Arc<Notify>,
}

impl SqliteLog {
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            published: Arc::default(),
        }
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, LogError> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }
}

fn text(v: &Value) -> String {
    v.to_string()
}

const RUN_COLUMNS: &str = "workflow, transaction_id, state, input, result, errors, owner, created_at, updated_at";

/// Fails with `LeaseLost` unless `owner` holds the run.
async fn check_owner(
    tx: &mut sqlx::SqliteConnection,
    owner: &str,
    workflow: &str,
    transaction_id: &str,
) -> Result<(), LogError> {
    let owned = sqlx::query("SELECT 1 FROM flow_run WHERE workflow = ? AND transaction_id = ? AND owner = ?")
        .bind(workflow)
        .bind(transaction_id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    owned.map(|_| ()).ok_or(LogError::LeaseLost)
}

#[async_trait]
impl RunLog for SqliteLog {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> Result<(), LogError> {
        let mut migrator = sqlx::migrate!("./migrations/sqlite");
        migrator.dangerous_set_table_name("_flow_migrations");
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| LogError::Unavailable(format!("migrating the workflow log failed: {e}")))
    }

    async fn start(
        &self,
        workflow: &str,
        transaction_id: &str,
        input: &Value,
        owner: &str,
        lease: Duration,
        replace_finished: bool,
    ) -> Result<Started, LogError> {
        let mut tx = self.begin().await?;
        let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM flow_run WHERE workflow = ? AND transaction_id = ?"
        )))
        .bind(workflow)
        .bind(transaction_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(row) = existing {
            let run = run_from(&row)?;
            if !(replace_finished && run.state.is_finished()) {
                tx.commit().await.map_err(db)?;
                return Ok(Started::Existing(Box::new(run)));
            }
            for table in ["flow_step", "flow_run"] {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM {table} WHERE workflow = ? AND transaction_id = ?"
                )))
                .bind(workflow)
                .bind(transaction_id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
        }
        let now = now_millis();
        sqlx::query(
            "INSERT INTO flow_run (workflow, transaction_id, state, input, owner, lease_until, created_at, updated_at)
             VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
        )
        .bind(workflow)
        .bind(transaction_id)
        .bind(text(input))
        .bind(owner)
        .bind(now.saturating_add(millis(lease)))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Started::New)
    }

    async fn load(
        &self,
        workflow: &str,
        transaction_id: &str,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, LogError> {
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM flow_run WHERE workflow = ? AND transaction_id = ?"
        )))
        .bind(workflow)
        .bind(transaction_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        else {
            return Ok(None);
        };
        let run = run_from(&row)?;
        let rows = sqlx::query(
            "SELECT step, position, state, attempts, input, output, compensation_input, error, events
             FROM flow_step WHERE workflow = ? AND transaction_id = ? ORDER BY position, step",
        )
        .bind(workflow)
        .bind(transaction_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let steps = rows.iter().map(step_from).collect::<Result<Vec<_>, LogError>>()?;
        Ok(Some((run, steps)))
    }

    async fn save_step(
        &self,
        owner: &str,
        workflow: &str,
        transaction_id: &str,
        step: &StepRecord,
    ) -> Result<(), LogError> {
        let mut tx = self.begin().await?;
        check_owner(&mut tx, owner, workflow, transaction_id).await?;
        let now = now_millis();
        sqlx::query(
            "INSERT INTO flow_step
                 (workflow, transaction_id, step, position, state, attempts, input, output,
                  compensation_input, error, events, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (workflow, transaction_id, step) DO UPDATE SET
                 position = excluded.position, state = excluded.state, attempts = excluded.attempts,
                 input = excluded.input, output = excluded.output,
                 compensation_input = excluded.compensation_input, error = excluded.error,
                 events = excluded.events, updated_at = excluded.updated_at",
        )
        .bind(workflow)
        .bind(transaction_id)
        .bind(&step.step)
        .bind(i64::from(step.position))
        .bind(step.state.as_str())
        .bind(i64::from(step.attempts))
        .bind(step.input.as_ref().map(text))
        .bind(step.output.as_ref().map(text))
        .bind(step.compensation_input.as_ref().map(text))
        .bind(step.error.as_deref())
        .bind(step.events.as_ref().map(text))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("UPDATE flow_run SET updated_at = ? WHERE workflow = ? AND transaction_id = ?")
            .bind(now)
            .bind(workflow)
            .bind(transaction_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn set_state(
        &self,
        owner: &str,
        workflow: &str,
        transaction_id: &str,
        state: RunState,
        result: Option<&Value>,
        errors: &[FailureRecord],
        events: &[NewEvent],
    ) -> Result<(), LogError> {
        let mut tx = self.begin().await?;
        check_owner(&mut tx, owner, workflow, transaction_id).await?;
        if state == RunState::Done {
            publish_in(&mut tx, events).await?;
        }
        let finished = state.is_finished();
        sqlx::query(
            "UPDATE flow_run SET state = ?, result = ?, errors = ?, updated_at = ?,
                 owner = CASE WHEN ? THEN NULL ELSE owner END,
                 lease_until = CASE WHEN ? THEN NULL ELSE lease_until END
             WHERE workflow = ? AND transaction_id = ?",
        )
        .bind(state.as_str())
        .bind(result.map(text))
        .bind(text(&errors_json(errors)?))
        .bind(now_millis())
        .bind(finished)
        .bind(finished)
        .bind(workflow)
        .bind(transaction_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        if state == RunState::Done && !events.is_empty() {
            self.published.notify_one();
        }
        Ok(())
    }

    async fn renew(&self, owner: &str, workflow: &str, transaction_id: &str, lease: Duration) -> Result<(), LogError> {
        let done = sqlx::query(
            "UPDATE flow_run SET lease_until = ?
             WHERE workflow = ? AND transaction_id = ? AND owner = ?",
        )
        .bind(now_millis().saturating_add(millis(lease)))
        .bind(workflow)
        .bind(transaction_id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        held(done.rows_affected())
    }

    async fn claim_expired(
        &self,
        owner: &str,
        lease: Duration,
        workflows: &[String],
        limit: u32,
    ) -> Result<Vec<(String, String)>, LogError> {
        let names = serde_json::to_string(workflows).map_err(|e| LogError::Other(e.to_string()))?;
        let now = now_millis();
        let rows = sqlx::query(
            "UPDATE flow_run SET owner = ?, lease_until = ?, updated_at = ?
             WHERE (workflow, transaction_id) IN (
                 SELECT workflow, transaction_id FROM flow_run
                 WHERE state IN ('running', 'compensating')
                   AND (lease_until IS NULL OR lease_until <= ?)
                   AND workflow IN (SELECT value FROM json_each(?))
                 ORDER BY lease_until LIMIT ?)
             RETURNING workflow, transaction_id",
        )
        .bind(owner)
        .bind(now.saturating_add(millis(lease)))
        .bind(now)
        .bind(now)
        .bind(names)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("workflow").map_err(db)?,
                    r.try_get("transaction_id").map_err(db)?,
                ))
            })
            .collect()
    }

    async fn list_runs(&self, state: Option<RunState>, limit: u32) -> Result<Vec<RunRecord>, LogError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM flow_run WHERE (? IS NULL OR state = ?)
             ORDER BY created_at DESC, transaction_id DESC LIMIT ?"
        )))
        .bind(state.map(RunState::as_str))
        .bind(state.map(RunState::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(run_from).collect()
    }

    async fn register_subscriber(&self, id: &str, events: &[String]) -> Result<(), LogError> {
        let names = serde_json::to_string(events).map_err(|e| LogError::Other(e.to_string()))?;
        let now = now_millis();
        sqlx::query(
            "INSERT INTO flow_subscriber (id, events, created_at, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET events = excluded.events, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(names)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn publish(&self, events: &[NewEvent]) -> Result<(), LogError> {
        let mut tx = self.begin().await?;
        publish_in(&mut tx, events).await?;
        tx.commit().await.map_err(db)?;
        self.published.notify_one();
        Ok(())
    }

    async fn claim_deliveries(
        &self,
        node: &str,
        subscribers: &[String],
        lock: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, LogError> {
        let names = serde_json::to_string(subscribers).map_err(|e| LogError::Other(e.to_string()))?;
        let now = now_millis();
        let rows = sqlx::query(
            "UPDATE flow_delivery SET locked_by = ?, locked_until = ?, attempts = attempts + 1
             WHERE (event_id, subscriber) IN (
                 SELECT event_id, subscriber FROM flow_delivery
                 WHERE state = 'pending' AND next_attempt_at <= ?
                   AND (locked_until IS NULL OR locked_until <= ?)
                   AND subscriber IN (SELECT value FROM json_each(?))
                 ORDER BY next_attempt_at LIMIT ?)
             RETURNING event_id, subscriber, attempts",
        )
        .bind(node)
        .bind(now.saturating_add(millis(lock)))
        .bind(now)
        .bind(now)
        .bind(names)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut claims = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("event_id").map_err(db)?;
            let attempts: i64 = r.try_get("attempts").map_err(db)?;
            let row = sqlx::query("SELECT id, name, data, metadata, created_at FROM flow_event WHERE id = ?")
                .bind(&id)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
            claims.push(Claimed {
                event: event_from(&row)?,
                subscriber: r.try_get("subscriber").map_err(db)?,
                attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
            });
        }
        Ok(claims)
    }

    async fn delivered(&self, node: &str, event_id: &str, subscriber: &str) -> Result<(), LogError> {
        let done = sqlx::query(
            "UPDATE flow_delivery SET state = 'delivered', delivered_at = ?, locked_by = NULL, locked_until = NULL,
                 last_error = NULL
             WHERE event_id = ? AND subscriber = ? AND locked_by = ?",
        )
        .bind(now_millis())
        .bind(event_id)
        .bind(subscriber)
        .bind(node)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        held(done.rows_affected())
    }

    async fn delivery_failed(
        &self,
        node: &str,
        event_id: &str,
        subscriber: &str,
        error: &str,
        retry_in: Duration,
    ) -> Result<(), LogError> {
        sqlx::query(
            "UPDATE flow_delivery SET next_attempt_at = ?, last_error = ?, locked_by = NULL, locked_until = NULL
             WHERE event_id = ? AND subscriber = ? AND locked_by = ?",
        )
        .bind(now_millis().saturating_add(millis(retry_in)))
        .bind(error)
        .bind(event_id)
        .bind(subscriber)
        .bind(node)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list_events(&self, limit: u32) -> Result<Vec<(Event, Vec<DeliveryRecord>)>, LogError> {
        let rows = sqlx::query(
            "SELECT id, name, data, metadata, created_at FROM flow_event ORDER BY created_at DESC, id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let event = event_from(&row)?;
            let deliveries = sqlx::query(
                "SELECT subscriber, state, attempts, last_error, next_attempt_at, delivered_at
                 FROM flow_delivery WHERE event_id = ? ORDER BY subscriber",
            )
            .bind(&event.id)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
            let deliveries = deliveries
                .iter()
                .map(delivery_from)
                .collect::<Result<Vec<_>, LogError>>()?;
            out.push((event, deliveries));
        }
        Ok(out)
    }

    fn published(&self) -> Arc<Notify> {
        self.published.clone()
    }

    async fn listen(&self) -> Result<(), LogError> {
        Ok(())
    }

    async fn claim_tick(
        &self,
        job: &str,
        tick: i64,
        node: &str,
        outcome: JobOutcome,
        lease: Duration,
    ) -> Result<bool, LogError> {
        let now = now_millis();
        let running = outcome == JobOutcome::Running;
        let done = sqlx::query(
            "INSERT INTO flow_job_run (job, tick, node, outcome, started_at, finished_at, lease_until)
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job, tick) DO NOTHING",
        )
        .bind(job)
        .bind(tick)
        .bind(node)
        .bind(outcome.as_str())
        .bind(now)
        .bind((!running).then_some(now))
        .bind(running.then(|| now.saturating_add(millis(lease))))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_tick(
        &self,
        job: &str,
        tick: i64,
        outcome: JobOutcome,
        error: Option<&str>,
    ) -> Result<(), LogError> {
        sqlx::query(
            "UPDATE flow_job_run SET outcome = ?, error = ?, finished_at = ?, lease_until = NULL
             WHERE job = ? AND tick = ?",
        )
        .bind(outcome.as_str())
        .bind(error)
        .bind(now_millis())
        .bind(job)
        .bind(tick)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn job_running(&self, job: &str) -> Result<bool, LogError> {
        let row =
            sqlx::query("SELECT 1 FROM flow_job_run WHERE job = ? AND outcome = 'running' AND lease_until > ? LIMIT 1")
                .bind(job)
                .bind(now_millis())
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        Ok(row.is_some())
    }

    async fn job_executions(&self, job: &str) -> Result<u64, LogError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_job_run WHERE job = ? AND outcome <> 'skipped'")
            .bind(job)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn list_job_runs(&self, job: Option<&str>, limit: u32) -> Result<Vec<JobRunRecord>, LogError> {
        let rows = sqlx::query(
            "SELECT job, tick, node, outcome, error, started_at, finished_at FROM flow_job_run
             WHERE (? IS NULL OR job = ?) ORDER BY tick DESC, job LIMIT ?",
        )
        .bind(job)
        .bind(job)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(job_run_from).collect()
    }
}

/// Writes events to the outbox with a delivery for each subscriber that takes them.
async fn publish_in(tx: &mut sqlx::SqliteConnection, events: &[NewEvent]) -> Result<(), LogError> {
    if events.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query("SELECT id, events FROM flow_subscriber")
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
    let mut subscribers = Vec::with_capacity(rows.len());
    for r in rows {
        let names: Option<String> = r.try_get("events").map_err(db)?;
        let names: Vec<String> = names.and_then(|n| serde_json::from_str(&n).ok()).unwrap_or_default();
        subscribers.push((r.try_get::<String, _>("id").map_err(db)?, names));
    }
    let now = now_millis();
    for e in events {
        let id = event_id();
        sqlx::query("INSERT INTO flow_event (id, name, data, metadata, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(&id)
            .bind(&e.name)
            .bind(text(&e.data))
            .bind(text(&e.metadata))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for subscriber in takers(&subscribers, &e.name) {
            sqlx::query(
                "INSERT INTO flow_delivery (event_id, subscriber, state, attempts, next_attempt_at)
                 VALUES (?, ?, 'pending', 0, ?)",
            )
            .bind(&id)
            .bind(subscriber)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
    }
    Ok(())
}
