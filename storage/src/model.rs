//! Plain data the storage traits exchange besides the protocol's own types.

use proto::{ConvId, ConvKind, HistoryMessage, Seq, UserId};
use serde::{Deserialize, Serialize};

/// What is stored about a conversation besides its members and messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationMeta {
    /// The conversation.
    pub conv_id: ConvId,
    /// Direct or group.
    pub kind: ConvKind,
    /// A group's title.
    pub title: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
}

/// Which page of a conversation's log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `conv_seq < n`, newest first (`Before(u64::MAX)`: from the newest).
    Before(Seq),
    /// `conv_seq > n`, oldest first.
    After(Seq),
}

/// The name of a gateway process, for presence and notify routing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GatewayId(pub String);

impl std::fmt::Display for GatewayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a message is: its conversation and position in that log, and the
/// members it was sent to (its dedup record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRef {
    /// The conversation.
    pub conv_id: ConvId,
    /// The message's position in its log.
    pub conv_seq: Seq,
    /// The members the message fans out to (empty in records written
    /// before the list was kept).
    #[serde(default)]
    pub members: Vec<UserId>,
}

/// A log: a user's inbox or a conversation's log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogId {
    /// A user's inbox.
    Inbox(UserId),
    /// A conversation's log.
    Conversation(ConvId),
}

/// A write that has reached the store's log. The zero ticket is durable
/// already (stores whose writes are durable when they return use it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WriteTicket(pub u64);

/// Where an item sits in the fan-out retry queue: enqueue time first, so a
/// pass over the queue visits the oldest failures first. Unique per message
/// and enqueue time; re-enqueueing the same key overwrites the item.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RetryKey {
    /// When the fan-out failed, milliseconds since the Unix epoch.
    pub enqueued_at: u64,
    /// The message's conversation.
    pub conv_id: ConvId,
    /// The message's position in its conversation's log.
    pub conv_seq: Seq,
}

/// A fan-out not known to be finished: the message is in its conversation's
/// log, these members' inboxes may not have it yet. In the retry queue: a
/// fan-out that failed part-way. As a fan-out intent (written with the
/// message, keyed by the time of that write): every member it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryItem {
    /// Its place in the queue, and the message.
    pub key: RetryKey,
    /// The members whose inbox append has not been confirmed.
    pub members: Vec<UserId>,
    /// Delivery attempts made by the retry worker so far.
    pub attempts: u32,
    /// Not to be retried before this time (ms since the epoch): the backoff.
    pub not_before: u64,
}

impl RetryItem {
    /// The fan-out intent of `msg` to `members`, written at `written_at`
    /// (ms since the epoch).
    pub fn intent(written_at: u64, msg: &HistoryMessage, members: Vec<UserId>) -> Self {
        RetryItem {
            key: RetryKey {
                enqueued_at: written_at,
                conv_id: msg.conv_id.clone(),
                conv_seq: msg.conv_seq,
            },
            members,
            attempts: 0,
            not_before: 0,
        }
    }
}
