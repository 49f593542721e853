//! A test double around the embedded store, shared by the fault and cache
//! tests: it injects failures where a test asks for them and counts the
//! store reads a sync makes. Everything else goes straight through.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use proto::{ClientMsgId, ConvId, Entry, HistoryMessage, Seq, UserId};
use storage::{
    ConversationMeta, EmbeddedStore, MessageRef, MessageStore, Page, RetryItem, RetryKey,
    WriteTicket,
};
use tokio::sync::oneshot;

use crate::helpers::WrapStore;

/// Store calls a sync can make, counted, and the reads of conversations.
#[derive(Default)]
pub struct StoreReads {
    read_inbox: AtomicUsize,
    inbox_head: AtomicUsize,
    conversation: AtomicUsize,
    messages: AtomicUsize,
}

impl StoreReads {
    /// `(read_inbox calls, inbox_head calls)` so far.
    pub fn now(&self) -> (usize, usize) {
        (
            self.read_inbox.load(Ordering::SeqCst),
            self.inbox_head.load(Ordering::SeqCst),
        )
    }

    /// `conversation` calls so far.
    pub fn conversations(&self) -> usize {
        self.conversation.load(Ordering::SeqCst)
    }

    /// Pages of a conversation's messages read so far.
    pub fn message_pages(&self) -> usize {
        self.messages.load(Ordering::SeqCst)
    }
}

/// What the store double does wrong, and when.
#[derive(Default)]
pub struct Faults {
    /// Fail this many `append_message` calls, before writing.
    pub append_message: AtomicUsize,
    /// Fail the next `append_inbox` of this user, before writing.
    pub inbox_of: Mutex<Option<UserId>>,
    /// Write the next `append_inbox` of this user, then report a failure (a
    /// write that landed but timed out, as a remote store can do).
    pub inbox_written_then_fail: Mutex<Option<UserId>>,
    /// Write the next `append_inbox` of this user, report it on the first
    /// channel, then return only once the second one fires (a slow write
    /// whose caller gives up meanwhile).
    pub hold_inbox_of: Mutex<Option<HeldInbox>>,
    /// Report the next `append_inbox` of this user as failed without
    /// writing it, and keep it in `late` (a timed-out write that a remote
    /// store applies later, e.g. replayed from its batch log).
    pub inbox_late_of: Mutex<Option<UserId>>,
    /// The same for this many `append_message` calls.
    pub message_late: AtomicUsize,
    /// Conversation reads (`messages`, `last_conv_seq`, `members`) fail
    /// while set: the store is unreachable for history.
    pub history_reads_down: std::sync::atomic::AtomicBool,
    /// The writes kept back by `inbox_late_of` and `message_late`.
    pub late: Mutex<Vec<LateWrite>>,
    /// Fail the next `append_inbox` of each of these users, before writing.
    pub inboxes_of: Mutex<Vec<UserId>>,
    /// Fail this many `enqueue_retry` calls (the retry queue is down too).
    pub enqueue_retry: AtomicUsize,
    /// Write the next `append_inbox` of this user, report its seq on the
    /// first channel when someone waits for it to be durable, and let that
    /// wait end only once the second one fires (a slow fsync).
    pub hold_durable_of: Mutex<Option<HeldInbox>>,
    /// Report the next `append_message` from this sender on the first
    /// channel and write it only once the second one fires (a slow append).
    pub hold_message_of: Mutex<Option<HeldInbox>>,
    /// Report the next `add_members` that adds this user on the first
    /// channel and write it only once the second one fires.
    pub hold_add_of: Mutex<Option<HeldInbox>>,
    /// Read the next `inbox_seq_of` of this user, report it on the first
    /// channel, and answer only once the second one fires (a lookup whose
    /// answer goes stale before its caller acts on it).
    pub hold_seq_of: Mutex<Option<HeldInbox>>,
    /// The ticket `hold_durable_of` caught, with its channels.
    held_ticket: Mutex<Option<HeldTicket>>,
}

