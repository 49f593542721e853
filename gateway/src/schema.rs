//! Request and response bodies of the REST API, with their OpenAPI schemas.
//! Responses carry the protocol's own types; `value_type` tells utoipa their shape.

#![allow(missing_docs)]

use msg_service::Conversation;
use proto::HistoryMessage;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A conversation as REST returns it.
#[derive(Serialize, ToSchema)]
pub struct ConversationSchema {
    pub conv_id: String,
    /// `dm` or `group`.
    pub kind: String,
    pub members: Vec<String>,
    pub title: Option<String>,
    pub last_conv_seq: u64,
    /// The caller's read marker (0: nothing read).
    pub read_up_to: u64,
    /// Text messages of others after the caller's marker, exact up to 100
    /// (100 means "100 or more").
    pub unread: u32,
    /// Groups only: every member's marker.
    pub read: Option<std::collections::BTreeMap<String, u64>>,
}

/// A message of a conversation's history (an inbox entry without `seq`).
#[derive(Serialize, ToSchema)]
pub struct MessageSchema {
    pub conv_id: String,
    pub conv_seq: u64,
    pub from: String,
    pub client_msg_id: String,
    /// `text`, `recall` or `edit` (protocol 1.1; `read` entries are in
    /// inboxes only).
    pub kind: String,
    /// Empty in a recall and in a recalled message.
    pub body: String,
    pub ts: u64,
    /// A recall's or an edit's message (its conv_seq).
    #[serde(rename = "ref")]
    pub refers_to: Option<u64>,
    /// Present and true once the sender recalled the message.
    #[schema(default = false)]
    pub recalled: Option<bool>,
}

/// An inbox entry.
#[derive(Serialize, ToSchema)]
pub struct EntrySchema {
    pub seq: u64,
    pub conv_id: String,
    pub conv_seq: u64,
    pub from: String,
    pub client_msg_id: String,
    pub kind: String,
    pub body: String,
    pub ts: u64,
}

/// The answer to a send.
#[derive(Serialize, ToSchema)]
pub struct AckSchema {
    pub client_msg_id: String,
    pub conv_id: String,
    pub conv_seq: u64,
    pub seq: u64,
    pub ts: u64,
}

/// The answer to a sync.
#[derive(Serialize, ToSchema)]
pub struct SyncSchema {
    pub entries: Vec<EntrySchema>,
    pub head: u64,
    pub more: bool,
}

/// `GET /v1/presence`.
#[derive(Serialize, ToSchema)]
pub struct PresenceList {
    #[schema(value_type = Vec<PresenceSchema>)]
    pub presence: Vec<proto::PresenceOf>,
}

/// One user's presence as the caller may see it.
#[derive(Serialize, ToSchema)]
pub struct PresenceSchema {
    /// A user id.
    pub user: String,
    /// Whether any device of theirs is connected.
    pub online: bool,
    /// When their last device left (Unix ms), when offline and known.
    pub last_seen: Option<u64>,
}

/// `GET /v1/conversations`.
#[derive(Serialize, ToSchema)]
pub struct ConversationList {
    #[schema(value_type = Vec<ConversationSchema>)]
    pub conversations: Vec<Conversation>,
}

/// A history page; `next_before` with `before` (or none), `next_after` with `after`.
#[derive(Serialize, ToSchema)]
pub struct HistoryResponse {
    #[schema(value_type = Vec<MessageSchema>)]
    pub messages: Vec<HistoryMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Option<u64>>)]
    pub next_before: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Option<u64>>)]
    pub next_after: Option<Option<u64>>,
    /// Present and true only when the store is unavailable and the page was
    /// served from the reader's cached inbox: it may miss older messages.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    #[schema(default = false)]
    pub degraded: bool,
}

/// `POST /v1/conversations`.
#[derive(Deserialize, ToSchema)]
pub struct CreateGroup {
    pub members: Vec<String>,
    #[serde(default)]
    pub title: Option<String>,
}

/// `POST /v1/conversations/{conv_id}/members`.
#[derive(Deserialize, ToSchema)]
pub struct AddMembers {
    pub members: Vec<String>,
}

/// `POST /v1/conversations/{conv_id}/messages`.
#[derive(Deserialize, ToSchema)]
pub struct SendBody {
    /// 1-64 printable ASCII characters without space.
    #[schema(pattern = "^[!-~]{1,64}$")]
    pub client_msg_id: Option<String>,
    /// Non-empty, at most 16 KiB of UTF-8.
    #[schema(min_length = 1)]
    pub body: Option<String>,
    pub kind: Option<String>,
}

/// `POST /v1/conversations/{conv_id}/messages/{conv_seq}/recall`.
#[derive(Deserialize, ToSchema)]
pub struct RecallBody {
    /// 1-64 printable ASCII characters without space.
    #[schema(pattern = "^[!-~]{1,64}$")]
    pub client_msg_id: Option<String>,
}

/// `PATCH /v1/conversations/{conv_id}/messages/{conv_seq}`.
#[derive(Deserialize, ToSchema)]
pub struct EditBody {
    /// 1-64 printable ASCII characters without space.
    #[schema(pattern = "^[!-~]{1,64}$")]
    pub client_msg_id: Option<String>,
    /// The new body: non-empty, at most 16 KiB of UTF-8.
    #[schema(min_length = 1)]
    pub body: Option<String>,
}

/// `POST /v1/conversations/{conv_id}/read`.
#[derive(Deserialize, ToSchema)]
pub struct ReadBody {
    /// Read up to this conv_seq.
    pub conv_seq: Option<u64>,
}

/// A read marker as it stands.
#[derive(Serialize, ToSchema)]
pub struct ReadSchema {
    pub conv_id: String,
    pub conv_seq: u64,
}

/// `POST /v1/dev/token`.
#[derive(Deserialize, ToSchema)]
pub struct DevTokenRequest {
    /// A user id.
    #[schema(pattern = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    pub user: String,
}

/// A minted dev token.
#[derive(Serialize, ToSchema)]
pub struct DevToken {
    pub token: String,
}
