//! Driving one run: forward group by group, recording each step before and after it is invoked,
//! then (when a step failed for good) backward through the compensations; the run's lease kept
//! fresh meanwhile. `Engine::run` and recovery start runs; this is what they call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{FlowError, StepFailure};
use crate::events::NewEvent;
use crate::fault::{Boundary, crash_point};
use crate::log::{FailureRecord, Handler, LogError, RunRecord, RunState, StepRecord, StepState};
use crate::step::{StepContext, StepDef, StepError, StepMeta, StepOptions};
use crate::workflow::{Entry, RawData, Target, WorkflowDef};

use super::{Engine, RESULT_STEP, RunResult};

/// One run being driven.
pub(super) struct Run<C> {
    def: Arc<WorkflowDef<C>>,
    tx: String,
    data: RawData,
    steps: HashMap<String, StepRecord>,
    errors: Vec<StepFailure>,
    pub(super) state: RunState,
    result: Option<Value>,
}

impl<C> Run<C> {
    pub(super) fn fresh(def: Arc<WorkflowDef<C>>, tx: String, input: Value) -> Self {
        Self {
            def,
            tx,
            data: RawData {
                input,
                ..RawData::default()
            },
            steps: HashMap::new(),
            errors: Vec::new(),
            state: RunState::Running,
            result: None,
        }
    }

    pub(super) fn from_log(def: Arc<WorkflowDef<C>>, run: RunRecord, steps: Vec<StepRecord>) -> Self {
        let mut this = Self::fresh(def, run.transaction_id, run.input);
        this.state = run.state;
        this.result = run.result;
        this.errors = failures_from(run.errors);
        for s in steps {
            if let (StepState::Done, Some(out)) = (s.state, &s.output) {
                this.data.outputs.insert(s.step.clone(), out.clone());
            }
            this.steps.insert(s.step.clone(), s);
        }
        this
    }

    fn error_records(&self) -> Vec<FailureRecord> {
        self.errors
            .iter()
            .map(|f| FailureRecord {
                step: f.step.clone(),
                handler: f.handler,
                error: f.error.message().to_owned(),
                maybe_applied: f.error.is_maybe_applied(),
            })
            .collect()
    }
}

fn failures_from(records: Vec<FailureRecord>) -> Vec<StepFailure> {
    records
        .into_iter()
        .map(|r| {
            let error = StepError::permanent(r.error);
            StepFailure {
                step: r.step,
                handler: r.handler,
                error: if r.maybe_applied { error.maybe_applied() } else { error },
            }
        })
        .collect()
}

/// A step ready to invoke: what runs, under which name, with which input.
struct Job<C> {
    name: String,
    def: Arc<StepDef<C>>,
    input: Value,
    /// Found `invoking` in the log: a crashed process may have invoked it already.
    resumed: bool,
}

