//! What must hold for any text a client sends as a frame (shared with the
//! cargo-fuzz target through `#[path]`): parsing never panics, an accepted
//! frame is within the protocol's limits, and a refusal is a small, valid
//! `error` frame that does not echo the input back at length.

use proto::{
    ClientFrame, MAX_BODY_BYTES, MAX_SYNC_LIMIT, MessageKind, ServerFrame, parse_client_frame,
};

/// The longest error message a refusal may carry.
pub const MAX_ERROR_MESSAGE: usize = 512;

/// Checks one frame's text (invalid UTF-8 never reaches the parser: the
/// WebSocket layer refuses it first).
pub fn check_frame(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match parse_client_frame(text) {
        Ok((_, ClientFrame::Send(send))) => {
            assert!(send.body.len() <= MAX_BODY_BYTES);
            match send.kind {
                // A recall carries no body and names its message.
                MessageKind::Recall => {
                    assert!(send.body.is_empty() && send.refers_to.is_some_and(|r| r >= 1));
                }
                MessageKind::Edit => {
                    assert!(!send.body.is_empty() && send.refers_to.is_some_and(|r| r >= 1));
                }
                MessageKind::Text => assert!(!send.body.is_empty() && send.refers_to.is_none()),
                MessageKind::Read => panic!("a read is not a send"),
            }
        }
        Ok((_, ClientFrame::Sync(sync))) => {
            assert!((1..=MAX_SYNC_LIMIT).contains(&sync.limit));
        }
        Ok((_, ClientFrame::Ping)) => {}
        Ok((_, ClientFrame::Presence { users, .. })) => {
            assert!(users.len() <= proto::MAX_PRESENCE_USERS);
        }
        Ok((_, ClientFrame::Read { conv, .. })) => {
            assert_eq!(proto::ConvId::parse(conv.as_str()).ok(), Some(conv));
        }
        Ok((_, ClientFrame::Typing(conv))) => {
            // A valid id: it parses again to itself.
            assert_eq!(proto::ConvId::parse(conv.as_str()).ok(), Some(conv));
        }
        Err(err) => {
            let message = err.error.to_string();
            assert!(
                message.len() <= MAX_ERROR_MESSAGE,
                "a {}-byte error message for a {}-byte frame",
                message.len(),
                text.len()
            );
            let reply = ServerFrame::from_frame_error(&err).to_json();
            let reply: serde_json::Value =
                serde_json::from_str(&reply).expect("the error frame is JSON");
            assert_eq!(reply["type"], "error");
            assert!(reply["code"].is_string());
        }
    }
}
