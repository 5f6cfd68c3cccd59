//! Events and subscribers, delivered at least once.
//!
//! Events are rows in an outbox table. A workflow's steps emit them into the run log with their
//! own records, and the transaction that marks the run `done` moves them to the outbox — so an
//! event exists exactly when its change is complete, and a compensated run's events never do.
//! Publishing also writes one delivery row per subscriber that takes the event (subscribers are
//! registered in the database, so a CLI process publishes to the server's subscribers). Each node
//! delivers the rows of the subscribers it runs: it claims due rows (`FOR UPDATE SKIP LOCKED` on
//! Postgres, woken by `LISTEN/NOTIFY`; polling as the backstop), calls the handler, and marks the
//! row delivered — or schedules a retry with exponential backoff. A delivery is de-duplicated by
//! its key (event id, subscriber id) and survives restarts; a node that dies mid-delivery loses
//! its claim when the claim's lease runs out, and another node delivers.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::step::StepError;

/// An event as subscribers get it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `evt_<ulid>`; stable across retries, so receivers can de-duplicate.
    pub id: String,
    pub name: String,
    pub data: Value,
    /// `{source, object, action, event_group_id, workflow}` for events of a workflow run.
    pub metadata: Value,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// An event to publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub name: String,
    pub data: Value,
    #[serde(default)]
    pub metadata: Value,
}

impl NewEvent {
    pub fn new(name: impl Into<String>, data: Value) -> Self {
        Self {
            name: name.into(),
            data,
            metadata: Value::Null,
        }
    }
}

/// A delivery of one event to one subscriber, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub subscriber: String,
    /// `pending` or `delivered`.
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
}

/// A delivery this node claimed.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub event: Event,
    pub subscriber: String,
    /// 1 for the first try.
    pub attempt: u32,
}

pub(crate) type HandlerFn<C> = Arc<dyn Fn(Event, Arc<C>) -> BoxFuture<'static, Result<(), StepError>> + Send + Sync>;

/// A subscriber: an id (stable: deliveries are keyed by it), the event names it takes (or
/// `*`), and a handler that gets the event and the container.
pub struct Subscriber<C> {
    pub(crate) id: String,
    pub(crate) events: Vec<String>,
    pub(crate) handler: HandlerFn<C>,
    pub(crate) timeout: Duration,
}

impl<C> Clone for Subscriber<C> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            events: self.events.clone(),
            handler: self.handler.clone(),
            timeout: self.timeout,
        }
    }
}

impl<C: Send + Sync + 'static> Subscriber<C> {
    /// Subscribes `handler` to `events` (names, or `*` for all) under `id`.
    pub fn new<F, Fut>(id: impl Into<String>, events: &[&str], handler: F) -> Self
    where
        F: Fn(Event, Arc<C>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), StepError>> + Send + 'static,
    {
        Self {
            id: id.into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            handler: Arc::new(move |event, container| Box::pin(handler(event, container))),
            timeout: Duration::from_secs(30),
        }
    }

    /// How long one delivery may take before it counts as failed (30 s by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn events(&self) -> &[String] {
        &self.events
    }
}

/// Whether a subscriber taking `patterns` takes an event named `name`.
pub fn takes(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| p == "*" || p == name)
}

/// How deliveries are retried and claimed.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryOptions {
    /// The first retry waits this long; each next one twice as long...
    pub backoff: Duration,
    /// ...up to this.
    pub max_backoff: Duration,
    /// How often to look for due deliveries when nothing wakes the dispatcher.
    pub poll: Duration,
    /// Deliveries claimed at once.
    pub batch: u32,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self {
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            poll: Duration::from_millis(500),
            batch: 64,
        }
    }
}

impl DeliveryOptions {
    /// The wait before attempt `attempt + 1`, after `attempt` failed.
    pub fn retry_in(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}
