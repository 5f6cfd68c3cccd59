//! The run log on SQLite, sharing the application's pool (and so its file).
//!
//! Queries are checked at run time, not compile time: this crate serves two backends and sqlx
//! checks a crate's macros against one database; the engine tests run every query on both.
//! Each write is one `BEGIN IMMEDIATE` transaction that first checks the writer still owns the
//! run, so ownership and the write are one atomic unit.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use crate::log::{
    FailureRecord, LogError, RunLog, RunRecord, RunRow, RunState, Started, StepRecord, StepRow, db, errors_json,
    millis, now_millis,
};

/// The SQLite run log.
#[derive(Debug, Clone)]
pub struct SqliteLog {
    pool: SqlitePool,
}

impl SqliteLog {
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, LogError> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }
}

fn text(v: &Value) -> String {
    v.to_string()
}

fn parse(s: Option<String>) -> Result<Option<Value>, LogError> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| LogError::Other(format!("stored JSON does not parse: {e}"))))
        .transpose()
}

const RUN_COLUMNS: &str = "workflow, transaction_id, state, input, result, errors, owner, created_at, updated_at";

fn run_row(r: &SqliteRow) -> Result<RunRecord, LogError> {
    RunRow {
        workflow: r.try_get("workflow").map_err(db)?,
        transaction_id: r.try_get("transaction_id").map_err(db)?,
        state: r.try_get("state").map_err(db)?,
        input: parse(r.try_get("input").map_err(db)?)?.unwrap_or(Value::Null),
        result: parse(r.try_get("result").map_err(db)?)?,
        errors: parse(r.try_get("errors").map_err(db)?)?.unwrap_or(Value::Array(Vec::new())),
        owner: r.try_get("owner").map_err(db)?,
        created_at: r.try_get("created_at").map_err(db)?,
        updated_at: r.try_get("updated_at").map_err(db)?,
    }
    .into_record()
}

/// Fails with `LeaseLost` unless `owner` holds the run.
async fn check_owner(
    tx: &mut sqlx::SqliteConnection,
    owner: &str,
    workflow: &str,
    transaction_id: &str,
) -> Result<(), LogError> {
    let held = sqlx::query("SELECT 1 FROM flow_run WHERE workflow = ? AND transaction_id = ? AND owner = ?")
        .bind(workflow)
        .bind(transaction_id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
    held.map(|_| ()).ok_or(LogError::LeaseLost)
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
            let run = run_row(&row)?;
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
        let run = run_row(&row)?;
        let rows = sqlx::query(
            "SELECT step, position, state, attempts, input, output, compensation_input, error
             FROM flow_step WHERE workflow = ? AND transaction_id = ? ORDER BY position, step",
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
                    input: parse(r.try_get("input").map_err(db)?)?,
                    output: parse(r.try_get("output").map_err(db)?)?,
                    compensation_input: parse(r.try_get("compensation_input").map_err(db)?)?,
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
        let mut tx = self.begin().await?;
        check_owner(&mut tx, owner, workflow, transaction_id).await?;
        let now = now_millis();
        sqlx::query(
            "INSERT INTO flow_step
                 (workflow, transaction_id, step, position, state, attempts, input, output,
                  compensation_input, error, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (workflow, transaction_id, step) DO UPDATE SET
                 position = excluded.position, state = excluded.state, attempts = excluded.attempts,
                 input = excluded.input, output = excluded.output,
                 compensation_input = excluded.compensation_input, error = excluded.error,
                 updated_at = excluded.updated_at",
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
    ) -> Result<(), LogError> {
        let mut tx = self.begin().await?;
        check_owner(&mut tx, owner, workflow, transaction_id).await?;
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
        tx.commit().await.map_err(db)
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
        rows.iter().map(run_row).collect()
    }
}
