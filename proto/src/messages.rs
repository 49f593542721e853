//! Messages as they travel: inbox entries, history messages, acks, sync results,
//! and the validated send request.

use serde::{Deserialize, Serialize};

use crate::Seq;
use crate::error::ProtoError;
use crate::ids::{ClientMsgId, ConvId, UserId};

/// The largest message body, in bytes of UTF-8.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// The most entries one sync returns.
pub const MAX_SYNC_LIMIT: usize = 500;
/// Entries per sync when the client gives no limit.
pub const DEFAULT_SYNC_LIMIT: usize = 100;

/// The kind of a message: version 1 knows only text; protocol 1.1 adds
/// recall and edit, which name the message they change in `ref`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// A text message.
    #[default]
    Text,
    /// The sender withdrew message `ref`.
    Recall,
    /// The sender replaced the body of message `ref`.
    Edit,
    /// `from` has read the conversation up to conv_seq `ref` (inbox only).
    Read,
}

impl MessageKind {
    /// The kind's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Recall => "recall",
            MessageKind::Edit => "edit",
            MessageKind::Read => "read",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Result<Self, ProtoError> {
        match name {
            "text" => Ok(MessageKind::Text),
            "recall" => Ok(MessageKind::Recall),
            "edit" => Ok(MessageKind::Edit),
            "read" => Ok(MessageKind::Read),
            other => Err(ProtoError::invalid_field(
                "kind",
                format!("unknown kind `{}`", crate::error::excerpt(other)),
            )),
        }
    }
}

/// A message of a conversation's log, as history returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// The conversation.
    pub conv_id: ConvId,
    /// Its position in the conversation's log (none, so 0 and left out,
    /// in a `read` entry, which is in inboxes only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conv_seq: Seq,
    /// The sender.
    pub from: UserId,
    /// The sender's idempotency key.
    pub client_msg_id: ClientMsgId,
    /// The message's kind.
    pub kind: MessageKind,
    /// The message's text (empty once recalled, and in a recall).
    pub body: String,
    /// Server time, milliseconds since the Unix epoch.
    pub ts: u64,
    /// A recall's or an edit's message: its conv_seq.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<Seq>,
    /// The sender withdrew this message: its body is gone.
    #[serde(default, skip_serializing_if = "is_false")]
    pub recalled: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &Seq) -> bool {
    *value == 0
}

impl HistoryMessage {
    /// This message as it is once recalled: no body, marked recalled.
    pub fn recalled(mut self) -> Self {
        self.body.clear();
        self.recalled = true;
        self
    }
}

/// An entry of a user's inbox: a message with the inbox seq it got there.
///
/// Its JSON is one object: `seq` and the message's fields. It is read
/// through [`EntryFields`], field by field: serde's `flatten` would buffer
/// every field of every entry first, and entries are read in bulk (a sync
/// page, the store's inbox rows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "EntryFields")]
pub struct Entry {
    /// The entry's seq in this inbox.
    pub seq: Seq,
    /// The message.
    #[serde(flatten)]
    pub message: HistoryMessage,
}

/// The fields of an entry's JSON, as [`Entry`] reads them; its message's
/// fields, with their defaults, are those of [`HistoryMessage`].
#[derive(Deserialize)]
struct EntryFields {
    seq: Seq,
    conv_id: ConvId,
    #[serde(default)]
    conv_seq: Seq,
    from: UserId,
    client_msg_id: ClientMsgId,
    kind: MessageKind,
    body: String,
    ts: u64,
    #[serde(rename = "ref", default)]
    refers_to: Option<Seq>,
    #[serde(default)]
    recalled: bool,
}

impl From<EntryFields> for Entry {
    fn from(fields: EntryFields) -> Self {
        let message = HistoryMessage {
            conv_id: fields.conv_id,
            conv_seq: fields.conv_seq,
            from: fields.from,
            client_msg_id: fields.client_msg_id,
            kind: fields.kind,
            body: fields.body,
            ts: fields.ts,
            refers_to: fields.refers_to,
            recalled: fields.recalled,
        };
        Entry {
            seq: fields.seq,
            message,
        }
    }
}

/// The answer to a successful send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The sender's idempotency key.
    pub client_msg_id: ClientMsgId,
    /// The conversation the message went to.
    pub conv_id: ConvId,
    /// Its position in the conversation's log.
    pub conv_seq: Seq,
    /// Its seq in the sender's own inbox.
    pub seq: Seq,
    /// Server time, milliseconds since the Unix epoch.
    pub ts: u64,
}

/// The answer to a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResult {
    /// Entries after `since`, ascending by seq.
    pub entries: Vec<Entry>,
    /// The inbox's highest visible seq when the read was made.
    pub head: Seq,
    /// Whether entries after the last one returned exist.
    pub more: bool,
}

