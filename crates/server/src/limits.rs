//! Password-guessing limits: each login attempt is counted, *before* its password is checked,
//! against its client address (IPv6 by /64) and against the email it names, in fixed windows.
//! Checking and counting are one step under one lock, so a burst of concurrent attempts cannot
//! get more evaluated than the limit. A successful login gives its attempt back.
//!
//! Only password logins are limited. A request with a valid login token, session cookie or
//! secret key is never refused, whatever its address did before: invalid tokens cost nothing to
//! refuse (a checksum or a signature check), so there is nothing to slow down there.
//!
//! The owner is never locked out by strangers: a successful sign-in leaves a signed device
//! cookie (OWASP's "device cookie" scheme), and an attempt that carries a valid one for the
//! email it names is counted against that device alone, with the per-address allowance; the
//! per-email limit that slows a guess spread over many addresses does not apply to it.
//!
//! Memory is bounded: at most `capacity` subjects are tracked; past it the oldest is forgotten.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What an attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    Address(IpAddr),
    /// No client address is known (an embedding without connect info): one shared bucket.
    UnknownAddress,
    Email(String),
    /// A device that signed in as the email before (the nonce of its device cookie).
    Device(String),
}

#[derive(Debug, Default)]
struct Buckets {
    counts: HashMap<Subject, (u32, Instant)>,
    /// Subjects in the order they were first counted, for evicting the oldest.
    order: VecDeque<Subject>,
}

/// The login limiter.
#[derive(Debug)]
pub struct AuthLimiter {
    per_address: u32,
    per_email: u32,
    window: Duration,
    capacity: usize,
    buckets: Mutex<Buckets>,
}

/// The address an attempt is counted under: IPv4 as is (also when mapped into IPv6), IPv6 by
/// its /64, since one host commonly holds a whole /64.
pub fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl AuthLimiter {
    /// `per_address` attempts per `window` from one address; five times that for one email
    /// (slowing a guess spread over many addresses); 100,000 subjects at most.
    pub fn new(per_address: u32, window: Duration) -> Self {
        Self {
            per_address,
            per_email: per_address.saturating_mul(5),
            window,
            capacity: 100_000,
            buckets: Mutex::default(),
        }
    }

    pub fn with_per_email(mut self, per_email: u32) -> Self {
        self.per_email = per_email;
        self
    }

    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(2);
        self
    }

    /// What an attempt is counted against, with each subject's limit: a known device alone,
    /// else the address and the email.
    fn subjects(&self, ip: Option<IpAddr>, email: &str, device: Option<&str>) -> Vec<(Subject, u32)> {
        match device {
            Some(d) => vec![(Subject::Device(d.to_owned()), self.per_address)],
            None => vec![
                (
                    ip.map_or(Subject::UnknownAddress, |ip| Subject::Address(bucket_of(ip))),
                    self.per_address,
                ),
                (Subject::Email(email.trim().to_lowercase()), self.per_email),
            ],
        }
    }

    /// Counts one login attempt, or refuses it with the seconds to wait when its address or
    /// its email is at the limit (then nothing is counted). `device` is the nonce of a valid
    /// device cookie for this email: then only that device's own count applies.
    pub fn attempt(&self, ip: Option<IpAddr>, email: &str, device: Option<&str>) -> Result<(), u64> {
        let now = Instant::now();
        let subjects = self.subjects(ip, email, device);
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = None;
        for (subject, limit) in subjects.iter().map(|(s, l)| (s, *l)) {
            if let Some((count, since)) = b.counts.get(subject) {
                let elapsed = now.duration_since(*since);
                if elapsed < self.window && *count >= limit {
                    let left = (self.window - elapsed).as_secs().max(1);
                    wait = Some(wait.map_or(left, |w: u64| w.max(left)));
                }
            }
        }
        if let Some(w) = wait {
            return Err(w);
        }
        for (subject, _) in subjects {
            if !b.counts.contains_key(&subject) {
                while b.counts.len() >= self.capacity {
                    match b.order.pop_front() {
                        Some(oldest) => {
                            b.counts.remove(&oldest);
                        }
                        None => break,
                    }
                }
                b.order.push_back(subject.clone());
            }
            let entry = b.counts.entry(subject).or_insert((0, now));
            if now.duration_since(entry.1) >= self.window {
                *entry = (0, now);
            }
            entry.0 = entry.0.saturating_add(1);
        }
        Ok(())
    }

    /// A login succeeded: its attempt is given back.
    pub fn succeeded(&self, ip: Option<IpAddr>, email: &str, device: Option<&str>) {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for (subject, _) in self.subjects(ip, email, device) {
            if let Some(entry) = b.counts.get_mut(&subject) {
                entry.0 = entry.0.saturating_sub(1);
            }
        }
    }

    /// How many subjects are tracked (bounded by the capacity).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).counts.len()
    }
}

