//! `keyward serve` as an operator runs it: the real binary, a real socket, logs at trace level.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keyward_testkit::TestDb;
use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
}

fn start(db: &str) -> Server {
    keyward_testkit::create_admin(env!("CARGO_BIN_EXE_keyward"), db);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.env("KEYWARD_DATABASE_URL", db)
        .env("KEYWARD_LOG", "trace")
        .env("KEYWARD_JWT_SECRET", "log-test-secret-log-test-secret-001")
        .stderr(Stdio::piped());
    let (child, base) = keyward_testkit::spawn_serve(cmd);
    Server { child, base }
}

#[tokio::test]
async fn a_created_secret_token_appears_in_no_log_line_and_sigterm_stops_cleanly() {
    let db = TestDb::sqlite();
    let mut server = start(&db.url);
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let jwt = &keyward_testkit::login(&http, &base).await;
    let created = keyward_testkit::post_json(
        &http,
        &format!("{base}/admin/api-keys"),
        jwt,
        &json!({"title": "leak check", "type": "secret"}),
    )
    .await;
    let token = created["api_key"]["token"].as_str().unwrap().to_owned();
    // Use the secret in every place it can travel: Basic auth, the verify API, a bad Bearer.
    let uses = [
        (
            http.get(format!("{base}/admin/api-keys")).basic_auth(&token, Some("")),
            200,
        ),
        (
            http.post(format!("{base}/v1/keys/verify"))
                .bearer_auth(jwt)
                .json(&json!({"key": token})),
            200,
        ),
        (http.get(format!("{base}/admin/api-keys")).bearer_auth(&token), 401),
    ];
    for (request, status) in uses {
        assert_eq!(request.send().await.unwrap().status(), status);
    }

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut exited = None;
    for _ in 0..50 {
        if let Some(status) = server.child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = exited.expect("keyward serve did not stop within 5 s of SIGTERM");
    assert!(status.success(), "{status:?}");

    let mut logs = String::new();
    server.child.stdout.take().unwrap().read_to_string(&mut logs).unwrap();
    server.child.stderr.take().unwrap().read_to_string(&mut logs).unwrap();
    assert!(
        logs.contains("/admin/api-keys"),
        "trace logging was on and saw the requests:\n{logs}"
    );
    assert!(!logs.contains(&token), "the secret token is in the log");
    assert!(!logs.contains(&token[3..46]), "part of the secret token is in the log");
    assert!(!logs.contains(jwt), "the login token is in the log");
    assert!(!logs.contains("supersecret"), "the password is in the log");

    // The key's use was recorded: flushed on the way out, not per request.
    let id = created["api_key"]["id"].as_str().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["--json", "keys", "get", id])
        .env("KEYWARD_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let key: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(key["api_key"]["last_used_at"].is_string(), "{key}");
}

/// Reads the server's log as it is written (a full pipe would stall the server); the handle
/// answers everything once the server has stopped.
fn drain(server: &mut Server) -> std::thread::JoinHandle<String> {
    let mut err = server.child.stderr.take().unwrap();
    let mut out = server.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut logs = String::new();
        err.read_to_string(&mut logs).unwrap();
        out.read_to_string(&mut logs).unwrap();
        logs
    })
}

/// Stops `server` with SIGTERM.
fn stop(mut server: Server) {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    server.child.wait().unwrap();
}

#[tokio::test]
async fn every_route_at_trace_level_logs_no_token_it_was_given() {
    let db = TestDb::sqlite();
    let mut server = start(&db.url);
    let logs = drain(&mut server);
    let http = reqwest::Client::new();
    let base = server.base.clone();
    let jwt = keyward_testkit::login(&http, &base).await;
    let make = |body: Value| {
        let (http, base, jwt) = (http.clone(), base.clone(), jwt.clone());
        async move { keyward_testkit::post_json(&http, &format!("{base}/admin/api-keys"), &jwt, &body).await }
    };
    let sk = make(json!({"title": "sk", "type": "secret"})).await;
    let rk = make(json!({"title": "rk", "type": "secret", "permissions": ["api_keys:read", "keys:verify"]})).await;
    let pk = make(json!({"title": "pk", "type": "publishable"})).await;
    let token = |k: &Value| k["api_key"]["token"].as_str().unwrap().to_owned();
    let (sk_t, rk_t, pk_t) = (token(&sk), token(&rk), token(&pk));
    let pk_id = pk["api_key"]["id"].as_str().unwrap().to_owned();
    let mut statuses = Vec::new();
    for route in keyward_server::admin_routes() {
        let method = reqwest::Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let path = route.path.replace("{id}", &pk_id);
        for (credential, filter) in [(&sk_t, &pk_t), (&rk_t, &sk_t)] {
            let mut req = http
                .request(method.clone(), format!("{base}{path}"))
                .query(&[("token", filter.as_str()), ("q", rk_t.as_str())])
                .basic_auth(credential, Some(""));
            if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
                req = req.json(&json!({"key": filter, "title": credential, "token": pk_t}));
            }
            statuses.push(req.send().await.unwrap().status().as_u16());
        }
    }
    // The storefront header, the other admin credentials, and a token filter in every spelling;
    // tokens where none belong: in a search, a path, a parameter's name, a metadata key.
    let sk_id = sk["api_key"]["id"].as_str().unwrap();
    let more = [
        http.get(format!("{base}/admin/api-keys?q={jwt}&x={jwt}"))
            .bearer_auth(&jwt),
        http.get(format!("{base}/admin/api-keys/{sk_t}")).bearer_auth(&jwt),
        http.get(format!("{base}/admin/api-keys?{rk_t}=1&q={}", &sk_t[3..20]))
            .bearer_auth(&jwt),
        http.post(format!("{base}/admin/api-keys"))
            .bearer_auth(&jwt)
            .json(&json!({"title": "m", "type": "secret", "metadata": {sk_t.clone(): 1}})),
        http.post(format!("{base}/admin/api-keys/{sk_id}"))
            .bearer_auth(&jwt)
            .json(&json!({"permissions": [pk_t.clone()]})),
        http.get(format!("{base}/store/regions"))
            .header("x-publishable-api-key", &pk_t),
        http.get(format!("{base}/admin/api-keys?token[$in][]={rk_t}&token[$in][]={sk_t}"))
            .bearer_auth(&jwt),
        http.get(format!("{base}/admin/api-keys?token={}", rk_t.replace('_', "%5F")))
            .bearer_auth(&jwt),
        http.get(format!("{base}/admin/api-keys")).bearer_auth(&sk_t),
        http.get(format!("{base}/metrics")).bearer_auth(&jwt),
        http.post(format!("{base}/auth/session")).bearer_auth(&jwt),
    ];
    for req in more {
        statuses.push(req.send().await.unwrap().status().as_u16());
    }
    assert!(statuses.contains(&200) && statuses.contains(&403), "{statuses:?}");
    stop(server);
    let logs = logs.join().unwrap();
    assert!(
        logs.contains("/admin/api-keys/"),
        "trace logging saw the requests:\n{logs}"
    );
    for (what, secret) in [
        ("sk_", &sk_t),
        ("rk_", &rk_t),
        ("pk_", &pk_t),
        ("the login token", &jwt),
    ] {
        assert!(!logs.contains(secret.as_str()), "{what} token {secret} is in the log");
        assert!(
            !logs.contains(&secret[3..secret.len() - 3]),
            "part of the {what} token is in the log"
        );
    }
    assert!(!logs.contains("supersecret"), "the password is in the log");
}

