//! Message bodies too large for a batch: written once, alone, before the
//! writes that make their message or inbox entry visible (see `appends`).
//!
//! Cassandra warns on a batch over 5 KiB (`batch_size_warn_threshold_in_kb`)
//! and fails one over 50 KiB; a 16 KiB body in the batch of its row made
//! every large message warn. So a body over [`INLINE_BODY_MAX`] goes to
//! `message_bodies`, keyed by the message's identity (conversation, conv_seq,
//! sender, client_msg_id), in a plain idempotent INSERT; the visible row
//! written after it has a null body. (Appends were logged batches then; they
//! are plain writes now, and the split still keeps rows small.) A reader
//! that finds a null body reads it from `message_bodies`.
//!
//! Atomicity and order: `appends` keeps the visible row, the row that finds
//! it again and its bucket all-or-nothing to readers. The body is written first,
//! at the same consistency level, so any row a reader can see has its body
//! already stored. A crash between the two leaves only an unreferenced body
//! row, which no reader finds (nothing points to it) and which the retry of
//! the same append writes again unchanged. A body of another message at the
//! same conv_seq (a write that never became visible) has another sender or
//! client_msg_id, so it is never read in place of this one.

use proto::{Entry, HistoryMessage};

use super::buckets::{bucket_of, to_cql};
use super::bulkhead::Class;
use super::store::{ScyllaStore, Stamp};
use crate::{Error, Result};

/// The largest body kept inline, in its row and its batch: with the ids
/// and the other rows of the batch, far under the 5 KiB warning threshold.
pub(crate) const INLINE_BODY_MAX: usize = 2 * 1024;

/// Whether `body` travels in its row (and its batch).
pub(crate) fn is_inline(body: &str) -> bool {
    body.len() <= INLINE_BODY_MAX
}

/// The body a visible row carries: itself, or null when stored apart.
pub(crate) fn inline_body(body: &str) -> Option<&str> {
    is_inline(body).then_some(body)
}

/// A message read from a row, whose body may still be in `message_bodies`.
pub(crate) struct Pending<T> {
    pub(crate) item: T,
    /// The row's body was null: read it from `message_bodies`.
    pub(crate) body_apart: bool,
}

/// What holds a message whose body a read may fill in.
pub(crate) trait HoldsMessage {
    fn message_mut(&mut self) -> &mut HistoryMessage;
}

impl HoldsMessage for HistoryMessage {
    fn message_mut(&mut self) -> &mut HistoryMessage {
        self
    }
}

impl HoldsMessage for Entry {
    fn message_mut(&mut self) -> &mut HistoryMessage {
        &mut self.message
    }
}

/// The key of a body row, in `PUT_BODY`/`BODY` order.
fn body_key(msg: &HistoryMessage) -> Result<(&str, i64, i64, &str, &str)> {
    let conv_seq = to_cql(msg.conv_seq)?;
    Ok((
        msg.conv_id.as_str(),
        bucket_of(conv_seq),
        conv_seq,
        msg.from.as_str(),
        msg.client_msg_id.as_str(),
    ))
}

impl ScyllaStore {
    /// Stores `msg`'s body apart if it is too large to be inline; call it
    /// before the writes that make the message's row visible.
    pub(crate) async fn put_body_apart(&self, msg: &HistoryMessage, stamp: Stamp) -> Result<()> {
        if is_inline(&msg.body) {
            return Ok(());
        }
        let (conv, bucket, conv_seq, sender, id) = body_key(msg)?;
        let values = (conv, bucket, conv_seq, sender, id, msg.body.as_str());
        let statement = &self.statements().put_body;
        self.execute_at(stamp, Class::Write, statement, values)
            .await?;
        Ok(())
    }

    /// The items, with every body that was stored apart read back in.
    pub(crate) async fn fill_bodies<T: HoldsMessage>(
        &self,
        pending: Vec<Pending<T>>,
    ) -> Result<Vec<T>> {
        let mut items = Vec::with_capacity(pending.len());
        for Pending {
            mut item,
            body_apart,
        } in pending
        {
            if body_apart {
                let message = item.message_mut();
                message.body = self.body_of(message).await?;
            }
            items.push(item);
        }
        Ok(items)
    }

    async fn body_of(&self, msg: &HistoryMessage) -> Result<String> {
        let statement = &self.statements().body;
        let row: Option<(String,)> = self.select_one(statement, body_key(msg)?).await?;
        // Written before its row became visible, at the same consistency
        // level: missing only if a weaker level was allowed. Retryable.
        row.map(|(body,)| body).ok_or_else(|| {
            Error::Unavailable(
                format!(
                    "the body of {}#{} is not readable yet",
                    msg.conv_id, msg.conv_seq
                )
                .into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_up_to_two_kib_stay_inline_and_larger_ones_are_stored_apart() {
        assert_eq!(inline_body("hello"), Some("hello"));
        let edge = "x".repeat(INLINE_BODY_MAX);
        assert_eq!(inline_body(&edge), Some(edge.as_str()));
        let over = "x".repeat(INLINE_BODY_MAX + 1);
        assert_eq!(inline_body(&over), None);
        assert_eq!(inline_body(&"x".repeat(proto::MAX_BODY_BYTES)), None);
    }
}
