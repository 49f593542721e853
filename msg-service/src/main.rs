//! The msg-service binary (distributed mode): serves the message service over
//! gRPC to the gateways, on the embedded store or ScyllaDB / Cassandra, with
//! Redis for the inbox cache, the notify bus and presence; `msg-service
//! audit` checks (and repairs) the inboxes against the conversation logs.

mod audit_cmd;
mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use msg_service::ownership::{KeeperClock, LeaseKeeper, SystemClock};
use msg_service::{Backends, MessageService};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use storage::resilience::GuardedStore;
use storage::{RedisBackends, RedisOptions};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, ServeArgs};

// As in the gateway: glibc's malloc cost more CPU under load than the work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt().with_env_filter(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    );
    // The audit's report is its stdout: its logs go to stderr. Colour codes
    // only on a terminal: logs redirected to a file stay plain text.
    if cli.command.is_some() {
        logs.with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
    } else {
        logs.with_ansi(std::io::stdout().is_terminal()).init();
    }
    match cli.command {
        Some(Command::Audit(args)) => audit_cmd::run(args).await,
        None => match serve(cli.serve).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("Error: {err:?}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn serve(config: ServeArgs) -> anyhow::Result<()> {
    // Installed before anything records: breakers set their gauges at once.
    let metrics = PrometheusBuilder::new().build_recorder();
    let handle = metrics.handle();
    metrics::set_global_recorder(metrics).context("installing the metrics recorder")?;
    let ready: Ready = Arc::default();
    if let Some(addr) = config.metrics_listen {
        serve_metrics(addr, handle, Arc::clone(&ready)).await?;
    }
    let (mut store, leases) = config.store.open_with_leases().await?;
    if let Some(path) = &config.fault_file {
        tracing::warn!(path = %path.display(), "FAULT HOOK IS ON: the store obeys this file");
        store = msg_service::fault_hook::wrap(store, path.clone());
    }
    // The deadline and breaker sit outside the fault hook, as they would
    // around a remote store that stalls.
    let guard = config.service.store_guard(&config.breakers);
    let store = Arc::new(GuardedStore::new(store, guard));
    store.watch_recovery();
    let url = config.redis.context("--redis is required")?;
    let options = RedisOptions {
        breaker: config.breakers.config(),
        ..RedisOptions::default()
    };
    let redis = RedisBackends::connect(&url, options)
        .await
        .context("connecting to Redis")?;
    let backends = Backends {
        store,
        cache: Arc::new(redis.cache),
        bus: Arc::new(redis.bus),
        presence: Arc::new(redis.presence),
    };
    // Bound before its address goes into the lease table: other replicas
    // forward to it as soon as it holds shards.
    let listener = TcpListener::bind(config.listen)
        .await
        .context("binding the gRPC address")?;
    tracing::info!(addr = %listener.local_addr()?, "msg-service listening (gRPC)");
    let keeper = match leases {
        Some(leases) => {
            let addr = config.advertise_addr.unwrap_or(config.listen);
            Some(hold_shards(leases, &config.lease, addr).await?)
        }
        None => None,
    };
    let service = Arc::new(MessageService::serving(
        backends,
        config.service.service_config(),
        keeper.clone(),
    ));
    let _ = ready.set(keeper.clone());
    let retry_worker = service.start_retry_worker();
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut renewals = keeper.clone().map(LeaseKeeper::spawn_renewals);
    let leaving = keeper.clone();
    let shutdown = async move {
        let renewals_ended = shutdown_requested(renewals.as_mut(), &mut terminate).await;
        tracing::info!("shutdown requested");
        if let Some(task) = renewals.filter(|_| !renewals_ended) {
            // Stopped, and waited for, before the shards are released: a
            // rebalance under way could claim one again after the release.
            task.abort();
            let _ = task.await;
        }
        // A deposed instance holds nothing to hand over.
        if let Some(keeper) = leaving.filter(|keeper| !keeper.deposed()) {
            hand_over(&keeper).await;
        }
    };
    let grpc = msg_service::grpc::GrpcService::replica((*service).clone());
    msg_service::grpc::serve_with(listener, grpc, shutdown)
        .await
        .context("serving gRPC")?;
    retry_worker.stop().await;
    msg_service::MessageApi::flush(&*service)
        .await
        .context("flushing the store")?;
    tracing::info!("stopped");
    Ok(())
}

/// Registers this instance in the lease table and claims the shards
/// assigned to it; it serves them once its first tick holds them.
async fn hold_shards(
    leases: Arc<dyn storage::LeaseStore>,
    lease: &cli::LeaseArgs,
    addr: std::net::SocketAddr,
) -> anyhow::Result<Arc<LeaseKeeper>> {
    let clock: Arc<dyn KeeperClock> = Arc::new(SystemClock::default());
    let keeper = LeaseKeeper::register(
        leases,
        clock,
        lease.config(),
        &lease.instance_name,
        &addr.to_string(),
    )
    .await
    .context("registering in the lease table")?;
    keeper.tick().await.context("claiming shards")?;
    tracing::info!(
        instance = keeper.instance(),
        shards = keeper.held_shards(),
        "holding shards under a lease"
    );
    metrics::gauge!("chat_shards_held").set(keeper.held_shards() as f64);
    Ok(Arc::new(keeper))
}

/// Set once the service is up: with the lease keeper it serves under, if any.
type Ready = Arc<std::sync::OnceLock<Option<Arc<LeaseKeeper>>>>;

/// `GET /readyz`: 200 once the service is up and, on a shared store, holds
/// every shard assigned to it under a valid lease, or hands them over in a
/// graceful stop; 503 before and otherwise. While it hands over it stays in
/// rotation: it forwards what it gets, and its gRPC port's graceful close
/// (GOAWAY) moves the gateways' connections elsewhere, where a load
/// balancer marking it down would cut their calls in flight.
fn readiness(ready: &Ready) -> axum::http::StatusCode {
    let serving = match ready.get() {
        Some(Some(keeper)) => keeper.serves_its_shards() || keeper.handing_over(),
        Some(None) => true,
        None => false,
    };
    if serving {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Returns once a stop is asked for (Ctrl-C, SIGTERM) or the lease
/// renewals end, which they do only when a deposed instance cannot register
/// again (see `LeaseKeeper::spawn_renewals`); `true` in that last case.
async fn shutdown_requested(
    renewals: Option<&mut tokio::task::JoinHandle<msg_service::storage::Error>>,
    terminate: &mut tokio::signal::unix::Signal,
) -> bool {
    let ended = async {
        match renewals {
            Some(task) => match task.await {
                Ok(err) => {
                    tracing::error!(error = %err, "this instance lost its lease and could not register again; stopping")
                }
                Err(err) => tracing::error!(error = %err, "the lease renewals stopped; stopping"),
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => false,
        _ = terminate.recv() => false,
        () = ended => true,
    }
}

/// Leaves the replicas gracefully: releases every shard (the next owners
/// need not wait for the lease to run out), then goes on answering for the
/// keeper's hand-over time while gRPC still serves: calls that still come
/// here are forwarded to the new owners, or answered "not served here",
/// which callers hold and make again at the new owner, instead of meeting
/// a closed port until their next rebalance.
async fn hand_over(keeper: &LeaseKeeper) {
    match keeper.release_all().await {
        Ok(()) => tokio::time::sleep(keeper.handover_time()).await,
        Err(err) => {
            tracing::warn!(error = %err, "releasing the shards failed; they move once the lease expires")
        }
    }
}

/// `GET /metrics` in the Prometheus text format and `GET /readyz`, on their
/// own port (gRPC has the main one), served in the background for the life
/// of the process.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    handle: PrometheusHandle,
    ready: Ready,
) -> anyhow::Result<()> {
    let router = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = handle.render();
                async move { ([("content-type", "text/plain; version=0.0.4")], text) }
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let status = readiness(&ready);
                async move { status }
            }),
        );
    let listener = TcpListener::bind(addr)
        .await
        .context("binding the metrics address")?;
    tracing::info!(addr = %listener.local_addr()?, "metrics on /metrics");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!(error = %err, "metrics endpoint stopped");
        }
    });
    Ok(())
}
