//! The scenarios, and the options they share.

pub mod catch_up;
pub mod groups;
pub mod idle;
pub mod pairs;
pub mod storm;

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::bail;
use serde::Serialize;

use crate::client::{ClientSpec, Destination, Schedule};
use crate::target::{Target, TokenSource, parse_sources};

/// Options every scenario takes.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Common {
    /// Target WebSocket URL(s): several gateways, or the load balancer
    /// (repeat the flag or separate with commas).
    #[arg(long = "url", value_delimiter = ',', required = true)]
    pub urls: Vec<String>,
    /// HS256 secret to sign tokens with; without it tokens come from the
    /// dev endpoint (`POST /v1/dev/token`) of the first URL.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    #[serde(skip)]
    pub secret: Option<String>,
    /// Local source addresses, e.g. `127.0.0.1-127.0.0.8` (each has its own
    /// ephemeral port range).
    #[arg(long)]
    pub sources: Option<String>,
    /// Seconds of the measured phase.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds over which clients connect.
    #[arg(long, default_value_t = 2.0)]
    pub ramp: f64,
    /// Message body size in bytes (at least the timestamp it carries).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Seconds to wait for outstanding acks and deliveries at the end.
    #[arg(long, default_value_t = 30.0)]
    pub drain_timeout: f64,
    /// User id prefix; a random one by default, so that a run never meets the
    /// users (and the remembered client_msg_ids) of an earlier run.
    #[arg(long, default_value_t = random_prefix())]
    pub prefix: String,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the latency-over-time plot as SVG here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Ignore the entries a notify carries and sync on every notify, as a
    /// client of protocol version 1 does.
    #[arg(long)]
    pub sync_only: bool,
    /// Send a typing indicator before each message (protocol 1.1).
    #[arg(long)]
    pub typing: bool,
    /// Edit every Nth acked message of each client, or recall it every
    /// other time (protocol 1.1); each change is checked exactly once like
    /// a message. 0: none.
    #[arg(long, default_value_t = 0)]
    pub changes: u64,
}

impl Common {
    /// The target the options describe.
    pub fn target(&self) -> anyhow::Result<Target> {
        let sources = match &self.sources {
            Some(spec) => parse_sources(spec)?,
            None => Vec::new(),
        };
        let tokens = match &self.secret {
            Some(secret) => TokenSource::Secret(secret.clone()),
            None => TokenSource::DevEndpoint,
        };
        let target = Target::new(&self.urls, sources, tokens)?;
        let target = match self.sync_only {
            true => target.syncing_only(),
            false => target,
        };
        let target = target.changing_every(self.changes);
        Ok(match self.typing {
            true => target.typing_before_sending(),
            false => target,
        })
    }

    /// The measured phase.
    pub fn duration(&self) -> Duration {
        secs(self.duration)
    }

    /// The ramp-up.
    pub fn ramp(&self) -> Duration {
        secs(self.ramp)
    }

    /// The drain timeout.
    pub fn drain_timeout(&self) -> Duration {
        secs(self.drain_timeout)
    }

    /// User number `i` of this run.
    pub fn user(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(self.duration > 0.0 && self.ramp >= 0.0 && self.drain_timeout >= 0.0) {
            bail!("--duration must be positive, --ramp and --drain-timeout not negative");
        }
        Ok(())
    }
}

fn random_prefix() -> String {
    format!("lt{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Seconds as a duration (negative or NaN: zero).
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

/// Time to connect everyone: the ramp plus a margin.
pub fn connect_timeout(common: &Common) -> Duration {
    common.ramp() + Duration::from_secs(60)
}

/// Users in pairs (0 with 1, 2 with 3, ...), each sending direct messages
/// to its peer at `rate` per second.
pub fn pair_specs(common: &Common, users: usize, rate: f64) -> anyhow::Result<Vec<ClientSpec>> {
    if users < 2 || !users.is_multiple_of(2) || rate <= 0.0 {
        bail!("--users must be even and at least 2, --rate positive");
    }
    Ok((0..users)
        .map(|i| {
            let peer = common.user(i ^ 1);
            ClientSpec {
                index: i,
                user: common.user(i),
                to: Destination::Peer(peer.clone()),
                recipients: Arc::new(vec![peer]),
                schedule: Schedule::Rate(rate),
                body_bytes: common.size,
            }
        })
        .collect())
}

/// The direct conversation id of two users (sorted by bytes).
pub fn dm(a: &str, b: &str) -> String {
    if a < b {
        format!("dm:{a}:{b}")
    } else {
        format!("dm:{b}:{a}")
    }
}
