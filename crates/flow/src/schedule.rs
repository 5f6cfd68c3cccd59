//! Scheduling jobs: each registered job's ticks, each run by one node of the cluster.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::engine::{Engine, add_named, read};
use crate::error::FlowError;
use crate::jobs::{Concurrency, Job as ScheduledJob, JobOutcome};
use crate::log::RunLog;

impl<C: Send + Sync + 'static> Engine<C> {
    /// Registers a scheduled job on this node (names are unique).
    pub fn schedule(&self, job: ScheduledJob<C>) -> Result<(), FlowError> {
        add_named(
            &self.inner.jobs,
            job,
            |j| &j.name,
            |name| format!("a job named {name} is already scheduled"),
        )
    }

    /// Runs every registered job on its schedule until `stop` turns true; each tick runs on one
    /// node of the cluster.
    pub fn spawn_scheduler(&self, stop: tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        let jobs: Vec<ScheduledJob<C>> = read(&self.inner.jobs).clone();
        let engine = self.clone();
        tokio::spawn(async move {
            join_all(jobs.into_iter().map(|job| engine.clone().job_loop(job, stop.clone()))).await;
        })
    }

    async fn job_loop(self, job: ScheduledJob<C>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let log = self.inner.log.clone();
        let clock = self.inner.clock.clone();
        let node = self.inner.node.clone();
        // Ticks follow each other from the last one handled, so a late wake-up still handles
        // every tick. One that came while this node was running the job (`Forbid`), or that
        // passed long ago (the node stalled), is recorded as skipped rather than run late.
        let mut after = clock.now_millis();
        let mut busy_until = 0;
        loop {
            let Some(tick) = job.schedule.next_after(after) else {
                tracing::warn!(job = %job.name, "the schedule has no next tick; the job stops");
                return;
            };
            after = tick;
            let now = clock.now_millis();
            if tick > now {
                tokio::select! {
                    () = clock.sleep_until(tick) => {}
                    _ = stop.changed() => return,
                }
            } else if tick < busy_until || now - tick > LATE_TICK_MS {
                let _ = log
                    .claim_tick(&job.name, tick, &node, JobOutcome::Skipped, JOB_LEASE)
                    .await;
                continue;
            }
            if *stop.borrow() {
                return;
            }
            match gate(log.as_ref(), &job, tick, &node).await {
                Gate::Stop => return,
                Gate::Pass => continue,
                Gate::Claim => {}
            }
            match log
                .claim_tick(&job.name, tick, &node, JobOutcome::Running, JOB_LEASE)
                .await
            {
                Ok(true) => {
                    let run = run_job(self.inner.container.clone(), log.clone(), job.clone(), tick);
                    match job.concurrency {
                        Concurrency::Forbid => {
                            run.await;
                            busy_until = clock.now_millis();
                        }
                        Concurrency::Allow => {
                            tokio::spawn(run);
                        }
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(job = %job.name, tick, error = %e, "could not claim a tick"),
            }
        }
    }
}

/// What a due tick comes to before it is claimed.
enum Gate {
    /// The job ran as often as it should: its loop ends.
    Stop,
    /// Not this tick (recorded as skipped, or left for the next one).
    Pass,
    /// Try to claim it and run.
    Claim,
}

/// Checks a due tick against the job's limit on executions and its concurrency: a `Forbid`
/// job that is running somewhere has the tick recorded as skipped.
async fn gate<C>(log: &dyn RunLog, job: &ScheduledJob<C>, tick: i64, node: &str) -> Gate {
    if let Some(limit) = job.number_of_executions {
        match log.job_executions(&job.name).await {
            Ok(n) if n >= limit => {
                tracing::info!(job = %job.name, executions = n, "the job ran as often as it should; it stops");
                return Gate::Stop;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job = %job.name, error = %e, "could not count the job's runs; skipping a tick");
                return Gate::Pass;
            }
        }
    }
    if job.concurrency == Concurrency::Forbid && log.job_running(&job.name).await.unwrap_or(false) {
        let _ = log
            .claim_tick(&job.name, tick, node, JobOutcome::Skipped, JOB_LEASE)
            .await;
        return Gate::Pass;
    }
    Gate::Claim
}

/// How long a job run counts as going without finishing (a node that died mid-run).
const JOB_LEASE: Duration = Duration::from_secs(300);

/// A tick later than this when its node gets to it is recorded as skipped, not run.
const LATE_TICK_MS: i64 = 60_000;

async fn run_job<C: Send + Sync + 'static>(container: Arc<C>, log: Arc<dyn RunLog>, job: ScheduledJob<C>, tick: i64) {
    let outcome = (job.handler)(container).await;
    let (state, error) = match &outcome {
        Ok(()) => (JobOutcome::Succeeded, None),
        Err(e) => {
            tracing::warn!(job = %job.name, tick, error = %e, "job run failed");
            (JobOutcome::Failed, Some(e.message()))
        }
    };
    if let Err(e) = log.finish_tick(&job.name, tick, state, error).await {
        tracing::warn!(job = %job.name, tick, error = %e, "could not record how a job run ended");
    }
}
