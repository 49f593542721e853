//! The durable store trait: conversations, members, the conversation logs,
//! the inboxes, dedup records and seq ceilings.

use async_trait::async_trait;
use proto::{ClientMsgId, ConvId, Entry, HistoryMessage, Seq, UserId};

use crate::Result;
use crate::model::{ConversationMeta, LogId, MessageRef, Page, RetryItem, RetryKey, WriteTicket};

/// The durable store. Appends return a [`WriteTicket`] to wait on for
/// durability, so that a caller can serialize appends to one log without
/// holding its lock through an fsync; every other write is durable when it
/// returns. Callers serialize appends to one inbox or one conversation log.
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Stores a conversation's metadata (overwrites).
    async fn put_conversation(&self, meta: &ConversationMeta) -> Result<()>;
    /// A conversation's metadata, if it exists.
    async fn conversation(&self, conv: &ConvId) -> Result<Option<ConversationMeta>>;
    /// Adds members (idempotent), in both the members and user_convs tables.
    async fn add_members(&self, conv: &ConvId, users: &[UserId]) -> Result<()>;
    /// Removes one member (idempotent).
    async fn remove_member(&self, conv: &ConvId, user: &UserId) -> Result<()>;
    /// A conversation's members, sorted.
    async fn members(&self, conv: &ConvId) -> Result<Vec<UserId>>;
    /// The conversations a user is a member of, sorted.
    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConvId>>;

    /// Appends a message at its `conv_seq` to its conversation's log and,
    /// with it, remembers `(from, client_msg_id)` -> where it is and
    /// `intent.members` (the dedup record), and keeps `intent`, the
    /// message's fan-out intent: no crash can leave the message logged with
    /// nothing saying whom it still has to reach. Durable once
    /// [`MessageStore::durable`] returns for the ticket.
    async fn append_message(&self, msg: &HistoryMessage, intent: &RetryItem)
    -> Result<WriteTicket>;
    /// One message of a conversation's log.
    async fn message(&self, conv: &ConvId, conv_seq: Seq) -> Result<Option<HistoryMessage>>;
    /// A page of a conversation's log, at most `limit` messages.
    async fn messages(
        &self,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<Vec<HistoryMessage>>;
    /// Recalls message `conv_seq` of `conv`'s log for good: from then on it
    /// is read with no body and marked recalled (protocol 1.1). Idempotent;
    /// nothing is written when the log has no such message. Durable before
    /// it returns.
    async fn recall_message(&self, conv: &ConvId, conv_seq: Seq) -> Result<()>;
    /// The highest `conv_seq` of a conversation's log (0 when empty).
    async fn last_conv_seq(&self, conv: &ConvId) -> Result<Seq>;

    /// Appends an entry at its `seq` to a user's inbox and, in the same
    /// atomic write, indexes it by `(conv_id, conv_seq)`. Durable once
    /// [`MessageStore::durable`] returns for the ticket.
    async fn append_inbox(&self, user: &UserId, entry: &Entry) -> Result<WriteTicket>;
    /// The seq a message got in a user's inbox, if it was appended there.
    async fn inbox_seq_of(
        &self,
        user: &UserId,
        conv: &ConvId,
        conv_seq: Seq,
    ) -> Result<Option<Seq>>;
    /// Every read marker of a conversation: `(user, conv_seq read up to)`,
    /// for the users who moved theirs (protocol 1.1).
    async fn read_markers(&self, conv: &ConvId) -> Result<Vec<(UserId, Seq)>>;
    /// `user`'s read marker in `conv` (0 when never moved).
    async fn read_marker(&self, conv: &ConvId, user: &UserId) -> Result<Seq>;
    /// Moves `user`'s read marker in `conv` up to `up_to`; a lower or equal
    /// value changes nothing, whatever order writes land in. Durable before
    /// it returns.
    async fn raise_read_marker(&self, conv: &ConvId, user: &UserId, up_to: Seq) -> Result<()>;
    /// Recalls the entry at `seq` of `user`'s inbox the same way as
    /// [`MessageStore::recall_message`].
    async fn recall_entry(&self, user: &UserId, seq: Seq) -> Result<()>;
    /// Entries with `seq > after`, ascending, at most `limit`.
    async fn read_inbox(&self, user: &UserId, after: Seq, limit: usize) -> Result<Vec<Entry>>;
    /// The highest seq of a user's inbox (0 when empty).
    async fn inbox_head(&self, user: &UserId) -> Result<Seq>;

    /// Waits until the write with `ticket` is durable. Tickets become durable
    /// in the order their writes returned: once one is durable, so is every
    /// write that returned before it.
    async fn durable(&self, ticket: WriteTicket) -> Result<()>;

    /// Where the message `(sender, client_msg_id)` was stored, remembered for
    /// at least 24 hours.
    async fn dedup_get(&self, sender: &UserId, id: &ClientMsgId) -> Result<Option<MessageRef>>;

    /// The persisted seq ceiling of an allocator key (0 when none).
    async fn load_ceiling(&self, key: &str) -> Result<Seq>;
    /// Persists `max_seq` as the ceiling of `key` if the persisted ceiling is
    /// still `expected` (0: none yet), as one atomic compare-and-set, so that
    /// of two instances that loaded the same ceiling only one can raise it and
    /// they never hand out the same range. Fails with
    /// [`Error::Conflict`](crate::Error::Conflict) when the ceiling is not
    /// `expected`. Durable before it returns.
    async fn swap_ceiling(&self, key: &str, expected: Seq, max_seq: Seq) -> Result<()>;

    /// Fences `log` for a new writer, `writer` (a process's unique
    /// incarnation): the entries its earlier writers may have written at
    /// seqs in `(after, up_to]` (above the head the new writer found, up to
    /// the ceiling they could use) are removed, and one that lands later
    /// (an uncertain write of a dead process) is never visible. Nothing is
    /// done when `writer` fenced the log last: its own writes were settled
    /// before it let the log go. Pointers into the range (dedup records,
    /// inbox index rows) stop counting with their rows. Durable before it
    /// returns.
    async fn fence_log(&self, log: &LogId, writer: &str, after: Seq, up_to: Seq) -> Result<()>;

    /// Conversation ids after `after` (`None`: from the start), at most
    /// `limit`, in the store's own order (key order embedded, token order on
    /// Scylla): pass the last one back as `after` for the next page. A full
    /// scan, for the offline audit only.
    async fn conversation_ids(&self, after: Option<&ConvId>, limit: usize) -> Result<Vec<ConvId>>;

    /// Puts an item in the fan-out retry queue (overwrites the item with the
    /// same key). Durable before it returns.
    async fn enqueue_retry(&self, item: &RetryItem) -> Result<()>;
    /// Queue items with a key above `after` (`None`: from the start),
    /// ascending by key, at most `limit`.
    async fn retry_items(&self, after: Option<&RetryKey>, limit: usize) -> Result<Vec<RetryItem>>;
    /// Removes an item from the queue (idempotent). Durable before it returns.
    async fn remove_retry(&self, key: &RetryKey) -> Result<()>;
    /// Where the retry worker's current pass over the queue is (`None`: at
    /// the start).
    async fn retry_checkpoint(&self) -> Result<Option<RetryKey>>;
    /// Records the retry worker's position. Durable before it returns.
    async fn save_retry_checkpoint(&self, at: Option<&RetryKey>) -> Result<()>;

    /// Fan-out intents written in `[from, to)` (ms since the epoch) with a
    /// key above `after` (`None`: from `from`), ascending by key, at most
    /// `limit`. Intents below the saved watermark may be gone. A store may
    /// read per unit of time: callers walk a long span in short windows.
    async fn fanout_intents(
        &self,
        from: u64,
        to: u64,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> Result<Vec<RetryItem>>;
    /// Where unfinished fan-outs may begin: the saved watermark (every
    /// fan-out whose intent was written before it is finished or in the
    /// retry queue) or, when none was saved, the earliest intent the store
    /// may still hold.
    async fn fanout_watermark(&self) -> Result<u64>;
    /// Saves the fan-out watermark; the store may then drop the intents
    /// below it. Durable before it returns.
    async fn save_fanout_watermark(&self, at: u64) -> Result<()>;

    /// Makes everything written so far durable (used at shutdown).
    async fn flush(&self) -> Result<()>;
}
