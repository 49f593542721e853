//! The storage error type: what failed, and whether retrying can help.

/// Result of storage calls.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a backend, kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend did not answer (I/O error, timeout, node down): retryable.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The backend returned data this code cannot read: not retryable.
    #[error("bad data in storage: {0}")]
    BadData(String),
    /// The backend refused the request for good (a statement or schema this
    /// code does not match, no permission): not retryable.
    #[error("storage rejected the request: {0}")]
    Rejected(#[source] BoxError),
    /// A conditional write found another value than it expected: another
    /// writer got there first. Not retryable as is: reload, then decide.
    #[error("conflicting write: {0}")]
    Conflict(String),
}

impl Error {
    /// Whether the same call may succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// How long the breaker that turned this call away stays open, when
    /// an open breaker is why it failed.
    pub fn breaker_retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Unavailable(source) => source
                .downcast_ref::<crate::resilience::BreakerOpen>()
                .map(|open| open.retry_after),
            _ => None,
        }
    }

    pub(crate) fn unavailable(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Unavailable(Box::new(err))
    }
}

impl From<crate::resilience::BreakerOpen> for Error {
    fn from(open: crate::resilience::BreakerOpen) -> Self {
        Error::unavailable(open)
    }
}

impl From<fjall::Error> for Error {
    fn from(err: fjall::Error) -> Self {
        Error::unavailable(err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::BadData(err.to_string())
    }
}

impl From<::redis::RedisError> for Error {
    /// Lost connections, timeouts, and a server that is loading, failing over
    /// or out of memory are `Unavailable`; what Redis refuses for good (a
    /// wrong type, a script error, an unexpected reply) is `BadData`.
    fn from(err: ::redis::RedisError) -> Self {
        let passing = err.is_io_error()
            || err.is_timeout()
            || err.is_connection_dropped()
            || !matches!(err.retry_method(), ::redis::RetryMethod::NoRetry)
            || err.code() == Some("OOM");
        if passing {
            Error::unavailable(err)
        } else {
            Error::BadData(err.to_string())
        }
    }
}
