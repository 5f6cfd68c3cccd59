//! Prometheus metrics, kept in process: requests by route template and status, request latency
//! histograms by route, verification outcomes and the verification cache's counters. Route
//! templates (`/admin/api-keys/{id}`), not raw paths, label the series, so their number stays
//! bounded whatever clients send.
//!
//! Recording shares no lock and, mostly, no cache line between threads: a thread finds a series
//! through a map of its own (the registry's lock is taken only the first time a thread meets a
//! series), and counts on its own stripe of the series' counters; rendering sums the stripes.
//! Methods other than the standard ones are labelled `OTHER`, so clients cannot grow the number
//! of series either.
//!
//! Hand-written rather than `prometheus-client`: that crate's `Family` takes a shared read lock on
//! every lookup and counts on one shared atomic, the cross-core contention this path (every
//! request) is built to avoid; the text format written here is the small stable subset scrapers read.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use keyward::cache::CacheStats;

use crate::AppState;

/// Latency bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

/// Copies of every counter, one per thread group, each on its own cache lines: threads that
/// count at once write different lines. Read by summing.
const STRIPES: usize = 16;

static NEXT_STRIPE: AtomicU64 = AtomicU64::new(0);
static NEXT_REGISTRY: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static STRIPE: usize = (NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) as usize) % STRIPES;
    /// This thread's way to the series it has recorded to: no shared lock to find them.
    static SEEN: RefCell<HashMap<SeenKey, Seen>> = RefCell::new(HashMap::new());
}

