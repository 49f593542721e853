//! Validation errors of the protocol and the stable error codes of the wire.

use serde::{Deserialize, Serialize};

/// Result of protocol parsing and validation.
pub type Result<T, E = ProtoError> = std::result::Result<T, E>;

/// Why a piece of client input is not valid. Every variant is `bad_request`
/// on the wire, except `TooLarge`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// An identifier is empty, too long, or uses characters outside its alphabet.
    #[error("invalid {what}: {reason}")]
    InvalidId {
        /// Which identifier (`user id`, `conv_id`, ...).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A required field is missing.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field has a value that is not allowed.
    #[error("invalid `{field}`: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Input larger than its limit.
    #[error("{what} is larger than {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The limit in bytes.
        limit: usize,
    },
    /// The frame is not a JSON object of a known shape.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The frame's `type` is not one this server knows.
    #[error("unknown frame type `{0}`")]
    UnknownType(String),
}

impl ProtoError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtoError::TooLarge { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadRequest,
        }
    }

    pub(crate) fn invalid_field(field: &'static str, reason: impl Into<String>) -> Self {
        ProtoError::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

/// The longest piece of client input an error message quotes, in characters.
pub const MAX_QUOTED_CHARS: usize = 64;

/// `text` cut to [`MAX_QUOTED_CHARS`] characters (with `...` when cut), so
/// an error message never echoes a large input back to its sender.
pub fn excerpt(text: &str) -> String {
    let mut chars = text.chars();
    let mut quoted: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() {
        quoted.push_str("...");
    }
    quoted
}

/// The error codes of PROTOCOL.md, stable on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed or invalid input.
    BadRequest,
    /// Missing or invalid credentials.
    Unauthorized,
    /// The caller may not do this (also used for things that may not exist).
    Forbidden,
    /// The thing does not exist.
    NotFound,
    /// Input over a size limit.
    TooLarge,
    /// Too many requests; retry after `retry_after_ms`.
    RateLimited,
    /// A dependency is down; retry after `retry_after_ms` with the same ids.
    Unavailable,
    /// A server bug; nothing the client can do.
    Internal,
}

impl ErrorCode {
    /// The HTTP status that goes with this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// Every code, for parsing.
    pub const ALL: [ErrorCode; 8] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The code written `s` on the wire, if any.
    pub fn from_wire(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == s)
    }

    /// The code as it is written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_excerpt_keeps_short_text_and_cuts_long_text_on_a_character_boundary() {
        assert_eq!(excerpt("short"), "short");
        let long = "é".repeat(100);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), MAX_QUOTED_CHARS + 3);
        assert!(cut.ends_with("..."));
    }
}
