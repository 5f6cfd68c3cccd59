//! The log's operations, each written once for both backends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::events::{Claimed, DeliveryRecord, Event, NewEvent};
use crate::jobs::{JobOutcome, JobRunRecord};
use crate::log::{FailureRecord, LogError, RunLog, RunRecord, RunState, Started, StepRecord, db};

use super::exec::{LogConn, LogRows};
use super::{Dialect, RUN, SqlLog, check_owner, held, publish_in, stmt, to_json};

#[async_trait]
impl<DB: Dialect> RunLog for SqlLog<DB> {
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    async fn migrate(&self) -> Result<(), LogError> {
        DB::migrate(&self.pool).await
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
        let (now, until) = (self.now(), self.until(lease));
        // The new run's values, for an insert or for restarting a finished run of the name.
        let fresh = |sql: &str| {
            stmt::<DB>(sql)
                .bind(workflow)
                .bind(transaction_id)
                .bind(input)
                .bind(owner)
                .bind(until)
                .bind(now)
        };
        let mut tx = self.begin().await?;
        let insert = fresh(
            "INSERT INTO flow_run (workflow, transaction_id, state, input, owner, lease_until, created_at, updated_at)
             VALUES ($1, $2, 'running', $3, $4, $5, $6, $6)
             ON CONFLICT (workflow, transaction_id) DO NOTHING",
        );
        if tx.run(insert).await? == 0 {
            let existing = stmt::<DB>(&format!("{RUN} FOR UPDATE"))
                .bind(workflow)
                .bind(transaction_id);
            let rows = tx.rows(existing).await?;
            let run = rows
                .first()
                .ok_or_else(|| LogError::Other(format!("run {transaction_id} of {workflow} vanished while starting")))?
                .run()?;
            if !(replace_finished && run.state.is_finished()) {
                tx.commit().await.map_err(db)?;
                return Ok(Started::Existing(Box::new(run)));
            }
            // A finished run under this name starts afresh: its steps forgotten.
            let forget = stmt::<DB>("DELETE FROM flow_step WHERE workflow = $1 AND transaction_id = $2")
                .bind(workflow)
                .bind(transaction_id);
            tx.run(forget).await?;
            let restart = fresh(
                "UPDATE flow_run SET state = 'running', input = $3, result = NULL, errors = '[]', owner = $4,
                     lease_until = $5, created_at = $6, updated_at = $6
                 WHERE workflow = $1 AND transaction_id = $2",
            );
            tx.run(restart).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Started::New)
    }

    async fn load(
        &self,
        workflow: &str,
        transaction_id: &str,
    ) -> Result<Option<(RunRecord, Vec<StepRecord>)>, LogError> {
        let rows = self.rows(stmt::<DB>(RUN).bind(workflow).bind(transaction_id)).await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let steps = stmt::<DB>(
            "SELECT step, position, state, attempts, input, output, compensation_input, error, events
             FROM flow_step WHERE workflow = $1 AND transaction_id = $2 ORDER BY position, step",
        )
        .bind(workflow)
        .bind(transaction_id);
        let steps = self.rows_as(steps, LogRows::step).await?;
        Ok(Some((row.run()?, steps)))
    }

