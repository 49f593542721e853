//! How a WebSocket session ends: the RFC 6455 close codes this gateway uses,
//! the one close decision per session (first reason wins), and the code
//! for each way a client's input can break the socket.

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

/// Close codes of RFC 6455 that this gateway uses.
pub mod close_code {
    /// Normal close.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (drain deadline).
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket protocol (bad framing, unmasked frames).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation: the client did not read its frames, sent frames
    /// faster than its budget, or sent nothing for the idle timeout.
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

/// Why a session ended: a close code and a short reason for the close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    /// The RFC 6455 code.
    pub code: u16,
    /// Sent in the close frame (at most 123 bytes), for people reading traces.
    pub reason: &'static str,
}

impl CloseReason {
    /// The client closed or the stream ended.
    pub const NORMAL: CloseReason = CloseReason::new(close_code::NORMAL, "");
    /// The client does not read what it is sent.
    pub const NOT_READING: CloseReason = CloseReason::new(close_code::POLICY, "not reading");
    /// The client went on sending frames while they were refused for being
    /// over its budget.
    pub const TOO_MANY_FRAMES: CloseReason =
        CloseReason::new(close_code::POLICY, "too many frames");
    /// Nothing arrived from the client for the idle timeout.
    pub const IDLE: CloseReason = CloseReason::new(close_code::POLICY, "idle timeout");
    /// A message over the size limit.
    pub const TOO_BIG: CloseReason = CloseReason::new(close_code::TOO_BIG, "message too large");
    /// The drain deadline passed.
    pub const GOING_AWAY: CloseReason = CloseReason::new(close_code::GOING_AWAY, "shutting down");

    const fn new(code: u16, reason: &'static str) -> Self {
        CloseReason { code, reason }
    }
}

/// Ends a session once, with the first reason given.
#[derive(Default)]
pub struct Closer {
    /// Cancelled when the session must end.
    pub token: CancellationToken,
    reason: OnceLock<CloseReason>,
}

impl Closer {
    /// Ends the session; later reasons are ignored.
    pub fn close(&self, reason: CloseReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// The reason given first (normal when none was).
    pub fn reason(&self) -> CloseReason {
        self.reason.get().copied().unwrap_or(CloseReason::NORMAL)
    }
}

/// The close a failed read calls for. The socket error is the client's
/// doing (bad UTF-8, framing, size) or the connection dropping; walking the
/// source chain finds tungstenite's error under axum's wrapper.
pub fn for_read_error(err: &(dyn std::error::Error + 'static)) -> CloseReason {
    use tungstenite::Error as Ws;
    let mut cause = Some(err);
    while let Some(error) = cause {
        if let Some(ws) = error.downcast_ref::<Ws>() {
            return match ws {
                Ws::Utf8(_) => {
                    CloseReason::new(close_code::INVALID_DATA, "text frame is not UTF-8")
                }
                Ws::Capacity(_) => CloseReason::TOO_BIG,
                Ws::Protocol(_) => CloseReason::new(close_code::PROTOCOL_ERROR, "protocol error"),
                _ => CloseReason::NORMAL,
            };
        }
        cause = error.source();
    }
    CloseReason::NORMAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_close_reason_wins() {
        let closer = Closer::default();
        assert_eq!(closer.reason(), CloseReason::NORMAL);
        closer.close(CloseReason::IDLE);
        closer.close(CloseReason::TOO_BIG);
        assert_eq!(closer.reason(), CloseReason::IDLE);
        assert!(closer.token.is_cancelled());
    }

    #[test]
    fn invalid_utf8_under_axums_wrapper_closes_with_1007() {
        let err = axum::Error::new(tungstenite::Error::Utf8("\u{fffd}".into()));
        assert_eq!(for_read_error(&err).code, close_code::INVALID_DATA);
        let io = axum::Error::new(std::io::Error::other("reset"));
        assert_eq!(for_read_error(&io).code, close_code::NORMAL);
    }
}
