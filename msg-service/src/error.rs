//! The message service's error type and its wire codes.

use proto::{ErrorCode, ProtoError};

/// Result of message service calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed, in terms of what the caller can do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; fix it.
    #[error(transparent)]
    Invalid(#[from] ProtoError),
    /// The caller is not a member (also for conversations that do not exist,
    /// so that existence is never revealed).
    #[error("not a member of this conversation")]
    Forbidden,
    /// A member may not make this change (protocol 1.1: a recall or an
    /// edit of a message that is not theirs, not text, or past its window).
    #[error("{0}")]
    NotAllowed(&'static str),
    /// A dependency is down; retry later with the same ids.
    #[error("temporarily unavailable, retry later")]
    Unavailable {
        /// Suggested delay before retrying.
        retry_after_ms: u64,
        /// What failed.
        #[source]
        source: storage::Error,
    },
    /// Too many sends from this user; retry after the delay.
    #[error("too many sends, retry later")]
    RateLimited {
        /// When a retry will be accepted.
        retry_after_ms: u64,
    },
    /// A bug or corrupt data: nothing the caller can do.
    #[error("internal error")]
    Internal(#[source] storage::Error),
    /// An error relayed from a remote message service, or the call to it
    /// failing (then `unavailable`).
    #[error("{}", status.message())]
    Remote {
        /// The wire code the remote service (or the failed call) gives.
        code: ErrorCode,
        /// When to retry, for `unavailable` and `rate_limited`.
        retry_after_ms: Option<u64>,
        /// The gRPC status.
        #[source]
        status: Box<tonic::Status>,
    },
}

/// How long a client should wait before retrying after a storage outage.
pub(crate) const RETRY_AFTER_MS: u64 = 1_000;

/// The `retry_after_ms` of an answer for a shard not served here now: a
/// shard moves within a lease, so come back soon, not after the default
/// second (each retry reaches whoever serves it then).
const SHARD_MOVING_RETRY_MS: u64 = 250;

/// Why a call about a log was turned away: this replica does not serve its
/// shard now (another owns it, the shard is on its way here, or the lease
/// lapsed). The source of an [`Error::Unavailable`], so that routing can
/// tell it from an outage and wait for the shard's owner instead.
#[derive(Debug, thiserror::Error)]
#[error("shard {shard} is not served here now (another owner, or no lease)")]
pub struct ShardNotServed {
    /// The shard asked about.
    pub shard: u16,
}

impl From<storage::Error> for Error {
    fn from(err: storage::Error) -> Self {
        if err.is_retryable() {
            // An open breaker knows when it lets a probe through again.
            let retry_after_ms = err
                .breaker_retry_after()
                .map_or(RETRY_AFTER_MS, |after| millis(after).max(1));
            Error::Unavailable {
                retry_after_ms,
                source: err,
            }
        } else {
            Error::Internal(err)
        }
    }
}

impl From<storage::resilience::BreakerOpen> for Error {
    fn from(open: storage::resilience::BreakerOpen) -> Self {
        storage::Error::from(open).into()
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Error {
    /// The stable wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Invalid(err) => err.code(),
            Error::Forbidden | Error::NotAllowed(_) => ErrorCode::Forbidden,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
            Error::Unavailable { .. } => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
            Error::Remote { code, .. } => *code,
        }
    }

    /// When to retry, for `unavailable`.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::Unavailable { retry_after_ms, .. } | Error::RateLimited { retry_after_ms } => {
                Some(*retry_after_ms)
            }
            Error::Remote { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }

    /// The answer for a call about a log of `shard`, which is not served
    /// here now.
    pub(crate) fn shard_not_served(shard: u16) -> Self {
        Error::Unavailable {
            retry_after_ms: SHARD_MOVING_RETRY_MS,
            source: storage::Error::Unavailable(Box::new(ShardNotServed { shard })),
        }
    }

    /// Whether this is the answer of a replica that does not serve the
    /// call's shard now (here or relayed from another replica).
    pub fn is_shard_not_served(&self) -> bool {
        match self {
            Error::Unavailable {
                source: storage::Error::Unavailable(source),
                ..
            } => source.is::<ShardNotServed>(),
            Error::Remote { status, .. } => crate::grpc::is_shard_not_served(status),
            _ => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid(ProtoError::InvalidField {
            field,
            reason: reason.into(),
        })
    }
}
