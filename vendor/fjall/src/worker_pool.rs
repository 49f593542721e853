// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use crate::{
    compaction::worker::run as run_compaction, flush::worker::run as run_flush, poison::PoisonDart,
    stats::Stats, supervisor::Supervisor, AbstractTree, Keyspace,
};
use lsm_tree::MemtableId;
use std::{
    borrow::Cow,
    sync::{
        atomic::{AtomicUsize, Ordering::Relaxed},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

/// The name of a worker thread that compacts (and flushes and rotates when
/// it is free), or of a lone worker, which does everything
pub const WORKER_THREAD_NAME: &str = "fjall:worker";

/// Patched (vendor/PATCHES.md): the name of worker #0 of several, which
/// leaves compactions to the others to be free for flushes and rotations. A
/// name of its own lets an embedder run it at another CPU priority than the
/// compactions
pub const FLUSH_WORKER_THREAD_NAME: &str = "fjall:flusher";

/// Whether worker `worker_id` of a pool of `pool_size` leaves compactions
/// to the others, to be free for flushes: worker #0 of several
fn passes_on_compactions(pool_size: usize, worker_id: usize) -> bool {
    pool_size > 1 && worker_id == 0
}

pub enum WorkerMessage {
    Flush,
    Compact(Keyspace),
    Close,
    RotateMemtable(Keyspace, MemtableId),
}

impl std::fmt::Debug for WorkerMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            match self {
                Self::Flush => Cow::Borrowed("WorkerMessage:Flush"),
                Self::Compact(k) => Cow::Owned(format!("WorkerMessage:Compact({:?})", k.name)),
                Self::Close => Cow::Borrowed("WorkerMessage:Close"),
                Self::RotateMemtable(k, memtable_id) =>
                    Cow::Owned(format!("WorkerMessage:Rotate({:?}, {memtable_id})", k.name)),
            }
        )
    }
}

type WorkerHandle = JoinHandle<Result<(), crate::Error>>;

pub struct WorkerPool {
    thread_handles: Mutex<Vec<WorkerHandle>>,
    pub(crate) rx: flume::Receiver<WorkerMessage>,
    pub(crate) sender: flume::Sender<WorkerMessage>,

    /// Patched (vendor/PATCHES.md): the compactions worker #0 of several
    /// hands on. Upstream sent them back into the channel, where worker #0,
    /// alone at `recv` while the others were busy compacting, took the same
    /// message back at once: a busy loop for as long as a compaction ran
    pub(crate) handoff: Arc<Mutex<Handoff>>,
}

impl WorkerPool {
    pub fn prepare() -> Self {
        let (sender, rx) = flume::bounded(1_000);

        Self {
            thread_handles: Mutex::default(),
            rx,
            sender,
            handoff: Arc::default(),
        }
    }

    /// Forgets the compactions still waiting for a worker (they hold their
    /// keyspace, which holds the database: dropped with it)
    pub(crate) fn forget_pending_compactions(&self) {
        lock(&self.handoff).pending.clear();
    }

    pub fn start(
        &self,
        pool_size: usize,
        supervisor: &Supervisor,
        stats: &Arc<Stats>,
        poison_dart: &PoisonDart,
        thread_counter: &Arc<AtomicUsize>,
    ) -> crate::Result<()> {
        log::debug!("Starting worker pool with {pool_size} threads");

        // Patched (vendor/PATCHES.md): each worker reports once it runs, and
        // this returns after all of them have, so a caller can find them by
        // their name as soon as the database is open (a thread takes its
        // name as it starts; the embedded store lowers their CPU priority)
        let (started, all_started) = std::sync::mpsc::channel::<()>();

        let thread_handles = claim_and_spawn(pool_size, thread_counter, |i| {
            std::thread::Builder::new()
                .name(
                    if passes_on_compactions(pool_size, i) {
                        FLUSH_WORKER_THREAD_NAME
                    } else {
                        WORKER_THREAD_NAME
                    }
                    .to_string(),
                )
                .spawn({
                    log::trace!("Starting fjall worker thread #{i}");

                    let worker_state = WorkerState {
                        pool_size,
                        worker_id: i,
                        rx: self.rx.clone(),
                        supervisor: supervisor.clone(),
                        stats: stats.clone(),
                        sender: self.sender.clone(),
                        handoff: self.handoff.clone(),
                    };

                    let thread_counter = thread_counter.clone();
                    let poison_dart = poison_dart.clone();
                    let started = started.clone();

                    move || {
                        started.send(()).ok();
                        drop(started);

                        // The counter must drop on *every* way out of this
                        // thread, not just the graceful one: `Database::drop`
                        // spins on it (`while counter > 0`), so a worker that
                        // returns an error or unwinds would keep the database
                        // closing forever.
                        let _counter_guard = ActiveThreadGuard(thread_counter);

                        loop {
                            match worker_tick(&worker_state) {
                                Ok(should_abort) => {
                                    if should_abort {
                                        log::debug!("Worker #{i} closes because DB is dropping");
                                        return Ok(());
                                    }
                                }
                                Err(e) => {
                                    log::error!("Worker #{i} crashed: {e:?}");
                                    poison_dart.poison();
                                    return Err(e);
                                }
                            }
                        }
                    }
                })
        })?;

        // Ends early only if a worker is gone, since every sender is dropped
        drop(started);
        for _ in 0..thread_handles.len() {
            if all_started.recv().is_err() {
                break;
            }
        }

        *self.thread_handles.lock().expect("lock is poisoned") = thread_handles;

        Ok(())
    }
}

