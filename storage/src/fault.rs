//! A test double for fault injection: a store that forwards to a real one
//! but can be told to fail or stall its reads or its writes, and reports
//! how many calls are stalled so that tests await that instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use proto::{ClientMsgId, ConvId, Entry, HistoryMessage, Seq, UserId};
use tokio::sync::watch;

use crate::model::{ConversationMeta, LogId, MessageRef, Page, RetryItem, RetryKey, WriteTicket};
use crate::{Error, MessageStore, Result};

/// What a class of calls does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forwarded to the real store.
    #[default]
    Pass,
    /// Fails at once with a retryable `Unavailable`.
    Fail,
    /// Waits until the fault is changed, then does what the new one says.
    Stall,
}

/// The injected failure.
#[derive(Debug, thiserror::Error)]
#[error("injected store fault")]
pub struct Injected;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    reads: Fault,
    pages: Fault,
    writes: Fault,
}

/// Which fault a call obeys.
#[derive(Debug, Clone, Copy)]
enum Class {
    Read,
    Page,
    Write,
}

/// A [`MessageStore`] with switchable faults on reads and writes.
pub struct FaultyStore {
    inner: Arc<dyn MessageStore>,
    faults: watch::Sender<Faults>,
    stalled: watch::Sender<usize>,
    /// Calls that reached this store, faulty or not.
    calls: AtomicUsize,
    /// Every Nth inbox append fails before writing (0: none).
    fail_inbox_every: AtomicUsize,
    inbox_appends: AtomicUsize,
}

impl FaultyStore {
    /// Forwards everything to `inner` until told otherwise.
    pub fn new(inner: Arc<dyn MessageStore>) -> Self {
        FaultyStore {
            inner,
            faults: watch::Sender::new(Faults::default()),
            stalled: watch::Sender::new(0),
            calls: AtomicUsize::new(0),
            fail_inbox_every: AtomicUsize::new(0),
            inbox_appends: AtomicUsize::new(0),
        }
    }

    /// From now on every `n`th inbox append fails before writing (a fan-out
    /// that fails part-way); 0 turns it off.
    pub fn set_fail_inbox_every(&self, n: usize) {
        self.fail_inbox_every.store(n, Ordering::SeqCst);
    }

    /// What reads other than pages of a conversation log do from now on
    /// (stalled calls re-check).
    pub fn set_reads(&self, fault: Fault) {
        self.faults.send_modify(|f| f.reads = fault);
    }

    /// What pages of a conversation log (history) do from now on.
    pub fn set_pages(&self, fault: Fault) {
        self.faults.send_modify(|f| f.pages = fault);
    }

    /// What writes do from now on.
    pub fn set_writes(&self, fault: Fault) {
        self.faults.send_modify(|f| f.writes = fault);
    }

    /// Calls that reached this store so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` calls are stalled.
    pub async fn stalled_at_least(&self, n: usize) {
        let mut stalled = self.stalled.subscribe();
        // The sender lives in `self`: the wait cannot fail while borrowed.
        let _ = stalled.wait_for(|s| *s >= n).await;
    }

    async fn gate(&self, class: Class) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut faults = self.faults.subscribe();
        let pick = |f: &Faults| match class {
            Class::Read => f.reads,
            Class::Page => f.pages,
            Class::Write => f.writes,
        };
        loop {
            let fault = pick(&faults.borrow_and_update());
            match fault {
                Fault::Pass => return Ok(()),
                Fault::Fail => return Err(Error::unavailable(Injected)),
                Fault::Stall => {
                    self.stalled.send_modify(|s| *s += 1);
                    let changed = faults.changed().await;
                    self.stalled.send_modify(|s| *s -= 1);
                    if changed.is_err() {
                        return Err(Error::unavailable(Injected));
                    }
                }
            }
        }
    }
}