/// Keeps a run's lease fresh while it is driven; stops when dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<C: Send + Sync + 'static> Engine<C> {
    pub(super) async fn drive(&self, run: &mut Run<C>) -> Result<(), FlowError> {
        let _beat = self.heartbeat(run);
        if run.state == RunState::Running {
            self.forward(run).await?;
        }
        if run.state == RunState::Compensating {
            self.backward(run).await?;
        }
        Ok(())
    }

    fn heartbeat(&self, run: &Run<C>) -> Heartbeat {
        let (log, node, lease) = (self.inner.log.clone(), self.inner.node.clone(), self.inner.lease);
        let clock = self.inner.clock.clone();
        let (workflow, tx) = (run.def.name.clone(), run.tx.clone());
        Heartbeat(tokio::spawn(async move {
            loop {
                crate::clock::sleep(clock.as_ref(), lease / 3).await;
                match log.renew(&node, &workflow, &tx, lease).await {
                    Ok(()) => {}
                    Err(LogError::LeaseLost) => {
                        tracing::warn!(%workflow, transaction_id = %tx, "lost the lease on a workflow run");
                        break;
                    }
                    Err(e) => tracing::warn!(%workflow, transaction_id = %tx, error = %e, "could not renew a lease"),
                }
            }
        }))
    }

    async fn save(&self, run: &mut Run<C>, record: StepRecord) -> Result<(), FlowError> {
        self.inner
            .log
            .save_step(&self.inner.node, &run.def.name, &run.tx, &record)
            .await?;
        run.steps.insert(record.step.clone(), record);
        Ok(())
    }

    async fn set_state(&self, run: &mut Run<C>, state: RunState) -> Result<(), FlowError> {
        let events = if state == RunState::Done {
            run_events(run)
        } else {
            Vec::new()
        };
        self.inner
            .log
            .set_state(
                &self.inner.node,
                &run.def.name,
                &run.tx,
                state,
                run.result.as_ref(),
                &run.error_records(),
                &events,
            )
            .await?;
        run.state = state;
        Ok(())
    }

    /// What an entry runs and with which input; `None` when it is skipped.
    fn prepare(&self, run: &Run<C>, entry: &Entry<C>) -> Result<Option<Job<C>>, StepError> {
        let name = entry.name().to_owned();
        let def = match &entry.target {
            Target::Step(s) => s.clone(),
            Target::Hook(h) => match self.hook_handler(&run.def.name, h) {
                Some(handler) => handler,
                None => return Ok(None),
            },
        };
        // Invoked before a crash: again, with the same input (and no second look at a condition).
        if let Some(StepRecord {
            state: StepState::Invoking,
            input: Some(input),
            ..
        }) = run.steps.get(&name)
        {
            return Ok(Some(Job {
                name,
                def,
                input: input.clone(),
                resumed: true,
            }));
        }
        if let Some(when) = &entry.when
            && !when(&run.data)?
        {
            return Ok(None);
        }
        let input = (entry.input)(&run.data)?;
        Ok(Some(Job {
            name,
            def,
            input,
            resumed: false,
        }))
    }

    async fn forward(&self, run: &mut Run<C>) -> Result<(), FlowError> {
        let def = run.def.clone();
        for (position, group) in def.nodes.iter().enumerate() {
            let position = u32::try_from(position).unwrap_or(u32::MAX);
            let (jobs, mut failures) = self.jobs_of(run, group, position).await?;
            for job in &jobs {
                let mut rec = record(&job.name, position, StepState::Invoking);
                rec.input = Some(job.input.clone());
                rec.attempts = run.steps.get(&job.name).map_or(0, |r| r.attempts);
                self.save(run, rec).await?;
            }
            let outcomes = join_all(jobs.iter().map(|job| self.invoke(&def.name, &run.tx, job))).await;
            for (job, (outcome, attempts)) in jobs.into_iter().zip(outcomes) {
                let rec = settle(run, job, position, outcome, attempts, &mut failures);
                self.save(run, rec).await?;
            }
            if !failures.is_empty() {
                run.errors.extend(failures);
                return self.set_state(run, RunState::Compensating).await;
            }
        }
        self.finish(run).await
    }

    /// The group's steps still to invoke: one done or skipped is not run again, one skipped now
    /// is recorded so, and one whose input cannot be built is a failure.
    async fn jobs_of(
        &self,
        run: &mut Run<C>,
        group: &[Entry<C>],
        position: u32,
    ) -> Result<(Vec<Job<C>>, Vec<StepFailure>), FlowError> {
        let (mut jobs, mut failures) = (Vec::new(), Vec::new());
        for entry in group {
            let name = entry.name();
            if matches!(
                run.steps.get(name).map(|r| r.state),
                Some(StepState::Done | StepState::Skipped)
            ) {
                continue;
            }
            match self.prepare(run, entry) {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) => self.save(run, record(name, position, StepState::Skipped)).await?,
                Err(error) => failures.push(StepFailure {
                    step: name.to_owned(),
                    handler: Handler::Invoke,
                    error,
                }),
            }
        }
        Ok((jobs, failures))
    }

    /// Every step went through: the run is done with its result, or compensates when the result
    /// cannot be built from the outputs.
    async fn finish(&self, run: &mut Run<C>) -> Result<(), FlowError> {
        match (run.def.result)(&run.data) {
            Ok(result) => {
                run.result = Some(result);
                self.set_state(run, RunState::Done).await
            }
            Err(error) => {
                run.errors.push(StepFailure {
                    step: RESULT_STEP.to_owned(),
                    handler: Handler::Invoke,
                    error,
                });
                self.set_state(run, RunState::Compensating).await
            }
        }
    }

    async fn invoke(&self, workflow: &str, tx: &str, job: &Job<C>) -> (Result<crate::step::Invoked, StepError>, u32) {
        crash_point(workflow, &job.name, Boundary::Before);
        let meta = Arc::new(StepMeta {
            workflow: workflow.to_owned(),
            transaction_id: tx.to_owned(),
            step: job.name.clone(),
            input: job.input.clone(),
            resumed: job.resumed,
        });
        let options = &job.def.options;
        let outcome = retrying(
            self.inner.clock.as_ref(),
            options,
            &meta,
            options.timeout,
            |attempt, after_unknown| {
                let cx = StepContext::new(self.inner.container.clone(), meta.clone(), attempt)
                    .after_unknown_outcome(after_unknown);
                (job.def.invoke)(job.input.clone(), cx)
            },
        )
        .await;
        if outcome.0.is_ok() {
            crash_point(workflow, &job.name, Boundary::After);
        }
        outcome
    }

    async fn backward(&self, run: &mut Run<C>) -> Result<(), FlowError> {
        let def = run.def.clone();
        for group in def.nodes.iter().rev() {
            let undos = self.compensations_of(run, group);
            let outcomes = join_all(undos.iter().map(|undo| self.compensate(undo))).await;
            for (undo, (outcome, conflicts)) in undos.into_iter().zip(outcomes) {
                let rec = undone(run, undo.record, outcome, conflicts);
                self.save(run, rec).await?;
            }
        }
        let failed = run.steps.values().any(|r| r.state == StepState::CompensationFailed);
        self.set_state(run, if failed { RunState::Failed } else { RunState::Reverted })
            .await
    }

    /// The group's steps to compensate, with what each compensation gets.
    fn compensations_of(&self, run: &Run<C>, group: &[Entry<C>]) -> Vec<Undo<C>> {
        let mut undos = Vec::new();
        for entry in group {
            let Some(rec) = run.steps.get(entry.name()) else {
                continue;
            };
            let input = match rec.state {
                StepState::Done => rec.compensation_input.clone(),
                // A step that failed is taken at its word: it wrote nothing, so there is
                // nothing of this run's to undo, and a snapshot written back now could
                // only overwrite what a concurrent change wrote since. It is compensated
                // (with no compensation input) only when its writes may have happened:
                // it timed out, said so (`StepError::maybe_applied`), or a crash cut it
                // off before its outcome was recorded.
                StepState::Failed if rec.input.is_some() && maybe_applied(run, &rec.step) => None,
                StepState::Invoking if rec.input.is_some() => None,
                _ => continue,
            };
            let def = match &entry.target {
                Target::Step(s) => s.clone(),
                Target::Hook(h) => match self.hook_handler(&run.def.name, h) {
                    Some(handler) => handler,
                    None => continue,
                },
            };
            if def.options.no_compensation || def.compensate.is_none() {
                continue;
            }
            let meta = Arc::new(StepMeta {
                workflow: run.def.name.clone(),
                transaction_id: run.tx.clone(),
                step: entry.name().to_owned(),
                input: rec.input.clone().unwrap_or(Value::Null),
                resumed: false,
            });
            undos.push(Undo {
                record: rec.clone(),
                def,
                meta,
                input,
            });
        }
        undos
    }

    /// Runs one compensation (with its retries); returns its outcome and the conflicts it
    /// reported.
    async fn compensate(&self, undo: &Undo<C>) -> (Result<(), StepError>, Vec<String>) {
        let Some(compensate) = &undo.def.compensate else {
            return (Ok(()), Vec::new());
        };
        let conflicts: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (outcome, _) = retrying(
            self.inner.clock.as_ref(),
            &undo.def.options,
            &undo.meta,
            None,
            |attempt, _| {
                let cx = StepContext::new(self.inner.container.clone(), undo.meta.clone(), attempt)
                    .collecting(conflicts.clone());
                compensate(undo.input.clone(), cx)
            },
        )
        .await;
        let found = std::mem::take(&mut *conflicts.lock().unwrap_or_else(|p| p.into_inner()));
        (outcome, found)
    }
}

