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
//!
//! The state of at most `cap` logs is kept: past it, the least recently
//! used logs that nobody is using and that have no unsettled write are
//! forgotten, and read again from the store on their next touch (a
//! forgotten log resumes its seqs above the persisted ceiling, as after a
//! restart). A log found empty that nobody writes is not kept at all, so
//! reading logs that do not exist leaves nothing behind.
//!
//! A log is fenced when this process first writes it (or looks whether an
//! entry is in it): every seq its earlier writers could have used above the
//! head found (up to their persisted ceiling) is fenced off in the store,
//! so an uncertain write of a process that died cannot land later below
//! entries that readers have already passed (a late hole).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use proto::Seq;
use storage::{LogId, MessageStore, SeqAllocator, SeqCursor, WriteTicket};
use tokio::sync::OnceCell;

use crate::ownership::{LeaseKeeper, conversation_shard, inbox_shard};
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
    /// The seq handed out last since `cursor` was resumed; none yet.
    handed_out: Option<Seq>,
    unsettled: Option<Unsettled<T>>,
}

/// The state of one log.
struct Log<T> {
    /// The highest seq whose entry (and every lower one) is durable.
    head: OnceCell<AtomicU64>,
    writer: tokio::sync::Mutex<Writer<T>>,
    /// When it was last touched, in touches of its [`Cached`].
    touched: AtomicU64,
    /// The epoch of its shard this state was loaded under: when the shard
    /// comes back at another epoch (it was owned elsewhere meanwhile), the
    /// state is stale and replaced.
    epoch: u64,
}

impl<T> Log<T> {
    fn new(epoch: u64) -> Self {
        Log {
            head: OnceCell::new(),
            writer: tokio::sync::Mutex::new(Writer {
                cursor: None,
                handed_out: None,
                unsettled: None,
            }),
            touched: AtomicU64::new(0),
            epoch,
        }
    }
}

impl<T> Log<T> {
    /// Whether forgetting it loses nothing: only the map holds it (callers
    /// clone it under the map's lock, so none can appear meanwhile) and it
    /// has no unsettled write.
    fn idle(log: &Arc<Self>) -> bool {
        Arc::strong_count(log) == 1
            && log
                .writer
                .try_lock()
                .is_ok_and(|writer| writer.unsettled.is_none())
    }
}

/// The logs whose state is kept, with a clock of touches.
struct Cached<T> {
    logs: HashMap<String, Arc<Log<T>>>,
    touches: u64,
}

impl<T> Cached<T> {
    /// Forgets idle logs, least recently touched first, until at most
    /// `target` are kept (or no idle one is left).
    fn evict_to(&mut self, target: usize) {
        let excess = self.logs.len().saturating_sub(target);
        if excess == 0 {
            return;
        }
        let mut idle: Vec<u64> = self
            .logs
            .values()
            .filter(|log| Log::idle(log))
            .map(|log| log.touched.load(Ordering::Relaxed))
            .collect();
        // Touch times are unique: the `excess` oldest are those up to the
        // excess-th smallest.
        let oldest_kept_after = if idle.len() > excess {
            *idle.select_nth_unstable(excess - 1).1
        } else {
            u64::MAX
        };
        self.logs.retain(|_, log| {
            !(log.touched.load(Ordering::Relaxed) <= oldest_kept_after && Log::idle(log))
        });
    }
}

/// The logs of one kind (inboxes or conversations), by allocator key.
pub(crate) struct Logs<T> {
    logs: Mutex<Cached<T>>,
    /// Logs whose state is kept at most.
    cap: usize,
    /// `inbox` or `conversation`, the label of the size metric.
    kind: &'static str,
    /// This process's unique name as a writer of logs (what fences say).
    writer: Arc<str>,
    /// The store's id of the log under a key.
    log_id: fn(&str) -> Option<LogId>,
    /// The leases this process serves logs under; `None`: it owns every
    /// log (the embedded store belongs to one process).
    serving: Option<Arc<LeaseKeeper>>,
    seqs: SeqAllocator,
    store: Arc<dyn MessageStore>,
    announce: Announce<T>,
    /// What follows when a write is settled by a caller other than its own
    /// (`settle`, or the next append): after `announce`.
    settled_late: Announce<T>,
}

