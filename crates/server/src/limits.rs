//! Failed-authentication limiting per client address: after `max_failures` failed attempts
//! within `window`, that address is refused (429) until the window ends. Kept in memory per node:
//! the goal is to make password and key guessing slow, not to count exactly across a cluster.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limiter.
#[derive(Debug)]
pub struct AuthLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Addresses tracked before old entries are swept.
const SWEEP_AT: usize = 10_000;

impl AuthLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds to wait)` when `ip` is over its limit.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (count, since) = map.get(&ip)?;
        let elapsed = since.elapsed();
        (*count >= self.max_failures && elapsed < self.window).then(|| (self.window - elapsed).as_secs().max(1))
    }

    /// Records one failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            let window = self.window;
            map.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = map.entry(ip).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 = entry.0.saturating_add(1);
    }
}

impl Default for AuthLimiter {
    /// 20 failures a minute per address.
    fn default() -> Self {
        Self::new(20, Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_and_others_are_not() {
        let l = AuthLimiter::new(3, Duration::from_secs(60));
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..2 {
            l.failed(a);
        }
        assert_eq!(l.blocked(a), None);
        l.failed(a);
        assert!(l.blocked(a).is_some_and(|s| s <= 60));
        assert_eq!(l.blocked(b), None);
        let quick = AuthLimiter::new(1, Duration::from_millis(1));
        quick.failed(a);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(quick.blocked(a), None, "the window ends");
    }
}
