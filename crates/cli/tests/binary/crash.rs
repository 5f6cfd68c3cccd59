//! Crashes at every step boundary of the roll, link and delete workflows, in the real binary, on
//! SQLite and on Postgres; then a restart, and the outcome must be all or nothing with no run
//! left unfinished. The crash points exist because this test build enables the
//! `fault-injection` feature of keyward-flow (a dev-dependency feature: the shipped binary has
//! none of it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

/// The lease a crashed process held; the next process takes its runs over after it.
const LEASE: &str = "0.3";

/// `keyward --json ARGS` on `db` with the short lease, crashing at `fault` when given.
fn command<S: AsRef<std::ffi::OsStr>>(db: &str, fault: Option<&str>, args: &[S]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    cmd.arg("--json")
        .args(args)
        .env("KEYWARD_DATABASE_URL", db)
        .env("KEYWARD_WORKFLOW_LEASE", LEASE)
        .env_remove("KEYWARD_FAULT");
    if let Some(f) = fault {
        cmd.env("KEYWARD_FAULT", f);
    }
    cmd
}

fn keyward(db: &str, fault: Option<&str>, args: &[&str]) -> Output {
    command(db, fault, args).output().expect("run keyward")
}

fn ok(db: &str, args: &[&str]) -> Value {
    let out = keyward(db, None, args);
    assert!(
        out.status.success(),
        "keyward {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `args` with a crash planned at `fault`, checks the process really died there, waits
/// out its lease, and lets the next process recover.
fn crash_then_restart(db: &str, fault: &str, args: &[&str]) {
    let out = keyward(db, Some(fault), args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code().is_none() && err.contains("KEYWARD_FAULT: crashing"),
        "{fault}: expected a crash, got {:?}: {err}",
        out.status
    );
    recover_and_check(db, fault, &["running", "compensating"]);
}

/// Waits out the dead process's lease, lets the next command recover its runs, and checks no
/// run is left in any of `states`.
fn recover_and_check(db: &str, fault: &str, states: &[&str]) {
    std::thread::sleep(Duration::from_millis(450));
    // Any command first finishes what the dead process left.
    ok(db, &["keys", "list", "--limit", "1"]);
    let unfinished: Vec<Value> = states
        .iter()
        .flat_map(|s| {
            ok(db, &["workflows", "list", "--state", s])["runs"]
                .as_array()
                .cloned()
                .unwrap()
        })
        .collect();
    assert!(
        unfinished.is_empty(),
        "{fault}: runs left in {states:?}: {unfinished:?}"
    );
}

fn boundaries(workflow: &str, steps: &[&str]) -> Vec<String> {
    steps
        .iter()
        .flat_map(|s| ["before", "after"].map(|w| format!("crash:{workflow}:{s}:{w}")))
        .collect()
}

fn channel(db: &str, name: &str) -> String {
    ok(db, &["sales-channels", "create", "--name", name])["sales_channel"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn publishable(db: &str, title: &str, channel: &str) -> String {
    let id = ok(db, &["keys", "create", "--title", title, "--type", "publishable"])["api_key"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(db, &["keys", "link", &id, "--add", channel]);
    id
}

fn channels_of(db: &str, key: &str) -> Vec<String> {
    ok(db, &["keys", "get", key])["api_key"]["sales_channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn keys_titled(db: &str, title: &str) -> Vec<Value> {
    keyward_testkit::titled(
        &ok(db, &["keys", "list", "--q", title, "--limit", "100"])["api_keys"],
        title,
    )
}

fn roll_at_every_boundary(db: &str) {
    let steps = [
        "prepare-roll",
        "create-api-keys",
        "link-sales-channels-to-api-key",
        "revoke-api-keys",
    ];
    let ch = channel(db, "roll shop");
    for (i, fault) in boundaries("roll-api-key", &steps).iter().enumerate() {
        let title = format!("roll-{i}");
        let old = publishable(db, &title, &ch);
        crash_then_restart(db, fault, &["keys", "roll", &old, "--grace", "3600", "--by", "ops"]);
        let keys = keys_titled(db, &title);
        let old_now = keys.iter().find(|k| k["id"] == old.as_str()).unwrap();
        match keys.len() {
            // Done: a new key with the old one's type and channels; the old one revoked.
            2 => {
                let new = keys.iter().find(|k| k["id"] != old.as_str()).unwrap();
                assert_eq!(new["type"], "publishable", "{fault}");
                assert!(new["revoked_at"].is_null(), "{fault}");
                assert_eq!(
                    channels_of(db, new["id"].as_str().unwrap()),
                    std::slice::from_ref(&ch),
                    "{fault}"
                );
                assert_eq!(old_now["revoked_by"], "ops", "{fault}");
                assert!(old_now["revoked_at"].is_string(), "{fault}");
            }
            // Nothing: the old key untouched, no new key.
            1 => {
                assert!(old_now["revoked_at"].is_null(), "{fault}: {old_now}");
                assert_eq!(channels_of(db, &old), std::slice::from_ref(&ch), "{fault}");
            }
            n => panic!("{fault}: {n} keys titled {title}: {keys:?}"),
        }
    }
}

fn link_at_every_boundary(db: &str) {
    let steps = ["validate-sales-channels-exist", "link-sales-channels-to-api-key"];
    let (a, b) = (channel(db, "link a"), channel(db, "link b"));
    for (i, fault) in boundaries("link-sales-channels-to-api-key", &steps).iter().enumerate() {
        let key = publishable(db, &format!("link-{i}"), &a);
        crash_then_restart(db, fault, &["keys", "link", &key, "--add", &b, "--remove", &a]);
        let now = channels_of(db, &key);
        assert!(
            now == [b.clone()] || now == [a.clone()],
            "{fault}: half a change: {now:?}"
        );
    }
}

fn delete_at_every_boundary(db: &str) {
    let steps = ["prepare-delete", "remove-sales-channel-links", "delete-api-keys"];
    let ch = channel(db, "delete shop");
    for (i, fault) in boundaries("delete-api-keys", &steps).iter().enumerate() {
        let key = publishable(db, &format!("delete-{i}"), &ch);
        ok(db, &["keys", "revoke", &key]);
        crash_then_restart(db, fault, &["keys", "delete", &key]);
        let out = keyward(db, None, &["keys", "get", &key]);
        if out.status.success() {
            // Nothing happened: the key and its link are both still there.
            assert_eq!(channels_of(db, &key), std::slice::from_ref(&ch), "{fault}");
        } else {
            let err: Value = serde_json::from_slice(&out.stderr).unwrap();
            assert_eq!(err["type"], "not_found", "{fault}: {err}");
        }
    }
}

keyward_testkit::blocking_on_both_dbs! {
    roll_is_all_or_nothing_after_a_crash_at_any_step => roll_at_every_boundary,
    link_is_all_or_nothing_after_a_crash_at_any_step => link_at_every_boundary,
    delete_is_all_or_nothing_after_a_crash_at_any_step => delete_at_every_boundary,
    a_crashed_revoke_or_roll_never_undoes_a_concurrent_revoke => revoke_and_roll_crash_beside_a_concurrent_revoke,
}

/// A crash at `fault` in one process while another revokes the same secret key: once the
/// crashed run is recovered, the key the second process revoked must be refused — whether the
/// recovered run went forward or was compensated.
fn crash_beside_a_revoke(db: &str, fault: &str, args: &dyn Fn(&str) -> Vec<String>) {
    let created = ok(db, &["keys", "create", "--title", "raced", "--type", "secret"]);
    let (id, token) = (
        created["api_key"]["id"].as_str().unwrap().to_owned(),
        created["api_key"]["token"].as_str().unwrap().to_owned(),
    );
    let spawn = |fault: Option<&str>, args: &[String]| {
        command(db, fault, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let crashing = spawn(Some(fault), &args(&id));
    let revoking = spawn(
        None,
        &["keys".into(), "revoke".into(), id.clone(), "--by".into(), "ops".into()],
    );
    let (crashed, revoked) = (
        crashing.wait_with_output().unwrap(),
        revoking.wait_with_output().unwrap(),
    );
    // It crashes at its boundary, unless the other revoke came first and its rules refused it.
    let refused = String::from_utf8_lossy(&crashed.stderr).contains("already revoked");
    assert!(
        crashed.status.code().is_none() || (crashed.status.code() == Some(1) && refused),
        "{fault}: expected a crash or a refusal: {crashed:?}"
    );
    recover_and_check(db, fault, &["running", "compensating", "failed"]);
    let got = ok(db, &["keys", "get", &id]);
    if revoked.status.success() {
        assert!(
            got["api_key"]["revoked_at"].is_string(),
            "{fault}: the revoke that succeeded was undone: {got}"
        );
        let verdict = keyward(db, None, &["keys", "verify", &token]);
        assert_eq!(
            verdict.status.code(),
            Some(1),
            "{fault}: the revoked key still verifies"
        );
    } else {
        // Refused: the crashed run had revoked it already.
        let err = String::from_utf8_lossy(&revoked.stderr);
        assert!(err.contains("already revoked"), "{fault}: {err}");
        assert!(got["api_key"]["revoked_at"].is_string(), "{fault}: {got}");
    }
}

fn revoke_and_roll_crash_beside_a_concurrent_revoke(db: &str) {
    for fault in boundaries("revoke-api-keys", &["prepare-revocation", "revoke-api-keys"]) {
        crash_beside_a_revoke(db, &fault, &|id| {
            ["keys", "revoke", id, "--in", "3600", "--by", "other"]
                .map(str::to_owned)
                .to_vec()
        });
    }
    let roll = ["prepare-roll", "create-api-keys", "revoke-api-keys"];
    for fault in boundaries("roll-api-key", &roll) {
        crash_beside_a_revoke(db, &fault, &|id| {
            ["keys", "roll", id, "--grace", "3600", "--by", "other"]
                .map(str::to_owned)
                .to_vec()
        });
    }
}
