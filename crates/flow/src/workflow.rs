//! Workflows: a named composition of steps — in sequence, in parallel groups, under conditions,
//! and at hook points — with the data each step gets computed from the workflow's input and the
//! outputs of the steps before it.
//!
//! Those input functions are called again when a run resumes after a crash, so they must be pure
//! functions of what they are given; anything random or time-dependent belongs in a step, whose
//! output is recorded. A step's input is also recorded before it is invoked and reused on resume.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::step::{Step, StepDef, StepError};

/// A step's output named by the step's name and typed by what it returns: `Copy`, so the
/// closures of a workflow definition read it without cloning step handles. Declare it once
/// beside the step, and build the step from it (`Step::named`) so the two cannot disagree:
///
/// ```ignore
/// const PLAN: Output<Plan> = Output::named("plan");
/// fn plan_step() -> Step<C, Input, Plan> { Step::named(PLAN, |input, cx| async move { … }) }
/// // … .step(&apply_step(), |d| Ok(d.output(PLAN)?.changes))
/// ```
pub struct Output<O> {
    name: &'static str,
    _type: PhantomData<fn() -> O>,
}

impl<O> Clone for Output<O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<O> Copy for Output<O> {}

impl<O> Output<O> {
    pub const fn named(name: &'static str) -> Self {
        Self {
            name,
            _type: PhantomData,
        }
    }

    pub const fn name(&self) -> &'static str {
        self.name
    }
}

/// What [`Data::output`] reads a step's output by: the step's handle, or its [`Output`].
pub trait OutputOf<O> {
    fn step_name(&self) -> &str;
}

impl<C, I, O> OutputOf<O> for &Step<C, I, O> {
    fn step_name(&self) -> &str {
        &self.def.name
    }
}

impl<O> OutputOf<O> for Output<O> {
    fn step_name(&self) -> &str {
        self.name
    }
}

/// What input functions, conditions and the result function read: the workflow's input and
/// the recorded outputs of the steps that ran.
pub struct Data<'a, I> {
    raw: &'a RawData,
    _input: PhantomData<fn() -> I>,
}

/// The untyped view behind [`Data`].
#[derive(Default)]
pub(crate) struct RawData {
    pub input: Value,
    pub outputs: HashMap<String, Value>,
    pub private: HashMap<String, Arc<dyn Any + Send + Sync>>,
}

impl<'a, I: DeserializeOwned> Data<'a, I> {
    pub(crate) fn new(raw: &'a RawData) -> Self {
        Self {
            raw,
            _input: PhantomData,
        }
    }

    /// The workflow's input.
    pub fn input(&self) -> Result<I, StepError> {
        serde_json::from_value(self.raw.input.clone())
            .map_err(|e| StepError::permanent(format!("the workflow input does not fit: {e}")))
    }

    /// The output of `step`; an error when it has not run or skipped itself.
    pub fn output<SO: DeserializeOwned>(&self, step: impl OutputOf<SO>) -> Result<SO, StepError> {
        let name = step.step_name();
        self.output_named(name)?
            .ok_or_else(|| StepError::permanent(format!("step {name} has no output: it did not run")))
    }

    /// The output of the step or hook named `name`, if it ran.
    pub fn output_named<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, StepError> {
        self.raw
            .outputs
            .get(name)
            .map(|v| {
                serde_json::from_value(v.clone())
                    .map_err(|e| StepError::permanent(format!("the output of step {name} does not fit: {e}")))
            })
            .transpose()
    }

    /// The private value `step` returned, when this process produced it (see
    /// [`crate::StepResponse::private`]).
    pub fn private<T: Clone + 'static, C, SI, SO>(&self, step: &Step<C, SI, SO>) -> Option<T> {
        self.raw
            .private
            .get(&step.def.name)
            .and_then(|v| v.downcast_ref::<T>())
            .cloned()
    }
}

pub(crate) type MapFn = Arc<dyn Fn(&RawData) -> Result<Value, StepError> + Send + Sync>;
pub(crate) type CondFn = Arc<dyn Fn(&RawData) -> Result<bool, StepError> + Send + Sync>;

/// What an entry of a workflow runs.
pub(crate) enum Target<C> {
    Step(Arc<StepDef<C>>),
    /// A hook point: runs the handler attached under this name, if any.
    Hook(String),
}

/// One step of a workflow with the function that computes its input.
pub(crate) struct Entry<C> {
    pub target: Target<C>,
    pub input: MapFn,
    pub when: Option<CondFn>,
}

impl<C> Entry<C> {
    pub fn name(&self) -> &str {
        match &self.target {
            Target::Step(s) => &s.name,
            Target::Hook(h) => h,
        }
    }
}

/// The erased definition the engine keeps by name.
pub(crate) struct WorkflowDef<C> {
    pub name: String,
    pub idempotent: bool,
    /// Groups of entries: one entry runs alone, several run in parallel.
    pub nodes: Vec<Vec<Entry<C>>>,
    pub result: MapFn,
}

impl<C> WorkflowDef<C> {
    pub fn entries(&self) -> impl Iterator<Item = (usize, &Entry<C>)> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(i, group)| group.iter().map(move |e| (i, e)))
    }

    /// Step and hook names must be unique: the run log keys steps by name.
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("a workflow needs a name".to_owned());
        }
        let mut seen = BTreeSet::new();
        for (_, e) in self.entries() {
            if !seen.insert(e.name()) {
                return Err(format!("workflow {} has two steps named {}", self.name, e.name()));
            }
        }
        Ok(())
    }

    pub fn hooks(&self) -> impl Iterator<Item = &str> {
        self.entries().filter_map(|(_, e)| match &e.target {
            Target::Hook(h) => Some(h.as_str()),
            Target::Step(_) => None,
        })
    }
}

