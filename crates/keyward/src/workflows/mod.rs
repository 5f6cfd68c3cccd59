//! The api-key workflows. Every change to keys made by the server and the CLI runs through one
//! of these, so a failing step is undone and a crash is finished by the next process (or node)
//! instead of leaving half a change: a rolled key either has its replacement and is revoked,
//! or neither happened.
//!
//! Each workflow first *prepares*: a step without side effects reads what the change needs,
//! checks the rules (with the module's exact messages), fixes ids and instants, and snapshots
//! what its compensation will put back. That output is recorded, so a resumed run acts on the
//! same plan. The steps that write are idempotent for their recorded input: a step invoked again
//! after a crash finds its own earlier effect and treats it as done.
//!
//! One file per workflow (or family): its input, its plan, its steps, its definition, and the
//! façade method that runs it — a roll reads top to bottom in `roll.rs`. This file holds what they
//! share: the names, the error mapping, the [`Workflows`] façade itself and the reads several use.

use std::sync::Arc;
use std::time::Duration;

use keyward_flow::{Engine, FlowError, RunLog, RunOptions, Step, StepContext, StepError, StepResponse, WorkflowHandle};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};
use crate::events::EventName;
use crate::filter::{ApiKeyFilter, ListOptions, SalesChannelField, SalesChannelFilter};
use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::{ApiKey, CreateSalesChannel, SalesChannel};
use crate::service::Keyward;

mod activity;
mod create;
mod delete;
mod expiry;
mod link;
mod revoke;
mod roll;
mod sales_channels;
mod update;
mod users;

pub use activity::*;
pub use create::*;
pub use delete::*;
pub use expiry::*;
pub use link::*;
pub use revoke::*;
pub use roll::*;
pub use sales_channels::*;
pub use update::*;
pub use users::*;

/// Workflow names (Medusa's, plus roll).
pub const CREATE_API_KEYS: &str = "create-api-keys";
pub const UPDATE_API_KEYS: &str = "update-api-keys";
pub const REVOKE_API_KEYS: &str = "revoke-api-keys";
pub const DELETE_API_KEYS: &str = "delete-api-keys";
pub const LINK_SALES_CHANNELS_TO_API_KEY: &str = "link-sales-channels-to-api-key";
pub const ROLL_API_KEY: &str = "roll-api-key";
pub const CREATE_SALES_CHANNELS: &str = "create-sales-channels";
pub const UPDATE_SALES_CHANNELS: &str = "update-sales-channels";
pub const DELETE_SALES_CHANNELS: &str = "delete-sales-channels";
pub const CREATE_USERS: &str = "create-users";

/// Who a compensation that removes freshly created keys names as their revoker.
pub const DISCARDED_BY: &str = "keyward:compensation";

type Cx = StepContext<Keyward>;

/// A module error as a step error: only an unreachable database is worth retrying; a broken
/// rule will be broken again.
pub fn step_error(e: Error) -> StepError {
    let retry = e.kind == ErrorKind::Unavailable;
    let unknown = e.outcome_unknown();
    let s = StepError::from_error(e);
    let s = if unknown { s.maybe_applied() } else { s };
    if retry { s } else { s.into_permanent() }
}

/// A workflow error as the module error that caused it (so callers see the exact rule that
/// refused), or as unexpected/unavailable when the engine itself failed.
pub fn from_flow(e: FlowError) -> Error {
    if let FlowError::Failed {
        workflow,
        transaction_id,
        state: keyward_flow::RunState::Failed,
        ..
    } = &e
    {
        tracing::error!(%workflow, %transaction_id, "a workflow run failed and could not be fully compensated");
    }
    match &e {
        FlowError::Failed { .. } => match e.step_error() {
            Some(step) => step
                .downcast_ref::<Error>()
                .cloned()
                .unwrap_or_else(|| Error::unexpected(format!("{e}"))),
            None => Error::unexpected(format!("{e}")),
        },
        FlowError::Log(keyward_flow::LogError::Unavailable(m)) => Error::unavailable(m.clone()),
        FlowError::InProgress { .. } => Error::new(ErrorKind::Conflict, e.to_string()),
        _ => Error::unexpected(e.to_string()),
    }
}

