//! Fences of the embedded store: per log, the last writer that fenced it
//! and every seq range fenced off, on disk. A fence removes what is in its
//! range and is committed alone, so an append whose batch is filled after
//! it finds it and writes nothing: the uncertain write of an earlier writer
//! never becomes visible. (The embedded store belongs to one process: only
//! a write held back by a test double can land so late.)

use proto::{Entry, HistoryMessage, Seq};
use serde::{Deserialize, Serialize};

use super::{EmbeddedStore, SEP, Tables, index_key, seq_range};
use crate::model::LogId;
use crate::{Error, Result};

/// What is kept of one log's fences.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Fence {
    /// The writer that fenced the log last.
    writer: String,
    /// Every range `(after, up_to]` fenced off.
    ranges: Vec<(Seq, Seq)>,
}

/// The key of a log's fence: its kind, then its id.
pub(super) fn fence_key(log: &LogId) -> Vec<u8> {
    let (kind, id) = match log {
        LogId::Inbox(user) => (b'i', user.as_str()),
        LogId::Conversation(conv) => (b'c', conv.as_str()),
    };
    let mut key = vec![kind, SEP];
    key.extend_from_slice(id.as_bytes());
    key
}

fn read_fence(tables: &Tables, key: &[u8]) -> Result<Option<Fence>> {
    tables
        .fences
        .get(key)?
        .map(|value| Ok(serde_json::from_slice(&value)?))
        .transpose()
}

/// Whether `seq` of the log under `key` is fenced off. A fence that cannot
/// be read counts as none: the store's own reads are failing then.
pub(super) fn fenced(tables: &Tables, key: &[u8], seq: Seq) -> bool {
    match read_fence(tables, key) {
        Ok(Some(fence)) => fence
            .ranges
            .iter()
            .any(|&(after, up_to)| seq > after && seq <= up_to),
        Ok(None) => false,
        Err(err) => {
            tracing::error!(error = %err, "a log's fence is unreadable; the write goes ahead");
            false
        }
    }
}

/// Removes the log's entries (and an inbox's index rows) in `(after, up_to]`.
fn remove_range(
    tables: &Tables,
    batch: &mut fjall::OwnedWriteBatch,
    log: &LogId,
    after: Seq,
    up_to: Seq,
) -> Result<()> {
    match log {
        LogId::Inbox(user) => {
            for guard in tables
                .inbox
                .range(seq_range(user.as_str(), after + 1..=up_to))
            {
                let (key, value) = guard.into_inner()?;
                let entry: Entry = serde_json::from_slice(&value)?;
                let message = &entry.message;
                batch.remove(&tables.inbox, key);
                batch.remove(
                    &tables.inbox_index,
                    index_key(user, &message.conv_id, message.conv_seq),
                );
            }
        }
        LogId::Conversation(conv) => {
            for guard in tables
                .messages
                .range(seq_range(conv.as_str(), after + 1..=up_to))
            {
                let (key, value) = guard.into_inner()?;
                let _: HistoryMessage = serde_json::from_slice(&value)?;
                // Its dedup record stays; it counts only while the message is there.
                batch.remove(&tables.messages, key);
            }
        }
    }
    Ok(())
}

impl EmbeddedStore {
    pub(super) async fn fence(
        &self,
        log: &LogId,
        writer: &str,
        after: Seq,
        up_to: Seq,
    ) -> Result<()> {
        let key = fence_key(log);
        let last = self.read(move |t| read_fence(t, &key)).await?;
        if last.is_some_and(|fence| fence.writer == writer) {
            // Fenced by this writer already: nothing of an earlier one to fence.
            return Ok(());
        }
        let (log, writer) = (log.clone(), writer.to_owned());
        let (done, outcome) = tokio::sync::oneshot::channel();
        let fill = move |t: &Tables, b: &mut fjall::OwnedWriteBatch| {
            let _ = done.send(fill_fence(t, b, &log, writer, after, up_to));
        };
        let ticket = self.writer.write_alone(Box::new(fill)).await?;
        outcome
            .await
            .map_err(|_| Error::Unavailable("the store's writer dropped a fence".into()))??;
        self.commit.wait(ticket).await
    }
}

fn fill_fence(
    tables: &Tables,
    batch: &mut fjall::OwnedWriteBatch,
    log: &LogId,
    writer: String,
    after: Seq,
    up_to: Seq,
) -> Result<()> {
    let key = fence_key(log);
    let mut fence = read_fence(tables, &key)?.unwrap_or_default();
    if fence.writer == writer || up_to <= after {
        return Ok(());
    }
    remove_range(tables, batch, log, after, up_to)?;
    fence.writer = writer;
    fence.ranges.push((after, up_to));
    batch.insert(&tables.fences, key, serde_json::to_vec(&fence)?);
    Ok(())
}
