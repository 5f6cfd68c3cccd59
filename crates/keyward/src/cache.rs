//! The verification cache: what a decision about a token needs, kept in memory, and the
//! invalidation that keeps it true on every node.
//!
//! Each store owns one [`Cache`]. It holds, keyed by the SHA-256 of the token
//! ([`TokenDigest`]), the key a token belongs to with its sales channel ids (or the fact that it
//! belongs to none, for [`NEGATIVE_TTL`]); the sales channels by id; and whether a login session
//! is live. Entries hold facts, never decisions: a cached key with a scheduled revocation is
//! refused at its instant, by the verifier's clock.
//!
//! Every store write that changes one of these facts records a [`Change`] in the transaction
//! that makes it (a NOTIFY on Postgres, a row of `keyward_change` on SQLite) and applies it to
//! its own cache after commit, before returning. Other nodes receive it through
//! [`crate::Store::watch_changes`]. The cache is used only while that watcher is connected
//! ([`Cache::set_online`]); going offline or reconnecting empties it, so a notice lost while
//! disconnected cannot leave a stale entry behind. Entries also die after [`ENTRY_TTL`], the
//! backstop for a write made behind keyward's back.
//!
//! A miss that races a change cannot plant a stale entry: a fill notes the cache's epoch before
//! it reads storage and drops what it inserted if any change arrived meanwhile.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::{ApiKey, ApiKeyType, SalesChannel};
use crate::time::Timestamp;

/// Keys cached at most, unless configured (`KEYWARD_CACHE_CAPACITY`).
pub const DEFAULT_CAPACITY: usize = 100_000;
/// The longest a cached fact is trusted without a notice: the bound for a write made to the
/// database by something other than keyward.
pub const ENTRY_TTL: Duration = Duration::from_secs(30);
/// How long "no key has this token" is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(2);
/// Sessions and channels cached at most.
const SMALL_CAPACITY: usize = 10_000;
/// Shards of the pending `last_used_at` queue: a first use takes one shard's lock, never a
/// global one.
const USAGE_SHARDS: usize = 16;

/// SHA-256 of a token: the cache key. For a secret key it is also what the store keeps (as
/// hex), so a store can name a key's cache entry from its row without the token.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenDigest(pub [u8; 32]);

/// A digest is already uniform: its first eight bytes are as good a hash input as all 32 (the
/// cache's seeded hasher still mixes them, so nobody can aim tokens at one bucket), at a
/// fraction of the cost on the hot path.
impl std::hash::Hash for TokenDigest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_le_bytes([a, b, c, d, e, f, g, h]));
    }
}

impl TokenDigest {
    pub fn of_token(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// The digest of the token a stored row holds: a secret key's stored form is the digest
    /// in hex; a publishable key's is the token itself. `None` for a form that is neither (a
    /// Medusa scrypt hash, never cached).
    pub fn of_stored(kind: ApiKeyType, stored: &str) -> Option<Self> {
        match kind {
            ApiKeyType::Publishable => Some(Self::of_token(stored)),
            ApiKeyType::Secret => Self::from_hex(stored),
        }
    }

    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Some(Self(out))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenDigest({}…)", &self.to_hex()[..8])
    }
}

/// A change that makes cached facts stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key with this token digest was created, changed or deleted.
    Key(TokenDigest),
    /// This sales channel was changed or deleted.
    Channel(SalesChannelId),
    /// This login session started or ended.
    Session(String),
    /// This user's sessions ended (password change, deletion).
    User(String),
    /// Anything may have changed.
    All,
}

/// The longest payload one notice carries (Postgres allows 8000 bytes).
pub const MAX_NOTICE: usize = 7_000;

