//! Retries of idempotent calls: exponential backoff with full jitter (a
//! random delay between zero and the exponential step, so that clients that
//! failed together do not retry together), and a budget shared by all calls
//! so that retries cannot multiply the load on a dependency that struggles.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use rand::Rng;

use crate::{Error, Result};

/// How a call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt, at most.
    pub max_retries: usize,
    /// The first backoff step (the delay is drawn from zero up to it).
    pub min_delay: Duration,
    /// The largest backoff step.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(500),
        }
    }
}

/// A token bucket of retries: every first attempt adds `ratio` of a token,
/// every retry takes a whole one, so that retries add at most `ratio` to
/// the call volume (plus the initial `reserve`, which lets a quiet service
/// retry at all). Cheap to clone; clones share the bucket.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    reserve: f64,
    tokens: Arc<Mutex<f64>>,
}

impl RetryBudget {
    /// A budget of `ratio` retries per call (e.g. 0.1), holding at most
    /// `reserve` tokens, full at the start.
    pub fn new(ratio: f64, reserve: u32) -> Self {
        let reserve = f64::from(reserve.max(1));
        RetryBudget {
            ratio: ratio.clamp(0.0, 1.0),
            reserve,
            tokens: Arc::new(Mutex::new(reserve)),
        }
    }

    fn deposit(&self) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        *tokens = (*tokens + self.ratio).min(self.reserve);
    }

    /// Takes a token for one retry; false when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for RetryBudget {
    /// Retries add at most 10% to the calls, after a reserve of 20.
    fn default() -> Self {
        RetryBudget::new(0.1, 20)
    }
}

/// A delay drawn uniformly from zero up to `step` ("full jitter").
fn full_jitter(step: Duration) -> Duration {
    let millis = u64::try_from(step.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(0..=millis))
}

/// Runs `attempt`, and again after a jittered backoff while it fails with a
/// retryable storage error, the policy allows and the budget has a token.
/// Only for calls that may run twice with the same effect.
pub async fn retry_idempotent<T, F, Fut>(
    call: &'static str,
    policy: &RetryPolicy,
    budget: &RetryBudget,
    attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    retry_when(call, policy, budget, worth_retrying, attempt).await
}

/// The same for any error type: `retryable` says which errors may pass on
/// a retry. Counts retries in `chat_retries_total{call}` and refusals for
/// want of budget in `chat_retry_budget_exhausted_total`.
pub async fn retry_when<T, E, F, Fut>(
    call: &'static str,
    policy: &RetryPolicy,
    budget: &RetryBudget,
    retryable: impl Fn(&E) -> bool,
    attempt: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    budget.deposit();
    let steps = ExponentialBuilder::new()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_max_times(policy.max_retries)
        .build()
        .map(full_jitter as fn(Duration) -> Duration);
    attempt
        .retry(steps)
        .when(|err: &E| retryable(err) && spend(budget))
        .notify(|_, _| metrics::counter!("chat_retries_total", "call" => call).increment(1))
        .await
}

/// Retryable, and not turned away by an open breaker (which will not be
/// closed again within a backoff step).
fn worth_retrying(err: &Error) -> bool {
    err.is_retryable() && err.breaker_retry_after().is_none()
}

fn spend(budget: &RetryBudget) -> bool {
    let granted = budget.withdraw();
    if !granted {
        metrics::counter!("chat_retry_budget_exhausted_total").increment(1);
    }
    granted
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn down() -> Error {
        Error::Unavailable("down".into())
    }

    async fn failing(budget: &RetryBudget, attempts: &AtomicUsize) -> Result<()> {
        retry_idempotent("test", &RetryPolicy::default(), budget, || async {
            attempts.fetch_add(1, Ordering::SeqCst);
            Err(down())
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_retryable_failure_is_retried_up_to_the_policy_then_returned() {
        let attempts = AtomicUsize::new(0);
        let err = failing(&RetryBudget::default(), &attempts)
            .await
            .unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_recovers_returns_its_value() {
        let attempts = AtomicUsize::new(0);
        let value = retry_idempotent(
            "test",
            &RetryPolicy::default(),
            &RetryBudget::default(),
            || async {
                match attempts.fetch_add(1, Ordering::SeqCst) {
                    0 => Err(down()),
                    _ => Ok(7),
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(value, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_that_is_not_retryable_is_returned_at_once() {
        let attempts = AtomicUsize::new(0);
        let err = retry_idempotent(
            "test",
            &RetryPolicy::default(),
            &RetryBudget::default(),
            || async {
                attempts.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(Error::BadData("no".into()))
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::BadData(_)));
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_budget_is_spent() {
        let budget = RetryBudget::new(0.1, 4);
        let attempts = AtomicUsize::new(0);
        for _ in 0..100 {
            failing(&budget, &attempts).await.unwrap_err();
        }
        // 100 calls: 4 retries from the reserve, then 0.1 per call.
        let retries = attempts.load(Ordering::SeqCst) - 100;
        assert!(retries <= 4 + 10, "{retries} retries for 100 calls");
        assert!(
            retries >= 10,
            "{retries} retries: the budget never refilled"
        );
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_step() {
        for _ in 0..1000 {
            assert!(full_jitter(Duration::from_millis(100)) <= Duration::from_millis(100));
        }
    }
}
