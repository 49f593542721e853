//! Fault tolerance between services: circuit breakers, a retry budget with
//! jittered backoff for idempotent reads, and a durable store wrapped in both
//! with a deadline per call. Lives here, the lowest common dependency, so
//! msg-service and the gateway use the same pieces.

mod breaker;
mod deadline;
mod guarded_store;
mod recovery;
mod retry;

pub use breaker::{Breaker, BreakerConfig, BreakerOpen, BreakerState, WeakBreaker};
pub use deadline::within;
pub use guarded_store::{GuardedStore, GuardedStoreConfig};
pub use recovery::watch_recovery;
pub use retry::{RetryBudget, RetryPolicy, retry_idempotent, retry_when};
