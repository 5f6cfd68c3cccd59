//! `keyward keys` with a key's policy, as a user runs it: permissions (a restricted `rk_` key),
//! allowed addresses and metadata on create and update, `keys verify --from`, and bad input
//! refused with nothing written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::process::Output;

use keyward_testkit::TestDb;

use crate::run::{args, json, keyward};
use serde_json::json;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_restricted_limited_key_with_metadata_from_the_cli() {
    let db = TestDb::sqlite();
    let (code, created) = json(
        &db.url,
        &args(
            r#"keys create --title verifier --type secret --permission keys:verify --permission api_keys:read --allow-ip 192.0.2.0/24 --metadata {"team":"web"}"#,
        ),
    );
    assert_eq!(code, 0, "{created}");
    let key = &created["api_key"];
    let token = key["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("rk_"), "{token}");
    assert_eq!(key["permissions"], json!(["api_keys:read", "keys:verify"]));
    assert_eq!(key["allowed_ips"], json!(["192.0.2.0/24"]));
    assert_eq!(key["metadata"], json!({"team": "web"}));
    let id = key["id"].as_str().unwrap();
    let shown = stdout(&keyward(&db.url, &["keys", "get", id]));
    for line in [
        "permissions:  api_keys:read, keys:verify\n",
        "allowed_ips:  192.0.2.0/24\n",
        "metadata:     {\"team\":\"web\"}\n",
    ] {
        assert!(shown.contains(line), "{line:?} in {shown}");
    }
    // Verified from inside the block, from outside it, and with no address at all.
    let out = keyward(&db.url, &["keys", "verify", &token, "--from", "192.0.2.9"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = keyward(&db.url, &["keys", "verify", &token, "--from", "198.51.100.1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("invalid (FORBIDDEN_ORIGIN)"), "{out:?}");
    assert_eq!(keyward(&db.url, &["keys", "verify", &token]).status.code(), Some(1));
    // Updated: the limit lifted, the metadata replaced, the permissions narrowed.
    let (code, updated) = json(
        &db.url,
        &[
            "keys",
            "update",
            id,
            "--any-ip",
            "--metadata",
            r#"{"team":"ops"}"#,
            "--permission",
            "keys:verify",
        ],
    );
    assert_eq!(code, 0, "{updated}");
    assert_eq!(updated["api_key"].get("allowed_ips"), None);
    assert_eq!(updated["api_key"]["metadata"], json!({"team": "ops"}));
    assert_eq!(updated["api_key"]["permissions"], json!(["keys:verify"]));
    assert_eq!(keyward(&db.url, &["keys", "verify", &token]).status.code(), Some(0));
    let (_, listed) = json(&db.url, &["keys", "list", "--metadata", "team=ops"]);
    assert_eq!(listed["count"], 1, "{listed}");
    let (_, listed) = json(&db.url, &["keys", "list", "--metadata", "team=web"]);
    assert_eq!(listed["count"], 0, "{listed}");
    let (code, cleared) = json(&db.url, &["keys", "update", id, "--no-metadata"]);
    assert_eq!((code, cleared["api_key"].get("metadata")), (0, None), "{cleared}");
}

#[test]
fn bad_policy_flags_are_refused_and_nothing_is_written() {
    let db = TestDb::sqlite();
    let count = || json(&db.url, &["keys", "list"]).1["count"].as_u64().unwrap();
    let before = count();
    let create = |flag: &str, value: &str| {
        keyward(
            &db.url,
            &["keys", "create", "--title", "x", "--type", "secret", flag, value],
        )
    };
    for (flag, value, words) in [
        ("--permission", "api_keys:admin", "Unknown permission 'api_keys:admin'"),
        ("--allow-ip", "10.0.0.0/40", "is not an address or CIDR block"),
        ("--metadata", "[1,2]", "metadata must be a JSON object"),
    ] {
        let out = create(flag, value);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(words), "{flag}: {out:?}");
    }
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(5000));
    let out = create("--metadata", &big);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most 4096 bytes"),
        "{out:?}"
    );
    let out = keyward(
        &db.url,
        &args("keys create --title x --type publishable --permission keys:verify"),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Only secret keys carry permissions"),
        "{out:?}"
    );
    assert_eq!(count(), before, "nothing written");
}

#[test]
fn custom_permissions_are_checked_by_keys_verify() {
    let db = TestDb::sqlite();
    let (code, created) = json(
        &db.url,
        &args("keys create --title orders --type secret --permission orders:read --permission refunds:write"),
    );
    assert_eq!(code, 0, "{created}");
    let token = created["api_key"]["token"].as_str().unwrap().to_owned();
    let verify = |query: &str| keyward(&db.url, &["keys", "verify", &token, "--permissions", query]);
    let out = verify("orders:read AND (orders:write OR refunds:write)");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = verify("orders:write");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("invalid (INSUFFICIENT_PERMISSIONS): the key holds orders:read, refunds:write"),
        "{out:?}"
    );
    let out = verify("orders:read AND");
    assert_eq!(out.status.code(), Some(2), "a bad query is a usage error: {out:?}");
    let out = keyward(
        &db.url,
        &args("keys create --title bad --type secret --permission Orders:read"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown permission 'Orders:read'"),
        "{out:?}"
    );
}
