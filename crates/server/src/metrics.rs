//! Prometheus metrics, kept in process: requests by route template and status, request latency
//! histograms by route, and verification outcomes. Route templates (`/admin/api-keys/{id}`), not
//! raw paths, label the series, so their number stays bounded whatever clients send.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// Latency bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    verifications: BTreeMap<(&'static str, &'static str), u64>,
}

/// The registry.
#[derive(Debug, Default)]
pub struct Metrics(Mutex<Inner>);

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.with(|m| {
            *m.requests
                .entry((method.to_owned(), route.to_owned(), status))
                .or_default() += 1;
            let h = m.latency.entry(route.to_owned()).or_default();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += seconds;
            h.count += 1;
        });
    }

    /// One verification: where (`store`, `admin_basic`, `verify_api`) and its code.
    pub fn verification(&self, source: &'static str, code: &'static str) {
        self.with(|m| *m.verifications.entry((source, code)).or_default() += 1);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.with(|m| {
            let mut out = String::new();
            out.push_str("# HELP keyward_http_requests_total HTTP requests by method, route and status.\n");
            out.push_str("# TYPE keyward_http_requests_total counter\n");
            for ((method, route, status), n) in &m.requests {
                let _ = writeln!(
                    out,
                    "keyward_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
            out.push_str("# HELP keyward_http_request_duration_seconds HTTP request latency by route.\n");
            out.push_str("# TYPE keyward_http_request_duration_seconds histogram\n");
            for (route, h) in &m.latency {
                for (bound, n) in BUCKETS.iter().zip(h.counts) {
                    let _ = writeln!(
                        out,
                        "keyward_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}"
                    );
                }
                let _ = writeln!(
                    out,
                    "keyward_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "keyward_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "keyward_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
            out.push_str("# HELP keyward_verifications_total Key verifications by source and outcome code.\n");
            out.push_str("# TYPE keyward_verifications_total counter\n");
            for ((source, code), n) in &m.verifications {
                let _ = writeln!(
                    out,
                    "keyward_verifications_total{{source=\"{source}\",code=\"{code}\"}} {n}"
                );
            }
            out
        })
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
        .request(&method, &route, res.status().as_u16(), start.elapsed().as_secs_f64());
    res
}
