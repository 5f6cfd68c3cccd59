//! `Idempotency-Key` over a real socket: replays return the first answer (a new token included),
//! a client that hung up gets its answer on retry, reuse with another body and concurrent
//! duplicates are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::{App, read};
use tokio::io::AsyncWriteExt;

async fn with_key(app: &App, method: Method, path: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    let res = app
        .admin(method, path)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let replayed = res.headers().get("idempotent-replayed").is_some();
    let (status, body) = read(res).await;
    (status, body, replayed)
}

async fn titled(app: &App, title: &str) -> Vec<Value> {
    let (_, list) = app.get("/admin/api-keys?limit=100").await;
    keyward_testkit::titled(&list["api_keys"], title)
}

over_http! {
    async fn a_replayed_create_returns_the_same_key_and_token_and_creates_nothing(app) {
        let body = json!({"title": "once", "type": "secret"});
        let (s1, first, r1) = with_key(&app, Method::POST, "/admin/api-keys", "create-1", &body).await;
        let (s2, second, r2) = with_key(&app, Method::POST, "/admin/api-keys", "create-1", &body).await;
        assert_eq!((s1, s2, r1, r2), (200, 200, false, true), "{first} {second}");
        assert_eq!(first, second, "the same answer, token included");
        assert!(first["api_key"]["token"].as_str().unwrap().starts_with("sk_"));
        assert_eq!(titled(&app, "once").await.len(), 1);
        // Without the header, or with another key, it runs again.
        let (_, third, _) = with_key(&app, Method::POST, "/admin/api-keys", "create-2", &body).await;
        assert_ne!(third["api_key"]["id"], first["api_key"]["id"]);
        assert_eq!(titled(&app, "once").await.len(), 2);
    }

    async fn a_replayed_roll_returns_the_same_new_key_and_rolls_once(app) {
        let old = app.create_key("rolled", "secret").await;
        let path = format!("/admin/api-keys/{}/roll", old["id"].as_str().unwrap());
        let body = json!({"revoke_in": 60});
        let (_, first, _) = with_key(&app, Method::POST, &path, "roll-1", &body).await;
        let (status, second, replayed) = with_key(&app, Method::POST, &path, "roll-1", &body).await;
        assert_eq!((status, replayed), (200, true), "{second}");
        assert_eq!(first["api_key"]["token"], second["api_key"]["token"]);
        assert_eq!(titled(&app, "rolled").await.len(), 2, "one new key, not two");
    }

    async fn the_same_key_with_another_body_is_refused_and_changes_nothing(app) {
        let (_, _, _) = with_key(&app, Method::POST, "/admin/api-keys", "k", &json!({"title": "a", "type": "publishable"})).await;
        let (status, err, _) = with_key(&app, Method::POST, "/admin/api-keys", "k", &json!({"title": "b", "type": "publishable"})).await;
        assert_eq!(status, 422, "{err}");
        assert_eq!(err["message"], keyward::idempotency::MISMATCH);
        assert!(titled(&app, "b").await.is_empty());
        // Another path is another request too.
        let k = app.create_key("x", "publishable").await;
        let (status, _, _) = with_key(&app, Method::POST, &format!("/admin/api-keys/{}", k["id"].as_str().unwrap()), "k", &json!({"title": "a", "type": "publishable"})).await;
        assert_eq!(status, 422);
        let (status, err, _) = with_key(&app, Method::POST, "/admin/api-keys", "", &json!({})).await;
        assert_eq!(status, 400, "{err}");
    }

    async fn a_key_whose_first_request_still_runs_is_refused_with_409(app) {
        // Hold the key as a first request that has not been answered yet.
        let body = json!({"title": "slow", "type": "secret"}).to_string();
        let digest = keyward::idempotency::request_digest(&[b"POST", b"/admin/api-keys", body.as_bytes()]);
        let key = keyward::idempotency::IdempotencyKey::parse("held").unwrap();
        let held = app.kw.begin_idempotent(&app.user_id, &key, &digest).await.unwrap();
        assert!(matches!(held, keyward::idempotency::Begin::Run(_)));
        let res = app
            .admin(Method::POST, "/admin/api-keys")
            .header("idempotency-key", "held")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, err) = read(res).await;
        assert_eq!(status, 409, "{err}");
        assert_eq!(err["message"], keyward::idempotency::IN_PROGRESS);
        assert!(titled(&app, "slow").await.is_empty());
    }

    async fn concurrent_duplicates_create_one_key(app) {
        let body = json!({"title": "raced create", "type": "secret"});
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let req = app.admin(Method::POST, "/admin/api-keys").header("idempotency-key", "same").json(&body);
            tasks.push(tokio::spawn(async move { read(req.send().await.unwrap()).await }));
        }
        let mut ids = std::collections::BTreeSet::new();
        for t in tasks {
            let (status, body) = t.await.unwrap();
            match status {
                200 => {
                    ids.insert(body["api_key"]["id"].as_str().unwrap().to_owned());
                }
                409 => assert_eq!(body["message"], keyward::idempotency::IN_PROGRESS),
                other => panic!("{other} {body}"),
            }
        }
        assert_eq!(ids.len(), 1, "every 200 is the one key: {ids:?}");
        assert_eq!(titled(&app, "raced create").await.len(), 1);
    }

    async fn a_client_that_hung_up_on_a_roll_gets_the_new_token_when_it_retries(app) {
        let old = app.create_key("dropped", "secret").await;
        let path = format!("/admin/api-keys/{}/roll", old["id"].as_str().unwrap());
        let body = json!({}).to_string();
        // Send the whole request on a raw socket and hang up without reading the answer.
        let addr = app.base.trim_start_matches("http://").to_owned();
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let raw = format!(
            "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\nidempotency-key: lost\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            app.token,
            body.len()
        );
        sock.write_all(raw.as_bytes()).await.unwrap();
        sock.flush().await.unwrap();
        // Hang up as soon as the roll has started, before reading any answer.
        for _ in 0..200 {
            let runs = app.flows.engine().log().list_runs(None, 100).await.unwrap();
            if runs.iter().any(|r| r.workflow == "roll-api-key") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(sock);
        // The roll goes on without its client.
        for _ in 0..100 {
            if titled(&app, "dropped").await.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(titled(&app, "dropped").await.len(), 2, "the hung-up roll ran");
        // The retry: 409 while the first one is still being recorded, then its answer.
        let mut answer = None;
        for _ in 0..100 {
            let res = app
                .admin(Method::POST, &path)
                .header("idempotency-key", "lost")
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let replayed = res.headers().get("idempotent-replayed").is_some();
            let (status, got) = read(res).await;
            if status == 409 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            assert_eq!((status, replayed), (200, true), "the retry replays the roll the hang-up left: {got}");
            answer = Some(got);
            break;
        }
        let answer = answer.expect("the first roll finished");
        let token = answer["api_key"]["token"].as_str().unwrap();
        let (_, verdict) = app.post("/v1/keys/verify", json!({"key": token})).await;
        assert_eq!(verdict["code"], "VALID", "the integration can carry on with the new token");
        assert_eq!(titled(&app, "dropped").await.len(), 2, "rolled once");
    }
}
