//! Webhooks from the real binary to a real HTTP receiver in the test: retried until
//! acknowledged, signed, surviving a SIGKILL of the server, exactly once for 1,000 changes; the
//! key-on-user-created setting; bad configuration refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::collections::HashMap;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{KeyInit, Mac};
use keyward_testkit::TestDb;
use serde_json::{Value, json};

const SECRET: &str = "whsec_test";

/// What the receiver saw: every request (event id, body, signature), and how many to refuse.
#[derive(Default)]
struct Inbox {
    requests: Vec<(String, Vec<u8>, String)>,
    acked: HashMap<String, u32>,
    refuse: u32,
}

type Shared = Arc<Mutex<Inbox>>;

async fn receive(State(inbox): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut inbox = inbox.lock().unwrap();
    inbox
        .requests
        .push((header("keyward-event-id"), body.to_vec(), header("keyward-signature")));
    if inbox.refuse > 0 {
        inbox.refuse -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    *inbox.acked.entry(header("keyward-event-id")).or_default() += 1;
    StatusCode::OK
}

/// A receiver on a free port (returned) that refuses the first `refuse` deliveries.
async fn receiver(refuse: u32) -> (u16, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (port, receiver_on(listener, refuse).await)
}

async fn receiver_on(listener: tokio::net::TcpListener, refuse: u32) -> Shared {
    let inbox = Shared::default();
    inbox.lock().unwrap().refuse = refuse;
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(inbox.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    inbox
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(db: &str, env: &[(&str, String)]) -> (Server, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.env("KEYWARD_DATABASE_URL", db)
        .env("KEYWARD_JWT_SECRET", "webhook-test-secret-webhook-test-01")
        .env("KEYWARD_EVENT_RETRY_BASE", "0.05")
        .env_remove("KEYWARD_FAULT")
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let (child, base) = keyward_testkit::spawn_serve(cmd);
    (Server(child), base)
}

fn keyward(db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--json")
        .args(args)
        .env("KEYWARD_DATABASE_URL", db)
        .env_remove("KEYWARD_FAULT")
        .output()
        .unwrap()
}

fn ok(db: &str, args: &[&str]) -> Value {
    let out = keyward(db, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn hook_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("KEYWARD_WEBHOOK_URL", format!("http://127.0.0.1:{port}/hook")),
        ("KEYWARD_WEBHOOK_SECRET", SECRET.to_owned()),
    ]
}

async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn verify(signature: &str, body: &[u8]) -> bool {
    let Some((t, v1)) = signature.strip_prefix("t=").and_then(|rest| rest.split_once(",v1=")) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    hex == v1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_three_times_gets_the_event_on_the_fourth_signed() {
    let db = TestDb::sqlite();
    let (port, inbox) = receiver(3).await;
    let (_server, _) = serve(&db.url, &hook_env(port));
    let created = ok(&db.url, &["keys", "create", "--title", "hooked", "--type", "secret"]);
    let id = created["api_key"]["id"].as_str().unwrap().to_owned();
    wait_for("the acknowledged delivery", Duration::from_secs(20), || {
        !inbox.lock().unwrap().acked.is_empty()
    })
    .await;
    let inbox = inbox.lock().unwrap();
    assert_eq!(inbox.requests.len(), 4, "three refusals, then the delivery");
    let event_ids: Vec<&str> = inbox.requests.iter().map(|(id, _, _)| id.as_str()).collect();
    assert!(
        event_ids.iter().all(|e| *e == event_ids[0]),
        "the same event each time: {event_ids:?}"
    );
    let (_, body, signature) = inbox.requests.last().unwrap();
    assert!(verify(signature, body), "signature {signature:?} does not verify");
    assert!(!verify(signature, b"{\"tampered\":true}"));
    let event: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(event["name"], "api_key.created");
    assert_eq!(event["data"]["id"], id.as_str());
    assert!(!String::from_utf8_lossy(body).contains(created["api_key"]["token"].as_str().unwrap()));
    let events = ok(&db.url, &["events", "list"]);
    let delivery = &events["events"][0]["deliveries"][0];
    assert_eq!(
        (delivery["state"].as_str(), delivery["attempts"].as_u64()),
        (Some("delivered"), Some(4))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_committed_before_a_sigkill_is_delivered_after_the_restart() {
    let db = TestDb::sqlite();
    // A port with nobody listening yet: the webhook is unreachable.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (mut server, _) = serve(&db.url, &hook_env(port));
    let created = ok(
        &db.url,
        &["keys", "create", "--title", "survivor", "--type", "publishable"],
    );
    let id = created["api_key"]["id"].as_str().unwrap().to_owned();
    // The change is committed; delivery fails, clearly, and the event waits.
    let start = Instant::now();
    let pending = loop {
        let events = ok(&db.url, &["events", "list"]);
        let d = events["events"][0]["deliveries"][0].clone();
        if d["last_error"].is_string() {
            break d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no failed attempt recorded: {events}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(pending["state"], "pending");
    assert!(
        pending["last_error"].as_str().unwrap().contains("could not connect"),
        "{pending}"
    );
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();

    let inbox = receiver_on(tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap(), 0).await;
    let (_server, _) = serve(&db.url, &hook_env(port));
    wait_for("the delivery after the restart", Duration::from_secs(20), || {
        !inbox.lock().unwrap().acked.is_empty()
    })
    .await;
    let inbox = inbox.lock().unwrap();
    let body: Value = serde_json::from_slice(&inbox.requests[0].1).unwrap();
    assert_eq!(body["data"]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_key_changes_are_each_delivered_and_acknowledged_once() {
    let db = TestDb::sqlite();
    let (port, inbox) = receiver(0).await;
    keyward_testkit::create_admin(env!("CARGO_BIN_EXE_keyward"), &db.url);
    let (_server, base) = serve(&db.url, &hook_env(port));
    let http = reqwest::Client::new();
    let jwt = keyward_testkit::login(&http, &base).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (http, base, jwt, gate) = (http.clone(), base.clone(), jwt.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.unwrap();
            let res = http
                .post(format!("{base}/admin/api-keys"))
                .bearer_auth(&jwt)
                .json(&json!({"title": format!("k{i}"), "type": "publishable"}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // The 1,000 creations, plus the user created before the server started (a subscriber only
    // takes events published after it was registered).
    wait_for("1,000 acknowledged events", Duration::from_secs(120), || {
        inbox.lock().unwrap().acked.len() >= 1000
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let inbox = inbox.lock().unwrap();
    assert_eq!(inbox.acked.len(), 1000);
    let twice: Vec<_> = inbox.acked.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "acknowledged more than once: {twice:?}");
    assert_eq!(inbox.requests.len(), 1000, "no retries were needed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_key_on_user_created_a_new_user_gets_exactly_one_key() {
    let db = TestDb::sqlite();
    let (_server, _) = serve(&db.url, &[("KEYWARD_KEY_ON_USER_CREATED", "secret".to_owned())]);
    let user = ok(
        &db.url,
        &[
            "user",
            "create",
            "--email",
            "new@test.local",
            "--password",
            "supersecret",
        ],
    );
    let user_id = user["user"]["id"].as_str().unwrap().to_owned();
    let mine = |db: &str| -> Vec<Value> {
        ok(db, &["keys", "list", "--type", "secret"])["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["created_by"] == user_id.as_str())
            .cloned()
            .collect()
    };
    let start = Instant::now();
    while mine(&db.url).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "no key for the new user");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = mine(&db.url);
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["title"], "Key for new@test.local");
}

#[test]
fn bad_event_configuration_is_refused_before_serving() {
    let db = TestDb::sqlite();
    let cases: [(&str, &str, &str); 4] = [
        (
            "KEYWARD_WEBHOOK_EVENTS",
            "api_key.created,api_key.nope",
            "unknown event name 'api_key.nope'",
        ),
        (
            "KEYWARD_WEBHOOK_URL",
            "ftp://example.com/hook",
            "must be an http:// or https:// URL",
        ),
        ("KEYWARD_WEBHOOK_URL", "not a url", "is not a URL"),
        ("KEYWARD_EVENT_RETRY_BASE", "0", "--event-retry-base must be between"),
    ];
    for (var, value, message) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("KEYWARD_DATABASE_URL", &db.url)
            .env("KEYWARD_WEBHOOK_URL", "http://127.0.0.1:9/hook")
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{var}={value}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_receiver_is_a_failed_delivery_and_the_target_gets_nothing() {
    let db = TestDb::sqlite();
    // The target a redirect points at: it must never see the event.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = target.local_addr().unwrap().port();
    let target_inbox = receiver_on(target, 0).await;
    let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = redirector.local_addr().unwrap().port();
    let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let app = {
        let hits = hits.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let hits = hits.clone();
                async move {
                    hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [("location", format!("http://127.0.0.1:{target_port}/hook"))],
                    )
                }
            }),
        )
    };
    tokio::spawn(async move { axum::serve(redirector, app).await });
    let (_server, _) = serve(&db.url, &hook_env(port));
    ok(&db.url, &["keys", "create", "--title", "bounced", "--type", "secret"]);
    wait_for("three delivery attempts", Duration::from_secs(20), || {
        hits.load(std::sync::atomic::Ordering::SeqCst) >= 3
    })
    .await;
    assert!(
        target_inbox.lock().unwrap().requests.is_empty(),
        "the redirect was not followed"
    );
    let events = ok(&db.url, &["events", "list"]);
    let delivery = &events["events"][0]["deliveries"][0];
    assert_eq!(delivery["state"], "pending", "{delivery}");
}
