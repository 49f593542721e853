//! A test double for fault injection: a store that forwards to a real one
//! but can be told to fail or stall its reads or its writes, and reports
//! how many calls are stalled so that tests await that instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::watch;

use crate::layered::{CallKind, StoreCall};
use crate::{Error, MessageStore, Result};

/// What a class of calls does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forwarded to the real store.
    #[default]
    Pass,
    /// Fails at once with a retryable `Unavailable`.
    Fail,
    /// Waits until the fault is changed, then does what the new one says.
    Stall,
}

/// The injected failure.
#[derive(Debug, thiserror::Error)]
#[error("injected store fault")]
pub struct Injected;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Faults {
    reads: Fault,
    pages: Fault,
    writes: Fault,
}

/// Which fault a call obeys.
#[derive(Debug, Clone, Copy)]
enum Class {
    Read,
    Page,
    Write,
}

/// A [`MessageStore`] with switchable faults on reads and writes.
pub struct FaultyStore {
    inner: Arc<dyn MessageStore>,
    faults: watch::Sender<Faults>,
    stalled: watch::Sender<usize>,
    /// Calls that reached this store, faulty or not.
    calls: AtomicUsize,
    /// Every Nth inbox append fails before writing (0: none).
    fail_inbox_every: AtomicUsize,
    inbox_appends: AtomicUsize,
}

impl FaultyStore {
    /// Forwards everything to `inner` until told otherwise.
    pub fn new(inner: Arc<dyn MessageStore>) -> Self {
        FaultyStore {
            inner,
            faults: watch::Sender::new(Faults::default()),
            stalled: watch::Sender::new(0),
            calls: AtomicUsize::new(0),
            fail_inbox_every: AtomicUsize::new(0),
            inbox_appends: AtomicUsize::new(0),
        }
    }

    /// From now on every `n`th inbox append fails before writing (a fan-out
    /// that fails part-way); 0 turns it off.
    pub fn set_fail_inbox_every(&self, n: usize) {
        self.fail_inbox_every.store(n, Ordering::SeqCst);
    }

    /// What reads other than pages of a conversation log do from now on
    /// (stalled calls re-check).
    pub fn set_reads(&self, fault: Fault) {
        self.faults.send_modify(|f| f.reads = fault);
    }

    /// What pages of a conversation log (history) do from now on.
    pub fn set_pages(&self, fault: Fault) {
        self.faults.send_modify(|f| f.pages = fault);
    }

    /// What writes do from now on.
    pub fn set_writes(&self, fault: Fault) {
        self.faults.send_modify(|f| f.writes = fault);
    }

    /// Calls that reached this store so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` calls are stalled.
    pub async fn stalled_at_least(&self, n: usize) {
        let mut stalled = self.stalled.subscribe();
        // The sender lives in `self`: the wait cannot fail while borrowed.
        let _ = stalled.wait_for(|s| *s >= n).await;
    }

    /// What happens around each store call: the fault of its class, and
    /// for inbox appends the every-Nth failure.
    async fn around<T, F, Fut>(&self, call: StoreCall, mut run: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.gate(match call.kind {
            CallKind::Read => Class::Read,
            CallKind::Page => Class::Page,
            CallKind::Write => Class::Write,
        })
        .await?;
        if call.name == "store.append_inbox" && self.this_inbox_append_fails() {
            return Err(Error::unavailable(Injected));
        }
        run().await
    }

    /// Counts an inbox append; whether it is an Nth one set to fail.
    fn this_inbox_append_fails(&self) -> bool {
        let every = self.fail_inbox_every.load(Ordering::SeqCst);
        let n = self.inbox_appends.fetch_add(1, Ordering::SeqCst) + 1;
        every > 0 && n.is_multiple_of(every)
    }

    async fn gate(&self, class: Class) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let mut faults = self.faults.subscribe();
        let pick = |f: &Faults| match class {
            Class::Read => f.reads,
            Class::Page => f.pages,
            Class::Write => f.writes,
        };
        loop {
            let fault = pick(&faults.borrow_and_update());
            match fault {
                Fault::Pass => return Ok(()),
                Fault::Fail => return Err(Error::unavailable(Injected)),
                Fault::Stall => {
                    self.stalled.send_modify(|s| *s += 1);
                    let changed = faults.changed().await;
                    self.stalled.send_modify(|s| *s -= 1);
                    if changed.is_err() {
                        return Err(Error::unavailable(Injected));
                    }
                }
            }
        }
    }
}

crate::layered::layered_store!(FaultyStore);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{entry, user};
    use crate::{Durability, EmbeddedStore};
    use proto::{ConvId, Seq};

    #[tokio::test]
    async fn every_nth_inbox_append_fails_before_writing_when_asked() {
        let dir = tempfile::tempdir().expect("a temporary dir");
        let embedded = EmbeddedStore::open(dir.path(), Durability::OsBuffers).expect("a store");
        let store = FaultyStore::new(Arc::new(embedded));
        let (u, peer) = (user("u"), user("p"));
        let conv = ConvId::dm(&u, &peer).expect("a dm id");
        store.set_fail_inbox_every(3);
        let mut failed = Vec::new();
        for seq in 1..=6 {
            if store
                .append_inbox(&u, &entry(seq, &conv, &peer))
                .await
                .is_err()
            {
                failed.push(seq);
            }
        }
        assert_eq!(failed, [3, 6]);
        let stored: Vec<Seq> = store
            .read_inbox(&u, 0, 10)
            .await
            .expect("a read")
            .iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(stored, [1, 2, 4, 5], "the failed ones were not written");
        store.set_fail_inbox_every(0);
        assert!(
            store
                .append_inbox(&u, &entry(7, &conv, &peer))
                .await
                .is_ok()
        );
    }
}
