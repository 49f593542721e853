//! Bulkheads: a concurrency limit per kind of work (send, sync, history,
//! fan-out) with a bounded queue in front of it, so that a flood of one kind
//! takes only its own slots and the excess is turned away at once with
//! `unavailable` and a retry delay, instead of piling up and starving the
//! other kinds.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

use crate::{Error, Result};

/// The limits of one bulkhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadConfig {
    /// Calls running at once.
    pub concurrency: usize,
    /// Calls waiting for a slot at most; one more is turned away at once.
    pub queue: usize,
}

impl std::str::FromStr for BulkheadConfig {
    type Err = String;

    /// `CONCURRENCY:QUEUE`, e.g. `64:128`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (concurrency, queue) = s
            .split_once(':')
            .ok_or_else(|| format!("expected CONCURRENCY:QUEUE, got {s:?}"))?;
        let number = |n: &str| n.trim().parse::<usize>().map_err(|e| format!("{n:?}: {e}"));
        let concurrency = number(concurrency)?;
        if concurrency == 0 {
            return Err("the concurrency must be at least 1".into());
        }
        Ok(BulkheadConfig::new(concurrency, number(queue)?))
    }
}

impl BulkheadConfig {
    /// `concurrency` slots and a queue of `queue`.
    pub const fn new(concurrency: usize, queue: usize) -> Self {
        BulkheadConfig { concurrency, queue }
    }
}

/// Every slot and every place in the queue was taken.
#[derive(Debug, thiserror::Error)]
#[error("the {bulkhead} bulkhead is full ({concurrency} running, {queue} waiting)")]
pub struct BulkheadFull {
    bulkhead: &'static str,
    concurrency: usize,
    queue: usize,
}

/// How long a turned-away client should wait: short, the queue drains fast.
const RETRY_AFTER_MS: u64 = 200;

/// One bulkhead; its metrics carry its name.
pub(crate) struct Bulkhead {
    name: &'static str,
    config: BulkheadConfig,
    slots: Semaphore,
    waiting: AtomicUsize,
    /// Registered once (the recorder is installed before any bulkhead is
    /// made): a registry lookup per call was 2% of a send's CPU.
    in_flight: metrics::Gauge,
    queue_depth: metrics::Gauge,
}

impl Bulkhead {
    pub(crate) fn new(name: &'static str, config: BulkheadConfig) -> Self {
        let config = BulkheadConfig::new(config.concurrency.max(1), config.queue);
        Bulkhead {
            name,
            config,
            slots: Semaphore::new(config.concurrency),
            waiting: AtomicUsize::new(0),
            in_flight: metrics::gauge!("chat_bulkhead_in_flight", "bulkhead" => name),
            queue_depth: metrics::gauge!("chat_bulkhead_queue_depth", "bulkhead" => name),
        }
    }

    /// Runs `work` in a slot, after waiting in the queue if there is room;
    /// else fails at once with `unavailable`.
    pub(crate) async fn run<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let permit = match self.slots.try_acquire() {
            Ok(permit) => permit,
            Err(_) => self.wait_for_slot().await?,
        };
        self.gauge_in_flight();
        let outcome = work.await;
        drop(permit);
        self.gauge_in_flight();
        outcome
    }

    async fn wait_for_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        let queued = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(self);
        if queued >= self.config.queue {
            metrics::counter!("chat_bulkhead_rejections_total", "bulkhead" => self.name)
                .increment(1);
            return Err(self.full());
        }
        self.gauge_queue();
        self.slots.acquire().await.map_err(|_| self.full())
    }

    fn full(&self) -> Error {
        let full = BulkheadFull {
            bulkhead: self.name,
            concurrency: self.config.concurrency,
            queue: self.config.queue,
        };
        Error::Unavailable {
            retry_after_ms: RETRY_AFTER_MS,
            source: storage::Error::Unavailable(Box::new(full)),
        }
    }

    fn gauge_in_flight(&self) {
        let in_flight = self.config.concurrency - self.slots.available_permits();
        self.in_flight.set(in_flight as f64);
    }

    fn gauge_queue(&self) {
        let depth = self.waiting.load(Ordering::SeqCst).min(self.config.queue);
        self.queue_depth.set(depth as f64);
    }
}

/// Leaves the queue however the wait ends (a slot, a rejection, or the
/// caller giving up).
struct Leave<'a>(&'a Bulkhead);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.gauge_queue();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::sync::{mpsc, oneshot};

    use super::*;

    /// Starts a call that holds its slot until the returned sender fires;
    /// returns once the call runs.
    async fn hold(b: &std::sync::Arc<Bulkhead>) -> oneshot::Sender<()> {
        let (release, released) = oneshot::channel::<()>();
        let (running_tx, mut running) = mpsc::channel(1);
        let b = std::sync::Arc::clone(b);
        tokio::spawn(async move {
            b.run(async move {
                running_tx.send(()).await.ok();
                released.await.ok();
                Ok(())
            })
            .await
        });
        running.recv().await.unwrap();
        release
    }

    #[tokio::test]
    async fn a_full_bulkhead_with_a_full_queue_turns_a_call_away_at_once() {
        let b = std::sync::Arc::new(Bulkhead::new("test", BulkheadConfig::new(1, 0)));
        let _held = hold(&b).await;
        let err = b.run(async { Ok(()) }).await.unwrap_err();
        assert_eq!(err.code(), proto::ErrorCode::Unavailable);
        assert_eq!(err.retry_after_ms(), Some(RETRY_AFTER_MS));
    }

    #[test]
    fn limits_parse_as_concurrency_colon_queue() {
        assert_eq!("64:128".parse(), Ok(BulkheadConfig::new(64, 128)));
        assert!("0:10".parse::<BulkheadConfig>().is_err());
        assert!("64".parse::<BulkheadConfig>().is_err());
        assert!("a:1".parse::<BulkheadConfig>().is_err());
    }

    #[tokio::test]
    async fn a_queued_call_runs_when_a_slot_frees() {
        let b = std::sync::Arc::new(Bulkhead::new("test", BulkheadConfig::new(1, 1)));
        let held = hold(&b).await;
        let queued = tokio::spawn({
            let b = std::sync::Arc::clone(&b);
            async move { b.run(async { Ok(7) }).await }
        });
        drop(held);
        assert_eq!(queued.await.unwrap().unwrap(), 7);
    }
}
