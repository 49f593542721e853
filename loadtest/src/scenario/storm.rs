//! `reconnect-storm`: users in pairs send at a low rate; then every client
//! drops its connection at once, a backlog is sent to each of them over REST
//! while they are away, and they all come back within a jitter window and
//! sync. Measures how long until every client has caught up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures_util::stream::{self, StreamExt};
use serde_json::json;

use super::{Common, connect_timeout, dm, pair_specs, secs};
use crate::checker::{Acks, MsgKey};
use crate::client::Phase;
use crate::report::Report;
use crate::run::{Outside, Run};
use crate::stats::Counters;
use crate::target::Target;

/// Options of `reconnect-storm`.
#[derive(clap::Args, Debug, Clone)]
pub struct Storm {
    #[command(flatten)]
    common: Common,
    /// Users (an even number), all dropping at once.
    #[arg(long, default_value_t = 1000)]
    users: usize,
    /// Messages per second per user before the drop.
    #[arg(long, default_value_t = 0.2)]
    rate: f64,
    /// Messages sent to each user over REST while it is away.
    #[arg(long, default_value_t = 5)]
    backlog: usize,
    /// Clients reconnect at a random moment within this many ms.
    #[arg(long, default_value_t = 2000)]
    jitter_ms: u64,
    /// Seconds to wait for every client to catch up.
    #[arg(long, default_value_t = 60.0)]
    catch_up_timeout: f64,
}

/// Sends `count` messages from `from` to `to` over REST; returns the acked ones.
async fn send_backlog(
    target: &Target,
    from: String,
    to: String,
    count: usize,
) -> anyhow::Result<Acks> {
    let token = target.token(&from).await?;
    let url = format!(
        "{}/v1/conversations/{}/messages",
        target.http_base(0),
        dm(&from, &to)
    );
    let mut acks = Acks::default();
    for k in 0..count {
        let id = format!("{from}-backlog-{k}");
        let sent = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros();
        target
            .http()
            .post(&url)
            .bearer_auth(&token)
            .json(&json!({"client_msg_id": id, "body": format!("{sent} backlog")}))
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("POST {url}"))?;
        acks.record(MsgKey::new(&from, &id), vec![to.clone()]);
    }
    Ok(acks)
}

impl Storm {
    /// The shared options.
    pub fn common(&self) -> &Common {
        &self.common
    }
}

/// Runs `reconnect-storm`.
pub async fn run(opts: Storm) -> anyhow::Result<Report> {
    let Storm {
        common,
        users,
        rate,
        backlog,
        jitter_ms,
        catch_up_timeout,
    } = opts;
    common.validate()?;
    let target = common.target()?;
    let specs = pair_specs(&common, users, rate)?;
    let run = Run::start(target.clone(), specs, common.ramp());
    if !run.connected(users as u64, connect_timeout(&common)).await {
        bail!("not every user connected");
    }
    run.send_for(common.duration()).await;
    run.set(Phase::Offline);
    if !run
        .wait_until(Duration::from_secs(30), |c| {
            Counters::get(&c.connected) == 0
        })
        .await
    {
        bail!("clients did not disconnect");
    }
    run.say(format!(
        "all {users} clients dropped; sending a backlog of {backlog} to each over REST"
    ));
    let backlogs: Vec<anyhow::Result<Acks>> = stream::iter(0..users)
        .map(|i| send_backlog(&target, common.user(i ^ 1), common.user(i), backlog))
        .buffer_unordered(32)
        .collect()
        .await;
    let rest_acks = backlogs.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    let backlog_total: usize = rest_acks.iter().map(Acks::len).sum();
    run.counters()
        .expected
        .fetch_add(backlog_total as u64, std::sync::atomic::Ordering::Relaxed);
    let storm = Instant::now();
    run.set(Phase::Reconnect(jitter_ms));
    let all_back = run
        .wait_until(secs(catch_up_timeout), |c| {
            Counters::get(&c.caught_up) >= users as u64
        })
        .await;
    let all_caught_up = storm.elapsed();
    let drained = run.drain(common.drain_timeout()).await;
    let finished = run.finish(Duration::from_secs(30)).await;

    let mut times: Vec<f64> = finished
        .reports
        .iter()
        .filter_map(|r| r.caught_up.map(|d| d.as_secs_f64() * 1000.0))
        .collect();
    times.sort_by(f64::total_cmp);
    let at = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let mut extra = BTreeMap::new();
    extra.insert("caught_up_clients".into(), times.len() as f64);
    extra.insert("caught_up_p50_ms".into(), at(0.5));
    extra.insert("caught_up_p99_ms".into(), at(0.99));
    extra.insert("caught_up_max_ms".into(), at(1.0));
    extra.insert(
        "all_caught_up_ms".into(),
        if all_back {
            all_caught_up.as_secs_f64() * 1000.0
        } else {
            f64::NAN
        },
    );
    extra.insert("backlog_entries".into(), backlog_total as f64);
    extra.insert("drained".into(), f64::from(u8::from(drained)));
    let params = json!({"users": users, "rate": rate, "backlog": backlog, "jitter_ms": jitter_ms, "common": common});
    let outside = Outside {
        acks: rest_acks,
        receipts: Vec::new(),
    };
    let mut report = finished.report("reconnect-storm", params, 0.0, extra, &outside);
    if !all_back {
        report.problems.push(format!(
            "only {} of {users} clients caught up within {catch_up_timeout} s",
            times.len()
        ));
    }
    Ok(report)
}
