//! How long an acked message waits until each recipient has it: from its ack
//! at the sender to its delivery at a recipient. This is the figure behind
//! "an acked message reaches a live client within N seconds", which a
//! send->delivered latency hides when the ack itself was slow (retries
//! through an outage).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::checker::MsgKey;

/// A message seen on one side (ack or delivery) but not yet on every other.
enum Pending {
    /// Acked at `at`; `waiting` recipients do not have it yet.
    Acked { at: Instant, waiting: usize },
    /// Delivered to `count` recipients before its ack arrived (no wait).
    DeliveredFirst { count: usize },
}

/// The messages between their ack and their last delivery.
#[derive(Default)]
pub struct Handoffs {
    pending: Mutex<HashMap<MsgKey, Pending>>,
}

impl Handoffs {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<MsgKey, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `key` was acked; `recipients` others should receive it.
    pub fn acked(&self, key: MsgKey, recipients: usize) {
        let mut pending = self.pending();
        let delivered = match pending.remove(&key) {
            Some(Pending::DeliveredFirst { count }) => count,
            _ => 0,
        };
        if recipients > delivered {
            let waiting = recipients - delivered;
            let at = Instant::now();
            pending.insert(key, Pending::Acked { at, waiting });
        }
    }

    /// `key` reached one more recipient: how long after its ack, if it was
    /// acked already (a delivery before the ack waited for nothing).
    pub fn delivered(&self, key: &MsgKey) -> Option<Duration> {
        let mut pending = self.pending();
        match pending.get_mut(key) {
            Some(Pending::Acked { at, waiting }) => {
                let waited = at.elapsed();
                *waiting -= 1;
                if *waiting == 0 {
                    pending.remove(key);
                }
                Some(waited)
            }
            Some(Pending::DeliveredFirst { count }) => {
                *count += 1;
                None
            }
            None => {
                pending.insert(key.clone(), Pending::DeliveredFirst { count: 1 });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_after_the_ack_reports_its_wait_and_one_before_reports_none() {
        let handoffs = Handoffs::default();
        let (late, early) = (MsgKey::new("a", "1"), MsgKey::new("a", "2"));
        handoffs.acked(late.clone(), 2);
        assert!(handoffs.delivered(&late).is_some());
        assert!(handoffs.delivered(&early).is_none());
        handoffs.acked(early.clone(), 1);
        assert!(
            handoffs.pending().get(&early).is_none(),
            "nobody waits for it"
        );
        assert!(handoffs.delivered(&late).is_some(), "the second recipient");
        assert!(
            handoffs.pending().is_empty(),
            "everything handed over is forgotten"
        );
    }
}
