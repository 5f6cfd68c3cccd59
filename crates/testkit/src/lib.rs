//! Test support: a fresh database per test, on SQLite or on the local Postgres.
//!
//! Postgres: each test gets its own database (`CREATE DATABASE kw_test_…`), dropped when the
//! test ends, so tests run in parallel without sharing state. Where Postgres cannot be reached,
//! a run with `CI` set fails; any other run skips the Postgres half of a test with a loud message.
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test support fails loudly by design"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use keyward::{Keyward, ManualClock, ManualClockExt, SeededEntropy, Store, Timestamp, Workflows};
use sqlx::Connection;

pub mod medusa;

/// The server tests use unless `KEYWARD_TEST_PG_URL` names another (any database on it works as
/// the maintenance connection).
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// `2021-01-01T00:00:00Z`, where every harness clock starts.
pub fn epoch() -> Timestamp {
    Timestamp::parse("2021-01-01T00:00:00Z").expect("valid instant")
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    pub backend: &'static str,
    /// Keeps a SQLite file's folder alive.
    pub dir: Option<tempfile::TempDir>,
    _pg: Option<PgDrop>,
}

impl TestDb {
    /// A new SQLite file in a temporary folder.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}", dir.path().join("keyward.db").display());
        Self {
            url,
            backend: "sqlite",
            dir: Some(dir),
            _pg: None,
        }
    }

    /// Runs `test` (given this database's URL) on a blocking thread: for tests that drive the
    /// `keyward` binary and wait for it.
    pub async fn blocking(&self, test: fn(&str)) {
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || test(&url))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    }

    /// The SQLite file's path.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("keyward.db"))
    }

    /// A new, empty Postgres database. An unreachable Postgres fails the test that asked for
    /// it, with how to leave such tests out: a test never passes without running. Every test that
    /// needs Postgres has `postgres` in its name, so `cargo test -- --skip postgres` reports them
    /// as filtered out, and `scripts/test` does that by itself (loudly) when CI is not set.
    pub async fn postgres() -> Self {
        let admin = std::env::var("KEYWARD_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) => panic!(
                "Postgres at {admin} is unreachable ({e}): start it (or set KEYWARD_TEST_PG_URL), or leave \
                 these tests out with `cargo test -- --skip postgres` (scripts/test does so without CI)"
            ),
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kw_test_{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        let url = match admin.rfind('/') {
            Some(slash) => format!("{}/{name}", &admin[..slash]),
            None => panic!("KEYWARD_TEST_PG_URL has no database part: {admin}"),
        };
        Self {
            url,
            backend: "postgres",
            dir: None,
            _pg: Some(PgDrop { admin, name }),
        }
    }

    /// Opens the store (not migrated).
    pub async fn store(&self) -> Arc<dyn Store> {
        keyward_connect::connect(&self.url)
            .await
            .expect("open the test database")
    }

    /// Opens the store and the workflow run log on it (not migrated).
    pub async fn open(&self) -> (Arc<dyn Store>, Arc<dyn keyward_flow::RunLog>) {
        keyward_connect::open(&self.url).await.expect("open the test database")
    }

    /// [`TestDb::open`], with the run log (and every engine on it) on `clock`.
    pub async fn open_on(&self, clock: &keyward_flow::ManualClock) -> (Arc<dyn Store>, Arc<dyn keyward_flow::RunLog>) {
        keyward_connect::open_on(&self.url, keyward::cache::DEFAULT_CAPACITY, Arc::new(clock.clone()))
            .await
            .expect("open the test database")
    }

    /// The module on this database with its workflows, migrated, with the system clock.
    pub async fn workflows(&self) -> Workflows {
        let (store, log) = self.open().await;
        let kw = Keyward::with_parts(store, Arc::new(keyward::SystemClock), Arc::new(keyward::OsEntropy));
        let flows = Workflows::new(kw, log, keyward_flow::DEFAULT_LEASE).expect("register the workflows");
        flows.migrate().await.expect("migrate the test database");
        flows
    }
}

