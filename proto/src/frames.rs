//! WebSocket frames: parsing what clients send, and the frames the server sends.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Seq;
use crate::error::{ErrorCode, ProtoError, excerpt};
use crate::ids::{ConvId, UserId};
use crate::messages::{Ack, Entry, SendRequest, SyncResult, clamp_sync_limit};

/// A request id chosen by the client, echoed on the reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rid {
    /// A JSON number.
    Num(serde_json::Number),
    /// A JSON string.
    Str(String),
}

/// A validated `sync` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncFrame {
    /// Entries after this seq (0: from the start).
    pub since: Seq,
    /// At most this many entries (already clamped).
    pub limit: usize,
}

/// A validated client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Send a message, or (protocol 1.1) recall or edit one: each is
    /// appended and fanned out like a message and answered with an `ack`.
    Send(SendRequest),
    /// Fetch inbox entries.
    Sync(SyncFrame),
    /// Application-level ping.
    Ping,
    /// The caller is typing in a conversation (protocol 1.1; no reply).
    Typing(ConvId),
    /// The caller has read a conversation up to a conv_seq (protocol 1.1).
    Read {
        /// The conversation.
        conv: ConvId,
        /// Read up to here.
        conv_seq: Seq,
    },
    /// Who of these users is online (protocol 1.1), and with `watch`,
    /// tell this connection when that changes.
    Presence {
        /// At most [`MAX_PRESENCE_USERS`], distinct.
        users: Vec<UserId>,
        /// Watch them until the socket closes or the next `presence`.
        watch: bool,
    },
}

/// Users one `presence` request may name.
pub const MAX_PRESENCE_USERS: usize = 100;

/// One user's presence as the caller may see it (protocol 1.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceOf {
    /// Whose.
    pub user: UserId,
    /// Whether any device of theirs is connected.
    pub online: bool,
    /// When their last device left (Unix ms), when offline and known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

/// A frame that could not be accepted, with the `rid` to answer it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The request's `rid`, when one could be read.
    pub rid: Option<Rid>,
    /// What is wrong.
    pub error: ProtoError,
}

/// Parses and validates one text frame. Unknown fields are ignored; anything
/// malformed is an error carrying the `rid` when it could be read.
pub fn parse_client_frame(text: &str) -> Result<(Option<Rid>, ClientFrame), FrameError> {
    let fail = |rid: Option<Rid>, error| FrameError { rid, error };
    let object: Map<String, Value> = serde_json::from_str(text).map_err(|e| {
        fail(
            rid_of_frame(text),
            // serde quotes the offending value (a whole 64 KiB string, say).
            ProtoError::Malformed(format!("not a JSON object: {}", excerpt(&e.to_string()))),
        )
    })?;
    let rid = parse_rid(object.get("rid")).map_err(|e| fail(None, e))?;
    let frame = match object.get("type") {
        Some(Value::String(kind)) => parse_by_type(kind, &object),
        Some(_) => Err(ProtoError::invalid_field("type", "must be a string")),
        None => Err(ProtoError::MissingField("type")),
    };
    frame.map(|f| (rid.clone(), f)).map_err(|e| fail(rid, e))
}

fn parse_rid(rid: Option<&Value>) -> Result<Option<Rid>, ProtoError> {
    match rid {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(Some(Rid::Num(n.clone()))),
        Some(Value::String(s)) => Ok(Some(Rid::Str(s.clone()))),
        Some(_) => Err(ProtoError::invalid_field(
            "rid",
            "must be a number or a string",
        )),
    }
}

/// Only the `rid` of a frame. Every other field is skipped without being
/// converted, so a value serde_json cannot hold (`1e309`) elsewhere in the
/// object does not hide the `rid`.
#[derive(Deserialize)]
struct RidOnly {
    rid: Option<Value>,
}

/// The `rid` of a text frame, when it is a JSON object with a valid `rid`;
/// nothing else is read. For a frame that did not parse as a whole, and for
/// one refused before it was parsed (over its socket's frame budget).
pub fn rid_of_frame(text: &str) -> Option<Rid> {
    let RidOnly { rid } = serde_json::from_str(text).ok()?;
    parse_rid(rid.as_ref()).ok().flatten()
}

