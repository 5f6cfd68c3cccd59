//! The token format, redaction and the secret-key digest.
//!
//! A token is `pk_`, `sk_` or `rk_` (a restricted secret key: one with permissions), then 43 base62 characters carrying 32 random bytes, then 6 base62
//! characters of CRC32 over everything before them: 52 characters. The checksum lets a verifier
//! throw out typos and garbage without a database round trip, and lets secret scanners recognise
//! a leaked key. Medusa's format (`pk_`/`sk_` + 64 lower-case hex) stays well-formed, so keys
//! imported from Medusa keep working.
//!
//! Secret tokens are stored as SHA-256 (hex): they carry 256 bits of entropy, so a fast approved
//! hash is as safe as a slow KDF here, and lookup becomes one indexed equality query.

use std::fmt;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::entropy::{Entropy, EntropyError};
use crate::model::ApiKeyType;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of the random part: 62^43 > 2^256, so 32 bytes always fit.
pub const BODY_LEN: usize = 43;
/// Length of the checksum: 62^6 > 2^32.
pub const CHECKSUM_LEN: usize = 6;
/// Length of a token in the current format.
pub const TOKEN_LEN: usize = 3 + BODY_LEN + CHECKSUM_LEN;
/// Length of a Medusa token: prefix + 64 hex characters.
pub const LEGACY_TOKEN_LEN: usize = 3 + 64;

/// Which generation of the format a token is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// keyward's: base62 body and checksum.
    Current,
    /// Medusa's: 64 lower-case hex characters, no checksum.
    Legacy,
}

/// A token that passed the format check. Borrowing: parsing copies nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ParsedToken<'a> {
    raw: &'a str,
    kind: ApiKeyType,
    format: TokenFormat,
}

impl<'a> ParsedToken<'a> {
    pub fn kind(&self) -> ApiKeyType {
        self.kind
    }

    pub fn format(&self) -> TokenFormat {
        self.format
    }

    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The form stored in the `token` column: the digest for secret keys, the token itself for
    /// publishable keys (they are public by design).
    pub fn stored_form(&self) -> String {
        match self.kind {
            ApiKeyType::Secret => digest_hex(self.raw),
            ApiKeyType::Publishable => self.raw.to_owned(),
        }
    }
}

impl fmt::Debug for ParsedToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedToken")
            .field("redacted", &redact(self.raw))
            .field("kind", &self.kind)
            .field("format", &self.format)
            .finish()
    }
}

/// Why a string is not a token. Says nothing about the input beyond its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedToken {
    #[error("a token starts with pk_, sk_ or rk_")]
    Prefix,
    #[error("a token is 52 characters (or 67 for a Medusa token)")]
    Length,
    #[error("a token holds only letters and digits after its prefix")]
    Alphabet,
    #[error("the token's checksum does not match: it was mistyped or truncated")]
    Checksum,
}

/// Checks a token's shape and checksum. Never panics, whatever the input; touches no storage.
pub fn parse(raw: &str) -> Result<ParsedToken<'_>, MalformedToken> {
    let bytes = raw.as_bytes();
    let kind = match bytes.get(..3) {
        Some(b"pk_") => ApiKeyType::Publishable,
        Some(b"sk_" | RESTRICTED_PREFIX_BYTES) => ApiKeyType::Secret,
        _ => return Err(MalformedToken::Prefix),
    };
    let rest = &bytes[3..];
    let format = match rest.len() {
        // Restricted keys exist only in keyward's format.
        64 if is_restricted(raw) => return Err(MalformedToken::Length),
        n if n == BODY_LEN + CHECKSUM_LEN => {
            if !rest.iter().all(u8::is_ascii_alphanumeric) {
                return Err(MalformedToken::Alphabet);
            }
            let (signed, sum) = bytes.split_at(3 + BODY_LEN);
            if checksum(signed) != *sum {
                return Err(MalformedToken::Checksum);
            }
            TokenFormat::Current
        }
        64 => {
            if !rest.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(MalformedToken::Alphabet);
            }
            TokenFormat::Legacy
        }
        _ => return Err(MalformedToken::Length),
    };
    Ok(ParsedToken { raw, kind, format })
}

/// A freshly made token in plain text. Wiped from memory on drop; `Debug` shows it redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainToken(Zeroizing<String>);

impl PlainToken {
    /// The token itself. Call only to hand it to the key's owner, once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn redacted(&self) -> String {
        redact(&self.0)
    }

    /// SHA-256 of the token, hex: what is stored for a secret key.
    pub fn digest(&self) -> String {
        digest_hex(&self.0)
    }
}

impl fmt::Debug for PlainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainToken({})", redact(&self.0))
    }
}

/// The prefix of a restricted secret key's token (one with permissions), as Stripe marks its
/// restricted keys: recognisable at a glance and by secret scanners.
pub const RESTRICTED_PREFIX: &str = "rk_";
const RESTRICTED_PREFIX_BYTES: &[u8] = RESTRICTED_PREFIX.as_bytes();

