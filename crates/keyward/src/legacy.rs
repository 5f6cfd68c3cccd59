//! Secret keys imported from Medusa, which stores `scrypt(token, salt)` instead of a digest.
//!
//! Medusa hashes a secret token with scrypt (N = 2^14, r = 8, p = 1, 64 bytes of output, hex)
//! and a random 16-byte salt kept as 32 hex characters; the salt enters scrypt as that ASCII
//! string, not decoded. keyward keeps such a row as it is until the key's first successful use,
//! then replaces the hash by the fast digest (see [`crate::Keyward::verify`]): each imported key
//! costs one scrypt run, once.
//!
//! A run takes about 50 ms of CPU and 16 MiB, so it never runs on the async executor and never
//! more than a fixed number at once; callers beyond a bounded queue are refused at once rather
//! than piling up behind it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::token;

/// Length of a Medusa salt: 16 random bytes as lower-case hex.
pub const SALT_HEX_LEN: usize = 32;
/// Length of a Medusa secret-key hash: 64 bytes of scrypt output as lower-case hex.
pub const HASH_HEX_LEN: usize = 128;

const LOG_N: u8 = 14;
const R: u32 = 8;
const P: u32 = 1;

/// How many checks may wait for a free slot, per slot, before more are refused.
const QUEUE_PER_SLOT: usize = 32;

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `s` has the shape of a Medusa salt.
pub fn is_salt(s: &str) -> bool {
    is_lower_hex(s, SALT_HEX_LEN)
}

/// Whether `s` has the shape of a Medusa secret-key hash.
pub fn is_hash(s: &str) -> bool {
    is_lower_hex(s, HASH_HEX_LEN)
}

/// Medusa's stored form of a secret token: scrypt over the token with the salt's ASCII, hex.
/// Blocking and slow by design; call it through [`LegacyVerifier`] on a server.
pub fn medusa_hash(token: &str, salt: &str) -> Result<String> {
    let params = scrypt::Params::new(LOG_N, R, P)
        .map_err(|e| Error::unexpected(format!("Medusa's scrypt parameters were refused: {e}")))?;
    let mut out = Zeroizing::new([0u8; HASH_HEX_LEN / 2]);
    scrypt::scrypt(token.as_bytes(), salt.as_bytes(), &params, out.as_mut())
        .map_err(|e| Error::unexpected(format!("scrypt failed: {e}")))?;
    Ok(token::hex(out.as_ref()))
}

/// Runs Medusa hash checks off the async executor, a bounded number at a time.
#[derive(Debug)]
pub struct LegacyVerifier {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue_limit: usize,
}

impl LegacyVerifier {
    /// At most `concurrency` checks at once (at least one).
    pub fn new(concurrency: usize) -> Self {
        let concurrency = concurrency.max(1);
        Self {
            slots: Arc::new(Semaphore::new(concurrency)),
            waiting: AtomicUsize::new(0),
            queue_limit: concurrency * QUEUE_PER_SLOT,
        }
    }

    /// One check per core of the machine.
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// Whether `token` hashes to `stored_hash` with `salt`, compared in constant time. A row
    /// whose salt or hash is not of Medusa's shape matches nothing (and costs no scrypt).
    pub async fn matches(&self, token: &str, salt: &str, stored_hash: &str) -> Result<bool> {
        if !is_salt(salt) || !is_hash(stored_hash) {
            return Ok(false);
        }
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let permit = if queued >= self.queue_limit {
            None
        } else {
            self.slots.clone().acquire_owned().await.ok()
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        let Some(permit) = permit else {
            return Err(Error::unavailable(
                "too many imported Medusa secret keys are being checked at once; retry shortly",
            ));
        };
        let token = Zeroizing::new(token.to_owned());
        let salt = salt.to_owned();
        let computed = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            medusa_hash(&token, &salt)
        })
        .await
        .map_err(|e| Error::unexpected(format!("the scrypt check stopped: {e}")))??;
        Ok(token::constant_time_eq(&computed, stored_hash))
    }
}

impl Default for LegacyVerifier {
    fn default() -> Self {
        Self::per_core()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A token, salt and hash written by Medusa 2.21.2 itself (test data, never a real key).
    const TOKEN: &str = "sk_0e7ad621f1d6fe8771b95be4ba0503345831cef53998538da51d67546a9bdfba";
    const SALT: &str = "587ebafc3a41f313d89cf47d04854d2c";
    const HASH: &str = "324ba6351e6918fc7b2833ceebb0268fba863ac6517a92002d223d90bf9ada96\
                        a1d8c6317c17671a12e5112602bec0762fe05b44b66b917b06a4b610a1654661";

    #[test]
    fn reproduces_a_hash_written_by_medusa() {
        assert_eq!(medusa_hash(TOKEN, SALT).unwrap(), HASH);
    }

    #[tokio::test]
    async fn matches_only_the_right_token_with_the_right_salt() {
        let v = LegacyVerifier::new(2);
        assert!(v.matches(TOKEN, SALT, HASH).await.unwrap());
        let other = TOKEN.replace("dfba", "dfbb");
        assert!(!v.matches(&other, SALT, HASH).await.unwrap());
        let other_salt = SALT.replace("2c", "2d");
        assert!(!v.matches(TOKEN, &other_salt, HASH).await.unwrap());
    }

    #[tokio::test]
    async fn a_row_of_another_shape_matches_nothing() {
        let v = LegacyVerifier::new(1);
        assert!(!v.matches(TOKEN, "", HASH).await.unwrap());
        assert!(!v.matches(TOKEN, &SALT.to_uppercase(), HASH).await.unwrap());
        assert!(!v.matches(TOKEN, SALT, &HASH[..64]).await.unwrap());
    }

    #[test]
    fn shapes() {
        assert!(is_salt(SALT));
        assert!(!is_salt("587ebafc3a41f313d89cf47d04854d2"));
        assert!(!is_salt("587ebafc3a41f313d89cf47d04854d2g"));
        assert!(is_hash(HASH));
        assert!(!is_hash(SALT));
    }

    #[tokio::test]
    async fn checks_beyond_the_queue_are_refused_not_queued() {
        let v = Arc::new(LegacyVerifier::new(1));
        // One running, QUEUE_PER_SLOT waiting: the next is refused.
        let mut running = Vec::new();
        for _ in 0..=QUEUE_PER_SLOT {
            let v = Arc::clone(&v);
            running.push(tokio::spawn(async move { v.matches(TOKEN, SALT, HASH).await }));
        }
        while v.waiting.load(Ordering::SeqCst) < QUEUE_PER_SLOT {
            tokio::task::yield_now().await;
        }
        let refused = v.matches(TOKEN, SALT, HASH).await.unwrap_err();
        assert_eq!(refused.kind, crate::ErrorKind::Unavailable);
        for r in running {
            assert!(r.await.unwrap().unwrap());
        }
    }
}
