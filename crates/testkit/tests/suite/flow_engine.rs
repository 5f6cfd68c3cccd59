//! The workflow engine's semantics, on a real run log (a SQLite file and a Postgres database):
//! compensation order, retries, timeouts, parallel groups, conditions, hooks, idempotency, and
//! resuming runs a dead node left in the log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keyward_flow::{
    Clock, Engine, FlowError, Handler, ManualClock, Output, RunOptions, RunState, Started, Step, StepContext,
    StepError, StepRecord, StepResponse, StepState, Workflow,
};
use keyward_testkit::TestDb;
use serde_json::json;

/// What the steps did, in order: the test's container.
#[derive(Default)]
struct Journal {
    events: Mutex<Vec<String>>,
    calls: AtomicU32,
    barrier: Option<Arc<tokio::sync::Barrier>>,
}

impl Journal {
    fn note(&self, e: impl Into<String>) {
        self.events.lock().unwrap().push(e.into());
    }
}

type Cx = StepContext<Journal>;

async fn engine_on(db: &TestDb, journal: Journal) -> Engine<Journal> {
    let (_, log) = db.open().await;
    log.migrate().await.unwrap();
    Engine::new(journal, log).with_lease(Duration::from_millis(400))
}

/// An engine whose log runs on `clock`, with the default lease.
async fn engine_at(db: &TestDb, journal: Journal, clock: &ManualClock) -> Engine<Journal> {
    let (_, log) = db.open_on(clock).await;
    log.migrate().await.unwrap();
    Engine::new(journal, log)
}

/// Where manual clocks start.
const T0: i64 = 1_700_000_000_000;

/// Polls `done` until it holds (real time, briefly): for what other tasks do once the manual
/// clock moved.
async fn wait_for(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "gave up waiting");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn events(e: &Engine<Journal>) -> Vec<String> {
    e.container().events.lock().unwrap().clone()
}

/// A step that notes its invoke and compensation and passes its input on, plus one.
fn counting(name: &'static str) -> Step<Journal, i64, i64> {
    Step::new(name, move |n: i64, cx: Cx| async move {
        cx.container().note(format!("invoke {name} {n}"));
        Ok(StepResponse::new(n + 1))
    })
    .compensate(move |out: Option<i64>, cx: Cx| async move {
        cx.container().note(format!("compensate {name} {out:?}"));
        Ok(())
    })
}

/// A step that always fails (permanently unless `retryable`), noting each attempt.
fn failing(name: &'static str) -> Step<Journal, i64, i64> {
    Step::new(name, move |n: i64, cx: Cx| async move {
        cx.container().note(format!("invoke {name} {n}"));
        Err::<StepResponse<i64>, _>(StepError::permanent(format!("{name} refuses")))
    })
    .compensate(move |out: Option<i64>, cx: Cx| async move {
        cx.container()
            .note(format!("compensate {name} {out:?} input={}", cx.input::<i64>()?));
        Ok(())
    })
}

fn chain(name: &str, steps: &[&Step<Journal, i64, i64>]) -> Workflow<Journal, i64, i64> {
    let mut wf = Workflow::<Journal, i64, i64>::new(name);
    let mut prev: Option<Step<Journal, i64, i64>> = None;
    for s in steps {
        wf = match prev.take() {
            None => wf.step(s, |d| d.input()),
            Some(p) => wf.step(s, move |d| d.output(&p)),
        };
        prev = Some((*s).clone());
    }
    let last = prev.unwrap();
    wf.returns(move |d| d.output(&last))
}

const DOUBLED: Output<i64> = Output::named("double");
const NEVER_RAN: Output<i64> = Output::named("not-a-step");

fn doubling() -> Step<Journal, i64, i64> {
    Step::named(DOUBLED, |n: i64, _cx: Cx| async move { Ok(StepResponse::new(n * 2)) })
}

