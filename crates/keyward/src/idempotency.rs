//! `Idempotency-Key`: a retried change gets the first answer instead of running twice.
//!
//! A record is keyed by a digest of the actor and the client's key (the key itself is never
//! stored), holds a digest of the request it first came with, and — once that request has been
//! answered — the answer, sealed with ChaCha20-Poly1305 under a key derived (HKDF-SHA256) from
//! the client's Idempotency-Key. The answer of a create or a roll holds the only copy of a new
//! secret token; sealed this way, the database alone can never reveal it: only a client that
//! presents the same Idempotency-Key again can open it. Records expire after [`TTL_SECONDS`].

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::service::Keyward;

/// How long a record is kept: a retry after that runs again.
pub const TTL_SECONDS: i64 = 24 * 60 * 60;

/// A record still `running` after this long belongs to a process that died mid-request; the next
/// request with the key runs it again.
pub const ABANDONED_AFTER_SECONDS: i64 = 5 * 60;

/// The longest Idempotency-Key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// A client's Idempotency-Key, checked: 1 to 255 visible ASCII characters.
#[derive(Clone)]
pub struct IdempotencyKey(String);

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // It unseals a stored answer: never printed.
        f.write_str("IdempotencyKey(…)")
    }
}

impl IdempotencyKey {
    pub fn parse(key: &str) -> Result<Self> {
        if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::invalid_data(format!(
                "The Idempotency-Key header must be 1 to {MAX_KEY_LEN} visible ASCII characters"
            )));
        }
        Ok(Self(key.to_owned()))
    }
}

/// A stored record, as the store hands it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub request_digest: String,
    /// `None` while the first request is still running.
    pub response: Option<StoredResponse>,
}

/// A finished request's answer, sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// Hex of the nonce followed by the ciphertext.
    pub sealed: String,
}

/// What a request with an Idempotency-Key should do.
#[derive(Debug)]
pub enum Begin {
    /// First use (or the old record expired): run it, then [`Keyward::finish_idempotent`].
    Run(Claim),
    /// Answered before: send this again.
    Replay { status: u16, body: Vec<u8> },
    /// The key came first with another request ([`MISMATCH`]).
    Mismatch,
    /// The first request with the key is still running ([`IN_PROGRESS`]).
    InProgress,
}

/// The right to run a request under a key, and to record its answer.
#[derive(Debug)]
pub struct Claim {
    key: IdempotencyKey,
    actor: String,
    digest: String,
}

/// The message of a reuse with another request.
pub const MISMATCH: &str =
    "This Idempotency-Key was already used with a different request; use a new key for a new request";

/// The message of a reuse while the first request still runs.
pub const IN_PROGRESS: &str =
    "A request with this Idempotency-Key is still in progress; retry once it has been answered";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The digest a record is stored under: the actor and the key, never the key alone.
pub fn key_digest(actor: &str, key: &IdempotencyKey) -> String {
    let mut h = Sha256::new();
    h.update(b"keyward idempotency key v1\0");
    h.update(actor.as_bytes());
    h.update([0]);
    h.update(key.0.as_bytes());
    hex(&h.finalize())
}

/// The digest of a request: each part length-prefixed (method, path, body, …).
pub fn request_digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex(&h.finalize())
}

fn cipher(key: &IdempotencyKey, actor: &str) -> Result<ChaCha20Poly1305> {
    let hk = Hkdf::<Sha256>::new(Some(actor.as_bytes()), key.0.as_bytes());
    let mut okm = [0u8; 32];
    hk.expand(b"keyward idempotency response v1", &mut okm)
        .map_err(|_| Error::unexpected("HKDF could not derive 32 bytes"))?;
    Ok(ChaCha20Poly1305::new(&Key::from(okm)))
}

