//! The msg-service binary (distributed mode): serves the message service over
//! gRPC to the gateways, on the embedded store, with Redis for the inbox
//! cache, the notify bus and presence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use msg_service::{Backends, MessageService, ServiceConfig};
use storage::{Durability, EmbeddedStore, RedisBackends, RedisOptions};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// The chat message service: send, sync, history, conversations over gRPC.
#[derive(Debug, Parser)]
#[command(name = "msg-service", version)]
struct Config {
    /// gRPC address to listen on.
    #[arg(long, env = "CHAT_MSG_LISTEN", default_value = "127.0.0.1:9090")]
    listen: SocketAddr,
    /// Where the embedded store lives.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Redis URL for the inbox cache, notify bus and presence (shared with the gateways).
    #[arg(long, env = "CHAT_REDIS_URL")]
    redis: String,
    /// Sends per user per second (token bucket refill), over all gateways.
    #[arg(long, env = "CHAT_SEND_RATE", default_value_t = 20)]
    send_rate: u32,
    /// Sends per user in a burst (token bucket size).
    #[arg(long, env = "CHAT_SEND_BURST", default_value_t = 50)]
    send_burst: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let store = EmbeddedStore::open(&config.data_dir.join("store"), Durability::Fsync)
        .context("opening the store")?;
    let redis = RedisBackends::connect(&config.redis, RedisOptions::default())
        .await
        .context("connecting to Redis")?;
    let backends = Backends {
        store: Arc::new(store),
        cache: Arc::new(redis.cache),
        bus: Arc::new(redis.bus),
        presence: Arc::new(redis.presence),
    };
    let limits = ServiceConfig {
        send_rate: config.send_rate,
        send_burst: config.send_burst,
        ..ServiceConfig::default()
    };
    let service = Arc::new(MessageService::new(backends, limits));
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
    msg_service::MessageApi::flush(&*service)
        .await
        .context("flushing the store")?;
    tracing::info!("stopped");
    Ok(())
}
