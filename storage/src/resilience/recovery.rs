//! Ending a breaker's pause as soon as its dependency answers again: a
//! background probe, made outside the breaker on a fresh connection, while
//! the breaker is open. Without it the breaker waits out its whole pause
//! (5 s by default) after the dependency is back, and its first probe may
//! meet a connection that still carries the old failure.

use std::future::Future;
use std::time::Duration;

use super::{Breaker, BreakerState};

/// The `retry_after` a watched breaker names at most.
const RETRY_HINT: Duration = Duration::from_millis(500);

/// While `breaker` is open, runs `probe` every `every`; when it answers
/// true, the breaker lets its probes through at once. Its refusals then
/// name at most half a second as `retry_after`. Stops by itself once nothing else
/// holds the breaker.
pub fn watch_recovery<F, Fut>(breaker: &Breaker, every: Duration, mut probe: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    // Callers turned away may come back well before the pause ends.
    breaker.cap_retry_hint(RETRY_HINT);
    let weak = breaker.downgrade();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(breaker) = weak.upgrade() else {
                return;
            };
            if breaker.state() == BreakerState::Open && probe().await {
                breaker.dependency_answered();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::resilience::{BreakerConfig, BreakerOpen};

    async fn opened_breaker() -> Breaker {
        let breaker = Breaker::new(
            "test",
            BreakerConfig {
                failure_threshold: 1,
                open_for: Duration::from_secs(5),
                half_open_probes: 1,
            },
        );
        let failed = BreakerOpen {
            breaker: "test",
            retry_after: Duration::ZERO,
        };
        let _ = breaker.run(async { Err::<(), _>(failed) }, |_| true).await;
        assert_eq!(breaker.state(), BreakerState::Open);
        breaker
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_lets_probes_through_once_its_dependency_answers() {
        let breaker = opened_breaker().await;
        let up = Arc::new(AtomicBool::new(false));
        let answers = Arc::clone(&up);
        watch_recovery(&breaker, Duration::from_millis(250), move || {
            let up = answers.load(Ordering::SeqCst);
            async move { up }
        });

        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            breaker.state(),
            BreakerState::Open,
            "still down: stays open"
        );
        up.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen,
            "the dependency answered: probes go through 1.3 s into a 5 s pause"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_watched_breaker_tells_callers_to_come_back_within_half_a_second() {
        let breaker = opened_breaker().await;
        watch_recovery(&breaker, Duration::from_millis(250), || async { false });
        let refused = breaker
            .run(async { Ok::<(), BreakerOpen>(()) }, |_| true)
            .await
            .expect_err("open");
        assert_eq!(
            refused.retry_after,
            Duration::from_millis(500),
            "not the 5 s pause"
        );
    }
}
