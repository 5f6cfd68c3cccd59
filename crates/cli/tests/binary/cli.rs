//! The `keyward` binary as a user runs it: real process, real SQLite file (and Postgres).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::process::{Command, Output};

use keyward_testkit::TestDb;

use crate::run::{args, json, keyward};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn key_count(db: &str) -> u64 {
    json(db, &["keys", "list"]).1["count"].as_u64().unwrap()
}

fn walkthrough(db: &str) {
    let (code, created) = json(db, &["keys", "create", "--title", "CI deploy", "--type", "secret"]);
    assert_eq!(code, 0);
    let token = created["api_key"]["token"].as_str().unwrap().to_owned();
    let id = created["api_key"]["id"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sk_"));
    let (code, v) = json(db, &["keys", "verify", &token]);
    assert_eq!(
        (code, v["valid"].as_bool(), v["code"].as_str()),
        (0, Some(true), Some("VALID"))
    );
    let (code, revoked) = json(db, &["keys", "revoke", &id, "--by", "ops"]);
    assert_eq!(code, 0);
    assert_eq!(revoked["api_key"]["revoked_by"], "ops");
    assert_eq!(revoked["api_key"]["token"], "", "a secret token is never shown again");
    let (code, v) = json(db, &["keys", "verify", &token]);
    assert_eq!(
        (code, v["valid"].as_bool(), v["code"].as_str()),
        (1, Some(false), Some("REVOKED"))
    );
    let (code, _) = json(db, &["keys", "delete", &id]);
    assert_eq!(code, 0);
    let (code, _) = json(db, &["keys", "get", &id]);
    assert_eq!(code, 1);
}

keyward_testkit::blocking_on_both_dbs! {
    create_verify_revoke_verify => walkthrough,
    idempotency_keys_make_create_and_roll_run_once => idempotent_create_and_roll,
}

#[test]
fn human_output_is_a_table_and_the_secret_is_shown_once_with_a_warning() {
    let db = TestDb::sqlite();
    let out = keyward(&db.url, &["keys", "create", "--title", "Deploys", "--type", "secret"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("token:        "))
        .unwrap()
        .to_owned();
    assert!(token.starts_with("sk_"));
    assert!(text.contains("only time the secret token is shown"));
    let out = keyward(&db.url, &["keys", "list"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let header = text.lines().next().unwrap();
    assert!(header.starts_with("ID") && header.contains("REDACTED") && header.contains("STATUS"));
    assert!(text.contains("Default Publishable API Key"));
    assert!(text.contains("2 of 2 keys"));
    assert!(
        text.contains(&keyward::token::redact(&token)),
        "the list shows the redacted form"
    );
    assert!(!text.contains(&token), "and never the token");
}

#[test]
fn an_unknown_id_is_a_clean_refusal() {
    let db = TestDb::sqlite();
    let before = key_count(&db.url);
    for args in [
        vec!["keys", "get", "apk_nope"],
        vec!["keys", "revoke", "apk_nope"],
        vec!["keys", "update", "apk_nope", "--title", "x"],
        vec!["keys", "delete", "apk_nope"],
    ] {
        let out = keyward(&db.url, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&out).trim(),
            "error: ApiKey with id: apk_nope was not found",
            "{args:?}"
        );
    }
    assert_eq!(key_count(&db.url), before);
}

#[test]
fn an_invalid_type_is_a_usage_error() {
    let db = TestDb::sqlite();
    let out = keyward(&db.url, &["keys", "create", "--title", "x", "--type", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid value 'bogus' for '--type <KEY_TYPE>'"));
    assert!(stderr(&out).contains("[possible values: publishable, secret]"));
}

#[test]
fn an_empty_title_is_refused_and_nothing_is_written() {
    let db = TestDb::sqlite();
    let before = key_count(&db.url);
    for title in ["", "   "] {
        let out = keyward(&db.url, &["keys", "create", "--title", title, "--type", "publishable"]);
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(stderr(&out).trim(), "error: --title must not be empty");
    }
    assert_eq!(key_count(&db.url), before);
}

#[test]
fn a_key_created_with_an_expiry_shows_it_and_a_bad_expiry_writes_nothing() {
    let db = TestDb::sqlite();
    let (code, created) = json(
        &db.url,
        &args("keys create --title hour --type secret --expires-in 3600"),
    );
    assert_eq!(code, 0, "{created}");
    let at = created["api_key"]["expires_at"].as_str().unwrap().to_owned();
    let out = keyward(&db.url, &["keys", "list"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("expires {at}")),
        "{out:?}"
    );
    let id = created["api_key"]["id"].as_str().unwrap();
    let out = keyward(&db.url, &["keys", "get", id]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("expires_at:   {at}\n")),
        "{out:?}"
    );
    let (code, moved) = json(&db.url, &["keys", "update", id, "--expires-at", "2999-01-01T00:00:00Z"]);
    assert_eq!(
        (code, moved["api_key"]["expires_at"].as_str()),
        (0, Some("2999-01-01T00:00:00.000Z")),
        "{moved}"
    );
    let (code, cleared) = json(&db.url, &["keys", "update", id, "--no-expiry"]);
    assert_eq!((code, cleared["api_key"].get("expires_at")), (0, None), "{cleared}");
    let out = keyward(&db.url, &["keys", "update", id]);
    assert_eq!(out.status.code(), Some(2), "an update changes something");
    let before = key_count(&db.url);
    let create_with = |flag: &str, value: &str| {
        keyward(
            &db.url,
            &["keys", "create", "--title", "x", "--type", "secret", flag, value],
        )
    };
    let out = create_with("--expires-in", "0");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: expires_in must be between 1 and 3153600000 seconds, but got: 0"
    );
    let out = create_with("--expires-at", "2001-01-01T00:00:00Z");
    assert_eq!(
        stderr(&out).trim(),
        "error: expires_at must be in the future, but got: 2001-01-01T00:00:00.000Z"
    );
    let out = create_with("--expires-at", "soon");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not an ISO 8601 date: 'soon'"),
        "{}",
        stderr(&out)
    );
    assert_eq!(key_count(&db.url), before, "nothing written");
}

#[test]
fn an_unreachable_postgres_is_named_and_nothing_is_written() {
    let out = keyward(
        "postgres://postgres@127.0.0.1:1/keyward",
        &["keys", "create", "--title", "x", "--type", "secret"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot connect to Postgres at 'postgres://postgres@127.0.0.1:1/keyward'"),
        "{err}"
    );
    assert!(err.contains("Connection refused"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_password_in_the_url_is_not_echoed() {
    let out = keyward("postgres://postgres:hunter22@127.0.0.1:1/keyward", &["keys", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains("hunter22"), "{}", stderr(&out));
    assert!(stderr(&out).contains("postgres:***@127.0.0.1:1"));
}

#[test]
fn an_unopenable_sqlite_path_is_named_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/keyward.db");
    let url = format!("sqlite://{}", missing.display());
    let out = keyward(&url, &["keys", "list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("error: cannot open the SQLite database"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists());
}

#[test]
fn an_unsupported_database_url_is_a_usage_error() {
    let out = keyward("mysql://root@localhost/db", &["keys", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out).trim(),
        "error: unsupported database URL 'mysql://root@localhost/db': use sqlite://PATH or postgres://USER@HOST/DB"
    );
}

#[test]
fn errors_are_json_with_json() {
    let db = TestDb::sqlite();
    let (code, err) = json(&db.url, &["keys", "get", "apk_nope"]);
    assert_eq!(code, 1);
    assert_eq!(err["type"], "not_found");
    assert_eq!(err["message"], "ApiKey with id: apk_nope was not found");
}

#[test]
fn deleting_an_unrevoked_key_is_refused_with_the_modules_message() {
    let db = TestDb::sqlite();
    let (_, created) = json(&db.url, &["keys", "create", "--title", "p", "--type", "publishable"]);
    let id = created["api_key"]["id"].as_str().unwrap();
    let out = keyward(&db.url, &["keys", "delete", id]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        format!("error: Cannot delete api keys that are not revoked - {id}")
    );
    assert_eq!(json(&db.url, &["keys", "get", id]).0, 0);
}

#[test]
fn keys_can_be_listed_by_type_search_and_revocation() {
    let db = TestDb::sqlite();
    json(
        &db.url,
        &["keys", "create", "--title", "Sample one", "--type", "secret"],
    );
    let (_, p) = json(
        &db.url,
        &["keys", "create", "--title", "other", "--type", "publishable"],
    );
    json(
        &db.url,
        &["keys", "revoke", p["api_key"]["id"].as_str().unwrap(), "--in", "3600"],
    );
    let count = |args: &[&str]| {
        let mut all = vec!["keys", "list"];
        all.extend_from_slice(args);
        json(&db.url, &all).1["count"].as_u64().unwrap()
    };
    assert_eq!(count(&["--type", "secret"]), 1);
    assert_eq!(count(&["--q", "SAMPLE"]), 1);
    assert_eq!(count(&["--revoked"]), 1);
    assert_eq!(count(&[]), 3);
    let (_, page) = json(&db.url, &["keys", "list", "--limit", "1", "--offset", "1"]);
    assert_eq!(
        (page["api_keys"].as_array().unwrap().len(), page["count"].as_u64()),
        (1, Some(3))
    );
}

const CREATE_ADMIN: [&str; 6] = [
    "user",
    "create",
    "--email",
    "admin@test.local",
    "--password",
    "supersecret",
];

#[test]
fn users_and_sales_channels_can_be_created_from_the_cli() {
    let db = TestDb::sqlite();
    let (code, user) = json(&db.url, &CREATE_ADMIN);
    assert_eq!(code, 0);
    assert_eq!(user["user"]["email"], "admin@test.local");
    let (code, err) = json(&db.url, &CREATE_ADMIN);
    assert_eq!((code, err["type"].as_str()), (1, Some("duplicate_error")));
    let (code, _) = json(
        &db.url,
        &["sales-channels", "create", "--name", "Web", "--description", "shop"],
    );
    assert_eq!(code, 0);
    let (_, list) = json(&db.url, &["sales-channels", "list"]);
    assert_eq!(list["count"], 2, "Web and the seeded default channel");
}

#[test]
fn verify_explains_garbage_and_unknown_tokens() {
    let db = TestDb::sqlite();
    let out = keyward(&db.url, &["keys", "verify", "hello"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("invalid (MALFORMED)"));
    let unknown = keyward::token::from_random_bytes(keyward::ApiKeyType::Secret, &[1; 32]);
    let out = keyward(&db.url, &["keys", "verify", unknown.expose()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("invalid (NOT_FOUND)"));
}

#[test]
fn help_names_every_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["migrate", "user", "keys", "sales-channels"] {
        assert!(text.contains(cmd), "{cmd} missing from --help");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["keys", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["create", "list", "get", "update", "revoke", "delete", "verify"] {
        assert!(text.contains(cmd), "keys {cmd} missing from --help");
    }
}

#[test]
fn rolling_a_key_prints_the_new_token_and_schedules_the_old_ones_end() {
    let db = TestDb::sqlite();
    let (_, old) = json(&db.url, &["keys", "create", "--title", "deploys", "--type", "secret"]);
    let old_token = old["api_key"]["token"].as_str().unwrap().to_owned();
    let old_id = old["api_key"]["id"].as_str().unwrap().to_owned();
    let (code, rolled) = json(&db.url, &["keys", "roll", &old_id, "--grace", "3600", "--by", "ops"]);
    assert_eq!(code, 0, "{rolled}");
    let new_token = rolled["api_key"]["token"].as_str().unwrap();
    assert!(new_token.starts_with("sk_") && new_token != old_token);
    assert_eq!(rolled["api_key"]["title"], "deploys");
    assert_eq!(rolled["previous_api_key"]["revoked_by"], "ops");
    // Both work during the grace period.
    assert_eq!(json(&db.url, &["keys", "verify", new_token]).0, 0);
    assert_eq!(json(&db.url, &["keys", "verify", &old_token]).0, 0);
    let (code, err) = json(&db.url, &["keys", "roll", "apk_nope"]);
    assert_eq!((code, err["type"].as_str()), (1, Some("not_found")));
}

#[test]
fn a_bad_workflow_lease_or_link_command_is_a_usage_error_and_changes_nothing() {
    let db = TestDb::sqlite();
    let (_, key) = json(&db.url, &["keys", "create", "--title", "p", "--type", "publishable"]);
    let id = key["api_key"]["id"].as_str().unwrap().to_owned();
    for lease in ["0", "-1", "nan", "999999"] {
        let flag = format!("--workflow-lease={lease}");
        let out = keyward(&db.url, &[&flag, "keys", "list"]);
        assert_eq!(out.status.code(), Some(2), "{lease}");
        assert!(stderr(&out).contains("--workflow-lease"), "{}", stderr(&out));
    }
    let out = keyward(&db.url, &["keys", "link", &id]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).trim(), "error: give at least one --add or --remove");
    let out = keyward(&db.url, &["keys", "link", &id, "--add", "sc_missing"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: Sales channels with IDs sc_missing do not exist"
    );
    let (_, shown) = json(&db.url, &["keys", "get", &id]);
    assert_eq!(shown["api_key"]["sales_channels"], serde_json::json!([]));
    let (code, runs) = json(&db.url, &["workflows", "list", "--state", "reverted"]);
    assert_eq!(code, 0);
    assert_eq!(runs["runs"][0]["workflow"], "link-sales-channels-to-api-key");
    assert_eq!(
        runs["runs"][0]["errors"][0]["error"],
        "Sales channels with IDs sc_missing do not exist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_list_shows_each_run_of_a_scheduled_job() {
    let db = TestDb::sqlite();
    let clock = keyward_flow::ManualClock::new(1_700_000_000_000);
    let (_, log) = db.open_on(&clock).await;
    log.migrate().await.unwrap();
    let engine = keyward_flow::Engine::new((), log).with_node_id("node-test");
    let every = keyward_flow::Schedule::every(std::time::Duration::from_secs(1)).unwrap();
    engine
        .schedule(keyward_flow::Job::new(
            "heartbeat",
            every,
            |_: std::sync::Arc<()>| async { Ok(()) },
        ))
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = engine.spawn_scheduler(stopped);
    // Two ticks pass on the scheduler's clock: it runs the job twice, without sleeping.
    let start = std::time::Instant::now();
    for ticks in 1..=2 {
        while clock.waiters() == 0 {
            tokio::task::yield_now().await;
        }
        clock.advance(std::time::Duration::from_secs(1));
        while engine.log().list_job_runs(Some("heartbeat"), 10).await.unwrap().len() < ticks
            || engine.log().job_running("heartbeat").await.unwrap()
        {
            assert!(start.elapsed().as_secs() < 20, "the job never ran");
            tokio::task::yield_now().await;
        }
    }
    let _ = stop.send(true);
    scheduler.await.unwrap();
    let url = db.url.clone();
    let (code, runs) = tokio::task::spawn_blocking(move || json(&url, &["jobs", "list", "--job", "heartbeat"]))
        .await
        .unwrap();
    assert_eq!(code, 0);
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs.iter()
            .all(|r| r["outcome"] == "succeeded" && r["node"] == "node-test")
    );
    let out = keyward(&db.url, &["jobs", "list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("heartbeat"));
}

fn idempotent_create_and_roll(db: &str) {
    let create = args("keys create --title once --type secret --idempotency-key ci-42");
    let (code, first) = json(db, &create);
    assert_eq!(code, 0, "{first}");
    let (code, again) = json(db, &create);
    assert_eq!(
        (code, &again),
        (0, &first),
        "a repeat prints the first answer, token included"
    );
    assert_eq!(key_count(db), 2, "the seed's key and this one");
    let other = args("keys create --title twice --type secret --idempotency-key ci-42");
    let (code, err) = json(db, &other);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err["message"], keyward::idempotency::MISMATCH);
    let id = first["api_key"]["id"].as_str().unwrap();
    let roll = ["keys", "roll", id, "--grace", "60", "--idempotency-key", "roll-7"];
    let (code, rolled) = json(db, &roll);
    assert_eq!(code, 0, "{rolled}");
    let (_, again) = json(db, &roll);
    assert_eq!(again["api_key"]["token"], rolled["api_key"]["token"]);
    assert_eq!(key_count(db), 3, "rolled once");
    let (code, _) = json(
        db,
        &[
            "keys",
            "create",
            "--title",
            "x",
            "--type",
            "secret",
            "--idempotency-key",
            "has space",
        ],
    );
    assert_eq!(code, 2, "a malformed key is a usage error");
}

#[test]
fn keys_create_count_makes_that_many_working_keys_and_refuses_bad_counts() {
    let db = TestDb::sqlite();
    let before = key_count(&db.url);
    let out = keyward(
        &db.url,
        &[
            "keys", "create", "--title", "fleet", "--type", "secret", "--count", "1203",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines.len(), 1203, "one line per key, across two batches");
    assert!(stderr(&out).contains("created 1203 keys"), "{}", stderr(&out));
    assert_eq!(key_count(&db.url), before + 1203);
    let (_, last) = lines.last().unwrap().split_once(' ').unwrap();
    let (code, v) = json(&db.url, &["keys", "verify", last]);
    assert_eq!((code, v["api_key"]["title"].as_str()), (0, Some("fleet 1203")));
    for bad in [
        &["--count", "0"][..],
        &["--count", "x"],
        &["--count", "2", "--idempotency-key", "k"],
    ] {
        let mut args = vec!["keys", "create", "--title", "t", "--type", "secret"];
        args.extend_from_slice(bad);
        let out = keyward(&db.url, &args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", stderr(&out));
    }
    assert_eq!(key_count(&db.url), before + 1203, "a refused command creates nothing");
}