#[test]
fn serve_says_how_to_create_the_first_user() {
    let db = TestDb::sqlite();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KEYWARD_DATABASE_URL", &db.url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = String::new();
    for _ in 0..4 {
        out.read_line(&mut lines).unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        lines.starts_with("keyward is listening on http://127.0.0.1:"),
        "{lines}"
    );
    let port = lines.split("127.0.0.1:").nth(1).unwrap().split(' ').next().unwrap();
    assert!(
        lines.contains(&format!("The dashboard: http://127.0.0.1:{port}/app\n")),
        "{lines}"
    );
    assert!(lines.contains("keyward user create --email"), "{lines}");
}

#[test]
fn a_taken_port_is_a_clear_usage_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap().to_string();
    let db = TestDb::sqlite();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", &addr])
        .env("KEYWARD_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn a_log_filter_that_does_not_parse_or_names_no_level_stops_the_start() {
    let db = TestDb::sqlite();
    for bad in ["verbose", "info,keyward=loud[", "Debugg"] {
        let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("KEYWARD_DATABASE_URL", &db.url)
            .env("KEYWARD_LOG", bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("KEYWARD_LOG={bad:?} is not a log filter")),
            "{bad}: {err}"
        );
    }
}

/// `keyward serve` without KEYWARD_JWT_SECRET.
fn node_without_secret(db: &str) -> keyward_testkit::Served {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.env("KEYWARD_DATABASE_URL", db)
        .env_remove("KEYWARD_JWT_SECRET")
        .stderr(Stdio::null());
    keyward_testkit::Served::start(cmd)
}

async fn keys_status(http: &reqwest::Client, base: &str, jwt: &str) -> u16 {
    http.get(format!("{base}/admin/api-keys"))
        .bearer_auth(jwt)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn nodes_without_a_configured_secret_share_one_from_a_postgres_database_across_restarts() {
    let db = TestDb::postgres().await;
    keyward_testkit::create_admin(env!("CARGO_BIN_EXE_keyward"), &db.url);
    let http = reqwest::Client::new();
    let (a, b) = (node_without_secret(&db.url), node_without_secret(&db.url));
    let jwt = keyward_testkit::login(&http, &a.base).await;
    assert_eq!(
        keys_status(&http, &b.base, &jwt).await,
        200,
        "a login at one node works at the other"
    );
    drop((a, b));
    let (a, b) = (node_without_secret(&db.url), node_without_secret(&db.url));
    assert_eq!(keys_status(&http, &a.base, &jwt).await, 200, "and after both restart");
    assert_eq!(keys_status(&http, &b.base, &jwt).await, 200);
    // Logout at one node: the other refuses the token too, within a second.
    let out = http
        .delete(format!("{}/auth/session", a.base))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    assert_eq!(keys_status(&http, &a.base, &jwt).await, 401, "at once where it ended");
    let start = std::time::Instant::now();
    while keys_status(&http, &b.base, &jwt).await != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the other node still accepts the token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("logout reached the other node after {} ms", start.elapsed().as_millis());
}

#[test]
fn a_short_configured_secret_refuses_to_start() {
    let db = TestDb::sqlite();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("KEYWARD_DATABASE_URL", &db.url)
        .env("KEYWARD_JWT_SECRET", "changeme")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KEYWARD_JWT_SECRET is 8 bytes; it must be at least 32"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing was served");
}
