//! Flags both binaries take: the message service's limits (msg-service,
//! and the gateway in single-machine mode, which runs the service
//! in-process; with `--msg-service` msg-service's own flags apply), and the
//! circuit breakers (one setting for every breaker of the process).

use std::sync::Arc;
use std::time::Duration;

use storage::resilience::{BreakerConfig, GuardedStoreConfig};

use crate::{BulkheadConfig, LowPriority, ServiceConfig};

/// History requests that may wait for (or run on) the low-priority thread
/// of one process; beyond, they are answered `unavailable` at once.
const HISTORY_QUEUE: usize = 1024;

/// The message service's rate limit, store deadline and bulkheads.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceArgs {
    /// Sends per user per second (token bucket refill), over all gateways.
    #[arg(long, env = "CHAT_SEND_RATE", default_value_t = 20)]
    pub send_rate: u32,

    /// Sends per user in a burst (token bucket size).
    #[arg(long, env = "CHAT_SEND_BURST", default_value_t = 50)]
    pub send_burst: u32,

    /// Deadline of each call to the durable store, in milliseconds; past it
    /// the call fails as `unavailable` and counts toward the store breaker.
    #[arg(long, env = "CHAT_STORE_TIMEOUT_MS", default_value_t = 2_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub store_timeout_ms: u64,

    /// Sends running at once and waiting, as CONCURRENCY:QUEUE; one more is
    /// answered `unavailable` at once.
    #[arg(long, env = "CHAT_BULKHEAD_SEND", default_value = "256:1024")]
    pub bulkhead_send: BulkheadConfig,

    /// Syncs (and inbox-head reads) running at once and waiting.
    #[arg(long, env = "CHAT_BULKHEAD_SYNC", default_value = "256:1024")]
    pub bulkhead_sync: BulkheadConfig,

    /// History pages running at once and waiting.
    #[arg(long, env = "CHAT_BULKHEAD_HISTORY", default_value = "32:64")]
    pub bulkhead_history: BulkheadConfig,

    /// Inbox appends of all fan-outs running at once and waiting.
    #[arg(long, env = "CHAT_BULKHEAD_FANOUT", default_value = "512:8192")]
    pub bulkhead_fanout: BulkheadConfig,

    /// History pages are served by one thread of their own under
    /// SCHED_IDLE (a waking send preempts it at once), or, where that
    /// policy is refused, at this nice value (1-19); 0 serves them with
    /// everything else.
    #[arg(long, env = "CHAT_HISTORY_NICE", default_value_t = 19,
        value_parser = clap::value_parser!(i32).range(0..=19))]
    pub history_nice: i32,

    /// Inboxes (and, separately, conversation logs) whose state is kept in
    /// memory at most (about 300 bytes each); past it, the least recently
    /// used idle ones are forgotten and read again on their next touch.
    #[arg(long, env = "CHAT_MAX_CACHED_LOGS", default_value_t = 200_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_cached_logs: u64,

    /// How long after a message its sender may recall it, in seconds
    /// (protocol 1.1).
    #[arg(long, env = "CHAT_RECALL_WINDOW_SECS", default_value_t = 120)]
    pub recall_window_secs: u64,

    /// How long after a message its sender may edit it, in seconds.
    #[arg(long, env = "CHAT_EDIT_WINDOW_SECS", default_value_t = 900)]
    pub edit_window_secs: u64,
}

impl ServiceArgs {
    /// The service's configuration: these limits, the rest default.
    pub fn service_config(&self) -> ServiceConfig {
        ServiceConfig {
            send_rate: self.send_rate,
            send_burst: self.send_burst,
            send_bulkhead: self.bulkhead_send,
            sync_bulkhead: self.bulkhead_sync,
            history_bulkhead: self.bulkhead_history,
            fanout_bulkhead: self.bulkhead_fanout,
            history_runtime: self.history_runtime(),
            max_cached_logs: usize::try_from(self.max_cached_logs).unwrap_or(usize::MAX),
            recall_window: Duration::from_secs(self.recall_window_secs),
            edit_window: Duration::from_secs(self.edit_window_secs),
            ..ServiceConfig::default()
        }
    }

    /// The low-priority runtime for history pages that `--history-nice`
    /// asks for; none when it is 0 or cannot be started (then history runs
    /// with everything else, which is said in the log).
    pub fn history_runtime(&self) -> Option<Arc<LowPriority>> {
        if self.history_nice == 0 {
            return None;
        }
        match LowPriority::start("history", 1, self.history_nice, HISTORY_QUEUE) {
            Ok(runtime) => Some(runtime),
            Err(err) => {
                tracing::warn!(error = %err, "no low-priority thread for history; it shares the others");
                None
            }
        }
    }

    /// The store's deadline and breaker; retries as default.
    pub fn store_guard(&self, breakers: &BreakerArgs) -> GuardedStoreConfig {
        GuardedStoreConfig {
            timeout: Duration::from_millis(self.store_timeout_ms),
            breaker: breakers.config(),
            ..GuardedStoreConfig::default()
        }
    }
}

/// When the process's circuit breakers open and for how long.
#[derive(Debug, Clone, clap::Args)]
pub struct BreakerArgs {
    /// Failures in a row (calls that got no answer or timed out) that open
    /// a circuit breaker: the store's, Redis's, the gateway's msg-service client's.
    #[arg(long, env = "CHAT_BREAKER_FAILURES", default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_failures: u32,

    /// How long an open breaker fails calls fast (`unavailable` with this as
    /// `retry_after_ms`) before it lets probes through, in milliseconds.
    #[arg(long, env = "CHAT_BREAKER_OPEN_MS", default_value_t = 5_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub breaker_open_ms: u64,

    /// Calls a half-open breaker lets through; that many successes in a row
    /// close it, one failure opens it again.
    #[arg(long, env = "CHAT_BREAKER_PROBES", default_value_t = 3,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub breaker_probes: u32,
}

impl BreakerArgs {
    /// The breakers' configuration.
    pub fn config(&self) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: self.breaker_failures,
            open_for: Duration::from_millis(self.breaker_open_ms),
            half_open_probes: self.breaker_probes,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        service: ServiceArgs,
        #[command(flatten)]
        breakers: BreakerArgs,
    }

    #[test]
    fn the_service_flags_reach_its_configuration() {
        let flags = Flags::try_parse_from([
            "test",
            "--send-rate",
            "7",
            "--bulkhead-history",
            "4:8",
            "--store-timeout-ms",
            "300",
        ])
        .expect("valid flags");
        let config = flags.service.service_config();
        assert_eq!(config.send_rate, 7);
        assert_eq!(config.history_bulkhead, "4:8".parse().expect("a bulkhead"));
        let guard = flags.service.store_guard(&flags.breakers);
        assert_eq!(guard.timeout, Duration::from_millis(300));
    }

    #[test]
    fn the_defaults_are_the_breakers_defaults() {
        let flags = Flags::try_parse_from(["test"]).expect("no flags");
        assert_eq!(flags.breakers.config(), BreakerConfig::default());
    }

    #[test]
    fn the_flags_set_every_field_and_zero_is_refused() {
        let flags = Flags::try_parse_from([
            "test",
            "--breaker-failures",
            "2",
            "--breaker-open-ms",
            "750",
            "--breaker-probes",
            "1",
        ])
        .expect("valid flags");
        let expected = BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_millis(750),
            half_open_probes: 1,
        };
        assert_eq!(flags.breakers.config(), expected);
        assert!(Flags::try_parse_from(["test", "--breaker-failures", "0"]).is_err());
    }
}
