//! Steps: a named invoke function and an optional compensation, with retry and timeout options.
//!
//! A step is typed (`Step<C, I, O>`: container, input, output) where it is written and erased to
//! JSON values where it is stored, because the run log must be able to hand a step its input and
//! a compensation its input again after a restart. Outputs that must never be written down (a
//! secret token) travel beside the output as a private value that lives only in the process that
//! produced it.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Why a step (or its compensation) did not succeed.
///
/// Any error converts into it with `?` and is retried up to the step's `max_retries`;
/// [`StepError::permanent`] fails the step at once. The original error is kept, so the caller of
/// a workflow can recover its own error type with [`StepError::downcast_ref`]. The run log keeps
/// only the message.
#[derive(Clone)]
pub struct StepError {
    message: String,
    permanent: bool,
    /// The step may have written part of its effect before failing (see
    /// [`StepError::maybe_applied`]).
    maybe_applied: bool,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl StepError {
    /// A failure worth retrying (within the step's `max_retries`).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
            maybe_applied: false,
            source: None,
        }
    }

    /// A failure that no retry can mend: the step fails now and compensation begins.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(message).into_permanent()
    }

    /// Wraps an error, keeping it for [`StepError::downcast_ref`].
    pub fn from_error<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        Self {
            message: error.to_string(),
            permanent: false,
            maybe_applied: false,
            source: Some(Arc::new(error)),
        }
    }

    /// The same failure, marked permanent.
    pub fn into_permanent(mut self) -> Self {
        self.permanent = true;
        self
    }

    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The step failed after some of its writes may have happened, so its compensation must run
    /// (with no compensation input) to undo whatever of them it finds. Without this mark a
    /// failing step is taken at its word: it wrote nothing, and it is not compensated. A timeout
    /// sets this mark by itself, since a step cut off may have written.
    pub fn maybe_applied(mut self) -> Self {
        self.maybe_applied = true;
        self
    }

    /// Whether the failing step may have written part of its effect.
    pub fn is_maybe_applied(&self) -> bool {
        self.maybe_applied
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The original error, when it was of type `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.source.as_deref().and_then(|s| s.downcast_ref::<E>())
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for StepError {
    fn from(error: E) -> Self {
        Self::from_error(error)
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepError")
            .field("message", &self.message)
            .field("permanent", &self.permanent)
            .field("maybe_applied", &self.maybe_applied)
            .finish()
    }
}

/// What a step's invoke returns: its output, and what its compensation will get.
pub struct StepResponse<O> {
    output: Option<O>,
    compensation: Option<Result<Value, String>>,
    private: Option<Arc<dyn Any + Send + Sync>>,
    events: Vec<crate::events::NewEvent>,
}

impl<O> StepResponse<O> {
    /// The step's output; its compensation gets the same value unless
    /// [`StepResponse::compensate_with`] says otherwise.
    pub fn new(output: O) -> Self {
        Self {
            output: Some(output),
            compensation: None,
            private: None,
            events: Vec::new(),
        }
    }

    /// The step did nothing: it is recorded as skipped, has no output and is not compensated.
    pub fn skip() -> Self {
        Self {
            output: None,
            compensation: None,
            private: None,
            events: Vec::new(),
        }
    }

    /// The input the step's compensation will get (stored in the run log).
    pub fn compensate_with(mut self, input: impl Serialize) -> Self {
        self.compensation = Some(serde_json::to_value(input).map_err(|e| e.to_string()));
        self
    }

    /// An event to publish when the whole run is done (dropped if the run is compensated). It is
    /// recorded with the step, so a run finished by another process publishes it too.
    pub fn event(mut self, name: impl Into<String>, data: impl Serialize) -> Self {
        let data = serde_json::to_value(data).unwrap_or(Value::Null);
        self.events.push(crate::events::NewEvent::new(name, data));
        self
    }

    /// A value for later steps and the workflow's result that is never written to the run log
    /// (a freshly made secret, say). It exists only in this process: a run resumed elsewhere
    /// does not see it.
    pub fn private<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.private = Some(Arc::new(value));
        self
    }
}

/// A step's response as the engine keeps it.
pub(crate) struct Invoked {
    /// `None` when the step skipped itself.
    pub output: Option<Value>,
    pub compensation: Option<Value>,
    pub private: Option<Arc<dyn Any + Send + Sync>>,
    pub events: Vec<crate::events::NewEvent>,
}

impl<O: Serialize> StepResponse<O> {
    fn into_invoked(self, step: &str) -> Result<Invoked, StepError> {
        let encode = |e: String| StepError::permanent(format!("the output of step {step} is not JSON: {e}"));
        let output = match self.output {
            Some(o) => Some(serde_json::to_value(o).map_err(|e| encode(e.to_string()))?),
            None => None,
        };
        let compensation = match self.compensation {
            Some(c) => Some(c.map_err(encode)?),
            None => output.clone(),
        };
        Ok(Invoked {
            output,
            compensation,
            private: self.private,
            events: self.events,
        })
    }
}

/// Retries, timeout and compensation switch of a step.
#[derive(Debug, Clone, Default)]
pub struct StepOptions {
    /// How many times a failed invoke (or compensation) is tried again; 0 by default.
    pub max_retries: u32,
    /// The pause before each retry.
    pub retry_interval: Duration,
    /// How long one invoke may take; past it the step fails permanently.
    pub timeout: Option<Duration>,
    /// Leave this step alone when the run compensates.
    pub no_compensation: bool,
}

/// What a step's invoke and compensation can see besides their input.
pub struct StepContext<C> {
    container: Arc<C>,
    meta: Arc<StepMeta>,
    attempt: u32,
    conflicts: Arc<std::sync::Mutex<Vec<String>>>,
    /// The previous attempt failed with an error that may have been applied.
    after_unknown: bool,
}

#[derive(Debug)]
pub(crate) struct StepMeta {
    pub workflow: String,
    pub transaction_id: String,
    pub step: String,
    /// The input the step was invoked with (JSON null if it never was).
    pub input: Value,
    /// The step was found `invoking` in the log: a process that died may have invoked it.
    pub resumed: bool,
}

impl<C> StepContext<C> {
    pub(crate) fn new(container: Arc<C>, meta: Arc<StepMeta>, attempt: u32) -> Self {
        Self {
            container,
            meta,
            attempt,
            conflicts: Arc::default(),
            after_unknown: false,
        }
    }

    /// A context whose conflicts land in `conflicts` (the engine reads them after a
    /// compensation).
    pub(crate) fn collecting(mut self, conflicts: Arc<std::sync::Mutex<Vec<String>>>) -> Self {
        self.conflicts = conflicts;
        self
    }

    /// The services the workflow runs against.
    pub fn container(&self) -> &C {
        &self.container
    }

    pub fn workflow(&self) -> &str {
        &self.meta.workflow
    }

    pub fn transaction_id(&self) -> &str {
        &self.meta.transaction_id
    }

    pub fn step(&self) -> &str {
        &self.meta.step
    }

    /// 1 for the first try, 2 for the first retry, and so on.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether this invocation may follow one whose writes happened without being recorded:
    /// a process died while the step ran, or the previous attempt failed with
    /// [`StepError::maybe_applied`] (a connection lost during a commit). Only then should a step
    /// take what it finds for its own earlier work; otherwise an equal-looking row was written
    /// by someone else.
    pub fn may_repeat(&self) -> bool {
        self.meta.resumed || self.after_unknown
    }

    pub(crate) fn after_unknown_outcome(mut self, unknown: bool) -> Self {
        self.after_unknown = unknown;
        self
    }

    /// Records that a compensation found a row no longer holding what this run wrote (another
    /// change came after it) and left it alone. The conflict is kept on the run's record
    /// (`keyward workflows list`, [`crate::RunResult::errors`] with [`crate::Handler::Conflict`]);
    /// it does not fail the compensation.
    pub fn conflict(&self, message: impl Into<String>) {
        let mut conflicts = self.conflicts.lock().unwrap_or_else(|p| p.into_inner());
        conflicts.push(message.into());
    }

    /// The input this step was invoked with. A compensation of the step that failed gets no
    /// compensation input, but can read this to undo whatever part of the step happened.
    pub fn input<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        serde_json::from_value(self.meta.input.clone()).map_err(|e| {
            StepError::permanent(format!(
                "the recorded input of step {} does not fit: {e}",
                self.meta.step
            ))
        })
    }
}

pub(crate) type InvokeFn<C> =
    Arc<dyn Fn(Value, StepContext<C>) -> BoxFuture<'static, Result<Invoked, StepError>> + Send + Sync>;
pub(crate) type CompensateFn<C> =
    Arc<dyn Fn(Option<Value>, StepContext<C>) -> BoxFuture<'static, Result<(), StepError>> + Send + Sync>;

/// The erased step the engine runs.
pub(crate) struct StepDef<C> {
    pub name: String,
    pub invoke: InvokeFn<C>,
    pub compensate: Option<CompensateFn<C>>,
    pub options: StepOptions,
}

impl<C> Clone for StepDef<C> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            invoke: self.invoke.clone(),
            compensate: self.compensate.clone(),
            options: self.options.clone(),
        }
    }
}

/// A step taking `I` and producing `O`, run against a container `C`.
///
/// ```
/// use keyward_flow::{Step, StepResponse};
/// # struct Counter;
/// let double = Step::new("double", |n: i64, _cx: keyward_flow::StepContext<Counter>| async move {
///     Ok(StepResponse::new(n * 2))
/// })
/// .compensate(|n: Option<i64>, _cx| async move {
///     println!("undo {n:?}");
///     Ok(())
/// });
/// # let _ = double;
/// ```
pub struct Step<C, I, O> {
    pub(crate) def: Arc<StepDef<C>>,
    _types: PhantomData<fn(I) -> O>,
}

impl<C, I, O> Clone for Step<C, I, O> {
    fn clone(&self) -> Self {
        Self {
            def: self.def.clone(),
            _types: PhantomData,
        }
    }
}

impl<C, I, O> Step<C, I, O>
where
    C: Send + Sync + 'static,
    I: DeserializeOwned + Send + 'static,
    O: Serialize + Send + 'static,
{
    /// A step named `name` (unique within a workflow) that runs `invoke`.
    /// A step named by its [`Output`](crate::Output), so readers of its output and the step
    /// agree on the name and the type.
    pub fn named<F, Fut>(output: crate::workflow::Output<O>, invoke: F) -> Self
    where
        F: Fn(I, StepContext<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<StepResponse<O>, StepError>> + Send + 'static,
    {
        Self::new(output.name(), invoke)
    }

    pub fn new<F, Fut>(name: impl Into<String>, invoke: F) -> Self
    where
        F: Fn(I, StepContext<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<StepResponse<O>, StepError>> + Send + 'static,
    {
        let name = name.into();
        let step = name.clone();
        let invoke: InvokeFn<C> = Arc::new(move |input: Value, cx: StepContext<C>| {
            let step = step.clone();
            let started = serde_json::from_value::<I>(input)
                .map(|i| invoke(i, cx))
                .map_err(|e| StepError::permanent(format!("the input of step {step} does not fit: {e}")));
            Box::pin(async move { started?.await?.into_invoked(&step) })
        });
        Self {
            def: Arc::new(StepDef {
                name,
                invoke,
                compensate: None,
                options: StepOptions::default(),
            }),
            _types: PhantomData,
        }
    }
}

impl<C: Send + Sync + 'static, I, O> Step<C, I, O> {
    /// Undoes the step. It gets the compensation input the invoke returned, or `None` for the
    /// step that failed (which can still read its own input from the context).
    pub fn compensate<CI, F, Fut>(self, compensate: F) -> Self
    where
        CI: DeserializeOwned + Send + 'static,
        F: Fn(Option<CI>, StepContext<C>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), StepError>> + Send + 'static,
    {
        let name = self.def.name.clone();
        let f: CompensateFn<C> = Arc::new(move |input: Option<Value>, cx: StepContext<C>| {
            let name = name.clone();
            let started = input
                .filter(|v| !v.is_null())
                .map(serde_json::from_value::<CI>)
                .transpose()
                .map(|i| compensate(i, cx))
                .map_err(|e| StepError::permanent(format!("the compensation input of step {name} does not fit: {e}")));
            Box::pin(async move { started?.await })
        });
        self.edit(|d| d.compensate = Some(f))
    }

    /// Tries a failed invoke (or compensation) up to `n` more times.
    pub fn max_retries(self, n: u32) -> Self {
        self.edit(|d| d.options.max_retries = n)
    }

    /// Waits this long before each retry.
    pub fn retry_interval(self, interval: Duration) -> Self {
        self.edit(|d| d.options.retry_interval = interval)
    }

    /// Fails the step (permanently) when one invoke takes longer than this.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.edit(|d| d.options.timeout = Some(timeout))
    }

    /// Leaves the step alone when the run compensates.
    pub fn no_compensation(self) -> Self {
        self.edit(|d| d.options.no_compensation = true)
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }

    fn edit(self, change: impl FnOnce(&mut StepDef<C>)) -> Self {
        let mut def = (*self.def).clone();
        change(&mut def);
        Self {
            def: Arc::new(def),
            _types: PhantomData,
        }
    }
}
