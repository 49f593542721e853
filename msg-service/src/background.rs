//! A low-priority runtime for work that comes in floods and must not take
//! the CPU from the write path: history pages. Its threads run at a higher
//! nice value (on Linux a per-thread attribute), so when the cores are busy
//! the kernel runs sends, syncs and notifies first: a history flood slows
//! history down, not sends.

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Builder, Handle, Runtime};

/// A runtime whose worker threads run at a lowered priority.
#[derive(Debug)]
pub struct LowPriority {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl LowPriority {
    /// `threads` worker threads named `name`, each at nice `nice` (1-19;
    /// lowering a thread's own priority needs no privilege).
    pub fn start(name: &str, threads: usize, nice: i32) -> std::io::Result<Arc<Self>> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(name)
            .enable_all()
            .on_thread_start(move || {
                if let Err(err) = rustix::process::setpriority_process(None, nice) {
                    tracing::warn!(error = %err, "a background thread keeps its priority");
                }
            })
            .build()?;
        Ok(Arc::new(LowPriority {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        }))
    }

    /// Runs `work` on this runtime and waits for it here. `None` when it
    /// could not finish there (it panicked, or the runtime is shutting down).
    pub async fn run<T, F>(&self, work: F) -> Option<T>
    where
        T: Send + 'static,
        F: Future<Output = T> + Send + 'static,
    {
        match self.handle.spawn(work).await {
            Ok(value) => Some(value),
            Err(err) => {
                tracing::error!(error = %err, "background work did not finish");
                None
            }
        }
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
    use super::*;

    #[tokio::test]
    async fn work_runs_on_threads_at_the_lowered_priority() {
        let background = LowPriority::start("test-low", 1, 7).expect("a runtime");
        let nice = background
            .run(async { rustix::process::getpriority_process(None) })
            .await
            .expect("the work finished")
            .expect("its priority is readable");
        assert_eq!(nice, 7);
        let here = rustix::process::getpriority_process(None).expect("readable");
        assert_ne!(here, 7, "the caller's thread is left alone");
    }
}
