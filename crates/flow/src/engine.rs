//! The engine: runs registered workflows against a container, writing every step to the run
//! log as it happens, and finishes runs that a dead process left behind.
//!
//! A run goes forward group by group. Before a step is invoked its input is recorded (state
//! `invoking`); when it returns, its output and compensation input are recorded (`done`). When a
//! step fails for good, the run turns to compensating: every step that completed is compensated
//! in reverse order (a parallel group in parallel), and the one that failed only when its writes
//! may have happened (a timeout, `StepError::maybe_applied`, a crash). A compensation undoes
//! only what its own run wrote: it writes conditionally and reports a row someone else changed
//! since as a conflict (`StepContext::conflict`) instead of overwriting it. A process that
//! finds a run whose lease ran out takes it over and drives it from what the log says: a step
//! left `invoking` is invoked again with its recorded input, so steps must be idempotent for
//! their input — the price of surviving a crash between a step's effect and its record.
//!
//! The engine's other rooms: `dispatch` (subscribers and event delivery), `schedule` (jobs and
//! their ticks), `error` (`FlowError`).

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{FlowError, StepFailure};
use crate::events::{NewEvent, Subscriber};
use crate::fault::{Boundary, crash_point};
use crate::jobs::Job as ScheduledJob;
use crate::log::{FailureRecord, Handler, LogError, RunLog, RunRecord, RunState, Started, StepRecord, StepState};
use crate::step::{Step, StepContext, StepDef, StepError, StepMeta, StepOptions};
use crate::workflow::{Entry, RawData, Target, Workflow, WorkflowDef};

/// How long a node holds a run without renewing it, unless configured.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Runs claimed per recovery pass.
const CLAIM_BATCH: u32 = 32;

/// The name of the pseudo-step that computes a workflow's result, in error reports.
pub const RESULT_STEP: &str = "<result>";

/// Runs workflows against a container `C`. Cheap to clone; share one per process.
pub struct Engine<C> {
    pub(crate) inner: Arc<Inner<C>>,
}

impl<C> Clone for Engine<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct Inner<C> {
    pub(crate) container: Arc<C>,
    pub(crate) log: Arc<dyn RunLog>,
    pub(crate) node: String,
    pub(crate) lease: Duration,
    pub(crate) workflows: RwLock<HashMap<String, Arc<WorkflowDef<C>>>>,
    pub(crate) hooks: RwLock<HashMap<HookKey, Arc<StepDef<C>>>>,
    pub(crate) subscribers: RwLock<Vec<Subscriber<C>>>,
    pub(crate) jobs: RwLock<Vec<ScheduledJob<C>>>,
}

/// (workflow, hook) names.
type HookKey = (String, String);

/// A registered workflow, to run with [`Engine::run`].
pub struct WorkflowHandle<I, O> {
    name: Arc<str>,
    _types: PhantomData<fn(I) -> O>,
}

impl<I, O> Clone for WorkflowHandle<I, O> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            _types: PhantomData,
        }
    }
}

impl<I, O> std::fmt::Debug for WorkflowHandle<I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WorkflowHandle").field(&self.name).finish()
    }
}

impl<I, O> WorkflowHandle<I, O> {
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How to run a workflow.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run's id; `auto-<ulid>` when none is given.
    pub transaction_id: Option<String>,
    /// Return the first error as `Err` (the default), or return it inside [`RunResult::errors`].
    pub throw_on_error: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            transaction_id: None,
            throw_on_error: true,
        }
    }
}

impl RunOptions {
    pub fn transaction_id(mut self, id: impl Into<String>) -> Self {
        self.transaction_id = Some(id.into());
        self
    }

    pub fn throw_on_error(mut self, throw: bool) -> Self {
        self.throw_on_error = throw;
        self
    }
}

/// What a run came to.
pub struct RunResult<O> {
    pub transaction_id: String,
    pub state: RunState,
    /// Present when the run is `done`.
    pub result: Option<O>,
    pub errors: Vec<StepFailure>,
    private: HashMap<String, Arc<dyn Any + Send + Sync>>,
}

impl<O> RunResult<O> {
    /// The private value the step named `step` returned in this run (see
    /// [`crate::StepResponse::private`]); never written down, so absent from a stored result.
    pub fn private<T: Clone + 'static>(&self, step: &str) -> Option<T> {
        self.private.get(step).and_then(|v| v.downcast_ref::<T>()).cloned()
    }
}

