//! Per-user send rate limit: a token bucket per user (governor, keyed).

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use proto::UserId;

use crate::error::{Error, Result};

/// Token buckets of sends, one per user.
pub struct SendLimiter {
    limiter: DefaultKeyedRateLimiter<UserId>,
    clock: DefaultClock,
}

impl SendLimiter {
    /// `per_second` refill, bursts of `burst`.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        SendLimiter {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one send from `user`'s bucket, or says when to retry.
    pub fn check(&self, user: &UserId) -> Result<()> {
        self.limiter.check_key(user).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            Error::RateLimited {
                retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
            }
        })
    }

    /// Forgets users whose buckets are full again, so memory stays bounded.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