/// Claims one slot in the active thread counter per worker, immediately before
/// that worker is spawned, and hands the slot straight back if the spawn fails.
///
/// Claiming the whole pool up front would leak the slots of the workers that failed
/// spawn never reaches: nothing ever decrements them, because those threads do
/// not exist, and `DatabaseInner::drop` waits for the counter to reach zero.
///
/// The spawn is a parameter so the failure path can be tested without having to
/// exhaust the operating system's thread limit.
fn claim_and_spawn<H, S: FnMut(usize) -> std::io::Result<H>>(
    pool_size: usize,
    thread_counter: &Arc<AtomicUsize>,
    mut spawn: S,
) -> std::io::Result<Vec<H>> {
    (0..pool_size)
        .map(|i| {
            thread_counter.fetch_add(1, Relaxed);

            spawn(i).inspect_err(|_| {
                thread_counter.fetch_sub(1, Relaxed);
            })
        })
        .collect()
}

/// Decrements the pool's active thread counter when a worker thread leaves,
/// whatever the reason: graceful close, error return or unwinding panic.
///
/// `DatabaseInner::drop` waits for this counter to reach zero, so a leaked
/// increment makes closing the database hang forever.
struct ActiveThreadGuard(Arc<AtomicUsize>);

impl Drop for ActiveThreadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

struct WorkerState {
    pool_size: usize,
    worker_id: usize,
    supervisor: Supervisor,
    rx: flume::Receiver<WorkerMessage>,
    sender: flume::Sender<WorkerMessage>,
    handoff: Arc<Mutex<Handoff>>,
    stats: Arc<Stats>,
}

/// How worker #0 of several hands a compaction to the others: through the
/// channel while one of them waits at it, else into `pending`, which they
/// look at before they wait. One lock over both, so a compaction is never
/// parked while a worker goes to wait without seeing it
#[derive(Default)]
pub(crate) struct Handoff {
    /// Workers other than #0 waiting at the channel
    idle: usize,
    pending: std::collections::VecDeque<Keyspace>,
}

fn lock(handoff: &Mutex<Handoff>) -> std::sync::MutexGuard<'_, Handoff> {
    // A count and a queue, each changed in one step: nothing half done after a panic
    handoff
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl WorkerState {
    /// The next message for this worker: the channel's next if one waits
    /// there (a `Close` among them, so closing does not wait for parked
    /// compactions), else a compaction handed on to it, else the channel's
    /// next to come, `None` once the channel is gone
    fn next_message(&self) -> Option<WorkerMessage> {
        if self.worker_id == 0 {
            return self.rx.recv().ok();
        }
        match self.rx.try_recv() {
            Ok(message) => return Some(message),
            Err(flume::TryRecvError::Disconnected) => return None,
            Err(flume::TryRecvError::Empty) => {}
        }
        {
            let mut handoff = lock(&self.handoff);
            if let Some(keyspace) = handoff.pending.pop_front() {
                return Some(WorkerMessage::Compact(keyspace));
            }
            handoff.idle += 1;
        }
        let message = self.rx.recv().ok();
        lock(&self.handoff).idle -= 1;
        message
    }

    /// Worker #0 hands a compaction on: to a worker waiting at the channel,
    /// which a blocked `recv` takes before worker #0 is back at it, or to
    /// the next one that is done with its work
    fn hand_on(&self, keyspace: Keyspace) {
        let mut handoff = lock(&self.handoff);
        if handoff.idle == 0 {
            if !handoff.pending.iter().any(|k| k.id == keyspace.id) {
                handoff.pending.push_back(keyspace);
            }
            return;
        }
        drop(handoff);
        self.sender.try_send(WorkerMessage::Compact(keyspace)).ok();
    }
}

