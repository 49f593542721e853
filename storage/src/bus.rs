//! The notify bus: msg-service publishes a user's new inbox head to the
//! gateways that hold that user; each gateway has one subscription.

use std::collections::HashMap;
use std::sync::Mutex;

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
}

impl InProcessBus {
    /// A bus whose per-gateway queue holds `capacity` notifications.
    pub fn new(capacity: usize) -> Self {
        InProcessBus {
            gateways: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
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
            && sender.try_send(note).is_err()
        {
            tracing::debug!(%gateway, "notify dropped: gateway queue full or gone");
        }
        Ok(())
    }

    async fn subscribe(&self, gateway: &GatewayId) -> Result<Subscription> {
        let (sender, receiver) = mpsc::channel(self.capacity);
        self.gateways().insert(gateway.clone(), sender);
        Ok(receiver)
    }
}
