//! `pairs`: users in pairs, each sending direct messages to its peer at a
//! fixed rate; measures send->ack and send->delivered latency.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use super::{Common, connect_timeout, pair_specs};
use crate::report::Report;
use crate::run::{Outside, Run};

/// Options of `pairs`.
#[derive(clap::Args, Debug, Clone)]
pub struct Pairs {
    #[command(flatten)]
    common: Common,
    /// Users (an even number).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Messages per second per user.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
}

impl Pairs {
    /// The shared options.
    pub fn common(&self) -> &Common {
        &self.common
    }
}

/// Runs `pairs`.
pub async fn run(opts: Pairs) -> anyhow::Result<Report> {
    let Pairs {
        common,
        users,
        rate,
    } = opts;
    common.validate()?;
    let specs = pair_specs(&common, users, rate)?;
    let run = Run::start(common.target()?, specs, common.ramp());
    if !run.connected(users as u64, connect_timeout(&common)).await {
        bail!(
            "not every user connected; is the server up at {:?}?",
            common.urls
        );
    }
    let delivered = run.send_for(common.duration()).await;
    let drained = run.drain(common.drain_timeout()).await;
    let finished = run.finish(Duration::from_secs(30)).await;
    let params = json!({"users": users, "rate": rate, "offered_per_s": users as f64 * rate, "common": common});
    let mut extra = BTreeMap::new();
    extra.insert("offered_per_s".into(), users as f64 * rate);
    extra.insert("drained".into(), f64::from(u8::from(drained)));
    Ok(finished.report(
        "pairs",
        params,
        delivered as f64 / common.duration().as_secs_f64(),
        extra,
        &Outside::default(),
    ))
}
