//! The run log: where runs and their steps are written as they happen, so a restarted process —
//! or another node — can finish what a dead one started.
//!
//! Every write a run makes is fenced by its lease: it succeeds only while the writing node still
//! owns the run. A node that stalled past its lease and lost the run to another node therefore
//! cannot overwrite the new owner's progress; it gets [`LogError::LeaseLost`] and stops.

use std::sync::Arc;

use sqlx::FromRow;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::events::{Claimed, DeliveryRecord, Event, NewEvent};
use crate::jobs::{JobOutcome, JobRunRecord};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Going forward.
    Running,
    /// A step failed; completed steps are being undone.
    Compensating,
    /// Every step ran; the result is stored.
    Done,
    /// A step failed and every completed step was compensated.
    Reverted,
    /// A step failed and a compensation failed too: someone must look.
    Failed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Compensating => "compensating",
            RunState::Done => "done",
            RunState::Reverted => "reverted",
            RunState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RunState::Running,
            "compensating" => RunState::Compensating,
            "done" => RunState::Done,
            "reverted" => RunState::Reverted,
            "failed" => RunState::Failed,
            _ => return None,
        })
    }

    /// Done, reverted or failed: nothing more will happen to the run.
    pub fn is_finished(self) -> bool {
        matches!(self, RunState::Done | RunState::Reverted | RunState::Failed)
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a step of a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Started and not known to have finished: on resume it is invoked again with the same input.
    Invoking,
    Done,
    /// Its condition was false, it had no hook handler, or it skipped itself.
    Skipped,
    Failed,
    Compensated,
    CompensationFailed,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Invoking => "invoking",
            StepState::Done => "done",
            StepState::Skipped => "skipped",
            StepState::Failed => "failed",
            StepState::Compensated => "compensated",
            StepState::CompensationFailed => "compensation_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "invoking" => StepState::Invoking,
            "done" => StepState::Done,
            "skipped" => StepState::Skipped,
            "failed" => StepState::Failed,
            "compensated" => StepState::Compensated,
            "compensation_failed" => StepState::CompensationFailed,
            _ => return None,
        })
    }
}

/// Which function of a step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Handler {
    Invoke,
    Compensate,
    /// Not a failure: a compensation found a row changed by someone else since this run wrote
    /// it, and left it alone (see `StepContext::conflict`).
    Conflict,
}

/// A failure as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub step: String,
    pub handler: Handler,
    pub error: String,
    /// The failing step may have written part of its effect (`StepError::maybe_applied`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maybe_applied: bool,
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub workflow: String,
    pub transaction_id: String,
    pub state: RunState,
    pub input: Value,
    pub result: Option<Value>,
    pub errors: Vec<FailureRecord>,
    /// The node holding the run while it is running or compensating.
    pub owner: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

/// A step of a run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    pub step: String,
    /// Which group of the workflow it belongs to (steps of one parallel group share it).
    pub position: u32,
    pub state: StepState,
    pub attempts: u32,
    pub input: Option<Value>,
    pub output: Option<Value>,
    pub compensation_input: Option<Value>,
    pub error: Option<String>,
    /// Events the step emitted (a JSON array of `{name, data}`), published when the run is done.
    pub events: Option<Value>,
}

/// What starting a run found.
#[derive(Debug, Clone, PartialEq)]
pub enum Started {
    /// The run was written and this node holds it.
    New,
    /// A run with this workflow and transaction id exists (and was left as it is).
    Existing(Box<RunRecord>),
}

/// A run log failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("this node no longer holds the run: its lease ran out and another node took it over")]
    LeaseLost,
    #[error("the workflow log is unavailable: {0}")]
    Unavailable(String),
    #[error("the workflow log failed: {0}")]
    Other(String),
}

