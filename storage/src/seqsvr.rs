//! Seq allocation as in WeChat's seqsvr: seqs come from memory, and a ceiling
//! is persisted in steps before any seq above the old ceiling is handed out,
//! so after a restart allocation resumes above everything handed out before.

use std::sync::Arc;

use proto::Seq;

use crate::{Error, MessageStore, Result};

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
        if cursor.current >= cursor.ceiling {
            self.raise_ceiling(key, cursor).await?;
        }
        cursor.current += 1;
        Ok(cursor.current)
    }

    /// Moves the persisted ceiling one step up from the one the cursor knows.
    /// If another writer moved it meanwhile (a second instance serving the
    /// same key), resumes above the ceiling found and tries once more: the
    /// range between is the other writer's. A second conflict is returned.
    async fn raise_ceiling(&self, key: &str, cursor: &mut SeqCursor) -> Result<()> {
        let wanted = cursor.current.saturating_add(self.step);
        match self.store.swap_ceiling(key, cursor.ceiling, wanted).await {
            Ok(()) => {
                cursor.ceiling = wanted;
                return Ok(());
            }
            Err(Error::Conflict(reason)) => {
                tracing::warn!(key, %reason, "seq ceiling moved by another writer; resuming above it");
            }
            Err(err) => return Err(err),
        }
        let found = self.store.load_ceiling(key).await?;
        // `max`: a ceiling is never below a seq handed out under it, but if
        // it ever were, this still never goes back.
        let current = found.max(cursor.current);
        let wanted = current.saturating_add(self.step);
        self.store.swap_ceiling(key, found, wanted).await?;
        *cursor = SeqCursor {
            current,
            ceiling: wanted,
        };
        Ok(())
    }
}
