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
