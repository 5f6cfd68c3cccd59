//! The verification cache: answers from memory, and is never wrong for longer than a notice
//! takes to arrive. Every test runs on SQLite (two pools on one file stand for two processes)
//! and on Postgres (two pools stand for two nodes).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use keyward::{ClockExt, ManualClockExt};
use std::sync::Arc;

use keyward::{ApiKeyType, CreateApiKey, CreatedApiKey, Keyward, RevokeApiKey, VerifyCode};
use keyward_testkit::{Harness, Watched, eventually, on_both_stores, watch};

fn secret(title: &str) -> CreateApiKey {
    CreateApiKey::new(title, ApiKeyType::Secret, "user_test")
}

fn revoke_now() -> RevokeApiKey {
    RevokeApiKey {
        revoked_by: "user_test".into(),
        revoke_in: None,
    }
}

async fn code(kw: &Keyward, token: &str) -> VerifyCode {
    kw.verify(token).await.unwrap().code
}

/// Node B beside `h` (node A), both following changes while the guards are kept.
async fn second_node(h: &Harness) -> (Keyward, [Watched; 2]) {
    let a = watch(&h.kw).await;
    let (b, _) = h.node().await;
    let watching_b = watch(&b).await;
    (b, [a, watching_b])
}

/// A secret key titled `title` made on node A, returned once node B has heard of it (so
/// nothing empties the entry B fills next), with its token.
async fn made_and_heard(h: &Harness, b: &Keyward, title: &str) -> (CreatedApiKey, String) {
    let heard = b.cache().stats().invalidations;
    let created = h
        .flows
        .create_api_key(&keyward::Actor::System, secret(title))
        .await
        .unwrap();
    let token = created.token.expose().to_owned();
    eventually("node B hears of the new key", || async {
        b.cache().stats().invalidations > heard
    })
    .await;
    (created, token)
}

