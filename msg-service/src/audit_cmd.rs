//! `msg-service audit`: runs the audit library on the chosen store, prints
//! one line per missing (and repaired) entry and a summary, and turns the
//! outcome into the exit status. A repair queues the missing entries for
//! the conversations' owners and waits until they appended them: on the
//! embedded store this process is the owner (the store is locked to it);
//! on Scylla the running replicas are.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use msg_service::audit::{AuditReport, Missing, find_missing, queue_repairs};
use msg_service::{Backends, MessageService, ServiceConfig, queued_retries};
use storage::{InProcessBus, InProcessCache, InProcessPresence, RedisBackends, RedisOptions};

use crate::cli::{AuditArgs, StoreKind};

/// How often a repair looks whether the owners are done.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// Runs the audit; 0 nothing left missing, 1 something missing, 2 an error.
pub async fn run(args: AuditArgs) -> ExitCode {
    match audit(&args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(err) => {
            eprintln!("audit failed: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether nothing is left missing.
async fn audit(args: &AuditArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(args.from <= args.to, "--from is after --to");
    let backends = backends(args).await?;
    let store = &*backends.store;
    let report = find_missing(store, args.from, args.to)
        .await
        .context("auditing")?;
    for m in &report.missing {
        println!("missing {}", describe(m));
    }
    if !args.repair || report.missing.is_empty() {
        summary(&report, 0);
        return Ok(report.missing.is_empty());
    }
    let queued = queue_repairs(store, &report.missing)
        .await
        .context("queueing the repairs")?;
    eprintln!("audit: {queued} fan-outs queued for their conversations' owners");
    // On the embedded store nobody else can: this process is the owner.
    // The service is kept until the worker stops (the worker holds it
    // only weakly, and ends once it is dropped).
    let owner = (args.store.store == StoreKind::Embedded).then(|| {
        let service = MessageService::new(backends.clone(), ServiceConfig::default());
        let worker = service.start_retry_worker();
        (service, worker)
    });
    let drained = wait_until_drained(&backends, args.repair_wait()).await;
    if let Some((_service, worker)) = owner {
        worker.stop().await;
    }
    drained?;
    store.flush().await.context("flushing")?;
    let left: BTreeSet<Missing> = find_missing(store, args.from, args.to)
        .await
        .context("auditing again")?
        .missing
        .into_iter()
        .collect();
    let mut repaired = 0;
    for m in &report.missing {
        if left.contains(m) {
            println!("not-repaired {}", describe(m));
        } else {
            repaired += 1;
            println!("repaired {}", describe(m));
        }
    }
    summary(&report, repaired);
    Ok(repaired == report.missing.len())
}

/// Waits until the retry queue is empty, at most `limit`; an error only
/// when the queue cannot be read (a queue still full after `limit` is
/// reported by the audit that follows).
async fn wait_until_drained(backends: &Backends, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let depth = queued_retries(&*backends.store)
            .await
            .context("reading the retry queue")?;
        if depth == 0 || Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

fn describe(m: &Missing) -> String {
    format!(
        "member={} conv_id={} conv_seq={}",
        m.member, m.conv_id, m.conv_seq
    )
}

fn summary(report: &AuditReport, repaired: usize) {
    println!(
        "audit: {} conversations, {} messages in range, {} missing, {} repaired",
        report.conversations,
        report.messages,
        report.missing.len(),
        repaired
    );
}

/// The store, and the cache, bus and presence a repair writes through.
async fn backends(args: &AuditArgs) -> anyhow::Result<Backends> {
    let store = args.store.open().await?;
    Ok(match &args.redis {
        Some(url) => {
            let redis = RedisBackends::connect(url, RedisOptions::default())
                .await
                .context("connecting to Redis")?;
            Backends {
                store,
                cache: Arc::new(redis.cache),
                bus: Arc::new(redis.bus),
                presence: Arc::new(redis.presence),
            }
        }
        None => Backends {
            store,
            cache: Arc::new(InProcessCache::default()),
            bus: Arc::new(InProcessBus::default()),
            presence: Arc::new(InProcessPresence::default()),
        },
    })
}
