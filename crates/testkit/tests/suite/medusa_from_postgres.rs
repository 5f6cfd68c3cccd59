//! Importing a Medusa store (built by `keyward_testkit::medusa` on the local Postgres) into both
//! stores: every live row with its fields, every token judged as Medusa judged it, the lazy
//! upgrade of scrypt secret keys, a second import and a dry run that change nothing, bad sources
//! refused by name with nothing written, and the races around a key's first use.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use keyward::ManualClockExt;
use keyward::import::{ImportInput, ImportReport, ImportSet};
use keyward::{ApiKeyId, ApiKeyType, RevokeApiKey, SalesChannelId, VerifyCode, Workflows};
use keyward_testkit::medusa::{MedusaDb, State};
use keyward_testkit::{Harness, epoch, on_both_stores, watch};

async fn source(m: &MedusaDb) -> ImportSet {
    ImportSet::from_medusa(keyward_postgres::medusa::read(m.url()).await.unwrap()).unwrap()
}

async fn import(flows: &Workflows, m: &MedusaDb) -> ImportReport {
    let input = ImportInput {
        set: source(m).await,
        update: false,
    };
    let run = format!("import-{}", keyward_flow::ids::new_ulid());
    flows.import_medusa(input, &run).await.unwrap()
}

async fn stored(h: &Harness, id: &str) -> keyward::store::StoredKey {
    let id = ApiKeyId::parse(id).unwrap();
    h.store.stored_api_keys(&[id]).await.unwrap().pop().unwrap()
}

/// Keys, channels and events in keyward: what "nothing was written" compares.
async fn footprint(h: &Harness) -> (usize, usize, usize) {
    let keys = h.store.count_api_keys(&keyward::ApiKeyFilter::new()).await.unwrap();
    let channels = h
        .store
        .count_sales_channels(&keyward::SalesChannelFilter::new())
        .await
        .unwrap();
    let events = h.flows.engine().log().list_events(100_000).await.unwrap().len();
    (keys as usize, channels as usize, events)
}

/// A Medusa-format secret token with the same redacted form as `token`, but another body.
fn lookalike(token: &str) -> String {
    let (head, tail) = (&token[..6], &token[token.len() - 3..]);
    format!("{head}{}{tail}", "0".repeat(token.len() - 9))
}

