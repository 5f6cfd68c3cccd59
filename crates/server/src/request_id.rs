//! `x-request-id` for requests that arrive without one: UUID-shaped, unique within the process
//! (a counter run through a bijective mix) and unpredictable across processes (a random start).
//! One atomic add and a little arithmetic per request, where a random UUID reads the system's
//! random source each time.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

/// Makes request ids; cheap to clone (the counter is shared).
#[derive(Clone)]
pub struct MakeId {
    seed: u64,
    next: std::sync::Arc<AtomicU64>,
}

impl Default for MakeId {
    fn default() -> Self {
        let mut bytes = [0u8; 16];
        // Without the system's random source the ids are still unique in the process.
        let _ = getrandom::fill(&mut bytes);
        let [a, b, c, d, e, f, g, h, rest @ ..] = bytes;
        Self {
            seed: u64::from_le_bytes([a, b, c, d, e, f, g, h]),
            next: std::sync::Arc::new(AtomicU64::new(u64::from_le_bytes(rest))),
        }
    }
}

/// A bijection of u64 (splitmix64's finaliser): distinct inputs give distinct outputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl MakeId {
    fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let hi = mix(self.seed ^ mix(n));
        let lo = mix(n);
        let v = (u128::from(hi) << 64) | u128::from(lo);
        // Version 4 and RFC 4122 variant bits, so the id reads as a UUID.
        let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = String::with_capacity(36);
        for nibble in 0..32 {
            if matches!(nibble, 8 | 12 | 16 | 20) {
                id.push('-');
            }
            id.push(char::from(HEX[((v >> (124 - 4 * nibble)) & 0xf) as usize]));
        }
        id
    }
}

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::try_from(self.next_id()).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn ids_are_uuid_shaped_and_distinct() {
        let make = MakeId::default();
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| make.next_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(50) {
            let parts: Vec<&str> = id.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{id}"
            );
            assert!(parts[2].starts_with('4'), "version 4: {id}");
            assert!("89ab".contains(&parts[3][..1]), "RFC 4122 variant: {id}");
        }
        assert_ne!(
            MakeId::default().next_id(),
            MakeId::default().next_id(),
            "processes differ"
        );
    }
}

/// The span every request is logged in: method, path, the query with every secret redacted,
/// and the request id. Never the full URI: a `?token=sk_…` filter would put a secret in the log,
/// and so would a token pasted into a path.
pub fn request_span<B>(req: &Request<B>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::debug_span!(
        "request",
        method = %req.method(),
        path = %keyward::redact::scrub(req.uri().path()),
        query = %redacted_query(req.uri().query().unwrap_or_default()),
        request_id = %id,
    )
}

/// The parameters whose values are logged: paging, ordering, selection and the key type. Every
/// other value (a search, a filter, anything unknown) may hold a secret in some form — a token, a
/// part of one, its base64 — and is logged as `[redacted]`.
const LOGGED: [&str; 6] = ["limit", "offset", "order", "fields", "type", "with_deleted"];

/// A query string with every value but [`LOGGED`] ones replaced by `[redacted]`, and any name
/// shaped like a token too.
pub fn redacted_query(query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let name = keyward::redact::scrub(&name);
        if LOGGED.contains(&name.as_ref()) {
            out.append_pair(&name, &keyward::redact::scrub(&value));
        } else {
            out.append_pair(&name, "[redacted]");
        }
    }
    out.finish()
}

#[cfg(test)]
mod redaction_tests {
    use super::redacted_query;

    #[test]
    fn tokens_never_reach_the_log_in_any_spelling() {
        let q = "limit=20&token=sk_abc&token[$in][]=pk_def&q=rk%5Fghi&type=secret&key=Sk_Shout&x=eyJh.eyJi.c2ln&rk_abcdefghij=1&q=bHAGpartial";
        let r = redacted_query(q);
        for secret in [
            "sk_abc",
            "pk_def",
            "rk_ghi",
            "rk%5Fghi",
            "Sk_Shout",
            "eyJh",
            "rk_abcdefghij",
            "bHAG",
        ] {
            assert!(!r.contains(secret), "{secret} in {r}");
        }
        assert!(r.contains("limit=20") && r.contains("type=secret"), "{r}");
    }
}
