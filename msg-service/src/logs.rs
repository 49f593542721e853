//! One writer per log: appends to one inbox (or one conversation log) are
//! serialized, each gets the next seq from the seqsvr allocator, and a read
//! never sees past the log's visible head, which only moves once the entry
//! under it is durable. The writer lock is held while an entry is logged, not
//! through the fsync, so one fsync can serve many appends of the same log.
//! Different logs proceed in parallel.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use proto::Seq;
use storage::{SeqAllocator, SeqCursor};
use tokio::sync::OnceCell;

use crate::Result;

/// The state of one log.
#[derive(Default)]
struct Log {
    /// The highest seq whose entry (and every lower one) is durable.
    head: OnceCell<AtomicU64>,
    /// The allocator cursor; holding this lock makes the caller the writer.
    writer: tokio::sync::Mutex<Option<SeqCursor>>,
}

/// The logs of one kind (inboxes or conversations), by allocator key.
pub(crate) struct Logs {
    logs: Mutex<HashMap<String, Arc<Log>>>,
    seqs: SeqAllocator,
}

impl Logs {
    pub(crate) fn new(seqs: SeqAllocator) -> Self {
        Logs {
            logs: Mutex::new(HashMap::new()),
            seqs,
        }
    }

    fn log(&self, key: &str) -> Arc<Log> {
        let mut logs = self.logs.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(logs.entry(key.to_owned()).or_default())
    }

    /// The visible head of `key`; `load_head` reads it from the store the first time.
    pub(crate) async fn head<L, F>(&self, key: &str, load_head: L) -> Result<Seq>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Seq>>,
    {
        let log = self.log(key);
        Self::loaded_head(&log, load_head)
            .await
            .map(|h| h.load(Ordering::Acquire))
    }

    async fn loaded_head<L, F>(log: &Log, load_head: L) -> Result<&AtomicU64>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Seq>>,
    {
        log.head
            .get_or_try_init(|| async { load_head().await.map(AtomicU64::new) })
            .await
    }

    /// Appends to `key`: allocates the next seq and runs `write(seq, previous)`
    /// while holding the log's writer lock, so writes land in seq order
    /// (`previous` is the seq handed out just before, whether or not its
    /// write succeeded). `write` returns once its entry is in the store's
    /// log; the head moves when the caller publishes the append, after it is
    /// durable.
    pub(crate) async fn append<L, LF, W, WF, T>(
        &self,
        key: &str,
        load_head: L,
        write: W,
    ) -> Result<Appended<T>>
    where
        L: FnOnce() -> LF,
        LF: Future<Output = Result<Seq>>,
        W: FnOnce(Seq, Seq) -> WF,
        WF: Future<Output = Result<T>>,
    {
        let log = self.log(key);
        Self::loaded_head(&log, load_head).await?;
        let mut writer = log.writer.lock().await;
        let cursor = match writer.as_mut() {
            Some(cursor) => cursor,
            None => writer.insert(self.seqs.resume(key).await?),
        };
        let previous = cursor.current();
        let seq = self.seqs.next(key, cursor).await?;
        let value = write(seq, previous).await?;
        drop(writer);
        Ok(Appended { log, seq, value })
    }
}

/// An append that is in the store's log, not yet visible to readers.
pub(crate) struct Appended<T> {
    log: Arc<Log>,
    /// The seq it got.
    pub(crate) seq: Seq,
    /// What the write returned.
    pub(crate) value: T,
}

impl<T> Appended<T> {
    /// Makes the entry visible. Call only once it is durable: because the
    /// store makes writes durable in the order they were logged, every lower
    /// seq of this log is durable too, so the head never uncovers a hole.
    pub(crate) fn publish(&self) {
        if let Some(head) = self.log.head.get() {
            head.fetch_max(self.seq, Ordering::AcqRel);
        }
    }
}
