//! ULIDs for transaction and node ids: 48 bits of milliseconds and 80 random bits, in
//! Crockford's base32, so ids sort by creation time.

const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Encodes a ULID from its millisecond timestamp (low 48 bits) and random part (low 80 bits).
pub fn encode_ulid(millis: u64, random: u128) -> String {
    let value = (u128::from(millis & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
    (0..26)
        .map(|i| {
            let shift = 125 - 5 * i as u32;
            char::from(CROCKFORD[((value >> shift) & 0x1F) as usize])
        })
        .collect()
}

/// A fresh ULID from the clock and the OS random source, monotonic within this process: ids
/// made in the same millisecond step the previous one, so events published together keep
/// their order.
pub fn new_ulid() -> String {
    use std::sync::Mutex;
    static LAST: Mutex<(u64, u128)> = Mutex::new((0, 0));
    let millis = u64::try_from(crate::log::now_millis()).unwrap_or(0);
    let fresh = fresh_random();
    let (millis, random) = {
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        // Same millisecond (or the clock stepped back): one past the previous id.
        *last = if last.0 >= millis {
            (last.0, (last.1 + 1) & ((1u128 << 80) - 1))
        } else {
            (millis, fresh)
        };
        *last
    };
    encode_ulid(millis, random)
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
    fn ulids_sort_by_time_and_are_26_characters() {
        let a = encode_ulid(1_700_000_000_000, u128::MAX);
        let b = encode_ulid(1_700_000_000_001, 0);
        assert_eq!(a.len(), 26);
        assert!(a < b);
        assert_ne!(new_ulid(), new_ulid());
    }
}
