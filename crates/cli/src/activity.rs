//! `keyward events list`, `jobs list`, `workflows list`: what the workflows, events and jobs did.

use keyward::{Error, Workflows};
use serde_json::json;

use crate::table;

use super::{Failure, Outcome, RunStateArg};

pub(crate) async fn events_list(flows: &Workflows, limit: u32, json: bool) -> Result<Outcome, Failure> {
    let events = flows.recent_events(limit).await?;
    if json {
        return Ok(Outcome::ok(format!("{}\n", json!({ "events": events }))));
    }
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let delivery = e
                .deliveries
                .iter()
                .map(|d| match &d.last_error {
                    Some(err) if d.state == "pending" => {
                        format!("{} pending after {} tries ({err})", d.subscriber, d.attempts)
                    }
                    _ => format!("{} {}", d.subscriber, d.state),
                })
                .collect::<Vec<_>>()
                .join("; ");
            vec![
                shown(e.created_at),
                e.name.clone(),
                e.data["id"].as_str().unwrap_or_default().to_owned(),
                if delivery.is_empty() { "-".to_owned() } else { delivery },
            ]
        })
        .collect();
    let mut s = table::render(&["CREATED", "EVENT", "ID", "DELIVERIES"], &rows);
    s.push_str(&format!("{} events\n", events.len()));
    Ok(Outcome::ok(s))
}

/// An instant as the tables print it (empty when there is none).
pub(crate) fn shown(at: Option<keyward::Timestamp>) -> String {
    at.map(|t| t.to_string()).unwrap_or_default()
}

pub(crate) async fn jobs_list(
    flows: &Workflows,
    job: Option<&str>,
    limit: u32,
    json: bool,
) -> Result<Outcome, Failure> {
    let runs = flows
        .engine()
        .log()
        .list_job_runs(job, limit)
        .await
        .map_err(|e| Error::unavailable(e.to_string()))?;
    let at = |ms: i64| keyward::Timestamp::from_millis(ms);
    Ok(Outcome::ok(if json {
        let runs: Vec<serde_json::Value> = runs
            .iter()
            .map(|r| {
                json!({
                    "job": r.job, "tick": at(r.tick), "node": r.node, "outcome": r.outcome,
                    "error": r.error, "started_at": at(r.started_at),
                    "finished_at": r.finished_at.and_then(at),
                })
            })
            .collect();
        format!("{}\n", json!({ "runs": runs }))
    } else {
        let text = |t: Option<keyward::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
        let rows: Vec<Vec<String>> = runs
            .iter()
            .map(|r| {
                vec![
                    r.job.clone(),
                    text(at(r.tick)),
                    r.outcome.as_str().to_owned(),
                    r.node.clone(),
                    text(r.finished_at.and_then(at)),
                    r.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let mut s = table::render(&["JOB", "TICK", "OUTCOME", "NODE", "FINISHED", "ERROR"], &rows);
        s.push_str(&format!("{} runs\n", runs.len()));
        s
    }))
}

pub(crate) async fn workflow_runs(
    flows: &Workflows,
    state: Option<RunStateArg>,
    limit: u32,
    json: bool,
) -> Result<Outcome, Failure> {
    let runs = flows.recent_runs(state.map(Into::into), limit).await?;
    if json {
        return Ok(Outcome::ok(format!("{}\n", json!({ "runs": runs }))));
    }
    let failures = |errors: &[keyward_flow::FailureRecord]| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.step, e.error))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                shown(r.created_at),
                r.workflow.clone(),
                r.state.to_string(),
                r.transaction_id.clone(),
                failures(r.errors.get(..1).unwrap_or_default()),
                failures(&r.conflicts),
            ]
        })
        .collect();
    let mut s = table::render(
        &["STARTED", "WORKFLOW", "STATE", "TRANSACTION", "ERROR", "CONFLICTS"],
        &rows,
    );
    s.push_str(&format!("{} runs\n", runs.len()));
    Ok(Outcome::ok(s))
}