    async fn save_step(
        &self,
        owner: &str,
        workflow: &str,
        transaction_id: &str,
        step: &StepRecord,
    ) -> Result<(), LogError> {
        let now = self.now();
        let mut tx = self.begin().await?;
        check_owner::<DB>(&mut tx, owner, workflow, transaction_id).await?;
        let upsert = stmt::<DB>(
            "INSERT INTO flow_step
                 (workflow, transaction_id, step, position, state, attempts, input, output,
                  compensation_input, error, events, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (workflow, transaction_id, step) DO UPDATE SET
                 position = excluded.position, state = excluded.state, attempts = excluded.attempts,
                 input = excluded.input, output = excluded.output,
                 compensation_input = excluded.compensation_input, error = excluded.error,
                 events = excluded.events, updated_at = excluded.updated_at",
        )
        .bind(workflow)
        .bind(transaction_id)
        .bind(&step.step)
        .bind(i64::from(step.position))
        .bind(step.state.as_str())
        .bind(i64::from(step.attempts))
        .bind(step.input.as_ref())
        .bind(step.output.as_ref())
        .bind(step.compensation_input.as_ref())
        .bind(step.error.as_deref())
        .bind(step.events.as_ref())
        .bind(now);
        tx.run(upsert).await?;
        let touch = stmt::<DB>("UPDATE flow_run SET updated_at = $3 WHERE workflow = $1 AND transaction_id = $2")
            .bind(workflow)
            .bind(transaction_id)
            .bind(now);
        tx.run(touch).await?;
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
        let now = self.now();
        let mut tx = self.begin().await?;
        check_owner::<DB>(&mut tx, owner, workflow, transaction_id).await?;
        let publishes = state == RunState::Done && !events.is_empty();
        if publishes {
            publish_in::<DB>(&mut tx, events, now).await?;
        }
        // A finished run is held by no one.
        let update = stmt::<DB>(
            "UPDATE flow_run SET state = $3, result = $4, errors = $5, updated_at = $6,
                 owner = CASE WHEN $7 THEN NULL ELSE owner END,
                 lease_until = CASE WHEN $7 THEN NULL ELSE lease_until END
             WHERE workflow = $1 AND transaction_id = $2",
        )
        .bind(workflow)
        .bind(transaction_id)
        .bind(state.as_str())
        .bind(result)
        .bind(to_json(&errors)?)
        .bind(now)
        .bind(state.is_finished());
        tx.run(update).await?;
        tx.commit().await.map_err(db)?;
        if publishes {
            self.published.notify_one();
        }
        Ok(())
    }

    async fn renew(&self, owner: &str, workflow: &str, transaction_id: &str, lease: Duration) -> Result<(), LogError> {
        let renew = stmt::<DB>(
            "UPDATE flow_run SET lease_until = $4 WHERE workflow = $1 AND transaction_id = $2 AND owner = $3",
        )
        .bind(workflow)
        .bind(transaction_id)
        .bind(owner)
        .bind(self.until(lease));
        held(self.run(renew).await?)
    }

    async fn claim_expired(
        &self,
        owner: &str,
        lease: Duration,
        workflows: &[String],
        limit: u32,
    ) -> Result<Vec<(String, String)>, LogError> {
        let claim = stmt::<DB>(
            "UPDATE flow_run SET owner = $1, lease_until = $2, updated_at = $3
             FROM (SELECT workflow AS expired_workflow, transaction_id AS expired_transaction FROM flow_run
                   WHERE state IN ('running', 'compensating')
                     AND (lease_until IS NULL OR lease_until <= $3)
                     AND workflow IN (SELECT value FROM jsonb_array_elements_text($4))
                   ORDER BY lease_until LIMIT $5
                   FOR UPDATE SKIP LOCKED) AS expired
             WHERE workflow = expired_workflow AND transaction_id = expired_transaction
             RETURNING workflow, transaction_id",
        )
        .bind(owner)
        .bind(self.until(lease))
        .bind(self.now())
        .bind(to_json(&workflows)?)
        .bind(i64::from(limit));
        self.rows(claim)
            .await?
            .iter()
            .map(|r| Ok((r.text("workflow")?, r.text("transaction_id")?)))
            .collect()
    }

    async fn list_runs(&self, state: Option<RunState>, limit: u32) -> Result<Vec<RunRecord>, LogError> {
        let list = stmt::<DB>(
            "SELECT workflow, transaction_id, state, input, result, errors, owner, created_at, updated_at
             FROM flow_run WHERE ($1 IS NULL OR state = $1)
             ORDER BY created_at DESC, transaction_id DESC LIMIT $2",
        )
        .bind(state.map(RunState::as_str))
        .bind(i64::from(limit));
        self.rows_as(list, LogRows::run).await
    }

    async fn register_subscriber(&self, id: &str, events: &[String]) -> Result<(), LogError> {
        let upsert = stmt::<DB>(
            "INSERT INTO flow_subscriber (id, events, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (id) DO UPDATE SET events = excluded.events, updated_at = excluded.updated_at",
        )
        .bind(id)
        .bind(to_json(&events)?)
        .bind(self.now());
        self.run(upsert).await.map(drop)
    }

    async fn publish(&self, events: &[NewEvent]) -> Result<(), LogError> {
        let mut tx = self.begin().await?;
        publish_in::<DB>(&mut tx, events, self.now()).await?;
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
        let claim = stmt::<DB>(
            "UPDATE flow_delivery SET locked_by = $1, locked_until = $2, attempts = attempts + 1
             FROM (SELECT event_id AS due_event, subscriber AS due_subscriber FROM flow_delivery
                   WHERE state = 'pending' AND next_attempt_at <= $3
                     AND (locked_until IS NULL OR locked_until <= $3)
                     AND subscriber IN (SELECT value FROM jsonb_array_elements_text($4))
                   ORDER BY next_attempt_at LIMIT $5
                   FOR UPDATE SKIP LOCKED) AS due
             WHERE event_id = due_event AND subscriber = due_subscriber
             RETURNING event_id, subscriber, attempts",
        )
        .bind(node)
        .bind(self.until(lock))
        .bind(self.now())
        .bind(to_json(&subscribers)?)
        .bind(i64::from(limit));
        let claimed = self.rows(claim).await?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let ids = claimed
            .iter()
            .map(|r| r.text("event_id"))
            .collect::<Result<Vec<_>, _>>()?;
        let fetch = stmt::<DB>(
            "SELECT id, name, data, metadata, created_at FROM flow_event
             WHERE id IN (SELECT value FROM jsonb_array_elements_text($1))",
        )
        .bind(to_json(&ids)?);
        let mut events: HashMap<String, Event> = HashMap::new();
        for row in self.rows(fetch).await? {
            let event = row.event()?;
            events.insert(event.id.clone(), event);
        }
        claimed
            .iter()
            .zip(ids)
            .map(|(r, id)| {
                Ok(Claimed {
                    event: events
                        .get(&id)
                        .cloned()
                        .ok_or_else(|| LogError::Other(format!("claimed a delivery of event {id}, which is gone")))?,
                    subscriber: r.text("subscriber")?,
                    attempt: u32::try_from(r.int("attempts")?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn delivered(&self, node: &str, event_id: &str, subscriber: &str) -> Result<(), LogError> {
        let done = stmt::<DB>(
            "UPDATE flow_delivery SET state = 'delivered', delivered_at = $4, locked_by = NULL, locked_until = NULL,
                 last_error = NULL
             WHERE event_id = $1 AND subscriber = $2 AND locked_by = $3",
        )
        .bind(event_id)
        .bind(subscriber)
        .bind(node)
        .bind(self.now());
        held(self.run(done).await?)
    }

    async fn delivery_failed(
        &self,
        node: &str,
        event_id: &str,
        subscriber: &str,
        error: &str,
        retry_in: Duration,
    ) -> Result<(), LogError> {
        let release = stmt::<DB>(
            "UPDATE flow_delivery SET next_attempt_at = $5, last_error = $4, locked_by = NULL, locked_until = NULL
             WHERE event_id = $1 AND subscriber = $2 AND locked_by = $3",
        )
        .bind(event_id)
        .bind(subscriber)
        .bind(node)
        .bind(error)
        .bind(self.until(retry_in));
        self.run(release).await.map(drop)
    }

    async fn list_events(&self, limit: u32) -> Result<Vec<(Event, Vec<DeliveryRecord>)>, LogError> {
        let list = stmt::<DB>(
            "SELECT id, name, data, metadata, created_at FROM flow_event ORDER BY created_at DESC, id DESC LIMIT $1",
        )
        .bind(i64::from(limit));
        let mut out = Vec::new();
        for row in self.rows(list).await? {
            let event = row.event()?;
            let deliveries = stmt::<DB>(
                "SELECT subscriber, state, attempts, last_error, next_attempt_at, delivered_at
                 FROM flow_delivery WHERE event_id = $1 ORDER BY subscriber",
            )
            .bind(&event.id);
            let deliveries = self.rows_as(deliveries, LogRows::delivery).await?;
            out.push((event, deliveries));
        }
        Ok(out)
    }

    fn published(&self) -> Arc<Notify> {
        self.published.clone()
    }

    async fn listen(&self) -> Result<(), LogError> {
        if self.listening.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let listened = DB::listen(&self.pool, self.published.clone()).await;
        if listened.is_err() {
            self.listening.store(false, Ordering::SeqCst);
        }
        listened
    }

    async fn claim_tick(
        &self,
        job: &str,
        tick: i64,
        node: &str,
        outcome: JobOutcome,
        lease: Duration,
    ) -> Result<bool, LogError> {
        let now = self.now();
        let running = outcome == JobOutcome::Running;
        let claim = stmt::<DB>(
            "INSERT INTO flow_job_run (job, tick, node, outcome, started_at, finished_at, lease_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job, tick) DO NOTHING",
        )
        .bind(job)
        .bind(tick)
        .bind(node)
        .bind(outcome.as_str())
        .bind(now)
        .bind((!running).then_some(now))
        .bind(running.then(|| self.until(lease)));
        Ok(self.run(claim).await? == 1)
    }

    async fn finish_tick(
        &self,
        job: &str,
        tick: i64,
        outcome: JobOutcome,
        error: Option<&str>,
    ) -> Result<(), LogError> {
        let finish = stmt::<DB>(
            "UPDATE flow_job_run SET outcome = $3, error = $4, finished_at = $5, lease_until = NULL
             WHERE job = $1 AND tick = $2",
        )
        .bind(job)
        .bind(tick)
        .bind(outcome.as_str())
        .bind(error)
        .bind(self.now());
        self.run(finish).await.map(drop)
    }

    async fn job_running(&self, job: &str) -> Result<bool, LogError> {
        let running = stmt::<DB>(
            "SELECT 1 AS one FROM flow_job_run WHERE job = $1 AND outcome = 'running' AND lease_until > $2 LIMIT 1",
        )
        .bind(job)
        .bind(self.now());
        Ok(!self.rows(running).await?.is_empty())
    }

    async fn job_executions(&self, job: &str) -> Result<u64, LogError> {
        let count =
            stmt::<DB>("SELECT count(*) AS n FROM flow_job_run WHERE job = $1 AND outcome <> 'skipped'").bind(job);
        let rows = self.rows(count).await?;
        let n = rows.first().map(|r| r.int("n")).transpose()?.unwrap_or(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn list_job_runs(&self, job: Option<&str>, limit: u32) -> Result<Vec<JobRunRecord>, LogError> {
        let list = stmt::<DB>(
            "SELECT job, tick, node, outcome, error, started_at, finished_at FROM flow_job_run
             WHERE ($1 IS NULL OR job = $1) ORDER BY tick DESC, job LIMIT $2",
        )
        .bind(job)
        .bind(i64::from(limit));
        self.rows_as(list, LogRows::job_run).await
    }
}
