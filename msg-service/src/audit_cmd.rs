//! `msg-service audit`: runs the audit library on the chosen store, prints
//! one line per missing (and repaired) entry and a summary, and turns the
//! outcome into the exit status.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use msg_service::audit::{AuditReport, Missing, find_missing};
use msg_service::{Backends, MessageService, ServiceConfig};
use storage::{InProcessBus, InProcessCache, InProcessPresence, RedisBackends, RedisOptions};

use crate::cli::AuditArgs;

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
    let report = find_missing(&*backends.store, args.from, args.to)
        .await
        .context("auditing")?;
    for m in &report.missing {
        println!("missing {}", describe(m));
    }
    if !args.repair || report.missing.is_empty() {
        summary(&report, 0);
        return Ok(report.missing.is_empty());
    }
    let service = MessageService::new(backends, ServiceConfig::default());
    let outcomes = service
        .repair(report.missing.clone())
        .await
        .context("repairing")?;
    let mut repaired = 0;
    for (m, outcome) in &outcomes {
        match outcome {
            Ok(seq) => {
                repaired += 1;
                println!("repaired {} seq={seq}", describe(m));
            }
            Err(reason) => println!("not-repaired {} reason={reason:?}", describe(m)),
        }
    }
    service.backends().store.flush().await.context("flushing")?;
    summary(&report, repaired);
    Ok(repaired == report.missing.len())
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