/// A write the double reported as failed and has not applied yet.
pub enum LateWrite {
    Inbox(UserId, Entry),
    Message(HistoryMessage, RetryItem),
}

impl Faults {
    /// Applies the kept-back writes to `store`, as a remote store would.
    pub async fn land_late_writes(&self, store: &EmbeddedStore) -> storage::Result<usize> {
        let late = std::mem::take(&mut *self.late.lock().unwrap_or_else(|p| p.into_inner()));
        for write in &late {
            let ticket = match write {
                LateWrite::Inbox(user, entry) => store.append_inbox(user, entry).await?,
                LateWrite::Message(message, intent) => {
                    store.append_message(message, intent).await?
                }
            };
            store.durable(ticket).await?;
        }
        Ok(late.len())
    }

    fn keep_late(&self, write: LateWrite) {
        self.late
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(write);
    }
}

/// Arms a held-write slot (`hold_inbox_of`, `hold_durable_of`) for `user`:
/// where the held write reports its seq, and how to let it go.
pub fn hold(
    slot: &Mutex<Option<HeldInbox>>,
    user: &UserId,
) -> (oneshot::Receiver<Seq>, oneshot::Sender<()>) {
    let (reached, reports) = oneshot::channel();
    let (release, released) = oneshot::channel();
    *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((user.clone(), reached, released));
    (reports, release)
}

/// A write's ticket whose durable wait is held, its seq, and the channels.
type HeldTicket = (
    WriteTicket,
    Seq,
    oneshot::Sender<Seq>,
    oneshot::Receiver<()>,
);

/// The user whose append is held, where to report it, when to let it go.
pub type HeldInbox = (UserId, oneshot::Sender<Seq>, oneshot::Receiver<()>);