/// Drops a test database when the test ends, even when it failed.
struct PgDrop {
    admin: String,
    name: String,
}

impl Drop for PgDrop {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime; a thread with its own runtime can block safely.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()
            })
        })
        .join();
    }
}

/// The module on a fresh, migrated database, with a manual clock at [`epoch`].
pub struct Harness {
    pub kw: Keyward,
    /// The store under `kw`, for tests that set up rows or inspect them beneath the module.
    pub store: Arc<dyn Store>,
    /// The same module with its workflows (run log on the same database).
    pub flows: Workflows,
    pub clock: Arc<ManualClock>,
    pub db: TestDb,
}

impl Harness {
    pub async fn on(db: TestDb) -> Self {
        let clock = Arc::new(ManualClock::at(epoch()));
        let (store, log) = db.open().await;
        let kw = Keyward::with_parts(store.clone(), clock.clone(), Arc::new(SeededEntropy::new(42)));
        let flows = Workflows::new(kw.clone(), log, keyward_flow::DEFAULT_LEASE).expect("register the workflows");
        flows.migrate().await.expect("migrate the test database");
        Self {
            kw,
            store,
            flows,
            clock,
            db,
        }
    }

    pub async fn sqlite() -> Self {
        Self::on(TestDb::sqlite()).await
    }

    pub async fn postgres() -> Self {
        Self::on(TestDb::postgres().await).await
    }
}

impl Harness {
    /// Another node on the same database: its own store (pool, verification cache), module and
    /// workflows, on the same clock.
    pub async fn node(&self) -> (Keyward, Workflows) {
        let (store, log) = self.db.open().await;
        let kw = Keyward::with_parts(store, self.clock.clone(), Arc::new(SeededEntropy::new(7)));
        let flows = Workflows::new(kw.clone(), log, keyward_flow::DEFAULT_LEASE).expect("register the workflows");
        (kw, flows)
    }
}

/// Every key titled `title`, oldest first.
pub async fn keys_titled(kw: &Keyward, title: &str) -> Vec<keyward::ApiKey> {
    let all = kw
        .list_api_keys(&Default::default(), &Default::default())
        .await
        .expect("list the keys");
    all.into_iter().filter(|k| k.title == title).collect()
}

/// A store's change watcher, running until dropped.
pub struct Watched(tokio::task::JoinHandle<()>);

impl Drop for Watched {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts `kw`'s change watcher and waits until it has connected (its cache is in use).
pub async fn watch(kw: &Keyward) -> Watched {
    let watched = kw.clone();
    let handle = tokio::spawn(async move { watched.watch_changes().await });
    eventually("the change watcher connects", || async { kw.cache().is_online() }).await;
    Watched(handle)
}

/// Polls `f` once: its output when it completes without waiting (a verification answered from
/// the cache does), `None` otherwise. Lets benchmarks time the hot path without a runtime.
pub fn now_or_never<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => Some(out),
        std::task::Poll::Pending => None,
    }
}

