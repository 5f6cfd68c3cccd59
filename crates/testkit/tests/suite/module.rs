//! The API key module's behaviour, on SQLite and on Postgres: one body per test, run on both.
//! Every change goes through the workflows (`h.flows`), the one write path; reads go to the module.
//! Ports every case of Medusa's API Key Module service suite, plus filters, ordering, pagination,
//! sales-channel links, the first-start seed and users.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use keyward::filter::{ApiKeyField as F, Op, SalesChannelField};
use keyward::store::NewApiKey;
use keyward::token;
use keyward::{
    ApiKey, ApiKeyFilter, ApiKeyId, ApiKeyType, CreateApiKey, CreateSalesChannel, Direction, ErrorKind, Keyward,
    ListOptions, RevokeApiKey, SalesChannelFilter, SalesChannelId, ScriptedEntropy, Timestamp, UpdateApiKey,
    UpdateSalesChannel, Value, VerifyCode, Workflows,
};
use keyward::{ClockExt, ManualClockExt};
use keyward_testkit::{Harness, epoch, on_both_stores};
use std::sync::Arc;

fn publishable(title: &str) -> CreateApiKey {
    CreateApiKey::new(title, ApiKeyType::Publishable, "test")
}

fn secret(title: &str) -> CreateApiKey {
    CreateApiKey::new(title, ApiKeyType::Secret, "test")
}

fn revoke_by(who: &str) -> RevokeApiKey {
    RevokeApiKey {
        revoked_by: who.to_owned(),
        revoke_in: None,
    }
}

/// Every key except the seeded default one.
async fn own_keys(kw: &Keyward) -> Vec<ApiKey> {
    let mut f = ApiKeyFilter::new();
    f.push(F::CreatedBy, Op::Ne, vec!["".into()]).unwrap();
    kw.list_api_keys(&f, &ListOptions::default()).await.unwrap()
}

fn ids(keys: &[ApiKey]) -> Vec<String> {
    keys.iter().map(|k| k.id.to_string()).collect()
}

const MEDUSA_BYTES: [u8; 32] = [
    0x44, 0xde, 0x31, 0xeb, 0xcf, 0x08, 0x5f, 0xa4, 0x23, 0xfc, 0x58, 0x4a, 0xa8, 0x54, 0x06, 0x70, 0x25, 0xe9, 0x37,
    0xa7, 0x9e, 0xdb, 0x56, 0x5f, 0x47, 0x24, 0x04, 0x34, 0x5f, 0x0f, 0x23, 0xbe,
];

/// The module's workflows on `h`'s store and run log, whose next token carries `MEDUSA_BYTES`.
fn pinned(h: &Harness) -> Workflows {
    let kw = Keyward::with_parts(
        h.store.clone(),
        h.clock.clone(),
        Arc::new(ScriptedEntropy::new([MEDUSA_BYTES.to_vec()])),
    );
    Workflows::new(kw, h.flows.engine().log().clone(), keyward_flow::DEFAULT_LEASE).unwrap()
}

