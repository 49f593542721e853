//! `catch-up`: a user who was away has N entries waiting; it connects and
//! syncs them all (pages of 500). Measures entries per second, and checks
//! it got every one exactly once, in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use proto::ServerFrame;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use super::{Common, connect_timeout};
use crate::checker::{MsgKey, Receipts};
use crate::client::{ClientSpec, Destination, Schedule};
use crate::report::Report;
use crate::run::{Outside, Run};
use crate::stats::Counters;
use crate::target::Target;

/// Options of `catch-up`.
#[derive(clap::Args, Debug, Clone)]
pub struct CatchUp {
    #[command(flatten)]
    common: Common,
    /// Entries waiting for the reader.
    #[arg(long, default_value_t = 10_000)]
    entries: usize,
    /// Users sending them (each sends entries/senders).
    #[arg(long, default_value_t = 10)]
    senders: usize,
}

/// Connects as `reader` and syncs from 0 until `more` is false.
async fn sync_all(
    target: &Target,
    index: usize,
    reader: &str,
) -> anyhow::Result<(Receipts, Duration)> {
    let token = target.token(reader).await?;
    let mut ws = target.connect(index, &token).await?;
    let mut receipts = Receipts::default();
    let started = Instant::now();
    for rid in 1u64.. {
        let frame = json!({"type": "sync", "rid": rid, "since": receipts.last_seq(), "limit": 500});
        ws.send(Message::text(frame.to_string())).await?;
        let result = loop {
            let message = ws.next().await.context("the server closed the socket")??;
            let Message::Text(text) = message else {
                continue;
            };
            match serde_json::from_str::<ServerFrame>(&text)? {
                ServerFrame::SyncResult { result, .. } => break result,
                ServerFrame::Error { code, message, .. } => {
                    bail!("sync failed: {} {message}", code.as_str())
                }
                _ => continue,
            }
        };
        for entry in &result.entries {
            let m = &entry.message;
            receipts.record(
                entry.seq,
                MsgKey::new(m.from.as_str(), m.client_msg_id.as_str()),
            );
        }
        if !result.more {
            break;
        }
    }
    let elapsed = started.elapsed();
    let _ = ws.close(None).await;
    Ok((receipts, elapsed))
}

impl CatchUp {
    /// The shared options.
    pub fn common(&self) -> &Common {
        &self.common
    }
}

/// Runs `catch-up`.
pub async fn run(opts: CatchUp) -> anyhow::Result<Report> {
    let CatchUp {
        common,
        entries,
        senders,
    } = opts;
    common.validate()?;
    if entries == 0 || senders == 0 || senders > entries {
        bail!("--entries and --senders must be positive, senders at most entries");
    }
    let reader = format!("{}-reader", common.prefix);
    let target = common.target()?;
    let specs = (0..senders)
        .map(|i| ClientSpec {
            index: i,
            user: common.user(i),
            to: Destination::Peer(reader.clone()),
            recipients: Arc::new(vec![reader.clone()]),
            schedule: Schedule::Count {
                total: (entries / senders + usize::from(i < entries % senders)) as u64,
                window: 32,
            },
            body_bytes: common.size,
        })
        .collect();
    let run = Run::start(target.clone(), specs, common.ramp());
    if !run
        .connected(senders as u64, connect_timeout(&common))
        .await
    {
        bail!("not every sender connected");
    }
    run.set(crate::client::Phase::Send);
    let filled = run
        .wait_until(common.drain_timeout() + Duration::from_secs(300), |c| {
            Counters::get(&c.acked) >= entries as u64 && Counters::get(&c.unacked) == 0
        })
        .await;
    if !filled {
        bail!("the backlog was not acked in time");
    }
    run.say(format!(
        "{entries} entries waiting for {reader}; syncing them"
    ));
    let (receipts, took) = sync_all(&target, senders, &reader).await?;
    let finished = run.finish(Duration::from_secs(30)).await;
    let mut extra = BTreeMap::new();
    extra.insert("entries".into(), receipts.distinct() as f64);
    extra.insert("catch_up_ms".into(), took.as_secs_f64() * 1000.0);
    let per_s = receipts.distinct() as f64 / took.as_secs_f64().max(1e-9);
    extra.insert("entries_per_s".into(), per_s);
    let params = json!({"entries": entries, "senders": senders, "common": common});
    let outside = Outside {
        acks: Vec::new(),
        receipts: vec![(reader, receipts)],
    };
    Ok(finished.report("catch-up", params, per_s, extra, &outside))
}
