//! The seed's examples as a Rust user of keyward writes them: a workflow returning `{api_key}`
//! built from keyward's own steps (whose compensation removes the key), a route of your own that runs
//! it, a workflow whose second step fails to show the roll-back, a subscriber that runs the
//! workflow on `user.created`, and a daily job (`0 0 * * *`) that runs it.
//!
//! `cargo run -p keyward-examples --example workflow_route` serves them; `tests/seed.rs` runs
//! them against SQLite and Postgres.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use keyward::workflows::{CREATED_KEYS, CreateApiKeysInput, PLANNED_KEYS, create_api_keys_step, prepare_api_keys_step};
use keyward::{Actor, ApiKey, ApiKeyType, CreateApiKey, Keyward, Workflows};
use keyward_flow::{
    Event, FlowError, Job, RunOptions, Schedule, Step, StepContext, StepError, StepResponse, Subscriber, Workflow,
    WorkflowHandle,
};
use serde::{Deserialize, Serialize};

/// What the workflow takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    pub title: String,
}

/// What the workflow returns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Output {
    pub api_key: ApiKey,
}

/// The seed's key: what the workflow's input asks for, created by the application itself.
fn new_key(input: Input) -> CreateApiKeysInput {
    CreateApiKeysInput::new(
        &Actor::System,
        vec![CreateApiKey::new(input.title, ApiKeyType::Publishable, "example")],
    )
}

/// The `{api_key}` of a run: the one key `create-api-keys` wrote.
fn created_key(d: &keyward_flow::Data<Input>) -> Result<Output, StepError> {
    let api_key = d
        .output(CREATED_KEYS)?
        .pop()
        .ok_or_else(|| StepError::permanent("create-api-keys wrote no key"))?;
    Ok(Output { api_key })
}

/// The seed's workflow, built from keyward's own steps: `prepare-api-keys` fixes the key's id
/// (so a run resumed after a crash cannot create it twice), `create-api-keys` writes it and, if
/// a later step fails, its compensation removes the key again. Returns `{api_key}`.
/// Idempotent: a run named by a transaction id that already finished returns that run's result.
pub fn create_api_key_workflow() -> Workflow<Keyward, Input, Output> {
    Workflow::<Keyward, Input, Output>::new("create-api-key")
        .idempotent(true)
        .step(&prepare_api_keys_step(), |d| Ok(new_key(d.input()?)))
        .step(&create_api_keys_step(), |d| d.output(PLANNED_KEYS))
        .returns(created_key)
}

/// The same key creation followed by a step that fails: the run is compensated and no key is
/// left behind.
pub fn rollback_workflow() -> Workflow<Keyward, Input, Output> {
    let fail = Step::new(
        "notify-partner",
        |_keys: Vec<ApiKey>, _cx: StepContext<Keyward>| async move {
            Err::<StepResponse<()>, _>(StepError::permanent("the partner system refused the key"))
        },
    );
    Workflow::<Keyward, Input, Output>::new("create-api-key-then-fail")
        .step(&prepare_api_keys_step(), |d| Ok(new_key(d.input()?)))
        .step(&create_api_keys_step(), |d| d.output(PLANNED_KEYS))
        .step(&fail, |d| d.output(CREATED_KEYS))
        .returns(created_key)
}

#[derive(Clone)]
struct Routes {
    flows: Workflows,
    create: WorkflowHandle<Input, Output>,
}

#[derive(Deserialize)]
struct Params {
    title: Option<String>,
}

/// Registers the seed's workflow on keyward's engine and returns your route: `GET /workflow`
/// runs it and answers with its result.
pub fn routes(flows: &Workflows) -> Result<Router, keyward_flow::FlowError> {
    let create = flows.engine().register(create_api_key_workflow())?;
    Ok(routes_for(flows, create))
}

/// The route for an already registered `create-api-key` workflow.
pub fn routes_for(flows: &Workflows, create: WorkflowHandle<Input, Output>) -> Router {
    let state = Routes {
        flows: flows.clone(),
        create,
    };
    Router::new().route("/workflow", get(run_workflow)).with_state(state)
}

async fn run_workflow(
    State(routes): State<Routes>,
    Query(params): Query<Params>,
) -> Result<Json<Output>, (StatusCode, String)> {
    let input = Input {
        title: params.title.unwrap_or_else(|| "Storefront from a workflow".to_owned()),
    };
    let run = routes
        .flows
        .engine()
        .run(&routes.create, input, RunOptions::default())
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    run.result.map(Json).ok_or((
        StatusCode::INTERNAL_SERVER_ERROR,
        "the workflow returned nothing".to_owned(),
    ))
}

/// The seed's subscriber: when a user is created, run the `create-api-key` workflow for them.
/// Register it with `flows.engine().subscribe(..)`; `keyward serve` delivers to it.
pub fn user_created_subscriber(flows: &Workflows, create: WorkflowHandle<Input, Output>) -> Subscriber<Keyward> {
    let flows = flows.clone();
    Subscriber::new("example:welcome-key", &["user.created"], move |event: Event, _kw| {
        let (flows, create) = (flows.clone(), create.clone());
        async move {
            let email = event.data["email"].as_str().unwrap_or("a new user").to_owned();
            let input = Input {
                title: format!("Welcome key for {email}"),
            };
            // The event id names the run: a retried delivery finds it instead of running twice.
            let options = RunOptions::default().transaction_id(format!("welcome:{}", event.id));
            flows
                .engine()
                .run(&create, input, options)
                .await
                .map_err(|e| StepError::new(e.to_string()))?;
            Ok(())
        }
    })
}

/// The seed's job on any schedule: run the `create-api-key` workflow.
pub fn api_key_job(flows: &Workflows, create: WorkflowHandle<Input, Output>, schedule: Schedule) -> Job<Keyward> {
    let flows = flows.clone();
    Job::new("example:daily-api-key", schedule, move |_kw| {
        let (flows, create) = (flows.clone(), create.clone());
        async move {
            let input = Input {
                title: "Key of the day".to_owned(),
            };
            flows
                .engine()
                .run(&create, input, RunOptions::default())
                .await
                .map_err(|e| StepError::new(e.to_string()))?;
            Ok(())
        }
    })
}

/// The seed's daily job: every day at midnight (UTC).
pub fn daily_job(flows: &Workflows, create: WorkflowHandle<Input, Output>) -> Result<Job<Keyward>, FlowError> {
    Ok(api_key_job(flows, create, Schedule::cron("0 0 * * *")?))
}
