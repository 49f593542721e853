//! A low-priority runtime for work that comes in floods and must not take
//! the CPU from the write path: history pages. Its threads run under
//! SCHED_IDLE (and at a higher nice value, where that policy is refused):
//! a send, sync or notify that wakes up preempts them at once, so a history
//! flood slows history down, not sends. At most `max_queued` pieces of work
//! wait or run there; beyond, work is turned away, and work whose caller
//! went away is cancelled.

use std::future::Future;
use std::sync::Arc;

use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};
use tokio::runtime::{Builder, Handle, Runtime};
use tokio::sync::Semaphore;

/// A runtime whose worker threads run at the lowest priority.
#[derive(Debug)]
pub struct LowPriority {
    runtime: Option<Runtime>,
    handle: Handle,
    /// Work waiting or running here.
    queued: Semaphore,
}

/// Why work did not finish on the low-priority runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRun {
    /// `max_queued` pieces of work were there already.
    Full,
    /// It panicked, or the runtime is shutting down.
    Failed,
}

impl LowPriority {
    /// `threads` worker threads named `name`, under SCHED_IDLE, or at nice
    /// `nice` (1-19) if that policy is refused (lowering a thread's own
    /// priority needs no privilege); at most `max_queued` pieces of work.
    pub fn start(
        name: &str,
        threads: usize,
        nice: i32,
        max_queued: usize,
    ) -> std::io::Result<Arc<Self>> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .on_thread_start(move || lower_this_thread(nice))
            .build()?;
        Ok(Arc::new(LowPriority {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            queued: Semaphore::new(max_queued.max(1)),
        }))
    }

    /// Runs `work` on this runtime and waits for it here. Dropping the
    /// returned future (the caller went away) cancels the work.
    pub async fn run<T, F>(&self, work: F) -> Result<T, NotRun>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        let Ok(_slot) = self.queued.try_acquire() else {
            return Err(NotRun::Full);
        };
        let task = self.handle.spawn(work);
        let _cancel = AbortOnDrop(task.abort_handle());
        task.await.map_err(|err| {
            tracing::error!(error = %err, "background work did not finish");
            NotRun::Failed
        })
    }
}

/// SCHED_IDLE for the calling thread; a nice value where that is refused.
fn lower_this_thread(nice: i32) {
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle).is_ok() {
        return;
    }
    if let Err(err) = rustix::process::setpriority_process(None, nice) {
        tracing::warn!(error = %err, "a background thread keeps its priority");
    }
}

/// Cancels a task when dropped (a no-op once it has finished).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Drop for LowPriority {
    fn drop(&mut self) {
        // Without blocking: this may be dropped inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use thread_priority::thread_schedule_policy;
    use tokio::sync::oneshot;

    use super::*;

    fn idle() -> ThreadSchedulePolicy {
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
    }

    #[tokio::test]
    async fn work_runs_on_threads_at_the_idle_priority_and_the_caller_keeps_its_own() {
        let background = LowPriority::start("test-low", 1, 7, 8).expect("a runtime");
        let policy = background
            .run(async { thread_schedule_policy() })
            .await
            .expect("the work finished")
            .expect("its policy is readable");
        assert_eq!(policy, idle());
        let here = thread_schedule_policy().expect("readable");
        assert_ne!(here, idle(), "the caller's thread is left alone");
    }

    #[tokio::test]
    async fn work_beyond_the_queue_bound_is_turned_away() {
        let background = LowPriority::start("test-low", 1, 7, 1).expect("a runtime");
        let (started, has_started) = oneshot::channel::<()>();
        let (release, released) = oneshot::channel::<()>();
        let first = {
            let background = Arc::clone(&background);
            tokio::spawn(async move {
                let work = async move {
                    let _ = started.send(());
                    released.await.is_ok()
                };
                background.run(work).await
            })
        };
        has_started
            .await
            .expect("the first runs, holding the one place");
        assert_eq!(background.run(async {}).await, Err(NotRun::Full));
        let _ = release.send(());
        assert_eq!(first.await.expect("joined"), Ok(true));
        assert_eq!(background.run(async { 1 }).await, Ok(1), "room again");
    }

    #[tokio::test]
    async fn work_whose_caller_went_away_is_cancelled() {
        struct Dropped(Option<oneshot::Sender<()>>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                if let Some(tell) = self.0.take() {
                    let _ = tell.send(());
                }
            }
        }
        let background = LowPriority::start("test-low", 1, 7, 8).expect("a runtime");
        let (tell, told) = oneshot::channel();
        let (started, has_started) = oneshot::channel();
        let never = async move {
            let _guard = Dropped(Some(tell));
            let _ = started.send(());
            std::future::pending::<()>().await;
        };
        let caller = {
            let background = Arc::clone(&background);
            tokio::spawn(async move { background.run(never).await })
        };
        has_started.await.expect("the work started");
        caller.abort();
        tokio::time::timeout(Duration::from_secs(5), told)
            .await
            .expect("the work was dropped within 5 s")
            .expect("told");
    }
}