/// Where a message goes: a named conversation or a direct peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A conversation by id.
    Conv(ConvId),
    /// The direct conversation with this user.
    Peer(UserId),
}

/// A validated send: every field checked against PROTOCOL.md.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// The sender's idempotency key.
    pub client_msg_id: ClientMsgId,
    /// Where it goes.
    pub target: Target,
    /// The message's kind.
    pub kind: MessageKind,
    /// The text: non-empty, at most [`MAX_BODY_BYTES`] (empty in a recall).
    pub body: String,
    /// The conv_seq of the message a recall or an edit changes.
    pub refers_to: Option<Seq>,
}

impl SendRequest {
    /// Checks a send's fields; `conv_id` and `to` are exclusive.
    pub fn new(
        client_msg_id: Option<&str>,
        conv_id: Option<&str>,
        to: Option<&str>,
        kind: Option<&str>,
        body: Option<String>,
    ) -> Result<Self, ProtoError> {
        let client_msg_id =
            ClientMsgId::parse(client_msg_id.ok_or(ProtoError::MissingField("client_msg_id"))?)?;
        let target = match (conv_id, to) {
            (Some(conv), None) => Target::Conv(ConvId::parse(conv)?),
            (None, Some(peer)) => Target::Peer(UserId::parse(peer)?),
            (None, None) => return Err(ProtoError::MissingField("conv_id or to")),
            (Some(_), Some(_)) => {
                return Err(ProtoError::invalid_field(
                    "to",
                    "give conv_id or to, not both",
                ));
            }
        };
        // A recall or an edit has its own request, which names its message.
        let kind = match kind.map(MessageKind::parse).transpose()? {
            None | Some(MessageKind::Text) => MessageKind::Text,
            Some(other) => {
                return Err(ProtoError::invalid_field(
                    "kind",
                    format!("a {} is its own request, not a send", other.as_str()),
                ));
            }
        };
        let body = body.ok_or(ProtoError::MissingField("body"))?;
        check_body(&body)?;
        Ok(SendRequest {
            client_msg_id,
            target,
            kind,
            body,
            refers_to: None,
        })
    }

    /// Checks a recall of message `refers_to` of `conv_id`.
    pub fn recall(
        client_msg_id: Option<&str>,
        conv_id: Option<&str>,
        refers_to: Option<Seq>,
    ) -> Result<Self, ProtoError> {
        Self::change(
            client_msg_id,
            conv_id,
            refers_to,
            MessageKind::Recall,
            String::new(),
        )
    }

    /// Checks an edit of message `refers_to` of `conv_id` to `body`.
    pub fn edit(
        client_msg_id: Option<&str>,
        conv_id: Option<&str>,
        refers_to: Option<Seq>,
        body: Option<String>,
    ) -> Result<Self, ProtoError> {
        let body = body.ok_or(ProtoError::MissingField("body"))?;
        check_body(&body)?;
        Self::change(client_msg_id, conv_id, refers_to, MessageKind::Edit, body)
    }

    fn change(
        client_msg_id: Option<&str>,
        conv_id: Option<&str>,
        refers_to: Option<Seq>,
        kind: MessageKind,
        body: String,
    ) -> Result<Self, ProtoError> {
        let client_msg_id =
            ClientMsgId::parse(client_msg_id.ok_or(ProtoError::MissingField("client_msg_id"))?)?;
        let conv = ConvId::parse(conv_id.ok_or(ProtoError::MissingField("conv_id"))?)?;
        let refers_to = match refers_to.ok_or(ProtoError::MissingField("ref"))? {
            0 => {
                return Err(ProtoError::invalid_field(
                    "ref",
                    "must be a conv_seq (>= 1)",
                ));
            }
            seq => seq,
        };
        Ok(SendRequest {
            client_msg_id,
            target: Target::Conv(conv),
            kind,
            body,
            refers_to: Some(refers_to),
        })
    }
}

