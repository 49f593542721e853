//! Striped async locks: serialize work per key (a sender) without a lock
//! object per key.

use std::hash::{BuildHasher, Hash, RandomState};

use tokio::sync::{Mutex, MutexGuard};

/// A fixed set of locks; a key always maps to the same one.
pub(crate) struct Stripes {
    locks: Vec<Mutex<()>>,
    hasher: RandomState,
}

impl Stripes {
    pub(crate) fn new(count: usize) -> Self {
        Stripes {
            locks: (0..count.max(1)).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Locks the stripe of `key`.
    pub(crate) async fn lock(&self, key: &impl Hash) -> MutexGuard<'_, ()> {
        let index = self.hasher.hash_one(key) as usize % self.locks.len();
        self.locks[index].lock().await
    }
}
