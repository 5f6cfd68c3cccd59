//! The `keyward` command line. Thin by design: parse, call [`keyward::Workflows`] for changes
//! and [`keyward::Keyward`] for reads, print.
//!
//! Exit codes: 0 done; 1 refused or failed (unknown id, not allowed, invalid key, database
//! unreachable); 2 the command itself is wrong (bad arguments, unsupported database URL).

mod import;
mod keys;
mod table;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keyward::{
    ApiKey, ApiKeyId, ApiKeyType, CreateApiKey, CreateSalesChannel, Error, ErrorKind, Keyward, ListOptions,
    SalesChannel, SalesChannelFilter, Verification, Workflows,
};
use serde_json::json;

/// keyward: API keys for commerce back ends and any HTTP service.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about, long_about = None)]
pub struct Cli {
    /// Database: sqlite://PATH (created if missing) or postgres://USER@HOST/DB.
    #[arg(long, global = true, env = "KEYWARD_DATABASE_URL", default_value = keyward_connect::DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds a process holds a workflow run between renewals; a run whose process died is
    /// finished by another process this long after its last renewal.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_WORKFLOW_LEASE",
        default_value_t = 15.0,
        value_name = "SECONDS"
    )]
    pub workflow_lease: f64,

    /// Keys the in-memory verification cache holds at most (about 600 bytes each; see
    /// docs/benchmarks.md). The cache is used while `serve` runs and follows every change made
    /// on any node.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_CACHE_CAPACITY",
        default_value_t = keyward::cache::DEFAULT_CAPACITY,
        value_name = "KEYS"
    )]
    pub cache_capacity: usize,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a bare HTTP handler (any path, any method: reads the body, answers a small JSON
    /// object) on the same runtime and HTTP stack as `serve`, with no key check and no
    /// database: the baseline scripts/bench-http measures keyward's routes against.
    #[command(hide = true)]
    BenchBaseline {
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: String,
    },
    /// Run the HTTP server (admin API, store key check, verification API), event delivery and
    /// scheduled jobs; migrates first.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "KEYWARD_LISTEN", default_value = "127.0.0.1:9000")]
        listen: String,
        /// Secret that signs admin login tokens (at least 32 bytes). Without it, the first start
        /// generates one into the database, shared by every node and kept across restarts.
        #[arg(long, env = "KEYWARD_JWT_SECRET", hide_env_values = true)]
        jwt_secret: Option<String>,
        /// Browser origins allowed to call the API (CORS), comma-separated; none by default.
        #[arg(long, env = "KEYWARD_CORS_ORIGINS", value_delimiter = ',')]
        cors_origins: Vec<String>,
        #[command(flatten)]
        access: AccessOptions,
        #[command(flatten)]
        events: EventOptions,
    },
    /// Apply database migrations (every other command does this first, too).
    Migrate,
    /// Manage admin users.
    #[command(subcommand)]
    User(UserCommand),
    /// Create, inspect, revoke and delete API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage sales channels.
    #[command(subcommand, name = "sales-channels")]
    SalesChannels(SalesChannelsCommand),
    /// Inspect workflow runs (every key change runs as one).
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// Inspect events and their deliveries to subscribers.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Inspect runs of scheduled jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
}

/// Who may reach what, and from where.
#[derive(Debug, Clone, Args)]
pub struct AccessOptions {
    /// Reverse proxies (addresses or CIDR blocks, comma-separated) whose `Forwarded` /
    /// `X-Forwarded-For` name the client. The client is then the right-most address there that
    /// is not a trusted proxy; otherwise the peer, and those headers are ignored. Login attempts
    /// are limited per client address (IPv6 per /64) and per email.
    #[arg(long, env = "KEYWARD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// A token (16+ characters) that lets a scraper read `/metrics` as `Authorization: Bearer
    /// <token>` (Prometheus: `authorization: {credentials: …}`). Without it, `/metrics` needs an
    /// admin credential.
    #[arg(long, env = "KEYWARD_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// The URL browsers reach this server at, e.g. https://keys.example.com. Changes made with
    /// the session cookie must come from its origin (or KEYWARD_CORS_ORIGINS); with https the
    /// cookie is `Secure` and named `__Host-keyward_session`.
    #[arg(long, env = "KEYWARD_PUBLIC_URL")]
    pub public_url: Option<String>,
}

