//! The one cheap-to-clone state value every handler gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use msg_service::MessageApi;
use msg_service::storage::resilience::{Breaker, BreakerState};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::hot_metrics::HotMetrics;
use crate::hub::Hub;
use crate::presence::Presences;
use crate::read_rate::ReadRate;
use crate::slots::Slots;
use crate::typing::Typist;

/// Limits enforced at the edge (PROTOCOL.md, "Limits").
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest WebSocket message after reassembly, in bytes.
    pub max_frame_bytes: usize,
    /// Largest REST request body, in bytes.
    pub max_body_bytes: usize,
    /// Outgoing frames queued per socket before a non-reading client is closed.
    pub outgoing_queue: usize,
    /// How long one write to a socket may take before the client counts as not reading.
    pub write_timeout: Duration,
    /// Longest long poll of `GET /v1/sync`.
    pub max_wait: Duration,
    /// A socket that sends nothing for this long is closed (1008).
    pub idle_timeout: Duration,
    /// Frames per second a socket may send on average.
    pub frame_rate: u32,
    /// Frames a socket may send in a burst.
    pub frame_burst: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_body_bytes: 64 * 1024,
            outgoing_queue: 256,
            write_timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            frame_rate: 100,
            frame_burst: 200,
        }
    }
}

/// Shared by all handlers and sockets: one pointer, so that the copy each
/// socket's three tasks keep costs 8 bytes, not the ~500 of the fields.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state over `shared`.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    /// The message service (in-process or remote).
    pub api: Arc<dyn MessageApi>,
    /// Notify routing to local sockets and polls.
    pub hub: Arc<Hub>,
    /// Typing indicators: sent to the other members, extra ones dropped.
    pub typing: Arc<Typist>,
    /// Presence queries.
    pub presences: Arc<Presences>,
    /// Token verification.
    pub auth: Arc<Auth>,
    /// Open connections per user (sockets and waiting long polls).
    pub slots: Arc<Slots>,
    /// History reads in flight per user: a user flooding history is turned
    /// away here, before any call to the message service.
    pub history_slots: Arc<Slots>,
    /// History reads per second per user, with a delay before each refusal.
    pub history_rate: Arc<ReadRate>,
    /// Sends per second per user, charged when a frame arrives (see
    /// `session`): pipelined sends cannot outrun the limit by queueing.
    pub send_admission: Arc<msg_service::UserRate>,
    /// Where REST history pages are answered when the message service is
    /// remote: a low-priority thread, so a history flood does not slow sends.
    pub history_runtime: Option<Arc<msg_service::LowPriority>>,
    /// Edge limits.
    pub limits: Limits,
    /// Whether `POST /v1/dev/token` is served.
    pub dev_auth: bool,
    /// Cancelled when draining starts: sockets send `goaway` and close.
    pub draining: CancellationToken,
    /// Cancelled at the drain deadline: sockets still open are closed (1001).
    pub hard_stop: CancellationToken,
    /// The window over which `goaway` delays are spread.
    pub drain_window: Duration,
    /// Tracks live sockets so shutdown can wait for them.
    pub sockets: TaskTracker,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// The metrics of every send and frame.
    pub hot_metrics: HotMetrics,
    /// False while draining or before start-up finished.
    pub ready: Arc<AtomicBool>,
    /// The circuit breakers of this process's dependencies, for `/readyz`.
    pub breakers: Arc<[WatchedBreaker]>,
}

/// A breaker reported by `/readyz`.
#[derive(Debug, Clone)]
pub struct WatchedBreaker {
    /// The breaker.
    pub breaker: Breaker,
    /// Whether the gateway is not ready while it is open: true for the
    /// msg-service client, whose outage leaves the gateway nothing to serve;
    /// false where a fallback exists (Redis) or no other instance could do
    /// better (the store of the single-machine mode).
    pub required: bool,
}

/// What `/readyz` says: whether to route traffic here, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Whether the gateway takes new work.
    pub ready: bool,
    /// Each breaker's name and state.
    pub breakers: Vec<(&'static str, BreakerState)>,
}

impl AppState {
    /// Whether the gateway takes new work.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.is_cancelled()
    }

    /// Readiness with the breakers (see [`readiness`]).
    pub fn readiness(&self) -> Readiness {
        readiness(self.is_ready(), &self.breakers)
    }
}

/// Not ready while `running` is false or while a required breaker is open
/// (half-open is ready: the probes that close it must get through).
pub fn readiness(running: bool, breakers: &[WatchedBreaker]) -> Readiness {
    let blocked = breakers
        .iter()
        .any(|w| w.required && w.breaker.state() == BreakerState::Open);
    Readiness {
        ready: running && !blocked,
        breakers: breakers
            .iter()
            .map(|w| (w.breaker.name(), w.breaker.state()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use msg_service::storage::resilience::BreakerConfig;

    use super::*;

    /// A breaker opened by one failure, for a long time.
    async fn opened(name: &'static str) -> Breaker {
        let config = BreakerConfig {
            failure_threshold: 1,
            open_for: Duration::from_secs(3600),
            half_open_probes: 1,
        };
        let breaker = Breaker::new(name, config);
        let failed: Result<(), msg_service::storage::Error> = breaker
            .run(
                async { Err(msg_service::storage::Error::Unavailable("down".into())) },
                |_| true,
            )
            .await;
        assert!(failed.is_err());
        breaker
    }

    /// Every socket's three tasks and every request keep a copy of the
    /// state: a copy must stay one pointer, not the fields.
    #[test]
    fn a_copy_of_the_state_is_one_pointer() {
        assert_eq!(size_of::<AppState>(), size_of::<usize>());
        assert!(
            size_of::<Shared>() > 100,
            "the fields are behind the pointer"
        );
    }

    #[tokio::test]
    async fn an_open_required_breaker_makes_the_gateway_not_ready() {
        let watched = [WatchedBreaker {
            breaker: opened("msg_service").await,
            required: true,
        }];
        let readiness = readiness(true, &watched);
        assert!(!readiness.ready);
        assert_eq!(
            readiness.breakers,
            vec![("msg_service", BreakerState::Open)]
        );
    }

    #[tokio::test]
    async fn an_open_breaker_with_a_fallback_is_reported_but_keeps_the_gateway_ready() {
        let watched = [WatchedBreaker {
            breaker: opened("redis").await,
            required: false,
        }];
        let readiness = readiness(true, &watched);
        assert!(readiness.ready);
        assert_eq!(readiness.breakers, vec![("redis", BreakerState::Open)]);
    }
}
