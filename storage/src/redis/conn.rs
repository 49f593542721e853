//! Connecting: a RESP3 client, a reconnecting `ConnectionManager`, a
//! deadline on every call (reconnection waits included), and replacement of
//! a connection whose peer went silent, and (for the command connection) a
//! circuit breaker, so that while Redis is down callers fall back at once
//! instead of each waiting out the deadline.
//!
//! `ConnectionManager` reconnects when the socket fails or closes, but not
//! when replies stop coming while the socket stays open (a dead host, a NAT
//! that dropped the flow): a response timeout does not count as a broken
//! connection, and TCP may take many minutes to give up. So after a few
//! timeouts in a row the connection is replaced here.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, RedisResult};

use super::RedisOptions;
use crate::resilience::{Breaker, watch_recovery};
use crate::{Error, Result};

/// How often an open breaker's connection tries Redis afresh.
const RECOVERY_PROBE_EVERY: Duration = Duration::from_millis(200);

/// Timeouts in a row after which a connection is replaced.
const REPLACE_AFTER_TIMEOUTS: u32 = 3;

/// A client for `url` speaking RESP3, which pub/sub through a
/// `ConnectionManager` needs; commands work the same on it.
pub(crate) fn client(url: &str) -> Result<Client> {
    let info = url.into_connection_info()?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Ok(Client::open(info.set_redis_settings(settings))?)
}

/// Reconnection and timeouts from `options`. The backoff is kept short: a
/// call waits for reconnection only up to `command_timeout` anyway.
pub(crate) fn manager_config(options: &RedisOptions) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.command_timeout))
        .set_number_of_retries(options.reconnect_retries)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(1))
}

/// A shared, reconnecting connection with a deadline per call.
#[derive(Clone)]
pub(crate) struct Conn(Arc<Shared>);

struct Shared {
    client: Client,
    config: ConnectionManagerConfig,
    manager: Mutex<ConnectionManager>,
    timeout: Duration,
    /// Calls in a row on the current connection that timed out.
    timeouts: AtomicU32,
    /// Bumped whenever the connection is replaced.
    generation: AtomicU64,
    /// Fails calls fast while Redis is down (none on the subscriber
    /// connection, which its watchdog probes on its own).
    breaker: Option<Breaker>,
}

impl Conn {
    /// A connection made on first use.
    pub(crate) fn lazy(
        client: Client,
        config: ConnectionManagerConfig,
        timeout: Duration,
    ) -> Result<Self> {
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Conn(Arc::new(Shared {
            client,
            config,
            manager: Mutex::new(manager),
            timeout,
            timeouts: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            breaker: None,
        })))
    }

    /// Connects now, so a wrong address fails at start-up.
    /// Its calls go through the `redis` breaker.
    pub(crate) async fn connect(client: &Client, options: &RedisOptions) -> Result<Self> {
        let config = manager_config(options);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        let conn = Conn(Arc::new(Shared {
            client: client.clone(),
            config,
            manager: Mutex::new(manager),
            timeout: options.command_timeout,
            timeouts: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            breaker: Some(Breaker::new("redis", options.breaker)),
        }));
        conn.ping().await?;
        if let Some(breaker) = &conn.0.breaker {
            let shared = Arc::downgrade(&conn.0);
            watch_recovery(breaker, RECOVERY_PROBE_EVERY, move || {
                probe_fresh(shared.clone())
            });
        }
        Ok(conn)
    }

    /// The breaker of the command connection.
    pub(crate) fn breaker(&self) -> Option<&Breaker> {
        self.0.breaker.as_ref()
    }

    /// Whether Redis answers on this connection.
    pub(crate) async fn ping(&self) -> Result<()> {
        let mut manager = self.manager();
        self.call(redis::cmd("PING").exec_async(&mut manager)).await
    }

    /// A handle to the current connection, for building one call.
    pub(crate) fn manager(&self) -> ConnectionManager {
        self.lock().clone()
    }

    /// Which connection is current; changes when it is replaced.
    pub(crate) fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::SeqCst)
    }

    /// Runs one call under the deadline (and the breaker, if any); counts
    /// timeouts toward replacing the connection.
    pub(crate) async fn call<T>(&self, call: impl Future<Output = RedisResult<T>>) -> Result<T> {
        let generation = self.generation();
        let bounded = deadline(self.0.timeout, call);
        let result = match &self.0.breaker {
            Some(breaker) => breaker.run(bounded, Error::is_retryable).await,
            None => bounded.await,
        };
        match &result {
            Err(Error::Unavailable(err)) if is_timeout(err.as_ref()) => {
                self.timed_out(generation);
            }
            // Turned away by the breaker: says nothing of this connection.
            Err(err) if err.breaker_retry_after().is_some() => {}
            _ => self.0.timeouts.store(0, Ordering::Relaxed),
        }
        result
    }

    fn timed_out(&self, generation: u64) {
        let mut manager = self.lock();
        if self.generation() != generation {
            return; // timed out on a connection already replaced
        }
        if self.0.timeouts.fetch_add(1, Ordering::Relaxed) + 1 < REPLACE_AFTER_TIMEOUTS {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.0.client.clone(), self.0.config.clone())
        {
            Ok(fresh) => {
                tracing::warn!("Redis stopped answering; replacing the connection");
                *manager = fresh;
                self.0.timeouts.store(0, Ordering::Relaxed);
                self.0.generation.fetch_add(1, Ordering::SeqCst);
            }
            Err(err) => tracing::warn!(error = %err, "cannot replace a silent Redis connection"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ConnectionManager> {
        // Holds no invariant a panic could break.
        self.0.manager.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `fresh` the current connection.
    fn replace(&self, fresh: ConnectionManager) {
        *self.lock() = fresh;
        self.0.timeouts.store(0, Ordering::Relaxed);
        self.0.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// The recovery probe of an open breaker: a new connection (not the
/// manager's, which may hand out the stale error of its failed reconnect)
/// that must answer PING; on success it becomes the current connection.
async fn probe_fresh(shared: Weak<Shared>) -> bool {
    let Some(shared) = shared.upgrade() else {
        return false;
    };
    let conn = Conn(shared);
    let connect = ConnectionManager::new_with_config(conn.0.client.clone(), conn.0.config.clone());
    let Ok(Ok(mut fresh)) = tokio::time::timeout(conn.0.timeout, connect).await else {
        return false;
    };
    let ping = redis::cmd("PING");
    let answered = tokio::time::timeout(conn.0.timeout, ping.exec_async(&mut fresh)).await;
    if !matches!(answered, Ok(Ok(()))) {
        return false;
    }
    tracing::info!("Redis answers again on a new connection");
    conn.replace(fresh);
    true
}

/// `call`'s result, or `Unavailable` once `timeout` has passed.
async fn deadline<T>(timeout: Duration, call: impl Future<Output = RedisResult<T>>) -> Result<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => Ok(result?),
        Err(elapsed) => Err(Error::unavailable(elapsed)),
    }
}

/// Our deadline passed, or redis-rs's response timeout did.
fn is_timeout(err: &(dyn std::error::Error + 'static)) -> bool {
    err.is::<tokio::time::error::Elapsed>()
        || err
            .downcast_ref::<redis::RedisError>()
            .is_some_and(redis::RedisError::is_timeout)
}