fn map_fn<I, T, F>(f: F) -> MapFn
where
    I: DeserializeOwned + 'static,
    T: Serialize,
    F: Fn(&Data<I>) -> Result<T, StepError> + Send + Sync + 'static,
{
    Arc::new(move |raw: &RawData| {
        let value = f(&Data::new(raw))?;
        serde_json::to_value(value).map_err(|e| StepError::permanent(format!("a step input is not JSON: {e}")))
    })
}

fn cond_fn<I, F>(f: F) -> CondFn
where
    I: DeserializeOwned + 'static,
    F: Fn(&Data<I>) -> Result<bool, StepError> + Send + Sync + 'static,
{
    Arc::new(move |raw: &RawData| f(&Data::new(raw)))
}

/// A workflow taking `I` and returning `O`, run against a container `C`. Build it, then
/// register it with an [`crate::Engine`], which hands back the handle to run it with.
///
/// ```
/// use keyward_flow::{Step, StepContext, StepResponse, Workflow};
/// # struct App;
/// let greet = Step::new("greet", |name: String, _cx: StepContext<App>| async move {
///     Ok(StepResponse::new(format!("hello {name}")))
/// });
/// let hello: Workflow<App, String, String> = Workflow::new("hello")
///     .step(&greet, |d| d.input())
///     .returns(move |d| d.output(&greet));
/// # let _ = hello;
/// ```
pub struct Workflow<C, I, O> {
    pub(crate) def: WorkflowDef<C>,
    _types: PhantomData<fn(I) -> O>,
}

impl<C, I, O> Workflow<C, I, O>
where
    C: Send + Sync + 'static,
    I: DeserializeOwned + 'static,
    O: Serialize + 'static,
{
    /// An empty workflow named `name` (the name it is registered and recovered under).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            def: WorkflowDef {
                name: name.into(),
                idempotent: false,
                nodes: Vec::new(),
                result: Arc::new(|_| Ok(Value::Null)),
            },
            _types: PhantomData,
        }
    }

    /// Running again with a transaction id that already finished returns the stored result
    /// instead of running twice. (Otherwise a finished run's id may be reused for a new run.)
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.def.idempotent = idempotent;
        self
    }

    /// Runs `step` next, with the input `input` computes.
    pub fn step<SI, SO, F>(self, step: &Step<C, SI, SO>, input: F) -> Self
    where
        SI: Serialize,
        F: Fn(&Data<I>) -> Result<SI, StepError> + Send + Sync + 'static,
    {
        self.parallel(|p| p.step(step, input))
    }

    /// Runs `step` next only when `condition` holds; otherwise it is recorded as skipped.
    pub fn when<SI, SO, P, F>(self, condition: P, step: &Step<C, SI, SO>, input: F) -> Self
    where
        SI: Serialize,
        P: Fn(&Data<I>) -> Result<bool, StepError> + Send + Sync + 'static,
        F: Fn(&Data<I>) -> Result<SI, StepError> + Send + Sync + 'static,
    {
        self.parallel(|p| p.when(condition, step, input))
    }

    /// Runs a group of steps side by side; the workflow goes on when all of them have finished.
    /// If one fails, the others are still awaited, then everything done is compensated.
    pub fn parallel(mut self, group: impl FnOnce(Parallel<C, I>) -> Parallel<C, I>) -> Self {
        let entries = group(Parallel {
            entries: Vec::new(),
            _input: PhantomData,
        })
        .entries;
        if !entries.is_empty() {
            self.def.nodes.push(entries);
        }
        self
    }

    /// A hook point named `name`: the one handler attached to it (see
    /// [`crate::Engine::attach_hook`]) runs here as a step with the input `input` computes.
    /// Without a handler the point is recorded as skipped.
    pub fn hook<H, F>(self, name: impl Into<String>, input: F) -> Self
    where
        H: Serialize,
        F: Fn(&Data<I>) -> Result<H, StepError> + Send + Sync + 'static,
    {
        self.parallel(|p| p.push(Target::Hook(name.into()), map_fn(input), None))
    }

    /// What the workflow returns, computed from the recorded data once every step has run.
    pub fn returns<F>(mut self, result: F) -> Self
    where
        F: Fn(&Data<I>) -> Result<O, StepError> + Send + Sync + 'static,
    {
        self.def.result = map_fn(result);
        self
    }

    pub fn name(&self) -> &str {
        &self.def.name
    }
}

/// The steps of a parallel group, built inside [`Workflow::parallel`].
pub struct Parallel<C, I> {
    entries: Vec<Entry<C>>,
    _input: PhantomData<fn() -> I>,
}

impl<C: Send + Sync + 'static, I: DeserializeOwned + 'static> Parallel<C, I> {
    /// Adds `step` to the group, with the input `input` computes.
    pub fn step<SI, SO, F>(self, step: &Step<C, SI, SO>, input: F) -> Self
    where
        SI: Serialize,
        F: Fn(&Data<I>) -> Result<SI, StepError> + Send + Sync + 'static,
    {
        self.push(Target::Step(step.def.clone()), map_fn(input), None)
    }

    /// Adds `step` to the group, to run only when `condition` holds.
    pub fn when<SI, SO, P, F>(self, condition: P, step: &Step<C, SI, SO>, input: F) -> Self
    where
        SI: Serialize,
        P: Fn(&Data<I>) -> Result<bool, StepError> + Send + Sync + 'static,
        F: Fn(&Data<I>) -> Result<SI, StepError> + Send + Sync + 'static,
    {
        self.push(Target::Step(step.def.clone()), map_fn(input), Some(cond_fn(condition)))
    }

    fn push(mut self, target: Target<C>, input: MapFn, when: Option<CondFn>) -> Self {
        self.entries.push(Entry { target, input, when });
        self
    }
}