impl Default for AuthLimiter {
    /// 20 attempts a minute per address, 100 per email.
    fn default() -> Self {
        Self::new(20, Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_and_an_email_are_limited_separately() {
        let l = AuthLimiter::new(3, Duration::from_secs(60)).with_per_email(5);
        for _ in 0..3 {
            assert!(l.attempt(ip("10.0.0.1"), "a@x", None).is_ok());
        }
        assert!(
            l.attempt(ip("10.0.0.1"), "b@x", None).is_err_and(|s| s <= 60),
            "the address is spent"
        );
        assert!(l.attempt(ip("10.0.0.2"), "a@x", None).is_ok());
        assert!(
            l.attempt(ip("10.0.0.3"), "A@X ", None).is_ok(),
            "emails compare case-blind"
        );
        assert!(l.attempt(ip("10.0.0.4"), "a@x", None).is_err(), "the email is spent");
        l.succeeded(ip("10.0.0.4"), "a@x", None);
        assert!(
            l.attempt(ip("10.0.0.4"), "a@x", None).is_ok(),
            "a success gives its attempt back"
        );
        let quick = AuthLimiter::new(1, Duration::from_millis(1));
        assert!(quick.attempt(ip("10.0.0.1"), "q", None).is_ok());
        std::thread::sleep(Duration::from_millis(5));
        assert!(quick.attempt(ip("10.0.0.1"), "q", None).is_ok(), "the window ends");
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let l = AuthLimiter::new(2, Duration::from_secs(60)).with_per_email(100);
        assert!(l.attempt(ip("2001:db8:1:2::1"), "e", None).is_ok());
        assert!(l.attempt(ip("2001:db8:1:2:ffff::9"), "e", None).is_ok());
        assert!(
            l.attempt(ip("2001:db8:1:2:abcd::1"), "e", None).is_err(),
            "the same /64"
        );
        assert!(l.attempt(ip("2001:db8:1:3::1"), "e", None).is_ok(), "another /64");
        assert_eq!(
            bucket_of("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn concurrent_attempts_never_exceed_the_limit() {
        let l = std::sync::Arc::new(AuthLimiter::new(20, Duration::from_secs(60)));
        let handles: Vec<_> = (0..50)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || l.attempt(ip("10.9.9.9"), "victim@x", None).is_ok())
            })
            .collect();
        let allowed = handles.into_iter().map(|h| h.join().unwrap()).filter(|ok| *ok).count();
        assert_eq!(allowed, 20, "no more than the limit get through a burst");
    }

    #[test]
    fn memory_stays_bounded_under_many_addresses() {
        let l = AuthLimiter::new(20, Duration::from_secs(60)).with_capacity(1_000);
        for i in 0..100_000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.attempt(Some(a), "one@x", None);
        }
        assert!(l.tracked() <= 1_000, "{}", l.tracked());
        let d = AuthLimiter::default();
        for i in 0..100_000u32 {
            let _ = d.attempt(Some(IpAddr::V4(std::net::Ipv4Addr::from(i))), &format!("{i}@x"), None);
        }
        assert!(d.tracked() <= 100_000, "{}", d.tracked());
    }

    #[test]
    fn without_an_address_every_attempt_shares_one_bucket() {
        let l = AuthLimiter::new(2, Duration::from_secs(60)).with_per_email(100);
        assert!(l.attempt(None, "a", None).is_ok());
        assert!(l.attempt(None, "b", None).is_ok());
        assert!(l.attempt(None, "c", None).is_err());
    }
}