on_both_stores! {
    async fn a_key_revoked_on_one_node_is_refused_by_the_other(h) {
        let (b, _watching) = second_node(&h).await;
        let (created, token) = made_and_heard(&h, &b, "shared").await;
        assert_eq!(code(&b, &token).await, VerifyCode::Valid);
        let hits = b.cache().stats().hits;
        assert_eq!(code(&b, &token).await, VerifyCode::Valid);
        assert_eq!(b.cache().stats().hits, hits + 1, "the second answer came from memory");

        h.flows.revoke_api_key(&keyward::Actor::System, &created.key.id, &revoke_now()).await.unwrap();
        // The node that revoked refuses at once; the other as soon as the notice arrives (the
        // cache's own expiry is 30 s away, so only the notice can do it within 10 s).
        assert_eq!(code(&h.kw, &token).await, VerifyCode::Revoked);
        eventually("node B refuses the revoked key", || async { code(&b, &token).await == VerifyCode::Revoked }).await;
        for _ in 0..50 {
            assert_eq!(code(&b, &token).await, VerifyCode::Revoked);
        }
        assert!(b.cache().stats().invalidations > 0);
    }

    async fn a_scheduled_revocation_takes_effect_at_its_instant_from_a_cached_entry(h) {
        let _w = watch(&h.kw).await;
        let created = h.flows.create_api_key(&keyward::Actor::System, secret("scheduled")).await.unwrap();
        let token = created.token.expose().to_owned();
        h.flows
            .revoke_api_key(&keyward::Actor::System, &created.key.id, &RevokeApiKey { revoked_by: "user_test".into(), revoke_in: Some(20) })
            .await
            .unwrap();
        assert_eq!(code(&h.kw, &token).await, VerifyCode::Valid, "fills the cache");
        let misses = h.kw.cache().stats().misses;
        // Well within the entry's 30 s life, so the answers below come from it.
        h.clock.advance_seconds(19);
        assert_eq!(code(&h.kw, &token).await, VerifyCode::Valid);
        h.clock.advance_seconds(1);
        assert_eq!(code(&h.kw, &token).await, VerifyCode::Revoked, "at its instant");
        assert_eq!(h.kw.cache().stats().misses, misses, "both answers came from the cached entry");
    }

    async fn an_expiring_key_is_refused_at_its_instant_from_a_cached_entry(h) {
        let _w = watch(&h.kw).await;
        let mut data = secret("expiring");
        data.expires_in = Some(20);
        let created = h.flows.create_api_key(&keyward::Actor::System, data).await.unwrap();
        assert_eq!(created.key.expires_at, Some(h.clock.now().plus_seconds(20)));
        let token = created.token.expose().to_owned();
        assert_eq!(code(&h.kw, &token).await, VerifyCode::Valid, "fills the cache");
        let misses = h.kw.cache().stats().misses;
        // Well within the entry's 30 s life, so the answers below come from it.
        h.clock.advance_seconds(19);
        assert_eq!(code(&h.kw, &token).await, VerifyCode::Valid);
        assert!(h.kw.authenticate(&token).await.unwrap().is_some());
        h.clock.advance_seconds(1);
        let refused = h.kw.verify(&token).await.unwrap();
        assert_eq!(refused.code, VerifyCode::Expired, "at its instant");
        assert_eq!(refused.key().map(|k| k.id.clone()), Some(created.key.id.clone()), "the key is named");
        assert!(h.kw.authenticate(&token).await.unwrap().is_none(), "an expired secret key opens nothing");
        assert_eq!(h.kw.cache().stats().misses, misses, "every answer came from the cached entry");
    }

    async fn a_new_expiry_reaches_the_other_node_as_a_revocation_does(h) {
        let (b, _watching) = second_node(&h).await;
        let (created, token) = made_and_heard(&h, &b, "shortened").await;
        assert_eq!(code(&b, &token).await, VerifyCode::Valid, "B caches the key without an expiry");
        let soon = h.clock.now().plus_seconds(5);
        let update = keyward::UpdateApiKey { title: None, expires_at: Some(Some(soon)), ..Default::default() };
        h.flows.update_api_key_with(&keyward::Actor::System, &created.key.id, &update).await.unwrap();
        h.clock.advance_seconds(5);
        assert_eq!(code(&h.kw, &token).await, VerifyCode::Expired);
        eventually("node B refuses the key at its new expiry", || async { code(&b, &token).await == VerifyCode::Expired }).await;
    }

    async fn an_address_limit_set_on_one_node_holds_on_the_other_from_its_cache(h) {
        let (b, _watching) = second_node(&h).await;
        let (created, token) = made_and_heard(&h, &b, "limited later").await;
        let office: std::net::IpAddr = "192.0.2.10".parse().unwrap();
        let elsewhere: std::net::IpAddr = "198.51.100.1".parse().unwrap();
        assert!(b.verify_from(&token, Some(elsewhere)).await.unwrap().is_valid(), "B caches the unlimited key");
        let hits = b.cache().stats().hits;
        assert!(b.verify_from(&token, Some(elsewhere)).await.unwrap().is_valid());
        assert!(b.cache().stats().hits > hits, "answered from B's cache");
        let limit = keyward::UpdateApiKey {
            allowed_ips: Some(Some(vec![keyward::Cidr::parse("192.0.2.0/24").unwrap()])),
            ..Default::default()
        };
        h.flows.update_api_key_with(&keyward::Actor::System, &created.key.id, &limit).await.unwrap();
        eventually("node B refuses the key from elsewhere", || async {
            b.verify_from(&token, Some(elsewhere)).await.unwrap().code == VerifyCode::ForbiddenOrigin
        })
        .await;
        assert!(b.verify_from(&token, Some(office)).await.unwrap().is_valid());
        assert_eq!(code(&b, &token).await, VerifyCode::ForbiddenOrigin, "no address known: refused");
    }

    async fn a_key_both_revoked_and_expired_is_refused_as_revoked(h) {
        let mut data = secret("both");
        data.expires_in = Some(10);
        let created = h.flows.create_api_key(&keyward::Actor::System, data).await.unwrap();
        h.flows
            .revoke_api_key(&keyward::Actor::System, &created.key.id, &RevokeApiKey { revoked_by: "user_test".into(), revoke_in: Some(20) })
            .await
            .unwrap();
        h.clock.advance_seconds(10);
        assert_eq!(code(&h.kw, created.token.expose()).await, VerifyCode::Expired);
        h.clock.advance_seconds(10);
        assert_eq!(code(&h.kw, created.token.expose()).await, VerifyCode::Revoked, "revocation is the stronger word");
    }

    async fn a_key_created_after_its_token_was_refused_is_found(h) {
        // A restored (or imported) key has a token known before its row exists: the negative
        // entry left by the first lookup must go when the row arrives.
        let _w = watch(&h.kw).await;
        let created = h.flows.create_api_key(&keyward::Actor::System, secret("restored")).await.unwrap();
        let token = created.token.expose().to_owned();
        let stored = h.store.stored_api_keys(std::slice::from_ref(&created.key.id)).await.unwrap();
        h.clock.advance_seconds(1);
        h.flows.revoke_api_key(&keyward::Actor::System, &created.key.id, &revoke_now()).await.unwrap();
        h.clock.advance_seconds(1);
        h.flows.delete_api_keys(&keyward::Actor::System, std::slice::from_ref(&created.key.id)).await.unwrap();
        assert_eq!(code(&h.kw, &token).await, VerifyCode::NotFound);
        assert_eq!(code(&h.kw, &token).await, VerifyCode::NotFound, "from the negative entry");
        h.store.restore_api_keys(&stored).await.unwrap();
        assert_eq!(code(&h.kw, &token).await, VerifyCode::Valid);
    }

    async fn verifications_racing_a_revoke_leave_no_stale_entry(h) {
        // A miss that read the row before the revoke committed must not keep it after the
        // notice: node B verifies in a loop while node A revokes, and once B has the revoke's
        // notice it must refuse for good.
        // (The exact interleaving is forced in the cache's unit tests; this is the end-to-end
        // invariant under real concurrency.)
        let (b, _watching) = second_node(&h).await;
        let applied = || b.cache().stats().invalidations;
        for round in 0..30 {
            // Node B applies two notices this round: the create's and the revoke's.
            let before = applied();
            // Publishable: a miss then reads the key's links too, which widens the window
            // between reading the row and keeping the entry.
            let created = h
                .flows
                .create_api_key(&keyward::Actor::System, CreateApiKey::new(format!("race {round}"), ApiKeyType::Publishable, "user_test"))
                .await
                .unwrap();
            let token = Arc::new(created.token.expose().to_owned());
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut readers = Vec::new();
            for _ in 0..4 {
                let (b, token, stop) = (b.clone(), Arc::clone(&token), Arc::clone(&stop));
                readers.push(tokio::spawn(async move {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = b.verify(&token).await.unwrap();
                        // A cached answer never waits: give the revoke and the watcher a turn.
                        tokio::task::yield_now().await;
                    }
                }));
            }
            h.flows.revoke_api_key(&keyward::Actor::System, &created.key.id, &revoke_now()).await.unwrap();
            // Until node B has the revoke's notice it may still answer from a read that began
            // before the revoke committed (that is the propagation window, measured in
            // docs/benchmarks.md). Once it has it, no entry read before may survive.
            eventually("node B applies the revoke's notice", || async { applied() >= before + 2 }).await;
            eventually("node B refuses", || async { code(&b, &token).await == VerifyCode::Revoked }).await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            for r in readers {
                r.await.unwrap();
            }
            for _ in 0..20 {
                assert_eq!(code(&b, &token).await, VerifyCode::Revoked, "round {round}: a stale entry survived");
            }
        }
    }

    async fn channel_changes_reach_the_store_view_of_every_node(h) {
        let (b, _watching) = second_node(&h).await;
        let channel = h.flows.create_sales_channel(&keyward::Actor::System, keyward::CreateSalesChannel { name: "Web".into(), ..Default::default() }).await.unwrap();
        let pk = h.flows.create_api_key(&keyward::Actor::System, CreateApiKey::new("shop", ApiKeyType::Publishable, "user_test")).await.unwrap();
        h.flows.link_sales_channels(&keyward::Actor::System, &pk.key.id, std::slice::from_ref(&channel.id), &[]).await.unwrap();
        let token = pk.token.expose().to_owned();
        let v = b.verify(&token).await.unwrap();
        assert_eq!(v.sales_channel_ids().to_vec(), vec![channel.id.clone()]);
        let names = || async {
            b.sales_channels_by_id(v.sales_channel_ids()).await.unwrap().iter().map(|c| c.name.clone()).collect::<Vec<_>>()
        };
        assert_eq!(names().await, vec!["Web"]);
        h.flows
            .update_sales_channel(&keyward::Actor::System, &channel.id, &keyward::UpdateSalesChannel { name: Some("Shop".into()), ..Default::default() })
            .await
            .unwrap();
        eventually("node B sees the new name", || async { names().await == ["Shop"] }).await;
        h.flows.link_sales_channels(&keyward::Actor::System, &pk.key.id, &[], std::slice::from_ref(&channel.id)).await.unwrap();
        eventually("node B sees the key lose its channel", || async {
            b.verify(&token).await.unwrap().sales_channel_ids().is_empty()
        })
        .await;
    }

    async fn last_used_at_is_flushed_in_one_batch(h) {
        let _w = watch(&h.kw).await;
        let first = h.flows.create_api_key(&keyward::Actor::System, secret("one")).await.unwrap();
        let second = h.flows.create_api_key(&keyward::Actor::System, secret("two")).await.unwrap();
        h.clock.advance_seconds(5);
        for _ in 0..3 {
            assert!(h.kw.verify(first.token.expose()).await.unwrap().is_valid());
        }
        h.clock.advance_seconds(5);
        assert!(h.kw.verify(first.token.expose()).await.unwrap().is_valid());
        assert!(h.kw.verify(second.token.expose()).await.unwrap().is_valid());
        assert_eq!(h.kw.flush_usage().await.unwrap(), 2, "one row per key, the latest use");
        assert_eq!(h.kw.flush_usage().await.unwrap(), 0);
        let now = h.kw.now();
        for id in [&first.key.id, &second.key.id] {
            assert_eq!(h.kw.retrieve_api_key(id).await.unwrap().last_used_at, Some(now));
        }
    }

    async fn the_cache_is_bounded_and_stays_right_past_its_bound(h) {
        let store: Arc<dyn keyward::Store> = match h.db.backend {
            "sqlite" => Arc::new(keyward_sqlite::SqliteStore::connect(&h.db.url).await.unwrap().with_cache_capacity(50)),
            _ => Arc::new(keyward_postgres::PostgresStore::connect(&h.db.url).await.unwrap().with_cache_capacity(50)),
        };
        let small = Keyward::with_parts(store, h.clock.clone(), Arc::new(keyward::OsEntropy));
        let _w = watch(&small).await;
        let created = h.flows.create_api_keys(&keyward::Actor::System, (0..300).map(|i| secret(&format!("k{i}"))).collect()).await.unwrap();
        for round in 0..2 {
            for c in &created {
                assert_eq!(code(&small, c.token.expose()).await, VerifyCode::Valid, "round {round}");
            }
        }
        let stats = small.cache().stats();
        assert!(stats.keys <= 50 && stats.capacity == 50, "{stats:?}");
    }

    async fn without_a_watcher_nothing_is_cached(h) {
        let created = h.flows.create_api_key(&keyward::Actor::System, secret("unwatched")).await.unwrap();
        let (b, _) = h.node().await;
        assert_eq!(code(&b, created.token.expose()).await, VerifyCode::Valid);
        h.flows.revoke_api_key(&keyward::Actor::System, &created.key.id, &revoke_now()).await.unwrap();
        assert_eq!(code(&b, created.token.expose()).await, VerifyCode::Revoked, "read from storage, at once");
        assert_eq!(b.cache().stats().keys, 0);
    }
}

