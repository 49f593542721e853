//! Seq allocation as in WeChat's seqsvr: seqs come from memory, and a ceiling
//! is persisted in steps before any seq above the old ceiling is handed out,
//! so after a restart allocation resumes above everything handed out before.

use std::sync::Arc;

use proto::Seq;

use crate::{MessageStore, Result};

/// The allocation state of one key (an inbox or a conversation log). The
/// caller holds it under the lock that serializes that key's appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqCursor {
    /// The last seq handed out.
    current: Seq,
    /// The persisted ceiling: no seq above it has been handed out.
    ceiling: Seq,
}

impl SeqCursor {
    /// The last seq handed out (or the ceiling it resumed from).
    pub fn current(&self) -> Seq {
        self.current
    }
}

/// Hands out seqs per key, persisting ceilings `step` at a time.
#[derive(Clone)]
pub struct SeqAllocator {
    store: Arc<dyn MessageStore>,
    step: u64,
}

impl SeqAllocator {
    /// An allocator that persists a new ceiling every `step` seqs.
    pub fn new(store: Arc<dyn MessageStore>, step: u64) -> Self {
        SeqAllocator {
            store,
            step: step.max(1),
        }
    }

    /// Resumes a key from its persisted ceiling: the next seq is above it.
    pub async fn resume(&self, key: &str) -> Result<SeqCursor> {
        let ceiling = self.store.load_ceiling(key).await?;
        Ok(SeqCursor {
            current: ceiling,
            ceiling,
        })
    }

    /// The next seq of `key`; persists a higher ceiling first when needed.
    pub async fn next(&self, key: &str, cursor: &mut SeqCursor) -> Result<Seq> {
        let next = cursor.current + 1;
        if next > cursor.ceiling {
            let ceiling = cursor.current + self.step;
            self.store.store_ceiling(key, ceiling).await?;
            cursor.ceiling = ceiling;
        }
        cursor.current = next;
        Ok(next)
    }
}
