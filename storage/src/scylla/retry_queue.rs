//! The fan-out retry queue, its worker's checkpoint and the conversation
//! scan of the audit on Scylla, as inherent methods the `MessageStore` impl
//! delegates to. Each call is one statement.

use ::scylla::DeserializeRow;
use proto::ConvId;

use super::buckets::{from_cql, to_cql};
use super::bulkhead::Class;
use super::intents::shard_of;
use super::rows;
use super::store::ScyllaStore;
use crate::Result;
use crate::model::{RetryItem, RetryKey};

/// Partitions of the queue (spread over the nodes; a pass reads them all).
const RETRY_SHARDS: i32 = 8;

/// The checkpoint row's key: one fan-out retry worker per keyspace.
const WORKER: &str = "fanout";

/// A row of `fanout_retries` (the columns of `RETRY_COLUMNS`).
#[derive(Debug, DeserializeRow)]
#[scylla(crate = ::scylla)]
struct RetryRow {
    enqueued_at: i64,
    conv_id: String,
    conv_seq: i64,
    members: Option<Vec<String>>,
    attempts: Option<i32>,
    not_before: Option<i64>,
}

impl RetryRow {
    fn into_item(self) -> Result<RetryItem> {
        let members = self.members.unwrap_or_default();
        Ok(RetryItem {
            key: RetryKey {
                enqueued_at: from_cql(self.enqueued_at)?,
                conv_id: rows::id("conv_id", &self.conv_id)?,
                conv_seq: from_cql(self.conv_seq)?,
            },
            members: members
                .iter()
                .map(|m| rows::id("user_id", m))
                .collect::<Result<_>>()?,
            attempts: u32::try_from(self.attempts.unwrap_or(0)).unwrap_or(0),
            not_before: from_cql(self.not_before.unwrap_or(0))?,
        })
    }
}

/// A `LIMIT` bound: CQL's is an int.
fn cql_limit(limit: usize) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

fn key_values(key: &RetryKey) -> Result<(i64, &str, i64)> {
    Ok((
        to_cql(key.enqueued_at)?,
        key.conv_id.as_str(),
        to_cql(key.conv_seq)?,
    ))
}

impl ScyllaStore {
    /// A token-range scan of `conversations`: every node's share once, one
    /// page per call, cost proportional to the number of conversations.
    /// Paging by token skips a conversation whose id hashes to the same
    /// Murmur3 token as a page's last one (odds about 2^-64 per pair): an
    /// audit's blind spot, accepted.
    pub(crate) async fn scan_conversations(
        &self,
        after: Option<&ConvId>,
        limit: usize,
    ) -> Result<Vec<ConvId>> {
        let st = self.statements();
        let found: Vec<(String,)> = match after {
            None => {
                self.select(&st.conversations_first, (cql_limit(limit),))
                    .await?
            }
            Some(conv) => {
                let values = (conv.as_str(), cql_limit(limit));
                self.select(&st.conversations_after, values).await?
            }
        };
        rows::ids("conv_id", found)
    }

    pub(crate) async fn put_retry(&self, item: &RetryItem) -> Result<()> {
        let (at, conv, seq) = key_values(&item.key)?;
        let members: Vec<&str> = item.members.iter().map(|m| m.as_str()).collect();
        let attempts = i32::try_from(item.attempts).unwrap_or(i32::MAX);
        let shard = shard_of(conv, RETRY_SHARDS);
        let values = (
            shard,
            at,
            conv,
            seq,
            members,
            attempts,
            to_cql(item.not_before)?,
        );
        let statement = &self.statements().enqueue_retry;
        self.execute(Class::Write, statement, values).await?;
        Ok(())
    }

    /// The first `limit` items after `after`: every shard's first `limit`,
    /// merged in key order. Items of schema versions 2 and 3 (all in shard
    /// 0) are moved to their shard when read, so that shard 0 does not
    /// collect their tombstones for ever.
    pub(crate) async fn read_retries(
        &self,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> Result<Vec<RetryItem>> {
        let mut found = Vec::new();
        for item in self.retries_in(0, after, limit).await? {
            if shard_of(item.key.conv_id.as_str(), RETRY_SHARDS) != 0 {
                self.move_out_of_shard_zero(&item).await?;
            }
            found.push(item);
        }
        for shard in 1..RETRY_SHARDS {
            found.extend(self.retries_in(shard, after, limit).await?);
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        // A moved item was read in both shards.
        found.dedup_by(|a, b| a.key == b.key);
        found.truncate(limit);
        Ok(found)
    }

    /// Writes an item of shard 0 to its own shard, then removes it from 0.
    async fn move_out_of_shard_zero(&self, item: &RetryItem) -> Result<()> {
        self.put_retry(item).await?;
        let (at, conv, seq) = key_values(&item.key)?;
        let statement = &self.statements().remove_retry;
        self.execute(Class::Write, statement, (0, at, conv, seq))
            .await?;
        Ok(())
    }

    async fn retries_in(
        &self,
        shard: i32,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> Result<Vec<RetryItem>> {
        let st = self.statements();
        let found: Vec<RetryRow> = match after {
            None => {
                let values = (shard, cql_limit(limit));
                self.select(&st.retries_first, values).await?
            }
            Some(key) => {
                let (at, conv, seq) = key_values(key)?;
                let values = (shard, at, conv, seq, cql_limit(limit));
                self.select(&st.retries_after, values).await?
            }
        };
        found.into_iter().map(RetryRow::into_item).collect()
    }

    /// Removes an item from its shard (an old item of shard 0 was moved
    /// there when it was read).
    pub(crate) async fn delete_retry(&self, key: &RetryKey) -> Result<()> {
        let statement = &self.statements().remove_retry;
        let (at, conv, seq) = key_values(key)?;
        let shard = shard_of(conv, RETRY_SHARDS);
        self.execute(Class::Write, statement, (shard, at, conv, seq))
            .await?;
        Ok(())
    }

    pub(crate) async fn load_retry_checkpoint(&self) -> Result<Option<RetryKey>> {
        let statement = &self.statements().retry_checkpoint;
        let row: Option<(i64, String, i64)> = self.select_one(statement, (WORKER,)).await?;
        row.map(|(at, conv, seq)| {
            Ok(RetryKey {
                enqueued_at: from_cql(at)?,
                conv_id: rows::id("conv_id", &conv)?,
                conv_seq: from_cql(seq)?,
            })
        })
        .transpose()
    }

    pub(crate) async fn store_retry_checkpoint(&self, at: Option<&RetryKey>) -> Result<()> {
        let st = self.statements();
        match at {
            Some(key) => {
                let (at, conv, seq) = key_values(key)?;
                let values = (WORKER, at, conv, seq);
                self.execute(Class::Write, &st.save_retry_checkpoint, values)
                    .await?;
            }
            None => {
                self.execute(Class::Write, &st.clear_retry_checkpoint, (WORKER,))
                    .await?;
            }
        }
        Ok(())
    }
}
