//! Requests that race over a real socket: whatever interleaving happens, an answered revoke holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::json;
use support::read;

over_http! {
    async fn three_concurrent_revokes_of_one_secret_key_leave_it_revoked(app) {
        let mut keys = Vec::new();
        for i in 0..50 {
            let created = app.create_key(&format!("raced {i}"), "secret").await;
            keys.push((created["id"].as_str().unwrap().to_owned(), created["token"].as_str().unwrap().to_owned()));
        }
        let mut races = Vec::new();
        for (id, _) in &keys {
            for _ in 0..3 {
                let request = app.admin(Method::POST, &format!("/admin/api-keys/{id}/revoke")).json(&json!({}));
                races.push(tokio::spawn(async move { read(request.send().await.unwrap()).await }));
            }
        }
        let mut answers = Vec::new();
        for race in races {
            answers.push(race.await.unwrap());
        }
        for (i, (id, sk)) in keys.iter().enumerate() {
            let three = &answers[i * 3..i * 3 + 3];
            let ok: Vec<_> = three.iter().filter(|(s, _)| *s == 200).collect();
            assert_eq!(ok.len(), 1, "exactly one revoke of {id} wins: {three:?}");
            assert!(ok[0].1["api_key"]["revoked_at"].is_string(), "{three:?}");
            for (status, body) in three.iter().filter(|(s, _)| *s != 200) {
                assert_eq!(*status, 400, "{body}");
                assert_eq!(body["message"], "There are 1 secret keys that are already revoked.");
            }
            let (_, got) = app.get(&format!("/admin/api-keys/{id}")).await;
            assert!(got["api_key"]["revoked_at"].is_string(), "{id} lost its revocation: {got}");
            let (_, verdict) = app.post("/v1/keys/verify", json!({"key": sk})).await;
            assert_eq!(verdict["code"], "REVOKED", "{id}: {verdict}");
            // As a credential too (a few: each refusal counts against the address's limit).
            if i < 10 {
                let basic = format!("Basic {}", STANDARD.encode(format!("{sk}:")));
                let (status, _) = read(
                    app.anon(Method::GET, "/admin/api-keys").header("authorization", basic).send().await.unwrap(),
                )
                .await;
                assert_eq!(status, 401, "the revoked key {id} still authenticates");
            }
        }
    }

    async fn a_revoked_publishable_key_is_not_brought_back_by_a_later_revoke_in(app) {
        let pk = app.create_key("storefront", "publishable").await;
        let id = pk["id"].as_str().unwrap();
        let (s, first) = app.post(&format!("/admin/api-keys/{id}/revoke"), json!({})).await;
        assert_eq!(s, 200, "{first}");
        let (s, second) = app.post(&format!("/admin/api-keys/{id}/revoke"), json!({"revoke_in": 3600})).await;
        assert_eq!(s, 200, "{second}");
        assert_eq!(second["api_key"]["revoked_at"], first["api_key"]["revoked_at"], "the revocation stays in the past");
        let (_, verdict) = app.post("/v1/keys/verify", json!({"key": pk["token"]})).await;
        assert_eq!(verdict["code"], "REVOKED", "{verdict}");
    }

    async fn a_scheduled_revocation_can_still_be_moved(app) {
        let pk = app.create_key("storefront", "publishable").await;
        let id = pk["id"].as_str().unwrap();
        let (_, first) = app.post(&format!("/admin/api-keys/{id}/revoke"), json!({"revoke_in": 3600})).await;
        let (s, second) = app.post(&format!("/admin/api-keys/{id}/revoke"), json!({"revoke_in": 60})).await;
        assert_eq!(s, 200, "{second}");
        assert_ne!(second["api_key"]["revoked_at"], first["api_key"]["revoked_at"]);
        let (_, verdict) = app.post("/v1/keys/verify", json!({"key": pk["token"]})).await;
        assert_eq!(verdict["code"], "VALID", "{verdict}");
    }

    async fn a_revoked_key_cannot_be_rolled(app) {
        for key_type in ["publishable", "secret"] {
            let key = app.create_key("old", key_type).await;
            let id = key["id"].as_str().unwrap();
            app.post(&format!("/admin/api-keys/{id}/revoke"), json!({})).await;
            let (s, body) = app.post(&format!("/admin/api-keys/{id}/roll"), json!({})).await;
            assert_eq!(s, 400, "{body}");
            assert_eq!(body["message"], format!("There are 1 {key_type} keys that are already revoked."));
        }
    }

    async fn a_roll_racing_a_narrowing_update_never_hands_the_successor_the_wider_addresses(app) {
        let (wide, narrow) = (json!(["192.0.2.0/24", "198.51.100.0/24"]), json!(["192.0.2.0/24"]));
        let mut seen = std::collections::BTreeMap::<&str, u32>::new();
        for round in 0..20 {
            let title = format!("raced roll {round}");
            let (s, created) = app.post("/admin/api-keys", json!({"title": title, "type": "secret", "allowed_ips": wide})).await;
            assert_eq!(s, 200, "{created}");
            let id = created["api_key"]["id"].as_str().unwrap().to_owned();
            let roll = app.admin(Method::POST, &format!("/admin/api-keys/{id}/roll")).json(&json!({}));
            let update = app.admin(Method::POST, &format!("/admin/api-keys/{id}")).json(&json!({"allowed_ips": narrow}));
            let roll = tokio::spawn(async move { read(roll.send().await.unwrap()).await });
            let update = tokio::spawn(async move { read(update.send().await.unwrap()).await });
            let ((rolled_status, rolled), (updated_status, updated)) = (roll.await.unwrap(), update.await.unwrap());
            assert_eq!(updated_status, 200, "{updated}");
            // The update wrote while the old key was live: in any serial order, the roll that
            // revoked it afterwards copied the narrowed addresses (or was refused).
            let narrowed_while_live = updated["api_key"]["revoked_at"].is_null();
            let (_, same_title) = app.get(&format!("/admin/api-keys?title={}", title.replace(' ', "%20"))).await;
            match rolled_status {
                200 => {
                    let successor = &rolled["api_key"]["allowed_ips"];
                    assert!(*successor == wide || *successor == narrow, "{rolled}");
                    if narrowed_while_live {
                        assert_eq!(*successor, narrow, "the successor kept addresses narrowed during its roll: {rolled} {updated}");
                        *seen.entry("update, then roll").or_default() += 1;
                    } else {
                        *seen.entry("roll, then update").or_default() += 1;
                    }
                    assert_eq!(same_title["count"], 2, "the old key and its successor: {same_title}");
                }
                409 => {
                    assert!(narrowed_while_live, "a refused roll leaves the key live: {updated}");
                    assert_eq!(same_title["count"], 1, "the refused roll left no successor: {same_title}");
                    *seen.entry("roll refused").or_default() += 1;
                }
                other => panic!("roll answered {other}: {rolled}"),
            }
        }
        eprintln!("interleavings seen: {seen:?}");
    }
}
