//! Running a set of clients through the phases of a scenario, with the live
//! progress line, and collecting their reports at the end.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checker::{Acks, Receipts, Verdict};
use crate::client::{self, ClientReport, ClientSpec, Phase, Shared};
use crate::report::Report;
use crate::stats::{Counters, Stats};
use crate::target::Target;

/// Clients running through the phases of one scenario.
pub struct Run {
    shared: Arc<Shared>,
    phase: watch::Sender<Phase>,
    clients: Vec<JoinHandle<ClientReport>>,
    progress: JoinHandle<()>,
    bar: ProgressBar,
    started: Instant,
}

impl Run {
    /// Starts `specs` in [`Phase::Connect`], spread evenly over `ramp`.
    pub fn start(target: Target, specs: Vec<ClientSpec>, ramp: Duration) -> Run {
        let (phase, phase_rx) = watch::channel(Phase::Connect);
        let shared = Arc::new(Shared {
            target,
            stats: Stats::default(),
            phase: phase_rx,
        });
        let total = specs.len().max(1) as u32;
        let clients = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let shared = Arc::clone(&shared);
                let delay = ramp.mul_f64(f64::from(i as u32) / f64::from(total));
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    client::run(spec, shared).await
                })
            })
            .collect();
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let progress = tokio::spawn(show_progress(Arc::clone(&shared), bar.clone()));
        Run {
            shared,
            phase,
            clients,
            progress,
            bar,
            started: Instant::now(),
        }
    }

    /// What the run records into.
    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.shared.stats.counters
    }

    /// Moves every client to `phase`.
    pub fn set(&self, phase: Phase) {
        self.phase.send_replace(phase);
    }

    /// Prints a line above the progress line.
    pub fn say(&self, line: impl AsRef<str>) {
        self.bar.println(line.as_ref());
    }

    /// Waits until `done` holds, checking every 20 ms, at most `timeout`;
    /// returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, done: impl Fn(&Counters) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while !done(self.counters()) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Waits until `n` clients are connected (at most `timeout`).
    pub async fn connected(&self, n: u64, timeout: Duration) -> bool {
        self.wait_until(timeout, |c| Counters::get(&c.connected) >= n)
            .await
    }

    /// Runs [`Phase::Send`] for `duration`; returns deliveries during it.
    pub async fn send_for(&self, duration: Duration) -> u64 {
        let before = Counters::get(&self.counters().delivered);
        self.set(Phase::Send);
        tokio::time::sleep(duration).await;
        Counters::get(&self.counters().delivered) - before
    }

    /// [`Phase::Drain`]: waits (at most `timeout`) until every send is
    /// acked or given up and every acked message has been delivered.
    pub async fn drain(&self, timeout: Duration) -> bool {
        self.set(Phase::Drain);
        // Pairs with the fence of a client's send (see `Step::SendDue`).
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        self.wait_until(timeout, |c| {
            Counters::get(&c.unacked) == 0
                && Counters::get(&c.delivered) >= Counters::get(&c.expected)
        })
        .await
    }

    /// [`Phase::Finish`]: every client syncs to its head once more and stops
    /// (those not done within `timeout` are stopped as they are).
    pub async fn finish(self, timeout: Duration) -> Finished {
        self.set(Phase::Finish);
        let mut reports = Vec::with_capacity(self.clients.len());
        let deadline = Instant::now() + timeout;
        for mut handle in self.clients {
            let joined = match tokio::time::timeout_at(deadline.into(), &mut handle).await {
                Ok(joined) => joined,
                Err(_) => {
                    self.phase.send_replace(Phase::Stop);
                    handle.await
                }
            };
            if let Ok(report) = joined {
                reports.push(report);
            }
        }
        self.progress.abort();
        self.bar.finish_and_clear();
        Finished {
            reports,
            elapsed: self.started.elapsed(),
            shared: self.shared,
        }
    }
}

/// Sends and receipts made outside the clients (REST sends, a raw reader).
#[derive(Debug, Default)]
pub struct Outside {
    /// Acks of sends made over REST.
    pub acks: Vec<Acks>,
    /// What readers other than the clients received, by user.
    pub receipts: Vec<(String, Receipts)>,
}

/// The clients' reports and what the run recorded.
pub struct Finished {
    /// One per client that ended.
    pub reports: Vec<ClientReport>,
    /// Wall time since the start.
    pub elapsed: Duration,
    shared: Arc<Shared>,
}

impl Finished {
    /// The report: the exactly-once verdict over every client's receipts and
    /// acks, plus what happened `outside` the clients.
    pub fn report(
        &self,
        scenario: &str,
        params: serde_json::Value,
        delivered_per_s: f64,
        extra: BTreeMap<String, f64>,
        outside: &Outside,
    ) -> Report {
        let receipts = self
            .reports
            .iter()
            .map(|r| (r.user.as_str(), &r.receipts))
            .chain(outside.receipts.iter().map(|(u, r)| (u.as_str(), r)));
        let acks = self.reports.iter().map(|r| &r.acks).chain(&outside.acks);
        let c = &self.shared.stats.counters;
        Report {
            scenario: scenario.to_owned(),
            params,
            elapsed_s: self.elapsed.as_secs_f64(),
            sent: Counters::get(&c.sent),
            acked: Counters::get(&c.acked),
            delivered: Counters::get(&c.delivered),
            delivered_per_s,
            reconnects: Counters::get(&c.reconnects),
            connect_failures: Counters::get(&c.connect_failures),
            syncs: Counters::get(&c.syncs),
            notifies_taken: Counters::get(&c.notifies_taken),
            typing_received: Counters::get(&c.typing_received),
            verdict: Verdict::of(receipts, acks),
            latency: self.shared.stats.snapshot(),
            extra,
            problems: Vec::new(),
        }
    }
}

async fn show_progress(shared: Arc<Shared>, bar: ProgressBar) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    for second in 1.. {
        ticker.tick().await;
        let point = shared.stats.tick(second);
        let c = &shared.stats.counters;
        bar.set_message(format!(
            "{:?} conns {} sent {} acked {} delivered {} ({}/s) p99 {:.1} ms errors {}",
            *shared.phase.borrow(),
            Counters::get(&c.connected),
            Counters::get(&c.sent),
            Counters::get(&c.acked),
            Counters::get(&c.delivered),
            point.delivered,
            point.p99_ms,
            shared.stats.error_count(),
        ));
    }
}
