//! Two `keyward serve` nodes on one Postgres: the node running a roll dies mid-way (a crash
//! point compiled into this test build), and the other node finishes the run once the dead
//! node's lease runs out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keyward_testkit::{Served, TestDb};
use serde_json::{Value, json};

const LEASE_SECONDS: f64 = 2.0;

fn node(db: &str, fault: Option<&str>) -> Served {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.env("KEYWARD_DATABASE_URL", db)
        .env("KEYWARD_JWT_SECRET", "cluster-secret-cluster-secret-0001")
        .env("KEYWARD_WORKFLOW_LEASE", LEASE_SECONDS.to_string())
        .env_remove("KEYWARD_FAULT")
        .stderr(Stdio::piped());
    if let Some(f) = fault {
        cmd.env("KEYWARD_FAULT", f);
    }
    Served::start(cmd)
}

async fn call(http: &reqwest::Client, jwt: &str, method: reqwest::Method, url: String, body: Value) -> Value {
    let res = http
        .request(method, url)
        .bearer_auth(jwt)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_when_the_node_running_a_roll_dies_another_node_finishes_it_within_the_lease() {
    let db = TestDb::postgres().await;
    keyward_testkit::create_admin(env!("CARGO_BIN_EXE_keyward"), &db.url);
    let doomed = node(&db.url, Some("crash:roll-api-key:revoke-api-keys:before"));
    let mut survivor = node(&db.url, None);
    let http = reqwest::Client::new();
    let jwt = keyward_testkit::login(&http, &doomed.base).await;
    let post = reqwest::Method::POST;
    let channel = call(
        &http,
        &jwt,
        post.clone(),
        format!("{}/admin/sales-channels", survivor.base),
        json!({"name": "EU"}),
    )
    .await;
    let channel_id = channel["sales_channel"]["id"].as_str().unwrap().to_owned();
    let key = call(
        &http,
        &jwt,
        post.clone(),
        format!("{}/admin/api-keys", survivor.base),
        json!({"title": "storefront", "type": "publishable"}),
    )
    .await;
    let old_id = key["api_key"]["id"].as_str().unwrap().to_owned();
    call(
        &http,
        &jwt,
        post.clone(),
        format!("{}/admin/api-keys/{old_id}/sales-channels", survivor.base),
        json!({"add": [channel_id]}),
    )
    .await;

    // The doomed node creates and links the new key, then dies before revoking the old one.
    let roll = http
        .post(format!("{}/admin/api-keys/{old_id}/roll", doomed.base))
        .bearer_auth(&jwt)
        .json(&json!({"revoke_in": 0}))
        .send()
        .await;
    assert!(roll.is_err(), "the node should have died mid-roll: {roll:?}");
    let died = Instant::now();

    let finished = loop {
        let list = call(
            &http,
            &jwt,
            reqwest::Method::GET,
            format!(
                "{}/admin/api-keys?title=storefront&fields=id,revoked_at,revoked_by",
                survivor.base
            ),
            Value::Null,
        )
        .await;
        let keys = list["api_keys"].as_array().unwrap().clone();
        let old = keys.iter().find(|k| k["id"] == old_id.as_str()).cloned().unwrap();
        if keys.len() == 2 && old["revoked_at"].is_string() {
            break keys;
        }
        assert!(died.elapsed() < Duration::from_secs(20), "not finished: {keys:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = died.elapsed();
    // The lease, plus one recovery tick (half a lease), plus slack for a loaded machine.
    assert!(
        took < Duration::from_secs_f64(LEASE_SECONDS * 3.0),
        "took {took:?} to take the run over"
    );
    let new_id = finished.iter().find(|k| k["id"] != old_id.as_str()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let new = call(
        &http,
        &jwt,
        reqwest::Method::GET,
        format!("{}/admin/api-keys/{new_id}?fields=id,*sales_channels", survivor.base),
        Value::Null,
    )
    .await;
    assert_eq!(new["api_key"]["sales_channels"][0]["id"], channel_id.as_str());

    let _ = survivor.child.kill();
    let _ = survivor.child.wait();
    let mut log = String::new();
    survivor.child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(log.contains("taking over an unfinished workflow run"), "{log}");
    eprintln!("takeover finished {took:?} after the owner died (lease {LEASE_SECONDS} s)");
}
