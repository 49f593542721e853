//! One simulated chat client: connects, syncs from its seq on every
//! (re)connect and on every `notify`, sends on its schedule (open loop: the
//! send times are fixed in advance, and latency is measured from them, so a
//! slow server cannot hide behind back-pressure), retries `unavailable` and
//! `rate_limited` with the same `client_msg_id`, reconnects after a drop or a
//! `goaway`, and records what it received for the exactly-once check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use proto::ServerFrame;
use rand::Rng;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::{MissedTickBehavior, sleep, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use crate::checker::{Acks, MsgKey, Receipts};
use crate::stats::{Counters, SlowDelivery, Stats};
use crate::target::{Target, Ws};

/// The phases of a run, moved forward by the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connect and wait.
    Connect,
    /// Send on schedule.
    Send,
    /// Drop the connection and stay away.
    Offline,
    /// Reconnect after a random delay up to this many ms, then sync.
    Reconnect(u64),
    /// Stop sending new messages; keep retrying and receiving.
    Drain,
    /// Sync to the head once more, then stop.
    Finish,
    /// Stop now (the run's time is up).
    Stop,
}

/// When a client sends.
#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    /// Never.
    Idle,
    /// At this many messages per second, from the start of [`Phase::Send`].
    Rate(f64),
    /// This many messages as fast as acks allow, at most `window` unacked.
    Count {
        /// Messages to send.
        total: u64,
        /// Most unacked at once.
        window: usize,
    },
}

/// Where a client's messages go.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Nowhere (the client only receives).
    None,
    /// A direct message to this user.
    Peer(String),
    /// A conversation (a group), by id.
    Conv(String),
}

/// What one client does.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    /// Connection number (picks the target URL and source address).
    pub index: usize,
    /// The user id.
    pub user: String,
    /// Where its messages go.
    pub to: Destination,
    /// Who must receive each of its messages (besides itself).
    pub recipients: Arc<Vec<String>>,
    /// When it sends.
    pub schedule: Schedule,
    /// Body size in bytes.
    pub body_bytes: usize,
}

/// What the run shares with every client.
pub struct Shared {
    /// Where to connect.
    pub target: Target,
    /// What to record into.
    pub stats: Stats,
    /// The current phase.
    pub phase: watch::Receiver<Phase>,
}

/// What a client hands back at the end.
#[derive(Debug)]
pub struct ClientReport {
    /// The user id.
    pub user: String,
    /// What it received.
    pub receipts: Receipts,
    /// What it got acks for.
    pub acks: Acks,
    /// From the start of [`Phase::Reconnect`] until its first complete sync after it.
    pub caught_up: Option<Duration>,
}

/// A send not acked yet.
#[derive(Debug, Clone)]
struct Pending {
    client_msg_id: String,
    /// The scheduled send time (latency is measured from it).
    scheduled: Instant,
    attempts: u32,
    /// An edit or a recall of this client's message (protocol 1.1), not
    /// a new message.
    change: Option<Change>,
}

/// A change of one of a client's own messages.
#[derive(Debug, Clone, Copy)]
struct Change {
    /// `edit` or `recall`.
    kind: &'static str,
    /// The conv_seq of the message it changes.
    refers_to: u64,
}

/// Sends that got `unavailable` or `rate_limited` give up after this many tries.
const MAX_ATTEMPTS: u32 = 30;
/// Entries per sync request (the protocol's maximum).
const SYNC_LIMIT: u32 = 500;

enum Step {
    Frame(Option<Result<Message, tokio_tungstenite::tungstenite::Error>>),
    SendDue(Instant),
    RetryDue,
    PhaseChanged,
}

/// Runs one client until the scenario reaches [`Phase::Finish`] and the
/// client has synced to its head.
pub async fn run(spec: ClientSpec, shared: Arc<Shared>) -> ClientReport {
    let mut client = Client::new(spec, shared);
    client.drive().await;
    ClientReport {
        user: client.spec.user,
        receipts: client.receipts,
        acks: client.acks,
        caught_up: client.caught_up,
    }
}

struct Client {
    spec: ClientSpec,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    token: Option<String>,
    ws: Option<Ws>,
    receipts: Receipts,
    acks: Acks,
    next_rid: u64,
    sends_by_rid: HashMap<u64, Pending>,
    sync_rid: Option<u64>,
    sync_wanted: bool,
    retries: Vec<(Instant, Pending)>,
    sent_new: u64,
    /// Messages of this client acked so far (every Nth gets a change).
    acked_new: u64,
    /// The unix time of `Instant` `base`, to stamp bodies with send times.
    base: (Instant, u128),
    reconnect_started: Option<Instant>,
    caught_up: Option<Duration>,
    /// Set when the final sync was requested; done when it completes.
    finishing: bool,
    done: bool,
}

