//! Appends without a batch log: the rows that point at a message or an
//! inbox entry are written first, the row itself last, and a pointer is
//! trusted on read only once the row it points at is found.
//!
//! Why not a logged batch: on Cassandra 3.11 the coordinator writes the
//! batch log to two other nodes at consistency TWO, and picks them among
//! the nodes its failure detector still thinks alive. For the ~18 s after a
//! node dies and before gossip convicts it, one of the two is that node on
//! every coordinator of a 3-node cluster: every logged batch then times out
//! (`WriteTimeout`, consistency TWO) although two replicas answer (issue 17).
//! Plain writes at the configured level need only a quorum of replicas.
//!
//! What stays all-or-nothing, as the trait promises, after any failure
//! (a coordinator or this process dying between two writes included):
//! - a message: its dedup record, its bucket's entry and its fan-out
//!   intent, then its row (an intent whose message is missing is skipped
//!   by recovery). A
//!   dedup record whose message row is missing reads as none (the retry of
//!   the send stores it, at the same seq or a new one, and the record is
//!   overwritten); an empty listed bucket is skipped by every walk.
//! - an inbox entry: its index row and its bucket's entry, then its row. An
//!   index row whose entry is missing reads as none (the entry is appended
//!   again and the index overwritten).
//!
//! Every write is idempotent (plain inserts of the same values), so the
//! driver may retry each on another node, or hedge it there. All the rows of
//! one append carry one client timestamp, taken as the append starts (see
//! `ScyllaStore::stamp`): a fence made after that shadows every one of them,
//! whenever it lands.

use proto::{ClientMsgId, ConvId, Entry, HistoryMessage, Seq, UserId};

use super::buckets::{bucket_of, from_cql, to_cql};
use super::bulkhead::Class;
use super::rows::{self, DedupRow};
use super::store::{ScyllaStore, Stamp};
use crate::Result;
use crate::model::{MessageRef, RetryItem};

impl ScyllaStore {
    /// The dedup record (with the members), the bucket's entry and the
    /// fan-out intent (together), then the row.
    pub(crate) async fn write_message(
        &self,
        msg: &HistoryMessage,
        intent: &RetryItem,
        stamp: Stamp,
    ) -> Result<()> {
        let st = self.statements();
        let conv_seq = to_cql(msg.conv_seq)?;
        let bucket = bucket_of(conv_seq);
        let (conv, from, id) = (
            msg.conv_id.as_str(),
            msg.from.as_str(),
            msg.client_msg_id.as_str(),
        );
        let members: Vec<&str> = intent.members.iter().map(|m| m.as_str()).collect();
        let dedup = (from, id, conv, conv_seq, members, self.dedup_ttl());
        tokio::try_join!(
            self.execute_at(stamp, Class::Write, &st.insert_dedup, dedup),
            self.execute_at(
                stamp,
                Class::Write,
                &st.insert_message_bucket,
                (conv, bucket)
            ),
            self.write_intent(intent, stamp),
        )?;
        let row = rows::message_values(msg, bucket)?;
        self.execute_at(stamp, Class::Write, &st.insert_message, row)
            .await?;
        Ok(())
    }

    /// The index row and the bucket's entry (together), then the row.
    pub(crate) async fn write_inbox_entry(
        &self,
        user: &UserId,
        entry: &Entry,
        stamp: Stamp,
    ) -> Result<()> {
        let st = self.statements();
        let seq = to_cql(entry.seq)?;
        let conv_seq = to_cql(entry.message.conv_seq)?;
        let (bucket, u) = (bucket_of(seq), user.as_str());
        let conv = entry.message.conv_id.as_str();
        let index = (u, conv, bucket_of(conv_seq), conv_seq, seq);
        tokio::try_join!(
            self.execute_at(stamp, Class::Write, &st.insert_inbox_index, index),
            self.execute_at(stamp, Class::Write, &st.insert_inbox_bucket, (u, bucket)),
        )?;
        let row = rows::inbox_values(user, entry, bucket)?;
        self.execute_at(stamp, Class::Write, &st.insert_inbox, row)
            .await?;
        Ok(())
    }

    /// Where a sender's message is, if its row is stored.
    pub(crate) async fn stored_dedup(
        &self,
        sender: &UserId,
        id: &ClientMsgId,
    ) -> Result<Option<MessageRef>> {
        let st = self.statements();
        let values = (sender.as_str(), id.as_str());
        let Some(row) = self.select_one::<DedupRow>(&st.dedup, values).await? else {
            return Ok(None);
        };
        let found = row.into_ref()?;
        let stored = self.message_stored(&found.conv_id, found.conv_seq).await?;
        Ok(stored.then_some(found))
    }

    pub(crate) async fn message_stored(&self, conv: &ConvId, conv_seq: Seq) -> Result<bool> {
        let conv_seq = to_cql(conv_seq)?;
        let values = (conv.as_str(), bucket_of(conv_seq), conv_seq);
        let statement = &self.statements().message_stored;
        let row: Option<(i64,)> = self.select_one(statement, values).await?;
        Ok(row.is_some())
    }

    /// The inbox seq of a message in a user's inbox, if its entry is stored.
    pub(crate) async fn stored_inbox_seq(
        &self,
        user: &UserId,
        conv: &ConvId,
        conv_seq: i64,
    ) -> Result<Option<Seq>> {
        let st = self.statements();
        let values = (user.as_str(), conv.as_str(), bucket_of(conv_seq), conv_seq);
        let Some((seq,)) = self.select_one::<(i64,)>(&st.inbox_seq_of, values).await? else {
            return Ok(None);
        };
        let values = (user.as_str(), bucket_of(seq), seq);
        let row: Option<(i64,)> = self.select_one(&st.inbox_entry_stored, values).await?;
        row.map(|_| from_cql(seq)).transpose()
    }
}
