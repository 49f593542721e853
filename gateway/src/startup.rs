//! Assembling the server from its configuration (the single-machine default:
//! message service in-process on the embedded store), and running it with a
//! graceful shutdown: not ready, `goaway` to every socket, wait with a
//! deadline, flush the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use msg_service::{Backends, MessageService, ServiceConfig};
use rand::Rng;
use storage::{
    Durability, EmbeddedStore, GatewayId, InProcessBus, InProcessCache, InProcessPresence,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Auth, load_or_create_secret};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::rate_limit::SendLimiter;
use crate::state::{AppState, Limits};

/// A built server, bound to its port, not yet serving.
pub struct App {
    state: AppState,
    listener: TcpListener,
    bus: Arc<dyn storage::NotifyBus>,
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
    /// Opens the store, loads keys, binds the listener.
    pub async fn build(config: &Config) -> Result<Self> {
        if config.msg_service.is_some() || config.redis.is_some() {
            return Err(Error::Startup {
                what: "distributed mode",
                source: "--msg-service and --redis are not supported by this build yet".into(),
            });
        }
        let secret = match &config.jwt_secret {
            Some(secret) => secret.clone(),
            None => {
                load_or_create_secret(&config.data_dir).map_err(startup("the JWT secret file"))?
            }
        };
        let read_pem =
            |path: &Option<std::path::PathBuf>| path.as_ref().map(std::fs::read).transpose();
        let rs256 =
            read_pem(&config.jwt_rs256_public_key).map_err(startup("the RS256 public key"))?;
        let eddsa =
            read_pem(&config.jwt_eddsa_public_key).map_err(startup("the EdDSA public key"))?;
        let auth = Auth::new(&secret, rs256.as_deref(), eddsa.as_deref())?;
        let store = EmbeddedStore::open(&config.data_dir.join("store"), Durability::Fsync)
            .map_err(startup("the embedded store"))?;
        let backends = Backends {
            store: Arc::new(store),
            cache: Arc::new(InProcessCache::default()),
            bus: Arc::new(InProcessBus::default()),
            presence: Arc::new(InProcessPresence::default()),
        };
        let bus = Arc::clone(&backends.bus);
        let gateway = GatewayId(format!(
            "gw-{}-{:08x}",
            std::process::id(),
            rand::rng().random::<u32>()
        ));
        let hub = Hub::new(gateway, Arc::clone(&backends.presence));
        let api = Arc::new(MessageService::new(backends, ServiceConfig::default()));
        if config.dev_auth {
            tracing::warn!(
                "DEV AUTH IS ON: POST /v1/dev/token mints a token for anyone. Turn it off (--dev-auth false) in production."
            );
        }
        let state = AppState {
            api,
            hub,
            auth: Arc::new(auth),
            sends: Arc::new(SendLimiter::new(config.send_rate, config.send_burst)),
            limits: Limits::default(),
            dev_auth: config.dev_auth,
            draining: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            drain_window: config.drain_timeout(),
            sockets: TaskTracker::new(),
            metrics: metrics_handle(),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(startup("the listen address"))?;
        Ok(App {
            state,
            listener,
            bus,
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
        } = self;
        let background = CancellationToken::new();
        tokio::spawn(Arc::clone(&state.hub).run_bus(bus, background.clone()));
        tokio::spawn(forget_idle_senders(
            Arc::clone(&state.sends),
            background.clone(),
        ));
        let draining = state.draining.clone();
        let server = axum::serve(listener, crate::app::router(state.clone()))
            .with_graceful_shutdown(async move { draining.cancelled().await });
        let server = tokio::spawn(async move { server.await });
        state.ready.store(true, Ordering::Release);
        tracing::info!("ready");
        shutdown.await;
        drain(&state).await;
        if let Err(err) = tokio::time::timeout(Duration::from_secs(5), server).await {
            tracing::warn!(error = %err, "HTTP connections still open after the drain");
        }
        background.cancel();
        state.api.flush().await?;
        tracing::info!("stopped");
        Ok(())
    }
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

async fn forget_idle_senders(sends: Arc<SendLimiter>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => sends.forget_idle(),
        }
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
