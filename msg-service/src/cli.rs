//! The msg-service binary's command line: serving (the default, no
//! subcommand) and `audit`, sharing the flags that choose the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use storage::scylla::{ConsistencyLevel, Keyspace, Replication};
use storage::{Durability, EmbeddedStore, LeaseStore, MessageStore, ScyllaOptions, ScyllaStore};

/// The chat message service: send, sync, history, conversations over gRPC.
/// Without a subcommand it serves; `msg-service audit --help` for the audit.
#[derive(Debug, Parser)]
#[command(
    name = "msg-service",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compares every conversation's log with its members' inboxes for the
    /// messages sent in a time range and lists each missing
    /// (member, conv_id, conv_seq); with --repair appends them. Exit status:
    /// 0 nothing missing (or all repaired), 1 something missing and not
    /// repaired, 2 the audit could not run. On the embedded store, stop the
    /// msg-service using the data dir first (the store is locked while open).
    Audit(AuditArgs),
}

/// Flags of the server.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC address to listen on.
    #[arg(long, env = "CHAT_MSG_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: SocketAddr,
    /// Where the other replicas reach this one's gRPC (`host:port`), as
    /// written in the lease table; default: --listen (set it when that is
    /// a wildcard address, e.g. the pod's IP on Kubernetes).
    #[arg(long, env = "CHAT_ADVERTISE_ADDR")]
    pub advertise_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub breakers: msg_service::BreakerArgs,
    /// Redis URL for the inbox cache, notify bus and presence (shared with the gateways).
    // An `Option` only so that `audit` parses without it: clap requires it
    // whenever no subcommand is given.
    #[arg(long, env = "CHAT_REDIS_URL", required = true)]
    pub redis: Option<String>,
    #[command(flatten)]
    pub service: msg_service::ServiceArgs,
    #[command(flatten)]
    pub lease: LeaseArgs,
    /// Serve Prometheus metrics (`GET /metrics`) on this address; off unless given.
    #[arg(long, env = "CHAT_MSG_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// For fault-injection tests only: a file read every 100 ms that can
    /// stall the store's writes (`stall_writes`) or fail every Nth inbox
    /// append (`fail_inbox_every=N`). Off unless given.
    #[arg(long, env = "CHAT_FAULT_FILE")]
    pub fault_file: Option<std::path::PathBuf>,
}

/// How this instance holds its shards (Scylla store only: the embedded
/// store belongs to one process, which owns every log).
#[derive(Debug, Args)]
pub struct LeaseArgs {
    /// This instance's name in the lease table (a random incarnation is
    /// added at each start), e.g. the pod name.
    #[arg(long, env = "CHAT_INSTANCE_NAME", default_value = "msg-service")]
    pub instance_name: String,
    /// How long a lease renewal holds, in milliseconds: an instance that
    /// stops renewing (killed, paused, cut off) has its shards served by
    /// others after this plus the drift margin.
    #[arg(long, env = "CHAT_LEASE_MS", default_value_t = 3_000,
        value_parser = clap::value_parser!(u64).range(300..))]
    pub lease_ms: u64,
    /// The most two instances' clocks may disagree, in milliseconds.
    #[arg(long, env = "CHAT_LEASE_DRIFT_MS", default_value_t = 500)]
    pub lease_drift_ms: u64,
}

impl LeaseArgs {
    /// The keeper's configuration; the drift margin stays below the lease.
    pub fn config(&self) -> msg_service::ownership::KeeperConfig {
        msg_service::ownership::KeeperConfig {
            lease: std::time::Duration::from_millis(self.lease_ms),
            drift_margin: std::time::Duration::from_millis(
                self.lease_drift_ms.min(self.lease_ms / 3),
            ),
        }
    }
}

/// Flags of `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Start of the range: message timestamps in ms since the Unix epoch (inclusive).
    #[arg(long)]
    pub from: u64,
    /// End of the range, ms since the Unix epoch (inclusive).
    #[arg(long)]
    pub to: u64,
    /// Repair: queue the missing entries for the fan-out retry worker of
    /// each conversation's owner (the running replicas on Scylla; this
    /// process on the embedded store, which it holds locked), wait until
    /// they are appended, and audit again.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: how long to wait for the owners, in seconds.
    #[arg(long, default_value_t = 60)]
    pub repair_wait_secs: u64,
    /// With --repair on Scylla: the Redis the gateways use, so that repaired
    /// entries reach the shared inbox cache and notify. Without it the audit
    /// uses an in-process cache (right for the embedded store, offline).
    #[arg(long, env = "CHAT_REDIS_URL")]
    pub redis: Option<String>,
}

impl AuditArgs {
    /// How long a repair waits for the owners.
    pub fn repair_wait(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.repair_wait_secs)
    }
}