/// What `serve` does with events and jobs.
#[derive(Debug, Clone, Args)]
pub struct EventOptions {
    /// POST every event to this URL (comma-separated for several), retried until it answers 2xx.
    #[arg(
        long = "webhook-url",
        env = "KEYWARD_WEBHOOK_URL",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub webhook_urls: Vec<String>,
    /// Signs each webhook request: keyward-signature: t=<unix time>,v1=<HMAC-SHA256 of "<t>.<body>">.
    #[arg(long, env = "KEYWARD_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Only these events go to the webhooks (comma-separated names, or * for all).
    #[arg(long, env = "KEYWARD_WEBHOOK_EVENTS", value_delimiter = ',', default_value = "*")]
    pub webhook_events: Vec<String>,
    /// Give every new admin user a key of this type (created_by = the user's id).
    #[arg(long, env = "KEYWARD_KEY_ON_USER_CREATED", value_enum)]
    pub key_on_user_created: Option<KeyTypeArg>,
    /// Delete keys revoked more than this many days ago (checked hourly); off when absent.
    #[arg(long, env = "KEYWARD_PURGE_REVOKED_AFTER_DAYS", value_name = "DAYS")]
    pub purge_revoked_after_days: Option<u32>,
    /// Seconds before the first retry of a failed event delivery; each next retry waits twice as
    /// long, up to 5 minutes.
    #[arg(
        long,
        env = "KEYWARD_EVENT_RETRY_BASE",
        default_value_t = 1.0,
        value_name = "SECONDS"
    )]
    pub event_retry_base: f64,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Recent events, newest first, with the state of each delivery.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Recent runs of scheduled jobs, newest tick first.
    List {
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// List recent workflow runs, newest first.
    List {
        /// Only runs in this state.
        #[arg(long, value_enum)]
        state: Option<RunStateArg>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RunStateArg {
    Running,
    Compensating,
    Done,
    Reverted,
    Failed,
}

impl From<RunStateArg> for keyward_flow::RunState {
    fn from(s: RunStateArg) -> Self {
        use keyward_flow::RunState;
        match s {
            RunStateArg::Running => RunState::Running,
            RunStateArg::Compensating => RunState::Compensating,
            RunStateArg::Done => RunState::Done,
            RunStateArg::Reverted => RunState::Reverted,
            RunStateArg::Failed => RunState::Failed,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an admin user (password hashed with Argon2id).
    Create {
        #[arg(long)]
        email: String,
        /// At least 8 characters.
        #[arg(long, env = "KEYWARD_USER_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Set a user's password; every session of the user ends (logged out on every node).
    Password {
        #[arg(long)]
        email: String,
        /// At least 8 characters.
        #[arg(long, env = "KEYWARD_USER_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Delete a user; every session of the user ends.
    Delete {
        #[arg(long)]
        email: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KeyTypeArg {
    Publishable,
    Secret,
}

impl From<KeyTypeArg> for ApiKeyType {
    fn from(t: KeyTypeArg) -> Self {
        match t {
            KeyTypeArg::Publishable => ApiKeyType::Publishable,
            KeyTypeArg::Secret => ApiKeyType::Secret,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key. A secret key's token is printed this once.
    Create {
        #[arg(long)]
        title: String,
        #[arg(long = "type", value_enum)]
        key_type: KeyTypeArg,
        /// Who is creating it (recorded as created_by).
        #[arg(long, default_value = "cli")]
        created_by: String,
        /// Run at most once for this key (per --created-by, 24 h): a repeat prints the first
        /// answer, new token included; the same key with other arguments is refused.
        #[arg(long, value_name = "KEY", conflicts_with = "count")]
        idempotency_key: Option<String>,
        /// Create this many keys, titled "TITLE 1" … "TITLE N", in batches of 1,000 (one
        /// workflow run each); prints one line per key (`id token`, or JSON lines with --json)
        /// and a progress bar on a terminal.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
        count: Option<u32>,
    },
    /// List keys, newest last.
    List(ListKeys),
    /// Show one key.
    Get { id: String },
    /// Change a key's title.
    Update {
        id: String,
        #[arg(long)]
        title: String,
    },
    /// Revoke a key now, or schedule it.
    Revoke {
        id: String,
        /// Revoke this many seconds from now instead of at once.
        #[arg(long = "in", value_name = "SECONDS")]
        revoke_in: Option<i64>,
        /// Who is revoking it (recorded as revoked_by).
        #[arg(long = "by", default_value = "cli")]
        revoked_by: String,
    },
    /// Replace a key: a new key with the same title, type and sales channels; the old one is
    /// revoked after the grace period. The new token is printed this once.
    Roll {
        id: String,
        /// Seconds the old key keeps working (0 or absent: revoked at once).
        #[arg(long, value_name = "SECONDS")]
        grace: Option<i64>,
        /// Who is rolling it (recorded as created_by of the new key and revoked_by of the old).
        #[arg(long = "by", default_value = "cli")]
        rolled_by: String,
        /// Run at most once for this key (per --by, 24 h): a repeat prints the first answer,
        /// new token included; the same key with other arguments is refused.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Add and remove a publishable key's sales channels.
    Link {
        id: String,
        /// A sales channel to add (repeatable).
        #[arg(long = "add", value_name = "SALES_CHANNEL_ID")]
        add: Vec<String>,
        /// A sales channel to remove (repeatable).
        #[arg(long = "remove", value_name = "SALES_CHANNEL_ID")]
        remove: Vec<String>,
    },
    /// Delete a revoked key and its sales-channel links.
    Delete { id: String },
    /// Check a token: exit 0 when valid, 1 otherwise, with the reason.
    Verify { token: String },
    /// Copy the API keys, sales channels and links of a Medusa v2 store (its live rows) into
    /// keyward, as one workflow run: all of it or nothing. Every key keeps working: publishable
    /// tokens as they are, secret keys under Medusa's scrypt hash until their first use, then
    /// by digest. Medusa's database is only read. A second run imports what is new and reports
    /// rows that differ as conflicts (or applies them with --update).
    Import {
        /// The Medusa database, e.g. postgres://medusa@db.internal:5432/medusa.
        #[arg(long = "from-medusa", value_name = "POSTGRES_URL")]
        from_medusa: String,
        /// Print what the import would do; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply Medusa's version of rows that differ (a revocation is never lifted or
        /// postponed: the earlier one wins) and add links missing from existing keys.
        #[arg(long)]
        update: bool,
    },
}

#[derive(Debug, Args)]
pub struct ListKeys {
    #[arg(long = "type", value_enum)]
    key_type: Option<KeyTypeArg>,
    /// Case-insensitive search in title and redacted token.
    #[arg(long)]
    q: Option<String>,
    /// Only revoked keys (revoked_at set).
    #[arg(long)]
    revoked: bool,
    #[arg(long, default_value_t = 50)]
    limit: u64,
    #[arg(long, default_value_t = 0)]
    offset: u64,
}

#[derive(Debug, Subcommand)]
pub enum SalesChannelsCommand {
    /// Create a sales channel.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// List sales channels.
    List,
}

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
    if let Command::BenchBaseline { listen } = &cli.command {
        return bench_baseline(listen).await;
    }
    keyward_connect::backend_of(&cli.database_url).map_err(|e| usage(e.message))?;
    if !(cli.workflow_lease.is_finite() && cli.workflow_lease >= 0.1 && cli.workflow_lease <= 86_400.0) {
        return Err(usage(format!(
            "--workflow-lease must be between 0.1 and 86400 seconds, not {}",
            cli.workflow_lease
        )));
    }
    let (store, log) = keyward_connect::open_with_cache(&cli.database_url, cli.cache_capacity)
        .await
        .map_err(|e| match e.kind {
            ErrorKind::InvalidData => usage(e.message),
            _ => Failure::Refused(e),
        })?;
    let lease = std::time::Duration::from_secs_f64(cli.workflow_lease);
    let flows = Workflows::new(Keyward::new(store), log, lease)?;
    flows.migrate().await?;
    let json = cli.json;
    if !matches!(cli.command, Command::Serve { .. }) {
        // Finish what a dead process left half done before doing anything else (the server
        // does this in the background, all the time).
        if let Err(e) = flows.engine().recover().await {
            eprintln!("warning: could not recover unfinished workflow runs: {e}");
        }
    }
    let kw = flows.kw().clone();
    match cli.command {
        Command::Serve {
            listen,
            jwt_secret,
            cors_origins,
            access,
            events,
        } => serve(flows, &listen, jwt_secret, cors_origins, access, events).await,
        Command::Migrate => Ok(Outcome::ok(if json {
            format!("{}\n", json!({"migrated": true, "backend": kw.store().backend()}))
        } else {
            format!("migrated the {} database\n", kw.store().backend())
        })),
        Command::User(UserCommand::Create { email, password }) => {
            let user = flows.create_user(&email, &password).await?;
            Ok(Outcome::ok(if json {
                format!("{}\n", json!({ "user": user }))
            } else {
                format!("created user {} ({})\n", user.email, user.id)
            }))
        }
        Command::User(UserCommand::Password { email, password }) => {
            let user = kw.change_password(&email, &password).await?;
            Ok(Outcome::ok(if json {
                format!("{}\n", json!({ "user": user, "sessions_ended": true }))
            } else {
                format!("changed the password of {}; its sessions have ended\n", user.email)
            }))
        }
        Command::User(UserCommand::Delete { email }) => {
            let user = kw.delete_user(&email).await?;
            Ok(Outcome::ok(if json {
                format!("{}\n", json!({ "id": user.id, "object": "user", "deleted": true }))
            } else {
                format!("deleted user {} ({}); its sessions have ended\n", user.email, user.id)
            }))
        }
        Command::Workflows(WorkflowsCommand::List { state, limit }) => workflow_runs(&flows, state, limit, json).await,
        Command::Events(EventsCommand::List { limit }) => events_list(&flows, limit, json).await,
        Command::Jobs(JobsCommand::List { job, limit }) => jobs_list(&flows, job.as_deref(), limit, json).await,
        Command::Keys(cmd) => keys::keys(&flows, cmd, json).await,
        Command::SalesChannels(cmd) => sales_channels(&flows, cmd, json).await,
        Command::BenchBaseline { listen } => bench_baseline(&listen).await,
    }
}

async fn bench_baseline(listen: &str) -> Result<Outcome, Failure> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| usage(format!("cannot listen on {listen}: {e}")))?;
    let handler = |body: axum::body::Bytes| async move {
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            format!("{{\"valid\":true,\"read\":{}}}", body.len()),
        )
    };
    let app = axum::Router::new().fallback(handler);
    axum::serve(listener, app)
        .await
        .map_err(|e| Failure::Refused(keyward::Error::unavailable(format!("baseline server failed: {e}"))))?;
    Ok(Outcome::ok(String::new()))
}

async fn serve(
    flows: Workflows,
    listen: &str,
    jwt_secret: Option<String>,
    cors: Vec<String>,
    access: AccessOptions,
    events: EventOptions,
) -> Result<Outcome, Failure> {
    let kw = flows.kw().clone();
    let trusted = keyward_server::client::parse_list(&access.trusted_proxies)
        .map_err(|e| usage(format!("KEYWARD_TRUSTED_PROXIES: {e}")))?;
    let metrics_token = access.metrics_token.filter(|t| !t.is_empty());
    let public_url = access.public_url.filter(|u| !u.is_empty());
    if let Some(u) = &public_url
        && !(u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(usage(format!(
            "KEYWARD_PUBLIC_URL must start with http:// or https://, not {u:?}"
        )));
    }
    if metrics_token.as_ref().is_some_and(|t| t.len() < 16) {
        return Err(usage("KEYWARD_METRICS_TOKEN must be at least 16 characters"));
    }
    let level = match std::env::var("KEYWARD_LOG")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "trace" => tracing::Level::TRACE,
        "debug" => tracing::Level::DEBUG,
        "warn" => tracing::Level::WARN,
        "error" => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    let delivery = wire_events(&flows, &events)?;
    // Subscribers are known to the database before anything is served, so every change made
    // from now on (by this node, another node or the CLI) gets a delivery for them.
    flows
        .engine()
        .register_subscribers()
        .await
        .map_err(keyward::workflows::from_flow)?;
    let secret = signing_secret(&kw, jwt_secret).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| usage(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Error::unexpected(e.to_string()))?;
    println!(
        "keyward is listening on http://{addr} ({} database)",
        kw.store().backend()
    );
    println!("The dashboard: http://{addr}/app");
    if kw.count_users().await? == 0 {
        println!(
            "No admin user yet. Create one with:\n  keyward user create --email admin@example.com --password '<at least 8 characters>'"
        );
    }
    let state = keyward_server::AppState::new(flows, secret)
        .with_cors_origins(cors)
        .with_trusted_proxies(trusted)
        .with_metrics_token(metrics_token)
        .with_public_url(public_url)
        .with_delivery(delivery);
    keyward_server::serve(state, listener)
        .await
        .map_err(|e| Error::unexpected(format!("the server stopped: {e}")))?;
    Ok(Outcome::ok(String::new()))
}

/// The shortest signing secret accepted: an HMAC-SHA256 key should carry 256 bits.
const MIN_JWT_SECRET: usize = 32;

/// The secret that signs login tokens: the configured one (32 bytes at least), or else the one
/// this deployment's database holds, made by the first node that needed it — so every node
/// shares it and logins survive restarts.
async fn signing_secret(kw: &keyward::Keyward, configured: Option<String>) -> Result<Vec<u8>, Failure> {
    if let Some(s) = configured.filter(|s| !s.is_empty()) {
        if s.len() < MIN_JWT_SECRET {
            return Err(usage(format!(
                "KEYWARD_JWT_SECRET is {} bytes; it must be at least {MIN_JWT_SECRET} (e.g. `openssl rand -hex 32`), \
                 or leave it unset to use one generated into the database",
                s.len()
            )));
        }
        return Ok(s.into_bytes());
    }
    let mut bytes = [0u8; 32];
    keyward::Entropy::fill(&keyward::OsEntropy, &mut bytes).map_err(Error::from)?;
    let fresh: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let stored = kw.store().setting_or_insert("jwt_secret", &fresh, kw.now()).await?;
    Ok(stored.into_bytes())
}

/// Registers the configured webhooks, the key-on-user-created subscriber and the purge job,
/// refusing bad configuration before anything starts.
fn wire_events(flows: &Workflows, o: &EventOptions) -> Result<keyward_flow::DeliveryOptions, Failure> {
    let names: Vec<&str> = o
        .webhook_events
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .collect();
    for name in &names {
        if *name != "*" && keyward::EventName::parse(name).is_none() {
            return Err(usage(format!(
                "unknown event name '{name}' in KEYWARD_WEBHOOK_EVENTS; known: *, {}",
                keyward::EventName::list()
            )));
        }
    }
    if !(o.event_retry_base.is_finite() && o.event_retry_base >= 0.01 && o.event_retry_base <= 3600.0) {
        return Err(usage(format!(
            "--event-retry-base must be between 0.01 and 3600 seconds, not {}",
            o.event_retry_base
        )));
    }
    let urls: Vec<&str> = o
        .webhook_urls
        .iter()
        .map(|u| u.trim())
        .filter(|u| !u.is_empty())
        .collect();
    if !urls.is_empty() {
        let secret = o.webhook_secret.clone().filter(|s| !s.is_empty());
        if secret.is_none() {
            tracing::warn!("KEYWARD_WEBHOOK_SECRET is not set: webhook requests are not signed");
        }
        // A receiver must answer itself: a redirect could send signed events anywhere.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::unexpected(format!("cannot build the webhook client: {e}")))?;
        let engine = flows.engine();
        for url in urls {
            let hook =
                keyward_server::webhooks::Webhook::new(url, secret.clone().map(String::into_bytes)).map_err(usage)?;
            engine
                .subscribe(hook.subscriber(client.clone(), &names))
                .map_err(|e| usage(e.to_string()))?;
        }
    }
    if let Some(t) = o.key_on_user_created {
        flows
            .engine()
            .subscribe(keyward::builtins::key_on_user_created(flows, t.into()))
            .map_err(|e| usage(e.to_string()))?;
    }
    if let Some(days) = o.purge_revoked_after_days {
        let job = keyward::builtins::purge_revoked_keys(flows, days)?;
        flows.engine().schedule(job).map_err(|e| usage(e.to_string()))?;
    }
    Ok(keyward_flow::DeliveryOptions {
        backoff: std::time::Duration::from_secs_f64(o.event_retry_base),
        ..keyward_flow::DeliveryOptions::default()
    })
}

async fn events_list(flows: &Workflows, limit: u32, json: bool) -> Result<Outcome, Failure> {
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
fn shown(at: Option<keyward::Timestamp>) -> String {
    at.map(|t| t.to_string()).unwrap_or_default()
}

async fn jobs_list(flows: &Workflows, job: Option<&str>, limit: u32, json: bool) -> Result<Outcome, Failure> {
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

fn key_id(id: &str) -> Result<ApiKeyId, Failure> {
    ApiKeyId::parse(id).map_err(|e| usage(format!("{id:?} is not a key id: {e}")))
}

fn non_empty_title(title: &str) -> Result<(), Failure> {
    if title.trim().is_empty() {
        Err(usage("--title must not be empty"))
    } else {
        Ok(())
    }
}

/// Keys created per workflow run by `keys create --count`.
const CREATE_BATCH: u32 = 1_000;

/// `keys create --count N`: batches through the create workflow, each line printed as its batch
/// lands (so an interrupted run has printed every key it made), a progress bar on stderr.
async fn create_many(
    flows: &Workflows,
    title: &str,
    key_type: ApiKeyType,
    created_by: &str,
    count: u32,
    json: bool,
) -> Result<Outcome, Failure> {
    use std::io::Write as _;
    let bar = indicatif::ProgressBar::new(u64::from(count));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} keys  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut made = 0;
    while made < count {
        let batch = (count - made).min(CREATE_BATCH);
        let input = (made + 1..=made + batch)
            .map(|i| CreateApiKey::new(format!("{title} {i}"), key_type, created_by))
            .collect();
        let created = flows.create_api_keys(input).await?;
        let mut lines = String::new();
        for c in &created {
            if json {
                lines.push_str(&json!({ "api_key": c }).to_string());
            } else {
                lines.push_str(&format!("{} {}", c.key.id, c.token.expose()));
            }
            lines.push('\n');
        }
        let mut stdout = std::io::stdout();
        stdout
            .write_all(lines.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| Failure::Refused(keyward::Error::unavailable(format!("cannot write the tokens: {e}"))))?;
        made += batch;
        bar.inc(u64::from(batch));
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "created {count} keys in {seconds:.1} s ({:.0} keys/s)",
        f64::from(count) / seconds.max(1e-9)
    );
    Ok(Outcome::ok(String::new()))
}

async fn workflow_runs(
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

fn verification(v: &Verification, json: bool) -> Outcome {
    let text = if json {
        let mut body = json!({"valid": v.is_valid(), "code": v.code, "sales_channel_ids": v.sales_channel_ids()});
        if let Some(k) = v.key() {
            body["api_key"] = json!(k);
        }
        format!("{body}\n")
    } else {
        let reason = match v.code {
            keyward::VerifyCode::Valid => "valid".to_owned(),
            keyward::VerifyCode::Malformed => {
                "invalid (MALFORMED): not a keyward or Medusa token, or mistyped".to_owned()
            }
            keyward::VerifyCode::NotFound => "invalid (NOT_FOUND): no key has this token".to_owned(),
            keyward::VerifyCode::Revoked => format!(
                "invalid (REVOKED at {})",
                v.key()
                    .and_then(|k| k.revoked_at)
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            ),
            keyward::VerifyCode::Expired => "invalid (EXPIRED)".to_owned(),
        };
        match v.key() {
            Some(k) => format!("{reason}: {} key {} \"{}\"\n", k.key_type, k.id, k.title),
            None => format!("{reason}\n"),
        }
    };
    Outcome {
        text,
        code: if v.is_valid() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    }
}

fn status(k: &ApiKey, now: keyward::Timestamp) -> String {
    match k.revoked_at {
        None => "active".to_owned(),
        Some(at) if at <= now => "revoked".to_owned(),
        Some(at) => format!("revokes {at}"),
    }
}

fn describe_key(k: &ApiKey) -> String {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    format!(
        "id:           {}\ntitle:        {}\ntype:         {}\nredacted:     {}\ncreated_by:   {}\ncreated_at:   {}\nrevoked_at:   {}\nrevoked_by:   {}\nlast_used_at: {}\n",
        k.id,
        k.title,
        k.key_type,
        k.redacted,
        k.created_by,
        k.created_at,
        or_dash(k.revoked_at.map(|t| t.to_string())),
        or_dash(k.revoked_by.clone()),
        or_dash(k.last_used_at.map(|t| t.to_string())),
    )
}

fn show_key(key: &ApiKey, channels: &[SalesChannel], json: bool) -> String {
    if json {
        let mut v = json!(key);
        v["sales_channels"] = json!(
            channels
                .iter()
                .map(|c| json!({"id": c.id, "name": c.name}))
                .collect::<Vec<_>>()
        );
        return format!("{}\n", json!({ "api_key": v }));
    }
    let mut s = describe_key(key);
    if key.key_type == ApiKeyType::Publishable {
        s.push_str(&format!("token:        {}\n", key.token));
        let names: Vec<String> = channels.iter().map(|c| format!("{} ({})", c.name, c.id)).collect();
        s.push_str(&format!(
            "channels:     {}\n",
            if names.is_empty() {
                "-".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    s
}

async fn sales_channels(flows: &Workflows, cmd: SalesChannelsCommand, json: bool) -> Result<Outcome, Failure> {
    let kw = flows.kw();
    match cmd {
        SalesChannelsCommand::Create { name, description } => {
            let sc = flows
                .create_sales_channel(CreateSalesChannel {
                    name,
                    description,
                    ..CreateSalesChannel::default()
                })
                .await?;
            Ok(Outcome::ok(if json {
                format!("{}\n", json!({ "sales_channel": sc }))
            } else {
                format!("created sales channel {} ({})\n", sc.name, sc.id)
            }))
        }
        SalesChannelsCommand::List => {
            let (list, count) = kw
                .list_and_count_sales_channels(&SalesChannelFilter::new(), &ListOptions::default())
                .await?;
            Ok(Outcome::ok(if json {
                format!(
                    "{}\n",
                    json!({"sales_channels": list, "count": count, "offset": 0, "limit": count})
                )
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.to_string(),
                            if c.is_disabled { "disabled" } else { "enabled" }.to_owned(),
                            c.name.clone(),
                            c.description.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                table::render(&["ID", "STATE", "NAME", "DESCRIPTION"], &rows)
            }))
        }
    }
}
