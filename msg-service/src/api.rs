//! The message service's interface as gateways see it, and its result types.

use std::collections::BTreeMap;

use async_trait::async_trait;
use proto::{Ack, ConvId, ConvKind, HistoryMessage, SendRequest, Seq, SyncResult, UserId};
use serde::Serialize;
use storage::Page;

use crate::Result;

/// A conversation as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversation {
    /// Its id.
    pub conv_id: ConvId,
    /// Direct or group.
    pub kind: ConvKind,
    /// Its members, sorted.
    pub members: Vec<UserId>,
    /// A group's title (`None` for direct conversations).
    pub title: Option<String>,
    /// The highest conv_seq of its log (0 when empty).
    pub last_conv_seq: Seq,
    /// The caller's read marker (protocol 1.1; 0: nothing read).
    pub read_up_to: Seq,
    /// Text messages after the caller's marker that others sent, counted
    /// exactly up to [`UNREAD_COUNTED`] (that many means "or more").
    pub unread: u32,
    /// In a group, every member's marker (0 for one who read nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<BTreeMap<UserId, Seq>>,
}

/// Unread messages are counted exactly up to this many.
pub const UNREAD_COUNTED: u32 = 100;

/// A page of a conversation's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Newest first for `Page::Before`, oldest first for `Page::After`.
    pub messages: Vec<HistoryMessage>,
    /// The cursor of the next page in the same direction; `None` when
    /// nothing further exists at read time.
    pub next: Option<Seq>,
    /// Served from the reader's cached inbox because the store is
    /// unavailable: only what the cache holds, possibly incomplete.
    pub degraded: bool,
}

/// What a gateway can ask of the message service. Every call names the
/// authenticated user it acts for; membership is checked here.
#[async_trait]
pub trait MessageApi: Send + Sync + 'static {
    /// Stores a message in its conversation and every member's inbox.
    async fn send(&self, sender: &UserId, request: SendRequest) -> Result<Ack>;
    /// Inbox entries after `since`, at most `limit`.
    async fn sync(&self, user: &UserId, since: Seq, limit: usize) -> Result<SyncResult>;
    /// The highest visible seq of a user's inbox.
    async fn inbox_head(&self, user: &UserId) -> Result<Seq>;
    /// A page of a conversation's log, for a member.
    async fn history(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage>;
    /// The conversations of a user.
    async fn conversations(&self, user: &UserId) -> Result<Vec<Conversation>>;
    /// One conversation, for a member.
    async fn conversation(&self, user: &UserId, conv: &ConvId) -> Result<Conversation>;
    /// Creates a group of `creator` and `members`.
    async fn create_group(
        &self,
        creator: &UserId,
        members: Vec<UserId>,
        title: Option<String>,
    ) -> Result<Conversation>;
    /// Adds members to a group; the caller must be a member.
    async fn add_members(
        &self,
        caller: &UserId,
        conv: &ConvId,
        members: Vec<UserId>,
    ) -> Result<Conversation>;
    /// Removes a member from a group; the caller must be a member.
    async fn remove_member(
        &self,
        caller: &UserId,
        conv: &ConvId,
        member: &UserId,
    ) -> Result<Conversation>;
    /// Moves the caller's read marker in a conversation up to `conv_seq`
    /// (at most its last message; never back) and answers the marker as it
    /// now stands (protocol 1.1).
    async fn mark_read(&self, user: &UserId, conv: &ConvId, conv_seq: Seq) -> Result<Seq>;
    /// Makes everything durable (at shutdown).
    async fn flush(&self) -> Result<()>;
}
