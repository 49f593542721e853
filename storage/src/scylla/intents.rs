//! Fan-out intents on Scylla: one row per message write, never deleted (a
//! delete per send would leave a tombstone per send for every scan to walk
//! over), partitioned by the minute it was written and a shard of its
//! conversation, expired by the table's TTL. Only recovery reads them, from
//! the saved watermark on, in short windows: per minute one query per
//! shard, the shards at once.

use ::scylla::DeserializeRow;

use futures_util::future::try_join_all;

use super::buckets::{from_cql, to_cql};
use super::bulkhead::Class;
use super::rows;
use super::store::{ScyllaStore, Stamp};
use crate::Result;
use crate::clock::now_ms;
use crate::model::{RetryItem, RetryKey};

/// Shards per minute: the writes of one minute spread over this many
/// partitions (and nodes).
const SHARDS: i32 = 8;
const MINUTE_MS: u64 = 60_000;
/// The table's `default_time_to_live` (2 days): older intents are gone.
const INTENT_TTL_MS: u64 = 172_800_000;
/// The watermark row's owner: one msg-service per keyspace today.
const OWNER: &str = "msg-service";

/// A row of `fanout_intents` (the columns of `INTENT_COLUMNS`).
#[derive(Debug, DeserializeRow)]
#[scylla(crate = ::scylla)]
struct IntentRow {
    written_at: i64,
    conv_id: String,
    conv_seq: i64,
    members: Option<Vec<String>>,
}

impl IntentRow {
    fn into_item(self) -> Result<RetryItem> {
        Ok(RetryItem {
            key: RetryKey {
                enqueued_at: from_cql(self.written_at)?,
                conv_id: rows::id("conv_id", &self.conv_id)?,
                conv_seq: from_cql(self.conv_seq)?,
            },
            members: (self.members.unwrap_or_default().iter())
                .map(|m| rows::id("user_id", m))
                .collect::<Result<_>>()?,
            attempts: 0,
            not_before: 0,
        })
    }
}

fn minute_of(ms: u64) -> Result<i64> {
    to_cql(ms / MINUTE_MS)
}

/// A stable shard in `0..shards` of a conversation id (FNV-1a): the same
/// in every build and process.
pub(crate) fn shard_of(conv: &str, shards: i32) -> i32 {
    let hash = conv.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    i32::try_from(hash % u64::from(shards.max(1).unsigned_abs())).unwrap_or(0)
}

impl ScyllaStore {
    pub(crate) async fn write_intent(&self, intent: &RetryItem, stamp: Stamp) -> Result<()> {
        let key = &intent.key;
        let members: Vec<&str> = intent.members.iter().map(|m| m.as_str()).collect();
        let values = (
            minute_of(key.enqueued_at)?,
            shard_of(key.conv_id.as_str(), SHARDS),
            to_cql(key.enqueued_at)?,
            key.conv_id.as_str(),
            to_cql(key.conv_seq)?,
            members,
        );
        let statement = &self.statements().insert_intent;
        self.execute_at(stamp, Class::Write, statement, values)
            .await?;
        Ok(())
    }

    /// The first `limit` intents in `[from, to)` past `after`: minute by
    /// minute, the shards of a minute read at once and merged in key order.
    /// Intents older than the TTL are gone: their minutes are not read.
    pub(crate) async fn read_intents(
        &self,
        from: u64,
        to: u64,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> Result<Vec<RetryItem>> {
        let from = from.max(now_ms().saturating_sub(INTENT_TTL_MS));
        let after = after.filter(|k| k.enqueued_at >= from);
        let start = after.map_or(from, |k| k.enqueued_at);
        if start >= to {
            return Ok(Vec::new());
        }
        for minute in start / MINUTE_MS..=(to - 1) / MINUTE_MS {
            let shards =
                (0..SHARDS).map(|shard| self.intents_in(minute, shard, from, after, limit));
            let mut found: Vec<RetryItem> =
                try_join_all(shards).await?.into_iter().flatten().collect();
            // Rows of a partition come in key order: those at `to` or later
            // follow every one before it.
            found.retain(|i| i.key.enqueued_at < to);
            if !found.is_empty() {
                found.sort_by(|a, b| a.key.cmp(&b.key));
                found.truncate(limit);
                return Ok(found);
            }
        }
        Ok(Vec::new())
    }

    async fn intents_in(
        &self,
        minute: u64,
        shard: i32,
        from: u64,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> Result<Vec<RetryItem>> {
        let st = self.statements();
        let (minute, limit) = (to_cql(minute)?, i32::try_from(limit).unwrap_or(i32::MAX));
        let rows: Vec<IntentRow> = match after {
            None => {
                let values = (minute, shard, to_cql(from)?, limit);
                self.select(&st.intents_from, values).await?
            }
            Some(key) => {
                let values = (
                    minute,
                    shard,
                    to_cql(key.enqueued_at)?,
                    key.conv_id.as_str(),
                    to_cql(key.conv_seq)?,
                    limit,
                );
                self.select(&st.intents_after, values).await?
            }
        };
        rows.into_iter().map(IntentRow::into_item).collect()
    }

    /// The saved watermark; none saved: the oldest an intent may be (TTL).
    pub(crate) async fn load_watermark(&self) -> Result<u64> {
        let statement = &self.statements().watermark;
        let row: Option<(i64,)> = self.select_one(statement, (OWNER,)).await?;
        row.map_or_else(
            || Ok(now_ms().saturating_sub(INTENT_TTL_MS)),
            |(at,)| from_cql(at),
        )
    }

    /// Saves the watermark; the intents below it are left to their TTL.
    pub(crate) async fn store_watermark(&self, at: u64) -> Result<()> {
        let statement = &self.statements().save_watermark;
        self.execute(Class::Write, statement, (OWNER, to_cql(at)?))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_always_lands_in_the_same_shard_and_shards_spread() {
        assert_eq!(shard_of("g:abc", SHARDS), shard_of("g:abc", SHARDS));
        let shards: std::collections::HashSet<i32> = (0..64)
            .map(|i| shard_of(&format!("g:{i}"), SHARDS))
            .collect();
        assert!(shards.iter().all(|s| (0..SHARDS).contains(s)));
        assert_eq!(shards.len(), SHARDS as usize, "64 ids reach every shard");
    }
}
