//! Boots the real router on 127.0.0.1:0 over a fresh database and talks to it with reqwest.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test support"
)]

use keyward::{Keyward, Workflows};
use keyward_server::AppState;
use keyward_testkit::TestDb;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

pub const EMAIL: &str = "admin@test.local";
pub const PASSWORD: &str = "supersecret";

pub struct App {
    pub base: String,
    pub kw: Keyward,
    pub flows: Workflows,
    pub http: reqwest::Client,
    /// An admin login token.
    pub token: String,
    pub user_id: String,
    pub db: TestDb,
}

impl App {
    pub async fn on(db: TestDb) -> Self {
        Self::configured(db, |s| s).await
    }

    /// With the state adjusted before the server starts (limits, CORS).
    pub async fn configured(db: TestDb, configure: impl FnOnce(AppState) -> AppState) -> Self {
        let flows = db.workflows().await;
        let kw = flows.kw().clone();
        let user = flows.create_user(EMAIL, PASSWORD).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = configure(AppState::new(flows.clone(), b"test-secret".to_vec()));
        tokio::spawn(keyward_server::serve(state, listener));
        let http = reqwest::Client::new();
        let token = keyward_testkit::login(&http, &base).await;
        Self {
            base,
            kw,
            flows,
            http,
            token,
            user_id: user.id.to_string(),
            db,
        }
    }

    pub async fn sqlite() -> Self {
        Self::on(TestDb::sqlite()).await
    }

    pub async fn postgres() -> Self {
        Self::on(TestDb::postgres().await).await
    }

    /// A request with no credentials.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// A request as the admin user (Bearer token).
    pub fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.anon(method, path).bearer_auth(&self.token)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        read(self.admin(Method::GET, path).send().await.unwrap()).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        read(self.admin(Method::POST, path).json(&body).send().await.unwrap()).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        read(self.admin(Method::DELETE, path).send().await.unwrap()).await
    }

    /// Creates a key over HTTP; returns the create response's `api_key`.
    pub async fn create_key(&self, title: &str, key_type: &str) -> Value {
        let (status, body) = self
            .post("/admin/api-keys", json!({"title": title, "type": key_type}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["api_key"].clone()
    }

    pub async fn create_channel(&self, name: &str) -> Value {
        let (status, body) = self.post("/admin/sales-channels", json!({"name": name})).await;
        assert_eq!(status, 200, "{body}");
        body["sales_channel"].clone()
    }
}

pub async fn read(res: Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text));
    (status, body)
}

impl keyward_testkit::FromTestDb for App {
    async fn from_test_db(db: TestDb) -> Self {
        Self::on(db).await
    }
}

/// Declares each test twice, on SQLite and on Postgres, with one body seeing `app: App`.
#[macro_export]
macro_rules! over_http {
    ($($tests:tt)*) => { keyward_testkit::on_both! { $crate::support::App; $($tests)* } };
}

/// An [`App`] behind a trusted proxy at 127.0.0.1: the client is the `X-Forwarded-For` address.
pub struct Proxied(pub App);

impl keyward_testkit::FromTestDb for Proxied {
    async fn from_test_db(db: TestDb) -> Self {
        let trust = |state: AppState| state.with_trusted_proxies(vec![keyward::Cidr::parse("127.0.0.1").unwrap()]);
        Proxied(App::configured(db, trust).await)
    }
}

/// [`over_http!`] behind a trusted proxy: the body sees `Proxied(app)`.
#[macro_export]
macro_rules! over_http_behind_a_proxy {
    ($($tests:tt)*) => { keyward_testkit::on_both! { $crate::support::Proxied; $($tests)* } };
}
