//! A bounded memory of facts that, once true, stay true (a conversation
//! stored, a bucket listed): a caller that finds one here skips the store
//! call that would establish it again.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A bounded set; when full it starts over (each fact is then established
/// once more, at the cost of one store call).
pub struct KnownSet<T> {
    known: Mutex<HashSet<T>>,
    cap: usize,
}

impl<T: Hash + Eq> KnownSet<T> {
    /// A set of at most `cap` facts (at least 1).
    pub fn new(cap: usize) -> Self {
        KnownSet {
            known: Mutex::new(HashSet::new()),
            cap: cap.max(1),
        }
    }

    /// Whether `fact` was recorded.
    pub fn contains(&self, fact: &T) -> bool {
        self.set().contains(fact)
    }

    /// Records `fact`: call only once it holds for good (durably stored).
    pub fn insert(&self, fact: T) {
        let mut known = self.set();
        if known.len() >= self.cap {
            known.clear();
        }
        known.insert(fact);
    }

    /// How many facts are recorded.
    pub fn len(&self) -> usize {
        self.set().len()
    }

    /// Whether no fact is recorded.
    pub fn is_empty(&self) -> bool {
        self.set().is_empty()
    }

    fn set(&self) -> MutexGuard<'_, HashSet<T>> {
        // The set holds no invariant a panicking holder could break.
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_fact_is_known_and_others_are_not() {
        let known = KnownSet::new(10);
        known.insert("alice:bob");
        assert!(known.contains(&"alice:bob"));
        assert!(!known.contains(&"alice:carol"));
    }

    #[test]
    fn a_full_set_starts_over_and_stays_within_its_cap() {
        let known = KnownSet::new(2);
        known.insert(1);
        known.insert(2);
        known.insert(3);
        assert!(known.contains(&3));
        assert!(!known.contains(&1));
        assert!(known.len() <= 2);
    }
}
