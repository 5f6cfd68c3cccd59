//! Login sessions, checked without a database round trip per request: a node remembers for
//! [`RECHECK`] whether a session is live, and forgets at once a session it ended itself. A
//! logout, a user deletion or a password change on another node is therefore honoured here
//! within [`RECHECK`]; the cross-node invalidation of the verification cache will make that
//! immediate.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keyward::Keyward;

/// How long a node trusts what it last learnt of a session.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Sessions tracked before the memory is cleared (a bound, not a target).
const CAPACITY: usize = 100_000;

#[derive(Debug, Default)]
pub struct SessionCache {
    known: Mutex<HashMap<String, (bool, Instant)>>,
}

impl SessionCache {
    /// Whether the session is live, from memory when it was checked less than [`RECHECK`] ago.
    pub async fn is_live(&self, kw: &Keyward, id: &str) -> keyward::Result<bool> {
        if let Some((live, at)) = self.lock().get(id).copied()
            && at.elapsed() < RECHECK
        {
            return Ok(live);
        }
        let live = kw.session_is_live(id).await?;
        let mut known = self.lock();
        if known.len() >= CAPACITY {
            known.clear();
        }
        known.insert(id.to_owned(), (live, Instant::now()));
        Ok(live)
    }

    /// Forgets a session this node ended (so it is refused here at once).
    pub fn ended(&self, id: &str) {
        self.lock().insert(id.to_owned(), (false, Instant::now()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (bool, Instant)>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}
