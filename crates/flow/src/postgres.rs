//! The run log on PostgreSQL, shared by every node of a cluster.
//!
//! Leases are compared with the database's clock (`clock_timestamp()`), so nodes need not agree
//! on the time. A write first locks the run row (`FOR UPDATE`) and checks the writer owns it, so
//! a takeover (which updates that row) and a late write by the old owner cannot interleave.
//! Expired runs are claimed with `FOR UPDATE SKIP LOCKED`: two nodes never claim the same run.
//! Queries are checked at run time (see the SQLite log for why).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::log::{
    FailureRecord, LogError, RunLog, RunRecord, RunRow, RunState, Started, StepRecord, StepRow, db, errors_json, millis,
};

/// The Postgres run log.
#[derive(Debug, Clone)]
pub struct PostgresLog {
    pool: PgPool,
}

impl PostgresLog {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

const RUN_COLUMNS: &str = "workflow, transaction_id, state, input, result, errors, owner,
    (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
    (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms";

fn run_row(r: &PgRow) -> Result<RunRecord, LogError> {
    RunRow {
        workflow: r.try_get("workflow").map_err(db)?,
        transaction_id: r.try_get("transaction_id").map_err(db)?,
        state: r.try_get("state").map_err(db)?,
        input: r.try_get("input").map_err(db)?,
        result: r.try_get("result").map_err(db)?,
        errors: r.try_get("errors").map_err(db)?,
        owner: r.try_get("owner").map_err(db)?,
        created_at: r.try_get("created_ms").map_err(db)?,
        updated_at: r.try_get("updated_ms").map_err(db)?,
    }
    .into_record()
}

/// Locks the run row; fails with `LeaseLost` unless `owner` holds it.
async fn lock_owned(
    tx: &mut sqlx::PgConnection,
    owner: &str,
    workflow: &str,
    transaction_id: &str,
) -> Result<(), LogError> {
    let held =
        sqlx::query("SELECT 1 FROM flow_run WHERE workflow = $1 AND transaction_id = $2 AND owner = $3 FOR UPDATE")
            .bind(workflow)
            .bind(transaction_id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
    held.map(|_| ()).ok_or(LogError::LeaseLost)
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
        let run = run_row(&row)?;
        if !(replace_finished && run.state.is_finished()) {
            tx.commit().await.map_err(db)?;
            return Ok(Started::Existing(Box::new(run)));
        }
        sqlx::query("DELETE FROM flow_step WHERE workflow = $1 AND transaction_id = $2")
            .bind(workflow)
            .bind(transaction_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "UPDATE flow_run SET state = 'running', input = $3, result = NULL, errors = '[]', owner = $4,
                 lease_until = clock_timestamp() + make_interval(secs => $5), created_at = now(), updated_at = now()
             WHERE workflow = $1 AND transaction_id = $2",
        )
        .bind(workflow)
        .bind(transaction_id)
        .bind(input)
        .bind(owner)
        .bind(seconds(lease))
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
        let run = run_row(&row)?;
        let rows = sqlx::query(
            "SELECT step, position::bigint AS position, state, attempts::bigint AS attempts, input, output,
                    compensation_input, error
             FROM flow_step WHERE workflow = $1 AND transaction_id = $2 ORDER BY position, step",
        )
        .bind(workflow)
        .bind(transaction_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut steps = Vec::with_capacity(rows.len());
        for r in rows {
            steps.push(
                StepRow {
                    step: r.try_get("step").map_err(db)?,
                    position: r.try_get("position").map_err(db)?,
                    state: r.try_get("state").map_err(db)?,
                    attempts: r.try_get("attempts").map_err(db)?,
                    input: r.try_get("input").map_err(db)?,
                    output: r.try_get("output").map_err(db)?,
                    compensation_input: r.try_get("compensation_input").map_err(db)?,
                    error: r.try_get("error").map_err(db)?,
                }
                .into_record()?,
            );
        }
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
                  compensation_input, error, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())
             ON CONFLICT (workflow, transaction_id, step) DO UPDATE SET
                 position = excluded.position, state = excluded.state, attempts = excluded.attempts,
                 input = excluded.input, output = excluded.output,
                 compensation_input = excluded.compensation_input, error = excluded.error,
                 updated_at = excluded.updated_at",
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
    ) -> Result<(), LogError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        lock_owned(&mut tx, owner, workflow, transaction_id).await?;
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
        tx.commit().await.map_err(db)
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
        if done.rows_affected() == 0 {
            return Err(LogError::LeaseLost);
        }
        Ok(())
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
        rows.iter().map(run_row).collect()
    }
}
