//! One fan-out at a time per message: the send's own fan-out, a client's
//! retry of it, the retry worker and the audit's repair each take the
//! message's turn, so two of them can never both find a member's inbox
//! without the entry and both append it. A sender's lock is then needed only
//! for dedup, and a slow fan-out holds up nobody but retries of itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use proto::{ConvId, Seq};
use tokio::sync::OwnedMutexGuard;

type Key = (ConvId, Seq);

/// The turns of the messages being fanned out; a message's lock exists only
/// while someone holds or waits for it.
#[derive(Default)]
pub(crate) struct FanoutTurns {
    turns: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// The turn of one message; the fan-out holds it to its end.
pub(crate) struct Turn<'a> {
    turns: &'a FanoutTurns,
    key: Key,
    guard: Option<OwnedMutexGuard<()>>,
}

impl FanoutTurns {
    fn turns(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<tokio::sync::Mutex<()>>>> {
        // Only inserts and removes run under this lock: nothing half done
        // to recover from a panic.
        self.turns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the turn of message `conv_seq` of `conv`.
    pub(crate) async fn take(&self, conv: &ConvId, conv_seq: Seq) -> Turn<'_> {
        let key = (conv.clone(), conv_seq);
        let lock = Arc::clone(self.turns().entry(key.clone()).or_default());
        let guard = lock.lock_owned().await;
        Turn {
            turns: self,
            key,
            guard: Some(guard),
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut turns = self.turns.turns();
        // Waiters hold a clone (taken under this lock): none left, none coming.
        if turns
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            turns.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_turn_is_exclusive_per_message_and_forgotten_when_free() {
        let turns = FanoutTurns::default();
        let conv = ConvId::group("g1").expect("a valid id");
        let first = turns.take(&conv, 1).await;
        let other = turns.take(&conv, 2).await;
        let waiting = tokio::time::timeout(std::time::Duration::ZERO, turns.take(&conv, 1)).await;
        assert!(waiting.is_err(), "the same message waits");
        drop((first, other));
        assert!(turns.turns().is_empty());
        drop(turns.take(&conv, 1).await);
        assert!(turns.turns().is_empty());
    }
}
