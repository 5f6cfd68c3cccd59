//! Revocation propagation between two `keyward serve` processes on one database:
//!
//!     cargo bench -p keyward-cli --bench propagation            # both stores
//!     KEYWARD_BENCH_ROUNDS=1000 cargo bench -p keyward-cli --bench propagation -- postgres
//!
//! Each round creates a secret key through node A, verifies it twice on both nodes (so both
//! cache it), revokes it through node A, and then asks node B (`POST /v1/keys/verify`) again
//! and again until it refuses: the time from A's 200 answer to B's first refusal. After that,
//! B is asked 20 more times; any acceptance is counted as a violation. Reports p50 / p90 / p99 /
//! max over the rounds (default 200) and the violations, and, as the baseline measured in the
//! same run, the round trip of one verification on node B (the resolution of the measurement).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark")]

use std::time::{Duration, Instant};

use keyward_testkit::{Served, TestDb};
use serde_json::json;

fn node(db: &str) -> Served {
    keyward_testkit::serve_node(env!("CARGO_BIN_EXE_keyward"), db)
}

async fn verify(http: &reqwest::Client, base: &str, jwt: &str, token: &str) -> bool {
    keyward_testkit::verify_code(http, base, jwt, token).await == "VALID"
}

fn pct(sorted: &[Duration], p: f64) -> String {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    format!("{:.2} ms", sorted[i].as_secs_f64() * 1000.0)
}

async fn run(backend: &str, db: TestDb, rounds: usize) {
    keyward_testkit::create_admin(env!("CARGO_BIN_EXE_keyward"), &db.url);
    let (a, b) = (node(&db.url), node(&db.url));
    let http = reqwest::Client::new();
    let jwt = keyward_testkit::login(&http, &a.base).await;
    // Both nodes' watchers connect within their first moments; give them those.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut delays = Vec::with_capacity(rounds);
    let mut round_trips = Vec::new();
    let mut violations = 0;
    for round in 0..rounds {
        let body = json!({"title": format!("k{round}"), "type": "secret"});
        let created = keyward_testkit::post_json(&http, &format!("{}/admin/api-keys", a.base), &jwt, &body).await;
        let (id, token) = (
            created["api_key"]["id"].as_str().unwrap().to_owned(),
            created["api_key"]["token"].as_str().unwrap().to_owned(),
        );
        for base in [&a.base, &b.base, &a.base, &b.base] {
            assert!(verify(&http, base, &jwt, &token).await);
        }
        let at = Instant::now();
        assert!(verify(&http, &b.base, &jwt, &token).await);
        round_trips.push(at.elapsed());
        let res = http
            .post(format!("{}/admin/api-keys/{id}/revoke", a.base))
            .bearer_auth(&jwt)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let answered = Instant::now();
        while verify(&http, &b.base, &jwt, &token).await {
            assert!(answered.elapsed() < Duration::from_secs(10), "node B never refused");
        }
        delays.push(answered.elapsed());
        for _ in 0..20 {
            if verify(&http, &b.base, &jwt, &token).await {
                violations += 1;
            }
        }
    }
    delays.sort();
    round_trips.sort();
    println!(
        "[{backend}] {rounds} revocations, A's 200 -> B refuses: p50 {}  p90 {}  p99 {}  max {}; \
         acceptances after B's first refusal: {violations}",
        pct(&delays, 0.5),
        pct(&delays, 0.9),
        pct(&delays, 0.99),
        pct(&delays, 1.0)
    );
    println!(
        "[{backend}] baseline, one verification round trip on B: p50 {}  p99 {}",
        pct(&round_trips, 0.5),
        pct(&round_trips, 0.99)
    );
}

fn main() {
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let rounds = std::env::var("KEYWARD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = keyward_testkit::bench_runtime();
    for backend in ["sqlite", "postgres"] {
        if only.as_deref().is_some_and(|o| o != backend) {
            continue;
        }
        rt.block_on(async {
            let db = match backend {
                "sqlite" => TestDb::sqlite(),
                _ => TestDb::postgres().await,
            };
            run(backend, db, rounds).await;
        });
    }
}
