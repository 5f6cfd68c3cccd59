//! The command line's arguments: every command, subcommand and option, as clap reads them.

use clap::{Args, Parser, Subcommand, ValueEnum};
use keyward::ApiKeyType;

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
    /// Reverse proxies (addresses or CIDR blocks, comma-separated) whose forwarding header
    /// (see --client-header) names the client. The client is then the right-most address there
    /// that is not a trusted proxy; otherwise the peer, and those headers are ignored. Login
    /// attempts are limited per client address (IPv6 per /64) and per email.
    #[arg(long, env = "KEYWARD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// The one header trusted proxies name the client in: x-forwarded-for (the default),
    /// forwarded or x-real-ip. Only that header is read, never a mix.
    #[arg(long, env = "KEYWARD_CLIENT_HEADER", default_value = "x-forwarded-for")]
    pub client_header: String,
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
    /// Seconds before a key expires that `api_key.expiring` is published (checked every
    /// minute; `api_key.expired` follows at the instant). 0 turns both notices off.
    #[arg(
        long,
        env = "KEYWARD_EXPIRY_WARNING",
        value_name = "SECONDS",
        default_value_t = 604_800
    )]
    pub expiry_warning: u64,
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
        /// The key expires this many seconds from now (it never does unless told).
        #[arg(long, value_name = "SECONDS", conflicts_with_all = ["count", "expires_at"])]
        expires_in: Option<i64>,
        /// The key expires at this instant (ISO 8601, e.g. 2027-01-01T00:00:00Z).
        #[arg(long, value_name = "INSTANT", conflicts_with = "count", value_parser = instant)]
        expires_at: Option<keyward::Timestamp>,
        #[command(flatten)]
        policy: PolicyArgs,
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
    /// Change a key's title, expiry, metadata, allowed addresses or (a restricted key's) permissions.
    Update(UpdateKey),
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
    Verify {
        token: String,
        /// The address the token is presented from (a key with allowed addresses is refused
        /// without one).
        #[arg(long = "from", value_name = "IP")]
        from: Option<std::net::IpAddr>,
        /// The permissions the key must hold, as a query: 'orders:read AND (orders:write OR
        /// refunds:write)'; a valid key without them is INSUFFICIENT_PERMISSIONS.
        #[arg(long, value_name = "QUERY", value_parser = permission_query)]
        permissions: Option<keyward::PermissionQuery>,
    },
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

/// `keys update`'s arguments: at least one change.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true).args(["title", "expires_in", "expires_at", "no_expiry", "permission", "allow_ip", "metadata", "no_metadata", "any_ip"])))]
pub struct UpdateKey {
    pub id: String,
    #[arg(long)]
    pub title: Option<String>,
    /// The key expires this many seconds from now.
    #[arg(long, value_name = "SECONDS", conflicts_with_all = ["expires_at", "no_expiry"])]
    pub expires_in: Option<i64>,
    /// The key expires at this instant (ISO 8601).
    #[arg(long, value_name = "INSTANT", value_parser = instant, conflicts_with = "no_expiry")]
    pub expires_at: Option<keyward::Timestamp>,
    /// The key no longer expires.
    #[arg(long)]
    pub no_expiry: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Remove the key's metadata.
    #[arg(long, conflicts_with = "metadata")]
    pub no_metadata: bool,
    /// Let the key work from every address again.
    #[arg(long, conflicts_with = "allow_ip")]
    pub any_ip: bool,
}

#[derive(Debug, Args)]
pub struct ListKeys {
    #[arg(long = "type", value_enum)]
    pub key_type: Option<KeyTypeArg>,
    /// Case-insensitive search in title and redacted token.
    #[arg(long)]
    pub q: Option<String>,
    /// Only revoked keys (revoked_at set).
    #[arg(long)]
    pub revoked: bool,
    /// Only keys whose metadata holds this string under this top-level key (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = metadata_pair)]
    pub metadata: Vec<(String, String)>,
    #[arg(long, default_value_t = 50)]
    pub limit: u64,
    #[arg(long, default_value_t = 0)]
    pub offset: u64,
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

/// What a key may carry beyond Medusa's fields.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PolicyArgs {
    /// Make a restricted secret key (token rk_…) that may do only this (repeatable): api_keys:read,
    /// api_keys:write, sales_channels:read, sales_channels:write, keys:verify, workflows:read,
    /// users:read, metrics:read; or one of your own as name:action (orders:read), which
    /// keyward's routes ignore and `keys verify --permissions` checks.
    #[arg(long, value_name = "PERMISSION", value_parser = permission)]
    pub permission: Vec<keyward::Permission>,
    /// Let the key work only from this address or CIDR block (repeatable).
    #[arg(long, value_name = "CIDR", value_parser = keyward::Cidr::parse)]
    pub allow_ip: Vec<keyward::Cidr>,
    /// A JSON object to keep on the key (at most 50 keys, 4 KiB), e.g. '{"team":"web"}'.
    #[arg(long, value_name = "JSON", value_parser = metadata)]
    pub metadata: Option<keyward::Metadata>,
}

impl PolicyArgs {
    /// The policy these flags give a new key.
    pub fn into_policy(self) -> keyward::KeyPolicy {
        keyward::KeyPolicy {
            metadata: self.metadata.map(Box::new),
            permissions: (!self.permission.is_empty()).then_some(self.permission),
            allowed_ips: (!self.allow_ip.is_empty()).then_some(self.allow_ip),
        }
    }
}

fn metadata_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected KEY=VALUE, but got: '{text}'"))
}

fn permission(text: &str) -> Result<keyward::Permission, String> {
    text.parse().map_err(|e: keyward::Error| e.message)
}

fn permission_query(text: &str) -> Result<keyward::PermissionQuery, String> {
    keyward::PermissionQuery::parse(text).map_err(|e| e.message)
}

fn metadata(text: &str) -> Result<keyward::Metadata, String> {
    serde_json::from_str(text).map_err(|e| format!("metadata must be a JSON object: {e}"))
}

/// An ISO 8601 instant on the command line.
fn instant(text: &str) -> Result<keyward::Timestamp, String> {
    keyward::Timestamp::parse(text).ok_or_else(|| format!("not an ISO 8601 date: '{text}'"))
}
