//! Assembling the server from its configuration (the single-machine default:
//! message service in-process on the embedded store), and running it with a
//! graceful shutdown: not ready, `goaway` to every socket, wait with a
//! deadline, flush the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::serve::ListenerExt;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use msg_service::grpc::{ClientConfig, RemoteMessageService};
use msg_service::{Backends, MessageApi, MessageService};
use rand::Rng;
use storage::resilience::GuardedStore;
use storage::{
    Durability, EmbeddedStore, GatewayId, InProcessBus, InProcessCache, InProcessPresence,
    NotifyBus, Presence, RedisBackends, RedisOptions,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Auth, load_or_create_secret};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hot_metrics::HotMetrics;
use crate::hub::{Hub, PresenceTimes};
use crate::linger::Lingering;
use crate::presence::Presences;
use crate::read_rate::ReadRate;
use crate::slots::Slots;
use crate::state::{AppState, Limits, Shared, WatchedBreaker};
use crate::typing::Typist;

/// How often presence claims are renewed (well within Redis' 90 s TTL).
/// History reads one user may have in flight at once; a client paging
/// through history needs one or two.
const HISTORY_READS_PER_USER: usize = 4;

/// How long a history read over the user's rate waits before its 429.
const HISTORY_REFUSAL_DELAY: Duration = Duration::from_secs(1);

/// Presence claims are re-announced every 30 s; the presence store is
/// checked every second (a restart re-announces at once; an outage switches
/// notifies to polling the heads, so an acked message waits at most about a
/// second for a live client while Redis is down).
const PRESENCE_TIMES: PresenceTimes = PresenceTimes {
    refresh: Duration::from_secs(30),
    check: Duration::from_secs(1),
};

/// A built server, bound to its port, not yet serving.
pub struct App {
    state: AppState,
    listener: TcpListener,
    bus: Arc<dyn storage::NotifyBus>,
    /// The in-process message service (single machine), whose fan-out
    /// retry worker runs while the server does.
    local: Option<Arc<MessageService>>,
}

fn startup<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl FnOnce(E) -> Error {
    move |err| Error::Startup {
        what,
        source: Box::new(err),
    }
}

impl App {
    /// Opens the store (or connects to msg-service and Redis), loads keys,
    /// binds the listener.
    pub async fn build(config: &Config) -> Result<Self> {
        let auth = load_auth(config)?;
        // Installed first: the breakers made below set their gauges at once.
        let metrics = metrics_handle();
        let (api, bus, presence, local, breakers) = match (&config.msg_service, &config.redis) {
            (Some(url), Some(redis)) => distributed(config, url, redis).await?,
            _ => single_machine(config)?,
        };
        let gateway = GatewayId(config.gateway_id.clone().unwrap_or_else(|| {
            format!(
                "gw-{}-{:08x}",
                std::process::id(),
                rand::rng().random::<u32>()
            )
        }));
        let typing = Arc::new(Typist::new(Arc::clone(&bus), Arc::clone(&presence)));
        let presences = Arc::new(Presences::new(Arc::clone(&presence)));
        let hub = Hub::new(gateway, presence, Arc::clone(&bus));
        if config.dev_auth() {
            tracing::warn!(
                "DEV AUTH IS ON: POST /v1/dev/token mints a token for anyone. Turn it off (--dev-auth false) in production."
            );
        }
        let state = AppState::new(Shared {
            api,
            hub,
            typing,
            presences,
            auth: Arc::new(auth),
            slots: Slots::new(config.max_connections_per_user as usize),
            history_slots: Slots::new(HISTORY_READS_PER_USER),
            history_rate: Arc::new(ReadRate::new(
                config.history_rate,
                config.history_burst,
                HISTORY_REFUSAL_DELAY,
            )),
            send_admission: Arc::new(msg_service::UserRate::new(
                config.service.send_rate,
                config.service.send_burst,
            )),
            // In-process, the message service has one of its own.
            history_runtime: match local {
                None => config.service.history_runtime(),
                Some(_) => None,
            },
            limits: limits(config),
            dev_auth: config.dev_auth(),
            draining: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            drain_window: config.drain_timeout(),
            sockets: TaskTracker::new(),
            metrics,
            hot_metrics: HotMetrics::register(),
            ready: Arc::new(AtomicBool::new(false)),
            breakers: breakers.into(),
        });
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(startup("the listen address"))?;
        Ok(App {
            state,
            listener,
            bus,
            local,
        })
    }

    /// The bound address (the real port when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (tests reach the service through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains and flushes.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let App {
            state,
            listener,
            bus,
            local,
        } = self;
        let retry_worker = local.map(|service| service.start_retry_worker());
        let background = CancellationToken::new();
        tokio::spawn(Arc::clone(&state.hub).run_bus(bus, background.clone()));
        let hub = Arc::clone(&state.hub);
        let heads = Arc::clone(&state.api);
        tokio::spawn(hub.watch_presence(heads, PRESENCE_TIMES, background.clone()));
        // The listener keeps accepting while sockets drain, so health checks
        // read 503 from /readyz (and upgrades are refused) instead of a
        // refused connection; it closes once the drain is over.
        let drained = CancellationToken::new();
        // Small frames (acks, notifies, sync results) go out at once: with
        // Nagle's algorithm on, a frame written while the previous one is
        // unacknowledged waited for the client's delayed ACK (~40 ms).
        let listener = Lingering(listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "could not set TCP_NODELAY on a connection");
            }
        }));
        let server = axum::serve(listener, crate::app::router(state.clone()))
            .with_graceful_shutdown(drained.clone().cancelled_owned());
        // The listener is bound: connections wait in its backlog until served.
        state.ready.store(true, Ordering::Release);
        let server = tokio::spawn(async move { server.await });
        tracing::info!("ready");
        shutdown.await;
        drain(&state).await;
        drained.cancel();
        if let Err(err) = tokio::time::timeout(Duration::from_secs(5), server).await {
            tracing::warn!(error = %err, "HTTP connections still open after the drain");
        }
        background.cancel();
        if let Some(worker) = retry_worker {
            worker.stop().await;
        }
        state.api.flush().await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The edge limits: the protocol's defaults and the configured ones.