/// Steps that only write the database retry twice when it is briefly unreachable.
fn retried<C: Send + Sync + 'static, I, O>(step: Step<C, I, O>) -> Step<C, I, O> {
    step.max_retries(2).retry_interval(Duration::from_millis(200))
}

/// One event `name` with data `{id}` per id.
fn events<O, I: Serialize>(mut response: StepResponse<O>, name: EventName, ids: &[I]) -> StepResponse<O> {
    for id in ids {
        response = response.event(name, serde_json::json!({ "id": id }));
    }
    response
}

/// The module with its workflows: what the server and the CLI call for every change.
#[derive(Clone)]
pub struct Workflows {
    engine: Engine<Keyward>,
    create: WorkflowHandle<CreateApiKeysInput, Vec<ApiKey>>,
    update: WorkflowHandle<UpdateApiKeysInput, Vec<ApiKey>>,
    revoke: WorkflowHandle<RevokeApiKeysInput, Vec<ApiKey>>,
    delete: WorkflowHandle<DeleteApiKeysInput, Vec<ApiKeyId>>,
    link: WorkflowHandle<LinkSalesChannelsInput, ()>,
    roll: WorkflowHandle<RollApiKeyInput, RolledApiKey>,
    create_channels: WorkflowHandle<Vec<CreateSalesChannel>, Vec<SalesChannel>>,
    update_channel: WorkflowHandle<UpdateSalesChannelInput, SalesChannel>,
    delete_channels: WorkflowHandle<Vec<SalesChannelId>, Vec<SalesChannelId>>,
    create_user: WorkflowHandle<crate::users::NewUser, crate::model::User>,
    import: WorkflowHandle<crate::import::ImportInput, crate::import::ImportReport>,
    expiry: WorkflowHandle<ExpiryNoticesInput, Vec<crate::store::ExpiryNotice>>,
}

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflows")
            .field("node", &self.engine.node_id())
            .finish_non_exhaustive()
    }
}

impl Workflows {
    /// The workflows over `kw`, logging runs to `log`, holding runs for `lease`.
    pub fn new(kw: Keyward, log: Arc<dyn RunLog>, lease: Duration) -> Result<Self> {
        Self::on(Engine::new(kw, log).with_lease(lease))
    }

    /// Registers the api-key workflows on `engine` (which may hold the application's own).
    pub fn on(engine: Engine<Keyward>) -> Result<Self> {
        let reg = |e: FlowError| Error::unexpected(format!("registering the api-key workflows: {e}"));
        Ok(Self {
            create: engine.register(create_api_keys_workflow()).map_err(reg)?,
            update: engine.register(update_api_keys_workflow()).map_err(reg)?,
            revoke: engine.register(revoke_api_keys_workflow()).map_err(reg)?,
            delete: engine.register(delete_api_keys_workflow()).map_err(reg)?,
            link: engine.register(link_sales_channels_workflow()).map_err(reg)?,
            roll: engine.register(roll_api_key_workflow()).map_err(reg)?,
            create_channels: engine.register(create_sales_channels_workflow()).map_err(reg)?,
            update_channel: engine.register(update_sales_channels_workflow()).map_err(reg)?,
            delete_channels: engine.register(delete_sales_channels_workflow()).map_err(reg)?,
            create_user: engine.register(create_users_workflow()).map_err(reg)?,
            import: engine.register(crate::import::import_medusa_workflow()).map_err(reg)?,
            expiry: engine.register(notify_api_key_expiry_workflow()).map_err(reg)?,
            engine,
        })
    }

    /// The handle of `create-api-keys` (to run it with options of your own).
    pub fn create_handle(&self) -> &WorkflowHandle<CreateApiKeysInput, Vec<ApiKey>> {
        &self.create
    }

    /// The engine, to register more workflows, attach hooks, or recover runs.
    pub fn engine(&self) -> &Engine<Keyward> {
        &self.engine
    }