impl Change {
    /// The change of each key row `(type, stored token)`.
    pub fn keys<'a>(rows: impl IntoIterator<Item = (ApiKeyType, &'a str)>) -> Vec<Change> {
        rows.into_iter()
            .map(|(kind, stored)| TokenDigest::of_stored(kind, stored).map_or(Change::All, Change::Key))
            .collect()
    }

    /// The changes of rows replaced `(as they were, as they are)`: both stored forms, so an entry
    /// under either token is dropped.
    pub fn replaced(pairs: &[(crate::store::StoredKey, crate::store::StoredKey)]) -> Vec<Change> {
        Change::keys(pairs.iter().flat_map(|(old, new)| {
            [
                (old.key.key_type, old.stored_token.as_str()),
                (new.key.key_type, new.stored_token.as_str()),
            ]
        }))
    }

    /// The change of each key row `(type as stored, stored token)`, as a store reads them.
    pub fn of_key_rows<'a>(rows: impl Iterator<Item = (&'a str, &'a str)>) -> crate::Result<Vec<Change>> {
        let typed = rows
            .map(|(kind, token)| {
                kind.parse::<ApiKeyType>()
                    .map(|k| (k, token))
                    .map_err(|e| crate::Error::unexpected(e.to_string()))
            })
            .collect::<crate::Result<Vec<_>>>()?;
        Ok(Change::keys(typed))
    }

    /// The text form carried by a notice: `k:<hex>`, `c:<id>`, `s:<id>`, `u:<id>` or `*`.
    pub fn encode(&self) -> String {
        match self {
            Change::Key(d) => format!("k:{}", d.to_hex()),
            Change::Channel(id) => format!("c:{id}"),
            Change::Session(id) => format!("s:{id}"),
            Change::User(id) => format!("u:{id}"),
            Change::All => "*".to_owned(),
        }
    }

    /// Reads [`Change::encode`]'s form; anything unreadable is taken as [`Change::All`], so a
    /// notice from a newer node errs on the safe side.
    pub fn decode(s: &str) -> Change {
        let parsed = match s.split_once(':') {
            Some(("k", hex)) => TokenDigest::from_hex(hex).map(Change::Key),
            Some(("c", id)) => SalesChannelId::parse(id).ok().map(Change::Channel),
            Some(("s", id)) if !id.is_empty() => Some(Change::Session(id.to_owned())),
            Some(("u", id)) if !id.is_empty() => Some(Change::User(id.to_owned())),
            _ => None,
        };
        parsed.unwrap_or(Change::All)
    }

    /// Changes packed into notice payloads (space-separated) of at most [`MAX_NOTICE`] bytes,
    /// each led by `o:<origin>`: the cache that made them, which has applied them already.
    pub fn pack(changes: &[Change], origin: u64) -> Vec<String> {
        let lead = format!("o:{origin:016x}");
        let mut out: Vec<String> = Vec::new();
        let mut current = lead.clone();
        for c in changes {
            let text = c.encode();
            if current.len() > lead.len() && current.len() + 1 + text.len() > MAX_NOTICE {
                out.push(std::mem::replace(&mut current, lead.clone()));
            }
            current.push(' ');
            current.push_str(&text);
        }
        if current.len() > lead.len() {
            out.push(current);
        }
        out
    }

    /// Reads a payload made by [`Change::pack`]: the origin it names (if any) and its changes.
    pub fn unpack(payload: &str) -> (Option<u64>, Vec<Change>) {
        let mut origin = None;
        let changes = payload
            .split_ascii_whitespace()
            .filter(|t| match t.strip_prefix("o:").map(|hex| u64::from_str_radix(hex, 16)) {
                Some(Ok(o)) => {
                    origin = Some(o);
                    false
                }
                _ => true,
            })
            .map(Change::decode)
            .collect();
        (origin, changes)
    }
}

/// What the cache holds of a key: the key as read, its channels, and its pending use.
#[derive(Debug)]
pub struct KeyRecord {
    pub key: Arc<ApiKey>,
    /// The linked channels of a publishable key (empty for a secret key).
    pub sales_channel_ids: Arc<[SalesChannelId]>,
    /// The latest use not yet written (`i64::MIN`: none).
    used_at: AtomicI64,
    /// In the pending queue already.
    queued: AtomicBool,
}

impl KeyRecord {
    pub fn new(key: ApiKey, sales_channel_ids: Vec<SalesChannelId>) -> Self {
        Self {
            key: Arc::new(key),
            sales_channel_ids: sales_channel_ids.into(),
            used_at: AtomicI64::new(i64::MIN),
            queued: AtomicBool::new(false),
        }
    }
}

/// A cached answer for a token, with when it was read (the verifier's clock, milliseconds).
#[derive(Clone)]
enum KeySlot {
    Known(Arc<KeyRecord>, i64),
    Unknown(i64),
}

/// Whether an entry read at `born` may still be used at `now` for `ttl`. An entry from a clock
/// that has since moved back is not trusted either.
fn fresh(born: i64, now: Timestamp, ttl: Duration) -> bool {
    let age = now.millis().saturating_sub(born);
    age >= 0 && u128::try_from(age).is_ok_and(|a| a < ttl.as_millis())
}

/// A counter split over cache lines, so threads counting at once do not fight over one.
#[derive(Default)]
struct Striped([Padded; 16]);

#[derive(Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

impl Striped {
    fn add(&self, stripe: u8) {
        self.0[usize::from(stripe & 15)].0.fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Ordering::Relaxed)).sum()
    }
}

/// Takes the cache offline when dropped: a store's watcher holds one, so a watcher that stops
/// (its task aborted, its runtime gone) leaves no cache trusted without notices.
pub struct WatchGuard<'a>(pub &'a Cache);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.0.set_online(false);
    }
}