/// Waits up to 10 s for `done` to hold, checking every 2 ms; panics naming `what` otherwise.
/// For outcomes that arrive on their own (a notice from another node), never as a timing
/// assertion: a correct system meets it in milliseconds.
pub async fn eventually<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done().await {
        assert!(std::time::Instant::now() < deadline, "not within 10 s: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// What a test body is given, made from a fresh [`TestDb`] on either store.
pub trait FromTestDb: Sized {
    fn from_test_db(db: TestDb) -> impl std::future::Future<Output = Self> + Send;
}

impl FromTestDb for TestDb {
    async fn from_test_db(db: TestDb) -> Self {
        db
    }
}

impl FromTestDb for Harness {
    async fn from_test_db(db: TestDb) -> Self {
        Self::on(db).await
    }
}

/// Declares each test twice, `sqlite::name` and `postgres::name`, with one body that sees a
/// `$ty` (any [`FromTestDb`]) made on a fresh database of that store. The Postgres half skips
/// loudly where Postgres is unreachable outside CI (see [`TestDb::postgres`]).
#[macro_export]
macro_rules! on_both {
    ($ty:ty; $( $(#[$meta:meta])* async fn $name:ident($x:ident) $body:block )*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $( $(#[$meta])* #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let $x = <$ty as $crate::FromTestDb>::from_test_db($crate::TestDb::sqlite()).await;
                $body
            } )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $( $(#[$meta])* #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let db = $crate::TestDb::postgres().await;
                let $x = <$ty as $crate::FromTestDb>::from_test_db(db).await;
                $body
            } )*
        }
    };
}

/// [`on_both!`] with a [`Harness`] (`h`): the module and its workflows on a manual clock.
#[macro_export]
macro_rules! on_both_stores {
    ($($tests:tt)*) => { $crate::on_both! { $crate::Harness; $($tests)* } };
}

/// [`on_both!`] with a bare [`TestDb`], for tests that open what they need themselves.
#[macro_export]
macro_rules! on_both_dbs {
    ($($tests:tt)*) => { $crate::on_both! { $crate::TestDb; $($tests)* } };
}

/// [`on_both_dbs!`] for tests written as a blocking `fn(url: &str)`: `name => test, …`.
#[macro_export]
macro_rules! blocking_on_both_dbs {
    ($($name:ident => $test:path),* $(,)?) => {
        $crate::on_both_dbs! { $( async fn $name(db) { db.blocking($test).await; } )* }
    };
}

/// A `keyward serve` process started by [`Served::start`]; killed when dropped.
pub struct Served {
    pub child: std::process::Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl Served {
    /// Starts `keyward serve` as `cmd` describes (see [`spawn_serve`]).
    pub fn start(cmd: std::process::Command) -> Self {
        let (child, base) = spawn_serve(cmd);
        Self { child, base }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `keyward serve --listen 127.0.0.1:0` as `cmd` describes (binary, environment) with
/// stdout piped, and returns the child and the base URL it printed.
pub fn spawn_serve(mut cmd: std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start keyward serve");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.as_mut().expect("piped stdout"))
        .read_line(&mut first)
        .expect("read the first line of keyward serve");
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_owned();
    (child, base)
}

/// `keyward serve` from the binary at `bin` on `db_url`, with a fixed login secret so every node
/// of a test accepts the others' login tokens, quiet on stderr.
pub fn serve_node(bin: &str, db_url: &str) -> Served {
    let mut cmd = std::process::Command::new(bin);
    cmd.env("KEYWARD_DATABASE_URL", db_url)
        .env("KEYWARD_JWT_SECRET", "a-test-secret-of-at-least-32-bytes!!")
        .env("KEYWARD_LOG", "warn")
        .stderr(std::process::Stdio::null());
    Served::start(cmd)
}

/// `POST url` with a JSON `body` and a login token; the JSON answer.
pub async fn post_json(http: &reqwest::Client, url: &str, jwt: &str, body: &serde_json::Value) -> serde_json::Value {
    answer(http.post(url).bearer_auth(jwt).json(body)).await
}

/// Sends `request`; its JSON answer.
async fn answer(request: reqwest::RequestBuilder) -> serde_json::Value {
    let response = request.send().await.expect("reach the node");
    response.json().await.expect("a JSON answer")
}

/// The `code` `POST /v1/keys/verify` gives `token` at `base`, asked with a login token.
pub async fn verify_code(http: &reqwest::Client, base: &str, jwt: &str, token: &str) -> String {
    let answer = post_json(
        http,
        &format!("{base}/v1/keys/verify"),
        jwt,
        &serde_json::json!({"key": token}),
    )
    .await;
    answer["code"].as_str().unwrap_or_default().to_owned()
}

/// The admin every binary-level test logs in as.
pub const ADMIN_EMAIL: &str = "admin@test.local";
pub const ADMIN_PASSWORD: &str = "supersecret";

/// Creates the test admin with `keyward user create`, run from the binary at `bin`.
pub fn create_admin(bin: &str, db_url: &str) {
    let status = std::process::Command::new(bin)
        .args(["user", "create", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD])
        .env("KEYWARD_DATABASE_URL", db_url)
        .status()
        .expect("run keyward user create");
    assert!(status.success(), "keyward user create failed");
}

/// Logs the test admin in at `base`; the login token.
pub async fn login(http: &reqwest::Client, base: &str) -> String {
    let body: serde_json::Value = http
        .post(format!("{base}/auth/user/emailpass"))
        .json(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
        .send()
        .await
        .expect("send the login")
        .json()
        .await
        .expect("a JSON login answer");
    body["token"].as_str().expect("a login token").to_owned()
}

/// Whether `needle` is stored anywhere in `db`: the raw bytes of a SQLite file and its WAL, or
/// any text or JSON column of any table of a Postgres database. What "never at rest" checks.
pub async fn stored_anywhere(db: &TestDb, needle: &str) -> bool {
    if let Some(path) = db.sqlite_path() {
        let needle = needle.as_bytes();
        return ["", "-wal"].iter().any(|suffix| {
            std::fs::read(format!("{}{suffix}", path.display()))
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
        });
    }
    let mut conn = sqlx::PgConnection::connect(&db.url)
        .await
        .expect("connect to the test database");
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb', 'json')",
    )
    .fetch_all(&mut conn)
    .await
    .expect("list the text columns");
    for (table, column) in columns {
        let sql = format!("SELECT COUNT(*) FROM \"{table}\" WHERE strpos(\"{column}\"::text, $1) > 0");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(needle)
            .fetch_one(&mut conn)
            .await
            .expect("search a column");
        if n > 0 {
            return true;
        }
    }
    false
}

/// `n` secret keys written straight into `store` in one insert (a benchmark's fixture or
/// baseline: no workflow, no event), named `{prefix}{i}`; returns their plain tokens.
pub async fn insert_secret_keys(store: &Arc<dyn Store>, prefix: &str, n: usize) -> Vec<String> {
    let now = keyward::ClockExt::now(&keyward::SystemClock);
    let mut rows = Vec::with_capacity(n);
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let token = keyward::token::generate(keyward::ApiKeyType::Secret, &keyward::OsEntropy).unwrap();
        let id = format!("apk_{prefix}{}", NEXT_KEY.fetch_add(1, Ordering::Relaxed));
        rows.push(keyward::store::NewApiKey {
            id: keyward::ApiKeyId::parse(&id).unwrap(),
            token: token.digest(),
            salt: String::new(),
            redacted: token.redacted(),
            title: id,
            key_type: keyward::ApiKeyType::Secret,
            created_by: "bench".into(),
            created_at: now,
            expires_at: None,
            policy: Default::default(),
        });
        tokens.push(token.expose().to_owned());
    }
    store.insert_api_keys(&rows).await.unwrap();
    tokens
}

static NEXT_KEY: AtomicU32 = AtomicU32::new(0);

/// `GET url` with one header (`x-publishable-api-key`, `authorization`, …); the JSON answer.
pub async fn get_json(http: &reqwest::Client, url: &str, header: (&str, &str)) -> serde_json::Value {
    answer(http.get(url).header(header.0, header.1)).await
}

/// The records of a JSON list whose `title` is `title`.
pub fn titled(list: &serde_json::Value, title: &str) -> Vec<serde_json::Value> {
    list.as_array()
        .map(|items| items.iter().filter(|k| k["title"] == title).cloned().collect())
        .unwrap_or_default()
}

/// A runtime for a benchmark's `main`: two workers, timers and I/O on.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
