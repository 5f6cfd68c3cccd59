//! Events, subscribers and scheduled jobs on a real log (SQLite file and Postgres): events exist
//! only once their run is done; deliveries are retried until they succeed and happen once per
//! (event, subscriber) across nodes; each tick of a job runs once across nodes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_flow::{
    Clock, Concurrency, DeliveryOptions, Engine, Event, Job, JobOutcome, JobRunRecord, ManualClock, NewEvent,
    RunOptions, RunState, Schedule, Step, StepContext, StepError, StepResponse, Subscriber, Workflow,
};
use keyward_testkit::TestDb;
use serde_json::json;

/// What handlers saw: (event id, subscriber) → times handled; job runs by node.
#[derive(Default)]
struct Seen {
    handled: Mutex<HashMap<(String, String), u32>>,
    failures_left: AtomicU32,
    job_runs: Mutex<Vec<String>>,
}

type Shared = Arc<Seen>;

async fn engine(db: &TestDb, seen: Shared, node: &str) -> Engine<Shared> {
    let (_, log) = db.open().await;
    log.migrate().await.unwrap();
    Engine::new(seen, log).with_node_id(node)
}

/// An engine whose log, and so whose schedule, runs on `clock`.
async fn engine_on(db: &TestDb, seen: Shared, node: &str, clock: &ManualClock) -> Engine<Shared> {
    let (_, log) = db.open_on(clock).await;
    log.migrate().await.unwrap();
    Engine::new(seen, log).with_node_id(node)
}

/// An instant on a whole second, where the manual clock starts.
const T0: i64 = 1_700_000_000_000;

