//! The notify bus: msg-service publishes a user's new inbox head to the
//! gateways that hold that user, and gateways publish typing indicators to
//! the gateways of the other members; each gateway has one subscription.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use proto::{ConvId, Entry, Seq, UserId};
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
    /// The new entries themselves, when they are small (protocol 1.1).
    pub inline: Option<Inline>,
}

/// The entries a notify carries: exactly every entry of the inbox with
/// `prev < seq <= head`, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inline {
    /// The head they follow.
    pub prev: Seq,
    /// The entries.
    pub entries: Vec<Entry>,
}

impl Notification {
    /// The head alone: a client syncs to get the entries.
    pub fn head(user: UserId, head: Seq) -> Self {
        Notification {
            user,
            head,
            inline: None,
        }
    }
}

/// `from` is typing in `conv_id`: for the devices of `to` (protocol 1.1;
/// best effort, never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Typing {
    /// Whose devices it is for.
    pub to: UserId,
    /// The conversation.
    pub conv_id: ConvId,
    /// Who types.
    pub from: UserId,
}

/// A user came online (a first device connected) or went offline (the
/// last one left, at `last_seen`): to every gateway (protocol 1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    /// Whose.
    pub user: UserId,
    /// Online now.
    pub online: bool,
    /// When the last device left (Unix ms), when offline.
    pub last_seen: Option<u64>,
}

/// What the bus carries to a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// A user's inbox head moved.
    Head(Notification),
    /// Someone is typing.
    Typing(Typing),
    /// Someone came online or went offline.
    Presence(PresenceChange),
}

impl From<Notification> for BusMessage {
    fn from(note: Notification) -> Self {
        BusMessage::Head(note)
    }
}

impl From<PresenceChange> for BusMessage {
    fn from(change: PresenceChange) -> Self {
        BusMessage::Presence(change)
    }
}

impl From<Typing> for BusMessage {
    fn from(typing: Typing) -> Self {
        BusMessage::Typing(typing)
    }
}

/// The messages for one gateway. Bounded: when a gateway falls behind,
/// they are dropped, which loses nothing (the next sync finds the entries;
/// a typing indicator is best effort).
pub type Subscription = mpsc::Receiver<BusMessage>;

/// Routes inbox-head notifications to gateways.
#[async_trait]
pub trait NotifyBus: Send + Sync + 'static {
    /// Sends a notification to one gateway; best effort.
    async fn publish(&self, gateway: &GatewayId, message: BusMessage) -> Result<()>;
    /// Sends a message to every gateway; best effort.
    async fn broadcast(&self, message: BusMessage) -> Result<()>;
    /// The one subscription of a gateway (a second call replaces the first).
    async fn subscribe(&self, gateway: &GatewayId) -> Result<Subscription>;
}

/// The in-process bus: a bounded channel per gateway.
pub struct InProcessBus {
    gateways: Mutex<HashMap<GatewayId, mpsc::Sender<BusMessage>>>,
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

    fn gateways(&self) -> std::sync::MutexGuard<'_, HashMap<GatewayId, mpsc::Sender<BusMessage>>> {
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
    async fn publish(&self, gateway: &GatewayId, message: BusMessage) -> Result<()> {
        let sender = self.gateways().get(gateway).cloned();
        if let Some(sender) = sender
            && let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(message)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("chat_notifies_dropped_total").increment(1);
            tracing::debug!(%gateway, "notify dropped: gateway queue full");
        }
        Ok(())
    }

    async fn broadcast(&self, message: BusMessage) -> Result<()> {
        let senders: Vec<_> = self.gateways().values().cloned().collect();
        for sender in senders {
            if let Err(mpsc::error::TrySendError::Full(_)) = sender.try_send(message.clone()) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("chat_notifies_dropped_total").increment(1);
            }
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
        let note =
            |head| BusMessage::from(Notification::head(UserId::parse("alice").unwrap(), head));
        bus.publish(&gateway, note(1)).await.unwrap();
        bus.publish(&gateway, note(2)).await.unwrap();
        assert_eq!(bus.dropped(), 1);
        assert_eq!(queue.recv().await, Some(note(1)));
    }
}
