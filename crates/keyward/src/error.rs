//! The module's one error type. Its kinds are Medusa's error types, so the HTTP layer maps each
//! to a status in one exhaustive match; its messages are the exact strings clients match on.

use std::fmt;

/// Medusa's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidData,
    NotAllowed,
    NotFound,
    Unauthorized,
    /// Authenticated, but the credential may not do this (a restricted key, an address outside
    /// a key's allowed list): 403.
    Forbidden,
    Duplicate,
    Conflict,
    /// The database could not be reached or answered with an error: retryable, never the caller's fault.
    Unavailable,
    /// A bug or an impossible state. The message is for the log, never for a client.
    Unexpected,
}

impl ErrorKind {
    /// The `type` field of an error body.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidData => "invalid_data",
            ErrorKind::NotAllowed => "not_allowed",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Duplicate => "duplicate_error",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "database_unavailable",
            ErrorKind::Unexpected => "unknown_error",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from the module: a kind and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    /// The connection failed mid-write: the change may or may not have been committed.
    outcome_unknown: bool,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Error::<name>(message)`: an error of that kind, one constructor per kind.
macro_rules! kinds {
    ($($name:ident => $kind:ident,)*) => {
        $(
            #[doc = concat!("An error of kind [`ErrorKind::", stringify!($kind), "`].")]
            pub fn $name(message: impl Into<String>) -> Self {
                Self::new(ErrorKind::$kind, message)
            }
        )*
    };
}

impl Error {
    /// An error of `kind`. A message that echoes a token a caller sent by mistake (as a
    /// metadata key, a filter value) carries `[redacted]` in its place: messages reach answers,
    /// logs and the run log.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match crate::redact::scrub(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(clean) => clean,
        };
        Self {
            kind,
            message,
            outcome_unknown: false,
        }
    }

    /// The same error, for a write whose outcome is not known (the connection went away while
    /// it ran, so it may have been committed).
    pub fn with_unknown_outcome(mut self) -> Self {
        self.outcome_unknown = true;
        self
    }

    /// Whether the write that failed may have been committed all the same.
    pub fn outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    kinds! {
        invalid_data => InvalidData,
        forbidden => Forbidden,
        not_allowed => NotAllowed,
        not_found => NotFound,
        duplicate => Duplicate,
        unavailable => Unavailable,
        unexpected => Unexpected,
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl From<crate::entropy::EntropyError> for Error {
    fn from(e: crate::entropy::EntropyError) -> Self {
        Error::unexpected(e.to_string())
    }
}
