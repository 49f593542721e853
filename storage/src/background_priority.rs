//! A lower CPU priority for the embedded store engine's background threads
//! (fjall's compaction workers): on a busy machine their bursts take the
//! CPU from the threads that deliver messages, and a compaction can wait a
//! little where a delivery cannot. At 12,000 msg/s on 2 cores (4
//! alternating runs each), nice 10 for the flush and compaction workers
//! took the delivery p99 from 24-54 ms to 20-23 and the max from 66-203 ms
//! to 57-70. In the gateway this then missed the workers: `Database::open`
//! returned before they had named themselves (fjall now waits for them;
//! vendor/PATCHES.md). Once found (2026-12-07), a pairs run at 16,000 msg/s
//! after a fill went from a delivery p99 of 133-268 ms to 21-38, and at
//! 12,000 from 20-26 to 12-13.
//!
//! fjall's flush worker (worker #0 of several, which leaves compactions to
//! the others) keeps the opener's priority since: under sustained load the
//! delivery p99 was lower with it there. At 11,000 msg/s for 60 s on a slow
//! host (7 runs each, alternating), the whole-run p99 was 358-649 ms (one
//! run 2,080) with it at the opener's priority, against 485-943 ms with it
//! lowered; in 10 s runs no difference showed.

use rustix::process::{Pid, getpriority_process, setpriority_process};

/// How much nicer than the calling thread the background threads run.
pub(crate) const BACKGROUND_NICENESS: i32 = 10;

/// The highest nice value Linux knows.
const NICEST: i32 = 19;

/// Lowers the priority of the threads of this process named `name`, other
/// than those in `known`, to `niceness` below the calling thread's (Linux
/// keeps a nice value per thread), unless they are that low already;
/// returns their ids. Best effort: where `/proc` or `setpriority` is not
/// there, nothing changes.
pub(crate) fn lower_new_threads_named(name: &str, known: &[i32], niceness: i32) -> Vec<i32> {
    let Ok(base) = getpriority_process(None) else {
        return Vec::new();
    };
    let target = (base + niceness).min(NICEST);
    let mut lowered = Vec::new();
    for tid in new_threads_named(name, known) {
        let Some(pid) = Pid::from_raw(tid) else {
            continue;
        };
        let now = getpriority_process(Some(pid)).unwrap_or(target);
        if now >= target {
            lowered.push(tid);
            continue;
        }
        match setpriority_process(Some(pid), target) {
            Ok(()) => lowered.push(tid),
            Err(err) => {
                tracing::warn!(error = %err, tid, name, "could not lower a thread's priority")
            }
        }
    }
    lowered
}

/// The ids of this process's threads named `name`, other than those in
/// `known` (none without `/proc`).
pub(crate) fn new_threads_named(name: &str, known: &[i32]) -> Vec<i32> {
    threads_named(name)
        .into_iter()
        .filter(|tid| !known.contains(tid))
        .collect()
}

/// The ids of this process's threads named `name` (none without `/proc`).
pub(crate) fn threads_named(name: &str) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_new_named_thread_is_lowered_and_the_caller_and_known_ones_are_not() {
        let name = "nice-test-1";
        let (started, ready) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                started.send(()).unwrap();
                stopped.recv().ok();
            })
            .unwrap();
        ready.recv().unwrap();
        let base = getpriority_process(None).unwrap();
        let lowered_to = (base + 3).min(NICEST);

        let lowered = lower_new_threads_named(name, &[], 3);
        assert_eq!(lowered.len(), 1, "one thread has that name");
        let pid = Pid::from_raw(lowered[0]).unwrap();
        assert_eq!(getpriority_process(Some(pid)).unwrap(), lowered_to);
        assert_eq!(getpriority_process(None).unwrap(), base);
        // Asked again, it stays where it is; a known one is left out.
        assert_eq!(lower_new_threads_named(name, &[], 3), lowered);
        assert_eq!(getpriority_process(Some(pid)).unwrap(), lowered_to);
        assert!(lower_new_threads_named(name, &lowered, 3).is_empty());

        stop.send(()).unwrap();
        thread.join().unwrap();
    }
}
