//! The inbound frame budget of one socket: a token bucket, so a client that
//! sends frames (pings included) in a tight loop is cut off instead of
//! keeping a worker busy and its outgoing queue full.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket refilled continuously at `rate` per second up to `burst`.
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

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.refilled);
        self.refilled = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.rate).min(self.burst);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
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
        assert!((0..3).all(|_| budget.take()), "the burst passes");
        assert!(!budget.take(), "the fourth frame at once is refused");
        assert!(budget.retry_after() <= Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(budget.take(), "one token is back after 1/rate");
        assert!(!budget.take());
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_pause_refills_the_bucket_only_up_to_the_burst() {
        let mut budget = FrameBudget::new(10, 3);
        assert!((0..3).all(|_| budget.take()));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!((0..3).all(|_| budget.take()));
        assert!(!budget.take(), "no more than the burst was stored");
    }
}
