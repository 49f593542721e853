//! One writer per log: appends to one inbox (or one conversation log) are
//! serialized, each gets the next seq from the seqsvr allocator, and a read
//! never sees past the log's visible head, which only moves once the entry
//! under it is durable. The writer lock is held while an entry is logged, not
//! through the fsync, so one fsync can serve many appends of the same log.
//! Different logs proceed in parallel.
//!
//! A write that fails with a retryable error may still land later (a remote
//! store's timeout, replayed from its batch log). Its seq is then *unsettled*:
//! the log hands out no further seq until the same write, re-issued at the
//! same seq (appends are idempotent), has succeeded. Otherwise a reader could
//! see seq N+1, move its cursor past N, and never see N when it lands.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use proto::Seq;
use storage::{MessageStore, SeqAllocator, SeqCursor, WriteTicket};
use tokio::sync::OnceCell;

use crate::{Error, Result};

/// A write of one log entry at `(seq, previous seq)`; callable again with the
/// same arguments to re-issue it, which must write the same thing.
pub(crate) type Write<T> = Arc<dyn Fn(Seq, Seq) -> BoxFuture<'static, Result<T>> + Send + Sync>;

/// What follows once an entry is visible (an inbox's cache and notify).
/// Runs after the entry is durable, for every entry, settled ones included.
pub(crate) type Announce<T> = Arc<dyn Fn(&T) -> BoxFuture<'static, ()> + Send + Sync>;

/// An announcement that does nothing (conversation logs).
pub(crate) fn silent<T>() -> Announce<T> {
    Arc::new(|_| Box::pin(async {}))
}

/// What a log write returns: something carrying the store's write ticket.
pub(crate) trait Logged: Send + 'static {
    /// The ticket to wait on before the entry may become visible.
    fn ticket(&self) -> WriteTicket;
}

impl Logged for WriteTicket {
    fn ticket(&self) -> WriteTicket {
        *self
    }
}

/// A write that failed in a way that may still land.
struct Unsettled<T> {
    seq: Seq,
    previous: Seq,
    /// Identifies the entry (e.g. sender and client_msg_id), so that the
    /// retry of the same entry settles it instead of writing it twice.
    tag: String,
    write: Write<T>,
}

/// The writer's state; holding its lock makes the caller the writer.
struct Writer<T> {
    cursor: Option<SeqCursor>,
    unsettled: Option<Unsettled<T>>,
}

/// The state of one log.
struct Log<T> {
    /// The highest seq whose entry (and every lower one) is durable.
    head: OnceCell<AtomicU64>,
    writer: tokio::sync::Mutex<Writer<T>>,
}

impl<T> Default for Log<T> {
    fn default() -> Self {
        Log {
            head: OnceCell::new(),
            writer: tokio::sync::Mutex::new(Writer {
                cursor: None,
                unsettled: None,
            }),
        }
    }
}

/// The logs of one kind (inboxes or conversations), by allocator key.
pub(crate) struct Logs<T> {
    logs: Mutex<HashMap<String, Arc<Log<T>>>>,
    seqs: SeqAllocator,
    store: Arc<dyn MessageStore>,
    announce: Announce<T>,
    /// What follows when a write is settled by a caller other than its own
    /// (`settle`, or the next append): after `announce`.
    settled_late: Announce<T>,
}

impl<T: Logged> Logs<T> {
    pub(crate) fn new(
        seqs: SeqAllocator,
        store: Arc<dyn MessageStore>,
        announce: Announce<T>,
        settled_late: Announce<T>,
    ) -> Self {
        Logs {
            logs: Mutex::new(HashMap::new()),
            seqs,
            store,
            announce,
            settled_late,
        }
    }

    /// Makes an append visible, then announces it. Call only once it is
    /// durable: because the store makes writes durable in the order they
    /// were logged, every lower seq of this log is durable too, so the head
    /// never uncovers a hole.
    pub(crate) async fn publish(&self, appended: &Appended<T>) {
        publish(&appended.log, appended.seq);
        (self.announce)(&appended.value).await;
    }

