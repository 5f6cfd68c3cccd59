//! The run log: where runs and their steps are written as they happen, so a restarted process —
//! or another node — can finish what a dead one started.
//!
//! Every write a run makes is fenced by its lease: it succeeds only while the writing node still
//! owns the run. A node that stalled past its lease and lost the run to another node therefore
//! cannot overwrite the new owner's progress; it gets [`LogError::LeaseLost`] and stops.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Clock;
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

    /// The clock the log writes its instants with and its leases run out by; every engine on
    /// the log reads and waits on it too.
    fn clock(&self) -> Arc<dyn Clock>;

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