fn limits(config: &Config) -> Limits {
    Limits {
        idle_timeout: config.ws_idle_timeout(),
        max_wait: Duration::from_millis(config.max_long_poll_ms),
        frame_rate: config.ws_frame_rate,
        frame_burst: config.ws_frame_burst,
        ..Limits::default()
    }
}

/// What a gateway runs on: the message service, the notify bus, presence,
/// the message service again when it is in-process, and the breakers
/// guarding them.
type Parts = (
    Arc<dyn MessageApi>,
    Arc<dyn NotifyBus>,
    Arc<dyn Presence>,
    Option<Arc<MessageService>>,
    Vec<WatchedBreaker>,
);

/// The message service in-process on the embedded store under the data dir.
fn single_machine(config: &Config) -> Result<Parts> {
    let store = EmbeddedStore::open(&config.data_dir.join("store"), Durability::Fsync)
        .map_err(startup("the embedded store"))?;
    let store = GuardedStore::new(
        Arc::new(store),
        config.service.store_guard(&config.breakers),
    );
    store.watch_recovery();
    let watched = vec![WatchedBreaker {
        breaker: store.breaker().clone(),
        required: false,
    }];
    let backends = Backends {
        store: Arc::new(store),
        cache: Arc::new(InProcessCache::default()),
        bus: Arc::new(InProcessBus::default()),
        presence: Arc::new(InProcessPresence::default()),
    };
    let (bus, presence) = (Arc::clone(&backends.bus), Arc::clone(&backends.presence));
    let local = Arc::new(MessageService::new(
        backends,
        config.service.service_config(),
    ));
    Ok((Arc::clone(&local) as _, bus, presence, Some(local), watched))
}

/// A remote msg-service over gRPC, and Redis for the bus and presence.
async fn distributed(config: &Config, url: &str, redis: &str) -> Result<Parts> {
    let client = ClientConfig {
        breaker: config.breakers.config(),
        ..ClientConfig::new(url, Duration::from_millis(config.msg_service_timeout_ms))
    };
    let api = RemoteMessageService::new(&client).map_err(startup("the msg-service URL"))?;
    let options = RedisOptions {
        breaker: config.breakers.config(),
        ..RedisOptions::default()
    };
    let redis = RedisBackends::connect(redis, options)
        .await
        .map_err(startup("Redis"))?;
    let mut watched = vec![WatchedBreaker {
        breaker: api.breaker().clone(),
        required: true,
    }];
    watched.extend(redis.breaker.map(|breaker| WatchedBreaker {
        breaker,
        required: false,
    }));
    let (bus, presence) = (Arc::new(redis.bus), Arc::new(redis.presence));
    Ok((Arc::new(api), bus, presence, None, watched))
}

/// HS256 with the given secret (required when gateways are several) or the
/// one kept in the data dir, plus any configured public keys.
fn load_auth(config: &Config) -> Result<Auth> {
    let secret = match &config.jwt_secret {
        Some(secret) => secret.clone(),
        None if config.is_distributed() => {
            return Err(Error::Startup {
                what: "the JWT secret",
                source: "--jwt-secret (CHAT_JWT_SECRET) is required in the distributed mode: every gateway must share it".into(),
            });
        }
        None => load_or_create_secret(&config.data_dir).map_err(startup("the JWT secret file"))?,
    };
    let read_pem = |path: &Option<std::path::PathBuf>| path.as_ref().map(std::fs::read).transpose();
    let rs256 = read_pem(&config.jwt_rs256_public_key).map_err(startup("the RS256 public key"))?;
    let eddsa = read_pem(&config.jwt_eddsa_public_key).map_err(startup("the EdDSA public key"))?;
    let claims = crate::auth::Expected {
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
    };
    Auth::new(&secret, rs256.as_deref(), eddsa.as_deref(), claims)
}

/// Not ready, `goaway` to every socket, wait for them with a deadline, then close the rest.
async fn drain(state: &AppState) {
    tracing::info!(sockets = state.sockets.len(), "draining");
    state.ready.store(false, Ordering::Release);
    state.draining.cancel();
    state.sockets.close();
    if tokio::time::timeout(state.drain_window, state.sockets.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            sockets = state.sockets.len(),
            "drain deadline reached; closing the remaining sockets"
        );
        state.hard_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(3), state.sockets.wait()).await;
    }
}

/// The Prometheus recorder's handle. The `metrics` facade has one recorder
/// per process; a second server in the same process (tests) shares it.
fn metrics_handle() -> PrometheusHandle {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    if metrics::set_global_recorder(recorder).is_err() {
        tracing::debug!(
            "a metrics recorder is already installed; this server's /metrics renders its own, empty one"
        );
    }
    handle
}