    fn log(&self, key: &str) -> Arc<Log<T>> {
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

    async fn loaded_head<L, F>(log: &Log<T>, load_head: L) -> Result<&AtomicU64>
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
    /// durable. An unsettled earlier write is settled first; if it carries
    /// the same `tag`, settling it is this append. `prepare` builds the write
    /// as the writer, before a seq is allocated: what it reads (a
    /// conversation's members) cannot change under it (see `exclusive`),
    /// and when it refuses no seq is used up.
    pub(crate) async fn append<L, LF, P, PF>(
        &self,
        key: &str,
        tag: String,
        load_head: L,
        prepare: P,
    ) -> Result<Appended<T>>
    where
        L: FnOnce() -> LF,
        LF: Future<Output = Result<Seq>>,
        P: FnOnce() -> PF,
        PF: Future<Output = Result<Write<T>>>,
    {
        let log = self.log(key);
        Self::loaded_head(&log, load_head).await?;
        let mut writer = log.writer.lock().await;
        if let Some(unsettled) = writer.unsettled.take() {
            if unsettled.tag == tag {
                let seq = unsettled.seq;
                let value = Self::reissue(&mut writer, unsettled).await?;
                return Ok(Appended {
                    log: Arc::clone(&log),
                    seq,
                    value,
                });
            }
            self.settle_one(&log, &mut writer, unsettled).await?;
        }
        let write = prepare().await?;
        let mut cursor = match writer.cursor.take() {
            Some(cursor) => cursor,
            None => self.seqs.resume(key).await?,
        };
        let previous = cursor.current();
        let next = self.seqs.next(key, &mut cursor).await;
        writer.cursor = Some(cursor);
        let seq = next?;
        match write(seq, previous).await {
            Ok(value) => Ok(Appended {
                log: Arc::clone(&log),
                seq,
                value,
            }),
            Err(err) => {
                if may_have_landed(&err) {
                    writer.unsettled = Some(Unsettled {
                        seq,
                        previous,
                        tag,
                        write,
                    });
                }
                Err(err)
            }
        }
    }

    /// Runs `work` as the writer of `key`: nothing is appended meanwhile. A
    /// conversation's membership changes run so, ordered with its sends.
    pub(crate) async fn exclusive<R, W, WF>(&self, key: &str, work: W) -> R
    where
        W: FnOnce() -> WF,
        WF: Future<Output = R>,
    {
        let log = self.log(key);
        let _writer = log.writer.lock().await;
        work().await
    }

    /// Settles the unsettled write of `key`, if any: a caller that finds an
    /// entry already stored (a retry) calls this before relying on it being
    /// visible.
    pub(crate) async fn settle(&self, key: &str) -> Result<()> {
        let log = self.log(key);
        let mut writer = log.writer.lock().await;
        match writer.unsettled.take() {
            Some(unsettled) => self.settle_one(&log, &mut writer, unsettled).await,
            None => Ok(()),
        }
    }

    /// Re-issues an unsettled write, waits until it is durable and makes it
    /// visible. On failure it stays unsettled.
    async fn settle_one(
        &self,
        log: &Log<T>,
        writer: &mut Writer<T>,
        unsettled: Unsettled<T>,
    ) -> Result<()> {
        let seq = unsettled.seq;
        let value = Self::reissue(writer, unsettled).await?;
        self.store.durable(value.ticket()).await?;
        publish(log, seq);
        (self.announce)(&value).await;
        (self.settled_late)(&value).await;
        Ok(())
    }

    /// Re-issues an unsettled write; puts it back if it fails again.
    async fn reissue(writer: &mut Writer<T>, unsettled: Unsettled<T>) -> Result<T> {
        match (unsettled.write)(unsettled.seq, unsettled.previous).await {
            Ok(value) => Ok(value),
            Err(err) => {
                writer.unsettled = Some(unsettled);
                Err(err)
            }
        }
    }
}

/// Whether a failed write may still land: storage outages and timeouts
/// (retryable) may; refusals and bad data may not.
fn may_have_landed(err: &Error) -> bool {
    matches!(err, Error::Unavailable { .. })
}

fn publish<T>(log: &Log<T>, seq: Seq) {
    if let Some(head) = log.head.get() {
        head.fetch_max(seq, Ordering::AcqRel);
    }
}

/// An append that is in the store's log, not yet visible to readers.
pub(crate) struct Appended<T> {
    log: Arc<Log<T>>,
    /// The seq it got.
    pub(crate) seq: Seq,
    /// What the write returned.
    pub(crate) value: T,
}