    /// The module itself, for reads.
    pub fn kw(&self) -> &Keyward {
        self.engine.container()
    }

    /// Migrates the store (and seeds it) and the run log.
    pub async fn migrate(&self) -> Result<()> {
        self.kw().migrate().await?;
        self.engine.migrate().await.map_err(from_flow)
    }

    /// Imports a checked Medusa snapshot as one `import-medusa` run named `transaction_id`
    /// (watch it with [`Keyward::import_progress`] for a progress bar): all of it or none.
    pub async fn import_medusa(
        &self,
        input: crate::import::ImportInput,
        transaction_id: &str,
    ) -> Result<crate::import::ImportReport> {
        self.engine
            .run(
                &self.import,
                input,
                RunOptions::default().transaction_id(transaction_id),
            )
            .await
            .map_err(from_flow)?
            .result
            .ok_or_else(|| Error::unexpected("the import finished without a report"))
    }

    /// Runs `workflow` on `input` (a new transaction id), its failure as the module's error.
    async fn run<I: Serialize, O: serde::de::DeserializeOwned>(
        &self,
        workflow: &WorkflowHandle<I, O>,
        input: I,
    ) -> Result<keyward_flow::RunResult<O>> {
        self.engine
            .run(workflow, input, RunOptions::default())
            .await
            .map_err(from_flow)
    }

    /// [`Workflows::run`], answering the workflow's result (`what` names it should it be missing).
    async fn answer<I: Serialize, O: serde::de::DeserializeOwned>(
        &self,
        workflow: &WorkflowHandle<I, O>,
        input: I,
        what: &str,
    ) -> Result<O> {
        self.run(workflow, input)
            .await?
            .result
            .ok_or_else(|| Error::unexpected(format!("the workflow returned no {what}")))
    }

    /// Runs a key workflow on `input` for the one key `id`: that key as it answered
    /// (`not_found` when it did not).
    async fn on_key<I: Serialize>(
        &self,
        workflow: &WorkflowHandle<I, Vec<ApiKey>>,
        input: I,
        id: &ApiKeyId,
    ) -> Result<ApiKey> {
        let keys = self.run(workflow, input).await?.result.unwrap_or_default();
        keys.into_iter()
            .find(|k| &k.id == id)
            .ok_or_else(|| crate::service::not_found(id))
    }

    /// Runs a key workflow on the keys `selector` matches (Medusa's `{ selector, … }`), its
    /// input made from their ids; a selector that matches nothing runs nothing.
    async fn on_matching<I: Serialize>(
        &self,
        workflow: &WorkflowHandle<I, Vec<ApiKey>>,
        selector: &ApiKeyFilter,
        input: impl FnOnce(Vec<ApiKeyId>) -> I,
    ) -> Result<Vec<ApiKey>> {
        let ids = self.kw().matching_ids(selector).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.run(workflow, input(ids)).await?.result.unwrap_or_default())
    }
}

// -- what the steps ask of the module, shared by several ----------------------------------------

impl Keyward {
    /// The channels with these ids that exist.
    pub(crate) async fn channels_by_ids(&self, ids: &[SalesChannelId]) -> Result<Vec<SalesChannel>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filter = SalesChannelFilter::new().try_in(SalesChannelField::Id, ids.iter().map(|c| c.as_str()))?;
        self.list_sales_channels(&filter, &ListOptions::default()).await
    }

    /// The ids of the keys `selector` matches.
    pub(crate) async fn matching_ids(&self, selector: &ApiKeyFilter) -> Result<Vec<ApiKeyId>> {
        let keys = self.list_api_keys(selector, &ListOptions::default()).await?;
        Ok(keys.into_iter().map(|k| k.id).collect())
    }

    /// The keys with these ids that exist, in id order.
    pub(crate) async fn keys_by_ids(&self, ids: &[ApiKeyId]) -> Result<Vec<ApiKey>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.list_api_keys(&ApiKeyFilter::ids(ids), &ListOptions::default())
            .await
    }
}