/// Seals an answer under the key (a fresh random nonce each time).
pub fn seal(key: &IdempotencyKey, actor: &str, plaintext: &[u8]) -> Result<String> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| Error::unexpected(format!("no randomness for a nonce: {e}")))?;
    let sealed = cipher(key, actor)?
        .encrypt(&Nonce::from(nonce), plaintext)
        .map_err(|_| Error::unexpected("could not seal an idempotent answer"))?;
    Ok(format!("{}{}", hex(&nonce), hex(&sealed)))
}

/// Opens an answer sealed by [`seal`] with the same key and actor.
pub fn open(key: &IdempotencyKey, actor: &str, sealed: &str) -> Result<Vec<u8>> {
    let bytes = unhex(sealed).ok_or_else(|| Error::unexpected("a stored idempotent answer is not hex"))?;
    if bytes.len() < 12 {
        return Err(Error::unexpected("a stored idempotent answer is too short"));
    }
    let (nonce, ct) = bytes.split_at(12);
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| Error::unexpected("a stored idempotent answer has no nonce"))?;
    cipher(key, actor)?
        .decrypt(&Nonce::from(nonce), ct)
        .map_err(|_| Error::unexpected("a stored idempotent answer does not open with its key"))
}

impl Keyward {
    /// Starts a request under `key` for `actor`: claims the key, or says to replay the first
    /// answer, or that the key is taken by another request or by one still running.
    pub async fn begin_idempotent(&self, actor: &str, key: &IdempotencyKey, request_digest: &str) -> Result<Begin> {
        let digest = key_digest(actor, key);
        let now = self.now();
        let claimed = self
            .store()
            .claim_idempotency_key(
                &digest,
                request_digest,
                now,
                now.plus_seconds(TTL_SECONDS),
                now.plus_seconds(-ABANDONED_AFTER_SECONDS),
            )
            .await?;
        let Some(record) = claimed else {
            return Ok(Begin::Run(Claim {
                key: key.clone(),
                actor: actor.to_owned(),
                digest,
            }));
        };
        if record.request_digest != request_digest {
            return Ok(Begin::Mismatch);
        }
        match record.response {
            None => Ok(Begin::InProgress),
            Some(r) => Ok(Begin::Replay {
                status: r.status,
                body: open(key, actor, &r.sealed)?,
            }),
        }
    }

    /// Records the answer of a claimed request, sealed.
    pub async fn finish_idempotent(&self, claim: Claim, status: u16, body: &[u8]) -> Result<()> {
        let sealed = seal(&claim.key, &claim.actor, body)?;
        self.store()
            .finish_idempotency_key(&claim.digest, &StoredResponse { status, sealed })
            .await
    }

    /// Gives a claimed key up (the request failed in a way worth running again).
    pub async fn abandon_idempotent(&self, claim: &Claim) -> Result<()> {
        self.store().release_idempotency_key(&claim.digest).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn sealed_answers_open_only_with_their_key_and_actor() {
        let key = IdempotencyKey::parse("retry-7").unwrap();
        let sealed = seal(&key, "user_1", b"sk_secret").unwrap();
        assert!(!sealed.contains("sk_secret"));
        assert_eq!(open(&key, "user_1", &sealed).unwrap(), b"sk_secret");
        assert!(open(&IdempotencyKey::parse("retry-8").unwrap(), "user_1", &sealed).is_err());
        assert!(open(&key, "user_2", &sealed).is_err());
        assert_ne!(
            sealed,
            seal(&key, "user_1", b"sk_secret").unwrap(),
            "a fresh nonce each time"
        );
    }

    #[test]
    fn keys_are_checked_and_digested_per_actor() {
        for bad in ["", "has space", "é", &"x".repeat(256)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        let k = IdempotencyKey::parse("k").unwrap();
        assert_ne!(key_digest("user_1", &k), key_digest("user_2", &k));
        assert_eq!(key_digest("user_1", &k).len(), 64);
        assert_ne!(request_digest(&[b"ab", b"c"]), request_digest(&[b"a", b"bc"]));
    }
}
