//! The run log on PostgreSQL, shared by every node of a cluster.
//!
//! Leases are compared with the database's clock (`clock_timestamp()`), so nodes need not agree
//! on the time. A write first locks the run row (`FOR UPDATE`) and checks the writer owns it, so
//! a takeover (which updates that row) and a late write by the old owner cannot interleave.
//! Expired runs are claimed with `FOR UPDATE SKIP LOCKED`: two nodes never claim the same run.
//! Queries are checked at run time (see the SQLite log for why).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgPool, Row};
use tokio::sync::Notify;

use crate::events::{Claimed, DeliveryRecord, Event, NewEvent};
use crate::jobs::{JobOutcome, JobRunRecord};

use crate::log::{
    FailureRecord, LogError, RunLog, RunRecord, RunState, Started, StepRecord, db, delivery_from, errors_json,
    event_from, event_id, held, job_run_from, millis, run_from, step_from, takers,
};

/// The Postgres run log.
#[derive(Debug, Clone)]
pub struct PostgresLog {
    pool: PgPool,
    published: Arc<Notify>,
    listening: Arc<std::sync::atomic::AtomicBool>,
}

impl PostgresLog {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            published: Arc::default(),
            listening: Arc::default(),
        }
    }
}

/// The channel publications are announced on.
const CHANNEL: &str = "keyward_flow_events";

fn instant(ms: i64) -> Result<DateTime<Utc>, LogError> {
    DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| LogError::Other(format!("instant {ms} is out of range")))
}

const RUN_COLUMNS: &str = "workflow, transaction_id, state, input, result, errors, owner,
    (extract(epoch FROM created_at) * 1000)::bigint AS created_at,
    (extract(epoch FROM updated_at) * 1000)::bigint AS updated_at";

