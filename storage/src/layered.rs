//! The one place that lists every store method for the store's wrappers (the
//! deadline and breaker, the fault hook): a wrapper has an `inner` store and
//! an `around` method saying what happens around each call, and
//! `layered_store!` writes its `MessageStore` impl.
//! A new store method is added here once, with its kind.

/// What kind of call a store method is, for a wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    /// A read: idempotent, may be re-issued.
    Read,
    /// A read of a page of a conversation's log (history): a read that a
    /// fault may treat apart.
    Page,
    /// A write (or a wait for durability): issued once.
    Write,
}

/// One store call, as a wrapper sees it.
#[derive(Debug, Clone, Copy)]
pub struct StoreCall {
    /// Its kind.
    pub kind: CallKind,
    /// `store.<method>`, for logs and retry metrics.
    pub name: &'static str,
}

/// Implements `MessageStore` for a wrapper type with a field `inner:
/// Arc<dyn MessageStore>` and a method `async fn around<T, F, Fut>(&self,
/// call: StoreCall, run: F) -> Result<T>` where `F: FnMut() -> Fut` makes the
/// inner call (again, for a read that is retried).
macro_rules! layered_store {
    ($wrapper:ty) => {
        #[async_trait::async_trait]
        impl crate::MessageStore for $wrapper {
            async fn put_conversation(&self, meta: &crate::ConversationMeta) -> crate::Result<()> {
                self.around(crate::layered::write("store.put_conversation"), || {
                    self.inner.put_conversation(meta)
                })
                .await
            }
            async fn conversation(
                &self,
                conv: &proto::ConvId,
            ) -> crate::Result<Option<crate::ConversationMeta>> {
                self.around(crate::layered::read("store.conversation"), || {
                    self.inner.conversation(conv)
                })
                .await
            }
            async fn add_members(
                &self,
                conv: &proto::ConvId,
                users: &[proto::UserId],
            ) -> crate::Result<()> {
                self.around(crate::layered::write("store.add_members"), || {
                    self.inner.add_members(conv, users)
                })
                .await
            }
            async fn remove_member(
                &self,
                conv: &proto::ConvId,
                user: &proto::UserId,
            ) -> crate::Result<()> {
                self.around(crate::layered::write("store.remove_member"), || {
                    self.inner.remove_member(conv, user)
                })
                .await
            }
            async fn members(&self, conv: &proto::ConvId) -> crate::Result<Vec<proto::UserId>> {
                self.around(crate::layered::read("store.members"), || {
                    self.inner.members(conv)
                })
                .await
            }
            async fn user_conversations(
                &self,
                user: &proto::UserId,
            ) -> crate::Result<Vec<proto::ConvId>> {
                self.around(crate::layered::read("store.user_conversations"), || {
                    self.inner.user_conversations(user)
                })
                .await
            }
            async fn append_message(
                &self,
                msg: &proto::HistoryMessage,
                intent: &crate::RetryItem,
            ) -> crate::Result<crate::WriteTicket> {
                self.around(crate::layered::write("store.append_message"), || {
                    self.inner.append_message(msg, intent)
                })
                .await
            }
            async fn message(
                &self,
                conv: &proto::ConvId,
                conv_seq: proto::Seq,
            ) -> crate::Result<Option<proto::HistoryMessage>> {
                self.around(crate::layered::read("store.message"), || {
                    self.inner.message(conv, conv_seq)
                })
                .await
            }
            async fn messages(
                &self,
                conv: &proto::ConvId,
                page: crate::Page,
                limit: usize,
            ) -> crate::Result<Vec<proto::HistoryMessage>> {
                let call = crate::layered::StoreCall {
                    kind: crate::layered::CallKind::Page,
                    name: "store.messages",
                };
                self.around(call, || self.inner.messages(conv, page, limit))
                    .await
            }
            async fn recall_message(
                &self,
                conv: &proto::ConvId,
                conv_seq: proto::Seq,
            ) -> crate::Result<()> {
                self.around(crate::layered::write("store.recall_message"), || {
                    self.inner.recall_message(conv, conv_seq)
                })
                .await
            }
            async fn read_markers(
                &self,
                conv: &proto::ConvId,
            ) -> crate::Result<Vec<(proto::UserId, proto::Seq)>> {
                self.around(crate::layered::read("store.read_markers"), || {
                    self.inner.read_markers(conv)
                })
                .await
            }
            async fn read_marker(
                &self,
                conv: &proto::ConvId,
                user: &proto::UserId,
            ) -> crate::Result<proto::Seq> {
                self.around(crate::layered::read("store.read_marker"), || {
                    self.inner.read_marker(conv, user)
                })
                .await
            }
            async fn raise_read_marker(
                &self,
                conv: &proto::ConvId,
                user: &proto::UserId,
                up_to: proto::Seq,
            ) -> crate::Result<()> {
                self.around(crate::layered::write("store.raise_read_marker"), || {
                    self.inner.raise_read_marker(conv, user, up_to)
                })
                .await
            }
            async fn recall_entry(
                &self,
                user: &proto::UserId,
                seq: proto::Seq,
            ) -> crate::Result<()> {
                self.around(crate::layered::write("store.recall_entry"), || {
                    self.inner.recall_entry(user, seq)
                })
                .await
            }
            async fn last_conv_seq(&self, conv: &proto::ConvId) -> crate::Result<proto::Seq> {
                self.around(crate::layered::read("store.last_conv_seq"), || {
                    self.inner.last_conv_seq(conv)
                })
                .await
            }
            async fn append_inbox(
                &self,
                user: &proto::UserId,
                entry: &proto::Entry,
            ) -> crate::Result<crate::WriteTicket> {
                self.around(crate::layered::write("store.append_inbox"), || {
                    self.inner.append_inbox(user, entry)
                })
                .await
            }
            async fn inbox_seq_of(
                &self,
                user: &proto::UserId,
                conv: &proto::ConvId,
                conv_seq: proto::Seq,
            ) -> crate::Result<Option<proto::Seq>> {
                self.around(crate::layered::read("store.inbox_seq_of"), || {
                    self.inner.inbox_seq_of(user, conv, conv_seq)
                })
                .await
            }
            async fn read_inbox(
                &self,
                user: &proto::UserId,
                after: proto::Seq,
                limit: usize,
            ) -> crate::Result<Vec<proto::Entry>> {
                self.around(crate::layered::read("store.read_inbox"), || {
                    self.inner.read_inbox(user, after, limit)
                })
                .await
            }
            async fn inbox_head(&self, user: &proto::UserId) -> crate::Result<proto::Seq> {
                self.around(crate::layered::read("store.inbox_head"), || {
                    self.inner.inbox_head(user)
                })
                .await
            }
            async fn durable(&self, ticket: crate::WriteTicket) -> crate::Result<()> {
                self.around(crate::layered::write("store.durable"), || {
                    self.inner.durable(ticket)
                })
                .await
            }
            async fn dedup_get(
                &self,
                sender: &proto::UserId,
                id: &proto::ClientMsgId,
            ) -> crate::Result<Option<crate::MessageRef>> {
                self.around(crate::layered::read("store.dedup_get"), || {
                    self.inner.dedup_get(sender, id)
                })
                .await
            }
            async fn load_ceiling(&self, key: &str) -> crate::Result<proto::Seq> {
                self.around(crate::layered::read("store.load_ceiling"), || {
                    self.inner.load_ceiling(key)
                })
                .await
            }
            async fn swap_ceiling(
                &self,
                key: &str,
                expected: proto::Seq,
                max_seq: proto::Seq,
            ) -> crate::Result<()> {
                self.around(crate::layered::write("store.swap_ceiling"), || {
                    self.inner.swap_ceiling(key, expected, max_seq)
                })
                .await
            }
            async fn fence_log(
                &self,
                log: &crate::LogId,
                writer: &str,
                after: proto::Seq,
                up_to: proto::Seq,
            ) -> crate::Result<()> {
                self.around(crate::layered::write("store.fence_log"), || {
                    self.inner.fence_log(log, writer, after, up_to)
                })
                .await
            }
            async fn conversation_ids(
                &self,
                after: Option<&proto::ConvId>,
                limit: usize,
            ) -> crate::Result<Vec<proto::ConvId>> {
                self.around(crate::layered::read("store.conversation_ids"), || {
                    self.inner.conversation_ids(after, limit)
                })
                .await
            }
            async fn enqueue_retry(&self, item: &crate::RetryItem) -> crate::Result<()> {
                self.around(crate::layered::write("store.enqueue_retry"), || {
                    self.inner.enqueue_retry(item)
                })
                .await
            }
            async fn retry_items(
                &self,
                after: Option<&crate::RetryKey>,
                limit: usize,
            ) -> crate::Result<Vec<crate::RetryItem>> {
                self.around(crate::layered::read("store.retry_items"), || {
                    self.inner.retry_items(after, limit)
                })
                .await
            }
            async fn remove_retry(&self, key: &crate::RetryKey) -> crate::Result<()> {
                self.around(crate::layered::write("store.remove_retry"), || {
                    self.inner.remove_retry(key)
                })
                .await
            }
            async fn retry_checkpoint(&self) -> crate::Result<Option<crate::RetryKey>> {
                self.around(crate::layered::read("store.retry_checkpoint"), || {
                    self.inner.retry_checkpoint()
                })
                .await
            }
            async fn save_retry_checkpoint(
                &self,
                at: Option<&crate::RetryKey>,
            ) -> crate::Result<()> {
                self.around(crate::layered::write("store.save_retry_checkpoint"), || {
                    self.inner.save_retry_checkpoint(at)
                })
                .await
            }
            async fn fanout_intents(
                &self,
                from: u64,
                to: u64,
                after: Option<&crate::RetryKey>,
                limit: usize,
            ) -> crate::Result<Vec<crate::RetryItem>> {
                self.around(crate::layered::read("store.fanout_intents"), || {
                    self.inner.fanout_intents(from, to, after, limit)
                })
                .await
            }
            async fn fanout_watermark(&self) -> crate::Result<u64> {
                self.around(crate::layered::read("store.fanout_watermark"), || {
                    self.inner.fanout_watermark()
                })
                .await
            }
            async fn save_fanout_watermark(&self, at: u64) -> crate::Result<()> {
                self.around(crate::layered::write("store.save_fanout_watermark"), || {
                    self.inner.save_fanout_watermark(at)
                })
                .await
            }
            async fn flush(&self) -> crate::Result<()> {
                self.around(crate::layered::write("store.flush"), || self.inner.flush())
                    .await
            }
        }
    };
}

/// A read called `name`.
pub const fn read(name: &'static str) -> StoreCall {
    StoreCall {
        kind: CallKind::Read,
        name,
    }
}

/// A write called `name`.
pub const fn write(name: &'static str) -> StoreCall {
    StoreCall {
        kind: CallKind::Write,
        name,
    }
}

pub(crate) use layered_store;
