//! The durable store behind a circuit breaker, with a deadline on every call
//! and budgeted retries of the reads. Writes are never retried here: a send
//! that fails answers `unavailable`, and the client retries it with the same
//! client_msg_id, which dedup makes safe.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    Breaker, BreakerConfig, RetryBudget, RetryPolicy, retry_idempotent, watch_recovery, within,
};
use crate::layered::{CallKind, StoreCall};
use crate::{Error, MessageStore, Result};

/// Deadline, breaker and retries of a [`GuardedStore`].
#[derive(Debug, Clone)]
pub struct GuardedStoreConfig {
    /// The longest one store call may take before it fails as `Unavailable`
    /// (default 2 s).
    pub timeout: Duration,
    /// When the `store` breaker opens.
    pub breaker: BreakerConfig,
    /// How reads are retried.
    pub retry: RetryPolicy,
    /// The budget reads' retries draw on.
    pub budget: RetryBudget,
}

impl Default for GuardedStoreConfig {
    fn default() -> Self {
        GuardedStoreConfig {
            timeout: Duration::from_secs(2),
            breaker: BreakerConfig::default(),
            retry: RetryPolicy::default(),
            budget: RetryBudget::default(),
        }
    }
}

/// How often a watched breaker's store is probed while it is open.
pub const RECOVERY_PROBE_EVERY: Duration = Duration::from_millis(200);

/// A store call outlived its deadline.
#[derive(Debug, thiserror::Error)]
#[error("a store call took longer than {0:?}")]
pub struct StoreTimedOut(Duration);

/// A [`MessageStore`] that fails fast while its dependency is down.
pub struct GuardedStore {
    inner: Arc<dyn MessageStore>,
    breaker: Breaker,
    config: GuardedStoreConfig,
    /// `chat_store_writes_total` by call, each registered once: the
    /// recorder's lookup per write cost more than the rest of this wrapper.
    write_counters: Mutex<HashMap<&'static str, metrics::Counter>>,
}

impl GuardedStore {
    /// Wraps `inner`; its breaker is called `store`.
    pub fn new(inner: Arc<dyn MessageStore>, config: GuardedStoreConfig) -> Self {
        GuardedStore {
            inner,
            breaker: Breaker::new("store", config.breaker),
            config,
            write_counters: Mutex::default(),
        }
    }

    /// The breaker, for readiness and tests.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Ends the breaker's pause as soon as the store answers a read again
    /// (one read every [`RECOVERY_PROBE_EVERY`] while the breaker is open,
    /// outside it, within the deadline) rather than after the whole pause:
    /// a fan-out held up by a 3 s stall is not held for 5 s more. Refusals
    /// meanwhile name at most half a second as `retry_after`. A store that
    /// answers reads but still stalls writes opens it again at the next
    /// timeouts. Needs a tokio runtime.
    pub fn watch_recovery(&self) {
        let inner = Arc::downgrade(&self.inner);
        let timeout = self.config.timeout;
        watch_recovery(&self.breaker, RECOVERY_PROBE_EVERY, move || {
            let inner = inner.upgrade();
            async move {
                let Some(inner) = inner else {
                    return false;
                };
                let read = tokio::time::timeout(timeout, inner.retry_checkpoint());
                matches!(read.await, Ok(Ok(_)))
            }
        });
    }

    /// One call: through the breaker, within the deadline.
    async fn call<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let timeout = self.config.timeout;
        let bounded = async move {
            within(timeout, call)
                .await
                .map_err(|_| Error::unavailable(StoreTimedOut(timeout)))?
        };
        self.breaker.run(bounded, Error::is_retryable).await
    }

    /// Counts one write by `call`.
    fn count_write(&self, call: &'static str) {
        let mut counters = self
            .write_counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        counters
            .entry(call)
            .or_insert_with(|| metrics::counter!("chat_store_writes_total", "call" => call))
            .increment(1);
    }

    /// What happens around each store call: reads are retried, writes not.
    async fn around<T, F, Fut>(&self, call: StoreCall, mut run: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        match call.kind {
            CallKind::Read | CallKind::Page => self.read(call.name, run).await,
            CallKind::Write => {
                // Every write, by method: what a feature costs the store.
                self.count_write(call.name);
                self.call(run()).await
            }
        }
    }

    /// An idempotent read: a call, retried within the policy and budget.
    async fn read<T, F, Fut>(&self, name: &'static str, mut read: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let (policy, budget) = (&self.config.retry, &self.config.budget);
        retry_idempotent(name, policy, budget, || self.call(read())).await
    }
}

crate::layered::layered_store!(GuardedStore);

#[cfg(test)]
#[path = "guarded_store_tests.rs"]
mod tests;
