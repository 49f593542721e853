//! `MessageStore` for the Scylla store: each call as one statement, a few
//! ordered ones (appends, see `appends`) or one logged batch (membership);
//! a large body first goes alone to `message_bodies` (see `bodies`), reads
//! across buckets through `walk`, seq ceilings as LWTs on the ceiling row
//! only (once per allocator step, never per message).

use async_trait::async_trait;
use proto::{ClientMsgId, ConvId, Entry, HistoryMessage, Seq, UserId};

use super::buckets::{bucket_of, clamp, from_cql, section_of, to_cql};
use super::bulkhead::Class;
use super::rows::{self, ConversationRow, InboxRow, MessageRow};
use super::statements::logged_batch;
use super::store::ScyllaStore;
use super::walk::{BucketWalk, Direction, Walk, newest};
use crate::model::{ConversationMeta, LogId, MessageRef, Page, RetryItem, RetryKey, WriteTicket};
use crate::{Error, MessageStore, Result};

/// Users per membership batch: two small rows each, well under the batch
/// size warning threshold (5 KiB by default).
const MEMBERS_PER_BATCH: usize = 32;

/// A seq a caller asks about that no stored row can have (above `bigint`).
fn stored_seq(seq: Seq) -> Option<i64> {
    i64::try_from(seq).ok()
}

#[async_trait]
impl MessageStore for ScyllaStore {
    async fn put_conversation(&self, meta: &ConversationMeta) -> Result<()> {
        let values = rows::conversation_values(meta)?;
        let statement = &self.statements().put_conversation;
        self.execute(Class::Write, statement, values).await?;
        Ok(())
    }

    async fn conversation(&self, conv: &ConvId) -> Result<Option<ConversationMeta>> {
        let statement = &self.statements().conversation;
        let row: Option<ConversationRow> = self.select_one(statement, (conv.as_str(),)).await?;
        row.map(ConversationRow::into_meta).transpose()
    }

    async fn add_members(&self, conv: &ConvId, users: &[UserId]) -> Result<()> {
        let st = self.statements();
        for chunk in users.chunks(MEMBERS_PER_BATCH) {
            // Both directions of each membership in one logged batch, so
            // the two tables never disagree after a failure.
            let batch = logged_batch(
                chunk
                    .iter()
                    .flat_map(|_| [st.add_member.clone(), st.add_user_conv.clone()]),
            );
            let values: Vec<(&str, &str)> = chunk
                .iter()
                .flat_map(|u| [(conv.as_str(), u.as_str()), (u.as_str(), conv.as_str())])
                .collect();
            self.batch(&batch, values).await?;
        }
        Ok(())
    }

    async fn remove_member(&self, conv: &ConvId, user: &UserId) -> Result<()> {
        let (conv, user) = (conv.as_str(), user.as_str());
        let batch = &self.statements().remove_member;
        self.batch(batch, ((conv, user), (user, conv))).await
    }

