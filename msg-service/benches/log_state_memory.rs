//! Memory of per-log state: sends one DM from each of `BENCH_USERS / 2`
//! distinct senders to a distinct peer (so `BENCH_USERS` inboxes and half
//! as many conversation logs are touched once), then reads the history of
//! `BENCH_GHOSTS` direct conversations that do not exist. Prints how many
//! logs keep their state and the process RSS after each phase, for the cap
//! `BENCH_LOG_CAP` (default: the service's default) and, as the baseline in
//! the same run, with no cap at all; each in a process of its own, so that
//! one's memory does not count in the other's RSS.
//!
//! Run with `cargo bench -p msg-service --bench log_state_memory`.

use std::sync::Arc;

use anyhow::Context;
use msg_service::{Backends, MessageApi, MessageService, ServiceConfig};
use proto::{ConvId, SendRequest, UserId};
use storage::{Durability, EmbeddedStore, InProcessBus, InProcessCache, InProcessPresence, Page};
use tokio::task::JoinSet;

/// Sends in flight at once.
const CONCURRENCY: usize = 64;

fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .with_context(|| format!("{name}={value:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// The process's resident memory in MiB, from /proc.
fn rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .context("no VmRSS in /proc/self/status")?
        .parse()?;
    Ok(kib / 1024.0)
}

/// Set in the child process that measures one cap.
const ONE_CAP: &str = "BENCH_LOG_STATE_ONE_CAP";

fn main() -> anyhow::Result<()> {
    let users = env_number("BENCH_USERS", 1_000_000)?;
    let ghosts = env_number("BENCH_GHOSTS", 100_000)?;
    if let Ok(cap) = std::env::var(ONE_CAP) {
        let cap: usize = cap.parse().context("the child's cap")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(run(cap, users, ghosts));
    }
    let cap = env_number("BENCH_LOG_CAP", ServiceConfig::default().max_cached_logs)?;
    println!("{users} users touched, {ghosts} history reads of DMs that do not exist\n");
    println!(
        "{:<12} {:<22} {:>10} {:>14} {:>9}",
        "cap", "after", "inboxes", "conversations", "RSS MiB"
    );
    for cap in [cap, usize::MAX] {
        let status = std::process::Command::new(std::env::current_exe()?)
            .env(ONE_CAP, cap.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "the run with cap {cap} failed: {status}");
    }
    Ok(())
}

async fn run(cap: usize, users: usize, ghosts: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), Durability::OsBuffers)?;
    let service = Arc::new(MessageService::new(
        Backends {
            store: Arc::new(store),
            cache: Arc::new(InProcessCache::new(1, 1)),
            bus: Arc::new(InProcessBus::default()),
            presence: Arc::new(InProcessPresence::default()),
        },
        ServiceConfig {
            max_cached_logs: cap,
            ..ServiceConfig::default()
        },
    ));
    let label = if cap == usize::MAX {
        "none".to_owned()
    } else {
        cap.to_string()
    };
    report(&service, &label, "start")?;
    let mut tasks = JoinSet::new();
    for worker in 0..CONCURRENCY {
        let service = Arc::clone(&service);
        tasks.spawn(async move {
            let mut pair = worker;
            while pair < users / 2 {
                send(&service, pair).await?;
                pair += CONCURRENCY;
            }
            anyhow::Ok(())
        });
    }
    while let Some(task) = tasks.join_next().await {
        task??;
    }
    report(&service, &label, "the sends")?;
    let reader = UserId::parse("reader")?;
    for i in 0..ghosts {
        let ghost = UserId::parse(&format!("ghost{i}"))?;
        let conv = ConvId::dm(&reader, &ghost)?;
        service
            .history(&reader, &conv, Page::Before(u64::MAX), 50)
            .await?;
    }
    report(&service, &label, "the ghost reads")?;
    Ok(())
}

async fn send(service: &MessageService, pair: usize) -> anyhow::Result<()> {
    let sender = UserId::parse(&format!("s{pair}"))?;
    let peer = format!("p{pair}");
    let request = SendRequest::new(
        Some("m1"),
        None,
        Some(&peer),
        None,
        Some("hello".to_owned()),
    )?;
    service.send(&sender, request).await?;
    Ok(())
}

fn report(service: &MessageService, cap: &str, after: &str) -> anyhow::Result<()> {
    let cached = service.cached_logs();
    println!(
        "{:<12} {:<22} {:>10} {:>14} {:>9.1}",
        cap,
        after,
        cached.inboxes,
        cached.conversations,
        rss_mib()?
    );
    Ok(())
}