fn worker_tick(ctx: &WorkerState) -> crate::Result<bool> {
    let Some(item) = ctx.next_message() else {
        return Ok(true);
    };

    log::trace!("Worker #{} got message: {item:?}", ctx.worker_id);

    match item {
        WorkerMessage::Close => {
            return Ok(true);
        }
        WorkerMessage::RotateMemtable(keyspace, memtable_id) => {
            // Cleared before the rotation, so a request made after it is
            // sent (and is a no-op if this rotation already covers it)
            keyspace
                .rotation_requested
                .store(false, std::sync::atomic::Ordering::Release);

            log::trace!("acquiring journal lock");
            let journal_writer = keyspace.supervisor.journal.get_writer()?;
            if !keyspace.inner_rotate_memtable(journal_writer, memtable_id)? {
                // Patched (vendor/PATCHES.md): a stale request, its memtable
                // rotated already. Writes that found the new memtable over its
                // size while this one waited sent nothing, so look at it now
                keyspace.check_memtable_rotate(keyspace.tree.active_memtable().size());
            }
        }
        WorkerMessage::Flush => {
            let Some(task) = ctx.supervisor.flush_manager.dequeue() else {
                return Ok(false);
            };

            {
                log::trace!("acquiring journal lock to maybe rotate journal");
                let mut journal_writer = ctx.supervisor.journal.get_writer()?;

                if journal_writer.pos()? > 64_000_000 {
                    #[expect(clippy::expect_used)]
                    let mut journal_manager = ctx
                        .supervisor
                        .journal_manager
                        .write()
                        .expect("lock is poisoned");

                    let seqno_map = {
                        #[expect(clippy::expect_used)]
                        let keyspaces = ctx.supervisor.keyspaces.write().expect("lock is poisoned");

                        ctx.supervisor.build_seqno_map(&keyspaces)
                    };

                    journal_manager.rotate_journal(&mut journal_writer, seqno_map)?;

                    if journal_manager.disk_space_used()
                        >= ctx.supervisor.db_config.max_journaling_size_in_bytes
                    {
                        let stragglers =
                            journal_manager.get_keyspaces_to_flush_for_oldest_journal_eviction();

                        for keyspace in stragglers {
                            log::info!(
                                "Rotating {:?} to try to reduce journal size",
                                keyspace.name,
                            );
                            keyspace.request_rotation();
                        }
                    }
                } else {
                    // https://github.com/fjall-rs/fjall/issues/329
                    journal_writer.persist(crate::PersistMode::SyncAll)?;
                }
            }

            run_flush(
                &task,
                &ctx.supervisor.write_buffer_size,
                &ctx.supervisor.snapshot_tracker,
                &ctx.stats,
            )?;

            for _ in 0..ctx.pool_size {
                ctx.sender
                    .try_send(WorkerMessage::Compact(task.keyspace.clone()))
                    .ok();
            }

            crate::journal::manager::collect_garbage(&ctx.supervisor.journal_manager)?;
        }
        WorkerMessage::Compact(keyspace) => {
            // NOTE: Let one worker prioritize flushing if there are pending flushes
            if passes_on_compactions(ctx.pool_size, ctx.worker_id) {
                ctx.hand_on(keyspace);
                return Ok(false);
            }

            run_compaction(&keyspace, &ctx.supervisor.snapshot_tracker, &ctx.stats)?;
        }
    }

    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Database, KeyspaceCreateOptions};
    use test_log::test;

    /// This process's threads named as workers, by either name.
    fn named_workers() -> std::io::Result<Vec<String>> {
        let mut found = vec![];
        for task in std::fs::read_dir("/proc/self/task")? {
            let task = task?;
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if [WORKER_THREAD_NAME, FLUSH_WORKER_THREAD_NAME].contains(&comm.trim_end()) {
                found.push(task.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(found)
    }

    // Patched (vendor/PATCHES.md): every worker has named itself by the
    // time the database is open
    #[test]
    #[cfg(target_os = "linux")]
    fn open_returns_once_every_worker_runs_under_its_name() -> crate::Result<()> {
        // Without the wait, a worker is not always named yet: several opens
        // make a miss likely
        for _ in 0..20 {
            let folder = tempfile::tempdir()?;
            let before = named_workers()?;

            let _db = Database::builder(&folder).worker_threads(3).open()?;

            let new = named_workers()?
                .into_iter()
                .filter(|tid| !before.contains(tid))
                .count();
            assert!(new >= 3, "only {new} of 3 new workers carry their name");
        }
        Ok(())
    }

    /// The names of the worker threads of `db`, by worker number.
    fn worker_names(db: &Database) -> Vec<String> {
        db.worker_pool
            .thread_handles
            .lock()
            .expect("lock is poisoned")
            .iter()
            .map(|handle| handle.thread().name().unwrap_or_default().to_string())
            .collect()
    }

    // Patched (vendor/PATCHES.md): worker #0 of several, which leaves
    // compactions to the others, carries a name of its own; a lone worker,
    // which compacts too, carries the workers' name
    #[test]
    fn worker_zero_of_several_is_named_the_flusher() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder).worker_threads(3).open()?;
        assert_eq!(
            vec![
                FLUSH_WORKER_THREAD_NAME,
                WORKER_THREAD_NAME,
                WORKER_THREAD_NAME
            ],
            worker_names(&db),
        );

        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder).worker_threads(1).open()?;
        assert_eq!(vec![WORKER_THREAD_NAME], worker_names(&db));
        Ok(())
    }

    /// The state of worker `worker_id` of a pool of `pool_size`, on the
    /// channels and supervisor of `db`, whose own pool runs no worker
    fn worker_of(db: &Database, worker_id: usize, pool_size: usize) -> WorkerState {
        WorkerState {
            pool_size,
            worker_id,
            supervisor: db.supervisor.clone(),
            rx: db.worker_pool.rx.clone(),
            sender: db.worker_pool.sender.clone(),
            handoff: db.worker_pool.handoff.clone(),
            stats: db.stats.clone(),
        }
    }

    // Patched (vendor/PATCHES.md): while no other worker waits, worker #0
    // of several parks a compaction for them, so it cannot take it back at
    // once (upstream spun on it for as long as the others were busy)
    #[test]
    fn worker_zero_parks_a_compaction_while_the_others_are_busy() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
        db.worker_pool
            .sender
            .send(WorkerMessage::Compact(ks.clone()))
            .expect("the channel is open");

        assert!(!worker_tick(&worker_of(&db, 0, 2))?);
        assert!(
            db.worker_pool.rx.is_empty(),
            "worker #0 would take the compaction back",
        );
        // Parked once per keyspace
        db.worker_pool
            .sender
            .send(WorkerMessage::Compact(ks.clone()))
            .expect("the channel is open");
        assert!(!worker_tick(&worker_of(&db, 0, 2))?);
        assert_eq!(1, lock(&db.worker_pool.handoff).pending.len());

        // Worker #1 takes it before it waits at the channel
        assert!(!worker_tick(&worker_of(&db, 1, 2))?);
        assert!(lock(&db.worker_pool.handoff).pending.is_empty());
        assert!(db.worker_pool.rx.is_empty());
        Ok(())
    }

    // Patched (vendor/PATCHES.md): while another worker waits at the
    // channel, worker #0 of several hands a compaction to it there
    #[test]
    fn worker_zero_hands_a_compaction_to_a_waiting_worker() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
        let worker_one = worker_of(&db, 1, 2);
        let waiting = std::thread::spawn(move || worker_tick(&worker_one));
        while lock(&db.worker_pool.handoff).idle == 0 {
            std::thread::yield_now();
        }

        // What worker #0 does with a `Compact` it takes from the channel
        worker_of(&db, 0, 2).hand_on(ks.clone());

        let closed = waiting.join().expect("worker #1 does not panic")?;
        assert!(!closed, "worker #1 took the compaction, not a Close");
        assert!(lock(&db.worker_pool.handoff).pending.is_empty());
        assert_eq!(0, lock(&db.worker_pool.handoff).idle);
        Ok(())
    }

    // Patched (vendor/PATCHES.md): a keyspace has at most one rotation
    // request waiting, however many writes find its memtable over its size
    #[test]
    fn rotation_requests_of_a_keyspace_wait_once_in_the_channel() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", || {
            KeyspaceCreateOptions::default().max_memtable_size(1_024)
        })?;
        let other = db.keyspace("other", || {
            KeyspaceCreateOptions::default().max_memtable_size(1_024)
        })?;
        for i in 0..50u32 {
            ks.insert(i.to_be_bytes(), [0u8; 100])?;
            other.insert(i.to_be_bytes(), [0u8; 100])?;
        }
        assert_eq!(2, db.worker_pool.rx.len(), "one request per keyspace");

        // A worker takes a request: a later write over the size asks again
        assert!(!worker_tick(&worker_of(&db, 0, 2))?);
        assert!(!worker_tick(&worker_of(&db, 0, 2))?);
        let flushes = db.worker_pool.rx.len();
        assert_eq!(2, flushes, "each rotation asks for a flush");
        for i in 0..50u32 {
            ks.insert(i.to_be_bytes(), [1u8; 100])?;
        }
        assert_eq!(flushes + 1, db.worker_pool.rx.len());
        Ok(())
    }

    // Patched (vendor/PATCHES.md): a rotation request whose memtable was
    // rotated already still gets the new memtable rotated, when writes
    // found it over its size while the request waited
    #[test]
    fn a_stale_rotation_request_asks_for_the_new_memtable() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", || {
            KeyspaceCreateOptions::default().max_memtable_size(1_024)
        })?;
        for i in 0..50u32 {
            ks.insert(i.to_be_bytes(), [0u8; 100])?;
        }
        // Rotated by another way while the request waits: it is stale now
        assert!(ks.rotate_memtable()?);
        for i in 0..50u32 {
            ks.insert(i.to_be_bytes(), [1u8; 100])?;
        }
        let new_memtable = ks.tree.active_memtable().id();
        let waiting: Vec<_> = db.worker_pool.rx.drain().collect();
        assert_eq!(2, waiting.len(), "the stale request and a flush");
        for message in waiting {
            db.worker_pool
                .sender
                .send(message)
                .expect("the channel is open");
        }

        assert!(!worker_tick(&worker_of(&db, 0, 2))?);

        let asked = db.worker_pool.rx.drain().any(
            |message| matches!(message, WorkerMessage::RotateMemtable(_, id) if id == new_memtable),
        );
        assert!(asked, "the new memtable, over its size, is not asked for");
        Ok(())
    }

    // Patched (vendor/PATCHES.md): a worker other than #0 takes what waits
    // in the channel (a `Close` among it) before a parked compaction
    #[test]
    fn a_waiting_close_comes_before_a_parked_compaction() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
        worker_of(&db, 0, 2).hand_on(ks.clone());
        assert_eq!(1, lock(&db.worker_pool.handoff).pending.len());
        db.worker_pool
            .sender
            .send(WorkerMessage::Close)
            .expect("the channel is open");

        assert!(worker_tick(&worker_of(&db, 1, 2))?, "worker #1 closes");
        assert_eq!(1, lock(&db.worker_pool.handoff).pending.len());
        Ok(())
    }

    // Patched (vendor/PATCHES.md): a database whose workers hand
    // compactions on still closes, busy or idle, and opens again; a close
    // that hangs fails the test after a bound far above its run time
    #[test]
    fn a_pool_of_several_workers_closes() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let path = folder.path().to_path_buf();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let opened_and_closed = || -> crate::Result<()> {
                for _ in 0..5 {
                    let db = Database::builder(&path).worker_threads(3).open()?;
                    let ks = db.keyspace("default", || {
                        KeyspaceCreateOptions::default().max_memtable_size(4_096)
                    })?;
                    for i in 0..2_000u32 {
                        ks.insert(i.to_be_bytes(), [0u8; 64])?;
                    }
                }
                Ok(())
            };
            done.send(opened_and_closed()).ok();
        });
        finished
            .recv_timeout(std::time::Duration::from_secs(120))
            .expect("the database did not close within 120 s")
    }

    /// A lone worker compacts itself
    #[test]
    fn a_lone_worker_compacts_itself() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(&folder)
            .worker_threads_unchecked(0)
            .open()?;
        let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;
        let lone = worker_of(&db, 0, 1);
        // Four tables in level 0, each flushed by the lone worker (the
        // compactions the first three flushes ask for are dropped)
        for i in 0..4u32 {
            let _ = db.worker_pool.rx.drain().count();
            ks.insert(i.to_be_bytes(), [0u8; 100])?;
            assert!(ks.rotate_memtable()?);
            assert!(!worker_tick(&lone)?);
        }
        assert_eq!(Some(4), ks.tree.level_table_count(0));
        // The last flush asked for a compaction: the lone worker runs it
        assert!(!worker_tick(&lone)?);
        assert!(
            ks.tree.level_table_count(0) < Some(4),
            "the lone worker did not compact level 0",
        );
        assert!(lock(&db.worker_pool.handoff).pending.is_empty());
        Ok(())
    }

    // https://github.com/fjall-rs/fjall/pull/303
    #[test]
    fn keyspace_compact_after_startup() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;

        {
            let db = Database::builder(&folder).open()?;

            let ks = db.keyspace("default", KeyspaceCreateOptions::default)?;

            ks.insert("a", "a")?;
            ks.rotate_memtable_and_wait()?;

            ks.insert("a", "a")?;
            ks.rotate_memtable_and_wait()?;

            ks.insert("a", "a")?;
            ks.rotate_memtable_and_wait()?;

            assert!(ks.tree.l0_run_count() > 0);
        }

        {
            let db = Database::builder(&folder)
                .worker_threads_unchecked(0)
                .open()?;

            assert_eq!(
                1,
                db.worker_pool.rx.len(),
                "worker message should be enqueued on startup",
            );
            let item = db.worker_pool.rx.try_recv().expect("should get message");
            assert!(
                matches!(item, WorkerMessage::Compact(_)),
                "worker message should be compaction request",
            );
        }

        Ok(())
    }

    /// Every worker that is actually spawned holds exactly one slot.
    #[test]
    fn claim_and_spawn_claims_one_slot_per_worker() {
        let counter = Arc::new(AtomicUsize::new(0));

        let handles = claim_and_spawn(3, &counter, |i| Ok::<_, std::io::Error>(i))
            .expect("all spawns succeed");

        assert_eq!(handles, vec![0, 1, 2]);
        assert_eq!(counter.load(Relaxed), 3);
    }

    /// A failed spawn releases its own slot and never claims one for the workers
    /// it did not get to. `DatabaseInner::drop` spins until the counter reaches
    /// zero, so a slot held by a thread that does not exist hangs the close
    /// forever.
    #[test]
    fn claim_and_spawn_counts_live_workers_only() {
        let counter = Arc::new(AtomicUsize::new(0));

        let result = claim_and_spawn(4, &counter, |i| {
            if i == 2 {
                Err(std::io::Error::other("cannot spawn thread"))
            } else {
                Ok(i)
            }
        });

        assert!(result.is_err());
        assert_eq!(
            counter.load(Relaxed),
            2,
            "only the two workers that started should hold a slot",
        );
    }

    /// A worker leaving normally releases its slot in the counter.
    #[test]
    fn active_thread_guard_decrements_on_scope_exit() {
        let counter = Arc::new(AtomicUsize::new(1));
        {
            let _guard = ActiveThreadGuard(counter.clone());
            assert_eq!(counter.load(Relaxed), 1);
        }
        assert_eq!(counter.load(Relaxed), 0);
    }

    /// A worker that returns an error releases its slot too: `Database::drop`
    /// spins until the counter reaches zero, so a leaked slot would hang the
    /// close forever.
    #[test]
    fn active_thread_guard_decrements_on_early_return() {
        let counter = Arc::new(AtomicUsize::new(1));

        fn failing_worker(counter: Arc<AtomicUsize>) -> Result<(), ()> {
            let _guard = ActiveThreadGuard(counter);
            Err(())
        }

        assert!(failing_worker(counter.clone()).is_err());
        assert_eq!(counter.load(Relaxed), 0);
    }

    /// A panicking worker releases its slot as well.
    #[test]
    fn active_thread_guard_decrements_on_panic() {
        let counter = Arc::new(AtomicUsize::new(1));
        let counter_in_thread = counter.clone();

        let outcome = std::thread::spawn(move || {
            let _guard = ActiveThreadGuard(counter_in_thread);
            panic!("worker crashed");
        })
        .join();

        assert!(outcome.is_err());
        assert_eq!(counter.load(Relaxed), 0);
    }
}
