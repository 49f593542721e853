//! The embedded store's writer thread: every write batch is committed here,
//! never on an async task. fjall holds its journal lock through the group
//! commit's fsync, so a commit on a tokio worker stalled that worker (with
//! two cores, half the runtime) for every fsync. Writes that queue up while
//! one commits are merged into one batch: one journal write for all of them,
//! except a write asked to go alone (a fence): later writes' fills then see
//! it committed.

use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Instant;

use fjall::{Database, OwnedWriteBatch};
use tokio::sync::oneshot;

use crate::group_commit::GroupCommit;
use crate::step_timing::note_duration;
use crate::{Error, Result};

/// Fills a batch with one write's inserts and removes.
pub(crate) type Fill<T> = Box<dyn FnOnce(&T, &mut OwnedWriteBatch) + Send>;

/// At most this many writes share one batch, so one commit stays short.
const MAX_WRITES_PER_BATCH: usize = 256;

struct Job<T> {
    fill: Fill<T>,
    /// Committed in a batch of its own.
    alone: bool,
    /// The write's group-commit ticket, or why the commit failed.
    done: oneshot::Sender<std::result::Result<u64, String>>,
}

/// Hands writes to the writer thread; joins it when dropped.
pub(crate) struct Writer<T> {
    jobs: Option<mpsc::Sender<Job<T>>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl<T: Send + Sync + 'static> Writer<T> {
    /// Starts the writer thread over `tables` of `db`.
    pub(crate) fn start(
        db: Database,
        tables: Arc<T>,
        commit: Arc<GroupCommit>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&db, tables.as_ref(), &commit, &queue))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Commits `fill`'s writes (to the journal's OS buffer and the
    /// memtable, not yet fsynced) and returns their group-commit ticket.
    pub(crate) async fn write(&self, fill: Fill<T>) -> Result<u64> {
        self.send(fill, false).await
    }

    /// As [`Writer::write`], in a batch of its own: every write queued after
    /// it runs its fill once this one is committed.
    pub(crate) async fn write_alone(&self, fill: Fill<T>) -> Result<u64> {
        self.send(fill, true).await
    }

    async fn send(&self, fill: Fill<T>, alone: bool) -> Result<u64> {
        let stopped = || Error::Unavailable("the store's writer stopped".into());
        let (done, answer) = oneshot::channel();
        self.jobs
            .as_ref()
            .ok_or_else(stopped)?
            .send(Job { fill, alone, done })
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(|message| Error::Unavailable(message.into()))
    }
}

impl<T> Drop for Writer<T> {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the store's writer thread panicked");
        }
    }
}

fn run<T>(db: &Database, tables: &T, commit: &GroupCommit, queue: &mpsc::Receiver<Job<T>>) {
    // A job that must go alone, taken off the queue while filling a batch.
    let mut held: Option<Job<T>> = None;
    while let Some(first) = held.take().or_else(|| queue.recv().ok()) {
        let mut jobs = vec![first];
        while !jobs[0].alone && jobs.len() < MAX_WRITES_PER_BATCH {
            match queue.try_recv() {
                Ok(job) if job.alone => {
                    held = Some(job);
                    break;
                }
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut batch = db.batch();
        let mut waiting = Vec::with_capacity(jobs.len());
        for job in jobs {
            (job.fill)(tables, &mut batch);
            waiting.push(job.done);
        }
        // One batch is atomic: its writes land together or not at all.
        let started = Instant::now();
        let committed = batch.commit();
        note_duration("commit", started.elapsed());
        let result = committed
            .map(|()| commit.ticket())
            .map_err(|err| format!("commit of a write batch failed: {err}"));
        for done in waiting {
            // A caller that gave up (deadline) no longer wants the answer.
            let _ = done.send(result.clone());
        }
    }
}