/// Counters of the cache, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    pub hits: u64,
    pub negative_hits: u64,
    pub misses: u64,
    /// Changes applied (own writes and notices).
    pub invalidations: u64,
    /// Times the whole cache was emptied (reconnects, `*` notices, going offline).
    pub flushes: u64,
    pub keys: u64,
    pub capacity: u64,
    pub online: bool,
}

/// A fill in progress: the epoch seen before storage was read.
#[derive(Debug, Clone, Copy)]
pub struct Fill(u64);

/// The cache of one store. See the module documentation.
pub struct Cache {
    keys: quick_cache::sync::Cache<TokenDigest, KeySlot>,
    channels: quick_cache::sync::Cache<SalesChannelId, (Arc<SalesChannel>, i64)>,
    sessions: quick_cache::sync::Cache<String, (bool, i64)>,
    online: AtomicBool,
    epoch: AtomicU64,
    /// Names this cache in the notices its store sends, so that it skips its own.
    origin: u64,
    hits: Striped,
    negative_hits: Striped,
    misses: Striped,
    invalidations: AtomicU64,
    flushes: AtomicU64,
    usage: [Mutex<Vec<Arc<KeyRecord>>>; USAGE_SHARDS],
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Default for Cache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl Cache {
    /// A cache of at most `capacity` keys (at least 1), offline until a watcher connects.
    pub fn new(capacity: usize) -> Self {
        Self {
            keys: quick_cache::sync::Cache::new(capacity.max(1)),
            channels: quick_cache::sync::Cache::new(SMALL_CAPACITY),
            sessions: quick_cache::sync::Cache::new(SMALL_CAPACITY),
            online: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            origin: {
                let mut bytes = [0u8; 8];
                // Without the system's random source: the process and the time, which still
                // tell the caches of one machine apart.
                if getrandom::fill(&mut bytes).is_err() {
                    let nanos = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos());
                    bytes = (u64::from(nanos).rotate_left(32) ^ u64::from(std::process::id())).to_le_bytes();
                }
                u64::from_le_bytes(bytes)
            },
            hits: Striped::default(),
            negative_hits: Striped::default(),
            misses: Striped::default(),
            invalidations: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            usage: std::array::from_fn(|_| Mutex::new(Vec::new())),
        }
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Marks the watcher connected (entries may be kept) or not (nothing is kept). Either way
    /// the cache is emptied: what it held may have missed a notice.
    pub fn set_online(&self, online: bool) {
        if !online {
            self.online.store(false, Ordering::SeqCst);
        }
        self.flush();
        if online {
            self.online.store(true, Ordering::SeqCst);
        }
    }

    /// Empties the cache.
    pub fn flush(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.keys.clear();
        self.channels.clear();
        self.sessions.clear();
    }

    /// Applies changes: each entry they name is dropped.
    /// What a store's notices are signed with (see [`Change::pack`]).
    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// Applies a notice payload, unless this cache sent it: its own writes were applied when
    /// they committed (and bumped the epoch, so no fill read before them survives), and
    /// applying them again when the notice comes back would only empty entries filled since.
    pub fn apply_notice(&self, payload: &str) {
        let (origin, changes) = Change::unpack(payload);
        if origin != Some(self.origin) {
            self.apply(&changes);
        }
    }

    pub fn apply(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.invalidations
            .fetch_add(u64::try_from(changes.len()).unwrap_or(u64::MAX), Ordering::Relaxed);
        for change in changes {
            match change {
                Change::Key(d) => {
                    self.keys.remove(d);
                }
                Change::Channel(id) => {
                    self.channels.remove(id);
                }
                Change::Session(id) => {
                    self.sessions.remove(id);
                }
                Change::User(_) => self.sessions.clear(),
                Change::All => {
                    self.flush();
                    return;
                }
            }
        }
    }

    /// Notes the epoch before storage is read for a fill.
    pub fn begin_fill(&self) -> Fill {
        Fill(self.epoch.load(Ordering::SeqCst))
    }

    /// Whether a change arrived since `fill` began.
    fn stale(&self, fill: Fill) -> bool {
        self.epoch.load(Ordering::SeqCst) != fill.0
    }

    /// The cached answer for a token at `now`: `Some(Some(record))` a key, `Some(None)` no
    /// key, `None` not cached.
    pub fn key(&self, digest: &TokenDigest, now: Timestamp) -> Option<Option<Arc<KeyRecord>>> {
        if !self.is_online() {
            return None;
        }
        let stripe = digest.0[0];
        match self.keys.get(digest) {
            Some(KeySlot::Known(record, born)) if fresh(born, now, ENTRY_TTL) => {
                self.hits.add(stripe);
                Some(Some(record))
            }
            Some(KeySlot::Unknown(born)) if fresh(born, now, NEGATIVE_TTL) => {
                self.negative_hits.add(stripe);
                Some(None)
            }
            _ => {
                self.misses.add(stripe);
                None
            }
        }
    }

    /// Keeps what storage said of a token (read at `now`), unless a change arrived while it
    /// was read.
    pub fn fill_key(&self, fill: Fill, digest: TokenDigest, record: Option<Arc<KeyRecord>>, now: Timestamp) {
        if !self.is_online() {
            return;
        }
        let now = now.millis();
        let slot = match record {
            Some(r) => KeySlot::Known(r, now),
            None => KeySlot::Unknown(now),
        };
        self.keys.insert(digest, slot);
        if self.stale(fill) {
            self.keys.remove(&digest);
        }
    }

    pub fn channel(&self, id: &SalesChannelId, now: Timestamp) -> Option<Arc<SalesChannel>> {
        if !self.is_online() {
            return None;
        }
        match self.channels.get(id) {
            Some((channel, born)) if fresh(born, now, ENTRY_TTL) => Some(channel),
            _ => None,
        }
    }

    pub fn fill_channel(&self, fill: Fill, channel: Arc<SalesChannel>, now: Timestamp) {
        if !self.is_online() {
            return;
        }
        let id = channel.id.clone();
        self.channels.insert(id.clone(), (channel, now.millis()));
        if self.stale(fill) {
            self.channels.remove(&id);
        }
    }

    pub fn session(&self, id: &str, now: Timestamp) -> Option<bool> {
        if !self.is_online() {
            return None;
        }
        match self.sessions.get(id) {
            Some((live, born)) if fresh(born, now, ENTRY_TTL) => Some(live),
            _ => None,
        }
    }

    pub fn fill_session(&self, fill: Fill, id: &str, live: bool, now: Timestamp) {
        if !self.is_online() {
            return;
        }
        self.sessions.insert(id.to_owned(), (live, now.millis()));
        if self.stale(fill) {
            self.sessions.remove(id);
        }
    }

    /// Notes that `record`'s key was used at `at`; queued for the next [`Cache::take_usage`].
    pub fn record_use(&self, record: &Arc<KeyRecord>, at: Timestamp) {
        let at = at.millis();
        // A key in use is seen many times per millisecond: then both are plain loads.
        if record.used_at.load(Ordering::Relaxed) < at {
            record.used_at.fetch_max(at, Ordering::SeqCst);
        }
        if !record.queued.load(Ordering::SeqCst) && !record.queued.swap(true, Ordering::SeqCst) {
            let shard = usize::from(record.key.id.as_str().as_bytes().last().copied().unwrap_or(0)) % USAGE_SHARDS;
            self.usage[shard]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::clone(record));
        }
    }