keyward_testkit::on_both_dbs! {
    async fn outputs_are_read_by_their_copyable_name_with_no_step_handle_kept(db) {
        let e = engine_on(&db, Journal::default()).await;
        let wf = Workflow::<Journal, i64, i64>::new("by-name")
            .step(&doubling(), |d| d.input())
            .step(&counting("after"), |d| d.output(DOUBLED))
            .returns(|d| Ok(d.output(DOUBLED)? * 100 + d.output_named::<i64>("after")?.unwrap_or(0)));
        let wf = e.register(wf).unwrap();
        let run = e.run(&wf, 21, RunOptions::default()).await.unwrap();
        assert_eq!(run.result, Some(42 * 100 + 43));
        assert_eq!(events(&e), ["invoke after 42"]);

        // A name no step has is a clear failure of the step that reads it, not a silent default.
        let wf = Workflow::<Journal, i64, i64>::new("misnamed")
            .step(&doubling(), |d| d.input())
            .step(&counting("reader"), |d| d.output(NEVER_RAN));
        let wf = e.register(wf.returns(|d| d.output(DOUBLED))).unwrap();
        let err = e.run(&wf, 1, RunOptions::default()).await.unwrap_err();
        assert_eq!(
            err.step_error().unwrap().message(),
            "step not-a-step has no output: it did not run"
        );
    }

    async fn values_flow_from_step_to_step_and_the_result_is_stored(db) {
        let e = engine_on(&db, Journal::default()).await;
        let (a, b) = (counting("a"), counting("b"));
        let wf = e.register(chain("plus-two", &[&a, &b])).unwrap();
        let run = e.run(&wf, 40, RunOptions::default()).await.unwrap();
        assert_eq!(run.result, Some(42));
        assert_eq!(run.state, RunState::Done);
        assert!(run.transaction_id.starts_with("auto-"), "{}", run.transaction_id);
        assert_eq!(events(&e), ["invoke a 40", "invoke b 41"]);
        let (stored, steps) = e.log().load("plus-two", &run.transaction_id).await.unwrap().unwrap();
        assert_eq!(stored.state, RunState::Done);
        assert_eq!(stored.result, Some(json!(42)));
        assert_eq!(stored.owner, None, "a finished run holds no lease");
        assert!(steps.iter().all(|s| s.state == StepState::Done));
        assert_eq!(steps[1].input, Some(json!(41)));
    }

    async fn a_failure_compensates_completed_steps_in_reverse_order_but_not_a_failing_step_that_wrote_nothing(db) {
        let e = engine_on(&db, Journal::default()).await;
        let (a, b, c) = (counting("a"), counting("b"), failing("c"));
        let wf = e.register(chain("abc", &[&a, &b, &c])).unwrap();
        let err = e.run(&wf, 1, RunOptions::default()).await.unwrap_err();
        let FlowError::Failed { state, errors, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*state, RunState::Reverted);
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].step.as_str(), errors[0].handler), ("c", Handler::Invoke));
        assert_eq!(err.step_error().unwrap().message(), "c refuses");
        assert_eq!(
            events(&e),
            [
                "invoke a 1",
                "invoke b 2",
                "invoke c 3",
                "compensate b Some(3)",
                "compensate a Some(2)",
            ]
        );
    }

    async fn a_failing_step_that_may_have_written_is_compensated_first_with_no_input(db) {
        let e = engine_on(&db, Journal::default()).await;
        let (a, b) = (counting("a"), counting("b"));
        let half = Step::new("half", |n: i64, cx: Cx| async move {
            cx.container().note(format!("invoke half {n}"));
            Err::<StepResponse<i64>, _>(StepError::permanent("half done").maybe_applied())
        })
        .compensate(|out: Option<i64>, cx: Cx| async move {
            cx.container().note(format!("compensate half {out:?} input={}", cx.input::<i64>()?));
            Ok(())
        });
        let wf = e.register(chain("ab-half", &[&a, &b, &half])).unwrap();
        let err = e.run(&wf, 1, RunOptions::default()).await.unwrap_err();
        let FlowError::Failed { state, .. } = &err else { panic!("{err:?}") };
        assert_eq!(*state, RunState::Reverted);
        assert_eq!(
            events(&e),
            [
                "invoke a 1",
                "invoke b 2",
                "invoke half 3",
                "compensate half None input=3",
                "compensate b Some(3)",
                "compensate a Some(2)",
            ]
        );
    }

    async fn a_step_cut_off_by_its_timeout_is_compensated_as_one_that_may_have_written(db) {
        let e = engine_on(&db, Journal::default()).await;
        let a = counting("a");
        let slow = Step::new("slow", |n: i64, cx: Cx| async move {
            cx.container().note(format!("invoke slow {n}"));
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(StepResponse::new(n))
        })
        .timeout(Duration::from_millis(50))
        .compensate(|out: Option<i64>, cx: Cx| async move {
            cx.container().note(format!("compensate slow {out:?}"));
            Ok(())
        });
        let wf = e.register(chain("a-slow", &[&a, &slow])).unwrap();
        let run = e.run(&wf, 1, RunOptions::default().throw_on_error(false)).await.unwrap();
        assert_eq!(run.state, RunState::Reverted);
        assert_eq!(events(&e), ["invoke a 1", "invoke slow 2", "compensate slow None", "compensate a Some(2)"]);
        assert!(run.errors[0].error.is_maybe_applied());
    }

    async fn a_compensation_reports_conflicts_on_the_run_without_failing_it(db) {
        let e = engine_on(&db, Journal::default()).await;
        let a = Step::new("a", |n: i64, _cx: Cx| async move { Ok(StepResponse::new(n)) }).compensate(
            |_: Option<i64>, cx: Cx| async move {
                cx.conflict("row r1 changed since; left alone");
                Ok(())
            },
        );
        let wf = e.register(chain("conflicted", &[&a, &failing("b")])).unwrap();
        let run = e.run(&wf, 1, RunOptions::default().throw_on_error(false)).await.unwrap();
        assert_eq!(run.state, RunState::Reverted, "a conflict is not a failure");
        let reported: Vec<(&str, Handler, &str)> =
            run.errors.iter().map(|f| (f.step.as_str(), f.handler, f.error.message())).collect();
        assert_eq!(
            reported,
            [("b", Handler::Invoke, "b refuses"), ("a", Handler::Conflict, "row r1 changed since; left alone")]
        );
        let (stored, _) = e.log().load("conflicted", &run.transaction_id).await.unwrap().unwrap();
        assert_eq!(stored.errors.len(), 2, "the conflict is on the run's record");
        assert_eq!(stored.errors[1].handler, Handler::Conflict);
    }

    async fn a_failing_compensation_leaves_the_run_failed_and_is_reported(db) {
        let e = engine_on(&db, Journal::default()).await;
        let a = counting("a");
        let b = Step::new("b", |n: i64, _cx: Cx| async move { Ok(StepResponse::new(n)) })
            .compensate(|_: Option<i64>, _cx: Cx| async move { Err(StepError::permanent("cannot undo b")) });
        let c = failing("c");
        let wf = e
            .register(
                Workflow::<Journal, i64, i64>::new("bad-undo")
                    .step(&a, |d| d.input())
                    .step(&b, |d| d.input())
                    .step(&c, |d| d.input()),
            )
            .unwrap();
        let run = e.run(&wf, 1, RunOptions::default().throw_on_error(false)).await.unwrap();
        assert_eq!(run.state, RunState::Failed);
        assert_eq!(run.result, None);
        let reported: Vec<(&str, Handler, &str)> =
            run.errors.iter().map(|f| (f.step.as_str(), f.handler, f.error.message())).collect();
        assert_eq!(
            reported,
            [("c", Handler::Invoke, "c refuses"), ("b", Handler::Compensate, "cannot undo b")]
        );
        assert!(events(&e).contains(&"compensate a Some(2)".to_owned()), "the others are still undone");
        let (stored, steps) = e.log().load("bad-undo", &run.transaction_id).await.unwrap().unwrap();
        assert_eq!(stored.state, RunState::Failed);
        assert_eq!(stored.errors.len(), 2);
        assert_eq!(steps.iter().find(|s| s.step == "b").unwrap().state, StepState::CompensationFailed);
    }

    async fn a_retried_step_waits_between_attempts_and_then_succeeds(db) {
        let clock = ManualClock::new(T0);
        let e = engine_at(&db, Journal::default(), &clock).await;
        let flaky = Step::new("flaky", |n: i64, cx: Cx| async move {
            let call = cx.container().calls.fetch_add(1, Ordering::SeqCst) + 1;
            assert_eq!(call, cx.attempt());
            if call < 3 {
                return Err(StepError::new(format!("try {call} failed")));
            }
            Ok(StepResponse::new(n))
        })
        .max_retries(3)
        .retry_interval(Duration::from_secs(60));
        let wf = e
            .register(Workflow::<Journal, i64, i64>::new("flaky").step(&flaky, |d| d.input()).returns(move |d| d.output(&flaky)))
            .unwrap();
        let run = tokio::spawn({
            let e = e.clone();
            async move { e.run(&wf, 7, RunOptions::default()).await }
        });
        for call in 1..=2 {
            // The try failed and the step waits out its interval (beside the lease's heartbeat).
            wait_for(|| e.container().calls.load(Ordering::SeqCst) == call && clock.waiters() >= 2).await;
            clock.advance(Duration::from_secs(59));
            tokio::task::yield_now().await;
            assert_eq!(e.container().calls.load(Ordering::SeqCst), call, "retried before its interval passed");
            assert!(!run.is_finished());
            clock.advance(Duration::from_secs(1));
        }
        let run = run.await.unwrap().unwrap();
        assert_eq!(run.result, Some(7));
        let (_, steps) = e.log().load("flaky", &run.transaction_id).await.unwrap().unwrap();
        assert_eq!(steps[0].attempts, 3);
    }

    async fn a_lease_runs_out_on_the_clock_and_only_then_is_the_run_taken_over(db) {
        let clock = ManualClock::new(T0);
        let e = engine_at(&db, Journal::default(), &clock).await;
        let a = counting("a");
        e.register(chain("solo", &[&a])).unwrap();
        let log = e.log().clone();
        log.start("solo", "stalled", &json!(5), "node-stalled", Duration::from_secs(15), true).await.unwrap();
        clock.advance(Duration::from_millis(14_999));
        assert!(e.recover().await.unwrap().is_empty(), "taken over while its lease held");
        log.renew("node-stalled", "solo", "stalled", Duration::from_secs(15)).await.unwrap();
        clock.advance(Duration::from_secs(14));
        assert!(e.recover().await.unwrap().is_empty(), "a renewal counts from the clock's now");
        clock.advance(Duration::from_secs(1));
        let recovered = e.recover().await.unwrap();
        assert_eq!(recovered, [("solo".to_owned(), "stalled".to_owned(), RunState::Done)]);
        let (run, _) = log.load("solo", "stalled").await.unwrap().unwrap();
        assert_eq!((run.result, run.updated_at), (Some(json!(6)), clock.now_millis()), "written at the clock's now");
        assert_eq!(
            log.renew("node-stalled", "solo", "stalled", Duration::from_secs(15)).await,
            Err(keyward_flow::LogError::LeaseLost)
        );
    }

    async fn a_permanent_failure_is_not_retried(db) {
        let e = engine_on(&db, Journal::default()).await;
        let step = Step::new("once", |_: i64, cx: Cx| async move {
            cx.container().calls.fetch_add(1, Ordering::SeqCst);
            Err::<StepResponse<i64>, _>(StepError::permanent("no point trying again"))
        })
        .max_retries(5);
        let wf = e.register(Workflow::<Journal, i64, ()>::new("once").step(&step, |d| d.input())).unwrap();
        let run = e.run(&wf, 0, RunOptions::default().throw_on_error(false)).await.unwrap();
        assert_eq!(run.state, RunState::Reverted);
        assert_eq!(e.container().calls.load(Ordering::SeqCst), 1);
    }

    async fn retries_run_out_and_the_run_is_compensated(db) {
        let e = engine_on(&db, Journal::default()).await;
        let a = counting("a");
        let step = Step::new("always", |_: i64, cx: Cx| async move {
            cx.container().calls.fetch_add(1, Ordering::SeqCst);
            Err::<StepResponse<i64>, _>(StepError::new("still down"))
        })
        .max_retries(2);
        let wf = e.register(chain("runs-out", &[&a, &step])).unwrap();
        let err = e.run(&wf, 0, RunOptions::default()).await.unwrap_err();
        assert_eq!(err.step_error().unwrap().message(), "still down");
        assert_eq!(e.container().calls.load(Ordering::SeqCst), 3, "one try and two retries");
        assert!(events(&e).contains(&"compensate a Some(1)".to_owned()));
    }

    async fn a_step_that_times_out_fails_and_the_run_is_compensated(db) {
        let e = engine_on(&db, Journal::default()).await;
        let a = counting("a");
        let slow = Step::new("slow", |n: i64, _cx: Cx| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(StepResponse::new(n))
        })
        .timeout(Duration::from_millis(100))
        .max_retries(3);
        let wf = e.register(chain("slow", &[&a, &slow])).unwrap();
        let err = e.run(&wf, 0, RunOptions::default()).await.unwrap_err();
        assert!(err.to_string().contains("timed out after 100 ms"), "{err}");
        assert_eq!(events(&e), ["invoke a 0", "compensate a Some(1)"]);
    }

    async fn steps_of_a_parallel_group_run_side_by_side_and_are_compensated_together(db) {
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let e = engine_on(&db, Journal { barrier: Some(barrier), ..Journal::default() }).await;
        let side = |name: &'static str| {
            Step::new(name, move |n: i64, cx: Cx| async move {
                // Both must be waiting here at once, or neither gets past.
                let b = cx.container().barrier.clone().unwrap();
                tokio::time::timeout(Duration::from_secs(10), b.wait())
                    .await
                    .map_err(|_| StepError::permanent(format!("{name} ran alone")))?;
                cx.container().note(format!("invoke {name}"));
                Ok(StepResponse::new(n))
            })
            .compensate(move |_: Option<i64>, cx: Cx| async move {
                cx.container().note(format!("compensate {name}"));
                Ok(())
            })
        };
        let (left, right, last) = (side("left"), side("right"), failing("last"));
        let wf = e
            .register(
                Workflow::<Journal, i64, ()>::new("fan-out")
                    .parallel(|p| p.step(&left, |d| d.input()).step(&right, |d| d.input()))
                    .step(&last, |d| d.input()),
            )
            .unwrap();
        let run = e.run(&wf, 1, RunOptions::default().throw_on_error(false)).await.unwrap();
        assert_eq!(run.state, RunState::Reverted);
        let ev = events(&e);
        assert!(ev.contains(&"invoke left".to_owned()) && ev.contains(&"invoke right".to_owned()), "{ev:?}");
        let undo: Vec<&String> = ev.iter().filter(|x| x.starts_with("compensate")).collect();
        assert_eq!(undo.len(), 2, "both sides, not the failing step that wrote nothing: {ev:?}");
    }

    async fn a_conditional_step_runs_only_when_its_condition_holds(db) {
        let e = engine_on(&db, Journal::default()).await;
        let (big, small) = (counting("big"), counting("small"));
        let wf = e
            .register(
                Workflow::<Journal, i64, ()>::new("branch")
                    .when(|d| Ok(d.input()? >= 10), &big, |d| d.input())
                    .when(|d| Ok(d.input()? < 10), &small, |d| d.input()),
            )
            .unwrap();
        let run = e.run(&wf, 3, RunOptions::default()).await.unwrap();
        assert_eq!(events(&e), ["invoke small 3"]);
        let (_, steps) = e.log().load("branch", &run.transaction_id).await.unwrap().unwrap();
        assert_eq!(steps.iter().find(|s| s.step == "big").unwrap().state, StepState::Skipped);
    }

    async fn a_hook_runs_its_one_handler_and_refuses_a_second(db) {
        let e = engine_on(&db, Journal::default()).await;
        let a = counting("a");
        let wf = e
            .register(
                Workflow::<Journal, i64, ()>::new("hooked")
                    .step(&a, |d| d.input())
                    .hook("a_done", {
                        let a = a.clone();
                        move |d| Ok(json!({"value": d.output(&a)?}))
                    }),
            )
            .unwrap();
        // No handler yet: the point is skipped.
        e.run(&wf, 1, RunOptions::default()).await.unwrap();
        let handler = Step::new("on-a-done", |input: serde_json::Value, cx: Cx| async move {
            cx.container().note(format!("hook {}", input["value"]));
            Ok(StepResponse::new(()))
        });
        e.attach_hook("hooked", "a_done", handler.clone()).unwrap();
        let again = e.attach_hook("hooked", "a_done", handler.clone()).unwrap_err();
        assert_eq!(again.to_string(), "hook a_done of workflow hooked already has a handler; a hook takes one");
        let unknown = e.attach_hook("hooked", "nope", handler).unwrap_err();
        assert_eq!(unknown.to_string(), "workflow hooked has no hook named nope");
        e.run(&wf, 5, RunOptions::default()).await.unwrap();
        assert_eq!(events(&e), ["invoke a 1", "invoke a 5", "hook 6"]);
    }

    async fn an_idempotent_workflow_returns_the_stored_result_for_a_known_transaction_id(db) {
        let e = engine_on(&db, Journal::default()).await;
        let a = counting("a");
        let wf = e
            .register(
                Workflow::<Journal, i64, i64>::new("once-only").idempotent(true).step(&a, |d| d.input()).returns({
                    let a = a.clone();
                    move |d| d.output(&a)
                }),
            )
            .unwrap();
        let opts = RunOptions::default().transaction_id("order-17");
        let first = e.run(&wf, 1, opts.clone()).await.unwrap();
        let second = e.run(&wf, 100, opts).await.unwrap();
        assert_eq!((first.result, second.result), (Some(2), Some(2)));
        assert_eq!(second.transaction_id, "order-17");
        assert_eq!(events(&e), ["invoke a 1"], "ran once");

        // Without idempotency, a finished transaction id may be used again.
        let b = counting("b");
        let plain = e.register(chain("again", &[&b])).unwrap();
        let opts = RunOptions::default().transaction_id("t-1");
        e.run(&plain, 1, opts.clone()).await.unwrap();
        assert_eq!(e.run(&plain, 10, opts).await.unwrap().result, Some(11));
    }

    async fn throw_on_error_false_returns_the_errors_instead(db) {
        let e = engine_on(&db, Journal::default()).await;
        let (a, c) = (counting("a"), failing("c"));
        let wf = e.register(chain("soft", &[&a, &c])).unwrap();
        let run = e.run(&wf, 1, RunOptions::default().throw_on_error(false)).await.unwrap();
        assert_eq!(run.state, RunState::Reverted);
        assert_eq!(run.result, None);
        assert_eq!(run.errors.len(), 1);
        assert_eq!(run.errors[0].step, "c");
    }

    async fn registration_refuses_duplicates_and_unknown_workflows(db) {
        let e = engine_on(&db, Journal::default()).await;
        let a = counting("a");
        e.register(chain("dup", &[&a])).unwrap();
        assert!(matches!(e.register(chain("dup", &[&a])), Err(FlowError::AlreadyRegistered(_))));
        let twice = Workflow::<Journal, i64, ()>::new("two-as").step(&a, |d| d.input()).step(&a, |d| d.input());
        assert_eq!(
            e.register(twice).unwrap_err().to_string(),
            "invalid workflow: workflow two-as has two steps named a"
        );
    }

    async fn a_run_left_mid_step_by_a_dead_node_is_finished_forward_by_another(db) {
        let e = engine_on(&db, Journal::default()).await;
        let (a, b, c) = (counting("a"), counting("b"), counting("c"));
        e.register(chain("abc", &[&a, &b, &c])).unwrap();
        // What a node that died while invoking b leaves behind.
        let log = e.log().clone();
        let dead = "node-dead";
        assert_eq!(log.start("abc", "tx-1", &json!(1), dead, Duration::ZERO, true).await.unwrap(), Started::New);
        log.save_step(dead, "abc", "tx-1", &rec("a", 0, StepState::Done, json!(1), Some(json!(2)))).await.unwrap();
        log.save_step(dead, "abc", "tx-1", &rec("b", 1, StepState::Invoking, json!(2), None)).await.unwrap();

        let recovered = e.recover().await.unwrap();
        assert_eq!(recovered, [("abc".to_owned(), "tx-1".to_owned(), RunState::Done)]);
        assert_eq!(events(&e), ["invoke b 2", "invoke c 3"], "b again with its recorded input, a not at all");
        let (run, _) = log.load("abc", "tx-1").await.unwrap().unwrap();
        assert_eq!((run.state, run.result), (RunState::Done, Some(json!(4))));
        // The dead node's late writes are refused.
        let late = log.save_step(dead, "abc", "tx-1", &rec("c", 2, StepState::Failed, json!(3), None)).await;
        assert_eq!(late, Err(keyward_flow::LogError::LeaseLost));
    }

    async fn a_run_left_compensating_is_finished_backward(db) {
        let e = engine_on(&db, Journal::default()).await;
        let (a, b, c) = (counting("a"), counting("b"), failing("c"));
        e.register(chain("abc", &[&a, &b, &c])).unwrap();
        let log = e.log().clone();
        let dead = "node-dead";
        log.start("abc", "tx-2", &json!(1), dead, Duration::ZERO, true).await.unwrap();
        log.save_step(dead, "abc", "tx-2", &rec("a", 0, StepState::Done, json!(1), Some(json!(2)))).await.unwrap();
        log.save_step(dead, "abc", "tx-2", &rec("b", 1, StepState::Compensated, json!(2), Some(json!(3)))).await.unwrap();
        log.set_state(dead, "abc", "tx-2", RunState::Compensating, None, &[], &[]).await.unwrap();

        let recovered = e.recover().await.unwrap();
        assert_eq!(recovered[0].2, RunState::Reverted);
        assert_eq!(events(&e), ["compensate a Some(2)"], "what was compensated is not compensated twice");
    }

    async fn a_live_run_is_not_taken_over_and_each_expired_run_is_claimed_once(db) {
        let e1 = engine_on(&db, Journal::default()).await;
        let e2 = engine_on(&db, Journal::default()).await;
        for e in [&e1, &e2] {
            let a = counting("a");
            e.register(chain("solo", &[&a])).unwrap();
        }
        let log = e1.log().clone();
        log.start("solo", "live", &json!(0), "node-alive", Duration::from_secs(60), true).await.unwrap();
        for i in 0..12 {
            log.start("solo", &format!("dead-{i}"), &json!(i), "node-dead", Duration::ZERO, true).await.unwrap();
        }
        let (r1, r2) = tokio::join!(e1.recover(), e2.recover());
        let mut all: Vec<String> = r1.unwrap().into_iter().chain(r2.unwrap()).map(|(_, tx, _)| tx).collect();
        all.sort();
        assert_eq!(all.len(), 12, "{all:?}");
        all.dedup();
        assert_eq!(all.len(), 12, "no run claimed twice");
        assert_eq!(events(&e1).len() + events(&e2).len(), 12);
        let (live, _) = log.load("solo", "live").await.unwrap().unwrap();
        assert_eq!((live.state, live.owner.as_deref()), (RunState::Running, Some("node-alive")));
    }
}

