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
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clock::Clock;
use crate::error::{FlowError, StepFailure};
use crate::events::Subscriber;
use crate::jobs::Job as ScheduledJob;
use crate::log::{RunLog, RunState, Started};
use crate::step::{Step, StepDef};
use crate::workflow::{Workflow, WorkflowDef};

/// How long a node holds a run without renewing it, unless configured.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Runs claimed per recovery pass.
const CLAIM_BATCH: u32 = 32;

/// The name of the pseudo-step that computes a workflow's result, in error reports.
pub const RESULT_STEP: &str = "<result>";

mod drive;

use drive::{Run, outcome};

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
    /// The log's clock: every wait and every "now" of the engine.
    pub(crate) clock: Arc<dyn Clock>,
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

impl<C: Send + Sync + 'static> Engine<C> {
    /// An engine over `container`, logging to `log`, with a random node id and the default
    /// lease. Call [`RunLog::migrate`] (or [`Engine::migrate`]) once before running.
    pub fn new(container: C, log: Arc<dyn RunLog>) -> Self {
        Self {
            inner: Arc::new(Inner {
                container: Arc::new(container),
                clock: log.clock(),
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
            clock: self.inner.clock.clone(),
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

    /// The clock the engine runs on: its log's.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
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
            loop {
                if let Err(e) = engine.recover().await {
                    tracing::warn!(task = "workflow-recovery", error = %e, "recovery pass failed; will retry");
                }
                tokio::select! {
                    () = crate::clock::sleep(engine.inner.clock.as_ref(), every) => {}
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
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// Adds `item` to `list` unless it holds one with the same `name`: then `taken` is the error.
pub(crate) fn add_named<T>(
    list: &RwLock<Vec<T>>,
    item: T,
    name: impl Fn(&T) -> &str,
    taken: impl FnOnce(&str) -> String,
) -> Result<(), FlowError> {
    let mut list = write(list);
    if list.iter().any(|other| name(other) == name(&item)) {
        return Err(FlowError::Definition(taken(name(&item))));
    }
    list.push(item);
    Ok(())
}