mod postgres_only {
    use super::*;

    /// A node whose notice connection drops may have missed notices: it empties its cache and
    /// reads storage again. The revoke here is written behind keyward's back (no notice at
    /// all), so only the flush on reconnect can make node B refuse within 10 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listener_that_reconnects_flushes_its_cache() {
        let h = keyward_testkit::Harness::postgres().await;
        let _w = watch(&h.kw).await;
        let created = h
            .flows
            .create_api_key(&keyward::Actor::System, secret("quiet"))
            .await
            .unwrap();
        let token = created.token.expose().to_owned();
        assert_eq!(code(&h.kw, &token).await, VerifyCode::Valid);
        let pool = sqlx::PgPool::connect(&h.db.url).await.unwrap();
        // Revoked before the harness clock's instant, so the key is refused once this is read.
        sqlx::query("UPDATE api_key SET revoked_at = '2020-01-01T00:00:00Z', revoked_by = 'dba' WHERE id = $1")
            .bind(created.key.id.as_str())
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(
            code(&h.kw, &token).await,
            VerifyCode::Valid,
            "still cached: no notice was sent"
        );
        let flushes = h.kw.cache().stats().flushes;
        let killed: Vec<i32> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid)::int FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(killed, vec![1], "one listener connection");
        eventually("the cache is flushed and read again", || async {
            h.kw.cache().stats().flushes > flushes && h.kw.cache().is_online()
        })
        .await;
        assert_eq!(code(&h.kw, &token).await, VerifyCode::Revoked);
    }
}
