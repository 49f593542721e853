//! Send throughput of the message service: sends/s through `MessageApi::send`
//! for 1 and 64 concurrent senders (each in a DM with its own peer, so the
//! inboxes are distinct), for 64 senders into one group of 8 and for 8
//! senders into one group of 500 (the largest: inbox appends/s is the
//! figure there), each with fsync on every ack (group commit) and without
//! (the OS-buffers baseline).
//!
//! Each case runs for `BENCH_SECS` seconds (default 3) on a fresh data dir.
//! Run with `cargo bench -p msg-service --bench send_throughput`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use msg_service::{Backends, MessageApi, MessageService, ServiceConfig};
use proto::{ConvId, SendRequest, Target, UserId};
use storage::{Durability, EmbeddedStore, InProcessBus, InProcessCache, InProcessPresence};
use tokio::task::JoinSet;

/// What the senders of a case send to.
#[derive(Clone, Copy)]
enum Shape {
    /// Each sender in a DM with its own peer.
    Dms,
    /// All senders into one group of this many members (senders share members).
    Group(usize),
}

struct Case {
    name: &'static str,
    senders: usize,
    shape: Shape,
}

const CASES: [Case; 4] = [
    Case {
        name: "1 sender, dm",
        senders: 1,
        shape: Shape::Dms,
    },
    Case {
        name: "64 senders, dms",
        senders: 64,
        shape: Shape::Dms,
    },
    Case {
        name: "64 senders, 1 group of 8",
        senders: 64,
        shape: Shape::Group(8),
    },
    Case {
        name: "8 senders, 1 group of 500",
        senders: 8,
        shape: Shape::Group(500),
    },
];

impl Shape {
    /// The inboxes one send appends to.
    fn fan_out(self) -> usize {
        match self {
            Shape::Dms => 2,
            Shape::Group(members) => members,
        }
    }
}

/// A 100-byte message.
const BODY: &str = concat!(
    "0123456789",
    "0123456789",
    "0123456789",
    "0123456789",
    "0123456789",
    "0123456789",
    "0123456789",
    "0123456789",
    "0123456789",
    "0123456789"
);

/// What one case measured.
struct Outcome {
    sends: usize,
    elapsed: Duration,
    fsyncs: u64,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.sends as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies
            .get(index)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

fn main() -> anyhow::Result<()> {
    let secs: f64 = match std::env::var("BENCH_SECS") {
        Ok(value) => value
            .parse()
            .with_context(|| format!("BENCH_SECS={value:?} is not a number"))?,
        Err(_) => 3.0,
    };
    let duration = Duration::from_secs_f64(secs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "send throughput, {secs} s per case, {} worker threads\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<26} {:<10} {:>8} {:>7} {:>9} {:>11} {:>8} {:>8} {:>12}",
        "case",
        "durability",
        "sends",
        "secs",
        "sends/s",
        "appends/s",
        "p50 ms",
        "p99 ms",
        "fsyncs/send"
    );
    let mut ratios = Vec::new();
    for case in &CASES {
        let durable = runtime.block_on(run_case(case, Durability::Fsync, duration))?;
        print_row(case, "fsync", &durable);
        let baseline = runtime.block_on(run_case(case, Durability::OsBuffers, duration))?;
        print_row(case, "os-buffers", &baseline);
        ratios.push((case.name, durable.rate() / baseline.rate()));
    }
    println!("\n{:<26} {:>16}", "case", "durable/baseline");
    for (name, ratio) in ratios {
        println!("{name:<26} {ratio:>16.2}");
    }
    Ok(())
}

fn print_row(case: &Case, durability: &str, o: &Outcome) {
    println!(
        "{:<26} {:<10} {:>8} {:>7.2} {:>9.0} {:>11.0} {:>8.2} {:>8.2} {:>12.2}",
        case.name,
        durability,
        o.sends,
        o.elapsed.as_secs_f64(),
        o.rate(),
        o.rate() * case.shape.fan_out() as f64,
        o.percentile_ms(0.5),
        o.percentile_ms(0.99),
        o.fsyncs as f64 / o.sends as f64,
    );
}

/// One case on a fresh data dir: every sender sends one message to warm up
/// (creating its DM and seq ceilings), then sends until the deadline.
async fn run_case(
    case: &Case,
    durability: Durability,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), durability)?;
    let service = Arc::new(MessageService::new(
        Backends {
            store: Arc::new(store.clone()),
            cache: Arc::new(InProcessCache::default()),
            bus: Arc::new(InProcessBus::default()),
            presence: Arc::new(InProcessPresence::default()),
        },
        // The write path is measured, not the per-user send limit.
        ServiceConfig {
            send_rate: 1_000_000,
            send_burst: 1_000_000,
            ..ServiceConfig::default()
        },
    ));
    let routes = routes(&service, case).await?;
    for (i, (sender, target)) in routes.iter().enumerate() {
        send(&service, sender, target, format!("warm-{i}")).await?;
    }

    let fsyncs_before = store.fsync_count();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for (i, (sender, target)) in routes.into_iter().enumerate() {
        let service = Arc::clone(&service);
        tasks.spawn(async move { send_until(&service, &sender, &target, i, deadline).await });
    }
    let mut latencies = Vec::new();
    while let Some(task) = tasks.join_next().await {
        latencies.extend(task??);
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    Ok(Outcome {
        sends: latencies.len(),
        elapsed,
        fsyncs: store.fsync_count() - fsyncs_before,
        latencies,
    })
}

/// Who sends where, one pair per concurrent sender task.
async fn routes(service: &MessageService, case: &Case) -> anyhow::Result<Vec<(UserId, Target)>> {
    match case.shape {
        Shape::Dms => (0..case.senders)
            .map(|i| {
                Ok((
                    UserId::parse(&format!("s{i}"))?,
                    Target::Peer(UserId::parse(&format!("p{i}"))?),
                ))
            })
            .collect(),
        Shape::Group(size) => {
            let members = (0..size)
                .map(|i| UserId::parse(&format!("m{i}")))
                .collect::<Result<Vec<_>, _>>()?;
            let group = service
                .create_group(&members[0], members[1..].to_vec(), None)
                .await?;
            Ok((0..case.senders)
                .map(|i| {
                    (
                        members[i % size].clone(),
                        Target::Conv(group.conv_id.clone()),
                    )
                })
                .collect())
        }
    }
}

/// Sends one message after the other until the deadline; returns each latency.
async fn send_until(
    service: &MessageService,
    sender: &UserId,
    target: &Target,
    task: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        send(
            service,
            sender,
            target,
            format!("t{task}-{}", latencies.len()),
        )
        .await?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

async fn send(
    service: &MessageService,
    sender: &UserId,
    target: &Target,
    client_msg_id: String,
) -> anyhow::Result<()> {
    let (conv_id, to): (Option<&ConvId>, Option<&UserId>) = match target {
        Target::Conv(conv) => (Some(conv), None),
        Target::Peer(peer) => (None, Some(peer)),
    };
    let request = SendRequest::new(
        Some(&client_msg_id),
        conv_id.map(ConvId::as_str),
        to.map(UserId::as_str),
        None,
        Some(BODY.to_owned()),
    )?;
    service.send(sender, request).await?;
    Ok(())
}