/// Whether a token is a restricted key's (by its prefix).
pub fn is_restricted(raw: &str) -> bool {
    raw.starts_with(RESTRICTED_PREFIX)
}

/// Makes a new token of the given type from 32 random bytes.
pub fn generate(kind: ApiKeyType, entropy: &dyn Entropy) -> Result<PlainToken, EntropyError> {
    generate_with_prefix(kind.token_prefix(), entropy)
}

/// Makes a new restricted secret key's token (`rk_…`).
pub fn generate_restricted(entropy: &dyn Entropy) -> Result<PlainToken, EntropyError> {
    generate_with_prefix(RESTRICTED_PREFIX, entropy)
}

fn generate_with_prefix(prefix: &str, entropy: &dyn Entropy) -> Result<PlainToken, EntropyError> {
    let mut random = Zeroizing::new([0u8; 32]);
    entropy.fill(random.as_mut())?;
    Ok(with_prefix(prefix, &random))
}

/// The token carrying exactly these 32 bytes. Deterministic; used by `generate` and by tests.
pub fn from_random_bytes(kind: ApiKeyType, random: &[u8; 32]) -> PlainToken {
    with_prefix(kind.token_prefix(), random)
}

fn with_prefix(prefix: &str, random: &[u8; 32]) -> PlainToken {
    let mut out = Zeroizing::new(String::with_capacity(TOKEN_LEN));
    out.push_str(prefix);
    let body = base62_fixed::<BODY_LEN>(random);
    out.extend(body.iter().map(|&b| char::from(b)));
    let sum = checksum(out.as_bytes());
    out.extend(sum.iter().map(|&b| char::from(b)));
    PlainToken(out)
}

/// `sk_44d***3be`: the first six characters, `***`, the last three. Shorter inputs are masked
/// whole, so a redaction never reveals most of a string.
pub fn redact(token: &str) -> String {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < 12 {
        return "***".to_owned();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}***{tail}")
}

/// SHA-256 of a token, lower-case hex.
pub fn digest_hex(token: &str) -> String {
    let sum = Sha256::digest(token.as_bytes());
    hex(&sum)
}

/// Compares two stored forms without leaking where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 0xF)]));
    }
    s
}