on_both_stores! {
    async fn creating_a_publishable_key_returns_its_token_and_redaction(h) {
        let created = pinned(&h).create_api_key(&keyward::Actor::System, publishable("Test API Key")).await.unwrap();
        let expected = token::from_random_bytes(ApiKeyType::Publishable, &MEDUSA_BYTES);
        assert_eq!(created.token.expose(), expected.expose());
        let k = &created.key;
        assert_eq!((k.title.as_str(), k.key_type, k.created_by.as_str()), ("Test API Key", ApiKeyType::Publishable, "test"));
        assert_eq!((k.last_used_at, k.revoked_by.clone(), k.revoked_at), (None, None, None));
        assert_eq!(k.redacted, expected.redacted());
        assert!(k.redacted.starts_with("pk_") && k.redacted.contains("***"));
        assert_eq!(k.token, expected.expose(), "a publishable key's token is public");
        assert!(k.id.as_str().starts_with("apk_"));
        assert_eq!(k.created_at, epoch());
    }

    async fn creating_a_secret_key_returns_the_raw_token_once_and_no_salt(h) {
        let created = pinned(&h).create_api_key(&keyward::Actor::System, secret("Secret key")).await.unwrap();
        let raw = created.token.expose().to_owned();
        assert!(raw.starts_with("sk_") && raw.len() == token::TOKEN_LEN);
        let json = serde_json::to_value(&created).unwrap();
        assert_eq!(json["token"], raw.as_str());
        assert_eq!(json["redacted"], token::redact(&raw));
        assert!(json.get("salt").is_none(), "create never returns a salt");
        // The store holds the digest, not the token.
        let stored = h.store.find_api_key_by_token(&token::digest_hex(&raw)).await.unwrap().unwrap();
        assert_eq!(stored.stored_token, token::digest_hex(&raw));
        assert_eq!(stored.salt, "");
        assert!(h.store.find_api_key_by_token(&raw).await.unwrap().is_none());
        // Every later read shows an empty token.
        assert_eq!(h.kw.retrieve_api_key(&created.key.id).await.unwrap().token, "");
    }

    async fn several_secret_keys_can_be_active_at_once(h) {
        let two = h.flows.create_api_keys(&keyward::Actor::System, vec![secret("a"), secret("b")]).await.unwrap();
        let third = h.flows.create_api_key(&keyward::Actor::System, secret("c")).await.unwrap();
        for k in two.iter().chain([&third]) {
            assert!(h.kw.authenticate(k.token.expose()).await.unwrap().is_some());
        }
        assert_eq!(own_keys(&h.kw).await.len(), 3);
    }

    async fn keys_created_together_keep_their_order(h) {
        let created = h.flows.create_api_keys(&keyward::Actor::System, (0..5).map(|i| publishable(&format!("k{i}"))).collect()).await.unwrap();
        let listed = own_keys(&h.kw).await;
        assert_eq!(ids(&listed), created.iter().map(|c| c.key.id.to_string()).collect::<Vec<_>>());
    }

    async fn revoking_sets_revoked_at_and_revoked_by(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap().key;
        h.clock.advance_seconds(10);
        let revoked = h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &revoke_by("test")).await.unwrap();
        assert_eq!(revoked.revoked_by.as_deref(), Some("test"));
        assert_eq!(revoked.revoked_at, Some(epoch().plus_seconds(10)));
        assert_eq!(revoked.updated_at, epoch().plus_seconds(10));
        assert_eq!(revoked.token, "");
    }

    async fn a_key_can_be_revoked_in_the_future(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap().key;
        let data = RevokeApiKey { revoked_by: "test".into(), revoke_in: Some(3600) };
        let revoked = h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &data).await.unwrap();
        assert_eq!(revoked.revoked_at, Some(epoch().plus_seconds(3600)));
        assert_eq!(revoked.revoked_at.unwrap().to_string(), "2021-01-01T01:00:00.000Z");
    }

    async fn revoke_in_of_zero_or_less_revokes_now(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap().key;
        let data = RevokeApiKey { revoked_by: "test".into(), revoke_in: Some(-5) };
        assert_eq!(h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &data).await.unwrap().revoked_at, Some(epoch()));
    }

    async fn revoking_an_empty_list_does_nothing(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap().key;
        assert!(h.flows.revoke_api_keys(&keyward::Actor::System, &ApiKeyFilter::ids(Vec::<ApiKeyId>::new()), &RevokeApiKey::default()).await.unwrap().is_empty());
        let after = h.kw.retrieve_api_key(&k.id).await.unwrap();
        assert_eq!((after.revoked_at, after.revoked_by), (None, None));
    }

    async fn revoking_needs_revoked_by(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap().key;
        let err = h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &revoke_by("")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidData);
        assert_eq!(err.message, "You must provide a revoked_by field when revoking a key.");
    }

    async fn a_revoked_secret_key_cannot_be_revoked_again(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap().key;
        h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &revoke_by("test")).await.unwrap();
        let err = h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &revoke_by("test2")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidData);
        assert_eq!(err.message, "There are 1 secret keys that are already revoked.");
        assert_eq!(h.kw.retrieve_api_key(&k.id).await.unwrap().revoked_by.as_deref(), Some("test"));
    }

    async fn a_scheduled_secret_revocation_can_be_moved(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap().key;
        let later = RevokeApiKey { revoked_by: "a".into(), revoke_in: Some(3600) };
        h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &later).await.unwrap();
        let now = h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &revoke_by("b")).await.unwrap();
        assert_eq!((now.revoked_at, now.revoked_by.as_deref()), (Some(epoch()), Some("b")));
    }

    async fn a_publishable_key_can_be_revoked_again(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap().key;
        h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &revoke_by("first")).await.unwrap();
        h.clock.advance_seconds(5);
        let again = h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &revoke_by("second")).await.unwrap();
        assert_eq!((again.revoked_at, again.revoked_by.as_deref()), (Some(epoch().plus_seconds(5)), Some("second")));
    }

    async fn revoking_an_unknown_key_is_not_found(h) {
        let err = h.flows.revoke_api_key(&keyward::Actor::System, &ApiKeyId::parse("apk_missing").unwrap(), &revoke_by("t")).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert_eq!(err.message, "ApiKey with id: apk_missing was not found");
    }

    async fn revoking_by_selector_revokes_every_match(h) {
        h.flows.create_api_keys(&keyward::Actor::System, vec![publishable("team a"), publishable("team a"), publishable("team b")]).await.unwrap();
        let sel = ApiKeyFilter::new().try_eq(F::Title, "team a").unwrap();
        let revoked = h.flows.revoke_api_keys(&keyward::Actor::System, &sel, &revoke_by("ops")).await.unwrap();
        assert_eq!(revoked.len(), 2);
        assert!(revoked.iter().all(|k| k.revoked_by.as_deref() == Some("ops")));
    }

    async fn update_changes_only_the_title(h) {
        let before = h.flows.create_api_key(&keyward::Actor::System, secret("Old")).await.unwrap().key;
        h.clock.advance_seconds(1);
        let after = h.flows.update_api_key(&keyward::Actor::System, &before.id, "New Name").await.unwrap();
        assert_eq!(after.title, "New Name");
        assert_eq!(after.updated_at, epoch().plus_seconds(1));
        let mut expected = before.clone();
        expected.title = "New Name".into();
        expected.updated_at = after.updated_at;
        expected.token = String::new();
        assert_eq!(after, expected);
    }

    async fn update_by_selector_and_of_unknown_keys(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, publishable("x")).await.unwrap().key;
        let updated = h.flows.update_api_keys(&keyward::Actor::System, &ApiKeyFilter::ids([&k.id]), &UpdateApiKey::title("y")).await.unwrap();
        assert_eq!(updated[0].title, "y");
        let err = h.flows.update_api_key(&keyward::Actor::System, &ApiKeyId::parse("apk_nope").unwrap(), "z").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
    }

    async fn revoked_keys_can_be_deleted(h) {
        let created = h.flows.create_api_keys(&keyward::Actor::System, vec![publishable("p"), secret("s")]).await.unwrap();
        let ids: Vec<ApiKeyId> = created.iter().map(|c| c.key.id.clone()).collect();
        h.flows.revoke_api_keys(&keyward::Actor::System, &ApiKeyFilter::ids(&ids), &revoke_by("t")).await.unwrap();
        h.flows.delete_api_keys(&keyward::Actor::System, &ids).await.unwrap();
        assert!(own_keys(&h.kw).await.is_empty());
    }

    async fn deleting_unrevoked_keys_is_refused_and_keeps_both(h) {
        let created = h.flows.create_api_keys(&keyward::Actor::System, vec![publishable("revoked"), secret("live")]).await.unwrap();
        let (revoked, live) = (created[0].key.id.clone(), created[1].key.id.clone());
        h.flows.revoke_api_key(&keyward::Actor::System, &revoked, &revoke_by("t")).await.unwrap();
        let err = h.flows.delete_api_keys(&keyward::Actor::System, &[revoked.clone(), live.clone()]).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotAllowed);
        assert_eq!(err.message, format!("Cannot delete api keys that are not revoked - {live}"));
        assert_eq!(own_keys(&h.kw).await.len(), 2);
    }

    async fn a_key_revoked_in_the_future_cannot_be_deleted_yet(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap().key;
        h.flows.revoke_api_key(&keyward::Actor::System, &k.id, &RevokeApiKey { revoked_by: "t".into(), revoke_in: Some(60) }).await.unwrap();
        let err = h.flows.delete_api_keys(&keyward::Actor::System, std::slice::from_ref(&k.id)).await.unwrap_err();
        assert_eq!(err.message, format!("Cannot delete api keys that are not revoked - {}", k.id));
        h.clock.advance_seconds(60);
        h.flows.delete_api_keys(&keyward::Actor::System, std::slice::from_ref(&k.id)).await.unwrap();
    }

    async fn deleting_unknown_ids_is_a_no_op(h) {
        h.flows.delete_api_keys(&keyward::Actor::System, &[ApiKeyId::parse("apk_ghost").unwrap()]).await.unwrap();
        h.flows.delete_api_keys(&keyward::Actor::System, &[]).await.unwrap();
    }

    async fn a_secret_key_authenticates(h) {
        let created = h.flows.create_api_key(&keyward::Actor::System, secret("Secret key")).await.unwrap();
        let k = h.kw.authenticate(created.token.expose()).await.unwrap().unwrap();
        assert_eq!((k.title.as_str(), k.id.clone()), ("Secret key", created.key.id.clone()));
        assert_eq!(k.token, "");
    }

    async fn a_key_revoked_in_the_future_still_authenticates(h) {
        let created = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap();
        h.clock.set_to(Timestamp::parse("3000-01-01T00:00:00Z").unwrap());
        h.flows.revoke_api_key(&keyward::Actor::System, &created.key.id, &revoke_by("test")).await.unwrap();
        h.clock.set_to(epoch());
        let k = h.kw.authenticate(created.token.expose()).await.unwrap().unwrap();
        assert_eq!(k.title, "s");
        h.clock.set_to(Timestamp::parse("3000-01-01T00:00:00Z").unwrap());
        assert!(h.kw.authenticate(created.token.expose()).await.unwrap().is_none(), "and stops at that instant");
    }

    async fn a_publishable_token_does_not_authenticate(h) {
        let created = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap();
        assert!(h.kw.authenticate(created.token.expose()).await.unwrap().is_none());
    }

    async fn a_non_existent_token_does_not_authenticate(h) {
        h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap();
        assert!(h.kw.authenticate("some-token").await.unwrap().is_none());
        let unknown = token::from_random_bytes(ApiKeyType::Secret, &[7; 32]);
        assert!(h.kw.authenticate(unknown.expose()).await.unwrap().is_none());
        let medusa = "sk_44de31ebcf085fa423fc584aa854067025e937a79edb565f472404345f0f23be";
        assert!(h.kw.authenticate(medusa).await.unwrap().is_none());
    }

    async fn a_revoked_token_does_not_authenticate(h) {
        let created = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap();
        h.flows.revoke_api_key(&keyward::Actor::System, &created.key.id, &revoke_by("test")).await.unwrap();
        assert!(h.kw.authenticate(created.token.expose()).await.unwrap().is_none());
    }

    async fn verification_says_why_a_token_is_refused(h) {
        let pk = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap();
        let v = h.kw.verify(pk.token.expose()).await.unwrap();
        assert_eq!(v.code, VerifyCode::Valid);
        assert_eq!(h.kw.verify("pk_garbage").await.unwrap().code, VerifyCode::Malformed);
        let mut typo = pk.token.expose().to_owned();
        typo.replace_range(10..11, if &typo[10..11] == "a" { "b" } else { "a" });
        assert_eq!(h.kw.verify(&typo).await.unwrap().code, VerifyCode::Malformed);
        let unknown = token::from_random_bytes(ApiKeyType::Publishable, &[9; 32]);
        assert_eq!(h.kw.verify(unknown.expose()).await.unwrap().code, VerifyCode::NotFound);
        h.flows.revoke_api_key(&keyward::Actor::System, &pk.key.id, &revoke_by("t")).await.unwrap();
        let revoked = h.kw.verify(pk.token.expose()).await.unwrap();
        assert_eq!(revoked.code, VerifyCode::Revoked);
        assert_eq!(revoked.key().unwrap().id, pk.key.id);
    }

    async fn a_secret_token_never_passes_the_publishable_check(h) {
        let sk = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap();
        let pk = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap();
        let v = h.kw.verify_publishable(sk.token.expose()).await.unwrap();
        assert_eq!((v.code, v.key()), (VerifyCode::NotFound, None));
        assert_eq!(h.kw.verify_publishable(pk.token.expose()).await.unwrap().code, VerifyCode::Valid);
    }

    async fn reads_hide_secret_tokens_and_show_publishable_ones(h) {
        let created = h.flows.create_api_keys(&keyward::Actor::System, vec![publishable("p"), secret("s")]).await.unwrap();
        let (pk, sk) = (&created[0], &created[1]);
        let check = |keys: &[ApiKey]| {
            for k in keys {
                match k.key_type {
                    ApiKeyType::Secret => assert_eq!(k.token, ""),
                    ApiKeyType::Publishable => assert!(k.token.starts_with("pk_")),
                }
                assert!(!serde_json::to_string(k).unwrap().contains("salt"));
            }
        };
        check(&own_keys(&h.kw).await);
        let (listed, count) = h.kw.list_and_count_api_keys(&ApiKeyFilter::new(), &ListOptions::default()).await.unwrap();
        assert_eq!(count, 3, "the two keys and the seeded default");
        check(&listed);
        let one = h.kw.retrieve_api_key(&sk.key.id).await.unwrap();
        assert_eq!(one.token, "");
        assert_eq!(h.kw.retrieve_api_key(&pk.key.id).await.unwrap().token, pk.token.expose());
    }

    async fn retrieving_a_missing_key_is_not_found(h) {
        let err = h.kw.retrieve_api_key(&ApiKeyId::parse("apk_none").unwrap()).await.unwrap_err();
        assert_eq!((err.kind, err.message.as_str()), (ErrorKind::NotFound, "ApiKey with id: apk_none was not found"));
    }

    async fn listing_by_token_matches_one_key_of_either_type(h) {
        let created = h.flows.create_api_keys(&keyward::Actor::System, vec![publishable("p1"), publishable("p2"), secret("s")]).await.unwrap();
        let by = |t: &str| ApiKeyFilter::new().try_eq(F::Token, t).unwrap();
        let found = h.kw.list_api_keys(&by(created[0].token.expose()), &ListOptions::default()).await.unwrap();
        assert_eq!(ids(&found), vec![created[0].key.id.to_string()]);
        assert_eq!(found[0].token, created[0].token.expose());
        // A raw secret token finds its key (through its digest) and is not echoed back.
        let found = h.kw.list_api_keys(&by(created[2].token.expose()), &ListOptions::default()).await.unwrap();
        assert_eq!(ids(&found), vec![created[2].key.id.to_string()]);
        assert_eq!(found[0].token, "");
        let list = ApiKeyFilter::new()
            .try_in(F::Token, [created[1].token.expose(), created[2].token.expose()])
            .unwrap();
        assert_eq!(h.kw.count_api_keys(&list).await.unwrap(), 2);
    }

    async fn every_filter_operator_works(h) {
        let created = h.flows.create_api_keys(&keyward::Actor::System, vec![publishable("Alpha"), publishable("beta"), secret("Gamma")]).await.unwrap();
        let (a, b, g) = (&created[0].key, &created[1].key, &created[2].key);
        h.clock.advance_seconds(100);
        let d = h.flows.create_api_key(&keyward::Actor::System, publishable("delta")).await.unwrap().key;
        h.flows.revoke_api_key(&keyward::Actor::System, &b.id, &revoke_by("x")).await.unwrap();
        let run = |f: ApiKeyFilter| {
            let kw = h.kw.clone();
            async move {
                let mut own = f;
                own.push(F::CreatedBy, Op::Ne, vec!["".into()]).unwrap();
                let mut got = ids(&kw.list_api_keys(&own, &ListOptions::default()).await.unwrap());
                got.sort();
                assert_eq!(kw.count_api_keys(&own).await.unwrap() as usize, got.len());
                got
            }
        };
        let want = |keys: &[&ApiKey]| {
            let mut v: Vec<String> = keys.iter().map(|k| k.id.to_string()).collect();
            v.sort();
            v
        };
        let cond = |field, op, values: Vec<Value>| {
            let mut f = ApiKeyFilter::new();
            f.push(field, op, values).unwrap();
            f
        };
        let t = epoch().plus_seconds(100);
        assert_eq!(run(cond(F::Title, Op::Eq, vec!["beta".into()])).await, want(&[b]));
        assert_eq!(run(cond(F::Title, Op::Ne, vec!["beta".into()])).await, want(&[a, g, &d]));
        assert_eq!(run(cond(F::Id, Op::In, vec![a.id.to_string().into(), g.id.to_string().into()])).await, want(&[a, g]));
        assert_eq!(run(cond(F::Id, Op::Nin, vec![a.id.to_string().into()])).await, want(&[b, g, &d]));
        assert_eq!(run(cond(F::Id, Op::In, vec![])).await, want(&[]));
        assert_eq!(run(cond(F::CreatedAt, Op::Gt, vec![epoch().into()])).await, want(&[&d]));
        assert_eq!(run(cond(F::CreatedAt, Op::Gte, vec![t.into()])).await, want(&[&d]));
        assert_eq!(run(cond(F::CreatedAt, Op::Lt, vec![t.into()])).await, want(&[a, b, g]));
        assert_eq!(run(cond(F::CreatedAt, Op::Lte, vec![epoch().into()])).await, want(&[a, b, g]));
        assert_eq!(run(cond(F::CreatedAt, Op::Eq, vec![t.into()])).await, want(&[&d]));
        assert_eq!(run(cond(F::Title, Op::Like, vec!["%lta".into()])).await, want(&[&d]));
        assert_eq!(run(cond(F::Title, Op::Like, vec!["alpha".into()])).await, want(&[]), "$like is case-sensitive");
        assert_eq!(run(cond(F::Title, Op::ILike, vec!["alpha".into()])).await, want(&[a]));
        assert_eq!(run(cond(F::Title, Op::ILike, vec!["%A%".into()])).await, want(&[a, b, g, &d]));
        assert_eq!(run(cond(F::RevokedAt, Op::Eq, vec![Value::Null])).await, want(&[a, g, &d]));
        assert_eq!(run(cond(F::RevokedAt, Op::Ne, vec![Value::Null])).await, want(&[b]));
        assert_eq!(run(cond(F::DeletedAt, Op::Eq, vec![Value::Null])).await, want(&[a, b, g, &d]));
        assert_eq!(run(cond(F::Type, Op::Eq, vec!["secret".into()])).await, want(&[g]));
        assert_eq!(run(cond(F::UpdatedAt, Op::Gt, vec![t.into()])).await, want(&[]));
        assert_eq!(run(cond(F::UpdatedAt, Op::Eq, vec![t.into()])).await, want(&[b, &d]));
        // $or of two groups, $and of two groups.
        let mut or = ApiKeyFilter::new();
        or.or = vec![cond(F::Title, Op::Eq, vec!["Alpha".into()]), cond(F::Type, Op::Eq, vec!["secret".into()])];
        assert_eq!(run(or).await, want(&[a, g]));
        let mut and = ApiKeyFilter::new();
        and.and = vec![cond(F::Type, Op::Eq, vec!["publishable".into()]), cond(F::RevokedAt, Op::Eq, vec![Value::Null])];
        assert_eq!(run(and).await, want(&[a, &d]));
    }

    async fn a_key_expires_in_seconds_or_at_an_instant_and_bad_expiries_are_refused(h) {
        let now = h.clock.now();
        let mut by_seconds = secret("in an hour");
        by_seconds.expires_in = Some(3_600);
        let mut at_instant = publishable("next year");
        at_instant.expires_at = Some(now.plus_seconds(365 * 86_400));
        let created = h.flows.create_api_keys(&keyward::Actor::System, vec![by_seconds, at_instant, secret("forever")]).await.unwrap();
        let expiries: Vec<_> = created.iter().map(|c| c.key.expires_at).collect();
        assert_eq!(expiries, [Some(now.plus_seconds(3_600)), Some(now.plus_seconds(365 * 86_400)), None]);
        let stored = h.kw.retrieve_api_key(&created[0].key.id).await.unwrap();
        assert_eq!(stored.expires_at, Some(now.plus_seconds(3_600)), "kept in the store");
        let refusals = [
            (Some(0), None, "expires_in must be between 1 and 3153600000 seconds, but got: 0"),
            (Some(-5), None, "expires_in must be between 1 and 3153600000 seconds, but got: -5"),
            (Some(keyward::MAX_EXPIRES_IN + 1), None, "expires_in must be between 1 and 3153600000 seconds, but got: 3153600001"),
            (None, Some(now), "expires_at must be in the future, but got: 2021-01-01T00:00:00.000Z"),
            (Some(60), Some(now.plus_seconds(60)), "Give expires_in or expires_at, not both"),
        ];
        for (expires_in, expires_at, message) in refusals {
            let mut bad = secret("bad");
            (bad.expires_in, bad.expires_at) = (expires_in, expires_at);
            let err = h.flows.create_api_key(&keyward::Actor::System, bad).await.unwrap_err();
            assert_eq!((err.kind, err.message.as_str()), (ErrorKind::InvalidData, message));
        }
        let mut all = ApiKeyFilter::new();
        all.push(F::Title, Op::Eq, vec!["bad".into()]).unwrap();
        assert_eq!(h.kw.count_api_keys(&all).await.unwrap(), 0, "a refused key is not written");
        // Lists filter on the expiry: soon, never.
        let cond = |op, values: Vec<Value>| {
            let mut f = ApiKeyFilter::new();
            f.push(F::ExpiresAt, op, values).unwrap();
            f.push(F::CreatedBy, Op::Ne, vec!["".into()]).unwrap();
            f
        };
        let soon = h.kw.list_api_keys(&cond(Op::Lt, vec![now.plus_seconds(86_400).into()]), &ListOptions::default()).await.unwrap();
        assert_eq!(ids(&soon), [created[0].key.id.to_string()]);
        let never = h.kw.list_api_keys(&cond(Op::Eq, vec![Value::Null]), &ListOptions::default()).await.unwrap();
        assert_eq!(ids(&never), [created[2].key.id.to_string()]);
    }

    async fn an_update_sets_or_removes_an_expiry_and_an_expired_key_keeps_its_own(h) {
        let now = h.clock.now();
        let key = h.flows.create_api_key(&keyward::Actor::System, secret("k")).await.unwrap().key;
        let set = |at: Option<Timestamp>| UpdateApiKey { title: None, expires_at: Some(at), ..Default::default() };
        let updated = h.flows.update_api_key_with(&keyward::Actor::System, &key.id, &set(Some(now.plus_seconds(60)))).await.unwrap();
        assert_eq!((updated.title.as_str(), updated.expires_at), ("k", Some(now.plus_seconds(60))), "the title stays");
        let renamed = h.flows.update_api_key(&keyward::Actor::System, &key.id, "renamed").await.unwrap();
        assert_eq!(renamed.expires_at, Some(now.plus_seconds(60)), "a new title keeps the expiry");
        assert_eq!(h.flows.update_api_key_with(&keyward::Actor::System, &key.id, &set(None)).await.unwrap().expires_at, None, "null removes it");
        let err = h.flows.update_api_key_with(&keyward::Actor::System, &key.id, &set(Some(now))).await.unwrap_err();
        assert_eq!((err.kind, err.message.as_str()), (ErrorKind::InvalidData, "expires_at must be in the future, but got: 2021-01-01T00:00:00.000Z"));
        h.flows.update_api_key_with(&keyward::Actor::System, &key.id, &set(Some(now.plus_seconds(10)))).await.unwrap();
        h.clock.advance_seconds(10);
        for update in [set(Some(now.plus_seconds(3_600))), set(None)] {
            let err = h.flows.update_api_key_with(&keyward::Actor::System, &key.id, &update).await.unwrap_err();
            assert_eq!((err.kind, err.message), (ErrorKind::InvalidData, format!("API key {} has expired; its expiry cannot change", key.id)));
        }
        assert_eq!(h.flows.update_api_key(&keyward::Actor::System, &key.id, "still expired").await.unwrap().expires_at, Some(now.plus_seconds(10)));
    }

    async fn a_rolled_key_keeps_its_expiry_and_an_expired_one_cannot_be_rolled(h) {
        let mut data = secret("expiring");
        data.expires_in = Some(600);
        let old = h.flows.create_api_key(&keyward::Actor::System, data).await.unwrap().key;
        let (new, _) = h.flows.roll_api_key(&keyward::Actor::System, &old.id, "user_test", Some(60)).await.unwrap();
        assert_eq!(new.key.expires_at, old.expires_at, "the successor expires when the key it replaces does");
        h.clock.advance_seconds(600);
        let err = h.flows.roll_api_key(&keyward::Actor::System, &new.key.id, "user_test", None).await.unwrap_err();
        assert_eq!(
            (err.kind, err.message),
            (ErrorKind::InvalidData, format!("API key {} has expired; an expired key cannot be rolled", new.key.id))
        );
    }

    async fn q_searches_title_and_redacted_without_case(h) {
        let created = h.flows.create_api_keys(&keyward::Actor::System, vec![publishable("Sample Key"), publishable("other"), secret("SAMPLE secret")]).await.unwrap();
        let q = |s: &str| {
            let kw = h.kw.clone();
            let s = s.to_owned();
            async move {
                ids(&kw.list_api_keys(&ApiKeyFilter::new().with_q(s), &ListOptions::default()).await.unwrap())
            }
        };
        assert_eq!(q("sample").await, vec![created[0].key.id.to_string(), created[2].key.id.to_string()]);
        let redacted = created[1].key.redacted.clone();
        assert_eq!(q(&redacted[..5]).await.len(), h.kw.count_api_keys(&ApiKeyFilter::new().with_q(&redacted[..5])).await.unwrap() as usize);
        assert!(q(&redacted).await.contains(&created[1].key.id.to_string()));
        assert!(q("%").await.is_empty(), "q is literal, not a pattern");
        assert!(q("zzz").await.is_empty());
    }

    async fn lists_are_ordered_and_paginated(h) {
        let created = h.flows.create_api_keys(&keyward::Actor::System, ["b", "a", "c", "a"].iter().map(|t| publishable(t)).collect()).await.unwrap();
        let all: Vec<String> = created.iter().map(|c| c.key.id.to_string()).collect();
        let mut f = ApiKeyFilter::new();
        f.push(F::CreatedBy, Op::Ne, vec!["".into()]).unwrap();
        let list = |o: ListOptions<F>| {
            let (kw, f) = (h.kw.clone(), f.clone());
            async move { ids(&kw.list_api_keys(&f, &o).await.unwrap()) }
        };
        assert_eq!(list(ListOptions::default()).await, all, "default order: id ascending = creation order");
        let by_title = ListOptions::default().ordered_by(F::Title, Direction::Asc);
        assert_eq!(list(by_title).await, vec![all[1].clone(), all[3].clone(), all[0].clone(), all[2].clone()], "ties broken by id");
        let by_title_desc = ListOptions::default().ordered_by(F::Title, Direction::Desc);
        assert_eq!(list(by_title_desc).await, vec![all[2].clone(), all[0].clone(), all[3].clone(), all[1].clone()], "ties follow the direction");
        let newest_first = ListOptions::default().ordered_by(F::CreatedAt, Direction::Desc);
        let mut reversed = all.clone();
        reversed.reverse();
        assert_eq!(list(newest_first).await, reversed, "same-millisecond rows stay newest first");
        assert_eq!(list(ListOptions::page(1, 2)).await, all[1..3].to_vec());
        assert_eq!(list(ListOptions::page(3, 20)).await, all[3..].to_vec());
        assert!(list(ListOptions::page(10, 20)).await.is_empty());
        assert!(list(ListOptions::page(0, 0)).await.is_empty());
        let (_, count) = h.kw.list_and_count_api_keys(&f, &ListOptions::page(0, 1)).await.unwrap();
        assert_eq!(count, 4, "count ignores the page");
        let revoked_first = ListOptions::default().ordered_by(F::RevokedAt, Direction::Desc);
        h.flows.revoke_api_key(&keyward::Actor::System, &created[2].key.id, &revoke_by("t")).await.unwrap();
        assert_eq!(list(revoked_first).await.last().unwrap(), &all[2], "NULLs first when descending");
    }

    async fn a_supplied_id_is_kept_and_a_taken_one_is_a_duplicate(h) {
        let mut data = publishable("mine");
        data.id = Some(ApiKeyId::parse("apk_custom").unwrap());
        let k = h.flows.create_api_key(&keyward::Actor::System, data.clone()).await.unwrap().key;
        assert_eq!(k.id.as_str(), "apk_custom");
        let err = h.flows.create_api_key(&keyward::Actor::System, data).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Duplicate);
        assert_eq!(own_keys(&h.kw).await.len(), 1, "nothing half-written");
    }

    async fn two_creates_racing_for_one_supplied_id_give_one_key_and_one_duplicate(h) {
        // Two nodes (own pools, own engines) race; in every round exactly one wins, the other is
        // told the id is taken, and the winner's token is the one that works.
        let (_, other) = h.node().await;
        for round in 0..12 {
            let mut data = secret(&format!("race {round}"));
            data.id = Some(ApiKeyId::parse(&format!("apk_race{round}")).unwrap());
            let (a, b) = tokio::join!(h.flows.create_api_key(&keyward::Actor::System, data.clone()), other.create_api_key(&keyward::Actor::System, data));
            let (won, lost) = match (a, b) {
                (Ok(k), Err(e)) | (Err(e), Ok(k)) => (k, e),
                other => panic!("round {round}: one create must win and one lose: {other:?}"),
            };
            assert_eq!(lost.kind, ErrorKind::Duplicate, "round {round}: {lost:?}");
            assert_eq!(h.kw.authenticate(won.token.expose()).await.unwrap().unwrap().id, won.key.id);
        }
        assert_eq!(own_keys(&h.kw).await.len(), 12);
    }

    async fn an_empty_title_is_accepted_as_medusa_does(h) {
        assert_eq!(h.flows.create_api_key(&keyward::Actor::System, publishable("")).await.unwrap().key.title, "");
    }

    async fn first_start_seeds_a_default_channel_and_key_linked_to_it(h) {
        let (keys, count) = h.kw.list_and_count_api_keys(&ApiKeyFilter::new(), &ListOptions::default()).await.unwrap();
        assert_eq!(count, 1);
        let key = &keys[0];
        assert_eq!((key.title.as_str(), key.key_type, key.created_by.as_str()), ("Default Publishable API Key", ApiKeyType::Publishable, ""));
        let channels = h.kw.sales_channels_of(std::slice::from_ref(&key.id)).await.unwrap();
        let linked = &channels[&key.id];
        assert_eq!(linked.len(), 1);
        assert_eq!((linked[0].name.as_str(), linked[0].description.as_deref()), ("Default Sales Channel", Some("Created by Medusa")));
        // Migrating again (a restart) seeds nothing more.
        h.kw.migrate().await.unwrap();
        assert_eq!(h.kw.count_api_keys(&ApiKeyFilter::new()).await.unwrap(), 1);
        let (_, channels) = h.kw.list_and_count_sales_channels(&SalesChannelFilter::new(), &ListOptions::default()).await.unwrap();
        assert_eq!(channels, 1);
        let v = h.kw.verify(&key.token).await.unwrap();
        assert_eq!((v.code, v.sales_channel_ids().to_vec()), (VerifyCode::Valid, vec![linked[0].id.clone()]));
    }

    async fn sales_channels_can_be_created_listed_updated_and_deleted(h) {
        let sc = h.flows.create_sales_channel(&keyward::Actor::System, CreateSalesChannel { name: "Web".into(), description: Some("shop".into()), ..Default::default() }).await.unwrap();
        assert!(sc.id.as_str().starts_with("sc_"));
        let got = h.kw.retrieve_sales_channel(&sc.id).await.unwrap();
        assert_eq!(got, sc);
        let filter = SalesChannelFilter::new().with_q("WEB");
        let (found, n) = h.kw.list_and_count_sales_channels(&filter, &ListOptions::default()).await.unwrap();
        assert_eq!((found.len(), n), (1, 1));
        let patch = UpdateSalesChannel { name: Some("Webshop".into()), is_disabled: Some(true), metadata: Some(Some(serde_json::json!({"a": 1}))), ..Default::default() };
        h.clock.advance_seconds(1);
        let updated = h.flows.update_sales_channel(&keyward::Actor::System, &sc.id, &patch).await.unwrap();
        assert_eq!((updated.name.as_str(), updated.is_disabled, updated.description.as_deref()), ("Webshop", true, Some("shop")));
        assert_eq!(h.kw.retrieve_sales_channel(&sc.id).await.unwrap(), updated);
        let disabled = SalesChannelFilter::new().try_eq(SalesChannelField::IsDisabled, true).unwrap();
        assert_eq!(h.kw.list_sales_channels(&disabled, &ListOptions::default()).await.unwrap().len(), 1);
        h.flows.delete_sales_channels(&keyward::Actor::System, std::slice::from_ref(&sc.id)).await.unwrap();
        let err = h.kw.retrieve_sales_channel(&sc.id).await.unwrap_err();
        assert_eq!(err.message, format!("Sales channel with id: {} was not found", sc.id));
        assert!(h.flows.update_sales_channel(&keyward::Actor::System, &sc.id, &patch).await.is_err());
        assert!(h.flows.create_sales_channel(&keyward::Actor::System, CreateSalesChannel::default()).await.is_err(), "a name is required");
    }

    async fn channels_link_to_publishable_keys_only(h) {
        let pk = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap().key;
        let sk = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap().key;
        let sc = h.flows.create_sales_channel(&keyward::Actor::System, CreateSalesChannel { name: "A".into(), ..Default::default() }).await.unwrap();
        let sc2 = h.flows.create_sales_channel(&keyward::Actor::System, CreateSalesChannel { name: "B".into(), ..Default::default() }).await.unwrap();
        h.flows.link_sales_channels(&keyward::Actor::System, &pk.id, &[sc.id.clone(), sc2.id.clone()], &[]).await.unwrap();
        h.flows.link_sales_channels(&keyward::Actor::System, &pk.id, std::slice::from_ref(&sc.id), &[]).await.unwrap();
        let linked = |kw: Keyward, id: ApiKeyId| async move {
            kw.sales_channels_of(std::slice::from_ref(&id)).await.unwrap()[&id].iter().map(|c| c.id.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(linked(h.kw.clone(), pk.id.clone()).await.len(), 2, "re-linking is a no-op");
        let err = h.flows.link_sales_channels(&keyward::Actor::System, &sk.id, std::slice::from_ref(&sc.id), &[]).await.unwrap_err();
        assert_eq!((err.kind, err.message.as_str()), (ErrorKind::InvalidData, "Sales channels can only be associated with publishable API keys"));
        let err = h.flows.link_sales_channels(&keyward::Actor::System, &pk.id, &[SalesChannelId::parse("phony").unwrap(), SalesChannelId::parse("sc_x").unwrap()], &[]).await.unwrap_err();
        assert_eq!((err.kind, err.message.as_str()), (ErrorKind::InvalidData, "Sales channels with IDs phony, sc_x do not exist"));
        let err = h.flows.link_sales_channels(&keyward::Actor::System, &ApiKeyId::parse("apk_gone").unwrap(), std::slice::from_ref(&sc.id), &[]).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        h.flows.link_sales_channels(&keyward::Actor::System, &pk.id, &[], &[sc.id.clone(), SalesChannelId::parse("sc_never").unwrap()]).await.unwrap();
        assert_eq!(linked(h.kw.clone(), pk.id.clone()).await, vec![sc2.id.to_string()]);
        h.flows.link_sales_channels(&keyward::Actor::System, &pk.id, std::slice::from_ref(&sc.id), &[]).await.unwrap();
        assert_eq!(linked(h.kw.clone(), pk.id.clone()).await.len(), 2, "a removed link can come back");
        let keys_of = h.kw.api_keys_of(std::slice::from_ref(&sc2.id)).await.unwrap();
        assert_eq!(ids(&keys_of[&sc2.id]), vec![pk.id.to_string()]);
    }

    async fn deleting_a_key_removes_its_links(h) {
        let pk = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap().key;
        let sc = h.flows.create_sales_channel(&keyward::Actor::System, CreateSalesChannel { name: "A".into(), ..Default::default() }).await.unwrap();
        h.flows.link_sales_channels(&keyward::Actor::System, &pk.id, std::slice::from_ref(&sc.id), &[]).await.unwrap();
        h.flows.revoke_api_key(&keyward::Actor::System, &pk.id, &revoke_by("t")).await.unwrap();
        h.flows.delete_api_keys(&keyward::Actor::System, std::slice::from_ref(&pk.id)).await.unwrap();
        assert!(h.kw.api_keys_of(std::slice::from_ref(&sc.id)).await.unwrap()[&sc.id].is_empty());
        // The channel itself stays.
        h.kw.retrieve_sales_channel(&sc.id).await.unwrap();
    }

    async fn deleting_a_channel_removes_its_links(h) {
        let pk = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap().key;
        let sc = h.flows.create_sales_channel(&keyward::Actor::System, CreateSalesChannel { name: "A".into(), ..Default::default() }).await.unwrap();
        h.flows.link_sales_channels(&keyward::Actor::System, &pk.id, std::slice::from_ref(&sc.id), &[]).await.unwrap();
        h.flows.delete_sales_channels(&keyward::Actor::System, std::slice::from_ref(&sc.id)).await.unwrap();
        assert!(h.kw.sales_channels_of(std::slice::from_ref(&pk.id)).await.unwrap()[&pk.id].is_empty());
        assert!(h.kw.verify(&pk.token).await.unwrap().sales_channel_ids().is_empty());
    }

    async fn users_sign_in_with_their_password_only(h) {
        let u = h.flows.create_user("Admin@Test.local", "supersecret").await.unwrap();
        assert_eq!(u.email, "admin@test.local");
        assert!(u.id.as_str().starts_with("user_"));
        assert_eq!(h.kw.authenticate_user("admin@test.local", "supersecret").await.unwrap().unwrap().id, u.id);
        assert!(h.kw.authenticate_user("admin@test.local", "wrong-password").await.unwrap().is_none());
        assert!(h.kw.authenticate_user("nobody@test.local", "supersecret").await.unwrap().is_none());
        let dup = h.flows.create_user("admin@test.local", "another-pass").await.unwrap_err();
        assert_eq!(dup.kind, ErrorKind::Duplicate);
        assert_eq!(h.flows.create_user("not-an-email", "supersecret").await.unwrap_err().kind, ErrorKind::InvalidData);
        assert_eq!(h.flows.create_user("a@b.c", "short").await.unwrap_err().kind, ErrorKind::InvalidData);
        assert_eq!(h.kw.count_users().await.unwrap(), 1);
        assert_eq!(h.kw.retrieve_user(&u.id).await.unwrap(), u);
    }

    async fn last_used_at_is_written_in_batches_after_successful_verifications(h) {
        let pk = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap();
        let sk = h.flows.create_api_key(&keyward::Actor::System, secret("s")).await.unwrap();
        let idle = h.flows.create_api_key(&keyward::Actor::System, publishable("idle")).await.unwrap();
        h.clock.advance_seconds(5);
        h.kw.verify(pk.token.expose()).await.unwrap();
        h.clock.advance_seconds(5);
        h.kw.verify(pk.token.expose()).await.unwrap();
        h.kw.authenticate(sk.token.expose()).await.unwrap().unwrap();
        h.kw.verify("pk_garbage").await.unwrap();
        assert_eq!(h.kw.retrieve_api_key(&pk.key.id).await.unwrap().last_used_at, None, "nothing is written per request");
        assert_eq!(h.kw.flush_usage().await.unwrap(), 2, "one row per key, however often it was used");
        assert_eq!(h.kw.retrieve_api_key(&pk.key.id).await.unwrap().last_used_at, Some(epoch().plus_seconds(10)));
        assert_eq!(h.kw.retrieve_api_key(&sk.key.id).await.unwrap().last_used_at, Some(epoch().plus_seconds(10)));
        assert_eq!(h.kw.retrieve_api_key(&idle.key.id).await.unwrap().last_used_at, None);
        assert_eq!(h.kw.flush_usage().await.unwrap(), 0);
        h.flows.revoke_api_key(&keyward::Actor::System, &pk.key.id, &revoke_by("t")).await.unwrap();
        h.clock.advance_seconds(5);
        h.kw.verify(pk.token.expose()).await.unwrap();
        assert_eq!(h.kw.flush_usage().await.unwrap(), 0, "a refused verification is not a use");
    }

    async fn last_used_at_only_moves_forward(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap().key;
        let t1 = epoch().plus_seconds(10);
        h.store.record_last_used(&[(k.id.clone(), t1)]).await.unwrap();
        h.store.record_last_used(&[(k.id.clone(), epoch())]).await.unwrap();
        assert_eq!(h.kw.retrieve_api_key(&k.id).await.unwrap().last_used_at, Some(t1));
    }

    async fn duplicate_tokens_are_refused_by_the_store(h) {
        let k = h.flows.create_api_key(&keyward::Actor::System, publishable("p")).await.unwrap();
        let row = NewApiKey {
            id: ApiKeyId::parse("apk_other").unwrap(),
            token: k.token.expose().to_owned(),
            salt: String::new(),
            redacted: k.key.redacted.clone(),
            title: "copy".into(),
            key_type: ApiKeyType::Publishable,
            created_by: "t".into(),
            created_at: epoch(),
            expires_at: None,
            policy: Default::default(),
        };
        let err = h.store.insert_api_keys(&[row]).await.unwrap_err();
        assert_eq!((err.kind, err.message.as_str()), (ErrorKind::Duplicate, "There already is an api key with this token"));
    }

    async fn nodes_racing_to_set_a_setting_all_get_the_first_value(h) {
        let mut racers = Vec::new();
        for n in 0..8 {
            let store = h.store.clone();
            let now = h.kw.now();
            racers.push(tokio::spawn(async move {
                store.setting_or_insert("jwt_secret", &format!("value-{n}"), now).await.unwrap()
            }));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in racers {
            seen.insert(r.await.unwrap());
        }
        assert_eq!(seen.len(), 1, "one value wins for everyone: {seen:?}");
        let later = h.store.setting_or_insert("jwt_secret", "late", h.kw.now()).await.unwrap();
        assert_eq!(seen.into_iter().next().unwrap(), later, "and it stays");
    }
}
