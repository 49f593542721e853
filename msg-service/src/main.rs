//! The msg-service binary (distributed mode): serves the message service over
//! gRPC to the gateways, on the embedded store or ScyllaDB / Cassandra, with
//! Redis for the inbox cache, the notify bus and presence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use msg_service::{Backends, BulkheadConfig, MessageService, ServiceConfig};
use storage::resilience::{GuardedStore, GuardedStoreConfig};
use storage::scylla::{ConsistencyLevel, Keyspace, Replication};
use storage::{
    Durability, EmbeddedStore, MessageStore, RedisBackends, RedisOptions, ScyllaOptions,
    ScyllaStore,
};
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
    /// The durable store: the embedded one under --data-dir, or Scylla.
    #[arg(long, env = "CHAT_STORE", value_enum, default_value_t = StoreKind::Embedded)]
    store: StoreKind,
    /// Where the embedded store lives.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Scylla / Cassandra contact points, comma-separated host:port.
    #[arg(
        long,
        env = "CHAT_SCYLLA_NODES",
        value_delimiter = ',',
        required_if_eq("store", "scylla")
    )]
    scylla_nodes: Vec<String>,
    /// The keyspace (created with its tables if missing).
    #[arg(long, env = "CHAT_SCYLLA_KEYSPACE", default_value = "chat")]
    scylla_keyspace: Keyspace,
    /// Replication of a keyspace the service creates: `SimpleStrategy:1`, or
    /// `NetworkTopologyStrategy:dc1=3,dc2=3`.
    #[arg(
        long,
        env = "CHAT_SCYLLA_REPLICATION",
        default_value = "SimpleStrategy:1"
    )]
    scylla_replication: Replication,
    /// Consistency of reads and writes (LWTs use the matching serial level).
    #[arg(long, env = "CHAT_SCYLLA_CONSISTENCY", default_value = "LOCAL_QUORUM")]
    scylla_consistency: ConsistencyLevel,
    /// Redis URL for the inbox cache, notify bus and presence (shared with the gateways).
    #[arg(long, env = "CHAT_REDIS_URL")]
    redis: String,
    /// Sends per user per second (token bucket refill), over all gateways.
    #[arg(long, env = "CHAT_SEND_RATE", default_value_t = 20)]
    send_rate: u32,
    /// Sends per user in a burst (token bucket size).
    #[arg(long, env = "CHAT_SEND_BURST", default_value_t = 50)]
    send_burst: u32,
    /// Deadline of each call to the durable store, in milliseconds; past it
    /// the call fails as `unavailable` and counts toward the store breaker.
    #[arg(long, env = "CHAT_STORE_TIMEOUT_MS", default_value_t = 2_000,
        value_parser = clap::value_parser!(u64).range(1..))]
    store_timeout_ms: u64,
    /// Sends running at once and waiting, as CONCURRENCY:QUEUE; one more is
    /// answered `unavailable` at once.
    #[arg(long, env = "CHAT_BULKHEAD_SEND", default_value = "256:1024")]
    bulkhead_send: BulkheadConfig,
    /// Syncs (and inbox-head reads) running at once and waiting.
    #[arg(long, env = "CHAT_BULKHEAD_SYNC", default_value = "256:1024")]
    bulkhead_sync: BulkheadConfig,
    /// History pages running at once and waiting.
    #[arg(long, env = "CHAT_BULKHEAD_HISTORY", default_value = "32:64")]
    bulkhead_history: BulkheadConfig,
    /// Inbox appends of all fan-outs running at once and waiting.
    #[arg(long, env = "CHAT_BULKHEAD_FANOUT", default_value = "512:8192")]
    bulkhead_fanout: BulkheadConfig,
}

/// Which durable store the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StoreKind {
    /// The embedded LSM store under --data-dir (one instance).
    Embedded,
    /// ScyllaDB or Cassandra.
    Scylla,
}

async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn MessageStore>> {
    Ok(match config.store {
        StoreKind::Embedded => Arc::new(
            EmbeddedStore::open(&config.data_dir.join("store"), Durability::Fsync)
                .context("opening the embedded store")?,
        ),
        StoreKind::Scylla => {
            let mut options = ScyllaOptions::new(config.scylla_nodes.clone());
            options.keyspace = config.scylla_keyspace.clone();
            options.replication = config.scylla_replication.clone();
            options.consistency = config.scylla_consistency;
            Arc::new(
                ScyllaStore::connect(&options)
                    .await
                    .context("connecting to Scylla")?,
            )
        }
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let guard = GuardedStoreConfig {
        timeout: Duration::from_millis(config.store_timeout_ms),
        ..GuardedStoreConfig::default()
    };
    let store = Arc::new(GuardedStore::new(open_store(&config).await?, guard));
    let redis = RedisBackends::connect(&config.redis, RedisOptions::default())
        .await
        .context("connecting to Redis")?;
    let backends = Backends {
        store,
        cache: Arc::new(redis.cache),
        bus: Arc::new(redis.bus),
        presence: Arc::new(redis.presence),
    };
    let limits = ServiceConfig {
        send_rate: config.send_rate,
        send_burst: config.send_burst,
        send_bulkhead: config.bulkhead_send,
        sync_bulkhead: config.bulkhead_sync,
        history_bulkhead: config.bulkhead_history,
        fanout_bulkhead: config.bulkhead_fanout,
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
