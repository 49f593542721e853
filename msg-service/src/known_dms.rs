//! The direct conversations known to exist, so that a DM's send does not
//! read the store to ask again: a conversation is never deleted, so once
//! the store has it, it stays known.

use proto::ConvId;

use crate::bounded_map::BoundedMap;

/// A bounded set of conversation ids; when full it starts over (the next
/// send of each DM reads the store once more).
pub(crate) struct KnownDms {
    known: BoundedMap<ConvId, ()>,
}

impl KnownDms {
    pub(crate) fn new(cap: usize) -> Self {
        KnownDms {
            known: BoundedMap::new(cap),
        }
    }

    /// Whether `conv` was recorded as stored.
    pub(crate) fn contains(&self, conv: &ConvId) -> bool {
        self.known.get(conv).is_some()
    }

    /// Records that the store has `conv` (call only once it is durable).
    pub(crate) fn insert(&self, conv: &ConvId) {
        self.known.insert(conv.clone(), ());
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
        assert!(known.known.len() <= 2);
    }
}
