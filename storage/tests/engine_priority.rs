//! The embedded store's engine threads and their CPU priority, in a test
//! process of their own: no other store's threads come and go meanwhile.

use rustix::process::{Pid, getpriority_process};
use storage::{Durability, EmbeddedStore};

#[test]
fn the_engines_background_threads_run_at_a_lower_priority_than_the_opener() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), Durability::Fsync).expect("open store");
    let own = getpriority_process(None).expect("own priority");
    let threads = store.background_threads();
    assert!(!threads.is_empty(), "no background thread was found");
    for &tid in threads {
        let pid = Pid::from_raw(tid).expect("a thread id");
        let nice = getpriority_process(Some(pid)).expect("a thread's priority");
        assert!(
            nice == 19 || nice >= own + 10,
            "thread {tid} runs at nice {nice}, the opener at {own}"
        );
    }
}

#[test]
fn the_engines_flush_worker_keeps_the_openers_priority() {
    let dir = tempfile::tempdir().expect("temp dir");
    let _store = EmbeddedStore::open(dir.path(), Durability::Fsync).expect("open store");
    let own = getpriority_process(None).expect("own priority");
    let flushers = threads_named(fjall::FLUSH_WORKER_THREAD_NAME);
    // fjall runs one worker per core (up to 4); a lone worker flushes and
    // compacts, and is lowered with the compactions
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(
        cores > 1,
        !flushers.is_empty(),
        "{cores} cores, flushers {flushers:?}"
    );
    for tid in flushers {
        let pid = Pid::from_raw(tid).expect("a thread id");
        let nice = getpriority_process(Some(pid)).expect("a thread's priority");
        assert_eq!(own, nice, "the flush worker {tid} runs at nice {nice}");
    }
}

/// The ids of this process's threads named `name`.
fn threads_named(name: &str) -> Vec<i32> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect()
}
