//! A circuit breaker: closed while calls succeed, open (failing fast) after
//! a run of failures, half-open after a pause to let a few probes decide
//! whether to close again. Every state change is logged and counted.
//!
//! Only failures that say "the dependency is not answering" should be
//! recorded (timeouts, lost connections): a bad request says nothing about
//! the dependency's health and must not open the breaker.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures in a row (with no success between) that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker fails calls fast before it lets probes through.
    pub open_for: Duration,
    /// Calls let through at once while half-open; this many successes in a
    /// row close the breaker, one failure opens it again.
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            open_for: Duration::from_secs(5),
            half_open_probes: 3,
        }
    }
}

/// A breaker's state, as reported in metrics and `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// A few probe calls pass; the rest fail fast.
    HalfOpen,
    /// Calls fail fast.
    Open,
}

impl BreakerState {
    /// The name used in logs, metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Open => "open",
        }
    }

    /// The value of the `chat_breaker_state` gauge (0 closed, 1 half-open, 2 open).
    fn gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// A call was not made because the breaker is open (or its probes are taken).
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker {breaker} is open; retry in {retry_after:?}")]
pub struct BreakerOpen {
    /// Which breaker.
    pub breaker: &'static str,
    /// When the breaker lets a probe through at the earliest.
    pub retry_after: Duration,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { in_flight: u32, successes: u32 },
}

/// A circuit breaker; cheap to clone, clones share the state.
#[derive(Debug, Clone)]
pub struct Breaker {
    name: &'static str,
    config: BreakerConfig,
    inner: Arc<Mutex<Inner>>,
    /// The longest `retry_after` a refusal names, in ms: the open pause,
    /// unless a recovery probe watches the dependency (then callers are told
    /// to come back soon: the breaker may close long before its pause ends).
    hint_cap_ms: Arc<AtomicU64>,
}

impl Breaker {
    /// A closed breaker called `name` (the `breaker` label of its metrics).
    pub fn new(name: &'static str, config: BreakerConfig) -> Self {
        metrics::gauge!("chat_breaker_state", "breaker" => name).set(BreakerState::Closed.gauge());
        Breaker {
            name,
            config,
            inner: Arc::new(Mutex::new(Inner::Closed { failures: 0 })),
            hint_cap_ms: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The current state (an open breaker whose pause is over reads half-open).
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.expire_open(&mut inner);
        match *inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
        }
    }

    /// Runs `call` if the breaker lets it through and records its outcome:
    /// an error for which `is_failure` holds counts against the dependency,
    /// any other outcome for it. Fails fast with `E::from(BreakerOpen)` when
    /// the breaker is open. A call dropped before it finishes counts as
    /// neither.
    pub async fn run<T, E: From<BreakerOpen>>(
        &self,
        call: impl Future<Output = Result<T, E>>,
        is_failure: impl FnOnce(&E) -> bool,
    ) -> Result<T, E> {
        let permit = self.permit()?;
        let result = call.await;
        permit.finish(!matches!(&result, Err(err) if is_failure(err)));
        result
    }

    /// The dependency answered a health probe made outside the breaker: an
    /// open breaker lets its probes through now instead of waiting out its
    /// pause, so recovery follows the dependency, not a fixed time.
    pub fn dependency_answered(&self) {
        let mut inner = self.lock();
        if matches!(*inner, Inner::Open { .. }) {
            let next = Inner::HalfOpen {
                in_flight: 0,
                successes: 0,
            };
            self.transition(&mut inner, next);
        }
    }

    /// A handle that does not keep the breaker alive (for background probes).
    pub fn downgrade(&self) -> WeakBreaker {
        WeakBreaker {
            name: self.name,
            config: self.config,
            inner: Arc::downgrade(&self.inner),
            hint_cap_ms: Arc::clone(&self.hint_cap_ms),
        }
    }

