//! Identifiers: a type prefix plus a ULID (`apk_01J…`), as Medusa makes them.
//!
//! ULIDs sort by creation time, so the default order (`id` ascending) is creation order. The
//! generator is monotonic within a millisecond, so keys created in one call keep their order even
//! under a fixed test clock.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::entropy::{Entropy, EntropyError};
use crate::time::Timestamp;

/// Makes ULIDs from an injected clock reading and entropy source: flow's one generator (ids
/// always increase, in one millisecond and across a clock that steps back) fed by them.
#[derive(Debug, Default)]
pub struct UlidGenerator {
    ids: keyward_flow::ids::UlidGenerator,
}

impl UlidGenerator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A 26-character Crockford base32 ULID.
    pub fn next(&self, now: Timestamp, entropy: &dyn Entropy) -> Result<String, EntropyError> {
        let mut bytes = [0u8; 16];
        entropy.fill(&mut bytes[6..])?;
        let millis = u64::try_from(now.millis()).unwrap_or(0);
        Ok(self.ids.next(millis, u128::from_be_bytes(bytes)).to_string())
    }
}

/// Declares a prefixed id newtype. Ids from outside (paths, filters) are any non-empty string
/// without control characters: an unknown id must be answerable with "not found".
macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        /// As its text, borrowed (no copy per answer).
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new id for a new row.
            pub fn generate(
                ids: &UlidGenerator,
                now: Timestamp,
                entropy: &dyn Entropy,
            ) -> Result<Self, EntropyError> {
                Ok(Self(format!("{}{}", $prefix, ids.next(now, entropy)?)))
            }

            /// Accepts an id from outside.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                validate_id(s).map(|()| Self(s.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                validate_id(&s).map(|()| Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

/// The longest id accepted from outside; generated ids are 30 characters.
pub const MAX_ID_LEN: usize = 255;

fn validate_id(s: &str) -> Result<(), InvalidId> {
    if s.is_empty() || s.len() > MAX_ID_LEN || s.chars().any(char::is_control) {
        Err(InvalidId)
    } else {
        Ok(())
    }
}

/// An id that is empty, longer than 255 bytes, or holds control characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an id must be 1 to 255 characters without control characters")]
pub struct InvalidId;

prefixed_id!(
    /// An API key's id: `apk_` + ULID.
    ApiKeyId,
    "apk_"
);
prefixed_id!(
    /// A sales channel's id: `sc_` + ULID.
    SalesChannelId,
    "sc_"
);
prefixed_id!(
    /// An admin user's id: `user_` + ULID.
    UserId,
    "user_"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;

    #[test]
    fn ulids_made_in_one_millisecond_keep_their_order() {
        let ids = UlidGenerator::new();
        let e = SeededEntropy::new(7);
        let now = Timestamp::from_millis(1_700_000_000_000).unwrap();
        let a = ApiKeyId::generate(&ids, now, &e).unwrap();
        let b = ApiKeyId::generate(&ids, now, &e).unwrap();
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.as_str().len(), 30);
        assert!(a.as_str().starts_with("apk_01H"));
    }

    #[test]
    fn ids_from_outside_must_be_printable_and_bounded() {
        assert!(ApiKeyId::parse("phony").is_ok());
        assert!(ApiKeyId::parse("").is_err());
        assert!(ApiKeyId::parse("a\nb").is_err());
        assert!(ApiKeyId::parse(&"x".repeat(256)).is_err());
    }
}
