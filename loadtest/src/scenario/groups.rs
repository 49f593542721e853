//! `groups`: groups of G members, each member sending to its group at a
//! fixed rate; measures the fan-out latency to every other member.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::json;

use super::{Common, connect_timeout};
use crate::client::{ClientSpec, Destination, Schedule};
use crate::report::Report;
use crate::run::{Outside, Run};
use crate::target::Target;

/// Options of `groups`.
#[derive(clap::Args, Debug, Clone)]
pub struct Groups {
    #[command(flatten)]
    common: Common,
    /// Number of groups.
    #[arg(long, default_value_t = 10)]
    groups: usize,
    /// Members per group.
    #[arg(long, default_value_t = 8)]
    members: usize,
    /// Messages per second per member.
    #[arg(long, default_value_t = 0.5)]
    rate: f64,
}

#[derive(Deserialize)]
struct Created {
    conv_id: String,
}

/// Creates a group of `members` (the first creates it) over REST.
async fn create_group(target: &Target, members: &[String]) -> anyhow::Result<String> {
    let token = target.token(&members[0]).await?;
    let url = format!("{}/v1/conversations", target.http_base(0));
    let created: Created = target
        .http()
        .post(&url)
        .bearer_auth(token)
        .json(&json!({"members": &members[1..], "title": "loadtest"}))
        .send()
        .await?
        .error_for_status()
        .with_context(|| format!("POST {url}"))?
        .json()
        .await?;
    Ok(created.conv_id)
}

impl Groups {
    /// The shared options.
    pub fn common(&self) -> &Common {
        &self.common
    }
}

/// Runs `groups`.
pub async fn run(opts: Groups) -> anyhow::Result<Report> {
    let Groups {
        common,
        groups,
        members,
        rate,
    } = opts;
    common.validate()?;
    if groups == 0 || members < 2 || rate <= 0.0 {
        bail!("--groups must be positive, --members at least 2, --rate positive");
    }
    let target = common.target()?;
    let mut specs = Vec::with_capacity(groups * members);
    for g in 0..groups {
        let names: Vec<String> = (0..members).map(|m| common.user(g * members + m)).collect();
        let conv = create_group(&target, &names).await?;
        for (m, name) in names.iter().enumerate() {
            let others: Vec<String> = names.iter().filter(|n| *n != name).cloned().collect();
            specs.push(ClientSpec {
                index: g * members + m,
                user: name.clone(),
                to: Destination::Conv(conv.clone()),
                recipients: Arc::new(others),
                schedule: Schedule::Rate(rate),
                body_bytes: common.size,
            });
        }
    }
    let users = specs.len() as u64;
    let run = Run::start(target, specs, common.ramp());
    if !run.connected(users, connect_timeout(&common)).await {
        bail!("not every member connected");
    }
    let delivered = run.send_for(common.duration()).await;
    let drained = run.drain(common.drain_timeout()).await;
    let finished = run.finish(Duration::from_secs(30)).await;
    let offered = users as f64 * rate;
    let params = json!({"groups": groups, "members": members, "rate": rate, "common": common});
    let mut extra = BTreeMap::new();
    extra.insert("offered_sends_per_s".into(), offered);
    extra.insert(
        "offered_deliveries_per_s".into(),
        offered * (members - 1) as f64,
    );
    extra.insert("drained".into(), f64::from(u8::from(drained)));
    Ok(finished.report(
        "groups",
        params,
        delivered as f64 / common.duration().as_secs_f64(),
        extra,
        &Outside::default(),
    ))
}