fn unix_micros() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
}

/// The send time stamped at the start of a body: `<unix micros> <padding>`.
fn body_sent_at(body: &str) -> Option<u128> {
    body.split(' ').next()?.parse().ok()
}

impl Client {
    fn new(spec: ClientSpec, shared: Arc<Shared>) -> Self {
        let phase = shared.phase.clone();
        Client {
            spec,
            shared,
            phase,
            token: None,
            ws: None,
            receipts: Receipts::default(),
            acks: Acks::default(),
            next_rid: 1,
            sends_by_rid: HashMap::new(),
            sync_rid: None,
            sync_wanted: false,
            retries: Vec::new(),
            sent_new: 0,
            acked_new: 0,
            base: (Instant::now(), unix_micros()),
            reconnect_started: None,
            caught_up: None,
            finishing: false,
            done: false,
        }
    }

    fn counters(&self) -> &Counters {
        &self.shared.stats.counters
    }

    async fn drive(&mut self) {
        self.connect().await;
        // Made when sending starts, so no tick is owed for the time before.
        let mut ticker = None;
        while !self.done {
            let phase = *self.phase.borrow();
            match phase {
                Phase::Stop => break,
                Phase::Offline => {
                    self.disconnect();
                    if self.phase.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                Phase::Reconnect(jitter_ms) if self.ws.is_none() => {
                    let started = Instant::now();
                    let delay = rand::rng().random_range(0..=jitter_ms);
                    sleep(Duration::from_millis(delay)).await;
                    self.reconnect_started = Some(started);
                    self.connect().await;
                    continue;
                }
                _ => {}
            }
            if self.ws.is_none() {
                self.reconnect_after(Duration::ZERO).await;
                continue;
            }
            let step = self.next_step(phase, &mut ticker).await;
            self.handle(step).await;
        }
        self.disconnect();
    }

    fn ticker(&self) -> Option<tokio::time::Interval> {
        let Schedule::Rate(rate) = self.spec.schedule else {
            return None;
        };
        let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
        // A random phase, so that clients do not all send in the same instant.
        let offset = period.mul_f64(rand::rng().random::<f64>());
        let mut ticker = tokio::time::interval_at((Instant::now() + offset).into(), period);
        // Open loop: if the client falls behind, the missed sends go out at
        // once and their latency (from the scheduled time) shows it.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
        Some(ticker)
    }

    fn may_send_new(&self, phase: Phase) -> bool {
        if phase != Phase::Send || matches!(self.spec.to, Destination::None) {
            return false;
        }
        match self.spec.schedule {
            Schedule::Idle => false,
            Schedule::Rate(_) => true,
            Schedule::Count { total, window } => {
                self.sent_new < total && self.sends_by_rid.len() + self.retries.len() < window
            }
        }
    }

    async fn next_step(
        &mut self,
        phase: Phase,
        ticker: &mut Option<tokio::time::Interval>,
    ) -> Step {
        let may_send = self.may_send_new(phase);
        if may_send && ticker.is_none() {
            *ticker = self.ticker();
        }
        let retry_at = self.retries.iter().map(|(at, _)| *at).min();
        let Some(ws) = self.ws.as_mut() else {
            return Step::Frame(None);
        };
        let rate_tick = async {
            match ticker.as_mut() {
                Some(t) if may_send => t.tick().await.into_std(),
                _ if may_send => Instant::now(),
                _ => std::future::pending().await,
            }
        };
        let retry = async {
            match retry_at {
                Some(at) => sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            frame = ws.next() => Step::Frame(frame),
            at = rate_tick => Step::SendDue(at),
            () = retry => Step::RetryDue,
            _ = self.phase.changed() => Step::PhaseChanged,
        }
    }

    async fn handle(&mut self, step: Step) {
        match step {
            Step::Frame(Some(Ok(Message::Text(text)))) => self.on_frame(&text).await,
            Step::Frame(Some(Ok(Message::Close(_))))
            | Step::Frame(None)
            | Step::Frame(Some(Err(_))) => {
                self.ws = None;
            }
            Step::Frame(Some(Ok(_))) => {}
            Step::SendDue(at) => {
                if !self.count_in_send_phase() {
                    return;
                }
                self.sent_new += 1;
                let pending = Pending {
                    client_msg_id: format!("{}-{}", self.spec.user, self.sent_new),
                    scheduled: at,
                    attempts: 0,
                    change: None,
                };
                self.send(pending).await;
            }
            Step::RetryDue => {
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) =
                    self.retries.drain(..).partition(|(at, _)| *at <= now);
                self.retries = later;
                for (_, pending) in due {
                    self.send(pending).await;
                }
            }
            Step::PhaseChanged => {
                let phase = *self.phase.borrow_and_update();
                match phase {
                    Phase::Finish if !self.finishing => {
                        self.finishing = true;
                        self.request_sync().await;
                    }
                    Phase::Stop => self.done = true,
                    _ => {}
                }
            }
        }
    }

    async fn on_frame(&mut self, text: &str) {
        let Ok(frame) = serde_json::from_str::<ServerFrame>(text) else {
            self.shared.stats.record_error("unparsable_frame");
            return;
        };
        match frame {
            ServerFrame::Ack { rid, ack } => {
                let Some(pending) = rid.and_then(|r| self.take_send(&r)) else {
                    return;
                };
                if ack.client_msg_id.as_str() != pending.client_msg_id {
                    self.shared.stats.record_error("ack_for_another_message");
                    return;
                }
                self.shared.stats.record_ack(pending.scheduled.elapsed());
                Counters::drop_one(&self.counters().unacked);
                let recipients = self.spec.recipients.as_ref().clone();
                let key = MsgKey::new(&self.spec.user, &pending.client_msg_id);
                self.shared.stats.handoffs.acked(key, recipients.len());
                self.counters().expected.fetch_add(
                    recipients.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.acks.record(
                    MsgKey::new(&self.spec.user, &pending.client_msg_id),
                    recipients,
                );
                if pending.change.is_none() {
                    self.acked_new += 1;
                    self.maybe_change(&pending.client_msg_id, ack.conv_seq)
                        .await;
                }
            }
            ServerFrame::SyncResult { rid, result } => {
                self.record_entries(&result.entries);
                let answered = rid.is_some() && rid_number(rid.as_ref()) == self.sync_rid;
                if !answered {
                    return; // pushed entries (the relay), not our sync
                }
                self.sync_rid = None;
                if result.more || self.sync_wanted {
                    self.sync_wanted = false;
                    self.request_sync().await;
                } else {
                    self.synced_to_head();
                }
            }
            ServerFrame::Notify {
                head,
                prev,
                entries,
            } => self.on_notify(head, prev, entries).await,
            ServerFrame::Error {
                rid,
                code,
                retry_after_ms,
                ..
            } => {
                let code = code.as_str();
                self.shared.stats.record_error(code);
                if rid_number(rid.as_ref()).is_some() && rid_number(rid.as_ref()) == self.sync_rid {
                    self.sync_rid = None;
                    self.retry_sync_later(retry_after_ms).await;
                    return;
                }
                let Some(pending) = rid.and_then(|r| self.take_send(&r)) else {
                    return;
                };
                if matches!(code, "unavailable" | "rate_limited") && pending.attempts < MAX_ATTEMPTS
                {
                    self.schedule_retry(pending, retry_after_ms.unwrap_or(200));
                } else {
                    Counters::drop_one(&self.counters().unacked);
                }
            }
            ServerFrame::Goaway { reconnect_after_ms } => {
                self.disconnect();
                self.reconnect_after(Duration::from_millis(reconnect_after_ms))
                    .await;
            }
            ServerFrame::Pong { .. } => {}
            ServerFrame::Typing { .. } => Counters::bump(&self.counters().typing_received),
            ServerFrame::PresenceResult { .. }
            | ServerFrame::Presence(_)
            | ServerFrame::ReadAck { .. } => {}
        }
    }

    /// Takes the entries a notify carries when they reach down to this
    /// client's sync key (they are every entry above `prev`, so those above
    /// the key are all it lacks) and no sync is under way; else syncs.
    async fn on_notify(
        &mut self,
        head: u64,
        prev: Option<u64>,
        entries: Option<Vec<proto::Entry>>,
    ) {
        let key = self.receipts.last_seq();
        if head <= key {
            return;
        }
        let takes = self.shared.target.takes_notify_entries() && self.sync_rid.is_none();
        match (prev, entries) {
            (Some(prev), Some(entries)) if takes && prev <= key => {
                let fresh: Vec<proto::Entry> =
                    entries.into_iter().filter(|e| e.seq > key).collect();
                self.record_entries(&fresh);
                Counters::bump(&self.counters().notifies_taken);
                self.synced_to_head();
            }
            _ => self.request_sync().await,
        }
    }

    fn synced_to_head(&mut self) {
        if let Some(started) = self.reconnect_started.take() {
            self.caught_up = Some(started.elapsed());
            Counters::bump(&self.counters().caught_up);
        }
        if self.finishing {
            self.done = true;
        }
    }

    async fn retry_sync_later(&mut self, retry_after_ms: Option<u64>) {
        sleep(Duration::from_millis(
            retry_after_ms.unwrap_or(200).min(2_000),
        ))
        .await;
        self.request_sync().await;
    }

    fn take_send(&mut self, rid: &proto::Rid) -> Option<Pending> {
        rid_number(Some(rid)).and_then(|r| self.sends_by_rid.remove(&r))
    }

    fn schedule_retry(&mut self, pending: Pending, retry_after_ms: u64) {
        // Full jitter on top of the server's hint, so retries spread out.
        let jitter = rand::rng().random_range(0..=retry_after_ms.max(1));
        let at = Instant::now() + Duration::from_millis(retry_after_ms + jitter);
        self.retries.push((at, pending));
    }

    fn record_entries(&mut self, entries: &[proto::Entry]) {
        let now = unix_micros();
        for entry in entries {
            let message = &entry.message;
            let key = MsgKey::new(message.from.as_str(), message.client_msg_id.as_str());
            let new = self.receipts.record(entry.seq, key.clone());
            if new && message.from.as_str() != self.spec.user {
                if let Some(waited) = self.shared.stats.handoffs.delivered(&key) {
                    self.shared.stats.record_after_ack(waited, || SlowDelivery {
                        from: message.from.to_string(),
                        to: self.spec.user.clone(),
                        client_msg_id: message.client_msg_id.to_string(),
                        seq: entry.seq,
                        delivered_at_ms: u64::try_from(now / 1000).unwrap_or(0),
                        ..SlowDelivery::default()
                    });
                }
                let latency = body_sent_at(&message.body).map(|sent| {
                    Duration::from_micros(
                        u64::try_from(now.saturating_sub(sent)).unwrap_or(u64::MAX),
                    )
                });
                self.shared.stats.record_delivery(latency);
            }
        }
    }

    async fn request_sync(&mut self) {
        if self.sync_rid.is_some() {
            self.sync_wanted = true;
            return;
        }
        let rid = self.rid();
        let frame = json!({"type": "sync", "rid": rid, "since": self.receipts.last_seq(), "limit": SYNC_LIMIT});
        if self.write(frame.to_string()).await {
            self.sync_rid = Some(rid);
            Counters::bump(&self.counters().syncs);
        }
    }

    async fn send(&mut self, mut pending: Pending) {
        pending.attempts += 1;
        let rid = self.rid();
        let sent_at = self.base.1
            + pending
                .scheduled
                .saturating_duration_since(self.base.0)
                .as_micros();
        let mut body = format!("{sent_at} ");
        while body.len() < self.spec.body_bytes {
            body.push('x');
        }
        let mut frame = json!({"type": "send", "rid": rid, "client_msg_id": pending.client_msg_id, "body": body});
        match &self.spec.to {
            Destination::Peer(peer) => frame["to"] = json!(peer),
            Destination::Conv(conv) => frame["conv_id"] = json!(conv),
            Destination::None => return,
        }
        if let Some(change) = pending.change {
            let Some(conv) = self.conv_id() else {
                return;
            };
            frame = match change.kind {
                "recall" => {
                    json!({"type": "recall", "rid": rid, "client_msg_id": pending.client_msg_id,
                    "conv_id": conv, "ref": change.refers_to})
                }
                _ => json!({"type": "edit", "rid": rid, "client_msg_id": pending.client_msg_id,
                    "conv_id": conv, "ref": change.refers_to, "body": frame["body"]}),
            };
        }
        if self.shared.target.types_before_sending() && pending.attempts == 1 {
            self.say_typing().await;
        }
        self.sends_by_rid.insert(rid, pending);
        if self.write(frame.to_string()).await {
            Counters::bump(&self.counters().sent);
        }
    }

    /// Every Nth acked message of this client is changed (`--changes N`,
    /// protocol 1.1): edited, or, every other time, recalled. The change is
    /// a send of its own, acked and checked exactly once like a message.
    async fn maybe_change(&mut self, client_msg_id: &str, conv_seq: u64) {
        let Some(every) = self.shared.target.change_every() else {
            return;
        };
        if !self.acked_new.is_multiple_of(every) {
            return;
        }
        if !self.count_in_send_phase() {
            return;
        }
        let kind = match (self.acked_new / every) % 2 {
            0 => "recall",
            _ => "edit",
        };
        let pending = Pending {
            client_msg_id: format!("{client_msg_id}.{kind}"),
            scheduled: Instant::now(),
            attempts: 0,
            change: Some(Change {
                kind,
                refers_to: conv_seq,
            }),
        };
        self.send(pending).await;
    }

    /// Counts one more unacked send if the send phase is still on; whether
    /// it was. A send started just as the phase ended must not go out: the
    /// drain may already have seen no unacked send and moved on, and the
    /// peer would stop before the message reached it. Counted first, then
    /// the phase read; the drain sets the phase, then reads the count; the
    /// fences make at least one side see the other (store, fence, load on
    /// both sides).
    fn count_in_send_phase(&self) -> bool {
        Counters::bump(&self.counters().unacked);
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        if *self.phase.borrow() != Phase::Send {
            Counters::drop_one(&self.counters().unacked);
            return false;
        }
        true
    }

    /// The conversation this client sends to.
    fn conv_id(&self) -> Option<String> {
        match &self.spec.to {
            Destination::Peer(peer) => {
                let (a, b) = match self.spec.user.as_str() < peer.as_str() {
                    true => (self.spec.user.as_str(), peer.as_str()),
                    false => (peer.as_str(), self.spec.user.as_str()),
                };
                Some(format!("dm:{a}:{b}"))
            }
            Destination::Conv(conv) => Some(conv.clone()),
            Destination::None => None,
        }
    }

    /// A typing indicator in the conversation it sends to (no reply; the
    /// server drops those within 3 s of the last).
    async fn say_typing(&mut self) {
        let Some(conv) = self.conv_id() else {
            return;
        };
        self.write(json!({"type": "typing", "conv_id": conv}).to_string())
            .await;
    }

    fn rid(&mut self) -> u64 {
        self.next_rid += 1;
        self.next_rid
    }

    /// Writes a frame; a failed write drops the connection (it is re-made).
    async fn write(&mut self, text: String) -> bool {
        let Some(ws) = self.ws.as_mut() else {
            return false;
        };
        if ws.send(Message::text(text)).await.is_ok() {
            return true;
        }
        self.ws = None;
        false
    }

    fn disconnect(&mut self) {
        if self.ws.take().is_some() {
            Counters::drop_one(&self.counters().connected);
        }
    }

    async fn reconnect_after(&mut self, delay: Duration) {
        self.disconnect();
        sleep(delay).await;
        Counters::bump(&self.counters().reconnects);
        self.connect().await;
    }

    /// Connects (retrying with backoff and full jitter until the run
    /// finishes), syncs from the client's seq, and re-sends unacked sends
    /// with the same `client_msg_id`.
    async fn connect(&mut self) {
        self.disconnect();
        let mut backoff = Duration::from_millis(50);
        let ws = loop {
            match self.try_connect().await {
                Ok(ws) => break ws,
                Err(err) => {
                    Counters::bump(&self.counters().connect_failures);
                    tracing::debug!(user = %self.spec.user, error = %err, "connect failed");
                    if matches!(*self.phase.borrow(), Phase::Finish | Phase::Stop) {
                        self.done = true;
                        return;
                    }
                    let wait = rand::rng().random_range(Duration::ZERO..=backoff);
                    sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        self.ws = Some(ws);
        Counters::bump(&self.counters().connected);
        self.sync_rid = None;
        self.sync_wanted = false;
        self.request_sync().await;
        let unacked: Vec<Pending> = self.sends_by_rid.drain().map(|(_, p)| p).collect();
        for pending in unacked {
            self.send(pending).await;
        }
    }

    async fn try_connect(&mut self) -> anyhow::Result<Ws> {
        let token = match &self.token {
            Some(token) => token.clone(),
            None => {
                let token = self.shared.target.token(&self.spec.user).await?;
                self.token = Some(token.clone());
                token
            }
        };
        self.shared.target.connect(self.spec.index, &token).await
    }
}

fn rid_number(rid: Option<&proto::Rid>) -> Option<u64> {
    match rid? {
        proto::Rid::Num(n) => n.as_u64(),
        proto::Rid::Str(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_is_read_back_from_the_body() {
        assert_eq!(
            body_sent_at("1764262800000123 xxxx"),
            Some(1_764_262_800_000_123)
        );
        assert_eq!(body_sent_at("hello"), None);
    }
}
