//! What happened: recent workflow runs with their steps, and recent events with their
//! deliveries, shaped once for every reader (the admin API's activity routes, the dashboard
//! through them, and the CLI's `--json`).
//!
//! A run's input, step outputs and result are left out on purpose: a create's or a roll's
//! result holds the new secret token, which must never be readable again after its one answer.

use keyward_flow::{DeliveryRecord, Event, FailureRecord, Handler, RunRecord, RunState, StepRecord, StepState};
use serde::Serialize;
use serde_json::Value;

use super::Workflows;
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// A workflow run as an operator reads it.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub workflow: String,
    pub transaction_id: String,
    pub state: RunState,
    /// The node holding the run while it is in flight.
    pub owner: Option<String>,
    pub created_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
    /// Failures of a step's invoke or compensation.
    pub errors: Vec<FailureRecord>,
    /// Rows a compensation left alone because someone else had changed them since.
    pub conflicts: Vec<FailureRecord>,
    /// How many steps were compensated (undone).
    pub compensations: usize,
    pub steps: Vec<StepSummary>,
}

/// One step of a run.
#[derive(Debug, Clone, Serialize)]
pub struct StepSummary {
    pub step: String,
    pub position: u32,
    pub state: StepState,
    pub attempts: u32,
    pub error: Option<String>,
}

/// An event with the state of each subscriber's delivery.
#[derive(Debug, Clone, Serialize)]
pub struct EventSummary {
    pub id: String,
    pub name: String,
    pub data: Value,
    pub metadata: Value,
    pub created_at: Option<Timestamp>,
    pub deliveries: Vec<DeliverySummary>,
}

/// One subscriber's delivery of an event.
#[derive(Debug, Clone, Serialize)]
pub struct DeliverySummary {
    pub subscriber: String,
    /// `pending` or `delivered`.
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When a pending delivery is tried next.
    pub next_attempt_at: Option<Timestamp>,
    pub delivered_at: Option<Timestamp>,
}

fn run_summary(run: RunRecord, steps: Vec<StepRecord>) -> RunSummary {
    let (conflicts, errors) = run.errors.into_iter().partition(|e| e.handler == Handler::Conflict);
    RunSummary {
        compensations: steps
            .iter()
            .filter(|s| matches!(s.state, StepState::Compensated | StepState::CompensationFailed))
            .count(),
        steps: steps
            .into_iter()
            .map(|s| StepSummary {
                step: s.step,
                position: s.position,
                state: s.state,
                attempts: s.attempts,
                error: s.error,
            })
            .collect(),
        workflow: run.workflow,
        transaction_id: run.transaction_id,
        state: run.state,
        owner: run.owner,
        created_at: Timestamp::from_millis(run.created_at),
        updated_at: Timestamp::from_millis(run.updated_at),
        errors,
        conflicts,
    }
}

fn event_summary(event: Event, deliveries: Vec<DeliveryRecord>) -> EventSummary {
    EventSummary {
        id: event.id,
        name: event.name,
        data: event.data,
        metadata: event.metadata,
        created_at: Timestamp::from_millis(event.created_at),
        deliveries: deliveries
            .into_iter()
            .map(|d| DeliverySummary {
                next_attempt_at: (d.state != "delivered")
                    .then(|| Timestamp::from_millis(d.next_attempt_at))
                    .flatten(),
                subscriber: d.subscriber,
                state: d.state,
                attempts: d.attempts,
                last_error: d.last_error,
                delivered_at: d.delivered_at.and_then(Timestamp::from_millis),
            })
            .collect(),
    }
}

fn log_error(e: keyward_flow::LogError) -> Error {
    Error::unavailable(e.to_string())
}

impl Workflows {
    /// The newest `limit` runs, optionally only those in `state`, each with its steps.
    pub async fn recent_runs(&self, state: Option<RunState>, limit: u32) -> Result<Vec<RunSummary>> {
        let log = self.engine().log();
        let runs = log.list_runs(state, limit).await.map_err(log_error)?;
        let mut out = Vec::with_capacity(runs.len());
        for run in runs {
            let steps = match log.load(&run.workflow, &run.transaction_id).await.map_err(log_error)? {
                Some((_, steps)) => steps,
                None => Vec::new(),
            };
            out.push(run_summary(run, steps));
        }
        Ok(out)
    }

    /// The newest `limit` events with their deliveries.
    pub async fn recent_events(&self, limit: u32) -> Result<Vec<EventSummary>> {
        let events = self.engine().log().list_events(limit).await.map_err(log_error)?;
        Ok(events.into_iter().map(|(e, d)| event_summary(e, d)).collect())
    }
}
