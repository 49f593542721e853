//! Per-user rate of history reads: the message service's per-user token
//! bucket ([`UserRate`]). A read over the rate is answered 429 only after a
//! delay (a tarpit, jittered), so a client that fires again the moment it is
//! refused cannot turn cheap refusals into a flood of its own: with N
//! requests in flight it gets about N refusals per delay, whatever the
//! server's speed.

use std::time::Duration;

use msg_service::UserRate;
use proto::UserId;
use rand::Rng;

/// Token buckets of history reads, one per user, and the refusal delay.
pub struct ReadRate {
    rate: UserRate,
    refusal_delay: Duration,
}

impl ReadRate {
    /// `per_second` refill, bursts of `burst`; refusals wait `refusal_delay`.
    pub fn new(per_second: u32, burst: u32, refusal_delay: Duration) -> Self {
        ReadRate {
            rate: UserRate::new(per_second, burst),
            refusal_delay,
        }
    }

    /// Takes one read from `user`'s bucket. When it is empty, waits 50-150%
    /// of the refusal delay, then says how long until the next read is allowed.
    pub async fn admit(&self, user: &UserId) -> Result<(), Duration> {
        let Err(wait) = self.rate.check(user) else {
            return Ok(());
        };
        let delay = self.delay_refusal().await;
        Err(wait.saturating_sub(delay))
    }

    /// Waits 50-150% of the refusal delay (jittered, so refusals of requests
    /// that came together do not return together and come back as one
    /// wave); returns how long it waited. Also for reads the message
    /// service turned away (its history bulkhead full): answered at once, a
    /// client that retries at once would spin on them.
    pub async fn delay_refusal(&self) -> Duration {
        let delay = self
            .refusal_delay
            .mul_f64(rand::rng().random_range(0.5..1.5));
        tokio::time::sleep(delay).await;
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("a valid id")
    }

    #[tokio::test]
    async fn a_user_past_the_burst_is_refused_after_the_delay_and_others_are_not() {
        let rate = ReadRate::new(1, 2, Duration::from_millis(50));
        let alice = user("alice");
        assert_eq!(rate.admit(&alice).await, Ok(()));
        assert_eq!(rate.admit(&alice).await, Ok(()));
        let started = std::time::Instant::now();
        let refused = rate.admit(&alice).await;
        assert!(refused.is_err(), "the third read in a second is refused");
        assert!(
            started.elapsed() >= Duration::from_millis(25),
            "the refusal came after the delay, not at once"
        );
        assert_eq!(
            rate.admit(&user("bob")).await,
            Ok(()),
            "bob has his own bucket"
        );
    }
}
