//! Bulkheads for the Scylla store: a bounded number of requests in flight
//! per class (reads, writes, LWTs), a bounded wait for a slot, and a
//! deadline on every request, so a slow cluster turns requests away fast
//! (`Unavailable`, retryable) instead of piling them up, and a flood of
//! history reads cannot take the slots that sends need.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::{Error, Result};

/// The kinds of requests that get separate limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Selects.
    Read,
    /// Inserts, deletes and batches.
    Write,
    /// Conditional updates (Paxos rounds: few, slow, and never to starve).
    Lwt,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Lwt => "LWT",
        })
    }
}

/// Requests in flight per class, and how long one waits for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Selects in flight at most.
    pub reads: usize,
    /// Writes in flight at most.
    pub writes: usize,
    /// Conditional updates in flight at most.
    pub lwts: usize,
    /// How long a request waits for a slot before it is turned away (zero:
    /// turned away at once when the class is full).
    pub queue_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            reads: 512,
            writes: 512,
            lwts: 64,
            queue_wait: Duration::from_millis(100),
        }
    }
}

/// Every slot of a class was taken for longer than the queue wait.
#[derive(Debug, thiserror::Error)]
#[error("{limit} Scylla {class} requests already in flight; turned away after {waited:?}")]
pub struct Overloaded {
    class: String,
    limit: usize,
    waited: Duration,
}

/// A request outlived the store's deadline (the driver's own timeout failed
/// to end it first).
#[derive(Debug, thiserror::Error)]
#[error("a Scylla {class} request took longer than {after:?}")]
pub struct TimedOut {
    class: String,
    after: Duration,
}

/// The store's bulkheads; cheap to clone, shared by clones of the store.
#[derive(Clone)]
pub(crate) struct Bulkhead {
    reads: Arc<Semaphore>,
    writes: Arc<Semaphore>,
    lwts: Arc<Semaphore>,
    limits: Limits,
    /// The deadline of one request, slot wait excluded.
    deadline: Duration,
}

impl Bulkhead {
    pub(crate) fn new(limits: Limits, deadline: Duration) -> Self {
        let slots = |n: usize| Arc::new(Semaphore::new(n.max(1)));
        Bulkhead {
            reads: slots(limits.reads),
            writes: slots(limits.writes),
            lwts: slots(limits.lwts),
            limits,
            deadline,
        }
    }

    fn slots(&self, class: Class) -> (&Semaphore, usize) {
        match class {
            Class::Read => (&self.reads, self.limits.reads),
            Class::Write => (&self.writes, self.limits.writes),
            Class::Lwt => (&self.lwts, self.limits.lwts),
        }
    }

    /// Runs one request of `class` in a slot, within the deadline.
    pub(crate) async fn run<T>(
        &self,
        class: Class,
        request: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let (slots, limit) = self.slots(class);
        // `timeout` polls the acquire first, so a zero wait still takes a
        // free slot.
        let permit = match tokio::time::timeout(self.limits.queue_wait, slots.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(closed)) => return Err(Error::unavailable(closed)),
            Err(_) => {
                return Err(Error::unavailable(Overloaded {
                    class: class.to_string(),
                    limit,
                    waited: self.limits.queue_wait,
                }));
            }
        };
        let outcome = tokio::time::timeout(self.deadline, request).await;
        drop(permit);
        outcome.map_err(|_| {
            Error::unavailable(TimedOut {
                class: class.to_string(),
                after: self.deadline,
            })
        })?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn small() -> Bulkhead {
        let limits = Limits {
            reads: 1,
            writes: 1,
            lwts: 1,
            queue_wait: Duration::from_millis(50),
        };
        Bulkhead::new(limits, Duration::from_secs(1))
    }

    /// Occupies the only slot of `class` until the returned sender is dropped.
    async fn hold(b: &Bulkhead, class: Class) -> tokio::sync::oneshot::Sender<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let b = b.clone();
        tokio::spawn(async move { b.run(class, async { Ok(rx.await.ok()) }).await });
        tokio::task::yield_now().await;
        tx
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_class_turns_requests_away_after_the_queue_wait() {
        let b = small();
        let _held = hold(&b, Class::Read).await;
        let started = tokio::time::Instant::now();
        let err = b.run(Class::Read, async { Ok(()) }).await.unwrap_err();
        assert!(err.is_retryable());
        assert!(err.to_string().contains("turned away"), "{err}");
        assert_eq!(started.elapsed(), Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_class_leaves_the_other_classes_alone() {
        let b = small();
        let _reads = hold(&b, Class::Read).await;
        b.run(Class::Write, async { Ok(()) }).await.unwrap();
        b.run(Class::Lwt, async { Ok(()) }).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_is_given_back_when_its_request_ends() {
        let b = small();
        let held = hold(&b, Class::Write).await;
        drop(held);
        tokio::task::yield_now().await;
        assert_eq!(b.run(Class::Write, async { Ok(7) }).await.unwrap(), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_is_a_retryable_timeout() {
        let b = small();
        let slow = b.run(Class::Read, async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        let err = slow.await.unwrap_err();
        assert!(err.is_retryable());
        assert!(err.to_string().contains("took longer"), "{err}");
        b.run(Class::Read, async { Ok(()) }).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_queue_wait_still_takes_a_free_slot() {
        let limits = Limits {
            queue_wait: Duration::ZERO,
            ..Limits::default()
        };
        let b = Bulkhead::new(limits, Duration::from_secs(1));
        b.run(Class::Read, async { Ok(()) }).await.unwrap();
    }
}
