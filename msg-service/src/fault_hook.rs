//! A fault hook for fault-injection tests of the real binary
//! (`msg-service --fault-file PATH`, off unless given): a store wrapper
//! that reads `PATH` every 100 ms and, while it says so, stalls the store's
//! writes (`stall_writes`, as a remote store that stops answering) or fails
//! every Nth inbox append before writing it (`fail_inbox_every=N`, a fan-out
//! that fails part-way). An absent or empty file means no fault.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use proto::{ClientMsgId, ConvId, Entry, HistoryMessage, Seq, UserId};
use storage::{
    ConversationMeta, MessageRef, MessageStore, Page, Result, RetryItem, RetryKey, WriteTicket,
};
use tokio::sync::watch;

/// The faults the file asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Writes wait while this is set.
    pub stall_writes: bool,
    /// Every Nth inbox append fails (0: none).
    pub fail_inbox_every: u64,
}

impl Faults {
    /// Reads the file's lines; unknown lines are ignored.
    pub fn parse(text: &str) -> Self {
        let mut faults = Faults::default();
        for line in text.lines().map(str::trim) {
            if line == "stall_writes" {
                faults.stall_writes = true;
            } else if let Some(n) = line.strip_prefix("fail_inbox_every=") {
                faults.fail_inbox_every = n.trim().parse().unwrap_or(0);
            }
        }
        faults
    }
}

/// The store with the file's faults applied.
pub struct FaultHook {
    inner: Arc<dyn MessageStore>,
    faults: watch::Receiver<Faults>,
    inbox_appends: AtomicU64,
}

impl FaultHook {
    /// Wraps `inner`; a task re-reads `path` every 100 ms while the hook lives.
    pub fn wrap(inner: Arc<dyn MessageStore>, path: PathBuf) -> Arc<dyn MessageStore> {
        let (set, faults) = watch::channel(Faults::default());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_millis(100));
            loop {
                ticks.tick().await;
                // A few bytes from the page cache: cheaper than a blocking-pool hop.
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                set.send_if_modified(|current| {
                    let now = Faults::parse(&text);
                    let changed = *current != now;
                    if changed {
                        tracing::warn!(faults = ?now, "fault hook: faults changed");
                        *current = now;
                    }
                    changed
                });
                if set.is_closed() {
                    return;
                }
            }
        });
        Arc::new(FaultHook {
            inner,
            faults,
            inbox_appends: AtomicU64::new(0),
        })
    }

    /// Waits while writes are stalled.
    async fn write_allowed(&self) {
        let mut faults = self.faults.clone();
        // An Err means the poller is gone: nothing stalls any more.
        let _ = faults.wait_for(|f| !f.stall_writes).await;
    }
}

fn injected() -> storage::Error {
    storage::Error::Unavailable("fault hook: injected inbox append failure".into())
}

#[async_trait]
impl MessageStore for FaultHook {
    async fn put_conversation(&self, meta: &ConversationMeta) -> Result<()> {
        self.write_allowed().await;
        self.inner.put_conversation(meta).await
    }
    async fn conversation(&self, conv: &ConvId) -> Result<Option<ConversationMeta>> {
        self.inner.conversation(conv).await
    }
    async fn add_members(&self, conv: &ConvId, users: &[UserId]) -> Result<()> {
        self.write_allowed().await;
        self.inner.add_members(conv, users).await
    }
    async fn remove_member(&self, conv: &ConvId, user: &UserId) -> Result<()> {
        self.write_allowed().await;
        self.inner.remove_member(conv, user).await
    }
    async fn members(&self, conv: &ConvId) -> Result<Vec<UserId>> {
        self.inner.members(conv).await
    }
    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConvId>> {
        self.inner.user_conversations(user).await
    }
    async fn append_message(&self, msg: &HistoryMessage) -> Result<WriteTicket> {
        self.write_allowed().await;
        self.inner.append_message(msg).await
    }
    async fn message(&self, conv: &ConvId, conv_seq: Seq) -> Result<Option<HistoryMessage>> {
        self.inner.message(conv, conv_seq).await
    }
    async fn messages(
        &self,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<Vec<HistoryMessage>> {
        self.inner.messages(conv, page, limit).await
    }
    async fn last_conv_seq(&self, conv: &ConvId) -> Result<Seq> {
        self.inner.last_conv_seq(conv).await
    }
    async fn append_inbox(&self, user: &UserId, entry: &Entry) -> Result<WriteTicket> {
        self.write_allowed().await;
        let every = self.faults.borrow().fail_inbox_every;
        let n = self.inbox_appends.fetch_add(1, Ordering::Relaxed) + 1;
        if every > 0 && n.is_multiple_of(every) {
            return Err(injected());
        }
        self.inner.append_inbox(user, entry).await
    }
    async fn inbox_seq_of(
        &self,
        user: &UserId,
        conv: &ConvId,
        conv_seq: Seq,
    ) -> Result<Option<Seq>> {
        self.inner.inbox_seq_of(user, conv, conv_seq).await
    }
    async fn read_inbox(&self, user: &UserId, after: Seq, limit: usize) -> Result<Vec<Entry>> {
        self.inner.read_inbox(user, after, limit).await
    }
    async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        self.inner.inbox_head(user).await
    }
    async fn durable(&self, ticket: WriteTicket) -> Result<()> {
        self.inner.durable(ticket).await
    }
    async fn dedup_get(&self, sender: &UserId, id: &ClientMsgId) -> Result<Option<MessageRef>> {
        self.inner.dedup_get(sender, id).await
    }
    async fn load_ceiling(&self, key: &str) -> Result<Seq> {
        self.inner.load_ceiling(key).await
    }
    async fn swap_ceiling(&self, key: &str, expected: Seq, max_seq: Seq) -> Result<()> {
        self.write_allowed().await;
        self.inner.swap_ceiling(key, expected, max_seq).await
    }
    async fn conversation_ids(&self, after: Option<&ConvId>, limit: usize) -> Result<Vec<ConvId>> {
        self.inner.conversation_ids(after, limit).await
    }
    async fn enqueue_retry(&self, item: &RetryItem) -> Result<()> {
        self.write_allowed().await;
        self.inner.enqueue_retry(item).await
    }
    async fn retry_items(&self, after: Option<&RetryKey>, limit: usize) -> Result<Vec<RetryItem>> {
        self.inner.retry_items(after, limit).await
    }
    async fn remove_retry(&self, key: &RetryKey) -> Result<()> {
        self.write_allowed().await;
        self.inner.remove_retry(key).await
    }
    async fn retry_checkpoint(&self) -> Result<Option<RetryKey>> {
        self.inner.retry_checkpoint().await
    }
    async fn save_retry_checkpoint(&self, at: Option<&RetryKey>) -> Result<()> {
        self.write_allowed().await;
        self.inner.save_retry_checkpoint(at).await
    }
    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_the_faults_and_anything_else_is_no_fault() {
        assert_eq!(Faults::parse(""), Faults::default());
        assert_eq!(
            Faults::parse("stall_writes\nfail_inbox_every=7\nnonsense"),
            Faults {
                stall_writes: true,
                fail_inbox_every: 7
            }
        );
        assert_eq!(Faults::parse("fail_inbox_every=x").fail_inbox_every, 0);
    }
}