    /// Leave to make one call, or why not.
    fn permit(&self) -> Result<Permit<'_>, BreakerOpen> {
        let mut inner = self.lock();
        self.expire_open(&mut inner);
        match &mut *inner {
            Inner::Closed { .. } => Ok(Permit {
                breaker: self,
                probe: false,
            }),
            Inner::HalfOpen { in_flight, .. } if *in_flight < self.config.half_open_probes => {
                *in_flight += 1;
                Ok(Permit {
                    breaker: self,
                    probe: true,
                })
            }
            Inner::HalfOpen { .. } => Err(self.rejected(self.config.open_for)),
            Inner::Open { until } => {
                Err(self.rejected(until.saturating_duration_since(Instant::now())))
            }
        }
    }

    fn rejected(&self, retry_after: Duration) -> BreakerOpen {
        let cap = Duration::from_millis(self.hint_cap_ms.load(Ordering::Relaxed));
        BreakerOpen {
            breaker: self.name,
            retry_after: retry_after.min(cap),
        }
    }

    /// Refusals name at most `cap` as their `retry_after` (see `hint_cap_ms`).
    pub fn cap_retry_hint(&self, cap: Duration) {
        let ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        self.hint_cap_ms.store(ms, Ordering::Relaxed);
    }

    /// Records the outcome of a call made with a permit.
    fn record(&self, probe: bool, success: bool) {
        let mut inner = self.lock();
        let next = match (&mut *inner, success) {
            (Inner::Closed { failures }, true) => {
                *failures = 0;
                None
            }
            (Inner::Closed { failures }, false) => {
                *failures += 1;
                (*failures >= self.config.failure_threshold).then(|| self.open_until())
            }
            (
                Inner::HalfOpen {
                    in_flight,
                    successes,
                },
                true,
            ) if probe => {
                *in_flight = in_flight.saturating_sub(1);
                *successes += 1;
                (*successes >= self.config.half_open_probes)
                    .then_some(Inner::Closed { failures: 0 })
            }
            (Inner::HalfOpen { .. }, false) => Some(self.open_until()),
            // A call let through before the breaker opened: its outcome is stale.
            _ => None,
        };
        if let Some(next) = next {
            self.transition(&mut inner, next);
        }
    }

    /// A probe dropped before it finished gives its place back.
    fn abandon_probe(&self) {
        if let Inner::HalfOpen { in_flight, .. } = &mut *self.lock() {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn open_until(&self) -> Inner {
        Inner::Open {
            until: Instant::now() + self.config.open_for,
        }
    }

    fn expire_open(&self, inner: &mut Inner) {
        if let Inner::Open { until } = inner
            && Instant::now() >= *until
        {
            let next = Inner::HalfOpen {
                in_flight: 0,
                successes: 0,
            };
            self.transition(inner, next);
        }
    }

    fn transition(&self, inner: &mut Inner, next: Inner) {
        *inner = next;
        let to = match inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
            Inner::Open { .. } => BreakerState::Open,
        };
        match to {
            BreakerState::Open => tracing::warn!(breaker = self.name, "circuit breaker opened"),
            _ => tracing::info!(
                breaker = self.name,
                to = to.as_str(),
                "circuit breaker changed state"
            ),
        }
        metrics::gauge!("chat_breaker_state", "breaker" => self.name).set(to.gauge());
        metrics::counter!("chat_breaker_transitions_total", "breaker" => self.name, "to" => to.as_str())
            .increment(1);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves a valid state: a panic elsewhere cannot break it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A breaker that may be gone: see [`Breaker::downgrade`].
#[derive(Debug, Clone)]
pub struct WeakBreaker {
    name: &'static str,
    config: BreakerConfig,
    inner: Weak<Mutex<Inner>>,
    hint_cap_ms: Arc<AtomicU64>,
}

impl WeakBreaker {
    /// The breaker, while anything else still holds it.
    pub fn upgrade(&self) -> Option<Breaker> {
        Some(Breaker {
            name: self.name,
            config: self.config,
            inner: self.inner.upgrade()?,
            hint_cap_ms: Arc::clone(&self.hint_cap_ms),
        })
    }
}

/// Leave for one call; reports its outcome exactly once.
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Permit<'_> {
    fn finish(mut self, success: bool) {
        // Taken so that the drop below does not give the probe back twice.
        let probe = std::mem::take(&mut self.probe);
        self.breaker.record(probe, success);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.abandon_probe();
        }
    }
}

#[cfg(test)]
#[path = "breaker_tests.rs"]
mod tests;
