//! The inbox cache: the newest entries of each inbox, with the lowest seq the
//! cached run covers. It is written after the store, in order, so it never
//! shows what the store does not have and never shows a hole.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use proto::{Entry, Seq, UserId};

use crate::Result;

/// A cache of the newest entries of each inbox.
#[async_trait]
pub trait InboxCache: Send + Sync + 'static {
    /// Adds the entry just written to the store. `previous` is the seq the
    /// inbox's allocator handed out just before this one: the cached run is
    /// extended only when its newest entry is that one; otherwise (an entry
    /// the cache missed, a restart, a reordering) the run restarts at this
    /// entry, so the cache never holds a hole.
    async fn append(&self, user: &UserId, previous: Seq, entry: &Entry) -> Result<()>;
    /// Entries with `seq > after` and `seq <= up_to`, ascending, at most
    /// `limit`; `None` when the cache does not cover the whole range.
    async fn read(
        &self,
        user: &UserId,
        after: Seq,
        up_to: Seq,
        limit: usize,
    ) -> Result<Option<Vec<Entry>>>;
    /// Forgets an inbox (after a failed write, so reads go to the store).
    async fn invalidate(&self, user: &UserId) -> Result<()>;
    /// Whatever the cache holds of an inbox with `seq <= up_to`, newest
    /// first, at most `limit` (empty when nothing): the degraded answer when
    /// the store is down, which may miss older entries.
    async fn newest(&self, user: &UserId, up_to: Seq, limit: usize) -> Result<Vec<Entry>>;
}

/// The cached tail of one inbox.
#[derive(Debug, Default)]
struct CachedInbox {
    /// Every entry with `seq >= covers_from` (up to the newest) is in `entries`.
    covers_from: Seq,
    entries: VecDeque<Entry>,
}

impl CachedInbox {
    fn push(&mut self, entry: Entry, per_inbox: usize) {
        if self.entries.is_empty() {
            self.covers_from = entry.seq;
        }
        self.entries.push_back(entry);
        while self.entries.len() > per_inbox {
            if let Some(evicted) = self.entries.pop_front() {
                self.covers_from = evicted.seq + 1;
            }
        }
    }

    fn read(&self, after: Seq, up_to: Seq, limit: usize) -> Option<Vec<Entry>> {
        let newest = self.entries.back().map_or(0, |e| e.seq);
        if after.saturating_add(1) < self.covers_from || newest < up_to {
            return None;
        }
        let start = self.entries.partition_point(|e| e.seq <= after);
        let entries = self.entries.range(start..);
        Some(
            entries
                .take_while(|e| e.seq <= up_to)
                .take(limit)
                .cloned()
                .collect(),
        )
    }
}

/// The in-process inbox cache: bounded per inbox and in the number of inboxes.
pub struct InProcessCache {
    inboxes: Mutex<HashMap<UserId, CachedInbox>>,
    per_inbox: usize,
    max_inboxes: usize,
}

impl InProcessCache {
    /// A cache of at most `per_inbox` entries for at most `max_inboxes` inboxes.
    pub fn new(per_inbox: usize, max_inboxes: usize) -> Self {
        InProcessCache {
            inboxes: Mutex::new(HashMap::new()),
            per_inbox: per_inbox.max(1),
            max_inboxes: max_inboxes.max(1),
        }
    }

    fn inboxes(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, CachedInbox>> {
        // A panic while holding this lock cannot leave a half-written inbox
        // that reads would trust more than the store: recover the map.
        self.inboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for InProcessCache {
    fn default() -> Self {
        InProcessCache::new(200, 100_000)
    }
}

#[async_trait]
impl InboxCache for InProcessCache {
    async fn append(&self, user: &UserId, previous: Seq, entry: &Entry) -> Result<()> {
        let mut inboxes = self.inboxes();
        if let Some(cached) = inboxes.get_mut(user) {
            let follows = |last: &Entry| last.seq == previous && last.seq < entry.seq;
            if !cached.entries.back().is_some_and(follows) {
                cached.entries.clear();
            }
            cached.push(entry.clone(), self.per_inbox);
            return Ok(());
        }
        if inboxes.len() >= self.max_inboxes {
            // Evict any one inbox: its readers fall back to the store.
            if let Some(victim) = inboxes.keys().next().cloned() {
                inboxes.remove(&victim);
            }
        }
        let mut cached = CachedInbox::default();
        cached.push(entry.clone(), self.per_inbox);
        inboxes.insert(user.clone(), cached);
        Ok(())
    }

    async fn read(
        &self,
        user: &UserId,
        after: Seq,
        up_to: Seq,
        limit: usize,
    ) -> Result<Option<Vec<Entry>>> {
        Ok(self
            .inboxes()
            .get(user)
            .and_then(|c| c.read(after, up_to, limit)))
    }

    async fn invalidate(&self, user: &UserId) -> Result<()> {
        self.inboxes().remove(user);
        Ok(())
    }

    async fn newest(&self, user: &UserId, up_to: Seq, limit: usize) -> Result<Vec<Entry>> {
        Ok(self.inboxes().get(user).map_or_else(Vec::new, |c| {
            c.entries
                .iter()
                .rev()
                .filter(|e| e.seq <= up_to)
                .take(limit)
                .cloned()
                .collect()
        }))
    }
}
