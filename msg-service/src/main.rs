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
    if let Some(addr) = config.metrics_listen {
        serve_metrics(addr, handle).await?;
    }
    let mut store = config.store.open().await?;
    if let Some(path) = &config.fault_file {
        tracing::warn!(path = %path.display(), "FAULT HOOK IS ON: the store obeys this file");
        store = msg_service::fault_hook::wrap(store, path.clone());
    }
    // The deadline and breaker sit outside the fault hook, as they would
    // around a remote store that stalls.
    let guard = config.service.store_guard(&config.breakers);
    let store = Arc::new(GuardedStore::new(store, guard));
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
    let service = Arc::new(MessageService::new(
        backends,
        config.service.service_config(),
    ));
    let retry_worker = service.start_retry_worker();
    let listener = TcpListener::bind(config.listen)
        .await
        .context("binding the gRPC address")?;
    tracing::info!(addr = %listener.local_addr()?, "msg-service listening (gRPC)");
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown requested");
    };
    msg_service::grpc::serve(
        listener,
        Arc::clone(&service) as Arc<dyn msg_service::MessageApi>,
        shutdown,
    )
    .await
    .context("serving gRPC")?;
    retry_worker.stop().await;
    msg_service::MessageApi::flush(&*service)
        .await
        .context("flushing the store")?;
    tracing::info!("stopped");
    Ok(())
}

/// `GET /metrics` in the Prometheus text format, on its own port (gRPC has
/// the main one), served in the background for the life of the process.
async fn serve_metrics(addr: std::net::SocketAddr, handle: PrometheusHandle) -> anyhow::Result<()> {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = handle.render();
            async move { ([("content-type", "text/plain; version=0.0.4")], text) }
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
