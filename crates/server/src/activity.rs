//! `GET /admin/workflow-runs` and `GET /admin/events`: what the workflows did and whether their
//! events reached every subscriber — the dashboard's Activity view reads these, as any client
//! may. Medusa's admin API has no such routes; they are keyward's own.

use axum::Json;
use axum::extract::State;
use keyward_flow::RunState;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::validate::{Spec, Ty, number, opt, string, validate};

/// The most rows one read returns; the default is 20.
pub const LIMIT_MAX: u32 = 100;

const RUN_STATES: &[&str] = &["running", "compensating", "done", "reverted", "failed"];
const RUNS_QUERY: &[Spec] = &[opt("state", Ty::Enum(RUN_STATES)), opt("limit", Ty::Number)];
const EVENTS_QUERY: &[Spec] = &[opt("limit", Ty::Number)];

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

#[utoipa::path(get, path = "/admin/workflow-runs", tag = "activity", summary = "The newest workflow runs with their steps, errors and conflicts (never their inputs or results)", params(("state" = Option<String>, Query, description = "running, compensating, done, reverted or failed"), ("limit" = Option<u32>, Query, description = "Rows to return (default 20, at most 100)")), responses((status = 200, description = "{workflow_runs, limit}", body = Object), (status = 400, description = "Invalid request", body = Object), (status = 401, description = "Unauthorized", body = Object)))]
pub async fn workflow_runs(State(state): State<AppState>, Query(q): Query) -> ApiResult<Json<Value>> {
    let q = validate(&q, RUNS_QUERY, true)?;
    let limit = limit(&q)?;
    let run_state = string(&q, "state").and_then(|s| RunState::parse(&s));
    let runs = state.flows.recent_runs(run_state, limit).await?;
    Ok(Json(json!({ "workflow_runs": runs, "limit": limit })))
}

#[utoipa::path(get, path = "/admin/events", tag = "activity", summary = "The newest events with each subscriber's delivery (attempts, last error, next retry)", params(("limit" = Option<u32>, Query, description = "Rows to return (default 20, at most 100)")), responses((status = 200, description = "{events, limit}", body = Object), (status = 400, description = "Invalid request", body = Object), (status = 401, description = "Unauthorized", body = Object)))]
pub async fn events(State(state): State<AppState>, Query(q): Query) -> ApiResult<Json<Value>> {
    let q = validate(&q, EVENTS_QUERY, true)?;
    let limit = limit(&q)?;
    let events = state.flows.recent_events(limit).await?;
    Ok(Json(json!({ "events": events, "limit": limit })))
}
