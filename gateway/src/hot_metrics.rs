//! The metrics recorded on every send and every frame, registered once at
//! start-up: looking one up in the recorder (hashing its name and labels)
//! at each record cost more than the record.

use std::time::Duration;

use metrics::{Counter, Histogram};
use proto::ClientFrame;

/// Handles of the per-send and per-frame metrics.
pub struct HotMetrics {
    send_duration: Histogram,
    sends_ok: Counter,
    sends_failed: Counter,
    frames: FrameCounters,
}

/// `chat_frames_total` by frame type.
struct FrameCounters {
    send: Counter,
    sync: Counter,
    ping: Counter,
    typing: Counter,
    presence: Counter,
    read: Counter,
}

impl HotMetrics {
    /// Registers them with the installed recorder (install it first).
    pub fn register() -> Self {
        let frames = |kind: &'static str| metrics::counter!("chat_frames_total", "type" => kind);
        HotMetrics {
            send_duration: metrics::histogram!("chat_send_duration_seconds"),
            sends_ok: metrics::counter!("chat_sends_total", "outcome" => "ok"),
            sends_failed: metrics::counter!("chat_sends_total", "outcome" => "error"),
            frames: FrameCounters {
                send: frames("send"),
                sync: frames("sync"),
                ping: frames("ping"),
                typing: frames("typing"),
                presence: frames("presence"),
                read: frames("read"),
            },
        }
    }

    /// A send answered after `took`, acked or not.
    pub fn send_answered(&self, took: Duration, acked: bool) {
        self.send_duration.record(took.as_secs_f64());
        if acked {
            self.sends_ok.increment(1);
        } else {
            self.sends_failed.increment(1);
        }
    }

    /// A client frame that parsed.
    pub fn frame(&self, frame: &ClientFrame) {
        let frames = &self.frames;
        let counter = match frame {
            ClientFrame::Send(_) => &frames.send,
            ClientFrame::Sync(_) => &frames.sync,
            ClientFrame::Ping => &frames.ping,
            ClientFrame::Typing(_) => &frames.typing,
            ClientFrame::Presence { .. } => &frames.presence,
            ClientFrame::Read { .. } => &frames.read,
        };
        counter.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;
    use proto::parse_client_frame;

    use super::*;

    #[test]
    fn sends_and_frames_are_counted_under_their_names_and_labels() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let hot = metrics::with_local_recorder(&recorder, HotMetrics::register);
        let (_, ping) = parse_client_frame(r#"{"type":"ping"}"#).expect("a ping frame");
        hot.frame(&ping);
        hot.frame(&ping);
        hot.send_answered(Duration::from_millis(3), true);
        hot.send_answered(Duration::from_millis(5), false);

        let text = handle.render();
        for line in [
            r#"chat_frames_total{type="ping"} 2"#,
            r#"chat_frames_total{type="send"} 0"#,
            r#"chat_sends_total{outcome="ok"} 1"#,
            r#"chat_sends_total{outcome="error"} 1"#,
            "chat_send_duration_seconds_count 2",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
