//! ULIDs (48 bits of milliseconds and 80 random bits, in Crockford's base32, so ids sort by
//! creation time), encoded by the `ulid` crate, and the one generator every id of keyward comes
//! from: transaction, node and event ids here, key and channel ids in `keyward` (with its
//! injected clock and entropy). Their time part is the system's, whatever clock an engine runs
//! on: it orders and separates ids, and nothing is decided by it.

use std::sync::Mutex;

use ulid::Ulid;

use crate::clock::Clock;

/// Makes ULIDs that always increase: an id from a later millisecond starts from fresh random
/// bits; an id from the same millisecond — or from a clock that stepped back — is one past the
/// previous, so ids made in one call (or events published together) keep their order.
#[derive(Debug)]
pub struct UlidGenerator {
    last: Mutex<Ulid>,
}

impl Default for UlidGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl UlidGenerator {
    pub const fn new() -> Self {
        Self {
            last: Mutex::new(Ulid::nil()),
        }
    }

    /// The next id for a clock reading of `millis` (low 48 bits) and 80 `random` bits.
    pub fn next(&self, millis: u64, random: u128) -> Ulid {
        let millis = millis & 0xFFFF_FFFF_FFFF;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let next = if millis > last.timestamp_ms() {
            Ulid::from_parts(millis, random)
        } else {
            // Not later than the previous id: step it. Its random bits run out only after 2^80
            // ids in one millisecond; the step then carries into the next millisecond.
            last.increment().unwrap_or_else(|carried| carried)
        };
        *last = next;
        next
    }
}

/// A fresh ULID from the system clock and the OS random source.
pub fn new_ulid() -> String {
    static IDS: UlidGenerator = UlidGenerator::new();
    let millis = u64::try_from(crate::clock::SystemClock.now_millis()).unwrap_or(0);
    IDS.next(millis, fresh_random()).to_string()
}

fn fresh_random() -> u128 {
    let mut bytes = [0u8; 16];
    // Transaction ids need uniqueness, not secrecy: if the OS source fails, the clock's
    // nanoseconds and a counter still keep them apart.
    if getrandom::fill(&mut bytes[6..]).is_err() {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        bytes[6..10].copy_from_slice(&nanos.to_be_bytes());
        bytes[8..16].copy_from_slice(&n.to_be_bytes());
    }
    u128::from_be_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_in_one_millisecond_and_when_the_clock_steps_back() {
        let ids = UlidGenerator::new();
        let a = ids.next(1_700_000_000_005, u128::MAX >> 48);
        let b = ids.next(1_700_000_000_005, 0);
        let c = ids.next(1_700_000_000_001, 0); // the clock stepped back
        let d = ids.next(1_700_000_000_009, 7);
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert_eq!(
            b.timestamp_ms(),
            1_700_000_000_006,
            "a full random part carries into the next millisecond"
        );
        assert_eq!(
            c.timestamp_ms(),
            b.timestamp_ms(),
            "a clock that stepped back does not move ids back"
        );
        assert_eq!((d.timestamp_ms(), d.random()), (1_700_000_000_009, 7));
        assert_eq!(a.to_string().len(), 26);
        assert_ne!(new_ulid(), new_ulid());
    }
}