/// Locks the run row; fails with `LeaseLost` unless `owner` holds it.
async fn lock_owned(
    tx: &mut sqlx::PgConnection,
    owner: &str,
    workflow: &str,
    transaction_id: &str,
) -> Result<(), LogError> {
    let owned =
        sqlx::query("SELECT 1 FROM flow_run WHERE workflow = $1 AND transaction_id = $2 AND owner = $3 FOR UPDATE")
            .bind(workflow)
            .bind(transaction_id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    owned.map(|_| ()).ok_or(LogError::LeaseLost)
}

/// A lease length in seconds, as Postgres's `make_interval` takes it.
fn seconds(d: Duration) -> f64 {
    millis(d) as f64 / 1000.0
}

#[async_trait]
impl RunLog for PostgresLog {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> Result<(), LogError> {
        let mut migrator = sqlx::migrate!("./migrations/postgres");
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        let inserted = sqlx::query(
            "INSERT INTO flow_run (workflow, transaction_id, state, input, owner, lease_until, created_at, updated_at)
             VALUES ($1, $2, 'running', $3, $4, clock_timestamp() + make_interval(secs => $5), now(), now())
             ON CONFLICT (workflow, transaction_id) DO NOTHING",
        )
        .bind(workflow)
        .bind(transaction_id)
        .bind(input)
        .bind(owner)
        .bind(seconds(lease))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 1 {
            tx.commit().await.map_err(db)?;
            return Ok(Started::New);
        }
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM flow_run WHERE workflow = $1 AND transaction_id = $2 FOR UPDATE"
        )))
        .bind(workflow)
        .bind(transaction_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        let run = run_from(&row)?;
        if !(replace_finished && run.state.is_finished()) {
            tx.commit().await.map_err(db)?;
            return Ok(Started::Existing(Box::new(run)));
        }
        restart(&mut tx, workflow, transaction_id, input, owner, lease).await?;
        tx.commit().await.map_err(db)?;
        Ok(Started::New)
    }

    async fn load(
        &self,
        workflow: &str,
        transaction_id: &str,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, LogError> {
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM flow_run WHERE workflow = $1 AND transaction_id = $2"
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
            "SELECT step, position::bigint AS position, state, attempts::bigint AS attempts, input, output,
                    compensation_input, error, events
             FROM flow_step WHERE workflow = $1 AND transaction_id = $2 ORDER BY position, step",
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_owned(&mut tx, owner, workflow, transaction_id).await?;
        sqlx::query(
            "INSERT INTO flow_step
                 (workflow, transaction_id, step, position, state, attempts, input, output,
                  compensation_input, error, events, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
             ON CONFLICT (workflow, transaction_id, step) DO UPDATE SET
                 position = excluded.position, state = excluded.state, attempts = excluded.attempts,
                 input = excluded.input, output = excluded.output,
                 compensation_input = excluded.compensation_input, error = excluded.error,
                 events = excluded.events, updated_at = excluded.updated_at",
        )
        .bind(workflow)
        .bind(transaction_id)
        .bind(&step.step)
        .bind(i32::try_from(step.position).unwrap_or(i32::MAX))
        .bind(step.state.as_str())
        .bind(i32::try_from(step.attempts).unwrap_or(i32::MAX))
        .bind(step.input.as_ref())
        .bind(step.output.as_ref())
        .bind(step.compensation_input.as_ref())
        .bind(step.error.as_deref())
        .bind(step.events.as_ref())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("UPDATE flow_run SET updated_at = now() WHERE workflow = $1 AND transaction_id = $2")
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
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_owned(&mut tx, owner, workflow, transaction_id).await?;
        if state == RunState::Done {
            publish_in(&mut tx, events).await?;
        }
        let finished = state.is_finished();
        sqlx::query(
            "UPDATE flow_run SET state = $3, result = $4, errors = $5, updated_at = now(),
                 owner = CASE WHEN $6 THEN NULL ELSE owner END,
                 lease_until = CASE WHEN $6 THEN NULL ELSE lease_until END
             WHERE workflow = $1 AND transaction_id = $2",
        )
        .bind(workflow)
        .bind(transaction_id)
        .bind(state.as_str())
        .bind(result)
        .bind(errors_json(errors)?)
        .bind(finished)
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
            "UPDATE flow_run SET lease_until = clock_timestamp() + make_interval(secs => $4)
             WHERE workflow = $1 AND transaction_id = $2 AND owner = $3",
        )
        .bind(workflow)
        .bind(transaction_id)
        .bind(owner)
        .bind(seconds(lease))
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
        let rows = sqlx::query(
            "UPDATE flow_run r SET owner = $1, lease_until = clock_timestamp() + make_interval(secs => $2),
                 updated_at = now()
             FROM (SELECT workflow, transaction_id FROM flow_run
                   WHERE state IN ('running', 'compensating')
                     AND (lease_until IS NULL OR lease_until < clock_timestamp())
                     AND workflow = ANY($3)
                   ORDER BY lease_until LIMIT $4
                   FOR UPDATE SKIP LOCKED) expired
             WHERE r.workflow = expired.workflow AND r.transaction_id = expired.transaction_id
             RETURNING r.workflow, r.transaction_id",
        )
        .bind(owner)
        .bind(seconds(lease))
        .bind(workflows)
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
            "SELECT {RUN_COLUMNS} FROM flow_run WHERE ($1::text IS NULL OR state = $1)
             ORDER BY created_at DESC, transaction_id DESC LIMIT $2"
        )))
        .bind(state.map(RunState::as_str))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(run_from).collect()
    }

    async fn register_subscriber(&self, id: &str, events: &[String]) -> Result<(), LogError> {
        sqlx::query(
            "INSERT INTO flow_subscriber (id, events, created_at, updated_at) VALUES ($1, $2, now(), now())
             ON CONFLICT (id) DO UPDATE SET events = excluded.events, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(serde_json::json!(events))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn publish(&self, events: &[NewEvent]) -> Result<(), LogError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
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
        let rows = sqlx::query(
            "WITH due AS (
                 SELECT event_id, subscriber FROM flow_delivery
                 WHERE state = 'pending' AND next_attempt_at <= clock_timestamp()
                   AND (locked_until IS NULL OR locked_until <= clock_timestamp())
                   AND subscriber = ANY($3)
                 ORDER BY next_attempt_at LIMIT $4
                 FOR UPDATE SKIP LOCKED),
             claimed AS (
                 UPDATE flow_delivery d SET locked_by = $1,
                     locked_until = clock_timestamp() + make_interval(secs => $2), attempts = d.attempts + 1
                 FROM due WHERE d.event_id = due.event_id AND d.subscriber = due.subscriber
                 RETURNING d.event_id, d.subscriber, d.attempts)
             SELECT c.subscriber, c.attempts::bigint AS attempts, e.id, e.name, e.data, e.metadata,
                    (extract(epoch FROM e.created_at) * 1000)::bigint AS created_at
             FROM claimed c JOIN flow_event e ON e.id = c.event_id",
        )
        .bind(node)
        .bind(seconds(lock))
        .bind(subscribers)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                Ok(Claimed {
                    event: event_from(r)?,
                    subscriber: r.try_get("subscriber").map_err(db)?,
                    attempt: u32::try_from(r.try_get::<i64, _>("attempts").map_err(db)?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn delivered(&self, node: &str, event_id: &str, subscriber: &str) -> Result<(), LogError> {
        let done = sqlx::query(
            "UPDATE flow_delivery SET state = 'delivered', delivered_at = now(), locked_by = NULL,
                 locked_until = NULL, last_error = NULL
             WHERE event_id = $1 AND subscriber = $2 AND locked_by = $3",
        )
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
            "UPDATE flow_delivery SET next_attempt_at = clock_timestamp() + make_interval(secs => $5),
                 last_error = $4, locked_by = NULL, locked_until = NULL
             WHERE event_id = $1 AND subscriber = $2 AND locked_by = $3",
        )
        .bind(event_id)
        .bind(subscriber)
        .bind(node)
        .bind(error)
        .bind(seconds(retry_in))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list_events(&self, limit: u32) -> Result<Vec<(Event, Vec<DeliveryRecord>)>, LogError> {
        let rows = sqlx::query(
            "SELECT id, name, data, metadata, (extract(epoch FROM created_at) * 1000)::bigint AS created_at
             FROM flow_event ORDER BY created_at DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let event = event_from(&row)?;
            let deliveries = sqlx::query(
                "SELECT subscriber, state, attempts::bigint AS attempts, last_error,
                        (extract(epoch FROM next_attempt_at) * 1000)::bigint AS next_attempt_at,
                        (extract(epoch FROM delivered_at) * 1000)::bigint AS delivered_at
                 FROM flow_delivery WHERE event_id = $1 ORDER BY subscriber",
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
        use std::sync::atomic::Ordering;
        if self.listening.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut listener = match sqlx::postgres::PgListener::connect_with(&self.pool).await {
            Ok(l) => l,
            Err(e) => {
                self.listening.store(false, Ordering::SeqCst);
                return Err(db(e));
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            self.listening.store(false, Ordering::SeqCst);
            return Err(db(e));
        }
        let published = self.published.clone();
        tokio::spawn(async move {
            loop {
                // `try_recv` gives `None` when the connection dropped; the listener reconnects on
                // the next call. Anything published meanwhile is found by polling.
                match listener.try_recv().await {
                    Ok(_) => published.notify_one(),
                    Err(e) => {
                        tracing::warn!(error = %e, "event listener lost its connection; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
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
        let running = outcome == JobOutcome::Running;
        let done = sqlx::query(
            "INSERT INTO flow_job_run (job, tick, node, outcome, started_at, finished_at, lease_until)
             VALUES ($1, $2, $3, $4, now(),
                     CASE WHEN $5 THEN NULL ELSE now() END,
                     CASE WHEN $5 THEN clock_timestamp() + make_interval(secs => $6) END)
             ON CONFLICT (job, tick) DO NOTHING",
        )
        .bind(job)
        .bind(instant(tick)?)
        .bind(node)
        .bind(outcome.as_str())
        .bind(running)
        .bind(seconds(lease))
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
            "UPDATE flow_job_run SET outcome = $3, error = $4, finished_at = now(), lease_until = NULL
             WHERE job = $1 AND tick = $2",
        )
        .bind(job)
        .bind(instant(tick)?)
        .bind(outcome.as_str())
        .bind(error)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn job_running(&self, job: &str) -> Result<bool, LogError> {
        let row = sqlx::query(
            "SELECT 1 FROM flow_job_run WHERE job = $1 AND outcome = 'running' AND lease_until > clock_timestamp()
             LIMIT 1",
        )
        .bind(job)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.is_some())
    }

    async fn job_executions(&self, job: &str) -> Result<u64, LogError> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_job_run WHERE job = $1 AND outcome <> 'skipped'")
            .bind(job)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn list_job_runs(&self, job: Option<&str>, limit: u32) -> Result<Vec<JobRunRecord>, LogError> {
        let rows = sqlx::query(
            "SELECT job, (extract(epoch FROM tick) * 1000)::bigint AS tick, node, outcome, error,
                    (extract(epoch FROM started_at) * 1000)::bigint AS started_at,
                    (extract(epoch FROM finished_at) * 1000)::bigint AS finished_at
             FROM flow_job_run WHERE ($1::text IS NULL OR job = $1) ORDER BY tick DESC, job LIMIT $2",
        )
        .bind(job)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(job_run_from).collect()
    }
}

mod writes;
use writes::{publish_in, restart};
