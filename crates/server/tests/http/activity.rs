//! `GET /admin/workflow-runs` and `GET /admin/events` (the dashboard's Activity view) on both
//! stores: what they show, what they never show (a token), and what they refuse.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use keyward_flow::{DeliveryOptions, StepError, Subscriber};
use reqwest::Method;
use serde_json::{Value, json};
use support::read;

fn named<'a>(list: &'a Value, key: &str, name: &str) -> Vec<&'a Value> {
    list.as_array().unwrap().iter().filter(|v| v[key] == name).collect()
}

over_http! {
    async fn a_roll_and_a_refused_link_are_listed_with_their_steps_and_never_a_token(app) {
        let created = app.create_key("billing", "secret").await;
        let id = created["id"].as_str().unwrap();
        let (s, rolled) = app.post(&format!("/admin/api-keys/{id}/roll"), json!({"revoke_in": 60})).await;
        assert_eq!(s, 200, "{rolled}");
        let pk = app.create_key("shop", "publishable").await;
        let (s, _) = app
            .post(
                &format!("/admin/api-keys/{}/sales-channels", pk["id"].as_str().unwrap()),
                json!({"add": ["sc_01JZZZZZZZZZZZZZZZZZZZZZZZ"]}),
            )
            .await;
        assert_eq!(s, 400);

        let (s, body) = app.get("/admin/workflow-runs").await;
        assert_eq!(s, 200, "{body}");
        assert_eq!(body["limit"], 20);
        let text = body.to_string();
        for token in [&created["token"], &rolled["api_key"]["token"]] {
            assert!(!text.contains(token.as_str().unwrap()), "a run never shows a token");
        }
        let runs = &body["workflow_runs"];
        let roll = named(runs, "workflow", "roll-api-key");
        assert_eq!(roll.len(), 1, "{body}");
        assert_eq!(roll[0]["state"], "done");
        assert_eq!(roll[0]["errors"], json!([]));
        assert_eq!(roll[0]["compensations"], 0);
        let steps = roll[0]["steps"].as_array().unwrap();
        let names: Vec<(&str, &str)> = steps
            .iter()
            .map(|s| (s["step"].as_str().unwrap(), s["state"].as_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("prepare-roll", "done"),
                ("create-api-keys", "done"),
                ("link-sales-channels-to-api-key", "skipped"),
                ("revoke-api-keys", "done"),
                ("announce-roll", "done"),
            ],
            "a secret key has no channels to carry over"
        );
        assert!(roll[0]["created_at"].as_str().unwrap().ends_with('Z'));
        let link = named(runs, "workflow", "link-sales-channels-to-api-key");
        assert_eq!(link[0]["state"], "reverted");
        assert!(
            link[0]["errors"][0]["error"].as_str().unwrap().contains("sc_01JZZZZZZZZZZZZZZZZZZZZZZZ"),
            "{}",
            link[0]
        );
        // Newest first: the refused link came last.
        assert_eq!(runs[0]["workflow"], "link-sales-channels-to-api-key");

        let (s, only) = app.get("/admin/workflow-runs?state=reverted&limit=5").await;
        assert_eq!(s, 200);
        let only = only["workflow_runs"].as_array().unwrap();
        assert!(!only.is_empty() && only.iter().all(|r| r["state"] == "reverted"), "{only:?}");
        let (_, one) = app.get("/admin/workflow-runs?limit=1").await;
        assert_eq!(one["workflow_runs"].as_array().unwrap().len(), 1);
    }

    async fn events_show_each_subscribers_delivery_its_attempts_and_next_try(app) {
        let engine = app.flows.engine();
        engine
            .subscribe(Subscriber::new("audit", &["api_key.created"], |_, _| async {
                Err(StepError::new("the audit service answered 503"))
            }))
            .unwrap();
        engine.register_subscribers().await.unwrap();
        let key = app.create_key("audited", "publishable").await;
        assert_eq!(engine.deliver_due(&DeliveryOptions::default()).await.unwrap(), 1);

        let (s, body) = app.get("/admin/events?limit=100").await;
        assert_eq!(s, 200, "{body}");
        let created = named(&body["events"], "name", "api_key.created");
        let event = created.iter().find(|e| e["data"]["id"] == key["id"]).expect("the create's event");
        assert_eq!(event["metadata"]["workflow"], "create-api-keys");
        assert!(event["id"].as_str().unwrap().starts_with("evt_"));
        let d = &event["deliveries"][0];
        assert_eq!((d["subscriber"].as_str(), d["state"].as_str()), (Some("audit"), Some("pending")));
        assert_eq!(d["attempts"], 1);
        assert_eq!(d["last_error"], "the audit service answered 503");
        assert!(d["next_attempt_at"].is_string(), "a pending delivery says when it is tried next: {d}");
        assert_eq!(d["delivered_at"], Value::Null);
    }

    async fn bad_queries_are_refused_in_words_and_strangers_get_401(app) {
        for (path, message) in [
            ("/admin/workflow-runs?limit=0", "Invalid request: Expected a whole number from 1 to 100 for field 'limit', got: '0'"),
            ("/admin/events?limit=101", "Invalid request: Expected a whole number from 1 to 100 for field 'limit', got: '101'"),
            ("/admin/events?limit=ten", "Invalid request: Expected type: 'number' for field 'limit', got: 'ten'"),
            ("/admin/workflow-runs?state=stuck", "Invalid request: Expected: 'running, compensating, done, reverted, failed' for field 'state', but got: 'stuck'"),
            ("/admin/events?order=name", "Invalid request: Unrecognized fields: 'order'"),
        ] {
            let (s, body) = app.get(path).await;
            assert_eq!((s, body["message"].as_str()), (400, Some(message)), "{path}: {body}");
        }
        for path in ["/admin/workflow-runs", "/admin/events"] {
            let (s, _) = read(app.anon(Method::GET, path).send().await.unwrap()).await;
            assert_eq!(s, 401, "{path}");
        }
    }
}