fn check_body(body: &str) -> Result<(), ProtoError> {
    if body.is_empty() {
        return Err(ProtoError::invalid_field("body", "must not be empty"));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(ProtoError::TooLarge {
            what: "body",
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(())
}

/// The entry count a sync returns for a client's `limit`: the default when
/// absent, at most [`MAX_SYNC_LIMIT`], and zero refused.
pub fn clamp_sync_limit(limit: Option<u64>) -> Result<usize, ProtoError> {
    match limit {
        None => Ok(DEFAULT_SYNC_LIMIT),
        Some(0) => Err(ProtoError::invalid_field(
            "limit",
            "must be a positive integer",
        )),
        Some(n) => Ok(usize::try_from(n)
            .unwrap_or(MAX_SYNC_LIMIT)
            .min(MAX_SYNC_LIMIT)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_names_exactly_one_of_conv_id_and_to() {
        let ok = SendRequest::new(Some("c1"), None, Some("bob"), None, Some("hi".into())).unwrap();
        assert_eq!(ok.target, Target::Peer(UserId::parse("bob").unwrap()));
        let both = SendRequest::new(
            Some("c1"),
            Some("g:x"),
            Some("bob"),
            None,
            Some("hi".into()),
        );
        assert!(both.unwrap_err().to_string().contains("not both"));
        let none = SendRequest::new(Some("c1"), None, None, None, Some("hi".into()));
        assert_eq!(none.unwrap_err(), ProtoError::MissingField("conv_id or to"));
    }

    #[test]
    fn bodies_must_be_non_empty_and_at_most_16_kib() {
        let send = |body: String| SendRequest::new(Some("c"), Some("g:x"), None, None, Some(body));
        assert!(send("x".repeat(MAX_BODY_BYTES)).is_ok());
        assert_eq!(
            send(String::new()).unwrap_err().code(),
            crate::ErrorCode::BadRequest
        );
        let big = send("x".repeat(MAX_BODY_BYTES + 1)).unwrap_err();
        assert_eq!(big.code(), crate::ErrorCode::TooLarge);
        assert!(
            send("é".repeat(MAX_BODY_BYTES / 2 + 1)).is_err(),
            "limit counts UTF-8 bytes"
        );
    }

    #[test]
    fn unknown_kinds_and_missing_ids_are_refused() {
        let bad_kind =
            SendRequest::new(Some("c"), Some("g:x"), None, Some("img"), Some("b".into()));
        assert!(bad_kind.unwrap_err().to_string().contains("kind"));
        let no_id = SendRequest::new(None, Some("g:x"), None, None, Some("b".into()));
        assert_eq!(
            no_id.unwrap_err(),
            ProtoError::MissingField("client_msg_id")
        );
    }

    #[test]
    fn sync_limits_default_clamp_and_refuse_zero() {
        assert_eq!(clamp_sync_limit(None), Ok(DEFAULT_SYNC_LIMIT));
        assert_eq!(clamp_sync_limit(Some(7)), Ok(7));
        assert_eq!(clamp_sync_limit(Some(1000)), Ok(MAX_SYNC_LIMIT));
        assert_eq!(clamp_sync_limit(Some(u64::MAX)), Ok(MAX_SYNC_LIMIT));
        assert!(clamp_sync_limit(Some(0)).is_err());
    }

    fn message(kind: MessageKind, conv_seq: Seq, refers_to: Option<Seq>) -> HistoryMessage {
        HistoryMessage {
            conv_id: ConvId::parse("dm:alice:bob").unwrap(),
            conv_seq,
            from: UserId::parse("alice").unwrap(),
            client_msg_id: ClientMsgId::parse("m-1").unwrap(),
            kind,
            body: "h\u{e9}llo \"there\"".into(),
            ts: 1_700_000_000_123,
            refers_to,
            recalled: false,
        }
    }

    #[test]
    fn an_entry_is_its_message_with_a_seq_and_reads_back_whole() {
        let entries = [
            message(MessageKind::Text, 7, None),
            message(MessageKind::Text, 8, None).recalled(),
            message(MessageKind::Edit, 9, Some(7)),
            message(MessageKind::Read, 0, Some(9)),
        ]
        .map(|message| Entry { seq: 42, message });
        for entry in entries {
            let mut expected = serde_json::to_value(&entry.message).unwrap();
            expected["seq"] = 42.into();
            assert_eq!(serde_json::to_value(&entry).unwrap(), expected);
            let text = serde_json::to_string(&entry).unwrap();
            assert_eq!(serde_json::from_str::<Entry>(&text).unwrap(), entry);
        }
    }

    #[test]
    fn an_entry_without_its_optional_fields_takes_their_defaults() {
        let text = r#"{"seq":3,"conv_id":"dm:alice:bob","from":"alice","client_msg_id":"m-1","kind":"read","body":"","ts":5,"extra":1}"#;
        let entry: Entry = serde_json::from_str(text).unwrap();
        assert_eq!((entry.seq, entry.message.conv_seq), (3, 0));
        assert_eq!(entry.message.refers_to, None);
        assert!(!entry.message.recalled);
        let bad_sender = text.replace(r#""from":"alice""#, r#""from":"a b""#);
        assert!(serde_json::from_str::<Entry>(&bad_sender).is_err());
        let no_seq = text.replace(r#""seq":3,"#, "");
        assert!(serde_json::from_str::<Entry>(&no_seq).is_err());
    }
}
