//! The Redis implementations of the inbox cache, the notify bus and presence,
//! for the distributed setup: one connection string, one set of options, and
//! the key names every process must agree on.

mod bus;
mod cache;
mod conn;
mod presence;

use std::time::Duration;

use proto::UserId;

pub use bus::RedisBus;
pub use cache::RedisCache;
pub use presence::RedisPresence;

use crate::Result;
use crate::model::GatewayId;
use crate::resilience::{Breaker, BreakerConfig};

/// How the Redis backends name their keys and behave; `Default` suits production.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Put in front of every key and channel, so several deployments can share
    /// one Redis (default `chat:`).
    pub key_prefix: String,
    /// Entries cached per inbox (default 200).
    pub cache_per_inbox: usize,
    /// An inbox's cache leaves Redis this long after its last append (default 24 h).
    pub cache_ttl: Duration,
    /// A gateway's claim on a user lapses this long after it was last
    /// announced (default 90 s); gateways refresh well within it.
    pub presence_ttl: Duration,
    /// Notifications queued per gateway subscription before new ones are
    /// dropped (default 65,536).
    pub bus_capacity: usize,
    /// The longest any call waits, reconnecting included (default 1 s).
    pub command_timeout: Duration,
    /// The longest one connection attempt waits (default 1 s).
    pub connect_timeout: Duration,
    /// Connection attempts after the first before a call gives up; the next
    /// call starts over (default 3).
    pub reconnect_retries: usize,
    /// The same for the bus's subscriber connection, which nothing waits on:
    /// enough to ride out a typical Redis restart with the backoff capped at
    /// 1 s (default 12); beyond that the watchdog reconnects it.
    pub bus_reconnect_retries: usize,
    /// How often the bus pings its subscriber connection, to repair it
    /// (default 5 s). Any connection is replaced after three timeouts in a row.
    pub health_interval: Duration,
    /// When the `redis` breaker of the command connection opens (default:
    /// 5 failures in a row, open 5 s, 3 probes).
    pub breaker: BreakerConfig,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: "chat:".into(),
            cache_per_inbox: 200,
            cache_ttl: Duration::from_secs(24 * 3600),
            presence_ttl: Duration::from_secs(90),
            bus_capacity: 65_536,
            command_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            reconnect_retries: 3,
            bus_reconnect_retries: 12,
            health_interval: Duration::from_secs(5),
            breaker: BreakerConfig::default(),
        }
    }
}

/// The three Redis backends, sharing one connection for commands.
pub struct RedisBackends {
    /// The inbox cache.
    pub cache: RedisCache,
    /// The notify bus (its subscription connection opens on first subscribe).
    pub bus: RedisBus,
    /// Presence.
    pub presence: RedisPresence,
    /// The `redis` breaker all three call through (for readiness).
    pub breaker: Option<Breaker>,
}

impl RedisBackends {
    /// Connects to the Redis at `url` (`redis://[user:password@]host:port[/db]`);
    /// fails if it does not answer. Reconnects by itself afterwards.
    pub async fn connect(url: &str, options: RedisOptions) -> Result<Self> {
        let client = conn::client(url)?;
        let conn = conn::Conn::connect(&client, &options).await?;
        let keys = Keys::new(&options.key_prefix);
        Ok(RedisBackends {
            breaker: conn.breaker().cloned(),
            cache: RedisCache::new(conn.clone(), keys.clone(), &options),
            bus: RedisBus::new(conn.clone(), client, keys.clone(), &options)?,
            presence: RedisPresence::new(conn, keys, &options),
        })
    }
}

/// Key and channel names. Each user's keys carry the user as a hash tag
/// (`{alice}`), so they share a Redis Cluster slot and one script may touch them.
#[derive(Debug, Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// A sorted set: the cached entries of `user`'s inbox and its lower bound.
    fn inbox(&self, user: &UserId) -> String {
        format!("{}inbox:{{{user}}}", self.prefix)
    }

    /// A sorted set: the gateways holding `user`, scored by expiry (ms).
    fn presence(&self, user: &UserId) -> String {
        format!("{}presence:{{{user}}}", self.prefix)
    }

    /// The pub/sub channel of one gateway.
    fn gateway(&self, gateway: &GatewayId) -> String {
        format!("{}gw:{{{gateway}}}", self.prefix)
    }

    /// The pub/sub channel every gateway listens on too (presence changes).
    fn all_gateways(&self) -> String {
        format!("{}gw:*all*", self.prefix)
    }

    /// A string: when `user`'s last device left (Unix ms).
    fn last_seen(&self, user: &UserId) -> String {
        format!("{}seen:{{{user}}}", self.prefix)
    }
}

/// Whole milliseconds, at least one (Redis rejects a zero expiry).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}
