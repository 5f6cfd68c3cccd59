//! Dispatching events: subscribers registered on a node, deliveries claimed from the outbox and
//! handed to them, at least once, across nodes.

use std::time::Duration;

use futures_util::future::join_all;

use crate::engine::{Engine, add_named, read};
use crate::error::FlowError;
use crate::events::{DeliveryOptions, NewEvent, Subscriber};
use crate::step::StepError;

impl<C: Send + Sync + 'static> Engine<C> {
    /// Registers a subscriber on this node. Its id must be unique; the dispatcher records it in
    /// the database so every node's publications get a delivery for it.
    pub fn subscribe(&self, subscriber: Subscriber<C>) -> Result<(), FlowError> {
        if subscriber.id.is_empty() || subscriber.events.is_empty() {
            return Err(FlowError::Definition(
                "a subscriber needs an id and at least one event name".to_owned(),
            ));
        }
        add_named(
            &self.inner.subscribers,
            subscriber,
            |s| &s.id,
            |id| format!("a subscriber with id {id} is already registered"),
        )
    }

    /// The subscribers registered on this node.
    pub fn subscriber_ids(&self) -> Vec<String> {
        read(&self.inner.subscribers).iter().map(|s| s.id.clone()).collect()
    }

    /// Records this node's subscribers in the database (the dispatcher does this when it starts).
    pub async fn register_subscribers(&self) -> Result<(), FlowError> {
        let subs: Vec<(String, Vec<String>)> = read(&self.inner.subscribers)
            .iter()
            .map(|s| (s.id.clone(), s.events.clone()))
            .collect();
        for (id, events) in subs {
            self.inner.log.register_subscriber(&id, &events).await?;
        }
        Ok(())
    }

    /// Publishes events outside any workflow run.
    pub async fn publish(&self, events: &[NewEvent]) -> Result<(), FlowError> {
        Ok(self.inner.log.publish(events).await?)
    }

    /// Claims the due deliveries of this node's subscribers and delivers them. Returns how many
    /// were attempted.
    pub async fn deliver_due(&self, options: &DeliveryOptions) -> Result<usize, FlowError> {
        let subs: Vec<Subscriber<C>> = read(&self.inner.subscribers).clone();
        if subs.is_empty() {
            return Ok(0);
        }
        let ids: Vec<String> = subs.iter().map(|s| s.id.clone()).collect();
        let lock = subs.iter().map(|s| s.timeout).max().unwrap_or_default() + Duration::from_secs(10);
        let claims = self
            .inner
            .log
            .claim_deliveries(&self.inner.node, &ids, lock, options.batch)
            .await?;
        let count = claims.len();
        join_all(claims.into_iter().map(|claim| {
            let sub = subs.iter().find(|s| s.id == claim.subscriber).cloned();
            async move {
                let Some(sub) = sub else { return };
                let (event_id, attempt) = (claim.event.id.clone(), claim.attempt);
                let handled = (sub.handler)(claim.event, self.inner.container.clone());
                let outcome = crate::clock::timeout(self.inner.clock.as_ref(), sub.timeout, handled)
                    .await
                    .unwrap_or_else(|| Err(StepError::new(format!("timed out after {:?}", sub.timeout))));
                let log = &self.inner.log;
                let written = match outcome {
                    Ok(()) => log.delivered(&self.inner.node, &event_id, &sub.id).await,
                    Err(error) => {
                        let retry_in = options.retry_in(attempt);
                        tracing::warn!(subscriber = %sub.id, event = %event_id, attempt, %error, retry_in_ms = retry_in.as_millis() as u64, "event delivery failed; will retry");
                        log.delivery_failed(&self.inner.node, &event_id, &sub.id, error.message(), retry_in)
                            .await
                    }
                };
                if let Err(e) = written {
                    tracing::warn!(subscriber = %sub.id, event = %event_id, error = %e, "could not record a delivery");
                }
            }
        }))
        .await;
        Ok(count)
    }

    /// Delivers events to this node's subscribers until `stop` turns true: woken by
    /// publications (this process's, and other nodes' on Postgres), polling as the backstop.
    pub fn spawn_dispatcher(
        &self,
        options: DeliveryOptions,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            if engine.subscriber_ids().is_empty() {
                return;
            }
            let published = engine.inner.log.published();
            let mut registered = false;
            loop {
                if !registered {
                    match engine.register_subscribers().await {
                        Ok(()) => registered = true,
                        Err(e) => {
                            tracing::warn!(task = "event-dispatcher", error = %e, "could not register subscribers; will retry")
                        }
                    }
                    if let Err(e) = engine.inner.log.listen().await {
                        tracing::warn!(task = "event-dispatcher", error = %e, "could not listen for events; polling");
                    }
                }
                let delivered = match engine.deliver_due(&options).await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(task = "event-dispatcher", error = %e, "delivery pass failed; will retry");
                        0
                    }
                };
                if delivered > 0 && *stop.borrow() {
                    break;
                }
                if delivered == 0 {
                    tokio::select! {
                        _ = published.notified() => {}
                        () = crate::clock::sleep(engine.inner.clock.as_ref(), options.poll) => {}
                        _ = stop.changed() => break,
                    }
                }
            }
        })
    }
}