/// Waits until `waiters` tasks wait on the manual clock: the schedulers have read "now" and
/// sleep until their first tick, so moving the clock cannot skip it.
async fn asleep(clock: &ManualClock, waiters: usize) {
    let start = Instant::now();
    while clock.waiters() < waiters {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the schedulers never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits (on the real clock, briefly) until `job` has `n` recorded ticks that pass `ok`: what
/// the schedulers do once the manual clock has moved past a tick.
async fn settle(e: &Engine<Shared>, job: &str, n: usize, ok: impl Fn(&JobRunRecord) -> bool) {
    let start = Instant::now();
    loop {
        let runs = e.log().list_job_runs(Some(job), 100).await.unwrap();
        if runs.len() >= n && runs.iter().all(&ok) {
            assert_eq!(runs.len(), n, "more ticks than the clock passed: {runs:?}");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "gave up waiting for {n} ticks of {job}: {runs:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fast() -> DeliveryOptions {
    DeliveryOptions {
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        poll: Duration::from_millis(100),
        batch: 200,
    }
}

fn counting(id: &'static str, events: &[&str]) -> Subscriber<Shared> {
    Subscriber::new(id, events, move |event: Event, seen: Arc<Shared>| async move {
        *seen
            .handled
            .lock()
            .unwrap()
            .entry((event.id, id.to_owned()))
            .or_default() += 1;
        Ok(())
    })
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

keyward_testkit::on_both_dbs! {
    async fn a_runs_events_are_published_when_it_is_done_and_never_when_it_is_compensated(db) {
        let e = engine(&db, Shared::default(), "n1").await;
        let make = Step::new("make", |n: i64, _cx: StepContext<Shared>| async move {
            Ok(StepResponse::new(n).event("thing.made", json!({ "id": n })))
        });
        let fail = Step::new("fail", |n: i64, _cx: StepContext<Shared>| async move {
            if n < 0 {
                return Err(StepError::permanent("negative"));
            }
            Ok(StepResponse::new(()))
        });
        let wf = e
            .register(Workflow::<Shared, i64, ()>::new("maker").step(&make, |d| d.input()).step(&fail, |d| d.input()))
            .unwrap();
        let lost = e.run(&wf, -1, RunOptions::default().throw_on_error(false)).await.unwrap();
        assert_eq!(lost.state, RunState::Reverted);
        assert!(e.log().list_events(10).await.unwrap().is_empty(), "a compensated run publishes nothing");
        let kept = e.run(&wf, 7, RunOptions::default()).await.unwrap();
        let events = e.log().list_events(10).await.unwrap();
        assert_eq!(events.len(), 1);
        let ev = &events[0].0;
        assert_eq!((ev.name.as_str(), &ev.data), ("thing.made", &json!({"id": 7})));
        assert_eq!(ev.metadata["event_group_id"], kept.transaction_id.as_str());
        assert_eq!((ev.metadata["object"].as_str(), ev.metadata["action"].as_str()), (Some("thing"), Some("made")));
    }

    async fn a_failing_subscriber_is_retried_with_backoff_until_it_succeeds(db) {
        let clock = ManualClock::new(T0);
        let seen = Shared::default();
        seen.failures_left.store(2, Ordering::SeqCst);
        let e = engine_on(&db, seen.clone(), "n1", &clock).await;
        e.subscribe(Subscriber::new("flaky", &["*"], |event: Event, seen: Arc<Shared>| async move {
            if seen.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                return Err(StepError::new("receiver is down"));
            }
            *seen.handled.lock().unwrap().entry((event.id, "flaky".into())).or_default() += 1;
            Ok(())
        }))
        .unwrap();
        e.register_subscribers().await.unwrap();
        e.publish(&[NewEvent::new("a.b", json!({"id": 1}))]).await.unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = e.spawn_dispatcher(fast(), stopped);
        // Each failure puts the delivery off by the backoff on the clock; nothing moves until
        // the clock does.
        let mut moved = Duration::ZERO;
        while seen.handled.lock().unwrap().is_empty() {
            assert!(moved < Duration::from_secs(10), "never delivered");
            clock.advance(Duration::from_millis(10));
            moved += Duration::from_millis(10);
            // Real time only for the dispatcher's database round trips.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(moved >= Duration::from_millis(150), "two backoffs (50 and 100 ms) passed on the clock first: {moved:?}");
        let _ = stop.send(true);
        task.await.unwrap();
        let (_, deliveries) = e.log().list_events(1).await.unwrap().remove(0);
        assert_eq!(deliveries.len(), 1);
        assert_eq!((deliveries[0].state.as_str(), deliveries[0].attempts), ("delivered", 3));
        assert_eq!(deliveries[0].last_error, None);
    }

    async fn subscribers_get_only_the_events_they_take(db) {
        let seen = Shared::default();
        let e = engine(&db, seen.clone(), "n1").await;
        e.subscribe(counting("keys", &["api_key.created"])).unwrap();
        e.subscribe(counting("all", &["*"])).unwrap();
        assert!(e.subscribe(counting("all", &["*"])).is_err(), "ids are unique");
        e.register_subscribers().await.unwrap();
        e.publish(&[NewEvent::new("api_key.created", json!({})), NewEvent::new("user.created", json!({}))])
            .await
            .unwrap();
        while e.deliver_due(&fast()).await.unwrap() > 0 {}
        let handled = seen.handled.lock().unwrap();
        assert_eq!(handled.keys().filter(|(_, s)| s == "keys").count(), 1);
        assert_eq!(handled.keys().filter(|(_, s)| s == "all").count(), 2);
    }

    async fn two_nodes_deliver_each_event_to_each_subscriber_exactly_once(db) {
        let seen = Shared::default();
        let (a, b) = (engine(&db, seen.clone(), "node-a").await, engine(&db, seen.clone(), "node-b").await);
        for e in [&a, &b] {
            for id in ["s1", "s2", "s3"] {
                e.subscribe(counting(id, &["*"])).unwrap();
            }
            e.register_subscribers().await.unwrap();
        }
        let events: Vec<NewEvent> = (0..1000).map(|i| NewEvent::new("n.e", json!({ "id": i }))).collect();
        for chunk in events.chunks(100) {
            a.publish(chunk).await.unwrap();
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (ta, tb) = (a.spawn_dispatcher(fast(), stopped.clone()), b.spawn_dispatcher(fast(), stopped));
        wait_until("3000 deliveries", Duration::from_secs(60), || seen.handled.lock().unwrap().len() == 3000).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop.send(true);
        ta.await.unwrap();
        tb.await.unwrap();
        let handled = seen.handled.lock().unwrap();
        assert_eq!(handled.len(), 3000);
        let twice: Vec<_> = handled.iter().filter(|(_, n)| **n != 1).collect();
        assert!(twice.is_empty(), "handled more than once: {twice:?}");
    }

    async fn a_job_every_second_runs_once_per_tick_across_two_nodes_and_survives_one_dying(db) {
        let clock = ManualClock::new(T0);
        let seen = Shared::default();
        let (a, b) = (engine_on(&db, seen.clone(), "node-a", &clock).await, engine_on(&db, seen.clone(), "node-b", &clock).await);
        for (e, node) in [(&a, "node-a"), (&b, "node-b")] {
            let job = Job::new("tick", Schedule::every(Duration::from_secs(1)).unwrap(), move |seen: Arc<Shared>| async move {
                seen.job_runs.lock().unwrap().push(node.to_owned());
                Ok(())
            });
            e.schedule(job).unwrap();
        }
        let (stop_a, stopped_a) = tokio::sync::watch::channel(false);
        let (stop_b, stopped_b) = tokio::sync::watch::channel(false);
        let (ta, tb) = (a.spawn_scheduler(stopped_a), b.spawn_scheduler(stopped_b));
        asleep(&clock, 2).await;
        for k in 1..=5 {
            clock.advance(Duration::from_secs(1));
            settle(&a, "tick", k, |r: &JobRunRecord| r.outcome == JobOutcome::Succeeded).await;
        }
        ta.abort(); // node a dies
        let _ = stop_a.send(true);
        let _ = ta.await;
        let killed = clock.now_millis();
        for k in 6..=10 {
            clock.advance(Duration::from_secs(1));
            settle(&b, "tick", k, |r: &JobRunRecord| r.outcome == JobOutcome::Succeeded).await;
        }
        let _ = stop_b.send(true);
        tb.await.unwrap();
        let mut runs = a.log().list_job_runs(Some("tick"), 100).await.unwrap();
        runs.sort_by_key(|r| r.tick);
        let ticks: Vec<i64> = runs.iter().map(|r| r.tick).collect();
        assert_eq!(ticks, (1..=10).map(|k| T0 + k * 1_000).collect::<Vec<_>>(), "each tick once, none missed");
        assert_eq!(seen.job_runs.lock().unwrap().len(), 10, "each recorded tick ran once");
        assert!(runs.iter().filter(|r| r.tick > killed).all(|r| r.node == "node-b"), "the survivor kept the schedule: {runs:?}");
    }

    async fn a_job_stops_after_its_number_of_executions_and_skips_ticks_while_running(db) {
        let clock = ManualClock::new(T0);
        let seen = Shared::default();
        let e = engine_on(&db, seen.clone(), "n1", &clock).await;
        let slow = |clock: &ManualClock| {
            let clock = clock.clone();
            move |seen: Arc<Shared>| {
                let clock = clock.clone();
                async move {
                    seen.job_runs.lock().unwrap().push("slow".into());
                    keyward_flow::clock::sleep(&clock, Duration::from_millis(2_300)).await;
                    Ok(())
                }
            }
        };
        e.schedule(Job::new("slow", Schedule::every(Duration::from_secs(1)).unwrap(), slow(&clock)).concurrency(Concurrency::Forbid))
            .unwrap();
        let twice = Job::new("twice", Schedule::every(Duration::from_secs(1)).unwrap(), |seen: Arc<Shared>| async move {
            seen.job_runs.lock().unwrap().push("twice".into());
            Err(StepError::new("fails, still counts"))
        })
        .number_of_executions(2);
        e.schedule(twice).unwrap();
        // A second node with the same slow job: whichever node runs a tick, the other sees the
        // run going at the next tick and skips it.
        let other = engine_on(&db, seen.clone(), "n2", &clock).await;
        other.schedule(Job::new("slow", Schedule::every(Duration::from_secs(1)).unwrap(), slow(&clock))).unwrap();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let (t1, t2) = (e.spawn_scheduler(stopped.clone()), other.spawn_scheduler(stopped));
        asleep(&clock, 3).await;
        for k in 1..=5 {
            clock.advance(Duration::from_secs(1));
            settle(&e, "slow", k, |_: &JobRunRecord| true).await;
            settle(&e, "twice", k.min(2), |r: &JobRunRecord| r.outcome == JobOutcome::Failed).await;
        }
        let _ = stop.send(true);
        // A stop lets a running job finish: let the slow one's time pass.
        clock.advance(Duration::from_secs(3));
        let _ = (t1.await, t2.await);
        let twice_runs = e.log().list_job_runs(Some("twice"), 100).await.unwrap();
        assert_eq!(twice_runs.len(), 2, "{twice_runs:?}");
        assert!(twice_runs.iter().all(|r| r.outcome == JobOutcome::Failed && r.error.as_deref() == Some("fails, still counts")));
        let slow_runs = e.log().list_job_runs(Some("slow"), 100).await.unwrap();
        assert!(slow_runs.iter().any(|r| r.outcome == JobOutcome::Skipped), "{slow_runs:?}");
        let mut ran: Vec<_> = slow_runs.iter().filter(|r| r.outcome != JobOutcome::Skipped).collect();
        ran.sort_by_key(|r| r.tick);
        assert!(ran.len() >= 2, "{slow_runs:?}");
        for pair in ran.windows(2) {
            assert!(pair[1].started_at >= pair[0].finished_at.unwrap(), "runs overlapped: {slow_runs:?}");
        }
    }
}
