//! The embedded store's engine threads and their CPU priority, in a test
//! process of their own: no other store's threads come and go meanwhile
//! (so one test, one store).

use rustix::process::{Pid, getpriority_process};
use storage::{Durability, EmbeddedStore};

#[test]
fn the_engines_compactions_run_lower_than_the_opener_and_its_flushes_do_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = EmbeddedStore::open(dir.path(), Durability::Fsync).expect("open store");
    let own = getpriority_process(None).expect("own priority");
    let nice_of = |tid: i32| {
        let pid = Pid::from_raw(tid).expect("a thread id");
        getpriority_process(Some(pid)).expect("a thread's priority")
    };

    let threads = store.background_threads();
    assert!(!threads.is_empty(), "no background thread was found");
    for &tid in threads {
        let nice = nice_of(tid);
        assert!(
            nice == 19 || nice >= own + 10,
            "thread {tid} runs at nice {nice}, the opener at {own}"
        );
    }

    // fjall runs one worker per core (up to 4); a lone worker flushes and
    // compacts, and is lowered with the compactions
    let flushers = store.flush_threads();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(
        cores > 1,
        !flushers.is_empty(),
        "{cores} cores, flushers {flushers:?}"
    );
    for &tid in flushers {
        let nice = nice_of(tid);
        assert_eq!(own, nice, "the flush worker {tid} runs at nice {nice}");
    }
}