fn rec(
    step: &str,
    position: u32,
    state: StepState,
    input: serde_json::Value,
    output: Option<serde_json::Value>,
) -> StepRecord {
    StepRecord {
        step: step.to_owned(),
        position,
        state,
        attempts: 1,
        input: Some(input),
        compensation_input: output.clone(),
        output,
        error: None,
        events: None,
    }
}

/// A Postgres log written before instants were milliseconds (TIMESTAMPTZ columns) keeps its
/// runs, events and job ticks through the migration that turns them into milliseconds.
#[tokio::test]
async fn a_postgres_log_from_before_the_millisecond_columns_keeps_its_rows_through_the_migration() {
    let db = TestDb::postgres().await;
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../flow/migrations/postgres");
    let mut old = sqlx::migrate::Migrator::new(dir).await.unwrap();
    old.dangerous_set_table_name("_flow_migrations");
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version <= 2)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    old.run(&pool).await.unwrap();
    sqlx::raw_sql(
        "INSERT INTO flow_run (workflow, transaction_id, state, input, errors, owner, lease_until, created_at, updated_at)
         VALUES ('solo', 'old', 'running', '5', '[]', 'node-gone', '2023-11-14 22:13:20.250+00',
                 '2023-11-14 22:13:20+00', '2023-11-14 22:13:20.125+00');
         INSERT INTO flow_step (workflow, transaction_id, step, position, state, attempts, input, updated_at)
         VALUES ('solo', 'old', 'a', 0, 'invoking', 1, '5', '2023-11-14 22:13:20.125+00');
         INSERT INTO flow_event (id, name, data, metadata, created_at)
         VALUES ('evt_old', 'thing.made', '{}', '{}', '2023-11-14 22:13:21+00');
         INSERT INTO flow_job_run (job, tick, node, outcome, started_at, finished_at)
         VALUES ('tick', '2023-11-14 22:13:22+00', 'node-gone', 'succeeded', '2023-11-14 22:13:22.001+00',
                 '2023-11-14 22:13:22.002+00');",
    )
    .execute(&pool)
    .await
    .unwrap();
    let clock = ManualClock::new(T0 + 60_000);
    let e = engine_at(&db, Journal::default(), &clock).await; // migrates to the current columns
    let (run, steps) = e.log().load("solo", "old").await.unwrap().unwrap();
    assert_eq!((run.created_at, run.updated_at), (T0, T0 + 125));
    assert_eq!(
        (steps.len(), steps[0].state, steps[0].input.clone()),
        (1, StepState::Invoking, Some(json!(5)))
    );
    let (event, _) = e.log().list_events(1).await.unwrap().remove(0);
    assert_eq!((event.id.as_str(), event.created_at), ("evt_old", T0 + 1_000));
    let ticks = e.log().list_job_runs(Some("tick"), 10).await.unwrap();
    assert_eq!(
        (ticks[0].tick, ticks[0].started_at, ticks[0].finished_at),
        (T0 + 2_000, T0 + 2_001, Some(T0 + 2_002))
    );
    // The dead node's run, its lease long run out, is finished by this engine.
    let a = counting("a");
    e.register(chain("solo", &[&a])).unwrap();
    assert_eq!(
        e.recover().await.unwrap(),
        [("solo".to_owned(), "old".to_owned(), RunState::Done)]
    );
}