    async fn members(&self, conv: &ConvId) -> Result<Vec<UserId>> {
        let statement = &self.statements().members;
        let found = self.select_all(statement, (conv.as_str(),)).await?;
        let mut members: Vec<UserId> = rows::ids("user_id", found)?;
        members.sort();
        Ok(members)
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConvId>> {
        let statement = &self.statements().user_convs;
        let found = self.select_all(statement, (user.as_str(),)).await?;
        let mut convs: Vec<ConvId> = rows::ids("conv_id", found)?;
        convs.sort();
        Ok(convs)
    }

    async fn append_message(
        &self,
        msg: &HistoryMessage,
        intent: &RetryItem,
    ) -> Result<WriteTicket> {
        // A large body first, alone: the row that makes the message
        // visible (and its dedup record count) must find it stored.
        let stamp = self.stamp();
        self.put_body_apart(msg, stamp).await?;
        self.write_message(msg, intent, stamp).await?;
        // Durable at the consistency level already: see the module doc.
        Ok(WriteTicket::default())
    }

    async fn message(&self, conv: &ConvId, conv_seq: Seq) -> Result<Option<HistoryMessage>> {
        let Some(conv_seq) = stored_seq(conv_seq) else {
            return Ok(None);
        };
        let values = (conv.as_str(), bucket_of(conv_seq), conv_seq);
        let row: Option<MessageRow> = self.select_one(&self.statements().message, values).await?;
        let pending = row.map(MessageRow::into_message).transpose()?;
        let mut filled = self.fill_bodies(pending.into_iter().collect()).await?;
        Ok(filled.pop())
    }

    async fn recall_message(&self, conv: &ConvId, conv_seq: Seq) -> Result<()> {
        let Some(stored) = stored_seq(conv_seq) else {
            return Ok(());
        };
        if !self.message_stored(conv, conv_seq).await? {
            return Ok(());
        }
        let conv_seq = stored;
        let values = (conv.as_str(), bucket_of(conv_seq), conv_seq);
        let statement = &self.statements().recall_message;
        self.execute(Class::Write, statement, values).await?;
        Ok(())
    }

    async fn read_markers(&self, conv: &ConvId) -> Result<Vec<(UserId, Seq)>> {
        let statement = &self.statements().read_markers;
        let found = self.select_all(statement, (conv.as_str(),)).await?;
        rows::read_markers(found)
    }

    async fn read_marker(&self, conv: &ConvId, user: &UserId) -> Result<Seq> {
        let statement = &self.statements().read_marker;
        let row: Option<(i64,)> = self
            .select_one(statement, (conv.as_str(), user.as_str()))
            .await?;
        row.map_or(Ok(0), |(up_to,)| from_cql(up_to))
    }

    async fn raise_read_marker(&self, conv: &ConvId, user: &UserId, up_to: Seq) -> Result<()> {
        let up_to = to_cql(up_to)?;
        let values = (conv.as_str(), user.as_str(), up_to, up_to);
        let statement = &self.statements().raise_read_marker;
        self.execute(Class::Write, statement, values).await?;
        Ok(())
    }

    async fn recall_entry(&self, user: &UserId, seq: Seq) -> Result<()> {
        let Some(seq) = stored_seq(seq) else {
            return Ok(());
        };
        let st = self.statements();
        let values = (user.as_str(), bucket_of(seq), seq);
        let row: Option<(i64,)> = self.select_one(&st.inbox_entry_stored, values).await?;
        if row.is_none() {
            return Ok(());
        }
        self.execute(Class::Write, &st.recall_entry, values).await?;
        Ok(())
    }

    async fn messages(
        &self,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<Vec<HistoryMessage>> {
        let st = self.statements();
        let (direction, list, read, bound) = match page {
            Page::Before(0) => return Ok(Vec::new()),
            Page::Before(n) => (
                Direction::Down,
                &st.message_buckets_down,
                &st.messages_before,
                clamp(n),
            ),
            Page::After(n) => match stored_seq(n) {
                Some(n) if n < i64::MAX => {
                    (Direction::Up, &st.message_buckets_up, &st.messages_after, n)
                }
                _ => return Ok(Vec::new()),
            },
        };
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The bucket of the first seq past the bound.
        let first = match direction {
            Direction::Up => bound + 1,
            Direction::Down => bound - 1,
        };
        let buckets = BucketWalk::new(self, list, conv.as_str(), direction, bucket_of(first));
        let walk = Walk {
            buckets,
            read,
            bound,
        };
        let pending = walk.collect::<MessageRow>(limit).await?;
        self.fill_bodies(pending).await
    }

    async fn last_conv_seq(&self, conv: &ConvId) -> Result<Seq> {
        let st = self.statements();
        let buckets = BucketWalk::new(
            self,
            &st.message_buckets_down,
            conv.as_str(),
            Direction::Down,
            i64::MAX,
        );
        newest(buckets, &st.newest_message).await
    }

    async fn append_inbox(&self, user: &UserId, entry: &Entry) -> Result<WriteTicket> {
        // A large body first, alone (idempotent: the message's append wrote
        // the same row), so the entry is never visible without it.
        let stamp = self.stamp();
        self.put_body_apart(&entry.message, stamp).await?;
        self.write_inbox_entry(user, entry, stamp).await?;
        // Durable at the consistency level already: see the module doc.
        Ok(WriteTicket::default())
    }

    async fn inbox_seq_of(
        &self,
        user: &UserId,
        conv: &ConvId,
        conv_seq: Seq,
    ) -> Result<Option<Seq>> {
        let Some(conv_seq) = stored_seq(conv_seq) else {
            return Ok(None);
        };
        self.stored_inbox_seq(user, conv, conv_seq).await
    }

    async fn read_inbox(&self, user: &UserId, after: Seq, limit: usize) -> Result<Vec<Entry>> {
        let after = match stored_seq(after) {
            Some(after) if after < i64::MAX && limit > 0 => after,
            _ => return Ok(Vec::new()),
        };
        let st = self.statements();
        let buckets = BucketWalk::new(
            self,
            &st.inbox_buckets_up,
            user.as_str(),
            Direction::Up,
            bucket_of(after + 1),
        );
        let walk = Walk {
            buckets,
            read: &st.inbox_after,
            bound: after,
        };
        let pending = walk.collect::<InboxRow>(limit).await?;
        self.fill_bodies(pending).await
    }

    async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        let st = self.statements();
        let buckets = BucketWalk::new(
            self,
            &st.inbox_buckets_down,
            user.as_str(),
            Direction::Down,
            i64::MAX,
        );
        newest(buckets, &st.newest_inbox).await
    }

    /// Nothing to wait for: every write was durable when it returned.
    async fn durable(&self, _ticket: WriteTicket) -> Result<()> {
        Ok(())
    }

    async fn dedup_get(&self, sender: &UserId, id: &ClientMsgId) -> Result<Option<MessageRef>> {
        self.stored_dedup(sender, id).await
    }

    async fn load_ceiling(&self, key: &str) -> Result<Seq> {
        // A serial read is a Paxos round: it takes an LWT slot.
        let statement = &self.statements().load_ceiling;
        let result = self
            .execute(Class::Lwt, statement, (section_of(key), key))
            .await?;
        match rows::all::<(i64,)>(result)?.first() {
            Some(&(max_seq,)) => from_cql(max_seq),
            None => Ok(0),
        }
    }

    async fn swap_ceiling(&self, key: &str, expected: Seq, max_seq: Seq) -> Result<()> {
        let (section, max_seq) = (section_of(key), to_cql(max_seq)?);
        let st = self.statements();
        let result = if expected == 0 {
            let values = (section, key, max_seq);
            self.execute(Class::Lwt, &st.create_ceiling, values).await?
        } else {
            let values = (max_seq, section, key, to_cql(expected)?);
            self.execute(Class::Lwt, &st.raise_ceiling, values).await?
        };
        if rows::applied(result)? {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "the seq ceiling of {key} is no longer {expected}"
            )))
        }
    }

    async fn fence_log(&self, log: &LogId, writer: &str, after: Seq, up_to: Seq) -> Result<()> {
        self.fence(log, writer, after, up_to).await
    }

    async fn conversation_ids(&self, after: Option<&ConvId>, limit: usize) -> Result<Vec<ConvId>> {
        self.scan_conversations(after, limit).await
    }

    async fn enqueue_retry(&self, item: &RetryItem) -> Result<()> {
        self.put_retry(item).await
    }

    async fn retry_items(&self, after: Option<&RetryKey>, limit: usize) -> Result<Vec<RetryItem>> {
        self.read_retries(after, limit).await
    }

    async fn remove_retry(&self, key: &RetryKey) -> Result<()> {
        self.delete_retry(key).await
    }

    async fn retry_checkpoint(&self) -> Result<Option<RetryKey>> {
        self.load_retry_checkpoint().await
    }

    async fn save_retry_checkpoint(&self, at: Option<&RetryKey>) -> Result<()> {
        self.store_retry_checkpoint(at).await
    }

    async fn fanout_intents(
        &self,
        from: u64,
        to: u64,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> Result<Vec<RetryItem>> {
        self.read_intents(from, to, after, limit).await
    }

    async fn fanout_watermark(&self) -> Result<u64> {
        self.load_watermark().await
    }

    async fn save_fanout_watermark(&self, at: u64) -> Result<()> {
        self.store_watermark(at).await
    }

    /// Nothing to flush: every write was durable when it returned.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