impl<T: Logged> Logs<T> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        kind: &'static str,
        cap: usize,
        writer: Arc<str>,
        log_id: fn(&str) -> Option<LogId>,
        serving: Option<Arc<LeaseKeeper>>,
        seqs: SeqAllocator,
        store: Arc<dyn MessageStore>,
        announce: Announce<T>,
        settled_late: Announce<T>,
    ) -> Self {
        Logs {
            logs: Mutex::new(Cached {
                logs: HashMap::new(),
                touches: 0,
            }),
            cap: cap.max(1),
            kind,
            writer,
            log_id,
            serving,
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

    /// The epoch `key`'s shard is served at here, or `unavailable` when
    /// this process may not serve it now (another instance owns it, or its
    /// lease lapsed): the caller's retry reaches the owner.
    fn served(&self, key: &str) -> Result<u64> {
        let Some(keeper) = &self.serving else {
            return Ok(0);
        };
        let shard = match (self.log_id)(key) {
            Some(LogId::Inbox(user)) => inbox_shard(&user),
            Some(LogId::Conversation(conv)) => conversation_shard(&conv),
            None => return Err(storage::Error::BadData(format!("{key:?} names no log")).into()),
        };
        keeper
            .serves(shard)
            .ok_or_else(|| Error::shard_not_served(shard))
    }

    /// Whether this process may serve `key` now.
    pub(crate) fn serves(&self, key: &str) -> bool {
        self.served(key).is_ok()
    }

    /// Whether this process serves `key` now under the lease of `epoch`.
    pub(crate) fn serves_at(&self, key: &str, epoch: u64) -> bool {
        self.served(key).ok() == Some(epoch)
    }

    /// `unavailable` unless `key` is still served under the lease of
    /// `epoch`: a lease that ended `when` (before a write, during one, ...)
    /// allows nothing more.
    fn still_served(&self, key: &str, epoch: u64, when: &str) -> Result<()> {
        if self.serves_at(key, epoch) {
            return Ok(());
        }
        let reason = format!("the lease of {key:?} ended {when}");
        Err(storage::Error::Unavailable(reason.into()).into())
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached<T>> {
        // Only inserts, removes and relaxed counters under this lock:
        // nothing half done to recover from a panic.
        self.logs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of `key` under `epoch`, kept from now on; state of another
    /// epoch is replaced (its head, cursor and unsettled write were another
    /// owner's business since). May forget idle logs.
    fn log(&self, key: &str, epoch: u64) -> Arc<Log<T>> {
        let mut cached = self.cached();
        cached.touches += 1;
        let now = cached.touches;
        let before = cached.logs.len();
        let entry = cached
            .logs
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Log::new(epoch)));
        if entry.epoch != epoch {
            *entry = Arc::new(Log::new(epoch));
        }
        let log = Arc::clone(entry);
        log.touched.store(now, Ordering::Relaxed);
        if cached.logs.len() > self.cap {
            // A tenth below the cap, so that a sweep is paid once per many inserts.
            cached.evict_to(self.cap - self.cap / 10);
        }
        if cached.logs.len() != before {
            metrics::gauge!("chat_logs_cached", "kind" => self.kind).set(cached.logs.len() as f64);
        }
        log
    }

    /// Forgets `key` if its log is empty and idle: a read of a log that does
    /// not exist keeps nothing.
    fn forget_if_empty(&self, key: &str, log: Arc<Log<T>>) {
        let empty = log
            .head
            .get()
            .is_some_and(|head| head.load(Ordering::Acquire) == 0);
        drop(log);
        if !empty {
            return;
        }
        let mut cached = self.cached();
        if cached.logs.get(key).is_some_and(|log| {
            Log::idle(log) && log.writer.try_lock().is_ok_and(|w| w.cursor.is_none())
        }) {
            cached.logs.remove(key);
            metrics::gauge!("chat_logs_cached", "kind" => self.kind).set(cached.logs.len() as f64);
        }
    }

    /// How many logs' state is kept.
    pub(crate) fn cached_count(&self) -> usize {
        self.cached().logs.len()
    }

    /// The visible head of `key`; `load_head` reads it from the store the
    /// first time. The state of an empty log is not kept.
    pub(crate) async fn head<L, F>(&self, key: &str, load_head: L) -> Result<Seq>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Seq>>,
    {
        let epoch = self.served(key)?;
        let log = self.log(key, epoch);
        let head = Self::loaded_head(&log, load_head)
            .await
            .map(|h| h.load(Ordering::Acquire));
        self.forget_if_empty(key, log);
        head
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
    /// write succeeded, or the visible head for the first seq after the
    /// log was resumed and fenced). `write` returns once its entry is in the store's
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
        let epoch = self.served(key)?;
        let log = self.log(key, epoch);
        Self::loaded_head(&log, load_head).await?;
        let mut writer = log.writer.lock().await;
        if let Some(unsettled) = writer.unsettled.take() {
            if unsettled.tag == tag {
                let seq = unsettled.seq;
                let value = self.reissue(key, epoch, &mut writer, unsettled).await?;
                return Ok(Appended {
                    log: Arc::clone(&log),
                    seq,
                    value,
                });
            }
            self.settle_one(key, epoch, &log, &mut writer, unsettled)
                .await?;
        }
        let write = prepare().await?;
        let mut cursor = match writer.cursor.take() {
            Some(cursor) => cursor,
            None => self.resume(key, &log).await?,
        };
        let previous = match writer.handed_out {
            Some(seq) => seq,
            // The first seq since the resume: every seq between the visible
            // head and the resumed ceiling is fenced off, so this entry
            // follows the head directly (readers of its notify need not
            // sync across an epoch's jump of seqs).
            None => log.head.get().map_or(0, |h| h.load(Ordering::Acquire)),
        };
        let next = self.seqs.next(key, &mut cursor).await;
        writer.cursor = Some(cursor);
        let seq = next?;
        writer.handed_out = Some(seq);
        // Checked again right before the write goes out: the lease may have
        // ended while this waited for the writer lock or the ceiling.
        self.still_served(key, epoch, "before its write")?;
        let written = match write(seq, previous).await {
            // Not acked once the lease that allowed it is gone: a new owner
            // fences it off, or, if the lease comes back, it is settled.
            Ok(value) => self
                .still_served(key, epoch, "during its write")
                .map(|()| value),
            failed => failed,
        };
        match written {
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

    /// Resumes `key`'s seqs above its persisted ceiling after fencing off
    /// what earlier writers may have left between its head and that ceiling.
    async fn resume(&self, key: &str, log: &Log<T>) -> Result<SeqCursor> {
        let cursor = self.seqs.resume(key).await?;
        let head = log.head.get().map_or(0, |h| h.load(Ordering::Acquire));
        let ceiling = cursor.current();
        if ceiling > head {
            let id = (self.log_id)(key)
                .ok_or_else(|| storage::Error::BadData(format!("{key:?} names no log")))?;
            // A writer per process and epoch: a process that gets a shard back
            // fences what the owners in between may have left.
            let writer = format!("{}@{}", self.writer, log.epoch);
            // Checked right before: a process paused since its lease check
            // must not fence off what the owner since then wrote.
            self.still_served(key, log.epoch, "before its fence")?;
            self.store.fence_log(&id, &writer, head, ceiling).await?;
        }
        Ok(cursor)
    }

    /// Opens `key` for writing (fencing it, the first time): call before
    /// trusting a pointer into it (a dedup record, an inbox index row) that
    /// an earlier process may have left above the head.
    pub(crate) async fn open<L, F>(&self, key: &str, load_head: L) -> Result<()>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Seq>>,
    {
        let epoch = self.served(key)?;
        let log = self.log(key, epoch);
        Self::loaded_head(&log, load_head).await?;
        let mut writer = log.writer.lock().await;
        if writer.cursor.is_none() {
            writer.cursor = Some(self.resume(key, &log).await?);
        }
        Ok(())
    }

    /// Runs `work` as the writer of `key`: nothing is appended meanwhile. A
    /// conversation's membership changes run so, ordered with its sends.
    /// Only the owner of `key`'s shard runs it (see [`Logs::served`]).
    pub(crate) async fn exclusive<R, W, WF>(&self, key: &str, work: W) -> Result<R>
    where
        W: FnOnce() -> WF,
        WF: Future<Output = Result<R>>,
    {
        let epoch = self.served(key)?;
        let log = self.log(key, epoch);
        let _writer = log.writer.lock().await;
        self.still_served(key, epoch, "while waiting to write")?;
        work().await
    }

    /// Settles the unsettled write of `key`, if any: a caller that finds an
    /// entry already stored (a retry) calls this before relying on it being
    /// visible.
    pub(crate) async fn settle(&self, key: &str) -> Result<()> {
        let epoch = self.served(key)?;
        let log = self.log(key, epoch);
        let mut writer = log.writer.lock().await;
        match writer.unsettled.take() {
            Some(unsettled) => {
                self.settle_one(key, epoch, &log, &mut writer, unsettled)
                    .await
            }
            None => Ok(()),
        }
    }

    /// Re-issues an unsettled write, waits until it is durable and makes it
    /// visible. On failure it stays unsettled.
    async fn settle_one(
        &self,
        key: &str,
        epoch: u64,
        log: &Log<T>,
        writer: &mut Writer<T>,
        unsettled: Unsettled<T>,
    ) -> Result<()> {
        let seq = unsettled.seq;
        let value = self.reissue(key, epoch, writer, unsettled).await?;
        self.store.durable(value.ticket()).await?;
        publish(log, seq);
        (self.announce)(&value).await;
        (self.settled_late)(&value).await;
        Ok(())
    }

    /// Re-issues an unsettled write; puts it back if it fails again. Like a
    /// first write, only under the lease of `epoch`, checked right before
    /// and after: a deposed owner's re-issue is never taken for written.
    async fn reissue(
        &self,
        key: &str,
        epoch: u64,
        writer: &mut Writer<T>,
        unsettled: Unsettled<T>,
    ) -> Result<T> {
        let reissued = match self.still_served(key, epoch, "before a re-issued write") {
            Ok(()) => match (unsettled.write)(unsettled.seq, unsettled.previous).await {
                Ok(value) => self
                    .still_served(key, epoch, "during a re-issued write")
                    .map(|()| value),
                failed => failed,
            },
            Err(lapsed) => Err(lapsed),
        };
        if reissued.is_err() {
            writer.unsettled = Some(unsettled);
        }
        reissued
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

impl<T> Appended<T> {
    /// The epoch of the lease it was written under.
    pub(crate) fn epoch(&self) -> u64 {
        self.log.epoch
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use storage::{Durability, EmbeddedStore};

    use super::*;

    fn logs(store: &Arc<dyn MessageStore>, cap: usize) -> Logs<WriteTicket> {
        let seqs = SeqAllocator::new(Arc::clone(store), 100);
        let log_id = |key: &str| {
            let user = key.strip_prefix("u:")?;
            proto::UserId::parse(user).ok().map(LogId::Inbox)
        };
        Logs::new(
            "inbox",
            cap,
            "test".into(),
            log_id,
            None,
            seqs,
            Arc::clone(store),
            silent(),
            silent(),
        )
    }

    fn fails_then_lands(calls: Arc<AtomicUsize>) -> Write<WriteTicket> {
        Arc::new(move |_, _| {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if call == 0 {
                    Err(storage::Error::Unavailable("timed out".into()).into())
                } else {
                    Ok(WriteTicket::default())
                }
            })
        })
    }

    #[tokio::test]
    async fn a_log_with_an_unsettled_write_is_never_forgotten() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store: Arc<dyn MessageStore> =
            Arc::new(EmbeddedStore::open(dir.path(), Durability::Fsync)?);
        let logs = logs(&store, 4);
        let calls = Arc::new(AtomicUsize::new(0));
        let write = fails_then_lands(Arc::clone(&calls));
        let first = logs
            .append(
                "u:a",
                "m1".into(),
                || async { Ok(0) },
                || async { Ok(write) },
            )
            .await;
        assert!(first.is_err(), "the first write reports a timeout");
        for i in 0..100 {
            logs.head(&format!("u:other{i}"), || async { Ok(1) })
                .await?;
        }
        assert!(logs.cached_count() <= 4, "{}", logs.cached_count());
        // Still known as unsettled: the same entry's retry settles it at its seq.
        let write = fails_then_lands(Arc::clone(&calls));
        let retried = logs
            .append(
                "u:a",
                "m1".into(),
                || async { Ok(0) },
                || async { Ok(write) },
            )
            .await?;
        // Forgotten, it would have resumed above the ceiling (101).
        assert_eq!(retried.seq, 1);
        Ok(())
    }
}
