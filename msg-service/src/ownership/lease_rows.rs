//! When other instances' leases run out. A lease row holds a wall-clock
//! time, by its writer's clock; this instance reads it against its own wall
//! clock, but bounds the answer by its own monotonic clock:
//!
//! - no later than the lease plus the margin after it first read the row as
//!   it is: one whose clock was stepped a day ahead does not keep its
//!   shards a day after it died;
//! - no sooner than the lease less the margin after its read before that
//!   one (the renewal landed after it): one whose clock is a day behind is
//!   not ended while it renews.
//!
//! With clocks that agree (within the margin) neither bound is reached, so
//! a lease runs out when it did before. The lower bound is the owner's own
//! end (the lease less the margin after it sent the renewal) only if the
//! renewal was sent before that earlier read; one sent between the two
//! reads may end up to the reads' gap later. So an owner whose clock is
//! behind by more than twice the margin and which stops renewing (dead, or
//! paused) can be ended up to that gap early; fences still turn its writes
//! away.

use std::collections::HashMap;
use std::time::Duration;

use storage::InstanceLease;

/// A lease row as last read.
#[derive(Debug, Clone, Copy)]
struct Seen {
    expires_at: u64,
    /// When (monotonic) it was first read as it is.
    since: Duration,
    /// When (monotonic) the rows were read before that (`since` if never).
    before: Duration,
    /// When (monotonic) it runs out by the wall clocks, as of the last read.
    by_wall: Duration,
}

/// The lease rows one instance has read.
#[derive(Debug, Default)]
pub(super) struct LeaseRows {
    seen: HashMap<String, Seen>,
    /// When (monotonic) the rows were last read.
    last_read: Option<Duration>,
}

impl LeaseRows {
    /// Takes in `rows`, read at `now` (monotonic) and `wall_ms` (this
    /// instance's wall clock), each to run out `margin` after its time: a
    /// row new or changed starts its count again; a row gone is forgotten.
    pub fn read_at(
        &mut self,
        rows: &HashMap<String, InstanceLease>,
        now: Duration,
        wall_ms: u64,
        margin: Duration,
    ) {
        self.seen.retain(|instance, _| rows.contains_key(instance));
        let before = self.last_read.unwrap_or(now);
        for lease in rows.values() {
            let by_wall = by_wall(lease.expires_at, now, wall_ms, margin);
            let seen = self.seen.entry(lease.instance.clone()).or_insert(Seen {
                expires_at: lease.expires_at,
                since: now,
                before: now,
                by_wall,
            });
            if seen.expires_at != lease.expires_at {
                seen.expires_at = lease.expires_at;
                seen.since = now;
                seen.before = before;
            }
            seen.by_wall = by_wall;
        }
        self.last_read = Some(now);
    }

    /// When (monotonic) `instance`'s lease runs out unless it is renewed,
    /// for leases of `lease` and a drift margin of `margin`.
    pub fn runs_out(&self, instance: &str, lease: Duration, margin: Duration) -> Option<Duration> {
        let seen = self.seen.get(instance)?;
        let soonest = (seen.before + lease).saturating_sub(margin);
        let latest = seen.since + lease + margin;
        Some(seen.by_wall.clamp(soonest, latest))
    }
}

/// When (monotonic) a lease that ends at `expires_at` (wall ms) plus
/// `margin` runs out, read at `now` (monotonic) and `wall_ms`.
fn by_wall(expires_at: u64, now: Duration, wall_ms: u64, margin: Duration) -> Duration {
    let end = Duration::from_millis(expires_at) + margin;
    let wall = Duration::from_millis(wall_ms);
    match end.checked_sub(wall) {
        Some(left) => now + left,
        None => now.saturating_sub(wall - end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(leases: &[(&str, u64)]) -> HashMap<String, InstanceLease> {
        leases
            .iter()
            .map(|&(instance, expires_at)| {
                let lease = InstanceLease {
                    instance: instance.to_owned(),
                    addr: String::new(),
                    expires_at,
                    alive: true,
                };
                (instance.to_owned(), lease)
            })
            .collect()
    }

    const LEASE: Duration = Duration::from_secs(10);
    const MARGIN: Duration = Duration::from_secs(1);
    /// This instance's wall clock at monotonic 0, in ms.
    const WALL: u64 = 1_800_000_000_000;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Reads `rows` at monotonic second `at`, the wall clock in step.
    fn read(seen: &mut LeaseRows, leases: &[(&str, u64)], at: u64) {
        seen.read_at(&rows(leases), secs(at), WALL + at * 1000, MARGIN);
    }

    /// When `a`'s lease runs out after reads of its row, each an expiry
    /// (wall ms) read at a monotonic second.
    fn runs_out_after(reads: &[(u64, u64)]) -> Option<Duration> {
        let mut seen = LeaseRows::default();
        for &(expires_at, at) in reads {
            read(&mut seen, &[("a", expires_at)], at);
        }
        seen.runs_out("a", LEASE, MARGIN)
    }

    const DAY_MS: u64 = 86_400_000;

    #[test]
    fn with_clocks_that_agree_a_lease_runs_out_at_its_time_plus_the_margin() {
        // Renewed at wall second 1 (until 11), read at 2 and 4.
        let reads = [(WALL + 11_000, 2), (WALL + 11_000, 4)];
        assert_eq!(runs_out_after(&reads), Some(secs(12)));
    }

    #[test]
    fn with_clocks_that_agree_a_renewal_read_late_runs_out_by_its_time() {
        // Renewed at wall second 1 (until 11), first read at 4: by the
        // clocks, 12; the read at 4 alone would have said 13 or later.
        let reads = [(WALL + 10_000, 0), (WALL + 11_000, 4)];
        assert_eq!(runs_out_after(&reads), Some(secs(12)));
    }

    #[test]
    fn a_writer_a_day_ahead_runs_out_a_lease_and_the_margin_after_it_was_read() {
        let reads = [(WALL + DAY_MS + 11_000, 2)];
        assert_eq!(runs_out_after(&reads), Some(secs(13)));
    }

    #[test]
    fn a_writer_a_day_behind_runs_out_no_sooner_than_a_lease_less_the_margin_after_the_read_before()
    {
        let (first, renewed) = (WALL + 11_000 - DAY_MS, WALL + 14_000 - DAY_MS);
        // First read: no read before it, so from this one.
        assert_eq!(runs_out_after(&[(first, 2)]), Some(secs(11)));
        // Renewed between the reads at 2 and 5: from the read at 2, and so
        // it stays when read again unchanged.
        assert_eq!(runs_out_after(&[(first, 2), (renewed, 5)]), Some(secs(11)));
        let again = [(first, 2), (renewed, 5), (renewed, 8)];
        assert_eq!(runs_out_after(&again), Some(secs(11)));
    }

    #[test]
    fn a_row_that_is_gone_is_forgotten() {
        let mut seen = LeaseRows::default();
        read(&mut seen, &[("a", WALL), ("b", WALL)], 0);
        read(&mut seen, &[("b", WALL)], 1);
        assert_eq!(seen.runs_out("a", LEASE, MARGIN), None);
        assert!(seen.runs_out("b", LEASE, MARGIN).is_some());
    }
}
