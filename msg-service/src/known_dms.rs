//! The direct conversations known to exist, so that a DM's send does not
//! read the store to ask again: a conversation is never deleted, so once
//! the store has it, it stays known.

use std::collections::HashSet;
use std::sync::Mutex;

use proto::ConvId;

/// A bounded set of conversation ids; when full it starts over (the next
/// send of each DM reads the store once more).
pub(crate) struct KnownDms {
    known: Mutex<HashSet<ConvId>>,
    cap: usize,
}

impl KnownDms {
    pub(crate) fn new(cap: usize) -> Self {
        KnownDms {
            known: Mutex::new(HashSet::new()),
            cap: cap.max(1),
        }
    }

    /// Whether `conv` was recorded as stored.
    pub(crate) fn contains(&self, conv: &ConvId) -> bool {
        self.set().contains(conv)
    }

    /// Records that the store has `conv` (call only once it is durable).
    pub(crate) fn insert(&self, conv: &ConvId) {
        let mut known = self.set();
        if known.len() >= self.cap {
            known.clear();
        }
        known.insert(conv.clone());
    }

    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<ConvId>> {
        // The set holds no invariant a panicking holder could break.
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proto::UserId;

    use super::*;

    fn dm(a: &str, b: &str) -> ConvId {
        ConvId::dm(&UserId::parse(a).unwrap(), &UserId::parse(b).unwrap()).unwrap()
    }

    #[test]
    fn a_recorded_conversation_is_known_and_others_are_not() {
        let known = KnownDms::new(10);
        known.insert(&dm("alice", "bob"));
        assert!(known.contains(&dm("bob", "alice")));
        assert!(!known.contains(&dm("alice", "carol")));
    }

    #[test]
    fn a_full_set_starts_over_and_stays_within_its_cap() {
        let known = KnownDms::new(2);
        known.insert(&dm("a1", "b1"));
        known.insert(&dm("a2", "b2"));
        known.insert(&dm("a3", "b3"));
        assert!(known.contains(&dm("a3", "b3")));
        assert!(!known.contains(&dm("a1", "b1")));
        assert!(known.set().len() <= 2);
    }
}
