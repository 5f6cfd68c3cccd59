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
}
