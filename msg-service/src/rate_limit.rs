//! Token buckets per user (governor, keyed). [`UserRate`] is the bucket
//! itself, shared with the gateway (its history rate); [`SendLimiter`] is
//! the per-user send rate, kept in the message service, the one place every
//! send passes, so the limit holds however many gateways a user's sockets
//! spread over.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use proto::UserId;

use crate::{Error, Result};

/// Idle buckets are forgotten every this many checks, so memory stays bounded
/// without a background task.
const CHECKS_PER_CLEANUP: u64 = 10_000;

/// A token bucket per user.
pub struct UserRate {
    limiter: DefaultKeyedRateLimiter<UserId>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl UserRate {
    /// `per_second` refill, bursts of `burst` (0 counts as 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        UserRate {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one token from `user`'s bucket, or says how long until one is there.
    pub fn check(&self, user: &UserId) -> std::result::Result<(), Duration> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % CHECKS_PER_CLEANUP
            == CHECKS_PER_CLEANUP - 1
        {
            // Forgets users whose buckets are full again.
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(user)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Token buckets of sends, one per user.
pub(crate) struct SendLimiter {
    rate: UserRate,
}

impl SendLimiter {
    /// `per_second` refill, bursts of `burst`.
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        SendLimiter {
            rate: UserRate::new(per_second, burst),
        }
    }

    /// Takes one send from `user`'s bucket, or says when to retry.
    pub(crate) fn check(&self, user: &UserId) -> Result<()> {
        self.rate.check(user).map_err(|wait| Error::RateLimited {
            retry_after_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1),
        })
    }
}
