//! What a run measures, shared by its clients: latency histograms (HDR, in
//! microseconds), counters, errors by code, and a per-second timeline.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::handoff::Handoffs;
use serde::Serialize;

/// Latencies above this are recorded as this (a minute).
const MAX_MICROS: u64 = 60_000_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3)
        .expect("constant bounds: low 1, high >= 2, 3 digits")
}

/// Counters updated on the hot path without a lock.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sends written to a socket (retries included).
    pub sent: AtomicU64,
    /// Acks received.
    pub acked: AtomicU64,
    /// Deliveries expected so far (acked messages times their other recipients).
    pub expected: AtomicU64,
    /// Messages from others received for the first time.
    pub delivered: AtomicU64,
    /// Connections re-established after a drop or goaway.
    pub reconnects: AtomicU64,
    /// Connection attempts that failed.
    pub connect_failures: AtomicU64,
    /// Open connections now.
    pub connected: AtomicU64,
    /// Messages sent and neither acked nor given up yet.
    pub unacked: AtomicU64,
    /// Clients that completed a sync after [`crate::client::Phase::Reconnect`].
    pub caught_up: AtomicU64,
    /// Syncs requested.
    pub syncs: AtomicU64,
    /// Notifies whose entries a client took instead of syncing.
    pub notifies_taken: AtomicU64,
    /// Typing indicators received.
    pub typing_received: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one from a gauge.
    pub fn drop_one(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One second of the run, for the progress line and the plot.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Seconds since the start of the measured phase.
    pub second: u64,
    /// Deliveries in that second.
    pub delivered: u64,
    /// Median send->delivered latency in that second (ms).
    pub p50_ms: f64,
    /// 99th percentile send->delivered latency in that second (ms).
    pub p99_ms: f64,
}

struct Histograms {
    ack: Histogram<u64>,
    delivered: Histogram<u64>,
    after_ack: Histogram<u64>,
    slowest_after_ack: Option<SlowDelivery>,
    /// Deliveries since the last timeline point.
    recent: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    timeline: Vec<Point>,
}

