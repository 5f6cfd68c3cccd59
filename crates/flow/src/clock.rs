//! Where "now" comes from, and how to wait for an instant: the one clock of the engine and of
//! keyward's module (which reads it as timestamps, `keyward::time::ClockExt`).
//!
//! One clock serves a whole log and every engine on it: leases, retries, delivery backoff,
//! job ticks, step timeouts and the instants the log writes are all read from it. The system
//! clock is the default; [`ManualClock`] moves only when a test says so, and wakes every
//! waiter whose instant it passes — so lease, retry and schedule tests run without sleeping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A future the clock resolves when its instant has come.
pub type Wait = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// The engine's time: milliseconds since the Unix epoch, and waiting for one of them.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;

    /// Now to within a few milliseconds, never ahead of [`Clock::now_millis`] and never a second
    /// or more behind it: for what tolerates that (the age of a cache entry, a key's last use),
    /// read where every nanosecond counts.
    fn coarse_now_millis(&self) -> i64 {
        self.now_millis()
    }

    /// Resolves once [`Clock::now_millis`] reads `at` or later.
    fn sleep_until(&self, at: i64) -> Wait;
}

/// Waits `d` on `clock`.
pub fn sleep(clock: &dyn Clock, d: Duration) -> Wait {
    clock.sleep_until(clock.now_millis().saturating_add(millis(d)))
}

/// `fut`, or `None` when `limit` passes on `clock` first.
pub async fn timeout<F: Future>(clock: &dyn Clock, limit: Duration, fut: F) -> Option<F::Output> {
    tokio::select! {
        out = fut => Some(out),
        () = sleep(clock, limit) => None,
    }
}

pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The system's clock, waiting with tokio's timers.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => millis(d),
            Err(before) => millis(before.duration()).saturating_neg(),
        }
    }

    /// The kernel's tick-granular realtime clock (a few ms behind at most), read from the vDSO
    /// at a fraction of the precise clock's cost.
    #[cfg(target_os = "linux")]
    fn coarse_now_millis(&self) -> i64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        t.tv_sec.saturating_mul(1000).saturating_add(t.tv_nsec / 1_000_000)
    }

    fn sleep_until(&self, at: i64) -> Wait {
        let wait = u64::try_from(at.saturating_sub(self.now_millis())).unwrap_or(0);
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to. Waiters wake when it passes their instant.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<tokio::sync::watch::Sender<i64>>,
}

impl ManualClock {
    /// A clock reading `at` (milliseconds since the Unix epoch).
    pub fn new(at: i64) -> Self {
        Self {
            now: Arc::new(tokio::sync::watch::channel(at).0),
        }
    }

    /// Moves the clock forward by `d`, waking whoever waited for an instant up to the new now.
    pub fn advance(&self, d: Duration) {
        self.now.send_modify(|now| *now = now.saturating_add(millis(d)));
    }

    /// How many waits on the clock are pending: a test that must know a task is waiting
    /// before it moves the clock asks this.
    pub fn waiters(&self) -> usize {
        self.now.receiver_count()
    }

    /// Sets the clock (backwards too: a clock that steps back is a case to test).
    pub fn set(&self, at: i64) {
        self.now.send_replace(at);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: i64) -> Wait {
        let mut now = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as the clock; if every handle is gone, nothing will
            // ever move it, and the wait never ends — as a wait on a stopped clock should not.
            if now.wait_for(|now| *now >= at).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[tokio::test]
    async fn a_manual_clock_wakes_a_waiter_when_it_passes_its_instant_and_not_before() {
        let clock = ManualClock::new(1_000);
        let mut wait = tokio::spawn(sleep(&clock, Duration::from_millis(500)));
        clock.advance(Duration::from_millis(499));
        tokio::task::yield_now().await;
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut wait)
                .await
                .is_err(),
            "woke early"
        );
        clock.advance(Duration::from_millis(1));
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(clock.now_millis(), 1_500);
    }

    #[tokio::test]
    async fn a_timeout_on_a_manual_clock_fires_when_the_clock_passes_it() {
        let clock = ManualClock::new(0);
        let c = clock.clone();
        let cut = tokio::spawn(async move { timeout(&c, Duration::from_secs(30), std::future::pending::<()>()).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(30));
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(5), cut)
                .await
                .unwrap()
                .unwrap(),
            None
        );
    }
}
