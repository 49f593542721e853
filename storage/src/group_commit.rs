//! Group commit: writers land in fjall's journal, then wait for one shared
//! fsync that covers every write made before it. N concurrent appends cost
//! about one fsync, not N.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Instant;

use fjall::{Database, PersistMode};
use tokio::sync::watch;

use crate::step_timing::note_duration;
use crate::{Error, Result};

/// What the syncer has made durable so far.
#[derive(Debug, Clone, Copy, Default)]
struct Synced {
    /// Every write with a ticket up to this one is durable.
    ticket: u64,
    /// An fsync failed: fjall poisons the database, so nothing more is durable.
    failed: bool,
    /// How many fsyncs ran (to show that appends share them).
    fsyncs: u64,
}

/// Hands out write tickets and waits for the fsync that covers them.
pub(crate) struct GroupCommit {
    /// The ticket of the last finished write.
    written: Arc<AtomicU64>,
    /// Wakes the syncer; dropping it stops the syncer.
    wake: Option<mpsc::Sender<()>>,
    synced: watch::Receiver<Synced>,
    /// Joined on drop, so the database (and its lock file) is released by
    /// the time the store is gone and the data dir can be opened again.
    syncer: Option<thread::JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the syncer thread; it stops when this value is dropped.
    pub(crate) fn start(db: Database) -> std::io::Result<Self> {
        let written = Arc::new(AtomicU64::new(0));
        let (wake, woken) = mpsc::channel();
        let (synced_tx, synced) = watch::channel(Synced::default());
        let counter = Arc::clone(&written);
        let syncer = thread::Builder::new()
            .name("store-syncer".into())
            .spawn(move || run_syncer(&db, &counter, &woken, &synced_tx))?;
        Ok(GroupCommit {
            written,
            wake: Some(wake),
            synced,
            syncer: Some(syncer),
        })
    }

    /// Call after a write has landed in the journal: the returned ticket
    /// is covered by the next fsync that starts from now on.
    pub(crate) fn ticket(&self) -> u64 {
        self.written.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// How many group fsyncs have run.
    pub(crate) fn fsyncs(&self) -> u64 {
        self.synced.borrow().fsyncs
    }

    /// Waits until the write with `ticket` is durable.
    pub(crate) async fn wait(&self, ticket: u64) -> Result<()> {
        // Covered already (another write's wait ran the fsync): no wake-up.
        let synced = *self.synced.borrow();
        if synced.ticket >= ticket && !synced.failed {
            return Ok(());
        }
        // A send error means the syncer is gone; the wait below reports it.
        if let Some(wake) = &self.wake {
            let _ = wake.send(());
        }
        let mut synced = self.synced.clone();
        let state = synced
            .wait_for(|s| s.ticket >= ticket || s.failed)
            .await
            .map_err(|_| Error::Unavailable("the store's syncer stopped".into()))?;
        if state.failed {
            return Err(Error::Unavailable("an fsync of the store failed".into()));
        }
        Ok(())
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(syncer) = self.syncer.take()
            && syncer.join().is_err()
        {
            tracing::error!("the store's syncer thread panicked");
        }
    }
}

fn run_syncer(
    db: &Database,
    written: &AtomicU64,
    woken: &mpsc::Receiver<()>,
    synced: &watch::Sender<Synced>,
) {
    while woken.recv().is_ok() {
        // Every wake-up queued so far is served by this one fsync.
        while woken.try_recv().is_ok() {}
        let target = written.load(Ordering::Acquire);
        if synced.borrow().ticket >= target {
            continue;
        }
        let started = Instant::now();
        let persisted = db.persist(PersistMode::SyncData);
        note_duration("fsync", started.elapsed());
        match persisted {
            Ok(()) => synced.send_modify(|s| {
                s.ticket = target;
                s.fsyncs += 1;
            }),
            Err(err) => {
                tracing::error!(error = %err, "fsync of the store failed");
                synced.send_modify(|s| s.failed = true);
                return;
            }
        }
    }
}
