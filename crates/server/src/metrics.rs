//! Prometheus metrics, kept in process: requests by route template and status, request latency
//! histograms by route, verification outcomes and the verification cache's counters. Route
//! templates (`/admin/api-keys/{id}`), not raw paths, label the series, so their number stays
//! bounded whatever clients send.
//!
//! Recording takes no lock that requests queue on: each series is a set of atomic counters,
//! found under a read lock (taken exclusively only the first time a series appears).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use keyward::cache::CacheStats;

use crate::AppState;

/// Latency bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    /// Total of observations, nanoseconds.
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (slot, bound) in self.counts.iter().zip(BUCKETS) {
            if seconds <= bound {
                slot.fetch_add(1, Ordering::Relaxed);
            }
        }
        // Saturating float-to-int conversion: a negative or huge value cannot wrap.
        let nanos = (seconds * 1e9) as u64;
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Series found by key under a read lock; created under the write lock on first sight.
#[derive(Debug)]
struct Family<K, V>(RwLock<BTreeMap<K, Arc<V>>>);

impl<K, V> Default for Family<K, V> {
    fn default() -> Self {
        Self(RwLock::new(BTreeMap::new()))
    }
}

impl<K: Ord + Clone, V: Default> Family<K, V> {
    fn get<Q>(&self, key: &Q, owned: impl FnOnce() -> K) -> Arc<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        if let Some(v) = self.0.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return Arc::clone(v);
        }
        let mut all = self.0.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(all.entry(owned()).or_default())
    }

    fn snapshot(&self) -> Vec<(K, Arc<V>)> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }
}

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Family<(String, String, u16), AtomicU64>,
    latency: Family<String, Histogram>,
    verifications: Family<(&'static str, &'static str), AtomicU64>,
}

impl Metrics {
    /// One request. Takes the labels owned: the series' keys are made from them only the first
    /// time a series appears, so a request allocates nothing here.
    pub fn request(&self, method: String, route: String, status: u16, seconds: f64) {
        self.latency.get(route.as_str(), || route.clone()).observe(seconds);
        let key = (method, route, status);
        self.requests.get(&key, || key.clone()).fetch_add(1, Ordering::Relaxed);
    }

    /// One verification: where (`store`, `admin_basic`, `verify_api`) and its code.
    pub fn verification(&self, source: &'static str, code: &'static str) {
        self.verifications
            .get(&(source, code), || (source, code))
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with the verification cache's counters.
    pub fn render(&self, cache: &CacheStats) -> String {
        let mut out = String::new();
        out.push_str("# HELP keyward_http_requests_total HTTP requests by method, route and status.\n");
        out.push_str("# TYPE keyward_http_requests_total counter\n");
        for ((method, route, status), n) in self.requests.snapshot() {
            let _ = writeln!(
                out,
                "keyward_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP keyward_http_request_duration_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE keyward_http_request_duration_seconds histogram\n");
        for (route, h) in self.latency.snapshot() {
            for (bound, n) in BUCKETS.iter().zip(&h.counts) {
                let _ = writeln!(
                    out,
                    "keyward_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                    n.load(Ordering::Relaxed)
                );
            }
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "keyward_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "keyward_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
            );
            let _ = writeln!(
                out,
                "keyward_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
        out.push_str("# HELP keyward_verifications_total Key verifications by source and outcome code.\n");
        out.push_str("# TYPE keyward_verifications_total counter\n");
        for ((source, code), n) in self.verifications.snapshot() {
            let _ = writeln!(
                out,
                "keyward_verifications_total{{source=\"{source}\",code=\"{code}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let counters = [
            (
                "keyward_cache_hits_total",
                "Verifications answered from a cached key.",
                cache.hits,
            ),
            (
                "keyward_cache_negative_hits_total",
                "Verifications answered from a cached \"no such key\".",
                cache.negative_hits,
            ),
            (
                "keyward_cache_misses_total",
                "Verifications that read storage.",
                cache.misses,
            ),
            (
                "keyward_cache_invalidations_total",
                "Changes applied to the cache (own writes and other nodes' notices).",
                cache.invalidations,
            ),
            (
                "keyward_cache_flushes_total",
                "Times the whole cache was emptied (reconnects, going offline).",
                cache.flushes,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        }
        let gauges = [
            ("keyward_cache_keys", "Keys in the verification cache.", cache.keys),
            (
                "keyward_cache_capacity",
                "Keys the verification cache holds at most.",
                cache.capacity,
            ),
            (
                "keyward_cache_online",
                "1 while the cache is kept true by change notices (and used), else 0.",
                u64::from(cache.online),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}

/// Middleware recording every request.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let res = next.run(req).await;
    state
        .metrics
        .request(method, route, res.status().as_u16(), start.elapsed().as_secs_f64());
    res
}
