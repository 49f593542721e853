//! The gateway's error type and its two edges: HTTP responses and WebSocket
//! `error` frames. Internal causes are logged here once and never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use proto::{ErrorCode, ProtoError, Rid, ServerFrame};
use serde::Serialize;

/// Result of gateway operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No valid credentials.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Input that is not valid.
    #[error(transparent)]
    Invalid(#[from] ProtoError),
    /// Input malformed before it could be parsed (JSON syntax, content type).
    #[error("{0}")]
    BadRequest(String),
    /// No route has this path.
    #[error("no route has the path {0}")]
    NoRoute(String),
    /// The route exists but does not take this method.
    #[error("this route does not take the method {0}")]
    MethodNotAllowed(String),
    /// The user already holds as many connections as allowed.
    #[error("at most {limit} connections per user; close one before opening another")]
    TooManyConnections {
        /// The cap per user.
        limit: usize,
    },
    /// The gateway is draining.
    #[error("the server is shutting down, reconnect later")]
    Draining,
    /// The user already has as many history reads in flight as allowed.
    #[error("at most {limit} history reads at once per user; wait for one to finish")]
    TooManyReads {
        /// The cap per user.
        limit: usize,
    },
    /// The user read history faster than the per-user rate allows.
    #[error("too many history reads per second; slow down")]
    ReadRate {
        /// When the next read is allowed, in milliseconds (at least 1).
        retry_after_ms: u64,
    },
    /// What the message service answered.
    #[error(transparent)]
    Service(#[from] msg_service::Error),
    /// The server could not start.
    #[error("start-up failed: {what}")]
    Startup {
        /// What could not be set up.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A key or token could not be built (start-up configuration).
    #[error("key configuration: {0}")]
    Config(#[source] jsonwebtoken::errors::Error),
}

/// When a user over the connection cap may try again: long enough not to
/// spin, short enough for a tab that was just closed to free its slot.
const TOO_MANY_CONNECTIONS_RETRY_MS: u64 = 5_000;

/// When a user over the history-read cap may try again.
const TOO_MANY_READS_RETRY_MS: u64 = 200;

/// An error body: `{"code": ..., "message": ...}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// A stable error code (`bad_request`, `forbidden`, ...).
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

impl Error {
    /// The stable wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::Invalid(err) => err.code(),
            Error::BadRequest(_) | Error::MethodNotAllowed(_) => ErrorCode::BadRequest,
            Error::NoRoute(_) => ErrorCode::NotFound,
            Error::Draining => ErrorCode::Unavailable,
            Error::TooManyConnections { .. }
            | Error::TooManyReads { .. }
            | Error::ReadRate { .. } => ErrorCode::RateLimited,
            Error::Service(err) => err.code(),
            Error::Config(_) | Error::Startup { .. } => ErrorCode::Internal,
        }
    }

    /// The HTTP status: the code's, except 405 for a method a route does
    /// not take (its code is `bad_request`).
    fn status(&self) -> StatusCode {
        match self {
            Error::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::from_u16(self.code().http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Error::Draining => Some(1_000),
            Error::TooManyConnections { .. } => Some(TOO_MANY_CONNECTIONS_RETRY_MS),
            Error::TooManyReads { .. } => Some(TOO_MANY_READS_RETRY_MS),
            Error::ReadRate { retry_after_ms } => Some((*retry_after_ms).max(1)),
            Error::Service(err) => err.retry_after_ms(),
            _ => None,
        }
    }

    /// What the client is told; internal causes stay in the log.
    fn public_message(&self) -> String {
        let code = self.code();
        // Internal errors are bugs: each is logged. `unavailable` comes in
        // floods while a dependency is down or a bulkhead is full; one error
        // line per request would add load exactly then (the breakers and
        // bulkheads log and count their own changes).
        match code {
            ErrorCode::Internal => tracing::error!(error = ?self, "request failed"),
            ErrorCode::Unavailable => tracing::debug!(error = ?self, "request failed"),
            _ => {}
        }
        match code {
            ErrorCode::Internal => "internal error".into(),
            _ => self.to_string(),
        }
    }

    /// The `error` frame answering request `rid`.
    pub fn to_frame(&self, rid: Option<Rid>) -> ServerFrame {
        ServerFrame::Error {
            rid,
            code: self.code(),
            message: self.public_message(),
            retry_after_ms: self.retry_after_ms(),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = self.status();
        let body = ErrorBody {
            code: code.as_str().into(),
            message: self.public_message(),
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(ms) = self.retry_after_ms() {
            let seconds = ms.div_ceil(1000).max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}
