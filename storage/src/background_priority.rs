//! A lower CPU priority for the embedded store engine's background threads
//! (fjall's flush and compaction workers): on a busy machine their bursts
//! take the CPU from the threads that deliver messages, and a flush or a
//! compaction can wait a little where a delivery cannot. At 12,000 msg/s on
//! 2 cores (4 alternating runs each), nice 10 for them took the delivery
//! p99 from 24-54 ms to 20-23 and the max from 66-203 ms to 57-70. In the
//! gateway the lowering then missed the workers (see [`NAMING_WAIT`]); once
//! it found them (2026-12-07), a pairs run at 16,000 msg/s after a fill went
//! from a delivery p99 of 133-268 ms to 21-38, and at 12,000 from 20-26 to
//! 12-13.

use std::time::{Duration, Instant};

use rustix::process::{Pid, getpriority_process, setpriority_process};

/// How much nicer than the calling thread the background threads run.
pub(crate) const BACKGROUND_NICENESS: i32 = 10;

/// The highest nice value Linux knows.
const NICEST: i32 = 19;

/// How long a new thread may take to name itself. A thread takes its name
/// as it starts running, so right after its spawner returns it may still
/// carry the spawner's: looking for the name at once missed the engine's
/// workers in the gateway (they ran at nice 0 while the store's test found
/// them lowered).
const NAMING_WAIT: Duration = Duration::from_millis(500);

/// Lowers the priority of the threads of this process named `name` that
/// started after `before` (every thread id then, from [`thread_ids`]) to
/// `niceness` below the calling thread's (Linux keeps a nice value per
/// thread), unless they are that low already; returns their ids. New threads
/// still carrying the calling thread's name are waited for, up to
/// [`NAMING_WAIT`]. Best effort: where `/proc` or `setpriority` is not
/// there, nothing changes.
pub(crate) fn lower_new_threads_named(name: &str, before: &[i32], niceness: i32) -> Vec<i32> {
    let Ok(base) = getpriority_process(None) else {
        return Vec::new();
    };
    let target = (base + niceness).min(NICEST);
    let mut lowered = Vec::new();
    for tid in new_threads_named(name, before) {
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

/// The threads not in `before` that are named `name`, once every new thread
/// has taken a name of its own (or [`NAMING_WAIT`] has passed).
fn new_threads_named(name: &str, before: &[i32]) -> Vec<i32> {
    let Some(spawner) = read_comm("/proc/thread-self/comm") else {
        return Vec::new();
    };
    let deadline = Instant::now() + NAMING_WAIT;
    let mut unnamed: Vec<i32> = thread_ids()
        .into_iter()
        .filter(|tid| !before.contains(tid))
        .collect();
    let mut found = Vec::new();
    loop {
        unnamed.retain(|&tid| match comm_of(tid) {
            None => false,
            Some(comm) if comm == spawner => true,
            Some(comm) => {
                if comm == name {
                    found.push(tid);
                }
                false
            }
        });
        if unnamed.is_empty() || Instant::now() >= deadline {
            return found;
        }
        std::thread::yield_now();
    }
}

/// The ids of this process's threads (none without `/proc`).
pub(crate) fn thread_ids() -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .collect()
}

/// The name of one of this process's threads; `None` once it has exited.
fn comm_of(tid: i32) -> Option<String> {
    read_comm(&format!("/proc/self/task/{tid}/comm"))
}

fn read_comm(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|comm| comm.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Spawns a thread named `name` that runs until `stop` is dropped or
    /// sent to; the spawner does not wait for it to start.
    fn spawn_named(name: &str) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                stopped.recv().ok();
            })
            .unwrap();
        (thread, stop)
    }

    #[test]
    fn a_new_named_thread_is_lowered_even_before_it_has_named_itself() {
        let name = "nice-test-1";
        let before = thread_ids();
        let (thread, stop) = spawn_named(name);
        let (other, stop_other) = spawn_named("nice-test-other");
        let base = getpriority_process(None).unwrap();
        let lowered_to = (base + 3).min(NICEST);

        let lowered = lower_new_threads_named(name, &before, 3);

        assert_eq!(lowered.len(), 1, "one new thread has that name");
        let pid = Pid::from_raw(lowered[0]).unwrap();
        assert_eq!(getpriority_process(Some(pid)).unwrap(), lowered_to);
        assert_eq!(getpriority_process(None).unwrap(), base);
        // Asked again, it stays where it is; one known before is left out.
        assert_eq!(lower_new_threads_named(name, &before, 3), lowered);
        assert_eq!(getpriority_process(Some(pid)).unwrap(), lowered_to);
        assert!(lower_new_threads_named(name, &thread_ids(), 3).is_empty());

        for (thread, stop) in [(thread, stop), (other, stop_other)] {
            stop.send(()).unwrap();
            thread.join().unwrap();
        }
    }
}
