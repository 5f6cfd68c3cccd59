//! `GET /admin/workflow-runs` and `GET /admin/events`: what the workflows did and whether their
//! events reached every subscriber — the dashboard's Activity view reads these, as any client
//! may. Medusa's admin API has no such routes; they are keyward's own.

use axum::Json;
use axum::extract::State;
use keyward_flow::RunState;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::TypedQuery;
use crate::validate::{number, string};
use crate::wire::{EventsQuery, RunStateName, RunsQuery};

/// The most rows one read returns; the default is 20.
pub const LIMIT_MAX: u32 = 100;

fn limit(q: &serde_json::Map<String, Value>) -> ApiResult<u32> {
    match number(q, "limit") {
        None => Ok(20),
        Some(n) if n.fract() == 0.0 && (1.0..=f64::from(LIMIT_MAX)).contains(&n) => Ok(n as u32),
        Some(_) => Err(ApiError::invalid(format!(
            "Invalid request: Expected a whole number from 1 to {LIMIT_MAX} for field 'limit', got: '{}'",
            string(q, "limit").unwrap_or_default()
        ))),
    }
}

#[utoipa::path(get, path = "/admin/workflow-runs", tag = "activity", summary = "The newest workflow runs with their steps, errors and conflicts (never their inputs or results)", params(crate::wire::RunsQuery), responses((status = 200, description = "{workflow_runs, limit}", body = crate::wire::RunList), crate::wire::Refusals))]
pub async fn workflow_runs(State(state): State<AppState>, q: TypedQuery<RunsQuery>) -> ApiResult<Json<Value>> {
    let limit = limit(&q.raw)?;
    let run_state = q.query.state.map(|s| match s {
        RunStateName::Running => RunState::Running,
        RunStateName::Compensating => RunState::Compensating,
        RunStateName::Done => RunState::Done,
        RunStateName::Reverted => RunState::Reverted,
        RunStateName::Failed => RunState::Failed,
    });
    let runs = state.flows.recent_runs(run_state, limit).await?;
    Ok(Json(json!({ "workflow_runs": runs, "limit": limit })))
}

#[utoipa::path(get, path = "/admin/events", tag = "activity", summary = "The newest events with each subscriber's delivery (attempts, last error, next retry)", params(crate::wire::EventsQuery), responses((status = 200, description = "{events, limit}", body = crate::wire::EventList), crate::wire::Refusals))]
pub async fn events(State(state): State<AppState>, q: TypedQuery<EventsQuery>) -> ApiResult<Json<Value>> {
    let limit = limit(&q.raw)?;
    let events = state.flows.recent_events(limit).await?;
    Ok(Json(json!({ "events": events, "limit": limit })))
}