/// Everything a run records.
pub struct Stats {
    /// Lock-free counters.
    pub counters: Counters,
    /// Acked messages not yet at every recipient.
    pub handoffs: Handoffs,
    histograms: Mutex<Histograms>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            counters: Counters::default(),
            handoffs: Handoffs::default(),
            histograms: Mutex::new(Histograms {
                ack: histogram(),
                delivered: histogram(),
                after_ack: histogram(),
                slowest_after_ack: None,
                recent: histogram(),
                errors: BTreeMap::new(),
                timeline: Vec::new(),
            }),
        }
    }
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(MAX_MICROS)
        .clamp(1, MAX_MICROS)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Stats {
    fn with<T>(&self, f: impl FnOnce(&mut Histograms) -> T) -> T {
        f(&mut self.histograms.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Records a send->ack latency.
    pub fn record_ack(&self, latency: Duration) {
        Counters::bump(&self.counters.acked);
        self.with(|h| h.ack.saturating_record(micros(latency)));
    }

    /// Records a delivered message from another user, with its send->delivered
    /// latency when its body carries its send time.
    pub fn record_delivery(&self, latency: Option<Duration>) {
        Counters::bump(&self.counters.delivered);
        // A recall has no body to carry its send time: counted, not timed.
        let Some(latency) = latency else {
            return;
        };
        let us = micros(latency);
        self.with(|h| {
            h.delivered.saturating_record(us);
            h.recent.saturating_record(us);
        });
    }

    /// Records how long a delivered message waited after its ack; the
    /// longest wait is kept with the message, to look it up in the logs.
    pub fn record_after_ack(&self, wait: Duration, message: impl FnOnce() -> SlowDelivery) {
        self.with(|h| {
            h.after_ack.saturating_record(micros(wait));
            let waited_ms = ms(micros(wait));
            if h.slowest_after_ack
                .as_ref()
                .is_none_or(|s| s.waited_ms < waited_ms)
            {
                h.slowest_after_ack = Some(SlowDelivery {
                    waited_ms,
                    ..message()
                });
            }
        });
    }

    /// Counts an error frame (or a failed HTTP call) by its code.
    pub fn record_error(&self, code: &str) {
        self.with(|h| *h.errors.entry(code.to_owned()).or_default() += 1);
    }

    /// Closes the current second of the timeline and returns it.
    pub fn tick(&self, second: u64) -> Point {
        self.with(|h| {
            let point = Point {
                second,
                delivered: h.recent.len(),
                p50_ms: ms(h.recent.value_at_quantile(0.5)),
                p99_ms: ms(h.recent.value_at_quantile(0.99)),
            };
            h.recent.reset();
            h.timeline.push(point.clone());
            point
        })
    }

    /// Errors so far, total.
    pub fn error_count(&self) -> u64 {
        self.with(|h| h.errors.values().sum())
    }

    /// The latency summaries, errors and timeline.
    pub fn snapshot(&self) -> Snapshot {
        self.with(|h| Snapshot {
            ack_latency: Percentiles::of(&h.ack),
            delivery_latency: Percentiles::of(&h.delivered),
            after_ack_latency: Percentiles::of(&h.after_ack),
            slowest_after_ack: h.slowest_after_ack.clone(),
            errors: h.errors.clone(),
            timeline: h.timeline.clone(),
        })
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// How many values.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One delivered message and how long it waited after its ack: enough to
/// find it in the servers' logs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlowDelivery {
    /// Ack->delivered (ms).
    pub waited_ms: f64,
    /// Its sender.
    pub from: String,
    /// The recipient that waited.
    pub to: String,
    /// Its client_msg_id.
    pub client_msg_id: String,
    /// Its seq in the recipient's inbox.
    pub seq: u64,
    /// When the recipient got it (Unix ms).
    pub delivered_at_ms: u64,
}

/// The recorded latencies and errors at the end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Send->ack.
    pub ack_latency: Percentiles,
    /// Send->delivered (to each other recipient).
    pub delivery_latency: Percentiles,
    /// Ack->delivered: how long an acked message waited for each recipient
    /// (0 when it arrived before the ack).
    pub after_ack_latency: Percentiles,
    /// The message that waited longest after its ack, if any did.
    pub slowest_after_ack: Option<SlowDelivery>,
    /// Errors by code.
    pub errors: BTreeMap<String, u64>,
    /// One point per second of the run.
    pub timeline: Vec<Point>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let stats = Stats::default();
        for ms in 1..=100 {
            stats.record_delivery(Some(Duration::from_millis(ms)));
        }
        let snap = stats.snapshot();
        assert_eq!(snap.delivery_latency.count, 100);
        assert!(
            (snap.delivery_latency.p50_ms - 50.0).abs() < 0.1,
            "{:?}",
            snap.delivery_latency
        );
        assert!(
            (snap.delivery_latency.p99_ms - 99.0).abs() < 0.1,
            "{:?}",
            snap.delivery_latency
        );
        assert!(
            (snap.delivery_latency.max_ms - 100.0).abs() < 0.1,
            "{:?}",
            snap.delivery_latency
        );
    }

    #[test]
    fn a_tick_covers_only_the_deliveries_since_the_last_one() {
        let stats = Stats::default();
        stats.record_delivery(Some(Duration::from_millis(500)));
        assert_eq!(stats.tick(1).delivered, 1);
        stats.record_delivery(Some(Duration::from_millis(2)));
        stats.record_delivery(Some(Duration::from_millis(2)));
        let point = stats.tick(2);
        assert_eq!(point.delivered, 2);
        assert!(point.p99_ms < 3.0, "{point:?}");
        assert_eq!(stats.snapshot().timeline.len(), 2);
    }

    #[test]
    fn errors_are_counted_by_code() {
        let stats = Stats::default();
        stats.record_error("unavailable");
        stats.record_error("unavailable");
        stats.record_error("rate_limited");
        let errors = stats.snapshot().errors;
        assert_eq!(errors.get("unavailable"), Some(&2));
        assert_eq!(errors.get("rate_limited"), Some(&1));
        assert_eq!(stats.error_count(), 3);
    }
}