impl<O: std::fmt::Debug> std::fmt::Debug for RunResult<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunResult")
            .field("transaction_id", &self.transaction_id)
            .field("state", &self.state)
            .field("result", &self.result)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

/// One run being driven.
struct Run<C> {
    def: Arc<WorkflowDef<C>>,
    tx: String,
    data: RawData,
    steps: HashMap<String, StepRecord>,
    errors: Vec<StepFailure>,
    state: RunState,
    result: Option<Value>,
}

impl<C> Run<C> {
    fn fresh(def: Arc<WorkflowDef<C>>, tx: String, input: Value) -> Self {
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

    fn from_log(def: Arc<WorkflowDef<C>>, run: RunRecord, steps: Vec<StepRecord>) -> Self {
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
    /// An engine over `container`, logging to `log`, with a random node id and the default
    /// lease. Call [`RunLog::migrate`] (or [`Engine::migrate`]) once before running.
    pub fn new(container: C, log: Arc<dyn RunLog>) -> Self {
        Self {
            inner: Arc::new(Inner {
                container: Arc::new(container),
                log,
                node: format!("node-{}-{}", std::process::id(), crate::ids::new_ulid()),
                lease: DEFAULT_LEASE,
                workflows: RwLock::default(),
                hooks: RwLock::default(),
                subscribers: RwLock::default(),
                jobs: RwLock::default(),
            }),
        }
    }

    /// How long this node holds a run between renewals; a dead node's runs are taken over
    /// this long after its last renewal. Set before registering anything.
    pub fn with_lease(self, lease: Duration) -> Self {
        self.rebuild(|i| i.lease = lease.max(Duration::from_millis(100)))
    }

    /// Names this node in the log (defaults to `node-<pid>-<ulid>`).
    pub fn with_node_id(self, node: impl Into<String>) -> Self {
        let node = node.into();
        self.rebuild(|i| i.node = node)
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner<C>)) -> Self {
        let mut inner = Inner {
            container: self.inner.container.clone(),
            log: self.inner.log.clone(),
            node: self.inner.node.clone(),
            lease: self.inner.lease,
            workflows: RwLock::new(read(&self.inner.workflows).clone()),
            hooks: RwLock::new(read(&self.inner.hooks).clone()),
            subscribers: RwLock::new(read(&self.inner.subscribers).clone()),
            jobs: RwLock::new(read(&self.inner.jobs).clone()),
        };
        change(&mut inner);
        Self { inner: Arc::new(inner) }
    }

    pub fn container(&self) -> &C {
        &self.inner.container
    }

    pub fn log(&self) -> &Arc<dyn RunLog> {
        &self.inner.log
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node
    }

    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// Creates the run log's tables.
    pub async fn migrate(&self) -> Result<(), FlowError> {
        Ok(self.inner.log.migrate().await?)
    }

    /// Registers a workflow under its name, so runs can be started and, after a crash, found
    /// again. A name can be registered once.
    pub fn register<I, O>(&self, workflow: Workflow<C, I, O>) -> Result<WorkflowHandle<I, O>, FlowError> {
        workflow.def.check().map_err(FlowError::Definition)?;
        let name: Arc<str> = workflow.def.name.as_str().into();
        let mut map = write(&self.inner.workflows);
        if map.contains_key(&*name) {
            return Err(FlowError::AlreadyRegistered(name.to_string()));
        }
        map.insert(name.to_string(), Arc::new(workflow.def));
        Ok(WorkflowHandle {
            name,
            _types: PhantomData,
        })
    }

    /// Attaches the handler of the hook `hook` of `workflow`. A hook takes one handler:
    /// attaching a second is an error.
    pub fn attach_hook<H, HO>(&self, workflow: &str, hook: &str, handler: Step<C, H, HO>) -> Result<(), FlowError> {
        let def = self.definition(workflow)?;
        if !def.hooks().any(|h| h == hook) {
            return Err(FlowError::Hook(format!("workflow {workflow} has no hook named {hook}")));
        }
        let mut hooks = write(&self.inner.hooks);
        let key = (workflow.to_owned(), hook.to_owned());
        if hooks.contains_key(&key) {
            return Err(FlowError::Hook(format!(
                "hook {hook} of workflow {workflow} already has a handler; a hook takes one"
            )));
        }
        hooks.insert(key, handler.def);
        Ok(())
    }

    /// The names of the registered workflows.
    pub fn workflow_names(&self) -> Vec<String> {
        let mut names: Vec<String> = read(&self.inner.workflows).keys().cloned().collect();
        names.sort();
        names
    }

    fn definition(&self, name: &str) -> Result<Arc<WorkflowDef<C>>, FlowError> {
        read(&self.inner.workflows)
            .get(name)
            .cloned()
            .ok_or_else(|| FlowError::UnknownWorkflow(name.to_owned()))
    }

    fn hook_handler(&self, workflow: &str, hook: &str) -> Option<Arc<StepDef<C>>> {
        read(&self.inner.hooks)
            .get(&(workflow.to_owned(), hook.to_owned()))
            .cloned()
    }

    /// Runs a workflow to its end. The run goes on in its own task, so a caller that stops
    /// waiting (a closed HTTP connection) does not leave it half done.
    pub async fn run<I: Serialize, O: DeserializeOwned>(
        &self,
        workflow: &WorkflowHandle<I, O>,
        input: I,
        options: RunOptions,
    ) -> Result<RunResult<O>, FlowError> {
        let def = self.definition(&workflow.name)?;
        let tx = options
            .transaction_id
            .unwrap_or_else(|| format!("auto-{}", crate::ids::new_ulid()));
        let input =
            serde_json::to_value(input).map_err(|e| FlowError::Data(format!("the workflow input is not JSON: {e}")))?;
        let started = self
            .inner
            .log
            .start(
                &def.name,
                &tx,
                &input,
                &self.inner.node,
                self.inner.lease,
                !def.idempotent,
            )
            .await?;
        let run = match started {
            Started::New => {
                let engine = self.clone();
                let mut run = Run::fresh(def, tx, input);
                tokio::spawn(async move { engine.drive(&mut run).await.map(|()| run) })
                    .await
                    .map_err(|e| FlowError::Data(format!("the run's task ended abnormally: {e}")))??
            }
            Started::Existing(stored) if stored.state.is_finished() => Run::from_log(def, *stored, Vec::new()),
            Started::Existing(stored) => {
                let stored = *stored;
                return Err(FlowError::InProgress {
                    workflow: stored.workflow,
                    transaction_id: stored.transaction_id,
                });
            }
        };
        outcome(run, options.throw_on_error)
    }

    /// Takes over the runs of registered workflows whose lease ran out (their node died or
    /// stalled) and drives each to its end. Returns what became of them.
    pub async fn recover(&self) -> Result<Vec<(String, String, RunState)>, FlowError> {
        let names = self.workflow_names();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let claimed = self
            .inner
            .log
            .claim_expired(&self.inner.node, self.inner.lease, &names, CLAIM_BATCH)
            .await?;
        let mut out = Vec::with_capacity(claimed.len());
        for (workflow, tx) in claimed {
            tracing::info!(%workflow, transaction_id = %tx, node = %self.inner.node, "taking over an unfinished workflow run");
            match self.resume(&workflow, &tx).await {
                Ok(state) => {
                    tracing::info!(%workflow, transaction_id = %tx, %state, "recovered workflow run");
                    out.push((workflow, tx, state));
                }
                Err(e) => tracing::warn!(%workflow, transaction_id = %tx, error = %e, "could not recover workflow run"),
            }
        }
        Ok(out)
    }

    /// Recovers runs now and then every half lease until `stop` turns true.
    pub fn spawn_recovery(&self, mut stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        let every = (self.inner.lease / 2).max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = engine.recover().await {
                            tracing::warn!(task = "workflow-recovery", error = %e, "recovery pass failed; will retry");
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
        })
    }