/// A compensation to run: the step's record, its definition, and its input.
struct Undo<C> {
    record: StepRecord,
    def: Arc<StepDef<C>>,
    meta: Arc<StepMeta>,
    input: Option<Value>,
}

/// The record of an invoked step, from its outcome; a failure also goes to `failures`.
fn settle<C>(
    run: &mut Run<C>,
    job: Job<C>,
    position: u32,
    outcome: Result<crate::step::Invoked, StepError>,
    attempts: u32,
    failures: &mut Vec<StepFailure>,
) -> StepRecord {
    let mut rec = record(&job.name, position, StepState::Done);
    rec.input = Some(job.input);
    rec.attempts = run.steps.get(&job.name).map_or(0, |r| r.attempts) + attempts;
    match outcome {
        Ok(invoked) => {
            if let Some(private) = invoked.private {
                run.data.private.insert(job.name.clone(), private);
            }
            if !invoked.events.is_empty() {
                rec.events = serde_json::to_value(&invoked.events).ok();
            }
            match invoked.output {
                Some(output) => {
                    run.data.outputs.insert(job.name.clone(), output.clone());
                    rec.output = Some(output);
                    rec.compensation_input = invoked.compensation;
                }
                None => rec.state = StepState::Skipped,
            }
        }
        Err(error) => {
            tracing::warn!(workflow = %run.def.name, transaction_id = %run.tx, step = %job.name, %error, "step failed");
            rec.state = StepState::Failed;
            rec.error = Some(error.message().to_owned());
            failures.push(StepFailure {
                step: job.name,
                handler: Handler::Invoke,
                error,
            });
        }
    }
    rec
}