fn parse_by_type(kind: &str, object: &Map<String, Value>) -> Result<ClientFrame, ProtoError> {
    match kind {
        "send" => parse_send(object).map(ClientFrame::Send),
        "recall" => SendRequest::recall(
            optional_str(object, "client_msg_id")?,
            optional_str(object, "conv_id")?,
            optional_u64(object, "ref")?,
        )
        .map(ClientFrame::Send),
        "edit" => SendRequest::edit(
            optional_str(object, "client_msg_id")?,
            optional_str(object, "conv_id")?,
            optional_u64(object, "ref")?,
            optional_str(object, "body")?.map(str::to_owned),
        )
        .map(ClientFrame::Send),
        "sync" => parse_sync(object).map(ClientFrame::Sync),
        "ping" => Ok(ClientFrame::Ping),
        "typing" => parse_typing(object).map(ClientFrame::Typing),
        "presence" => parse_presence(object),
        "read" => {
            let conv =
                optional_str(object, "conv_id")?.ok_or(ProtoError::MissingField("conv_id"))?;
            let conv_seq =
                optional_u64(object, "conv_seq")?.ok_or(ProtoError::MissingField("conv_seq"))?;
            Ok(ClientFrame::Read {
                conv: ConvId::parse(conv)?,
                conv_seq,
            })
        }
        other => Err(ProtoError::UnknownType(excerpt(other))),
    }
}

fn parse_send(object: &Map<String, Value>) -> Result<SendRequest, ProtoError> {
    SendRequest::new(
        optional_str(object, "client_msg_id")?,
        optional_str(object, "conv_id")?,
        optional_str(object, "to")?,
        optional_str(object, "kind")?,
        optional_str(object, "body")?.map(str::to_owned),
    )
}

fn parse_presence(object: &Map<String, Value>) -> Result<ClientFrame, ProtoError> {
    let users = match object.get("users") {
        Some(Value::Array(users)) => users,
        Some(_) => {
            return Err(ProtoError::invalid_field(
                "users",
                "must be an array of user ids",
            ));
        }
        None => return Err(ProtoError::MissingField("users")),
    };
    let watch = match object.get("watch") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(watch)) => *watch,
        Some(_) => return Err(ProtoError::invalid_field("watch", "must be true or false")),
    };
    let users = presence_users(users.iter().map(|user| match user {
        Value::String(user) => Ok(user.as_str()),
        _ => Err(ProtoError::invalid_field(
            "users",
            "must be an array of user ids",
        )),
    }))?;
    Ok(ClientFrame::Presence { users, watch })
}

/// The users of a presence request (a frame's or a query string's): at most
/// [`MAX_PRESENCE_USERS`], each a valid id; repeats are dropped.
pub fn presence_users<'a>(
    users: impl Iterator<Item = Result<&'a str, ProtoError>>,
) -> Result<Vec<UserId>, ProtoError> {
    let mut parsed: Vec<UserId> = Vec::new();
    for user in users {
        let user = UserId::parse(user?)?;
        if !parsed.contains(&user) {
            if parsed.len() == MAX_PRESENCE_USERS {
                return Err(ProtoError::invalid_field(
                    "users",
                    "at most 100 users per request",
                ));
            }
            parsed.push(user);
        }
    }
    Ok(parsed)
}

fn parse_typing(object: &Map<String, Value>) -> Result<ConvId, ProtoError> {
    let conv = optional_str(object, "conv_id")?.ok_or(ProtoError::MissingField("conv_id"))?;
    ConvId::parse(conv)
}

fn parse_sync(object: &Map<String, Value>) -> Result<SyncFrame, ProtoError> {
    let since = optional_u64(object, "since")?.unwrap_or(0);
    let limit = clamp_sync_limit(optional_u64(object, "limit")?)?;
    Ok(SyncFrame { since, limit })
}

fn optional_str<'a>(
    object: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, ProtoError> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ProtoError::invalid_field(field, "must be a string")),
    }
}

fn optional_u64(
    object: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<u64>, ProtoError> {
    // `null` is not "absent": PROTOCOL.md takes a number or nothing.
    match object.get(field) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ProtoError::invalid_field(field, "must be a non-negative integer")),
    }
}

