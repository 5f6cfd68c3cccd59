//! The checks and the rules of a difference.

use super::plan::{key_differences, merged_key};
use super::source::checked_key;
use super::*;
use crate::store::StoredKey;
use crate::time::Timestamp;
use crate::token;

fn at(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

fn secret_row(id: &str) -> MedusaKey {
    MedusaKey {
        id: id.to_owned(),
        token: "ab".repeat(64),
        salt: "cd".repeat(16),
        redacted: "sk_0e7***fba".to_owned(),
        title: "ci".to_owned(),
        key_type: "secret".to_owned(),
        last_used_at: None,
        created_by: "user_1".to_owned(),
        created_at: at(1_000),
        revoked_by: None,
        revoked_at: None,
        updated_at: at(1_000),
    }
}

fn refusal(row: MedusaKey) -> String {
    let snapshot = MedusaSnapshot {
        keys: vec![secret_row("apk_GOOD"), row],
        ..MedusaSnapshot::default()
    };
    ImportSet::from_medusa(snapshot).unwrap_err().message
}

#[test]
fn a_bad_row_refuses_the_snapshot_by_name() {
    let mut r = secret_row("apk_BAD");
    r.key_type = "restricted".to_owned();
    assert_eq!(
        refusal(r),
        "api_key row \"apk_BAD\": type \"restricted\" is neither 'publishable' nor 'secret'; nothing was imported"
    );
    let mut r = secret_row("apk_BAD");
    r.salt = "xyz".to_owned();
    assert!(refusal(r).starts_with("api_key row \"apk_BAD\": salt \"xyz\" is not 32 lower-case"));
    let mut r = secret_row("apk_BAD");
    r.token = "sk_plaintext".to_owned();
    let m = refusal(r);
    assert!(m.contains("does not hold a Medusa scrypt hash"), "{m}");
    assert!(!m.contains("sk_plaintext"), "the column's content is not echoed: {m}");
    let mut r = secret_row("apk_BAD");
    r.redacted = "sk_0e7fba".to_owned();
    assert!(refusal(r).contains("redacted \"sk_0e7fba\" is not of the form sk_abc***xyz"));
    let mut r = secret_row("apk_BAD");
    r.key_type = "publishable".to_owned();
    assert!(refusal(r).contains("is not of the form pk_abc***xyz"));
}

#[test]
fn a_publishable_row_needs_its_token_and_no_salt() {
    let token = "pk_ae4bbd495a26f8e6ae492c3470cc47879010b6d8e83b8a40fdd640c175589b59";
    let row = MedusaKey {
        token: token.to_owned(),
        salt: String::new(),
        redacted: token::redact(token),
        key_type: "publishable".to_owned(),
        ..secret_row("apk_PK")
    };
    let set = ImportSet::from_medusa(MedusaSnapshot {
        keys: vec![row.clone()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(set.keys[0].key.token, token, "a publishable key is public");
    assert!(
        refusal(MedusaKey {
            salt: "cd".repeat(16),
            ..row.clone()
        })
        .contains("a publishable key has a salt")
    );
    assert!(
        refusal(MedusaKey {
            token: "pk_nothex".to_owned(),
            ..row
        })
        .contains("not a pk_ token")
    );
}

#[test]
fn dangling_links_are_skipped_with_their_reason() {
    let snapshot = MedusaSnapshot {
        keys: vec![secret_row("apk_SK")],
        channels: vec![MedusaChannel {
            id: "sc_1".to_owned(),
            name: "web".to_owned(),
            description: None,
            is_disabled: false,
            metadata: None,
            created_at: at(1),
            updated_at: at(1),
        }],
        links: vec![
            MedusaLink {
                publishable_key_id: "apk_SK".to_owned(),
                sales_channel_id: "sc_1".to_owned(),
            },
            MedusaLink {
                publishable_key_id: "apk_GONE".to_owned(),
                sales_channel_id: "sc_1".to_owned(),
            },
        ],
        ..Default::default()
    };
    let set = ImportSet::from_medusa(snapshot).unwrap();
    assert!(set.links.is_empty());
    let reasons: Vec<&str> = set.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["its key is a secret key", "its key is not a live row of the source"]
    );
}

fn stored(row: MedusaKey) -> StoredKey {
    checked_key(row).unwrap()
}

#[test]
fn keywards_own_later_work_is_no_difference() {
    let source = stored(secret_row("apk_1"));
    let mut current = source.clone();
    current.stored_token = "ef".repeat(32);
    current.salt.clear();
    current.key.last_used_at = Some(at(5_000));
    current.key.revoked_at = Some(at(4_000));
    current.key.revoked_by = Some("user_2".to_owned());
    current.key.updated_at = at(4_000);
    let merged = merged_key(&current, &source);
    assert!(key_differences(&current, &merged).is_empty());
}

#[test]
fn a_revocation_is_never_lifted_or_postponed() {
    let mut source = stored(secret_row("apk_1"));
    source.key.revoked_at = Some(at(9_000));
    source.key.revoked_by = Some("medusa".to_owned());
    let mut current = source.clone();
    current.key.revoked_at = Some(at(3_000));
    current.key.revoked_by = Some("keyward".to_owned());
    assert_eq!(merged_key(&current, &source).key.revoked_at, Some(at(3_000)));
    // The source's earlier revocation is a difference, and wins.
    current.key.revoked_at = Some(at(20_000));
    let merged = merged_key(&current, &source);
    assert_eq!(merged.key.revoked_at, Some(at(9_000)));
    assert_eq!(merged.key.revoked_by.as_deref(), Some("medusa"));
    assert_eq!(key_differences(&current, &merged), ["revoked_at", "revoked_by"]);
    // A source without a revocation never lifts keyward's.
    source.key.revoked_at = None;
    assert_eq!(merged_key(&current, &source).key.revoked_at, Some(at(20_000)));
}