/// Which store, and where.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The durable store: the embedded one under --data-dir, or Scylla.
    #[arg(long, env = "CHAT_STORE", value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// Where the embedded store lives.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Scylla / Cassandra contact points, comma-separated host:port.
    #[arg(
        long,
        env = "CHAT_SCYLLA_NODES",
        value_delimiter = ',',
        required_if_eq("store", "scylla")
    )]
    pub scylla_nodes: Vec<String>,
    /// The keyspace (created with its tables if missing).
    #[arg(long, env = "CHAT_SCYLLA_KEYSPACE", default_value = "chat")]
    pub scylla_keyspace: Keyspace,
    /// Replication of a keyspace the service creates: `SimpleStrategy:1`, or
    /// `NetworkTopologyStrategy:dc1=3,dc2=3`.
    #[arg(
        long,
        env = "CHAT_SCYLLA_REPLICATION",
        default_value = "SimpleStrategy:1"
    )]
    pub scylla_replication: Replication,
    /// Consistency of reads and writes (LWTs use the matching serial level).
    /// Levels below a quorum (ONE, LOCAL_ONE, TWO, THREE) are refused unless
    /// --scylla-allow-weak-consistency.
    #[arg(long, env = "CHAT_SCYLLA_CONSISTENCY", default_value = "LOCAL_QUORUM")]
    pub scylla_consistency: ConsistencyLevel,
    /// Accept a --scylla-consistency below a quorum: reads may then miss
    /// acknowledged writes (a sync can skip a message) unless the keyspace
    /// has a single replica.
    #[arg(long, env = "CHAT_SCYLLA_ALLOW_WEAK_CONSISTENCY")]
    pub scylla_allow_weak_consistency: bool,
    /// Production mode: refuse to start on a Scylla keyspace with a single
    /// replica (one node's power loss can lose acknowledged messages: see
    /// deploy/README.md, "Durability"). Off by default (development).
    #[arg(long, env = "CHAT_PRODUCTION")]
    pub production: bool,
    /// With --production: accept a Scylla keyspace with a single replica anyway.
    #[arg(long, env = "CHAT_SCYLLA_ALLOW_SINGLE_REPLICA")]
    pub scylla_allow_single_replica: bool,
}

/// Which durable store the service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// The embedded LSM store under --data-dir (one instance).
    Embedded,
    /// ScyllaDB or Cassandra.
    Scylla,
}

impl StoreArgs {
    /// Opens the store these flags name.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn MessageStore>> {
        Ok(self.open_with_leases().await?.0)
    }

    /// The store, and its lease table when several processes may share it
    /// (Scylla); `None` for the embedded store, which one process owns.
    pub async fn open_with_leases(
        &self,
    ) -> anyhow::Result<(Arc<dyn MessageStore>, Option<Arc<dyn LeaseStore>>)> {
        Ok(match self.store {
            StoreKind::Embedded => {
                let dir = self.data_dir.join("store");
                let store = EmbeddedStore::open(&dir, Durability::Fsync).with_context(|| {
                    format!(
                        "opening the embedded store in {} (is a msg-service running on this \
                         data dir? The store is locked while open: stop it first)",
                        dir.display()
                    )
                })?;
                (Arc::new(store), None)
            }
            StoreKind::Scylla => match ScyllaStore::connect(&self.scylla_options()).await {
                Ok(store) => (Arc::new(store.clone()), Some(Arc::new(store))),
                Err(err @ storage::Error::Rejected(_)) => {
                    return Err(err).context(
                        "Scylla refused at start-up (the flags that allow a weaker setup: \
                         --scylla-allow-weak-consistency, --scylla-allow-single-replica)",
                    );
                }
                Err(err) => return Err(err).context("connecting to Scylla"),
            },
        })
    }

    /// What the Scylla store is opened with: in production mode, a
    /// keyspace with a single replica is refused unless explicitly allowed.
    pub fn scylla_options(&self) -> ScyllaOptions {
        let mut options = ScyllaOptions::new(self.scylla_nodes.clone());
        options.keyspace = self.scylla_keyspace.clone();
        options.replication = self.scylla_replication.clone();
        options.consistency = self.scylla_consistency;
        options.allow_weak_consistency = self.scylla_allow_weak_consistency;
        options.min_replication_factor = if self.production && !self.scylla_allow_single_replica {
            PRODUCTION_MIN_REPLICAS
        } else {
            1
        };
        options
    }
}

/// The fewest replicas a production keyspace may have: one more than one.
const PRODUCTION_MIN_REPLICAS: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn store_args(flags: &[&str]) -> StoreArgs {
        let base = ["msg-service", "audit", "--from", "0", "--to", "1"];
        let args = base.iter().chain(flags);
        match Cli::try_parse_from(args).expect("the flags parse").command {
            Some(Command::Audit(audit)) => audit.store,
            None => panic!("audit was not parsed"),
        }
    }

    const SCYLLA: [&str; 4] = ["--store", "scylla", "--scylla-nodes", "127.0.0.1:9042"];

    #[test]
    fn consistency_one_is_refused_unless_weak_consistency_is_explicitly_allowed() {
        let one = [&SCYLLA[..], &["--scylla-consistency", "ONE"]].concat();
        let refused = store_args(&one).scylla_options();
        assert!(!refused.allow_weak_consistency);
        let allowed = [&one[..], &["--scylla-allow-weak-consistency"]].concat();
        assert!(store_args(&allowed).scylla_options().allow_weak_consistency);
    }

    #[test]
    fn production_mode_requires_two_replicas_unless_a_single_one_is_allowed() {
        let dev = store_args(&SCYLLA).scylla_options();
        assert_eq!(dev.min_replication_factor, 1, "outside production");
        let production = [&SCYLLA[..], &["--production"]].concat();
        let strict = store_args(&production).scylla_options();
        assert_eq!(strict.min_replication_factor, 2);
        let allowed = [&production[..], &["--scylla-allow-single-replica"]].concat();
        let overridden = store_args(&allowed).scylla_options();
        assert_eq!(overridden.min_replication_factor, 1);
    }
}
