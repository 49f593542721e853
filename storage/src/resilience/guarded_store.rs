//! The durable store behind a circuit breaker, with a deadline on every call
//! and budgeted retries of the reads. Writes are never retried here: a send
//! that fails answers `unavailable`, and the client retries it with the same
//! client_msg_id, which dedup makes safe.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use proto::{ClientMsgId, ConvId, Entry, HistoryMessage, Seq, UserId};

use super::{Breaker, BreakerConfig, RetryBudget, RetryPolicy, retry_idempotent};
use crate::model::{ConversationMeta, LogId, MessageRef, Page, RetryItem, RetryKey, WriteTicket};
use crate::{Error, MessageStore, Result};

/// Deadline, breaker and retries of a [`GuardedStore`].
#[derive(Debug, Clone)]
pub struct GuardedStoreConfig {
    /// The longest one store call may take before it fails as `Unavailable`
    /// (default 2 s).
    pub timeout: Duration,
    /// When the `store` breaker opens.
    pub breaker: BreakerConfig,
    /// How reads are retried.
    pub retry: RetryPolicy,
    /// The budget reads' retries draw on.
    pub budget: RetryBudget,
}

impl Default for GuardedStoreConfig {
    fn default() -> Self {
        GuardedStoreConfig {
            timeout: Duration::from_secs(2),
            breaker: BreakerConfig::default(),
            retry: RetryPolicy::default(),
            budget: RetryBudget::default(),
        }
    }
}

/// A store call outlived its deadline.
#[derive(Debug, thiserror::Error)]
#[error("a store call took longer than {0:?}")]
pub struct StoreTimedOut(Duration);

/// A [`MessageStore`] that fails fast while its dependency is down.
pub struct GuardedStore {
    inner: Arc<dyn MessageStore>,
    breaker: Breaker,
    config: GuardedStoreConfig,
}

impl GuardedStore {
    /// Wraps `inner`; its breaker is called `store`.
    pub fn new(inner: Arc<dyn MessageStore>, config: GuardedStoreConfig) -> Self {
        GuardedStore {
            inner,
            breaker: Breaker::new("store", config.breaker),
            config,
        }
    }

    /// The breaker, for readiness and tests.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// One call: through the breaker, within the deadline.
    async fn call<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let timeout = self.config.timeout;
        let bounded = async move {
            tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| Error::unavailable(StoreTimedOut(timeout)))?
        };
        self.breaker.run(bounded, Error::is_retryable).await
    }

    /// An idempotent read: a call, retried within the policy and budget.
    async fn read<T, F, Fut>(&self, name: &'static str, mut read: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let (policy, budget) = (&self.config.retry, &self.config.budget);
        retry_idempotent(name, policy, budget, || self.call(read())).await
    }
}

#[async_trait]
impl MessageStore for GuardedStore {
    async fn put_conversation(&self, meta: &ConversationMeta) -> Result<()> {
        self.call(self.inner.put_conversation(meta)).await
    }

    async fn conversation(&self, conv: &ConvId) -> Result<Option<ConversationMeta>> {
        self.read("store.conversation", || self.inner.conversation(conv))
            .await
    }

    async fn add_members(&self, conv: &ConvId, users: &[UserId]) -> Result<()> {
        self.call(self.inner.add_members(conv, users)).await
    }

    async fn remove_member(&self, conv: &ConvId, user: &UserId) -> Result<()> {
        self.call(self.inner.remove_member(conv, user)).await
    }

