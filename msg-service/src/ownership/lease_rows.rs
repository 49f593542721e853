//! When other instances' leases run out. A lease row holds a wall-clock
//! time, by its writer's clock; this instance reads it against its own wall
//! clock, but bounds the answer by its own monotonic clock: never sooner
//! than the lease less the margin, nor later than the lease plus the
//! margin, after it first read the row as it is. The row's writer stops
//! serving within the lease less the margin of sending that renewal, which
//! landed before this instance read it: so an owner whose clock is behind
//! is not ended while it renews, and one whose clock was stepped a day
//! ahead does not keep its shards a day after it died. When the clocks
//! agree (within the margin), the lower bound matters only for a row read
//! more than twice the margin after its renewal was sent. A keeper reads the
//! rows once a renewal period, a third of the lease (with the defaults,
//! 1 s against a margin of 0.5 s), so a dead owner's shards move up to a
//! read's round trip later than the wall clocks alone would say; with a
//! margin under a sixth of the lease, up to the difference later.

use std::collections::HashMap;
use std::time::Duration;

use storage::InstanceLease;

/// A lease row as last read.
#[derive(Debug, Clone, Copy)]
struct Seen {
    expires_at: u64,
    /// When (monotonic) it was first read as it is.
    since: Duration,
    /// When (monotonic) it runs out by the wall clocks, as of the last read.
    by_wall: Duration,
}

/// The lease rows one instance has read.
#[derive(Debug, Default)]
pub(super) struct LeaseRows {
    seen: HashMap<String, Seen>,
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
        for lease in rows.values() {
            let by_wall = by_wall(lease.expires_at, now, wall_ms, margin);
            let seen = self.seen.entry(lease.instance.clone()).or_insert(Seen {
                expires_at: lease.expires_at,
                since: now,
                by_wall,
            });
            if seen.expires_at != lease.expires_at {
                seen.expires_at = lease.expires_at;
                seen.since = now;
            }
            seen.by_wall = by_wall;
        }
    }

    /// When (monotonic) `instance`'s lease runs out unless it is renewed,
    /// for leases of `lease` and a drift margin of `margin`.
    pub fn runs_out(&self, instance: &str, lease: Duration, margin: Duration) -> Option<Duration> {
        let seen = self.seen.get(instance)?;
        let soonest = (seen.since + lease).saturating_sub(margin);
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

    #[test]
    fn with_clocks_that_agree_a_lease_runs_out_at_its_time_plus_the_margin() {
        let mut seen = LeaseRows::default();
        // Renewed at wall second 1 (until 11), read at 2 and 4.
        read(&mut seen, &[("a", WALL + 11_000)], 2);
        read(&mut seen, &[("a", WALL + 11_000)], 4);
        assert_eq!(seen.runs_out("a", LEASE, MARGIN), Some(secs(12)));
    }

    #[test]
    fn a_writer_a_day_ahead_runs_out_a_lease_and_the_margin_after_it_was_read() {
        let mut seen = LeaseRows::default();
        read(&mut seen, &[("a", WALL + 86_400_000 + 11_000)], 2);
        assert_eq!(seen.runs_out("a", LEASE, MARGIN), Some(secs(13)));
    }

    #[test]
    fn a_writer_a_day_behind_runs_out_no_sooner_than_a_lease_less_the_margin_after_it_was_read() {
        let mut seen = LeaseRows::default();
        read(&mut seen, &[("a", WALL + 11_000 - 86_400_000)], 2);
        assert_eq!(seen.runs_out("a", LEASE, MARGIN), Some(secs(11)));
        // Renewed (a later time, still a day behind): counted from then.
        read(&mut seen, &[("a", WALL + 14_000 - 86_400_000)], 5);
        assert_eq!(seen.runs_out("a", LEASE, MARGIN), Some(secs(14)));
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
