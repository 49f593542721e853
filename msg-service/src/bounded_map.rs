//! What a process remembers to spare the store a read, bounded: when full
//! it starts over, and each entry is read from the store once more. For
//! facts that do not go stale (a stored conversation) or that carry what
//! they hold for (an unread count, its marker).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A map of at most `cap` entries; past it, it is emptied.
pub(crate) struct BoundedMap<K, V> {
    map: Mutex<HashMap<K, V>>,
    cap: usize,
}

impl<K: Eq + Hash, V: Clone> BoundedMap<K, V> {
    pub(crate) fn new(cap: usize) -> Self {
        BoundedMap {
            map: Mutex::new(HashMap::new()),
            cap: cap.max(1),
        }
    }

    /// The value kept for `key`, if any.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.locked().get(key).cloned()
    }

    /// Keeps `value` for `key`, after emptying the map if it is full.
    pub(crate) fn insert(&self, key: K, value: V) {
        let mut map = self.locked();
        if map.len() >= self.cap {
            map.clear();
        }
        map.insert(key, value);
    }

    /// How many entries it keeps.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.locked().len()
    }

    fn locked(&self) -> MutexGuard<'_, HashMap<K, V>> {
        // Each entry is written whole: a panicking holder leaves none half done.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