    async fn members(&self, conv: &ConvId) -> Result<Vec<UserId>> {
        self.read("store.members", || self.inner.members(conv))
            .await
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConvId>> {
        self.read("store.user_conversations", || {
            self.inner.user_conversations(user)
        })
        .await
    }

    async fn append_message(
        &self,
        msg: &HistoryMessage,
        intent: &RetryItem,
    ) -> Result<WriteTicket> {
        self.call(self.inner.append_message(msg, intent)).await
    }

    async fn message(&self, conv: &ConvId, conv_seq: Seq) -> Result<Option<HistoryMessage>> {
        self.read("store.message", || self.inner.message(conv, conv_seq))
            .await
    }

    async fn messages(
        &self,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<Vec<HistoryMessage>> {
        self.read("store.messages", || self.inner.messages(conv, page, limit))
            .await
    }

    async fn last_conv_seq(&self, conv: &ConvId) -> Result<Seq> {
        self.read("store.last_conv_seq", || self.inner.last_conv_seq(conv))
            .await
    }

    async fn append_inbox(&self, user: &UserId, entry: &Entry) -> Result<WriteTicket> {
        self.call(self.inner.append_inbox(user, entry)).await
    }

    async fn inbox_seq_of(
        &self,
        user: &UserId,
        conv: &ConvId,
        conv_seq: Seq,
    ) -> Result<Option<Seq>> {
        self.read("store.inbox_seq_of", || {
            self.inner.inbox_seq_of(user, conv, conv_seq)
        })
        .await
    }

    async fn read_inbox(&self, user: &UserId, after: Seq, limit: usize) -> Result<Vec<Entry>> {
        self.read("store.read_inbox", || {
            self.inner.read_inbox(user, after, limit)
        })
        .await
    }

    async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        self.read("store.inbox_head", || self.inner.inbox_head(user))
            .await
    }

    async fn durable(&self, ticket: WriteTicket) -> Result<()> {
        self.call(self.inner.durable(ticket)).await
    }

    async fn dedup_get(&self, sender: &UserId, id: &ClientMsgId) -> Result<Option<MessageRef>> {
        self.read("store.dedup_get", || self.inner.dedup_get(sender, id))
            .await
    }

    async fn load_ceiling(&self, key: &str) -> Result<Seq> {
        self.read("store.load_ceiling", || self.inner.load_ceiling(key))
            .await
    }

    async fn swap_ceiling(&self, key: &str, expected: Seq, max_seq: Seq) -> Result<()> {
        self.call(self.inner.swap_ceiling(key, expected, max_seq))
            .await
    }

    async fn fence_log(&self, log: &LogId, writer: &str, after: Seq, up_to: Seq) -> Result<()> {
        self.call(self.inner.fence_log(log, writer, after, up_to))
            .await
    }

    async fn conversation_ids(&self, after: Option<&ConvId>, limit: usize) -> Result<Vec<ConvId>> {
        self.read("store.conversation_ids", || {
            self.inner.conversation_ids(after, limit)
        })
        .await
    }

    async fn enqueue_retry(&self, item: &RetryItem) -> Result<()> {
        self.call(self.inner.enqueue_retry(item)).await
    }

    async fn retry_items(&self, after: Option<&RetryKey>, limit: usize) -> Result<Vec<RetryItem>> {
        self.read("store.retry_items", || self.inner.retry_items(after, limit))
            .await
    }

    async fn remove_retry(&self, key: &RetryKey) -> Result<()> {
        self.call(self.inner.remove_retry(key)).await
    }

    async fn retry_checkpoint(&self) -> Result<Option<RetryKey>> {
        self.read("store.retry_checkpoint", || self.inner.retry_checkpoint())
            .await
    }

    async fn save_retry_checkpoint(&self, at: Option<&RetryKey>) -> Result<()> {
        self.call(self.inner.save_retry_checkpoint(at)).await
    }

    async fn fanout_intents(
        &self,
        from: u64,
        to: u64,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> Result<Vec<RetryItem>> {
        self.read("store.fanout_intents", || {
            self.inner.fanout_intents(from, to, after, limit)
        })
        .await
    }

    async fn fanout_watermark(&self) -> Result<u64> {
        self.read("store.fanout_watermark", || self.inner.fanout_watermark())
            .await
    }

    async fn save_fanout_watermark(&self, at: u64) -> Result<()> {
        self.call(self.inner.save_fanout_watermark(at)).await
    }

    async fn flush(&self) -> Result<()> {
        self.call(self.inner.flush()).await
    }
}

#[cfg(test)]
#[path = "guarded_store_tests.rs"]
mod tests;