fn outage() -> storage::Error {
    storage::Error::Unavailable("injected outage".into())
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

fn take_if_user<T>(
    slot: &Mutex<Option<T>>,
    user: &UserId,
    user_of: impl Fn(&T) -> &UserId,
) -> Option<T> {
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    if slot.as_ref().is_some_and(|t| user_of(t) == user) {
        slot.take()
    } else {
        None
    }
}

impl StoreDouble {
    /// A service's store wrapped to count its reads into `reads`.
    pub fn counting_wrap(reads: &Arc<StoreReads>) -> WrapStore {
        let reads = Arc::clone(reads);
        Arc::new(move |inner: EmbeddedStore| StoreDouble::counting(inner, &reads))
    }

    /// `inner` with no faults, counting its reads into `reads`.
    pub fn counting(inner: EmbeddedStore, reads: &Arc<StoreReads>) -> Arc<dyn MessageStore> {
        Arc::new(StoreDouble {
            inner,
            faults: Arc::default(),
            reads: Arc::clone(reads),
        })
    }

    fn history_read(&self) -> storage::Result<()> {
        if self.faults.history_reads_down.load(Ordering::Acquire) {
            return Err(outage());
        }
        Ok(())
    }
}

/// Takes `user` out of the list; whether it was there.
fn take_from_list(list: &Mutex<Vec<UserId>>, user: &UserId) -> bool {
    let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
    match list.iter().position(|u| u == user) {
        Some(at) => {
            list.remove(at);
            true
        }
        None => false,
    }
}

/// The embedded store with injected faults and counted sync reads.
pub struct StoreDouble {
    pub inner: EmbeddedStore,
    pub faults: Arc<Faults>,
    pub reads: Arc<StoreReads>,
}

#[async_trait]
impl MessageStore for StoreDouble {
    async fn put_conversation(&self, meta: &ConversationMeta) -> storage::Result<()> {
        self.inner.put_conversation(meta).await
    }
    async fn conversation(&self, conv: &ConvId) -> storage::Result<Option<ConversationMeta>> {
        self.reads.conversation.fetch_add(1, Ordering::SeqCst);
        self.inner.conversation(conv).await
    }
    async fn add_members(&self, conv: &ConvId, users: &[UserId]) -> storage::Result<()> {
        for user in users {
            if let Some((_, reached, release)) =
                take_if_user(&self.faults.hold_add_of, user, |(u, _, _)| u)
            {
                let _ = reached.send(0);
                let _ = release.await;
            }
        }
        self.inner.add_members(conv, users).await
    }
    async fn remove_member(&self, conv: &ConvId, user: &UserId) -> storage::Result<()> {
        self.inner.remove_member(conv, user).await
    }
    async fn members(&self, conv: &ConvId) -> storage::Result<Vec<UserId>> {
        self.history_read()?;
        self.inner.members(conv).await
    }
    async fn user_conversations(&self, user: &UserId) -> storage::Result<Vec<ConvId>> {
        self.inner.user_conversations(user).await
    }
    async fn append_message(
        &self,
        msg: &HistoryMessage,
        intent: &RetryItem,
    ) -> storage::Result<WriteTicket> {
        if take_one(&self.faults.append_message) {
            return Err(outage());
        }
        if let Some((_, reached, release)) =
            take_if_user(&self.faults.hold_message_of, &msg.from, |(u, _, _)| u)
        {
            let _ = reached.send(msg.conv_seq);
            let _ = release.await;
        }
        if take_one(&self.faults.message_late) {
            self.faults
                .keep_late(LateWrite::Message(msg.clone(), intent.clone()));
            return Err(outage());
        }
        self.inner.append_message(msg, intent).await
    }
    async fn message(
        &self,
        conv: &ConvId,
        conv_seq: Seq,
    ) -> storage::Result<Option<HistoryMessage>> {
        self.inner.message(conv, conv_seq).await
    }
    async fn messages(
        &self,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> storage::Result<Vec<HistoryMessage>> {
        self.history_read()?;
        self.reads.messages.fetch_add(1, Ordering::SeqCst);
        self.inner.messages(conv, page, limit).await
    }
    async fn recall_message(&self, conv: &ConvId, conv_seq: Seq) -> storage::Result<()> {
        self.inner.recall_message(conv, conv_seq).await
    }
    async fn read_markers(&self, conv: &ConvId) -> storage::Result<Vec<(UserId, Seq)>> {
        self.inner.read_markers(conv).await
    }
    async fn read_marker(&self, conv: &ConvId, user: &UserId) -> storage::Result<Seq> {
        self.inner.read_marker(conv, user).await
    }
    async fn raise_read_marker(
        &self,
        conv: &ConvId,
        user: &UserId,
        up_to: Seq,
    ) -> storage::Result<()> {
        self.inner.raise_read_marker(conv, user, up_to).await
    }
    async fn recall_entry(&self, user: &UserId, seq: Seq) -> storage::Result<()> {
        self.inner.recall_entry(user, seq).await
    }
    async fn last_conv_seq(&self, conv: &ConvId) -> storage::Result<Seq> {
        self.history_read()?;
        self.inner.last_conv_seq(conv).await
    }
    async fn append_inbox(&self, user: &UserId, entry: &Entry) -> storage::Result<WriteTicket> {
        if take_if_user(&self.faults.inbox_of, user, |u| u).is_some() {
            return Err(outage());
        }
        if take_from_list(&self.faults.inboxes_of, user) {
            return Err(outage());
        }
        if take_if_user(&self.faults.inbox_late_of, user, |u| u).is_some() {
            self.faults
                .keep_late(LateWrite::Inbox(user.clone(), entry.clone()));
            return Err(outage());
        }
        if take_if_user(&self.faults.inbox_written_then_fail, user, |u| u).is_some() {
            self.inner.append_inbox(user, entry).await?;
            return Err(outage());
        }
        if let Some((_, reached, release)) =
            take_if_user(&self.faults.hold_durable_of, user, |(u, _, _)| u)
        {
            let ticket = self.inner.append_inbox(user, entry).await?;
            *self
                .faults
                .held_ticket
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some((ticket, entry.seq, reached, release));
            return Ok(ticket);
        }
        if let Some((_, written, release)) =
            take_if_user(&self.faults.hold_inbox_of, user, |(u, _, _)| u)
        {
            let ticket = self.inner.append_inbox(user, entry).await?;
            let _ = written.send(entry.seq);
            let _ = release.await;
            return Ok(ticket);
        }
        self.inner.append_inbox(user, entry).await
    }
    async fn inbox_seq_of(
        &self,
        user: &UserId,
        conv: &ConvId,
        conv_seq: Seq,
    ) -> storage::Result<Option<Seq>> {
        let found = self.inner.inbox_seq_of(user, conv, conv_seq).await;
        if let Some((_, reached, release)) =
            take_if_user(&self.faults.hold_seq_of, user, |(u, _, _)| u)
        {
            let _ = reached.send(conv_seq);
            let _ = release.await;
        }
        found
    }
    async fn durable(&self, ticket: WriteTicket) -> storage::Result<()> {
        let held = {
            let mut slot = self
                .faults
                .held_ticket
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match slot.take() {
                Some(held) if held.0 == ticket => Some(held),
                other => {
                    *slot = other;
                    None
                }
            }
        };
        if let Some((_, seq, reached, release)) = held {
            let _ = reached.send(seq);
            let _ = release.await;
        }
        self.inner.durable(ticket).await
    }
    async fn read_inbox(
        &self,
        user: &UserId,
        after: Seq,
        limit: usize,
    ) -> storage::Result<Vec<Entry>> {
        self.reads.read_inbox.fetch_add(1, Ordering::SeqCst);
        self.inner.read_inbox(user, after, limit).await
    }
    async fn inbox_head(&self, user: &UserId) -> storage::Result<Seq> {
        self.reads.inbox_head.fetch_add(1, Ordering::SeqCst);
        self.inner.inbox_head(user).await
    }
    async fn dedup_get(
        &self,
        sender: &UserId,
        id: &ClientMsgId,
    ) -> storage::Result<Option<MessageRef>> {
        self.inner.dedup_get(sender, id).await
    }
    async fn load_ceiling(&self, key: &str) -> storage::Result<Seq> {
        self.inner.load_ceiling(key).await
    }
    async fn swap_ceiling(&self, key: &str, expected: Seq, max_seq: Seq) -> storage::Result<()> {
        self.inner.swap_ceiling(key, expected, max_seq).await
    }
    async fn fence_log(
        &self,
        log: &storage::LogId,
        writer: &str,
        after: Seq,
        up_to: Seq,
    ) -> storage::Result<()> {
        self.inner.fence_log(log, writer, after, up_to).await
    }
    async fn conversation_ids(
        &self,
        after: Option<&ConvId>,
        limit: usize,
    ) -> storage::Result<Vec<ConvId>> {
        self.inner.conversation_ids(after, limit).await
    }
    async fn enqueue_retry(&self, item: &RetryItem) -> storage::Result<()> {
        if take_one(&self.faults.enqueue_retry) {
            return Err(outage());
        }
        self.inner.enqueue_retry(item).await
    }
    async fn retry_items(
        &self,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> storage::Result<Vec<RetryItem>> {
        self.inner.retry_items(after, limit).await
    }
    async fn remove_retry(&self, key: &RetryKey) -> storage::Result<()> {
        self.inner.remove_retry(key).await
    }
    async fn retry_checkpoint(&self) -> storage::Result<Option<RetryKey>> {
        self.inner.retry_checkpoint().await
    }
    async fn save_retry_checkpoint(&self, at: Option<&RetryKey>) -> storage::Result<()> {
        self.inner.save_retry_checkpoint(at).await
    }
    async fn fanout_intents(
        &self,
        from: u64,
        to: u64,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> storage::Result<Vec<RetryItem>> {
        self.inner.fanout_intents(from, to, after, limit).await
    }
    async fn fanout_watermark(&self) -> storage::Result<u64> {
        self.inner.fanout_watermark().await
    }
    async fn save_fanout_watermark(&self, at: u64) -> storage::Result<()> {
        self.inner.save_fanout_watermark(at).await
    }
    async fn flush(&self) -> storage::Result<()> {
        self.inner.flush().await
    }
}