/// Storage for runs. Implemented for SQLite and Postgres in this crate.
#[async_trait]
pub trait RunLog: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// Creates the log's tables (its own migration history, beside the application's).
    async fn migrate(&self) -> Result<(), LogError>;

    /// Writes a new run in state `running`, held by `owner` for `lease`. When the workflow and
    /// transaction id are taken: a finished run is replaced if `replace_finished`, and otherwise
    /// (or when it is still in flight) returned untouched.
    async fn start(
        &self,
        workflow: &str,
        transaction_id: &str,
        input: &Value,
        owner: &str,
        lease: Duration,
        replace_finished: bool,
    ) -> Result<Started, LogError>;

    /// A run and its steps (ordered by position, then name).
    async fn load(
        &self,
        workflow: &str,
        transaction_id: &str,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, LogError>;

    /// Writes a step's record, if `owner` still holds the run.
    async fn save_step(
        &self,
        owner: &str,
        workflow: &str,
        transaction_id: &str,
        step: &StepRecord,
    ) -> Result<(), LogError>;

    /// Moves the run to `state` with its result and errors, if `owner` still holds it. A
    /// finished state releases the lease. `events` are published in the same transaction.
    #[allow(clippy::too_many_arguments)]
    async fn set_state(
        &self,
        owner: &str,
        workflow: &str,
        transaction_id: &str,
        state: RunState,
        result: Option<&Value>,
        errors: &[FailureRecord],
        events: &[NewEvent],
    ) -> Result<(), LogError>;

    /// Extends `owner`'s lease on the run to `lease` from now.
    async fn renew(&self, owner: &str, workflow: &str, transaction_id: &str, lease: Duration) -> Result<(), LogError>;

    /// Takes over up to `limit` unfinished runs of these workflows whose lease has run out,
    /// for `owner` and `lease`. Returns their (workflow, transaction id).
    async fn claim_expired(
        &self,
        owner: &str,
        lease: Duration,
        workflows: &[String],
        limit: u32,
    ) -> Result<Vec<(String, String)>, LogError>;

    /// The newest runs, optionally only those in `state`.
    async fn list_runs(&self, state: Option<RunState>, limit: u32) -> Result<Vec<RunRecord>, LogError>;

    // -- events -------------------------------------------------------------------------------

    /// Records (or updates) a subscriber and the event names it takes; events published from
    /// now on get a delivery for it.
    async fn register_subscriber(&self, id: &str, events: &[String]) -> Result<(), LogError>;

    /// Publishes events outside any run (with a delivery for each subscriber that takes them).
    async fn publish(&self, events: &[NewEvent]) -> Result<(), LogError>;

    /// Claims up to `limit` due deliveries of these subscribers for `node`, for `lock`.
    async fn claim_deliveries(
        &self,
        node: &str,
        subscribers: &[String],
        lock: Duration,
        limit: u32,
    ) -> Result<Vec<Claimed>, LogError>;

    /// Marks a claimed delivery done.
    async fn delivered(&self, node: &str, event_id: &str, subscriber: &str) -> Result<(), LogError>;

    /// Releases a claimed delivery for another attempt after `retry_in`.
    async fn delivery_failed(
        &self,
        node: &str,
        event_id: &str,
        subscriber: &str,
        error: &str,
        retry_in: Duration,
    ) -> Result<(), LogError>;

    /// The newest events with their deliveries.
    async fn list_events(&self, limit: u32) -> Result<Vec<(Event, Vec<DeliveryRecord>)>, LogError>;

    /// Woken when this process publishes (and, once [`RunLog::listen`] runs, when any node does).
    fn published(&self) -> Arc<tokio::sync::Notify>;

    /// Starts passing other nodes' publications to [`RunLog::published`] (Postgres
    /// `LISTEN`); a no-op where there are no other nodes to hear.
    async fn listen(&self) -> Result<(), LogError>;

    // -- jobs ---------------------------------------------------------------------------------

    /// Records the tick for `node`; `false` when the tick was already taken.
    async fn claim_tick(
        &self,
        job: &str,
        tick: i64,
        node: &str,
        outcome: JobOutcome,
        lease: Duration,
    ) -> Result<bool, LogError>;

    /// Records how a claimed tick's run ended.
    async fn finish_tick(&self, job: &str, tick: i64, outcome: JobOutcome, error: Option<&str>)
    -> Result<(), LogError>;

    /// Whether a run of the job is going (running, its lease not run out).
    async fn job_running(&self, job: &str) -> Result<bool, LogError>;

    /// How many runs of the job started (skipped ticks do not count).
    async fn job_executions(&self, job: &str) -> Result<u64, LogError>;

    /// The newest job runs, optionally of one job.
    async fn list_job_runs(&self, job: Option<&str>, limit: u32) -> Result<Vec<JobRunRecord>, LogError>;
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
/// Parses a stored state column.
pub(crate) fn run_state(s: &str) -> Result<RunState, LogError> {
    RunState::parse(s).ok_or_else(|| LogError::Other(format!("unknown run state {s:?} in the log")))
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn step_state(s: &str) -> Result<StepState, LogError> {
    StepState::parse(s).ok_or_else(|| LogError::Other(format!("unknown step state {s:?} in the log")))
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn errors_json(errors: &[FailureRecord]) -> Result<Value, LogError> {
    serde_json::to_value(errors).map_err(|e| LogError::Other(e.to_string()))
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn errors_from(v: Value) -> Result<Vec<FailureRecord>, LogError> {
    serde_json::from_value(v).map_err(|e| LogError::Other(format!("stored errors do not parse: {e}")))
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
/// Maps a database error: connection trouble is `Unavailable`, the rest `Other`.
pub(crate) fn db(e: sqlx::Error) -> LogError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => LogError::Unavailable(e.to_string()),
        sqlx::Error::Database(d)
            if d.code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57") || c == "5" || c == "6") =>
        {
            LogError::Unavailable(e.to_string())
        }
        _ => LogError::Other(e.to_string()),
    }
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(millis)
        .unwrap_or(0)
}

// -- rows as both backends read them: `sqlx::FromRow`, one definition per table -------------------
//
// JSON columns decode as `Json<Value>` on both backends (TEXT on SQLite, JSONB on Postgres);
// instants are milliseconds since the epoch (Postgres queries convert them in SQL). Each row
// is then checked into its record (a state name the log does not know is an error, not a panic).

type JsonColumn = Option<sqlx::types::Json<Value>>;

fn value(column: JsonColumn) -> Option<Value> {
    column.map(|j| j.0)
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// A `flow_run` row.
#[derive(FromRow)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct RunRow {
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

/// A `flow_run` row as a record.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn run_from<'r, R: sqlx::Row>(r: &'r R) -> Result<RunRecord, LogError>
where
    RunRow: FromRow<'r, R>,
{
    let r = RunRow::from_row(r).map_err(db)?;
    Ok(RunRecord {
        state: run_state(&r.state)?,
        input: value(r.input).unwrap_or(Value::Null),
        result: value(r.result),
        errors: errors_from(value(r.errors).unwrap_or(Value::Array(Vec::new())))?,
        workflow: r.workflow,
        transaction_id: r.transaction_id,
        owner: r.owner,
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}

/// A `flow_step` row.
#[derive(FromRow)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct StepRow {
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

/// A `flow_step` row as a record.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn step_from<'r, R: sqlx::Row>(r: &'r R) -> Result<StepRecord, LogError>
where
    StepRow: FromRow<'r, R>,
{
    let r = StepRow::from_row(r).map_err(db)?;
    Ok(StepRecord {
        state: step_state(&r.state)?,
        position: count(r.position),
        attempts: count(r.attempts),
        input: value(r.input),
        output: value(r.output),
        compensation_input: value(r.compensation_input),
        events: value(r.events),
        step: r.step,
        error: r.error,
    })
}

/// A `flow_event` row.
#[derive(FromRow)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct EventRow {
    id: String,
    name: String,
    data: JsonColumn,
    metadata: JsonColumn,
    created_at: i64,
}

/// A `flow_event` row as an event.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn event_from<'r, R: sqlx::Row>(r: &'r R) -> Result<Event, LogError>
where
    EventRow: FromRow<'r, R>,
{
    let r = EventRow::from_row(r).map_err(db)?;
    Ok(Event {
        id: r.id,
        name: r.name,
        data: value(r.data).unwrap_or(Value::Null),
        metadata: value(r.metadata).unwrap_or(Value::Null),
        created_at: r.created_at,
    })
}

/// A `flow_delivery` row.
#[derive(FromRow)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct DeliveryRow {
    subscriber: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
    next_attempt_at: i64,
    delivered_at: Option<i64>,
}

/// A `flow_delivery` row as a record.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn delivery_from<'r, R: sqlx::Row>(r: &'r R) -> Result<DeliveryRecord, LogError>
where
    DeliveryRow: FromRow<'r, R>,
{
    let r = DeliveryRow::from_row(r).map_err(db)?;
    Ok(DeliveryRecord {
        attempts: count(r.attempts),
        subscriber: r.subscriber,
        state: r.state,
        last_error: r.last_error,
        next_attempt_at: r.next_attempt_at,
        delivered_at: r.delivered_at,
    })
}

/// A `flow_job_run` row.
#[derive(FromRow)]
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) struct JobRunRow {
    job: String,
    tick: i64,
    node: String,
    outcome: String,
    error: Option<String>,
    started_at: i64,
    finished_at: Option<i64>,
}

/// A `flow_job_run` row as a record.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn job_run_from<'r, R: sqlx::Row>(r: &'r R) -> Result<JobRunRecord, LogError>
where
    JobRunRow: FromRow<'r, R>,
{
    let r = JobRunRow::from_row(r).map_err(db)?;
    Ok(JobRunRecord {
        outcome: job_outcome(&r.outcome)?,
        job: r.job,
        tick: r.tick,
        node: r.node,
        error: r.error,
        started_at: r.started_at,
        finished_at: r.finished_at,
    })
}

/// Turns an UPDATE's row count into "the writer no longer holds what it updated".
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn held(rows_affected: u64) -> Result<(), LogError> {
    if rows_affected == 0 {
        Err(LogError::LeaseLost)
    } else {
        Ok(())
    }
}

/// Ids for new events.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn event_id() -> String {
    format!("evt_{}", crate::ids::new_ulid())
}

/// Which subscribers (id, patterns) take an event named `name`.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn takers<'a>(subscribers: &'a [(String, Vec<String>)], name: &str) -> Vec<&'a str> {
    subscribers
        .iter()
        .filter(|(_, p)| crate::events::takes(p, name))
        .map(|(id, _)| id.as_str())
        .collect()
}

#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn job_outcome(s: &str) -> Result<JobOutcome, LogError> {
    JobOutcome::parse(s).ok_or_else(|| LogError::Other(format!("unknown job outcome {s:?} in the log")))
}