#[async_trait]
impl MessageStore for FaultyStore {
    async fn put_conversation(&self, meta: &ConversationMeta) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.put_conversation(meta).await
    }

    async fn conversation(&self, conv: &ConvId) -> Result<Option<ConversationMeta>> {
        self.gate(Class::Read).await?;
        self.inner.conversation(conv).await
    }

    async fn add_members(&self, conv: &ConvId, users: &[UserId]) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.add_members(conv, users).await
    }

    async fn remove_member(&self, conv: &ConvId, user: &UserId) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.remove_member(conv, user).await
    }

    async fn members(&self, conv: &ConvId) -> Result<Vec<UserId>> {
        self.gate(Class::Read).await?;
        self.inner.members(conv).await
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConvId>> {
        self.gate(Class::Read).await?;
        self.inner.user_conversations(user).await
    }

    async fn append_message(
        &self,
        msg: &HistoryMessage,
        intent: &RetryItem,
    ) -> Result<WriteTicket> {
        self.gate(Class::Write).await?;
        self.inner.append_message(msg, intent).await
    }

    async fn message(&self, conv: &ConvId, conv_seq: Seq) -> Result<Option<HistoryMessage>> {
        self.gate(Class::Read).await?;
        self.inner.message(conv, conv_seq).await
    }

    async fn messages(
        &self,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<Vec<HistoryMessage>> {
        self.gate(Class::Page).await?;
        self.inner.messages(conv, page, limit).await
    }

    async fn last_conv_seq(&self, conv: &ConvId) -> Result<Seq> {
        self.gate(Class::Read).await?;
        self.inner.last_conv_seq(conv).await
    }

    async fn append_inbox(&self, user: &UserId, entry: &Entry) -> Result<WriteTicket> {
        self.gate(Class::Write).await?;
        let every = self.fail_inbox_every.load(Ordering::SeqCst);
        let n = self.inbox_appends.fetch_add(1, Ordering::SeqCst) + 1;
        if every > 0 && n.is_multiple_of(every) {
            return Err(Error::unavailable(Injected));
        }
        self.inner.append_inbox(user, entry).await
    }

    async fn inbox_seq_of(
        &self,
        user: &UserId,
        conv: &ConvId,
        conv_seq: Seq,
    ) -> Result<Option<Seq>> {
        self.gate(Class::Read).await?;
        self.inner.inbox_seq_of(user, conv, conv_seq).await
    }

    async fn read_inbox(&self, user: &UserId, after: Seq, limit: usize) -> Result<Vec<Entry>> {
        self.gate(Class::Read).await?;
        self.inner.read_inbox(user, after, limit).await
    }

    async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        self.gate(Class::Read).await?;
        self.inner.inbox_head(user).await
    }

    async fn durable(&self, ticket: WriteTicket) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.durable(ticket).await
    }

    async fn dedup_get(&self, sender: &UserId, id: &ClientMsgId) -> Result<Option<MessageRef>> {
        self.gate(Class::Read).await?;
        self.inner.dedup_get(sender, id).await
    }

    async fn load_ceiling(&self, key: &str) -> Result<Seq> {
        self.gate(Class::Read).await?;
        self.inner.load_ceiling(key).await
    }

    async fn swap_ceiling(&self, key: &str, expected: Seq, max_seq: Seq) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.swap_ceiling(key, expected, max_seq).await
    }

    async fn fence_log(&self, log: &LogId, writer: &str, after: Seq, up_to: Seq) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.fence_log(log, writer, after, up_to).await
    }

    async fn conversation_ids(&self, after: Option<&ConvId>, limit: usize) -> Result<Vec<ConvId>> {
        self.gate(Class::Read).await?;
        self.inner.conversation_ids(after, limit).await
    }

    async fn enqueue_retry(&self, item: &RetryItem) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.enqueue_retry(item).await
    }

    async fn retry_items(&self, after: Option<&RetryKey>, limit: usize) -> Result<Vec<RetryItem>> {
        self.gate(Class::Read).await?;
        self.inner.retry_items(after, limit).await
    }

    async fn remove_retry(&self, key: &RetryKey) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.remove_retry(key).await
    }

    async fn retry_checkpoint(&self) -> Result<Option<RetryKey>> {
        self.gate(Class::Read).await?;
        self.inner.retry_checkpoint().await
    }

    async fn save_retry_checkpoint(&self, at: Option<&RetryKey>) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.save_retry_checkpoint(at).await
    }

    async fn fanout_intents(
        &self,
        from: u64,
        to: u64,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> Result<Vec<RetryItem>> {
        self.gate(Class::Read).await?;
        self.inner.fanout_intents(from, to, after, limit).await
    }

    async fn fanout_watermark(&self) -> Result<u64> {
        self.gate(Class::Read).await?;
        self.inner.fanout_watermark().await
    }

    async fn save_fanout_watermark(&self, at: u64) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.save_fanout_watermark(at).await
    }

    async fn flush(&self) -> Result<()> {
        self.gate(Class::Write).await?;
        self.inner.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{entry, user};
    use crate::{Durability, EmbeddedStore};

    #[tokio::test]
    async fn every_nth_inbox_append_fails_before_writing_when_asked() {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let embedded = EmbeddedStore::open(dir.path(), Durability::OsBuffers).expect("a store");
        let store = FaultyStore::new(Arc::new(embedded));
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).expect("a dm id");
        store.set_fail_inbox_every(3);
        let mut failed = Vec::new();
        for seq in 1..=6 {
            if store
                .append_inbox(&u, &entry(seq, &conv, &peer))
                .await
                .is_err()
            {
                failed.push(seq);
            }
        }
        assert_eq!(failed, [3, 6]);
        let stored: Vec<Seq> = store
            .read_inbox(&u, 0, 10)
            .await
            .expect("a read")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(stored, [1, 2, 4, 5], "the failed ones were not written");
        store.set_fail_inbox_every(0);
        assert!(
            store
                .append_inbox(&u, &entry(7, &conv, &peer))
                .await
                .is_ok()
        );
    }
}
