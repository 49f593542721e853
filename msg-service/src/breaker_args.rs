//! The circuit-breaker flags both binaries take (gateway and msg-service):
//! one setting for every breaker of the process (store, Redis, msg-service).

use std::time::Duration;

use storage::resilience::BreakerConfig;

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
        breakers: BreakerArgs,
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