on_both_stores! {
    async fn imports_every_live_row_with_its_fields(h) {
        let m = MedusaDb::create(epoch()).await;
        let report = import(&h.flows, &m).await;
        assert_eq!(report.api_keys.imported, 10, "{report:?}");
        assert_eq!(report.api_keys.skipped, 2, "the deleted rows");
        assert_eq!(report.sales_channels.imported, 4);
        assert_eq!(report.sales_channels.skipped, 1);
        assert_eq!(report.links.imported, 5);
        assert_eq!(report.links.skipped, 2, "a deleted link and one to a deleted channel");
        assert_eq!(report.skipped.len(), 1);
        assert!(report.conflicts.is_empty());
        assert_eq!(report.legacy_secret_keys, 5);

        for k in m.live() {
            let key = h.kw.retrieve_api_key(&ApiKeyId::parse(k.id).unwrap()).await.unwrap();
            assert_eq!((key.title.as_str(), key.key_type), (k.title, k.kind), "{}", k.id);
            assert_eq!(key.created_at, epoch().plus_seconds(-86_400));
            assert_eq!(key.revoked_at.is_some(), k.state != State::Active, "{}", k.id);
            assert_eq!(key.redacted, keyward::token::redact(&k.token));
            let expected_by = if k.id == "apk_01PKDEFAULT00000000000000" { "" } else { "user_01FIXTURE0000000000000000" };
            assert_eq!(key.created_by, expected_by);
            if key.revoked_at.is_some() {
                assert_eq!(key.revoked_by.as_deref(), Some("user_01FIXTURE0000000000000000"));
            }
            let channels: Vec<String> = h
                .store
                .links_of_keys(std::slice::from_ref(&key.id))
                .await
                .unwrap()
                .into_iter()
                .map(|(_, c)| c.to_string())
                .collect();
            let mut expected: Vec<&str> = k.channels.clone();
            expected.sort_unstable();
            assert_eq!(channels, expected, "{}'s links", k.id);
        }
        for k in m.keys.iter().filter(|k| k.state == State::Deleted) {
            assert!(h.kw.retrieve_api_key(&ApiKeyId::parse(k.id).unwrap()).await.is_err());
        }
        let used = h.kw.retrieve_api_key(&ApiKeyId::parse("apk_01SKBACKOFFICE0000000000").unwrap()).await.unwrap();
        assert_eq!(used.last_used_at, Some(epoch().plus_seconds(-3_600)));

        let closed = h.kw.retrieve_sales_channel(&SalesChannelId::parse("sc_01CLOSED000000000000000000").unwrap()).await.unwrap();
        assert!(closed.is_disabled);
        assert_eq!(closed.description.as_deref(), Some("disabled"));
        let app = h.kw.retrieve_sales_channel(&SalesChannelId::parse("sc_01APP000000000000000000000").unwrap()).await.unwrap();
        assert_eq!(app.metadata, Some(serde_json::json!({"platform": "ios"})));
        assert!(!app.is_disabled);
        assert!(h.kw.retrieve_sales_channel(&SalesChannelId::parse("sc_01GONE00000000000000000000").unwrap()).await.is_err());

        // Published as any change is.
        let events = h.flows.engine().log().list_events(1_000).await.unwrap();
        let created = events.iter().filter(|(e, _)| e.name == "api_key.created").count();
        assert_eq!(created, 10, "one per imported key (the seed publishes none)");
    }

    async fn every_token_is_judged_as_medusa_judged_it(h) {
        let m = MedusaDb::create(epoch()).await;
        import(&h.flows, &m).await;
        let _watched = watch(&h.kw).await;
        for k in &m.keys {
            let v = h.kw.verify(&k.token).await.unwrap();
            let expected = match k.state {
                State::Active | State::RevokesLater => VerifyCode::Valid,
                State::Revoked => VerifyCode::Revoked,
                State::Deleted => VerifyCode::NotFound,
            };
            assert_eq!(v.code, expected, "{} ({:?})", k.id, k.state);
            if v.is_valid() && k.kind == ApiKeyType::Publishable {
                let mut ids: Vec<String> = v.sales_channel_ids().iter().map(|c| c.to_string()).collect();
                ids.sort();
                let mut expected: Vec<&str> = k.channels.clone();
                expected.sort_unstable();
                assert_eq!(ids, expected);
            }
            if k.kind == ApiKeyType::Secret {
                assert_eq!(h.kw.authenticate(&k.token).await.unwrap().is_some(), k.works(), "{}", k.id);
            }
        }
        // The scheduled revocation takes effect at its instant, from the cached entry.
        let retiring = m.key("apk_01SKRETIRING000000000000");
        h.clock.set_to(epoch().plus_seconds(365 * 86_400 - 1));
        assert_eq!(h.kw.verify(&retiring.token).await.unwrap().code, VerifyCode::Valid);
        h.clock.set_to(epoch().plus_seconds(365 * 86_400));
        assert_eq!(h.kw.verify(&retiring.token).await.unwrap().code, VerifyCode::Revoked);
    }

    async fn a_token_refused_before_the_import_works_at_once_after_it_on_every_node(h) {
        let m = MedusaDb::create(epoch()).await;
        let (other, _) = h.node().await;
        let _watched = (watch(&h.kw).await, watch(&other).await);
        let storefront = &m.key("apk_01PKSTORE0000000000000000").token;
        // Both nodes cache the refusal.
        for node in [&h.kw, &other] {
            assert_eq!(node.verify(storefront).await.unwrap().code, VerifyCode::NotFound);
        }
        import(&h.flows, &m).await;
        assert!(h.kw.verify(storefront).await.unwrap().is_valid(), "the importing node at once");
        keyward_testkit::eventually("the other node drops its cached refusal", || async {
            other.verify(storefront).await.unwrap().is_valid()
        })
        .await;
    }

    async fn a_legacy_key_is_upgraded_to_the_digest_on_first_use(h) {
        let m = MedusaDb::create(epoch()).await;
        import(&h.flows, &m).await;
        let ci = m.key("apk_01SKCI000000000000000000");
        let before = stored(&h, ci.id).await;
        assert!(keyward::legacy::is_hash(&before.stored_token), "kept as Medusa stored it");
        assert!(keyward::legacy::is_salt(&before.salt));
        assert_eq!(h.kw.count_legacy_secret_keys().await.unwrap(), 5);

        // A wrong token with the same redacted form costs one check and changes nothing.
        let wrong = lookalike(&ci.token);
        assert_eq!(keyward::token::redact(&wrong), keyward::token::redact(&ci.token));
        assert_eq!(h.kw.verify(&wrong).await.unwrap().code, VerifyCode::NotFound);
        assert_eq!(stored(&h, ci.id).await, before);

        assert!(h.kw.verify(&ci.token).await.unwrap().is_valid());
        let after = stored(&h, ci.id).await;
        assert_eq!(after.stored_token, keyward::token::digest_hex(&ci.token), "now the fast digest");
        assert_eq!(after.salt, "");
        assert_eq!(after.key, before.key, "nothing else about the key changed");
        assert_eq!(h.kw.count_legacy_secret_keys().await.unwrap(), 4);

        // From now on it verifies by digest: a fresh node (empty cache) finds it by one lookup
        // on the digest, though its scrypt hash is gone.
        let (other, _) = h.node().await;
        assert!(other.verify(&ci.token).await.unwrap().is_valid());
        assert_eq!(other.verify(&wrong).await.unwrap().code, VerifyCode::NotFound);
        // A revoked legacy key is upgraded too, and stays refused.
        let leaked = m.key("apk_01SKLEAKED00000000000000");
        assert_eq!(h.kw.verify(&leaked.token).await.unwrap().code, VerifyCode::Revoked);
        assert_eq!(stored(&h, leaked.id).await.salt, "");
    }

    async fn a_second_import_changes_nothing_and_a_dry_run_writes_nothing(h) {
        let m = MedusaDb::create(epoch()).await;
        let set = source(&m).await;
        let empty = footprint(&h).await;
        let dry = h.kw.plan_import(&set, false).await.unwrap();
        assert_eq!(dry.report.api_keys.imported, 10);
        assert_eq!(footprint(&h).await, empty, "planning writes nothing");

        import(&h.flows, &m).await;
        // Use a key in between: its upgrade and last use are keyward's, not differences.
        let ci = m.key("apk_01SKCI000000000000000000");
        assert!(h.kw.verify(&ci.token).await.unwrap().is_valid());
        h.kw.flush_usage().await.unwrap();
        let full = footprint(&h).await;
        let again = import(&h.flows, &m).await;
        assert_eq!(again.api_keys.imported + again.api_keys.updated + again.api_keys.conflicts, 0, "{again:?}");
        assert_eq!(again.api_keys.unchanged, 10);
        assert_eq!(again.sales_channels.unchanged, 4);
        assert_eq!(again.links.unchanged, 5);
        assert_eq!(footprint(&h).await, full, "nothing duplicated, no event");

        // A change in Medusa since: reported, not applied; applied with update. A revocation
        // from keyward is never lifted by it.
        m.execute("UPDATE api_key SET title = 'renamed in medusa' WHERE id = 'apk_01SKBACKOFFICE0000000000';
                   INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, id)
                   VALUES ('apk_01PKLONELY000000000000000', 'sc_01WEB000000000000000000000', 'pksc_new');").await;
        let lonely = ApiKeyId::parse("apk_01PKLONELY000000000000000").unwrap();
        h.flows
            .revoke_api_key(&keyward::Actor::System, &ApiKeyId::parse("apk_01SKCI000000000000000000").unwrap(), &RevokeApiKey {
                revoked_by: "keyward-admin".into(),
                revoke_in: None,
            })
            .await
            .unwrap();
        let reported = import(&h.flows, &m).await;
        assert_eq!(reported.api_keys.conflicts, 1, "{reported:?}");
        assert_eq!(reported.conflicts[0].fields, ["title"]);
        assert_eq!(reported.links.conflicts, 1);
        let backoffice = ApiKeyId::parse("apk_01SKBACKOFFICE0000000000").unwrap();
        assert_eq!(h.kw.retrieve_api_key(&backoffice).await.unwrap().title, "backoffice");
        assert!(h.store.links_of_keys(std::slice::from_ref(&lonely)).await.unwrap().is_empty());

        let input = ImportInput { set: source(&m).await, update: true };
        let updated = h.flows.import_medusa(input, "import-update").await.unwrap();
        assert_eq!((updated.api_keys.updated, updated.links.imported), (1, 1), "{updated:?}");
        assert_eq!(h.kw.retrieve_api_key(&backoffice).await.unwrap().title, "renamed in medusa");
        assert_eq!(h.store.links_of_keys(std::slice::from_ref(&lonely)).await.unwrap().len(), 1);
        assert_eq!(h.kw.verify(&ci.token).await.unwrap().code, VerifyCode::Revoked, "keyward's revocation holds");
    }

    async fn bad_sources_are_refused_by_name_and_nothing_is_written(h) {
        let empty = footprint(&h).await;
        let none = MedusaDb::empty().await;
        let e = keyward_postgres::medusa::read(&none.url).await.unwrap_err();
        assert!(e.message.contains("is not a Medusa v2 database: it has no table \"api_key\""), "{e}");

        let unreachable = keyward_postgres::medusa::read("postgres://medusa:hunter2@127.0.0.1:1/medusa").await.unwrap_err();
        assert!(unreachable.message.starts_with("cannot reach the Medusa database at 127.0.0.1:1/medusa"), "{unreachable}");
        assert!(!unreachable.message.contains("hunter2"), "the password is not shown");

        let m = MedusaDb::create(epoch()).await;
        m.execute("ALTER TABLE publishable_api_key_sales_channel RENAME TO pak_sc").await;
        let e = keyward_postgres::medusa::read(m.url()).await.unwrap_err();
        assert!(e.message.contains("no table \"publishable_api_key_sales_channel\""), "{e}");
        m.execute("ALTER TABLE pak_sc RENAME TO publishable_api_key_sales_channel").await;

        m.execute("ALTER TABLE api_key DROP CONSTRAINT api_key_type_check;
                   UPDATE api_key SET type = 'restricted' WHERE id = 'apk_01SKGRACEOVER00000000000'").await;
        let e = ImportSet::from_medusa(keyward_postgres::medusa::read(m.url()).await.unwrap()).unwrap_err();
        assert_eq!(
            e.message,
            "api_key row \"apk_01SKGRACEOVER00000000000\": type \"restricted\" is neither 'publishable' nor 'secret'; nothing was imported"
        );
        m.execute("UPDATE api_key SET type = 'secret', salt = 'not-a-salt' WHERE id = 'apk_01SKGRACEOVER00000000000'").await;
        let e = ImportSet::from_medusa(keyward_postgres::medusa::read(m.url()).await.unwrap()).unwrap_err();
        assert!(e.message.starts_with("api_key row \"apk_01SKGRACEOVER00000000000\": salt \"not-a-salt\""), "{e}");
        assert_eq!(footprint(&h).await, empty, "nothing was written");
    }

    async fn an_import_that_fails_midway_leaves_nothing(h) {
        let m = MedusaDb::create(epoch()).await;
        // keyward already holds the storefront's token under another id: the key step fails
        // after the channel step wrote; its compensation takes the channels back.
        let planted = m.key("apk_01PKSTORE0000000000000000");
        let set = source(&m).await;
        let mut twin = set.keys.iter().find(|k| k.key.id.as_str() == planted.id).unwrap().clone();
        twin.key.id = ApiKeyId::parse("apk_01TWIN00000000000000000000").unwrap();
        h.store.restore_api_keys(&[twin]).await.unwrap();
        let before = footprint(&h).await;
        let e = h.flows.import_medusa(ImportInput { set, update: false }, "import-fails").await.unwrap_err();
        assert!(e.message.contains("There already is an api key with this token"), "{e}");
        let after = footprint(&h).await;
        assert_eq!((after.0, after.1), (before.0, before.1), "no key and no channel left behind");
        for k in m.live() {
            assert!(h.kw.retrieve_api_key(&ApiKeyId::parse(k.id).unwrap()).await.is_err(), "{} left behind", k.id);
        }
    }

    async fn the_bulk_link_write_links_only_publishable_keys_to_channels_that_exist(h) {
        let m = MedusaDb::create(epoch()).await;
        import(&h.flows, &m).await;
        let id = |s: &str| ApiKeyId::parse(s).unwrap();
        let channel = |s: &str| SalesChannelId::parse(s).unwrap();
        let web = channel("sc_01WEB000000000000000000000");
        let asked = [
            (id("apk_01PKLONELY000000000000000"), web.clone()),
            (id("apk_01PKSTORE0000000000000000"), web.clone()), // already linked
            (id("apk_01SKCI000000000000000000"), web.clone()), // a secret key
            (id("apk_01PKLONELY000000000000000"), channel("sc_01NOSUCH")),
            (id("apk_01NOSUCH"), web.clone()),
        ];
        let linked = h.store.insert_links(&asked, epoch()).await.unwrap();
        assert_eq!(linked, [(id("apk_01PKLONELY000000000000000"), web)]);
    }

    async fn an_update_racing_a_revoke_never_lifts_it(h) {
        let m = MedusaDb::create(epoch()).await;
        import(&h.flows, &m).await;
        m.execute("UPDATE api_key SET title = title || ' (renamed in medusa)'").await;
        let revoke = RevokeApiKey { revoked_by: "keyward-admin".into(), revoke_in: None };
        // Forced: the plan read the key, then a revoke committed, then the update writes.
        let plan = h.kw.plan_import(&source(&m).await, true).await.unwrap();
        let (current, merged) = plan
            .changed_keys
            .iter()
            .find(|(c, _)| c.key.id.as_str() == "apk_01SKCI000000000000000000")
            .unwrap()
            .clone();
        h.flows.revoke_api_key(&keyward::Actor::System, &current.key.id, &revoke).await.unwrap();
        let written = h.store.replace_api_keys(&[(current.clone(), merged)]).await.unwrap();
        assert!(written.is_empty(), "the guard sees the revoke");
        assert_eq!(stored(&h, current.key.id.as_str()).await.key.revoked_by.as_deref(), Some("keyward-admin"));
        // Real concurrency: an update of every key while the active secret keys are revoked.
        m.execute("UPDATE api_key SET title = title || ' again'").await;
        let ids: Vec<ApiKeyId> = m
            .live()
            .filter(|k| k.kind == ApiKeyType::Secret && k.state == State::Active)
            .map(|k| ApiKeyId::parse(k.id).unwrap())
            .collect();
        let input = ImportInput { set: source(&m).await, update: true };
        let (report, ()) = tokio::join!(h.flows.import_medusa(input, "racing-update"), async {
            for id in &ids {
                let racer = RevokeApiKey { revoked_by: "racer".into(), revoke_in: None };
                // The first key was revoked above; revoking a secret key twice is refused.
                let _ = h.flows.revoke_api_key(&keyward::Actor::System, id, &racer).await;
            }
        });
        report.unwrap();
        for id in &ids {
            let key = h.kw.retrieve_api_key(id).await.unwrap();
            assert!(key.is_revoked_at(epoch()), "{id}: an import's update lifted a revocation");
            let token = &m.key(id.as_str()).token;
            assert_eq!(h.kw.verify(token).await.unwrap().code, VerifyCode::Revoked);
        }
    }

    async fn the_bulk_link_write_racing_a_delete_leaves_no_link_to_a_gone_key(h) {
        let m = MedusaDb::create(epoch()).await;
        import(&h.flows, &m).await;
        let web = SalesChannelId::parse("sc_01WEB000000000000000000000").unwrap();
        let mut outcomes = std::collections::BTreeMap::new();
        for round in 0..20u64 {
            let key = h
                .flows
                .create_api_key(&keyward::Actor::System, keyward::CreateApiKey::new(format!("race {round}"), ApiKeyType::Publishable, "t"))
                .await
                .unwrap()
                .key;
            let revoke = RevokeApiKey { revoked_by: "t".into(), revoke_in: None };
            h.flows.revoke_api_key(&keyward::Actor::System, &key.id, &revoke).await.unwrap();
            let (store, flows) = (h.store.clone(), h.flows.clone());
            let pair = [(key.id.clone(), web.clone())];
            // Started after a growing delay, so it lands before, during and after the delete.
            let wait = std::time::Duration::from_micros(500 * round);
            let link = tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                store.insert_links(&pair, epoch()).await
            });
            flows.delete_api_keys(&keyward::Actor::System, std::slice::from_ref(&key.id)).await.unwrap();
            let linked = link.await.unwrap().unwrap();
            *outcomes.entry(linked.len()).or_insert(0) += 1;
            assert!(h.kw.retrieve_api_key(&key.id).await.is_err());
            assert!(
                h.store.links_of_keys(std::slice::from_ref(&key.id)).await.unwrap().is_empty(),
                "round {round}: a link outlived its key"
            );
        }
        eprintln!("links written before the delete (count → rounds): {outcomes:?}");
    }

    async fn two_nodes_upgrading_one_key_at_once_both_accept(h) {
        let m = MedusaDb::create(epoch()).await;
        import(&h.flows, &m).await;
        let (other, _) = h.node().await;
        let key = m.key("apk_01SKBACKOFFICE0000000000");
        let (a, b) = tokio::join!(h.kw.verify(&key.token), other.verify(&key.token));
        assert!(a.unwrap().is_valid() && b.unwrap().is_valid());
        let row = stored(&h, key.id).await;
        assert_eq!((row.stored_token, row.salt), (keyward::token::digest_hex(&key.token), String::new()));
    }

    async fn a_revoke_racing_the_first_use_holds(h) {
        // Legacy keys as an import leaves them; each first use (scrypt, tens of ms) races a
        // revoke started after a different delay, so the revoke lands before, during and after
        // the check across the rounds.
        let (rows, keys): (Vec<_>, Vec<_>) = (0..16)
            .map(|i| {
                let (row, token) = keyward_testkit::medusa::legacy_secret("race", i, epoch());
                let id = row.key.id.clone();
                (row, (id, token))
            })
            .unzip();
        h.store.restore_api_keys(&rows).await.unwrap();
        // Both nodes cache (a cache is in use only while its store follows changes).
        let (other, _) = h.node().await;
        let _watched = (watch(&h.kw).await, watch(&other).await);
        let mut outcomes = std::collections::BTreeMap::new();
        for (round, (id, token)) in keys.iter().enumerate() {
            let (kw, t) = (h.kw.clone(), token.clone());
            let first_use = tokio::spawn(async move { kw.verify(&t).await });
            tokio::time::sleep(std::time::Duration::from_millis(4 * round as u64)).await;
            let revoke = RevokeApiKey { revoked_by: "racer".into(), revoke_in: None };
            h.flows.revoke_api_key(&keyward::Actor::System, id, &revoke).await.unwrap();
            let raced = first_use.await.unwrap().unwrap();
            *outcomes.entry(format!("{:?}", raced.code)).or_insert(0) += 1;
            // The revoke answered: from now on the key is refused, on this node and another.
            assert_eq!(h.kw.verify(token).await.unwrap().code, VerifyCode::Revoked, "round {round}");
            assert_eq!(other.verify(token).await.unwrap().code, VerifyCode::Revoked, "round {round}");
            let row = stored(&h, id.as_str()).await;
            assert_eq!(row.key.revoked_by.as_deref(), Some("racer"), "the upgrade kept the revocation");
        }
        eprintln!("first uses racing a revoke: {outcomes:?}");
    }

    async fn no_plaintext_secret_is_at_rest_after_import_and_upgrade(h) {
        let m = MedusaDb::create(epoch()).await;
        import(&h.flows, &m).await;
        let secrets: Vec<&str> = m.keys.iter().filter(|k| k.kind == ApiKeyType::Secret).map(|k| k.token.as_str()).collect();
        for t in &secrets {
            h.kw.verify(t).await.unwrap();
        }
        h.kw.flush_usage().await.unwrap();
        let upgraded = keyward::token::digest_hex(secrets[0]);
        assert!(keyward_testkit::stored_anywhere(&h.db, &upgraded).await, "the search sees the key rows");
        for t in secrets {
            assert!(!keyward_testkit::stored_anywhere(&h.db, t).await, "a plaintext secret is stored");
            assert!(!keyward_testkit::stored_anywhere(&h.db, &t[3..]).await, "a secret's body is stored");
        }
    }
}
