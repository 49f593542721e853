//! Reads that cross buckets. An inbox or a conversation log is split into
//! partitions of 65,536 seqs; seqs jump (after a restart the allocator
//! resumes above its persisted ceiling), so buckets in between may be
//! empty. The `*_buckets` tables list the buckets that hold rows: a walk
//! reads that list a few at a time, in its direction, and reads each
//! listed bucket page by page until it has `limit` rows. A head is the
//! newest row of the newest listed bucket.

use std::collections::VecDeque;

use ::scylla::statement::prepared::PreparedStatement;
use proto::{Entry, HistoryMessage, Seq};

use super::bodies::Pending;
use super::buckets::{from_cql, page_limit, to_cql};
use super::rows::{InboxRow, MessageRow};
use super::store::ScyllaStore;
use crate::Result;

/// Buckets listed per request.
const BUCKETS_PER_READ: i32 = 16;

/// Which way a walk goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Ascending seqs: rows after a seq.
    Up,
    /// Descending seqs: rows before a seq, newest first.
    Down,
}

/// The non-empty buckets of one inbox or log, from a start bucket on.
pub(crate) struct BucketWalk<'a> {
    store: &'a ScyllaStore,
    /// `... WHERE key = ? AND bucket >= ? ORDER BY bucket ASC LIMIT ?` (up)
    /// or `... bucket <= ? LIMIT ?` (down).
    list: &'a PreparedStatement,
    key: &'a str,
    direction: Direction,
    /// The bound of the next listing (inclusive); `None` when listed out.
    next_bound: Option<i64>,
    listed: VecDeque<i64>,
}

impl<'a> BucketWalk<'a> {
    pub(crate) fn new(
        store: &'a ScyllaStore,
        list: &'a PreparedStatement,
        key: &'a str,
        direction: Direction,
        start: i64,
    ) -> Self {
        BucketWalk {
            store,
            list,
            key,
            direction,
            next_bound: Some(start),
            listed: VecDeque::new(),
        }
    }

    /// The next bucket that holds rows, if any.
    pub(crate) async fn next(&mut self) -> Result<Option<i64>> {
        if self.listed.is_empty()
            && let Some(bound) = self.next_bound
        {
            let found: Vec<(i64,)> = self
                .store
                .select(self.list, (self.key, bound, BUCKETS_PER_READ))
                .await?;
            self.next_bound = match found.last() {
                Some(&(last,)) if found.len() == BUCKETS_PER_READ as usize => {
                    match self.direction {
                        Direction::Up => last.checked_add(1),
                        Direction::Down => last.checked_sub(1),
                    }
                }
                _ => None,
            };
            self.listed
                .extend(found.into_iter().map(|(bucket,)| bucket));
        }
        Ok(self.listed.pop_front())
    }
}

/// A row type a walk collects, and where its item sits in the log.
pub(crate) trait WalkRow:
    for<'frame, 'metadata> ::scylla::deserialize::row::DeserializeRow<'frame, 'metadata>
{
    /// What the store returns.
    type Item;
    fn into_item(self) -> Result<Self::Item>;
    fn position(item: &Self::Item) -> Seq;
}

impl WalkRow for InboxRow {
    type Item = Pending<Entry>;
    fn into_item(self) -> Result<Pending<Entry>> {
        self.into_entry()
    }
    fn position(pending: &Pending<Entry>) -> Seq {
        pending.item.seq
    }
}

impl WalkRow for MessageRow {
    type Item = Pending<HistoryMessage>;
    fn into_item(self) -> Result<Pending<HistoryMessage>> {
        self.into_message()
    }
    fn position(pending: &Pending<HistoryMessage>) -> Seq {
        pending.item.conv_seq
    }
}

/// One walk: the buckets to visit and the statement that reads one bucket
/// past a bound (`... WHERE key = ? AND bucket = ? AND seq > ? LIMIT ?`, or
/// `<` going down).
pub(crate) struct Walk<'a> {
    pub(crate) buckets: BucketWalk<'a>,
    pub(crate) read: &'a PreparedStatement,
    /// Rows strictly beyond this position, in the walk's direction.
    pub(crate) bound: i64,
}

impl Walk<'_> {
    /// Up to `limit` rows in the walk's order.
    pub(crate) async fn collect<R: WalkRow>(mut self, limit: usize) -> Result<Vec<R::Item>> {
        let mut items = Vec::new();
        while items.len() < limit {
            let Some(bucket) = self.buckets.next().await? else {
                break;
            };
            self.fill_from::<R>(bucket, limit, &mut items).await?;
        }
        Ok(items)
    }

    /// Reads `bucket` page by page until it runs out or `items` is full.
    async fn fill_from<R: WalkRow>(
        &self,
        bucket: i64,
        limit: usize,
        items: &mut Vec<R::Item>,
    ) -> Result<()> {
        loop {
            let bound = match items.last() {
                Some(last) => to_cql(R::position(last))?,
                None => self.bound,
            };
            let want = page_limit(limit - items.len());
            let key = self.buckets.key;
            let rows: Vec<R> = self
                .buckets
                .store
                .select(self.read, (key, bucket, bound, want))
                .await?;
            let full_page = rows.len() == want as usize;
            for row in rows {
                items.push(row.into_item()?);
            }
            if !full_page || items.len() >= limit {
                return Ok(());
            }
        }
    }
}

/// The newest seq of an inbox or log: the newest row of the newest listed
/// bucket (an older bucket if a listed one is empty, which an append that
/// failed after listing its bucket leaves, see `appends`).
pub(crate) async fn newest(
    mut buckets: BucketWalk<'_>,
    newest_in_bucket: &PreparedStatement,
) -> Result<Seq> {
    while let Some(bucket) = buckets.next().await? {
        let key = buckets.key;
        let row: Option<(i64,)> = buckets
            .store
            .select_one(newest_in_bucket, (key, bucket))
            .await?;
        if let Some((seq,)) = row {
            return from_cql(seq);
        }
    }
    Ok(0)
}