/// A frame the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// A send was stored.
    Ack {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// The ack.
        #[serde(flatten)]
        ack: Ack,
    },
    /// The answer to a `sync`.
    SyncResult {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// The entries and head.
        #[serde(flatten)]
        result: SyncResult,
    },
    /// The answer to a `ping`.
    Pong {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
    },
    /// The inbox head moved.
    Notify {
        /// The new head.
        head: Seq,
        /// With `entries`: the head they follow (protocol 1.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prev: Option<Seq>,
        /// Every entry with `prev < seq <= head`, ascending, when the
        /// server attached them (protocol 1.1): a client whose sync key is
        /// `prev` takes them instead of syncing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entries: Option<Vec<Entry>>,
    },
    /// A request failed.
    Error {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// The stable code.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
        /// When to retry, for `rate_limited` and `unavailable`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// The gateway is draining: reconnect after about this delay.
    Goaway {
        /// Suggested delay before reconnecting.
        reconnect_after_ms: u64,
    },
    /// The answer to a `presence` request (protocol 1.1).
    PresenceResult {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// One per user asked about, in the order asked.
        presence: Vec<PresenceOf>,
    },
    /// A watched user came online or went offline (protocol 1.1).
    Presence(PresenceOf),
    /// The caller's read marker as it now stands (protocol 1.1).
    ReadAck {
        /// The request's id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rid: Option<Rid>,
        /// The conversation.
        conv_id: ConvId,
        /// The marker.
        conv_seq: Seq,
    },
    /// Another member is typing in a conversation (protocol 1.1).
    Typing {
        /// The conversation.
        conv_id: ConvId,
        /// Who types.
        from: UserId,
    },
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these plain data types cannot fail: no maps with
        // non-string keys, no custom serializers that error.
        serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(r#"{"type":"error","code":"internal","message":"serialization failed"}"#)
        })
    }

    /// The error frame for a refused client frame.
    pub fn from_frame_error(err: &FrameError) -> Self {
        ServerFrame::Error {
            rid: err.rid.clone(),
            code: err.error.code(),
            message: err.error.to_string(),
            retry_after_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regressions found by the hostile-frame tests: serde quotes the value
    /// it refuses, and `kind` was quoted whole, so a 60 KB frame came back
    /// as a 60 KB error message.
    #[test]
    fn a_refusal_quotes_at_most_a_short_excerpt_of_the_input() {
        let huge = "s".repeat(60_000);
        let frames = [
            format!("\"{huge}\""),
            format!(r#"{{"type":"{huge}"}}"#),
            format!(
                r#"{{"type":"send","client_msg_id":"c","to":"bob","body":"b","kind":"{huge}"}}"#
            ),
        ];
        for frame in &frames {
            let err = parse_client_frame(frame).expect_err("refused");
            assert!(err.error.to_string().len() < 200, "{}", err.error);
        }
    }

    #[test]
    fn a_frame_with_an_unrepresentable_number_keeps_its_rid_in_the_error() {
        let err = parse_client_frame(r#"{"type":"sync","rid":1,"since":1e309}"#)
            .expect_err("1e309 is beyond f64");
        assert_eq!(err.rid, Some(Rid::Num(1.into())));
        assert_eq!(err.error.code(), crate::ErrorCode::BadRequest);
        let text = parse_client_frame(r#"{"since":1e309,"rid":"r-1","type":"sync"}"#)
            .expect_err("1e309 is beyond f64");
        assert_eq!(text.rid, Some(Rid::Str("r-1".into())));
        for no_rid in [
            r#"{"type":"sync","rid":[1],"since":1e309}"#,
            r#"{"type":"sync","rid":1e309}"#,
            r#"[1,1e309]"#,
            r#"{"type":"sync","rid":1,"since":1e309"#,
        ] {
            assert_eq!(
                parse_client_frame(no_rid).expect_err(no_rid).rid,
                None,
                "{no_rid}"
            );
        }
    }

    #[test]
    fn a_null_since_or_limit_is_a_bad_request_not_a_default() {
        for field in ["since", "limit"] {
            let frame = format!(r#"{{"type":"sync","rid":2,"{field}":null}}"#);
            let err = parse_client_frame(&frame).expect_err("null is not a number");
            assert_eq!(err.rid, Some(Rid::Num(2.into())), "{frame}");
            assert_eq!(
                err.error,
                ProtoError::invalid_field(field, "must be a non-negative integer")
            );
        }
    }
}