    /// The uses noted since the last call, one per key with its latest instant (a key read
    /// twice while uncached has two records; a key used again meanwhile is queued again).
    pub fn take_usage(&self) -> Vec<(Arc<KeyRecord>, Timestamp)> {
        let mut latest: std::collections::HashMap<ApiKeyId, (Arc<KeyRecord>, Timestamp)> =
            std::collections::HashMap::new();
        for shard in &self.usage {
            let records = std::mem::take(&mut *shard.lock().unwrap_or_else(|p| p.into_inner()));
            for record in records {
                record.queued.store(false, Ordering::SeqCst);
                let Some(at) = Timestamp::from_millis(record.used_at.load(Ordering::SeqCst)) else {
                    continue;
                };
                match latest.entry(record.key.id.clone()) {
                    std::collections::hash_map::Entry::Occupied(mut e) => {
                        if at > e.get().1 {
                            e.insert((record, at));
                        }
                    }
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert((record, at));
                    }
                }
            }
        }
        latest.into_values().collect()
    }

    /// Puts back uses a failed write did not record.
    pub fn requeue_usage(&self, uses: Vec<(Arc<KeyRecord>, Timestamp)>) {
        for (record, at) in uses {
            self.record_use(&record, at);
        }
    }

    /// The ids and instants of a batch (for the store).
    pub fn usage_rows(uses: &[(Arc<KeyRecord>, Timestamp)]) -> Vec<(ApiKeyId, Timestamp)> {
        uses.iter().map(|(r, at)| (r.key.id.clone(), *at)).collect()
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.sum(),
            negative_hits: self.negative_hits.sum(),
            misses: self.misses.sum(),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
            keys: u64::try_from(self.keys.len()).unwrap_or(u64::MAX),
            capacity: self.keys.capacity(),
            online: self.is_online(),
        }
    }
}

#[cfg(test)]
mod tests;
