//! Scheduled jobs that run once per tick across a cluster.
//!
//! A tick is an instant the schedule names (a cron occurrence, or a multiple of the interval
//! since the Unix epoch), so every node computes the same ticks. The node that first inserts the
//! row (job, tick) runs it; the others see the key taken and wait for the next tick. Each run is a
//! row: job, tick, node, start, end, outcome. With `Concurrency::Forbid` (the default) a tick that
//! comes while the previous run is still going is recorded as `skipped`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::FlowError;
use crate::step::StepError;

/// When a job runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron(Box<croner::Cron>, String),
    Every(Duration),
}

const FIELDS_5: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const FIELDS_6: [&str; 6] = ["second", "minute", "hour", "day-of-month", "month", "day-of-week"];

impl Schedule {
    /// Parses a cron expression of 5 fields (minute first) or 6 (second first). A bad one is
    /// refused with a message naming the field at fault.
    pub fn cron(expr: &str) -> Result<Self, FlowError> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let names: &[&str] = match fields.len() {
            5 => &FIELDS_5,
            6 => &FIELDS_6,
            n => {
                return Err(FlowError::Definition(format!(
                    "invalid cron expression {expr:?}: it has {n} fields; use 5 (minute hour day-of-month month \
                     day-of-week) or 6 (second first)"
                )));
            }
        };
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build();
        match parser.parse(expr) {
            Ok(cron) => Ok(Schedule::Cron(Box::new(cron), expr.to_owned())),
            Err(whole) => {
                // Find the field at fault: each alone, the others left as `*`.
                for (i, field) in fields.iter().enumerate() {
                    let probe: Vec<&str> = (0..fields.len()).map(|j| if i == j { *field } else { "*" }).collect();
                    if let Err(e) = parser.parse(&probe.join(" ")) {
                        return Err(FlowError::Definition(format!(
                            "invalid cron expression {expr:?}: the {} field {field:?} is invalid ({e})",
                            names[i]
                        )));
                    }
                }
                Err(FlowError::Definition(format!(
                    "invalid cron expression {expr:?}: {whole}"
                )))
            }
        }
    }

    /// A fixed interval (at least one second), ticking at multiples of it since the epoch.
    pub fn every(interval: Duration) -> Result<Self, FlowError> {
        if interval < Duration::from_secs(1) {
            return Err(FlowError::Definition(format!(
                "a job interval must be at least one second, not {interval:?}"
            )));
        }
        Ok(Schedule::Every(interval))
    }

    /// The first tick strictly after `after_ms` (milliseconds since the epoch).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Schedule::Every(interval) => {
                let step = i64::try_from(interval.as_millis()).ok()?.max(1);
                Some((after_ms.div_euclid(step) + 1) * step)
            }
            Schedule::Cron(cron, _) => {
                let at = DateTime::<Utc>::from_timestamp_millis(after_ms)?;
                cron.find_next_occurrence(&at, false).ok().map(|t| t.timestamp_millis())
            }
        }
    }

    /// The schedule as written (`*/5 * * * *`, `every 10s`).
    pub fn describe(&self) -> String {
        match self {
            Schedule::Cron(_, expr) => expr.clone(),
            Schedule::Every(d) => format!("every {}s", d.as_secs()),
        }
    }
}

/// Whether runs of a job may overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// A tick that comes while a run is going is skipped (recorded as such).
    #[default]
    Forbid,
    Allow,
}

pub(crate) type JobFn<C> = Arc<dyn Fn(Arc<C>) -> BoxFuture<'static, Result<(), StepError>> + Send + Sync>;

/// A scheduled job.
pub struct Job<C> {
    pub(crate) name: String,
    pub(crate) schedule: Schedule,
    pub(crate) handler: JobFn<C>,
    pub(crate) concurrency: Concurrency,
    pub(crate) number_of_executions: Option<u64>,
}

impl<C> Clone for Job<C> {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            schedule: self.schedule.clone(),
            handler: self.handler.clone(),
            concurrency: self.concurrency,
            number_of_executions: self.number_of_executions,
        }
    }
}

impl<C: Send + Sync + 'static> Job<C> {
    /// A job named `name` running `handler` on `schedule`.
    pub fn new<F, Fut>(name: impl Into<String>, schedule: Schedule, handler: F) -> Self
    where
        F: Fn(Arc<C>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), StepError>> + Send + 'static,
    {
        Self {
            name: name.into(),
            schedule,
            handler: Arc::new(move |c| Box::pin(handler(c))),
            concurrency: Concurrency::Forbid,
            number_of_executions: None,
        }
    }

    pub fn concurrency(mut self, concurrency: Concurrency) -> Self {
        self.concurrency = concurrency;
        self
    }

    /// Stop after this many runs (across the cluster).
    pub fn number_of_executions(mut self, n: u64) -> Self {
        self.number_of_executions = Some(n);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// How a job run ended (or that it is still going).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobOutcome {
    Running,
    Succeeded,
    Failed,
    /// The tick came while an earlier run was still going (`Concurrency::Forbid`).
    Skipped,
}

impl JobOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            JobOutcome::Running => "running",
            JobOutcome::Succeeded => "succeeded",
            JobOutcome::Failed => "failed",
            JobOutcome::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => JobOutcome::Running,
            "succeeded" => JobOutcome::Succeeded,
            "failed" => JobOutcome::Failed,
            "skipped" => JobOutcome::Skipped,
            _ => return None,
        })
    }
}

/// One run of a job as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRunRecord {
    pub job: String,
    /// The scheduled instant, milliseconds since the epoch.
    pub tick: i64,
    pub node: String,
    pub outcome: JobOutcome,
    pub error: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_cron_field_is_named() {
        let e = Schedule::cron("61 * * * *").unwrap_err().to_string();
        assert!(e.contains("the minute field \"61\""), "{e}");
        let e = Schedule::cron("0 0 * * * * *").unwrap_err().to_string();
        assert!(e.contains("it has 7 fields"), "{e}");
        let e = Schedule::cron("*/5 * * 13 *").unwrap_err().to_string();
        assert!(e.contains("the month field \"13\""), "{e}");
        let e = Schedule::cron("* * * * * funday").unwrap_err().to_string();
        assert!(e.contains("day-of-week"), "{e}");
        assert!(Schedule::every(Duration::from_millis(10)).is_err());
    }

    #[test]
    fn ticks_are_instants_every_node_computes_alike() {
        let s = Schedule::cron("0 0 * * *").unwrap();
        let day = 86_400_000;
        assert_eq!(
            s.next_after(1_700_000_000_000),
            Some((1_700_000_000_000 / day + 1) * day)
        );
        let every = Schedule::every(Duration::from_secs(1)).unwrap();
        assert_eq!(every.next_after(1_500), Some(2_000));
        assert_eq!(every.next_after(2_000), Some(3_000));
        let secs = Schedule::cron("*/2 * * * * *").unwrap();
        assert_eq!(secs.next_after(1_000), Some(2_000));
    }
}
