//! The inbound frame budget of one socket: a token bucket. A frame over it is
//! refused (`rate_limited`, with how long to wait), and a client that keeps
//! sending (pings included) in a tight loop is cut off instead of keeping a
//! worker busy and its outgoing queue full.

use std::time::Duration;

use tokio::time::Instant;

/// Frames a client may send while refused before it is closed: those it had
/// sent before it read its first refusal (a client pipelines requests; the
/// gateway queues 64 per socket). Fixed, not the burst: each refusal is an
/// answer in the socket's outgoing queue.
const REFUSALS_BEFORE_CLOSE: f64 = 50.0;

/// What the budget says of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the budget: the frame is served.
    Admit,
    /// Over it: the frame is refused, and the client is told to wait.
    Refuse,
    /// Over it by more than a client could have sent before it was told to
    /// wait: a client that does not wait. The socket is closed.
    Close,
}

/// A token bucket refilled continuously at `rate` per second up to `burst`.
/// A refused frame takes a token too, into debt: a client that waits out
/// `retry_after` is served again, and one that goes on sending is closed.
#[derive(Debug)]
pub struct FrameBudget {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl FrameBudget {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        FrameBudget {
            rate: f64::from(rate.max(1)),
            burst,
            tokens: burst,
            refilled: Instant::now(),
        }
    }

    /// Takes one token for a frame, and says what to do with it.
    pub fn take(&mut self) -> Verdict {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        let admitted = self.tokens >= 1.0;
        self.tokens -= 1.0;
        if admitted {
            Verdict::Admit
        } else if self.tokens < -REFUSALS_BEFORE_CLOSE {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }

    /// How long until one token is back.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens).max(0.0)) / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_allowed_then_frames_are_refused_until_the_bucket_refills() {
        let mut budget = FrameBudget::new(10, 3);
        assert!(
            (0..3).all(|_| budget.take() == Verdict::Admit),
            "the burst passes"
        );
        assert_eq!(budget.take(), Verdict::Refuse, "the fourth frame at once");
        let wait = budget.retry_after();
        assert_eq!(
            wait,
            Duration::from_millis(200),
            "the refused frame's token too"
        );
        tokio::time::advance(wait).await;
        assert_eq!(
            budget.take(),
            Verdict::Admit,
            "served after the wait it was told"
        );
        assert_eq!(budget.take(), Verdict::Refuse);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_wait_is_closed_after_50_refusals() {
        let mut budget = FrameBudget::new(10, 3);
        assert!((0..3).all(|_| budget.take() == Verdict::Admit));
        assert!(
            (0..50).all(|_| budget.take() == Verdict::Refuse),
            "50 frames are refused"
        );
        assert_eq!(budget.take(), Verdict::Close, "then the socket is closed");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_waits_as_told_is_never_closed() {
        let mut budget = FrameBudget::new(10, 3);
        let mut refused = 0;
        for _ in 0..100 {
            match budget.take() {
                Verdict::Admit => {}
                Verdict::Refuse => {
                    refused += 1;
                    tokio::time::advance(budget.retry_after()).await;
                }
                Verdict::Close => panic!("closed a client that waited"),
            }
        }
        assert!(refused > 0, "the test went past the burst");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_pause_refills_the_bucket_only_up_to_the_burst() {
        let mut budget = FrameBudget::new(10, 3);
        assert!((0..3).all(|_| budget.take() == Verdict::Admit));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((0..3).all(|_| budget.take() == Verdict::Admit));
        assert_eq!(
            budget.take(),
            Verdict::Refuse,
            "no more than the burst was stored"
        );
    }
}
