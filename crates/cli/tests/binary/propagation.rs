//! Two `keyward serve` processes on one database (a SQLite file, a Postgres database): a key
//! verified on both (so both cache it), revoked through node A, is refused by node B as soon as
//! the change reaches it, and from then on always.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::time::{Duration, Instant};

use keyward_testkit::{Served, TestDb, on_both_dbs};
use serde_json::{Value, json};

fn node(db: &str) -> Served {
    keyward_testkit::serve_node(env!("CARGO_BIN_EXE_keyward"), db)
}

async fn verify(http: &reqwest::Client, base: &str, jwt: &str, token: &str) -> String {
    keyward_testkit::verify_code(http, base, jwt, token).await
}

async fn store_status(http: &reqwest::Client, base: &str, token: &str) -> u16 {
    http.get(format!("{base}/store/sales-channels"))
        .header("x-publishable-api-key", token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

on_both_dbs! {
    async fn a_key_revoked_through_one_node_is_refused_by_the_other(db) {
        keyward_testkit::create_admin(env!("CARGO_BIN_EXE_keyward"), &db.url);
        let (a, b) = (node(&db.url), node(&db.url));
        let http = reqwest::Client::new();
        let jwt = keyward_testkit::login(&http, &a.base).await;
        let channels: Value = http.get(format!("{}/admin/sales-channels", a.base)).bearer_auth(&jwt)
            .send().await.unwrap().json().await.unwrap();
        let channel = channels["sales_channels"][0]["id"].as_str().unwrap().to_owned();
        for round in 0..5 {
            let created: Value = http.post(format!("{}/admin/api-keys", a.base)).bearer_auth(&jwt)
                .json(&json!({"title": format!("shop {round}"), "type": "publishable"}))
                .send().await.unwrap().json().await.unwrap();
            let (id, token) = (created["api_key"]["id"].as_str().unwrap(), created["api_key"]["token"].as_str().unwrap());
            let linked = http.post(format!("{}/admin/api-keys/{id}/sales-channels", a.base)).bearer_auth(&jwt)
                .json(&json!({"add": [channel]})).send().await.unwrap();
            assert_eq!(linked.status(), 200);
            for n in [&a, &b] {
                // Until B's watcher has connected it reads storage; either way, twice is cached.
                for _ in 0..2 {
                    assert_eq!(verify(&http, &n.base, &jwt, token).await, "VALID");
                    assert_eq!(store_status(&http, &n.base, token).await, 200);
                }
            }
            let revoked = http.post(format!("{}/admin/api-keys/{id}/revoke", a.base)).bearer_auth(&jwt)
                .json(&json!({})).send().await.unwrap();
            assert_eq!(revoked.status(), 200);
            let answered = Instant::now();
            assert_eq!(verify(&http, &a.base, &jwt, token).await, "REVOKED", "at once where it was revoked");
            while verify(&http, &b.base, &jwt, token).await != "REVOKED" {
                assert!(answered.elapsed() < Duration::from_secs(5), "node B still accepts the revoked key");
            }
            eprintln!("round {round}: node B refused after {} ms", answered.elapsed().as_millis());
            for _ in 0..20 {
                assert_eq!(verify(&http, &b.base, &jwt, token).await, "REVOKED");
                assert_eq!(store_status(&http, &b.base, token).await, 400);
            }
        }
    }
}

#[test]
fn the_test_database_helpers_are_used() {
    // Keeps `TestDb` imported for the macro on builds without Postgres.
    let _ = TestDb::sqlite();
}
