//! The notify bus over Redis pub/sub: one channel per gateway, and in each
//! gateway process one subscriber connection (never one per socket) that
//! routes messages into the bounded `Subscription`. The connection resubscribes
//! after a reconnect by itself; a watchdog pings it and repairs what that does
//! not cover (an outage longer than the reconnect attempts, a peer gone silent
//! with the socket open, a subscribe made while Redis was down).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use proto::{ConvId, Entry, Seq, UserId};
use redis::{Client, PushInfo, PushKind, Value};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::conn::{Conn, manager_config};
use super::{Keys, RedisOptions};
use crate::model::GatewayId;
use crate::{
    BusMessage, Inline, Notification, NotifyBus, PresenceChange, Result, Subscription, Typing,
};

/// A message on the wire: a head `{"u":"alice","h":42}`, with
/// `"p":41,"e":[ENTRY]` when it carries its entries; a typing indicator
/// `{"u":"alice","t":"dm:alice:bob","f":"bob"}`; a presence change
/// `{"u":"bob","o":false,"s":1764262800000}`.
#[derive(Serialize, Deserialize)]
struct Wire {
    u: UserId,
    #[serde(default)]
    h: Seq,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    p: Option<Seq>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    e: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<ConvId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    f: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    o: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<u64>,
}

impl Wire {
    fn of(message: BusMessage) -> Wire {
        match message {
            BusMessage::Head(note) => {
                let (p, e) = match note.inline {
                    Some(inline) => (Some(inline.prev), inline.entries),
                    None => (None, Vec::new()),
                };
                Wire {
                    h: note.head,
                    p,
                    e,
                    ..Wire::about(note.user)
                }
            }
            BusMessage::Typing(typing) => Wire {
                t: Some(typing.conv_id),
                f: Some(typing.from),
                ..Wire::about(typing.to)
            },
            BusMessage::Presence(change) => Wire {
                o: Some(change.online),
                s: change.last_seen,
                ..Wire::about(change.user)
            },
        }
    }

    fn about(u: UserId) -> Wire {
        Wire {
            u,
            h: 0,
            p: None,
            e: Vec::new(),
            t: None,
            f: None,
            o: None,
            s: None,
        }
    }

    fn message(self) -> BusMessage {
        if let Some(online) = self.o {
            return BusMessage::Presence(PresenceChange {
                user: self.u,
                online,
                last_seen: self.s,
            });
        }
        match (self.t, self.f) {
            (Some(conv_id), Some(from)) => BusMessage::Typing(Typing {
                to: self.u,
                conv_id,
                from,
            }),
            _ => BusMessage::Head(Notification {
                user: self.u,
                head: self.h,
                inline: self.p.map(|prev| Inline {
                    prev,
                    entries: self.e,
                }),
            }),
        }
    }
}

/// The queue of each subscribed channel.
type Routes = Mutex<HashMap<String, mpsc::Sender<BusMessage>>>;

/// The notify bus in Redis. msg-service publishes; each gateway subscribes once.
pub struct RedisBus {
    /// The shared command connection, for PUBLISH.
    conn: Conn,
    keys: Keys,
    capacity: usize,
    health_interval: Duration,
    subscriber: Arc<Subscriber>,
    /// Pings the subscriber connection; started by the first subscribe,
    /// aborted when the bus is dropped.
    watchdog: Mutex<Option<JoinHandle<()>>>,
}