/// Entries a thread keeps in [`SEEN`] before starting over (routers rebuilt many times, as in
/// tests, would otherwise grow it without end).
const SEEN_MAX: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum SeenKey {
    /// Registry, route text (address, length), method, status.
    Request(u64, usize, usize, &'static str, u16),
    /// Registry, source, code (addresses).
    Verification(u64, usize, usize),
}

#[derive(Clone)]
enum Seen {
    Request(Arc<RequestSeries>),
    Verification(Arc<VerificationSeries>),
}

fn stripe() -> usize {
    STRIPE.with(|s| *s)
}

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A counter split over [`STRIPES`] cache lines.
#[derive(Debug, Default)]
struct Counter([Padded; STRIPES]);

impl Counter {
    fn add(&self) {
        self.0[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
    }
}

/// One stripe of a histogram: observations per bucket (not cumulative: one increment each;
/// the last slot is past every bound), their total in nanoseconds, and their number.
#[derive(Debug, Default)]
#[repr(align(128))]
struct HistogramStripe {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

#[derive(Debug, Default)]
struct Histogram([HistogramStripe; STRIPES]);

impl Histogram {
    fn observe(&self, seconds: f64) {
        let h = &self.0[stripe()];
        let slot = BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(BUCKETS.len());
        h.counts[slot].fetch_add(1, Ordering::Relaxed);
        // Saturating float-to-int conversion: a negative or huge value cannot wrap.
        h.sum_nanos.fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
        h.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per bound (Prometheus' `le`), the total in seconds, the count.
    fn read(&self) -> ([u64; BUCKETS.len()], f64, u64) {
        let mut cumulative = [0u64; BUCKETS.len()];
        let (mut sum, mut count) = (0u64, 0u64);
        for h in &self.0 {
            let mut running = 0;
            for (slot, n) in cumulative.iter_mut().zip(&h.counts) {
                running += n.load(Ordering::Relaxed);
                *slot += running;
            }
            sum += h.sum_nanos.load(Ordering::Relaxed);
            count += h.count.load(Ordering::Relaxed);
        }
        (cumulative, sum as f64 / 1e9, count)
    }
}

#[derive(Debug)]
struct RequestSeries {
    route: String,
    count: Counter,
    latency: Arc<Histogram>,
}

#[derive(Debug)]
struct VerificationSeries {
    labels: (&'static str, &'static str),
    count: Counter,
}

/// Series by their labels, for creating them (once) and for rendering; recording finds them
/// through [`SEEN`].
#[derive(Debug)]
struct Family<K, V>(RwLock<BTreeMap<K, Arc<V>>>);

impl<K, V> Default for Family<K, V> {
    fn default() -> Self {
        Self(RwLock::new(BTreeMap::new()))
    }
}

impl<K: Ord + Clone, V> Family<K, V> {
    fn get_or(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        let mut all = self.0.write().unwrap_or_else(|p| p.into_inner());
        Arc::clone(all.entry(key).or_insert_with(|| Arc::new(make())))
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
#[derive(Debug)]
pub struct Metrics {
    id: u64,
    requests: Family<(&'static str, String, u16), RequestSeries>,
    latency: Family<String, Histogram>,
    verifications: Family<(&'static str, &'static str), VerificationSeries>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            id: NEXT_REGISTRY.fetch_add(1, Ordering::Relaxed),
            requests: Family::default(),
            latency: Family::default(),
            verifications: Family::default(),
        }
    }
}

/// A method label: the standard ones by name, every other as `OTHER` (clients choose methods,
/// and each label value is a series kept for the life of the process).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::DELETE, "DELETE"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN.iter().find(|(m, _)| m == method).map_or("OTHER", |(_, l)| l)
}

/// The series `key` names in this thread's [`SEEN`], if `check` accepts it; else `make`'s,
/// remembered.
fn seen<T>(key: SeenKey, found: impl Fn(&Seen) -> Option<Arc<T>>, make: impl FnOnce() -> (Arc<T>, Seen)) -> Arc<T> {
    SEEN.with(|seen| {
        let mut seen = seen.borrow_mut();
        if let Some(hit) = seen.get(&key).and_then(&found) {
            return hit;
        }
        let (series, entry) = make();
        if seen.len() >= SEEN_MAX {
            seen.clear();
        }
        seen.insert(key, entry);
        series
    })
}

impl Metrics {
    /// One request: found through this thread's map of series (no lock), counted on this
    /// thread's stripe. `route` is a route template (or `unmatched`).
    pub fn request(&self, method: &Method, route: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        let key = SeenKey::Request(self.id, route.as_ptr() as usize, route.len(), method, status);
        let series = seen(
            key,
            // The text at an address can change (a router dropped, another built): compared.
            |s| match s {
                Seen::Request(r) if r.route == route => Some(Arc::clone(r)),
                _ => None,
            },
            || {
                let latency = self.latency.get_or(route.to_owned(), Histogram::default);
                let series = self
                    .requests
                    .get_or((method, route.to_owned(), status), || RequestSeries {
                        route: route.to_owned(),
                        count: Counter::default(),
                        latency,
                    });
                (Arc::clone(&series), Seen::Request(series))
            },
        );
        series.count.add();
        series.latency.observe(seconds);
    }

    /// One verification: where (`store`, `admin_basic`, `verify_api`) and its code.
    pub fn verification(&self, source: &'static str, code: &'static str) {
        let key = SeenKey::Verification(self.id, source.as_ptr() as usize, code.as_ptr() as usize);
        let series = seen(
            key,
            |s| match s {
                Seen::Verification(v) if v.labels == (source, code) => Some(Arc::clone(v)),
                _ => None,
            },
            || {
                let series = self.verifications.get_or((source, code), || VerificationSeries {
                    labels: (source, code),
                    count: Counter::default(),
                });
                (Arc::clone(&series), Seen::Verification(series))
            },
        );
        series.count.add();
    }

    /// The Prometheus text exposition, with the verification cache's counters.
    pub fn render(&self, cache: &CacheStats) -> String {
        let mut out = String::new();
        self.render_requests(&mut out);
        self.render_latency(&mut out);
        self.render_verifications(&mut out);
        render_cache(&mut out, cache);
        out
    }

    fn render_requests(&self, out: &mut String) {
        out.push_str("# HELP keyward_http_requests_total HTTP requests by method, route and status.\n");
        out.push_str("# TYPE keyward_http_requests_total counter\n");
        for ((method, route, status), n) in self.requests.snapshot() {
            let _ = writeln!(
                out,
                "keyward_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {}",
                n.count.get()
            );
        }
    }

    fn render_latency(&self, out: &mut String) {
        out.push_str("# HELP keyward_http_request_duration_seconds HTTP request latency by route.\n");
        out.push_str("# TYPE keyward_http_request_duration_seconds histogram\n");
        for (route, h) in self.latency.snapshot() {
            let (cumulative, sum, count) = h.read();
            for (bound, n) in BUCKETS.iter().zip(cumulative) {
                let _ = writeln!(
                    out,
                    "keyward_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "keyward_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "keyward_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "keyward_http_request_duration_seconds_count{{route=\"{route}\"}} {count}"
            );
        }
    }

    fn render_verifications(&self, out: &mut String) {
        out.push_str("# HELP keyward_verifications_total Key verifications by source and outcome code.\n");
        out.push_str("# TYPE keyward_verifications_total counter\n");
        for ((source, code), n) in self.verifications.snapshot() {
            let _ = writeln!(
                out,
                "keyward_verifications_total{{source=\"{source}\",code=\"{code}\"}} {}",
                n.count.get()
            );
        }
    }
}

/// The verification cache's counters and gauges, one unlabelled series each.
fn render_cache(out: &mut String, cache: &CacheStats) {
    let series = [
        (
            "keyward_cache_hits_total",
            "counter",
            "Verifications answered from a cached key.",
            cache.hits,
        ),
        (
            "keyward_cache_negative_hits_total",
            "counter",
            "Verifications answered from a cached \"no such key\".",
            cache.negative_hits,
        ),
        (
            "keyward_cache_misses_total",
            "counter",
            "Verifications that read storage.",
            cache.misses,
        ),
        (
            "keyward_cache_invalidations_total",
            "counter",
            "Changes applied to the cache (own writes and other nodes' notices).",
            cache.invalidations,
        ),
        (
            "keyward_cache_flushes_total",
            "counter",
            "Times the whole cache was emptied (reconnects, going offline).",
            cache.flushes,
        ),
        (
            "keyward_cache_keys",
            "gauge",
            "Keys in the verification cache.",
            cache.keys,
        ),
        (
            "keyward_cache_capacity",
            "gauge",
            "Keys the verification cache holds at most.",
            cache.capacity,
        ),
        (
            "keyward_cache_online",
            "gauge",
            "1 while the cache is kept true by change notices (and used), else 0.",
            u64::from(cache.online),
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// Middleware recording every request.
pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // The template's text is shared by every request of the route: held, not copied.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let start = Instant::now();
    let res = next.run(req).await;
    state.metrics.request(
        &method,
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        res.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    res
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines().find(|l| l.starts_with(prefix)).unwrap_or("")
    }

    #[test]
    fn threads_counting_at_once_lose_nothing() {
        let metrics = Arc::new(Metrics::default());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let metrics = Arc::clone(&metrics);
                std::thread::spawn(move || {
                    for i in 0..10_000 {
                        metrics.request(&Method::GET, "/store/sales-channels", 200, 0.0001 * f64::from(t));
                        if i % 2 == 0 {
                            metrics.verification("store", "VALID");
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = metrics.render(&CacheStats::default());
        let route = r#"route="/store/sales-channels""#;
        assert_eq!(
            line(
                &text,
                &format!(r#"keyward_http_requests_total{{method="GET",{route},status="200"}}"#)
            ),
            format!(r#"keyward_http_requests_total{{method="GET",{route},status="200"}} 80000"#)
        );
        assert!(text.contains(&format!("keyward_http_request_duration_seconds_count{{{route}}} 80000")));
        assert!(text.contains(&format!(
            r#"keyward_http_request_duration_seconds_bucket{{{route},le="+Inf"}} 80000"#
        )));
        // Threads 0..=5 observed at most 0.5 ms (the first bound), 6 and 7 above it.
        assert!(
            text.contains(&format!(
                r#"keyward_http_request_duration_seconds_bucket{{{route},le="0.0005"}} 60000"#
            )),
            "{text}"
        );
        assert!(text.contains(r#"keyward_verifications_total{source="store",code="VALID"} 40000"#));
    }

    #[test]
    fn registries_on_one_thread_stay_apart_and_methods_are_bounded() {
        let (a, b) = (Metrics::default(), Metrics::default());
        a.request(&Method::GET, "/health", 200, 0.0);
        a.request(&Method::GET, "/health", 200, 0.0);
        b.request(&Method::GET, "/health", 200, 0.0);
        b.request(&Method::from_bytes(b"BREW").unwrap(), "/health", 405, 0.0);
        let (a, b) = (a.render(&CacheStats::default()), b.render(&CacheStats::default()));
        assert!(
            a.contains(r#"keyward_http_requests_total{method="GET",route="/health",status="200"} 2"#),
            "{a}"
        );
        assert!(
            b.contains(r#"keyward_http_requests_total{method="GET",route="/health",status="200"} 1"#),
            "{b}"
        );
        assert!(
            b.contains(r#"keyward_http_requests_total{method="OTHER",route="/health",status="405"} 1"#),
            "{b}"
        );
        // Another route text at the same address is another series (a rebuilt router).
        let m = Metrics::default();
        let mut route = String::from("/one");
        m.request(&Method::GET, &route, 200, 0.0);
        route.replace_range(.., "/two");
        m.request(&Method::GET, &route, 200, 0.0);
        let text = m.render(&CacheStats::default());
        assert!(
            text.contains(r#"route="/one",status="200"} 1"#) && text.contains(r#"route="/two",status="200"} 1"#),
            "{text}"
        );
    }
}
