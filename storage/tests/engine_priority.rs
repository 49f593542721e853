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
