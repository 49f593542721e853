//! The gateway binary's configuration: flags with `CHAT_*` environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use secrecy::SecretString;

/// A chat backend gateway: WebSocket and REST on one port. With no
/// `--msg-service`, it runs the message service in-process on an embedded
/// store under `--data-dir` (the single-machine default).
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version, args_override_self = true)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where the embedded store and the generated JWT secret live.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// HS256 secret for JWTs; generated and kept in the data dir when absent.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<SecretString>,

    /// PEM file of an RS256 public key; tokens signed with it are accepted.
    #[arg(long, env = "CHAT_JWT_RS256_PUBLIC_KEY")]
    pub jwt_rs256_public_key: Option<PathBuf>,

    /// PEM file of an EdDSA (Ed25519) public key; tokens signed with it are accepted.
    #[arg(long, env = "CHAT_JWT_EDDSA_PUBLIC_KEY")]
    pub jwt_eddsa_public_key: Option<PathBuf>,

    /// Serve `POST /v1/dev/token` (development only: anyone can mint tokens).
    /// Default: on in the single-machine mode, off in the distributed one.
    #[arg(long, env = "CHAT_DEV_AUTH", action = clap::ArgAction::Set)]
    pub dev_auth: Option<bool>,

    /// URL of a remote msg-service, e.g. `http://127.0.0.1:9090` (distributed
    /// mode, together with `--redis`).
    #[arg(long, env = "CHAT_MSG_SERVICE", requires = "redis")]
    pub msg_service: Option<String>,

    /// Redis URL for the notify bus and presence, e.g. `redis://127.0.0.1:6379`
    /// (distributed mode, together with `--msg-service`).
    #[arg(long, env = "CHAT_REDIS_URL", requires = "msg_service")]
    pub redis: Option<String>,

    /// This gateway's name on the notify bus (default: generated, unique per process).
    #[arg(long, env = "CHAT_GATEWAY_ID")]
    pub gateway_id: Option<String>,

    /// Deadline of each call to the remote msg-service, in milliseconds.
    #[arg(long, env = "CHAT_MSG_SERVICE_TIMEOUT_MS", default_value_t = 5_000)]
    pub msg_service_timeout_ms: u64,

    /// How long a graceful shutdown waits for sockets to leave, in seconds.
    #[arg(long, env = "CHAT_DRAIN_SECS", default_value_t = 10)]
    pub drain_secs: u64,

    /// Required `iss` claim of every token (not checked when absent).
    #[arg(long, env = "CHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim of every token (not checked when absent).
    #[arg(long, env = "CHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Open WebSockets (and waiting long polls) per user on this gateway;
    /// one more is refused with 429 `rate_limited` before the upgrade.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_USER", default_value_t = 16,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_user: u32,

    /// A socket that sends nothing (no frame, no pong to the server's pings)
    /// for this many seconds is closed with 1008.
    #[arg(long, env = "CHAT_WS_IDLE_TIMEOUT_SECS", default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub ws_idle_timeout_secs: u64,

    /// Frames per second a socket may send on average (pings included);
    /// past the burst each frame is refused with `rate_limited` and
    /// `retry_after_ms`, and a socket that sends 50 more while refused is
    /// closed with 1008.
    #[arg(long, env = "CHAT_WS_FRAME_RATE", default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_frame_rate: u32,

    /// Longest long poll of `GET /v1/sync`, in milliseconds (`wait_ms` above
    /// it is cut to it).
    #[arg(long, env = "CHAT_MAX_LONG_POLL_MS", default_value_t = 30_000)]
    pub max_long_poll_ms: u64,

    /// History pages one user may read per second on this gateway (token
    /// bucket refill); a read over it is answered 429 `rate_limited` after a
    /// one-second delay, so a client that retries at once cannot flood.
    #[arg(long, env = "CHAT_HISTORY_RATE", default_value_t = 2,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub history_rate: u32,

    /// History pages one user may read in a burst (token bucket size).
    #[arg(long, env = "CHAT_HISTORY_BURST", default_value_t = 10,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub history_burst: u32,

    /// The circuit breakers (store, Redis, msg-service client).
    #[command(flatten)]
    pub breakers: msg_service::BreakerArgs,

    /// The in-process message service's limits (single-machine mode; with
    /// `--msg-service`, msg-service's own flags of the same names apply).
    #[command(flatten)]
    pub service: msg_service::ServiceArgs,

    /// Frames a socket may send in a burst.
    #[arg(long, env = "CHAT_WS_FRAME_BURST", default_value_t = 200,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_frame_burst: u32,
}

impl Config {
    /// Whether this gateway calls a remote msg-service (and Redis).
    pub fn is_distributed(&self) -> bool {
        self.msg_service.is_some()
    }

    /// Whether `POST /v1/dev/token` is served.
    pub fn dev_auth(&self) -> bool {
        self.dev_auth.unwrap_or(!self.is_distributed())
    }

    /// The idle timeout of a socket.
    pub fn ws_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.ws_idle_timeout_secs)
    }

    /// The drain deadline as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }
}
