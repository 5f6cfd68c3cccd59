//! The notices of keys' expiries on both stores: `api_key.expiring` a set time before a key
//! expires and `api_key.expired` at its instant, each once per key and instant, however many
//! nodes send them at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use keyward::ManualClockExt;
use std::collections::BTreeMap;
use std::time::Duration;

use keyward::{ApiKeyId, ApiKeyType, CreateApiKey, RevokeApiKey, Workflows};
use keyward_testkit::on_both_stores;

const WEEK: Duration = Duration::from_secs(7 * 86_400);

fn expiring(title: &str, seconds: i64) -> CreateApiKey {
    let mut key = CreateApiKey::new(title, ApiKeyType::Secret, "user_test");
    key.expires_in = Some(seconds);
    key
}

/// The expiry events published so far: (event name, key id) → how many times.
async fn notices(flows: &Workflows) -> BTreeMap<(String, String), usize> {
    let mut seen = BTreeMap::new();
    for (event, _) in flows.engine().log().list_events(1000).await.unwrap() {
        if event.name.starts_with("api_key.expir") {
            let id = event.data["id"].as_str().unwrap().to_owned();
            *seen.entry((event.name.clone(), id)).or_default() += 1;
        }
    }
    seen
}

/// Both nodes send what is due at the same moment, three times over.
async fn race(a: &Workflows, b: &Workflows) {
    for _ in 0..3 {
        let (x, y) = tokio::join!(a.notify_api_key_expiry(WEEK), b.notify_api_key_expiry(WEEK));
        x.unwrap();
        y.unwrap();
    }
}

fn once(pairs: &[(&str, &ApiKeyId)]) -> BTreeMap<(String, String), usize> {
    pairs
        .iter()
        .map(|(name, id)| ((name.to_string(), id.to_string()), 1))
        .collect()
}

on_both_stores! {
    async fn each_notice_is_published_once_across_two_nodes_at_its_time(h) {
        let (_, other) = h.node().await;
        let day = h.flows.create_api_key(&keyward::Actor::System, expiring("a day", 86_400)).await.unwrap().key;
        let month = h.flows.create_api_key(&keyward::Actor::System, expiring("a month", 30 * 86_400)).await.unwrap().key;
        let revoked = h.flows.create_api_key(&keyward::Actor::System, expiring("revoked first", 3_600)).await.unwrap().key;
        h.flows
            .revoke_api_key(&keyward::Actor::System, &revoked.id, &RevokeApiKey { revoked_by: "user_test".into(), revoke_in: None })
            .await
            .unwrap();
        h.flows.create_api_key(&keyward::Actor::System, CreateApiKey::new("never", ApiKeyType::Secret, "user_test")).await.unwrap();

        race(&h.flows, &other).await;
        assert_eq!(notices(&h.flows).await, once(&[("api_key.expiring", &day.id)]), "only the key within the week");

        h.clock.advance_seconds(86_400);
        race(&h.flows, &other).await;
        assert_eq!(
            notices(&h.flows).await,
            once(&[("api_key.expiring", &day.id), ("api_key.expired", &day.id)]),
            "expired at its instant, a revoked key never"
        );

        // The month-long key comes within the week of its expiry on day 23.
        h.clock.advance_seconds(21 * 86_400);
        race(&h.flows, &other).await;
        assert!(!notices(&h.flows).await.contains_key(&("api_key.expiring".into(), month.id.to_string())));
        h.clock.advance_seconds(86_400);
        race(&h.flows, &other).await;
        h.clock.advance_seconds(7 * 86_400);
        race(&h.flows, &other).await;
        assert_eq!(
            notices(&h.flows).await,
            once(&[
                ("api_key.expiring", &day.id),
                ("api_key.expired", &day.id),
                ("api_key.expiring", &month.id),
                ("api_key.expired", &month.id),
            ])
        );
        let (event, _) = h.flows.engine().log().list_events(1).await.unwrap().remove(0);
        assert_eq!(event.name, "api_key.expired");
        assert_eq!(event.data, serde_json::json!({"id": month.id, "expires_at": month.expires_at}));
        assert_eq!(event.metadata["workflow"], "notify-api-key-expiry");
    }

    async fn a_failed_run_leaves_its_notices_due(h) {
        let day = h.flows.create_api_key(&keyward::Actor::System, expiring("a day", 3_600)).await.unwrap().key;
        // A run whose plan is sent and then fails: its compensation gives the notices up.
        let engine = keyward_flow::Engine::new(h.kw.clone(), h.flows.engine().log().clone());
        let failing = keyward_flow::Step::new("fail", |_: (), _cx: keyward_flow::StepContext<keyward::Keyward>| async move {
            Err::<keyward_flow::StepResponse<()>, _>(keyward_flow::StepError::permanent("after the send"))
        });
        let workflow = keyward_flow::Workflow::<keyward::Keyward, keyward::workflows::ExpiryNoticesInput, ()>::new("expiry-then-fail")
            .step(&keyward::workflows::plan_expiry_notices_step(), |d| d.input())
            .step(&keyward::workflows::send_expiry_notices_step(), |d| d.output(keyward::workflows::DUE_NOTICES))
            .step(&failing, |_| Ok(()));
        let handle = engine.register(workflow).unwrap();
        let input = keyward::workflows::ExpiryNoticesInput { warn_before: 7 * 86_400 };
        let run = engine.run(&handle, input, keyward_flow::RunOptions::default().throw_on_error(false)).await.unwrap();
        assert_eq!(run.state, keyward_flow::RunState::Reverted);
        assert!(notices(&h.flows).await.is_empty(), "a reverted run publishes nothing");
        let sent = h.flows.notify_api_key_expiry(WEEK).await.unwrap();
        assert_eq!(sent.len(), 1, "the notice is still due");
        assert_eq!(notices(&h.flows).await, once(&[("api_key.expiring", &day.id)]));
    }
}
