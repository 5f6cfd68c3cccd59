//! Moving a Medusa store as an operator does: `keyward keys import --from-medusa` (the real
//! binary) into SQLite and into Postgres, then `keyward serve` on a real socket, where every
//! imported token is answered with the status Medusa gave it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::process::{Command, Output};

use keyward::ApiKeyType;
use keyward_testkit::medusa::MedusaDb;
use keyward_testkit::{TestDb, serve_node};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keyward");

fn keyward(db: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("KEYWARD_DATABASE_URL", db)
        .output()
        .expect("run keyward")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn key_count(db: &str) -> u64 {
    json_of(&keyward(db, &["--json", "keys", "list"]))["count"]
        .as_u64()
        .unwrap()
}

async fn move_a_store(db: TestDb) {
    let m = MedusaDb::create(keyward::ClockExt::now(&keyward::SystemClock)).await;
    let url = db.url.clone();

    let dry = json_of(&keyward(
        &url,
        &["--json", "keys", "import", "--from-medusa", m.url(), "--dry-run"],
    ));
    assert_eq!(dry["import"]["dry_run"], true);
    assert_eq!(dry["import"]["api_keys"]["imported"], 10);
    assert_eq!(
        key_count(&url),
        1,
        "a dry run writes nothing: only keyward's own seeded key"
    );

    let done = json_of(&keyward(&url, &["--json", "keys", "import", "--from-medusa", m.url()]));
    let report = &done["import"];
    assert_eq!(report["dry_run"], false);
    for (kind, imported, skipped) in [("api_keys", 10, 2), ("sales_channels", 4, 1), ("links", 5, 2)] {
        assert_eq!(report[kind]["imported"], imported, "{kind}: {report}");
        assert_eq!(report[kind]["skipped"], skipped, "{kind}: {report}");
        assert_eq!(report[kind]["conflicts"], 0, "{kind}");
    }
    assert_eq!(report["legacy_secret_keys"], 5);
    let listed = json_of(&keyward(&url, &["--json", "keys", "list", "--limit", "100"]));
    assert_eq!(listed["count"], 11);
    assert_eq!(
        listed["legacy_secret_keys"], 5,
        "keys list counts the keys not yet upgraded"
    );

    keyward_testkit::create_admin(BIN, &url);
    let node = serve_node(BIN, &url);
    let http = reqwest::Client::new();
    for k in &m.keys {
        let (status, wanted) = match k.kind {
            ApiKeyType::Secret => {
                let r = http
                    .get(format!("{}/admin/api-keys", node.base))
                    .basic_auth(&k.token, Some(""))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), if k.works() { 200 } else { 401 })
            }
            ApiKeyType::Publishable => {
                let r = http
                    .get(format!("{}/store/regions", node.base))
                    .header("x-publishable-api-key", &k.token)
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), if k.works() { 200 } else { 400 })
            }
        };
        assert_eq!(
            status, wanted,
            "{} ({:?}, {:?}) on {}",
            k.id, k.kind, k.state, db.backend
        );
        if k.kind == ApiKeyType::Publishable && k.works() {
            let url = format!("{}/store/sales-channels", node.base);
            let body = keyward_testkit::get_json(&http, &url, ("x-publishable-api-key", &k.token)).await;
            let mut ids: Vec<&str> = body["sales_channels"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap())
                .collect();
            ids.sort_unstable();
            let mut expected = k.channels.clone();
            expected.sort_unstable();
            assert_eq!(ids, expected, "{}'s channels", k.id);
        }
    }
    drop(node);

    // Every secret key that worked has been used once: none is left to upgrade but the refused.
    let listed = json_of(&keyward(&url, &["--json", "keys", "list"]));
    assert_eq!(
        listed["legacy_secret_keys"], 0,
        "revoked keys are upgraded too when presented"
    );
    let again = json_of(&keyward(&url, &["--json", "keys", "import", "--from-medusa", m.url()]));
    for kind in ["api_keys", "sales_channels", "links"] {
        assert_eq!(again["import"][kind]["imported"], 0, "{kind}");
        assert_eq!(again["import"][kind]["conflicts"], 0, "{kind}: {again}");
    }
    assert_eq!(again["import"]["api_keys"]["unchanged"], 10);
    assert_eq!(key_count(&url), 11, "a second import duplicates nothing");

    // A source that is not Medusa's: a clear refusal, exit 1, nothing written.
    let other = MedusaDb::empty().await;
    let refused = keyward(&url, &["keys", "import", "--from-medusa", &other.url]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("is not a Medusa v2 database: it has no table \"api_key\""),
        "{stderr}"
    );
    let bad_url = keyward(&url, &["keys", "import", "--from-medusa", "mysql://x"]);
    assert_eq!(bad_url.status.code(), Some(2), "a usage error");
    assert!(
        String::from_utf8_lossy(&bad_url.stderr).contains("--from-medusa takes the Medusa database's PostgreSQL URL")
    );
    assert_eq!(key_count(&url), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_medusa_store_moves_to_sqlite_and_every_key_answers_as_medusa_did() {
    move_a_store(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_medusa_store_moves_to_postgres_and_every_key_answers_as_medusa_did() {
    let db = TestDb::postgres().await;
    move_a_store(db).await;
}
