//! The `keyward` command line. Thin by design: parse, call [`keyward::Workflows`] for changes
//! and [`keyward::Keyward`] for reads, print.
//!
//! Exit codes: 0 done; 1 refused or failed (unknown id, not allowed, invalid key, database
//! unreachable); 2 the command itself is wrong (bad arguments, unsupported database URL).

mod activity;
mod args;
mod channels;
mod import;
mod keys;
mod present;
mod serve;
mod table;
mod users;

use activity::{events_list, jobs_list, workflow_runs};
pub use args::*;
use channels::sales_channels;
use present::*;
use serve::{bench_baseline, serve};

use std::process::ExitCode;

use keyward::{Error, ErrorKind, Keyward, Workflows};
use serde_json::json;

/// Runs a parsed command line and reports as the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let e = Error::unexpected(format!("cannot start the async runtime: {e}"));
            return fail(json, &Failure::Refused(e));
        }
    };
    match runtime.block_on(execute(cli)) {
        Ok(outcome) => {
            print!("{}", outcome.text);
            outcome.code
        }
        Err(e) => fail(json, &e),
    }
}

/// What a command printed and how it exits.
struct Outcome {
    text: String,
    code: ExitCode,
}

/// What an `--idempotency-key` says to do.
enum Idempotent {
    /// Run, and record the output under the claim (none without a key).
    Run(Option<keyward::idempotency::Claim>),
    /// The command ran before with this key: its output again.
    Replay(Outcome),
}

/// Claims `key` for `actor` and this `request` (the command and its arguments), or finds the
/// first run's output.
async fn idempotent(
    flows: &Workflows,
    key: Option<&str>,
    actor: &str,
    request: &serde_json::Value,
) -> Result<Idempotent, Failure> {
    use keyward::idempotency::{Begin, IN_PROGRESS, IdempotencyKey, MISMATCH, request_digest};
    let Some(key) = key else {
        return Ok(Idempotent::Run(None));
    };
    let key = IdempotencyKey::parse(key).map_err(|e| usage(e.message))?;
    let digest = request_digest(&[b"cli", request.to_string().as_bytes()]);
    match flows.kw().begin_idempotent(actor, &key, &digest).await? {
        Begin::Run(claim) => Ok(Idempotent::Run(Some(claim))),
        Begin::Replay { body, .. } => Ok(Idempotent::Replay(Outcome::ok(
            String::from_utf8_lossy(&body).into_owned(),
        ))),
        Begin::Mismatch => Err(Error::invalid_data(MISMATCH).into()),
        Begin::InProgress => Err(Error::new(ErrorKind::Conflict, IN_PROGRESS).into()),
    }
}

/// A failed command gives its idempotency key up, so that running it again really runs it.
async fn released_on_error<T>(
    flows: &Workflows,
    claim: &Option<keyward::idempotency::Claim>,
    result: keyward::Result<T>,
) -> Result<T, Failure> {
    if let (Err(_), Some(claim)) = (&result, claim)
        && let Err(e) = flows.kw().abandon_idempotent(claim).await
    {
        tracing::warn!(error = %e, "could not release an idempotency key");
    }
    Ok(result?)
}

/// Records a successful command's output under its claim, then returns it.
async fn finish_idempotent(
    flows: &Workflows,
    claim: Option<keyward::idempotency::Claim>,
    outcome: Outcome,
) -> Result<Outcome, Failure> {
    if let Some(claim) = claim {
        flows
            .kw()
            .finish_idempotent(claim, 200, outcome.text.as_bytes())
            .await?;
    }
    Ok(outcome)
}

impl Outcome {
    fn ok(text: String) -> Self {
        Self {
            text,
            code: ExitCode::SUCCESS,
        }
    }
}

/// Why a command did not succeed.
#[derive(Debug)]
enum Failure {
    /// The command line or configuration is wrong (exit 2).
    Usage(String),
    /// The module refused or failed (exit 1).
    Refused(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Refused(e)
    }
}

fn fail(json: bool, f: &Failure) -> ExitCode {
    let (kind, message, code) = match f {
        Failure::Usage(m) => ("usage", m.as_str(), 2),
        Failure::Refused(e) => (e.kind.as_str(), e.message.as_str(), 1),
    };
    if json {
        eprintln!("{}", json!({"type": kind, "message": message}));
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(code)
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

async fn execute(cli: Cli) -> Result<Outcome, Failure> {
    let json = cli.json;
    // Every command but `bench-baseline` opens the database; all but `serve` first finish what a
    // dead process left half done (the server does that in the background, all the time).
    let db = || open(&cli.database_url, cli.workflow_lease, cli.cache_capacity);
    let recovered = || async {
        let flows = db().await?;
        if let Err(e) = flows.engine().recover().await {
            eprintln!("warning: could not recover unfinished workflow runs: {e}");
        }
        Ok::<_, Failure>(flows)
    };
    match cli.command {
        Command::BenchBaseline { listen } => bench_baseline(&listen).await,
        Command::Serve {
            listen,
            jwt_secret,
            cors_origins,
            access,
            events,
        } => serve(db().await?, &listen, jwt_secret, cors_origins, access, events).await,
        Command::Migrate => {
            let backend = recovered().await?.kw().backend();
            Ok(Outcome::ok(if json {
                format!("{}\n", json!({"migrated": true, "backend": backend}))
            } else {
                format!("migrated the {backend} database\n")
            }))
        }
        Command::User(cmd) => users::users(&recovered().await?, cmd, json).await,
        Command::Workflows(WorkflowsCommand::List { state, limit }) => {
            workflow_runs(&recovered().await?, state, limit, json).await
        }
        Command::Events(EventsCommand::List { limit }) => events_list(&recovered().await?, limit, json).await,
        Command::Jobs(JobsCommand::List { job, limit }) => {
            jobs_list(&recovered().await?, job.as_deref(), limit, json).await
        }
        Command::Keys(cmd) => keys::keys(&recovered().await?, cmd, json).await,
        Command::SalesChannels(cmd) => sales_channels(&recovered().await?, cmd, json).await,
    }
}

/// Checks the global options, opens the database the URL names and migrates it.
async fn open(database_url: &str, workflow_lease: f64, cache_capacity: usize) -> Result<Workflows, Failure> {
    keyward_connect::backend_of(database_url).map_err(|e| usage(e.message))?;
    if !(workflow_lease.is_finite() && (0.1..=86_400.0).contains(&workflow_lease)) {
        return Err(usage(format!(
            "--workflow-lease must be between 0.1 and 86400 seconds, not {workflow_lease}"
        )));
    }
    let (store, log) = keyward_connect::open_with_cache(database_url, cache_capacity)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::InvalidData => usage(e.message),
            _ => Failure::Refused(e),
        })?;
    let lease = std::time::Duration::from_secs_f64(workflow_lease);
    let flows = Workflows::new(Keyward::new(store), log, lease)?;
    flows.migrate().await?;
    Ok(flows)
}