fn checksum(signed: &[u8]) -> [u8; CHECKSUM_LEN] {
    // The CRC as a number in base 62, most significant digit first (what `base62_fixed` gives
    // for its big-endian bytes), without the general routine's allocation.
    let mut n = crc32fast::hash(signed);
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// The type a token's prefix names when its length is one a token can have; `None` otherwise.
/// Not a check of the token: what passes here may still be malformed (see [`parse`]).
pub fn claimed_kind(raw: &str) -> Option<ApiKeyType> {
    if raw.len() != TOKEN_LEN && raw.len() != LEGACY_TOKEN_LEN {
        return None;
    }
    match raw.as_bytes().get(..3) {
        Some(b"pk_") => Some(ApiKeyType::Publishable),
        Some(b"sk_") => Some(ApiKeyType::Secret),
        Some(RESTRICTED_PREFIX_BYTES) if raw.len() == TOKEN_LEN => Some(ApiKeyType::Secret),
        _ => None,
    }
}

/// Big-endian bytes as exactly `N` base62 digits (left-padded with `0`). `N` must be large
/// enough for the input; both callers use widths where it is.
fn base62_fixed<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut num: Vec<u32> = bytes.iter().map(|&b| u32::from(b)).collect();
    let mut out = [b'0'; N];
    for slot in out.iter_mut().rev() {
        let mut rem = 0u32;
        for digit in num.iter_mut() {
            let acc = (rem << 8) | *digit;
            *digit = acc / 62;
            rem = acc % 62;
        }
        *slot = BASE62[rem as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;
    use proptest::prelude::*;

    #[test]
    fn a_restricted_token_is_a_checked_secret_token_with_its_own_prefix() {
        let rk = generate_restricted(&SeededEntropy::new(5)).unwrap();
        assert!(rk.expose().starts_with("rk_") && rk.expose().len() == TOKEN_LEN);
        let parsed = parse(rk.expose()).unwrap();
        assert_eq!(
            (parsed.kind(), parsed.format()),
            (ApiKeyType::Secret, TokenFormat::Current)
        );
        assert_eq!(claimed_kind(rk.expose()), Some(ApiKeyType::Secret));
        // The prefix is under the checksum: an sk_ token relabelled rk_ is refused.
        let sk = generate(ApiKeyType::Secret, &SeededEntropy::new(5)).unwrap();
        let relabelled = format!("rk_{}", &sk.expose()[3..]);
        assert_eq!(parse(&relabelled).unwrap_err(), MalformedToken::Checksum);
        let legacy = format!("rk_{}", "a".repeat(64));
        assert!(parse(&legacy).is_err() && claimed_kind(&legacy).is_none());
    }

    #[test]
    fn a_new_token_is_52_characters_with_its_type_prefix() {
        let e = SeededEntropy::new(3);
        let pk = generate(ApiKeyType::Publishable, &e).unwrap();
        let sk = generate(ApiKeyType::Secret, &e).unwrap();
        assert_eq!(pk.expose().len(), TOKEN_LEN);
        assert!(pk.expose().starts_with("pk_"));
        assert!(sk.expose().starts_with("sk_"));
        let parsed = parse(sk.expose()).unwrap();
        assert_eq!(parsed.kind(), ApiKeyType::Secret);
        assert_eq!(parsed.format(), TokenFormat::Current);
    }

    #[test]
    fn the_largest_random_value_still_fits_the_body() {
        let t = from_random_bytes(ApiKeyType::Secret, &[0xFF; 32]);
        assert!(parse(t.expose()).is_ok());
        let zero = from_random_bytes(ApiKeyType::Secret, &[0; 32]);
        assert!(zero.expose()[3..46].bytes().all(|b| b == b'0'));
    }

    #[test]
    fn redaction_keeps_six_leading_and_three_trailing_characters() {
        let medusa = "sk_44de31ebcf085fa423fc584aa854067025e937a79edb565f472404345f0f23be";
        assert_eq!(redact(medusa), "sk_44d***3be");
        assert_eq!(redact("short"), "***");
    }

    #[test]
    fn medusa_tokens_are_well_formed_legacy_tokens() {
        let medusa = "pk_44de31ebcf085fa423fc584aa854067025e937a79edb565f472404345f0f23be";
        let t = parse(medusa).unwrap();
        assert_eq!(t.format(), TokenFormat::Legacy);
        assert_eq!(t.kind(), ApiKeyType::Publishable);
        assert_eq!(parse(&medusa.to_uppercase()), Err(MalformedToken::Prefix));
        let upper_hex = format!("pk_{}", &medusa[3..].to_uppercase());
        assert_eq!(parse(&upper_hex), Err(MalformedToken::Alphabet));
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let t = generate(ApiKeyType::Secret, &SeededEntropy::new(9)).unwrap();
        let shown = format!("{t:?} {:?}", parse(t.expose()).unwrap());
        assert!(!shown.contains(t.expose()));
        assert!(!shown.contains(&t.expose()[6..20]));
    }

    #[test]
    fn the_digest_is_sha256_hex() {
        // SHA-256("abc") from FIPS 180-2.
        assert_eq!(
            digest_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
    }

    proptest! {
        #[test]
        fn any_string_parses_or_is_refused_without_panicking(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn prefixed_strings_of_any_length_are_refused_without_panicking(
            prefix in prop_oneof!["pk_", "sk_", "pk", "s"],
            body in "\\PC{0,300}",
        ) {
            let s = format!("{prefix}{body}");
            if let Ok(t) = parse(&s) {
                prop_assert!(s.len() == TOKEN_LEN || s.len() == LEGACY_TOKEN_LEN);
                prop_assert_eq!(t.as_str(), s.as_str());
            }
        }

        #[test]
        fn any_bytes_parse_or_are_refused_without_panicking(b in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = parse(&String::from_utf8_lossy(&b));
        }

        #[test]
        fn prefixed_noise_of_token_length_is_refused_or_checksummed(body in "[0-9A-Za-z]{49}") {
            let s = format!("sk_{body}");
            if let Ok(t) = parse(&s) {
                // Only the one checksum in 62^6 that matches may pass.
                prop_assert_eq!(&checksum(&s.as_bytes()[..46])[..], &s.as_bytes()[46..]);
                prop_assert_eq!(t.format(), TokenFormat::Current);
            }
        }

        #[test]
        fn every_generated_token_parses_and_passes_its_checksum(seed in any::<[u8; 32]>(), secret in any::<bool>()) {
            let kind = if secret { ApiKeyType::Secret } else { ApiKeyType::Publishable };
            let t = from_random_bytes(kind, &seed);
            let parsed = parse(t.expose()).unwrap();
            prop_assert_eq!(parsed.kind(), kind);
            prop_assert_eq!(parsed.format(), TokenFormat::Current);
        }

        #[test]
        fn changing_one_character_fails_the_check(seed in any::<[u8; 32]>(), pos in 3usize..TOKEN_LEN, to in 0usize..62) {
            let t = from_random_bytes(ApiKeyType::Secret, &seed);
            let mut bytes = t.expose().as_bytes().to_vec();
            let replacement = BASE62[to];
            prop_assume!(bytes[pos] != replacement);
            bytes[pos] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(parse(&changed), Err(MalformedToken::Checksum));
        }
    }
}
