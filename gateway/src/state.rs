//! The one cheap-to-clone state value every handler gets.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use msg_service::MessageApi;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Auth;
use crate::hub::Hub;
use crate::slots::Slots;

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

/// Shared by all handlers and sockets.
#[derive(Clone)]
pub struct AppState {
    /// The message service (in-process or remote).
    pub api: Arc<dyn MessageApi>,
    /// Notify routing to local sockets and polls.
    pub hub: Arc<Hub>,
    /// Token verification.
    pub auth: Arc<Auth>,
    /// Open connections per user (sockets and waiting long polls).
    pub slots: Arc<Slots>,
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
    /// False while draining or before start-up finished.
    pub ready: Arc<AtomicBool>,
}

impl AppState {
    /// Whether the gateway takes new work.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.draining.is_cancelled()
    }
}
