//! The notify bus: msg-service publishes a user's new inbox head to the
//! gateways that hold that user; each gateway has one subscription.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use proto::{Seq, UserId};
use tokio::sync::mpsc;

use crate::Result;
use crate::model::GatewayId;

/// A user's inbox head moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Whose inbox.
    pub user: UserId,
    /// Its new head.
    pub head: Seq,
}

/// The notifications for one gateway. Bounded: when a gateway falls behind,
/// notifies are dropped, which loses nothing (the next sync finds the entries).
pub type Subscription = mpsc::Receiver<Notification>;

/// Routes inbox-head notifications to gateways.
#[async_trait]
pub trait NotifyBus: Send + Sync + 'static {
    /// Sends a notification to one gateway; best effort.
    async fn publish(&self, gateway: &GatewayId, note: Notification) -> Result<()>;
    /// The one subscription of a gateway (a second call replaces the first).
    async fn subscribe(&self, gateway: &GatewayId) -> Result<Subscription>;
}

/// The in-process bus: a bounded channel per gateway.
pub struct InProcessBus {
    gateways: Mutex<HashMap<GatewayId, mpsc::Sender<Notification>>>,
    capacity: usize,
    /// Notifies dropped because a gateway's queue was full.
    dropped: AtomicU64,
}

impl InProcessBus {
    /// A bus whose per-gateway queue holds `capacity` notifications.
    pub fn new(capacity: usize) -> Self {
        InProcessBus {
            gateways: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        }
    }

    /// How many notifies were dropped because a gateway's queue was full
    /// (also counted in `chat_notifies_dropped_total`).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn gateways(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<GatewayId, mpsc::Sender<Notification>>> {
        self.gateways
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        InProcessBus::new(65_536)
    }
}

#[async_trait]
impl NotifyBus for InProcessBus {
    async fn publish(&self, gateway: &GatewayId, note: Notification) -> Result<()> {
        let sender = self.gateways().get(gateway).cloned();
        if let Some(sender) = sender
            && let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(note)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("chat_notifies_dropped_total").increment(1);
            tracing::debug!(%gateway, "notify dropped: gateway queue full");
        }
        Ok(())
    }

    async fn subscribe(&self, gateway: &GatewayId) -> Result<Subscription> {
        let (sender, receiver) = mpsc::channel(self.capacity);
        self.gateways().insert(gateway.clone(), sender);
        Ok(receiver)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_notify_to_a_full_gateway_queue_is_counted_as_dropped() {
        let bus = InProcessBus::new(1);
        let gateway = GatewayId("gw-1".into());
        let mut queue = bus.subscribe(&gateway).await.unwrap();
        let note = |head| Notification {
            user: UserId::parse("alice").unwrap(),
            head,
        };
        bus.publish(&gateway, note(1)).await.unwrap();
        bus.publish(&gateway, note(2)).await.unwrap();
        assert_eq!(bus.dropped(), 1);
        assert_eq!(queue.recv().await, Some(note(1)));
    }
}