    async fn resume(&self, workflow: &str, tx: &str) -> Result<RunState, FlowError> {
        let def = self.definition(workflow)?;
        let (record, steps) = self
            .inner
            .log
            .load(workflow, tx)
            .await?
            .ok_or_else(|| FlowError::Data(format!("run {tx} of {workflow} vanished from the log")))?;
        let mut run = Run::from_log(def, record, steps);
        self.drive(&mut run).await?;
        Ok(run.state)
    }

    async fn drive(&self, run: &mut Run<C>) -> Result<(), FlowError> {
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
        let (workflow, tx) = (run.def.name.clone(), run.tx.clone());
        Heartbeat(tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
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
            let mut jobs = Vec::new();
            let mut failures = Vec::new();
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
            for job in &jobs {
                let mut rec = record(&job.name, position, StepState::Invoking);
                rec.input = Some(job.input.clone());
                rec.attempts = run.steps.get(&job.name).map_or(0, |r| r.attempts);
                self.save(run, rec).await?;
            }
            let outcomes = join_all(jobs.iter().map(|job| self.invoke(&def.name, &run.tx, job))).await;
            for (job, (outcome, attempts)) in jobs.into_iter().zip(outcomes) {
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
                        tracing::warn!(workflow = %def.name, transaction_id = %run.tx, step = %job.name, %error, "step failed");
                        rec.state = StepState::Failed;
                        rec.error = Some(error.message().to_owned());
                        failures.push(StepFailure {
                            step: job.name.clone(),
                            handler: Handler::Invoke,
                            error,
                        });
                    }
                }
                self.save(run, rec).await?;
            }
            if !failures.is_empty() {
                run.errors.extend(failures);
                return self.set_state(run, RunState::Compensating).await;
            }
        }
        match (def.result)(&run.data) {
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
        let outcome = retrying(options, &meta, options.timeout, |attempt, after_unknown| {
            let cx = StepContext::new(self.inner.container.clone(), meta.clone(), attempt)
                .after_unknown_outcome(after_unknown);
            (job.def.invoke)(job.input.clone(), cx)
        })
        .await;
        if outcome.0.is_ok() {
            crash_point(workflow, &job.name, Boundary::After);
        }
        outcome
    }

    async fn backward(&self, run: &mut Run<C>) -> Result<(), FlowError> {
        let def = run.def.clone();
        for group in def.nodes.iter().rev() {
            let mut jobs = Vec::new();
            for entry in group {
                let Some(rec) = run.steps.get(entry.name()) else {
                    continue;
                };
                let comp_input = match rec.state {
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
                let step_def = match &entry.target {
                    Target::Step(s) => s.clone(),
                    Target::Hook(h) => match self.hook_handler(&def.name, h) {
                        Some(handler) => handler,
                        None => continue,
                    },
                };
                if step_def.options.no_compensation || step_def.compensate.is_none() {
                    continue;
                }
                let meta = Arc::new(StepMeta {
                    workflow: def.name.clone(),
                    transaction_id: run.tx.clone(),
                    step: entry.name().to_owned(),
                    input: rec.input.clone().unwrap_or(Value::Null),
                    resumed: false,
                });
                jobs.push((rec.clone(), step_def, meta, comp_input));
            }
            let outcomes = join_all(jobs.iter().map(|(_, step_def, meta, comp_input)| async move {
                let conflicts: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
                let Some(compensate) = &step_def.compensate else {
                    return ((Ok(()), 0), Vec::new());
                };
                let outcome = retrying(&step_def.options, meta, None, |attempt, _| {
                    let cx = StepContext::new(self.inner.container.clone(), meta.clone(), attempt)
                        .collecting(conflicts.clone());
                    compensate(comp_input.clone(), cx)
                })
                .await;
                let found = std::mem::take(&mut *conflicts.lock().unwrap_or_else(|p| p.into_inner()));
                (outcome, found)
            }))
            .await;
            for ((mut rec, _, _, _), ((outcome, _), conflicts)) in jobs.into_iter().zip(outcomes) {
                for conflict in conflicts {
                    tracing::warn!(workflow = %def.name, transaction_id = %run.tx, step = %rec.step, %conflict, "compensation left a changed row alone");
                    run.errors.push(StepFailure {
                        step: rec.step.clone(),
                        handler: Handler::Conflict,
                        error: StepError::permanent(conflict),
                    });
                }
                match outcome {
                    Ok(()) => rec.state = StepState::Compensated,
                    Err(error) => {
                        tracing::error!(workflow = %def.name, transaction_id = %run.tx, step = %rec.step, %error, "compensation failed");
                        rec.state = StepState::CompensationFailed;
                        rec.error = Some(error.message().to_owned());
                        run.errors.push(StepFailure {
                            step: rec.step.clone(),
                            handler: Handler::Compensate,
                            error,
                        });
                    }
                }
                self.save(run, rec).await?;
            }
        }
        let failed = run.steps.values().any(|r| r.state == StepState::CompensationFailed);
        self.set_state(run, if failed { RunState::Failed } else { RunState::Reverted })
            .await
    }
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
            Some(limit) => match tokio::time::timeout(limit, fut).await {
                Ok(outcome) => outcome,
                // Cut off mid-flight: its writes may or may not have happened.
                Err(_) => {
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
                tokio::time::sleep(options.retry_interval).await;
            }
            other => return (other, attempt),
        }
    }
}

fn outcome<C, O: DeserializeOwned>(run: Run<C>, throw_on_error: bool) -> Result<RunResult<O>, FlowError> {
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

pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}