/// The record of a compensated step: compensated, or failed with its error; the conflicts it
/// reported are kept on the run.
fn undone<C>(
    run: &mut Run<C>,
    mut rec: StepRecord,
    outcome: Result<(), StepError>,
    conflicts: Vec<String>,
) -> StepRecord {
    for conflict in conflicts {
        tracing::warn!(workflow = %run.def.name, transaction_id = %run.tx, step = %rec.step, %conflict, "compensation left a changed row alone");
        run.errors.push(StepFailure {
            step: rec.step.clone(),
            handler: Handler::Conflict,
            error: StepError::permanent(conflict),
        });
    }
    match outcome {
        Ok(()) => rec.state = StepState::Compensated,
        Err(error) => {
            tracing::error!(workflow = %run.def.name, transaction_id = %run.tx, step = %rec.step, %error, "compensation failed");
            rec.state = StepState::CompensationFailed;
            rec.error = Some(error.message().to_owned());
            run.errors.push(StepFailure {
                step: rec.step.clone(),
                handler: Handler::Compensate,
                error,
            });
        }
    }
    rec
}

/// Whether the failure recorded for `step` says its writes may have happened.
fn maybe_applied<C>(run: &Run<C>, step: &str) -> bool {
    run.errors
        .iter()
        .any(|f| f.step == step && f.handler == Handler::Invoke && f.error.is_maybe_applied())
}

/// The events a finished run publishes: each done step's, in workflow order, with metadata
/// naming the run they came from.
fn run_events<C>(run: &Run<C>) -> Vec<NewEvent> {
    let mut out = Vec::new();
    for (_, entry) in run.def.entries() {
        let Some(StepRecord {
            state: StepState::Done,
            events: Some(events),
            ..
        }) = run.steps.get(entry.name())
        else {
            continue;
        };
        let events: Vec<NewEvent> = serde_json::from_value(events.clone()).unwrap_or_default();
        for mut e in events {
            let (object, action) = e.name.split_once('.').unwrap_or((e.name.as_str(), ""));
            e.metadata = serde_json::json!({
                "source": object,
                "object": object,
                "action": action,
                "event_group_id": run.tx,
                "workflow": run.def.name,
            });
            out.push(e);
        }
    }
    out
}

fn record(step: &str, position: u32, state: StepState) -> StepRecord {
    StepRecord {
        step: step.to_owned(),
        position,
        state,
        attempts: 0,
        input: None,
        output: None,
        compensation_input: None,
        error: None,
        events: None,
    }
}

/// Calls `call` (with the attempt number, and whether the previous attempt failed with an error
/// that may have been applied) until it succeeds, fails permanently, or has been retried `max_retries` times;
/// each call is cut off after `timeout` (a permanent failure). Returns the outcome and the
/// number of calls made.
async fn retrying<T, F, Fut>(
    clock: &dyn crate::clock::Clock,
    options: &StepOptions,
    meta: &StepMeta,
    timeout: Option<Duration>,
    mut call: F,
) -> (Result<T, StepError>, u32)
where
    F: FnMut(u32, bool) -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    let mut attempt = 0;
    let mut after_unknown = false;
    loop {
        attempt += 1;
        let fut = call(attempt, after_unknown);
        let outcome = match timeout {
            Some(limit) => match crate::clock::timeout(clock, limit, fut).await {
                Some(outcome) => outcome,
                // Cut off mid-flight: its writes may or may not have happened.
                None => {
                    Err(
                        StepError::permanent(format!("step {} timed out after {} ms", meta.step, limit.as_millis()))
                            .maybe_applied(),
                    )
                }
            },
            None => fut.await,
        };
        match outcome {
            Err(e) if !e.is_permanent() && attempt <= options.max_retries => {
                after_unknown = e.is_maybe_applied();
                tracing::warn!(workflow = %meta.workflow, transaction_id = %meta.transaction_id, step = %meta.step, attempt, error = %e, "step attempt failed; retrying");
                crate::clock::sleep(clock, options.retry_interval).await;
            }
            other => return (other, attempt),
        }
    }
}

pub(super) fn outcome<C, O: DeserializeOwned>(run: Run<C>, throw_on_error: bool) -> Result<RunResult<O>, FlowError> {
    if throw_on_error && !run.errors.is_empty() {
        return Err(FlowError::Failed {
            workflow: run.def.name.clone(),
            transaction_id: run.tx,
            state: run.state,
            errors: run.errors,
        });
    }
    let result = match (run.state, run.result) {
        (RunState::Done, Some(v)) => Some(
            serde_json::from_value(v)
                .map_err(|e| FlowError::Data(format!("the result of workflow {} does not fit: {e}", run.def.name)))?,
        ),
        _ => None,
    };
    Ok(RunResult {
        transaction_id: run.tx,
        state: run.state,
        result,
        errors: run.errors,
        private: run.data.private,
    })
}
