//! The end-of-run report: a human summary, the JSON file (`--json`), and the
//! latency-over-time plot as SVG (`--plot`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use crate::checker::Verdict;
use crate::stats::{Point, Snapshot};

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// Its parameters, as given.
    pub params: serde_json::Value,
    /// Wall time of the whole run (s).
    pub elapsed_s: f64,
    /// Sends written (retries included).
    pub sent: u64,
    /// Acks received.
    pub acked: u64,
    /// Messages from others received (first copies).
    pub delivered: u64,
    /// Deliveries per second during the measured phase.
    pub delivered_per_s: f64,
    /// Connections re-made after a drop or goaway.
    pub reconnects: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Syncs the clients requested.
    pub syncs: u64,
    /// Notifies whose entries the clients took instead of syncing.
    pub notifies_taken: u64,
    /// Typing indicators the clients received.
    pub typing_received: u64,
    /// The exactly-once check.
    pub verdict: Verdict,
    /// Latencies, errors and timeline.
    #[serde(flatten)]
    pub latency: Snapshot,
    /// Figures particular to the scenario.
    pub extra: BTreeMap<String, f64>,
    /// What went wrong besides the verdict (e.g. clients that never caught up).
    pub problems: Vec<String>,
}

impl Report {
    /// Whether the run is correct: nothing lost, duplicated or out of order.
    pub fn is_clean(&self) -> bool {
        self.verdict.is_clean() && self.problems.is_empty()
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let v = &self.verdict;
        let _ = writeln!(
            out,
            "== {} ({:.1} s) {}",
            self.scenario, self.elapsed_s, self.params
        );
        let _ = writeln!(
            out,
            "sent {}  acked {}  delivered {}  ({:.1} delivered/s)  reconnects {}  connect failures {}",
            self.sent,
            self.acked,
            self.delivered,
            self.delivered_per_s,
            self.reconnects,
            self.connect_failures
        );
        let _ = writeln!(
            out,
            "syncs {}  notifies whose entries were taken {}  typing indicators received {}",
            self.syncs, self.notifies_taken, self.typing_received
        );
        let _ = writeln!(
            out,
            "exactly-once: expected {}  delivered {}  lost {}  duplicated {}  out-of-order {}  -> {}",
            v.expected,
            v.delivered,
            v.lost,
            v.duplicated,
            v.out_of_order,
            if v.is_clean() { "OK" } else { "FAILED" }
        );
        for example in &v.examples {
            let _ = writeln!(out, "  {example}");
        }
        let _ = writeln!(
            out,
            "latency (ms)        p50      p90      p99    p99.9      max    count"
        );
        for (name, p) in [
            ("send->ack", &self.latency.ack_latency),
            ("send->delivered", &self.latency.delivery_latency),
            ("ack->delivered", &self.latency.after_ack_latency),
        ] {
            let _ = writeln!(
                out,
                "{name:<16} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8}",
                p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms, p.count
            );
        }
        let errors = if self.latency.errors.is_empty() {
            "none".to_owned()
        } else {
            self.latency
                .errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "errors: {errors}");
        for (name, value) in &self.extra {
            let _ = writeln!(out, "{name}: {value:.2}");
        }
        for problem in &self.problems {
            let _ = writeln!(out, "PROBLEM: {problem}");
        }
        out
    }

    /// Writes the report as JSON.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Plots p50 and p99 send->delivered latency per second as SVG.
    pub fn write_plot(&self, path: &Path) -> anyhow::Result<()> {
        plot(&self.scenario, &self.latency.timeline, path)
            .map_err(|e| anyhow::anyhow!("plotting {}: {e}", path.display()))
    }
}

fn plot(title: &str, timeline: &[Point], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 450)).into_drawing_area();
    root.fill(&WHITE)?;
    let seconds = timeline.last().map_or(1, |p| p.second.max(1));
    let top = timeline.iter().map(|p| p.p99_ms).fold(1.0_f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{title}: send->delivered latency per second"),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0u64..seconds, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("second of the run")
        .y_desc("latency (ms)")
        .draw()?;
    let p99 = timeline.iter().map(|p| (p.second, p.p99_ms));
    chart
        .draw_series(LineSeries::new(p99, &RED))?
        .label("p99")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    let p50 = timeline.iter().map(|p| (p.second, p.p50_ms));
    chart
        .draw_series(LineSeries::new(p50, &BLUE))?
        .label("p50")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;
    use std::time::Duration;

    fn report() -> Report {
        let stats = Stats::default();
        for second in 1..=3 {
            stats.record_delivery(Some(Duration::from_millis(second * 10)));
            stats.tick(second);
        }
        Report {
            scenario: "pairs".into(),
            params: serde_json::json!({"users": 2}),
            elapsed_s: 3.0,
            sent: 3,
            acked: 3,
            delivered: 3,
            delivered_per_s: 1.0,
            reconnects: 0,
            connect_failures: 0,
            syncs: 0,
            notifies_taken: 0,
            typing_received: 0,
            verdict: Verdict::default(),
            latency: stats.snapshot(),
            extra: BTreeMap::new(),
            problems: Vec::new(),
        }
    }

    #[test]
    fn the_json_report_carries_the_verdict_and_percentiles() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("loadtest-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("r.json");
        report().write_json(&path)?;
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        assert_eq!(json["verdict"]["lost"], 0);
        assert_eq!(json["delivery_latency"]["count"], 3);
        assert_eq!(json["timeline"].as_array().map(Vec::len), Some(3));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn the_plot_is_an_svg_with_both_lines() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("loadtest-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("p.svg");
        report().write_plot(&path)?;
        let svg = std::fs::read_to_string(&path)?;
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("p99") && svg.contains("p50"));
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[test]
    fn the_summary_says_failed_when_a_message_is_lost() {
        let mut r = report();
        r.verdict.lost = 1;
        assert!(r.summary().contains("FAILED"));
        assert!(!r.is_clean());
    }
}
