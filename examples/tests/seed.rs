//! The seed's examples run for real: the custom route over a socket, and the roll-back, on
//! SQLite and on Postgres.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use keyward::Workflows;
use keyward_flow::{RunOptions, RunState};
use keyward_testkit::TestDb;
use serde_json::Value;

async fn serve(flows: &Workflows) -> String {
    let mine = keyward_examples::routes(flows).unwrap();
    let state = keyward_server::AppState::new(flows.clone(), b"test".to_vec());
    let app = keyward_server::app(state.clone()).merge(mine);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(keyward_server::serve_router(state, app, listener));
    base
}

async fn keys_titled(flows: &Workflows, title: &str) -> usize {
    keyward_testkit::keys_titled(flows.kw(), title).await.len()
}

async fn the_route_runs_the_workflow(db: TestDb) {
    let flows = db.workflows().await;
    let base = serve(&flows).await;
    let body: Value = reqwest::get(format!("{base}/workflow?title=From%20a%20route"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["api_key"]["title"], "From a route");
    assert_eq!(body["api_key"]["type"], "publishable");
    assert!(body["api_key"]["token"].as_str().unwrap().starts_with("pk_"));
    assert_eq!(keys_titled(&flows, "From a route").await, 1);
    // keyward's own API is served beside it.
    let health = reqwest::get(format!("{base}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
}

async fn the_second_step_failing_leaves_no_key(db: TestDb) {
    let flows = db.workflows().await;
    let wf = flows.engine().register(keyward_examples::rollback_workflow()).unwrap();
    let input = keyward_examples::Input {
        title: "Rolled back".into(),
    };
    let run = flows
        .engine()
        .run(&wf, input, RunOptions::default().throw_on_error(false))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Reverted);
    assert_eq!(run.errors[0].step, "notify-partner");
    assert_eq!(run.errors[0].error.message(), "the partner system refused the key");
    assert_eq!(
        keys_titled(&flows, "Rolled back").await,
        0,
        "the key was compensated away"
    );
}

async fn the_subscriber_and_the_job_run_the_workflow(db: TestDb) {
    let flows = db.workflows().await;
    let create = flows
        .engine()
        .register(keyward_examples::create_api_key_workflow())
        .unwrap();
    flows
        .engine()
        .subscribe(keyward_examples::user_created_subscriber(&flows, create.clone()))
        .unwrap();
    flows.engine().register_subscribers().await.unwrap();
    flows.create_user("new@example.com", "supersecret").await.unwrap();
    let options = keyward_flow::DeliveryOptions::default();
    while flows.engine().deliver_due(&options).await.unwrap() > 0 {}
    assert_eq!(keys_titled(&flows, "Welcome key for new@example.com").await, 1);

    let daily = keyward_examples::daily_job(&flows, create.clone()).unwrap();
    assert_eq!(daily.name(), "example:daily-api-key");
    let midnight = keyward_flow::Schedule::cron("0 0 * * *")
        .unwrap()
        .next_after(1_700_000_000_000);
    assert_eq!(midnight, Some(1_700_006_400_000), "the next midnight, UTC");
    // The same job every second, to see it run.
    let every = keyward_flow::Schedule::every(std::time::Duration::from_secs(1)).unwrap();
    flows
        .engine()
        .schedule(keyward_examples::api_key_job(&flows, create, every))
        .unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let scheduler = flows.engine().spawn_scheduler(stopped);
    let start = std::time::Instant::now();
    while keys_titled(&flows, "Key of the day").await == 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the job did not run"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = stop.send(true);
    scheduler.await.unwrap();
}

keyward_testkit::on_both_dbs! {
    async fn the_custom_route_runs_the_create_api_key_workflow(db) { the_route_runs_the_workflow(db).await; }
    async fn a_workflow_whose_second_step_fails_leaves_no_key(db) { the_second_step_failing_leaves_no_key(db).await; }
    async fn the_seed_subscriber_and_job_run_the_workflow(db) { the_subscriber_and_the_job_run_the_workflow(db).await; }
}
