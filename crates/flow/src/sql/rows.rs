//! The log's tables as rows: `sqlx::FromRow`, one definition per table for both backends.
//!
//! Both store instants as milliseconds since the Unix epoch (BIGINT), counts as BIGINT, and
//! JSON as JSONB (Postgres) or TEXT (SQLite), read as `Json<Value>` either way. Each row is
//! then checked into its record: a state name the log does not know is an error, not a panic.

use serde_json::Value;
use sqlx::FromRow;

use crate::events::{DeliveryRecord, Event};
use crate::jobs::{JobOutcome, JobRunRecord};
use crate::log::{FailureRecord, LogError, RunRecord, RunState, StepRecord, StepState};

type JsonColumn = Option<sqlx::types::Json<Value>>;

fn value(column: JsonColumn) -> Option<Value> {
    column.map(|j| j.0)
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn unknown(what: &str, s: &str) -> LogError {
    LogError::Other(format!("unknown {what} {s:?} in the log"))
}

/// A `flow_run` row.
#[derive(FromRow)]
pub struct RunRow {
    workflow: String,
    transaction_id: String,
    state: String,
    input: JsonColumn,
    result: JsonColumn,
    errors: JsonColumn,
    owner: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl RunRow {
    pub(crate) fn record(self) -> Result<RunRecord, LogError> {
        let errors: Vec<FailureRecord> = serde_json::from_value(value(self.errors).unwrap_or(Value::Array(Vec::new())))
            .map_err(|e| LogError::Other(format!("stored errors do not parse: {e}")))?;
        Ok(RunRecord {
            state: RunState::parse(&self.state).ok_or_else(|| unknown("run state", &self.state))?,
            input: value(self.input).unwrap_or(Value::Null),
            result: value(self.result),
            errors,
            workflow: self.workflow,
            transaction_id: self.transaction_id,
            owner: self.owner,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// A `flow_step` row.
#[derive(FromRow)]
pub struct StepRow {
    step: String,
    position: i64,
    state: String,
    attempts: i64,
    input: JsonColumn,
    output: JsonColumn,
    compensation_input: JsonColumn,
    error: Option<String>,
    events: JsonColumn,
}

impl StepRow {
    pub(crate) fn record(self) -> Result<StepRecord, LogError> {
        Ok(StepRecord {
            state: StepState::parse(&self.state).ok_or_else(|| unknown("step state", &self.state))?,
            position: count(self.position),
            attempts: count(self.attempts),
            input: value(self.input),
            output: value(self.output),
            compensation_input: value(self.compensation_input),
            events: value(self.events),
            step: self.step,
            error: self.error,
        })
    }
}

/// A `flow_event` row.
#[derive(FromRow)]
pub struct EventRow {
    id: String,
    name: String,
    data: JsonColumn,
    metadata: JsonColumn,
    created_at: i64,
}

impl EventRow {
    pub(crate) fn record(self) -> Event {
        Event {
            id: self.id,
            name: self.name,
            data: value(self.data).unwrap_or(Value::Null),
            metadata: value(self.metadata).unwrap_or(Value::Null),
            created_at: self.created_at,
        }
    }
}

/// A `flow_delivery` row.
#[derive(FromRow)]
pub struct DeliveryRow {
    subscriber: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
    next_attempt_at: i64,
    delivered_at: Option<i64>,
}

impl DeliveryRow {
    pub(crate) fn record(self) -> DeliveryRecord {
        DeliveryRecord {
            attempts: count(self.attempts),
            subscriber: self.subscriber,
            state: self.state,
            last_error: self.last_error,
            next_attempt_at: self.next_attempt_at,
            delivered_at: self.delivered_at,
        }
    }
}

/// A `flow_job_run` row.
#[derive(FromRow)]
pub struct JobRunRow {
    job: String,
    tick: i64,
    node: String,
    outcome: String,
    error: Option<String>,
    started_at: i64,
    finished_at: Option<i64>,
}

impl JobRunRow {
    pub(crate) fn record(self) -> Result<JobRunRecord, LogError> {
        Ok(JobRunRecord {
            outcome: JobOutcome::parse(&self.outcome).ok_or_else(|| unknown("job outcome", &self.outcome))?,
            job: self.job,
            tick: self.tick,
            node: self.node,
            error: self.error,
            started_at: self.started_at,
            finished_at: self.finished_at,
        })
    }
}
