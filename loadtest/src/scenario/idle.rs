//! `idle`: opens C connections and holds them (for memory per connection).
//! Prints `READY connected=C` on stdout once all are open, so a script can
//! measure the server then.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use serde_json::json;

use super::{Common, connect_timeout};
use crate::client::{ClientSpec, Destination, Schedule};
use crate::report::Report;
use crate::run::{Outside, Run};
use crate::stats::Counters;

/// Options of `idle`.
#[derive(clap::Args, Debug, Clone)]
pub struct Idle {
    #[command(flatten)]
    common: Common,
    /// Connections to open (one user each).
    #[arg(long, default_value_t = 1000)]
    connections: usize,
}

impl Idle {
    /// The shared options.
    pub fn common(&self) -> &Common {
        &self.common
    }
}

/// Runs `idle`: holds the connections for `--duration` seconds.
pub async fn run(opts: Idle) -> anyhow::Result<Report> {
    let Idle {
        common,
        connections,
    } = opts;
    common.validate()?;
    if connections == 0 {
        bail!("--connections must be positive");
    }
    let specs = (0..connections)
        .map(|i| ClientSpec {
            index: i,
            user: common.user(i),
            to: Destination::None,
            recipients: Arc::new(Vec::new()),
            schedule: Schedule::Idle,
            body_bytes: common.size,
        })
        .collect();
    let run = Run::start(common.target()?, specs, common.ramp());
    if !run
        .connected(connections as u64, connect_timeout(&common))
        .await
    {
        bail!(
            "only {} of {connections} connections opened",
            Counters::get(&run.counters().connected)
        );
    }
    println!("READY connected={connections}");
    std::io::stdout().flush()?;
    tokio::time::sleep(common.duration()).await;
    let still_open = Counters::get(&run.counters().connected);
    let finished = run.finish(Duration::from_secs(30)).await;
    let mut extra = BTreeMap::new();
    extra.insert("connections".into(), connections as f64);
    extra.insert("open_at_end".into(), still_open as f64);
    let params = json!({"connections": connections, "common": common});
    Ok(finished.report("idle", params, 0.0, extra, &Outside::default()))
}
