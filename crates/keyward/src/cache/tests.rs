//! The cache's own tests: digests, change notices and their packing, the epoch guard against a fill racing a change, the TTL, the bound and the use queue.

use super::*;

#[test]
fn digests_of_tokens_and_stored_forms_agree() {
    let secret = "sk_abc";
    let stored = crate::token::digest_hex(secret);
    assert_eq!(
        TokenDigest::of_stored(ApiKeyType::Secret, &stored),
        Some(TokenDigest::of_token(secret))
    );
    assert_eq!(
        TokenDigest::of_stored(ApiKeyType::Publishable, "pk_x"),
        Some(TokenDigest::of_token("pk_x"))
    );
    assert_eq!(TokenDigest::of_stored(ApiKeyType::Secret, "scrypt-hash-not-hex"), None);
    let d = TokenDigest::of_token("x");
    assert_eq!(TokenDigest::from_hex(&d.to_hex()), Some(d));
}

#[test]
fn a_cache_skips_its_own_notices_and_applies_others() {
    let (mine, other) = (Cache::new(10), Cache::new(10));
    assert_ne!(mine.origin(), other.origin());
    mine.set_online(true);
    let digest = TokenDigest::of_token("sk_x");
    let fill = mine.begin_fill();
    mine.fill_key(fill, digest, Some(record(ID)), ts(0));
    for notice in Change::pack(&[Change::Key(digest)], mine.origin()) {
        mine.apply_notice(&notice);
    }
    assert!(
        mine.key(&digest, ts(0)).is_some_and(|r| r.is_some()),
        "its own notice: kept"
    );
    for notice in Change::pack(&[Change::Key(digest)], other.origin()) {
        mine.apply_notice(&notice);
    }
    assert!(mine.key(&digest, ts(0)).is_none(), "another cache's notice: dropped");
}

#[test]
fn changes_survive_packing_and_unknown_text_means_everything() {
    let mut changes = vec![
        Change::Key(TokenDigest::of_token("a")),
        Change::Session("sess_1".into()),
        Change::User("user_1".into()),
        Change::All,
    ];
    for i in 0..200 {
        changes.push(Change::Key(TokenDigest::of_token(&i.to_string())));
    }
    let packed = Change::pack(&changes, 0xabc);
    assert!(packed.len() > 1 && packed.iter().all(|p| p.len() <= MAX_NOTICE));
    let back: Vec<Change> = packed
        .iter()
        .flat_map(|p| {
            let (origin, changes) = Change::unpack(p);
            assert_eq!(origin, Some(0xabc));
            changes
        })
        .collect();
    assert_eq!(back, changes);
    assert_eq!(
        Change::unpack("k:nothex"),
        (None, vec![Change::All]),
        "a notice without an origin"
    );
    assert_eq!(Change::decode("zz:what"), Change::All);
    assert_eq!(Change::decode("k:nothex"), Change::All);
}

fn record(id: &str) -> Arc<KeyRecord> {
    let now = ts(0);
    Arc::new(KeyRecord::new(
        ApiKey {
            id: ApiKeyId::parse(id).unwrap(),
            token: String::new(),
            redacted: String::new(),
            title: String::new(),
            key_type: ApiKeyType::Secret,
            last_used_at: None,
            created_by: String::new(),
            revoked_by: None,
            revoked_at: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
            expires_at: None,
            policy: Default::default(),
        },
        Vec::new(),
    ))
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap()
}

const ID: &str = "apk_01JAAAAAAAAAAAAAAAAAAAAAAA";

#[test]
fn offline_cache_keeps_nothing() {
    let cache = Cache::new(10);
    let d = TokenDigest::of_token("t");
    cache.fill_key(cache.begin_fill(), d, Some(record(ID)), ts(0));
    assert!(cache.key(&d, ts(0)).is_none());
    cache.set_online(true);
    cache.fill_key(cache.begin_fill(), d, Some(record(ID)), ts(0));
    assert!(matches!(cache.key(&d, ts(0)), Some(Some(_))));
    cache.set_online(false);
    cache.set_online(true);
    assert!(cache.key(&d, ts(0)).is_none(), "reconnecting empties the cache");
}

#[test]
fn a_change_during_a_fill_keeps_the_fill_out() {
    let cache = Cache::new(10);
    cache.set_online(true);
    let d = TokenDigest::of_token("t");
    let fill = cache.begin_fill();
    cache.apply(&[Change::Key(d)]);
    cache.fill_key(fill, d, Some(record(ID)), ts(0));
    assert!(cache.key(&d, ts(0)).is_none());
    cache.fill_key(cache.begin_fill(), d, None, ts(0));
    assert!(matches!(cache.key(&d, ts(0)), Some(None)));
    cache.apply(&[Change::Key(d)]);
    assert!(cache.key(&d, ts(0)).is_none());
}

#[test]
fn entries_expire_by_the_verifiers_clock() {
    let cache = Cache::new(10);
    cache.set_online(true);
    let (known, unknown) = (TokenDigest::of_token("k"), TokenDigest::of_token("u"));
    let born = ts(1_000_000);
    cache.fill_key(cache.begin_fill(), known, Some(record(ID)), born);
    cache.fill_key(cache.begin_fill(), unknown, None, born);
    let later = |ms: i64| ts(1_000_000 + ms);
    assert!(matches!(cache.key(&unknown, later(1_999)), Some(None)));
    assert!(
        cache.key(&unknown, later(2_000)).is_none(),
        "a negative entry lives 2 s"
    );
    assert!(matches!(cache.key(&known, later(29_999)), Some(Some(_))));
    assert!(
        cache.key(&known, ts(999_999)).is_none(),
        "a clock that moved back trusts nothing"
    );
    assert!(cache.key(&known, later(30_000)).is_none(), "a key entry lives 30 s");
}

#[test]
fn the_cache_is_bounded() {
    let cache = Cache::new(100);
    cache.set_online(true);
    for i in 0..1_000 {
        cache.fill_key(cache.begin_fill(), TokenDigest::of_token(&i.to_string()), None, ts(0));
    }
    assert!(cache.stats().keys <= 100, "{:?}", cache.stats());
}

#[test]
fn a_use_is_queued_once_and_the_latest_instant_wins() {
    let cache = Cache::new(10);
    let r = record(ID);
    cache.record_use(&r, ts(5));
    cache.record_use(&r, ts(9));
    cache.record_use(&r, ts(7));
    let taken = cache.take_usage();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].1, ts(9));
    assert!(cache.take_usage().is_empty());
    cache.requeue_usage(taken);
    assert_eq!(cache.take_usage().len(), 1);
}