impl RedisBus {
    /// `client`'s subscriber connection opens on the first subscribe.
    pub(super) fn new(
        conn: Conn,
        client: Client,
        keys: Keys,
        options: &RedisOptions,
    ) -> Result<Self> {
        let routes = Arc::new(Routes::default());
        let pushes = Arc::clone(&routes);
        let everyone = keys.all_gateways();
        let broadcasts = everyone.clone();
        let config = manager_config(options)
            .set_number_of_retries(options.bus_reconnect_retries)
            .set_push_sender(move |info| {
                on_push(&pushes, &broadcasts, info);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription();
        let subscriber = Subscriber {
            conn: Conn::lazy(client, config, options.command_timeout)?,
            routes,
            everyone,
            pending: AtomicBool::new(false),
        };
        Ok(RedisBus {
            conn,
            keys,
            capacity: options.bus_capacity.max(1),
            health_interval: options.health_interval,
            subscriber: Arc::new(subscriber),
            watchdog: Mutex::new(None),
        })
    }

    fn start_watchdog(&self) {
        let mut watchdog = lock(&self.watchdog);
        if watchdog.is_none() {
            let (subscriber, every) = (Arc::clone(&self.subscriber), self.health_interval);
            *watchdog = Some(tokio::spawn(subscriber.watch(every)));
        }
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        if let Some(watchdog) = lock(&self.watchdog).take() {
            watchdog.abort();
        }
    }
}

#[async_trait]
impl NotifyBus for RedisBus {
    async fn publish(&self, gateway: &GatewayId, message: BusMessage) -> Result<()> {
        let payload = serde_json::to_vec(&Wire::of(message))?;
        let mut con = self.conn.manager();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(self.keys.gateway(gateway)).arg(payload);
        self.conn.call(publish.exec_async(&mut con)).await
    }

    async fn broadcast(&self, message: BusMessage) -> Result<()> {
        let payload = serde_json::to_vec(&Wire::of(message))?;
        let mut con = self.conn.manager();
        let mut publish = redis::cmd("PUBLISH");
        publish.arg(&self.subscriber.everyone).arg(payload);
        self.conn.call(publish.exec_async(&mut con)).await
    }

    /// Registers the gateway's queue and subscribes its channel. While Redis
    /// is unreachable this still succeeds: the watchdog subscribes once
    /// Redis answers, and until then the gateway hears nothing (a lost
    /// notify loses nothing; the next sync finds the entries).
    async fn subscribe(&self, gateway: &GatewayId) -> Result<Subscription> {
        let channel = self.keys.gateway(gateway);
        let (sender, receiver) = mpsc::channel(self.capacity);
        lock(&self.subscriber.routes).insert(channel.clone(), sender);
        self.start_watchdog();
        let channels = vec![channel, self.subscriber.everyone.clone()];
        if let Err(err) = self.subscriber.subscribe(channels).await {
            self.subscriber.pending.store(true, Ordering::Relaxed);
            tracing::warn!(error = %err, %gateway, "notify bus: subscribe failed; retrying in the background");
        }
        Ok(receiver)
    }
}

/// The subscriber side: one connection, with the push sender feeding
/// `routes` and automatic resubscription after a reconnect.
struct Subscriber {
    conn: Conn,
    routes: Arc<Routes>,
    /// The channel of broadcasts, which every subscription also hears.
    everyone: String,
    /// Some channel may not be subscribed on the server (a subscribe
    /// failed): the watchdog subscribes them all.
    pending: AtomicBool,
}

impl Subscriber {
    async fn subscribe(&self, channels: Vec<String>) -> Result<()> {
        if channels.is_empty() {
            return Ok(());
        }
        let mut manager = self.conn.manager();
        self.conn.call(manager.subscribe(channels)).await
    }

    /// Every `every`, pings (which also restarts reconnecting after an outage
    /// outlasted the reconnect attempts, and lets `Conn` replace a silent
    /// connection); when Redis answers, subscribes what may be missing: the
    /// pending channels, or all of them on a replaced connection.
    async fn watch(self: Arc<Self>, every: Duration) {
        let mut subscribed_on = self.conn.generation();
        loop {
            tokio::time::sleep(every).await;
            let generation = self.conn.generation();
            if let Err(err) = self.conn.ping().await {
                tracing::debug!(error = %err, "notify bus: ping failed");
                continue;
            }
            let replaced = generation != subscribed_on;
            if self.pending.swap(false, Ordering::Relaxed) || replaced {
                subscribed_on = generation;
                self.subscribe_all().await;
            }
        }
    }

    async fn subscribe_all(&self) {
        let mut channels: Vec<String> = lock(&self.routes).keys().cloned().collect();
        channels.push(self.everyone.clone());
        match self.subscribe(channels).await {
            Ok(()) => tracing::info!("notify bus: subscribed again"),
            Err(err) => {
                self.pending.store(true, Ordering::Relaxed);
                tracing::warn!(error = %err, "notify bus: resubscribe failed; retrying");
            }
        }
    }
}

/// Runs on the connection's task for every push: must not block.
fn on_push(routes: &Routes, everyone: &str, info: PushInfo) {
    match (info.kind, info.data.as_slice()) {
        (PushKind::Message, [Value::BulkString(channel), Value::BulkString(payload)]) => {
            deliver(routes, everyone, channel, payload);
        }
        (PushKind::Disconnection, _) => {
            tracing::warn!("notify bus: Redis connection lost; reconnecting and resubscribing");
        }
        _ => {}
    }
}

fn deliver(routes: &Routes, everyone: &str, channel: &[u8], payload: &[u8]) {
    let note = match serde_json::from_slice::<Wire>(payload) {
        Ok(wire) => wire.message(),
        Err(err) => {
            tracing::warn!(error = %err, "notify bus: unreadable notification dropped");
            return;
        }
    };
    let Ok(channel) = std::str::from_utf8(channel) else {
        return;
    };
    let mut routes = lock(routes);
    if channel == everyone {
        // A broadcast: every gateway subscribed in this process hears it.
        let channels: Vec<String> = routes.keys().cloned().collect();
        for channel in channels {
            hand_over(&mut routes, &channel, note.clone());
        }
        return;
    }
    hand_over(&mut routes, channel, note);
}

/// Queues `note` for the subscription of `channel`, if it has one.
fn hand_over(
    routes: &mut HashMap<String, mpsc::Sender<BusMessage>>,
    channel: &str,
    note: BusMessage,
) {
    let Some(sender) = routes.get(channel) else {
        return;
    };
    match sender.try_send(note) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!("chat_notifies_dropped_total").increment(1);
            tracing::debug!(channel, "notify dropped: gateway queue full");
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            routes.remove(channel);
        }
    }
}

/// A poisoned lock here guards no invariant a panic could break.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
