//! Notify routing on this gateway: the users with a socket or a long poll
//! here, each with a watch of their inbox head and a way to push a frame to
//! each of their sockets (typing indicators, presence changes), fed by this
//! gateway's one subscription to the notify bus; and the presence changes
//! this gateway sees (a user's first device here, their last one anywhere).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use msg_service::MessageApi;
use proto::{PresenceOf, Seq, ServerFrame, UserId};
use storage::{BusMessage, GatewayId, Inline, NotifyBus, Presence, PresenceChange, Typing};

use crate::head::Head;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the hub refreshes presence claims and checks the presence store.
#[derive(Debug, Clone, Copy)]
pub struct PresenceTimes {
    /// Re-announce every user this often (well within the claims' TTL).
    pub refresh: std::time::Duration,
    /// Check the presence store (restarted? reachable?) this often.
    pub check: std::time::Duration,
}

/// Head polls after the presence store answers again (one per check).
const CATCH_UP_POLLS: u32 = 3;

/// Pushes one frame (JSON) to one socket, best effort: dropped when the
/// socket's queue is full or it is gone.
pub type Push = Arc<dyn Fn(&str) + Send + Sync>;

/// A user's inbox head as this gateway last heard it, and who listens.
struct Listener {
    head: watch::Sender<Head>,
    count: usize,
    /// The user's sockets here, by registration number.
    pushes: Vec<(u64, Push)>,
}

/// A socket watching a user's presence: the state it was last told.
struct Watcher {
    push: Push,
    online: bool,
}

/// The users listening on this gateway.
pub struct Hub {
    gateway: GatewayId,
    presence: Arc<dyn Presence>,
    /// Where presence changes go: every gateway.
    bus: Arc<dyn NotifyBus>,
    /// By watched user, the sockets (registration numbers) watching them.
    watchers: Mutex<HashMap<UserId, HashMap<u64, Watcher>>>,
    /// By socket, the users it watches.
    watching: Mutex<HashMap<u64, Vec<UserId>>>,
    users: Mutex<HashMap<UserId, Listener>>,
    /// Users whose presence claim failed: no notify can reach them until
    /// they are claimed again (at the next check, not the next refresh).
    unclaimed: Mutex<HashSet<UserId>>,
    /// Numbers the registrations that can be pushed to.
    next_push: std::sync::atomic::AtomicU64,
}

/// A registration of one socket or poll; unregisters when dropped.
pub struct Registration {
    hub: Arc<Hub>,
    user: UserId,
    /// Changes whenever the user's inbox head moves.
    pub head: watch::Receiver<Head>,
    /// Its number among the user's sockets that can be pushed to.
    push: Option<u64>,
}

impl Registration {
    /// The socket's number (a socket's registration has one).
    pub fn socket(&self) -> Option<u64> {
        self.push
    }
}

impl Hub {
    /// A hub for the gateway named `gateway`; presence changes go out on
    /// `bus`.
    pub fn new(
        gateway: GatewayId,
        presence: Arc<dyn Presence>,
        bus: Arc<dyn NotifyBus>,
    ) -> Arc<Self> {
        Arc::new(Hub {
            gateway,
            presence,
            bus,
            watchers: Mutex::default(),
            watching: Mutex::default(),
            users: Mutex::new(HashMap::new()),
            unclaimed: Mutex::new(HashSet::new()),
            next_push: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn users(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Listener>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Listens for `user`'s head; presence learns this gateway holds the
    /// user when its first listener here registers.
    pub async fn register(self: &Arc<Self>, user: &UserId) -> Registration {
        self.register_with(user, None).await
    }

    /// [`Self::register`] for a socket, which also gets the frames pushed
    /// to the user's sockets through `push`.
    pub async fn register_socket(self: &Arc<Self>, user: &UserId, push: Push) -> Registration {
        self.register_with(user, Some(push)).await
    }

    async fn register_with(self: &Arc<Self>, user: &UserId, push: Option<Push>) -> Registration {
        let number = push.as_ref().map(|_| {
            self.next_push
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        let (head, first) = {
            let mut users = self.users();
            let listener = users.entry(user.clone()).or_insert_with(|| Listener {
                head: watch::channel(Head::default()).0,
                count: 0,
                pushes: Vec::new(),
            });
            listener.count += 1;
            if let (Some(number), Some(push)) = (number, push) {
                listener.pushes.push((number, push));
            }
            (listener.head.subscribe(), listener.count == 1)
        };
        if first {
            self.announce(user).await;
            self.tell_everyone(PresenceChange {
                user: user.clone(),
                online: true,
                last_seen: None,
            })
            .await;
        }
        Registration {
            hub: Arc::clone(self),
            user: user.clone(),
            head,
            push: number,
        }
    }

    fn unclaimed(&self) -> std::sync::MutexGuard<'_, HashSet<UserId>> {
        self.unclaimed.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn announce(&self, user: &UserId) {
        match self.presence.connected(user, &self.gateway).await {
            Ok(()) => {
                self.unclaimed().remove(user);
            }
            Err(err) => {
                tracing::warn!(error = %err, %user, "presence registration failed; the next check retries it");
                self.unclaimed().insert(user.clone());
            }
        }
    }

    /// Drops one listener (and its push); true when it was the user's last
    /// one here.
    fn unregister(&self, user: &UserId, push: Option<u64>) -> bool {
        let mut users = self.users();
        let Some(listener) = users.get_mut(user) else {
            return false;
        };
        if let Some(number) = push {
            listener.pushes.retain(|(n, _)| *n != number);
        }
        listener.count -= 1;
        if listener.count > 0 {
            return false;
        }
        users.remove(user);
        true
    }

    fn is_listening(&self, user: &UserId) -> bool {
        self.users().contains_key(user)
    }

    /// The user's last listener left: presence forgets this gateway for it,
    /// unless a new listener came in meanwhile (then it is announced again,
    /// whichever of the two presence calls landed last).
    async fn withdraw(&self, user: &UserId) {
        if let Err(err) = self.presence.disconnected(user, &self.gateway).await {
            tracing::warn!(error = %err, %user, "presence unregistration failed");
        }
        if self.is_listening(user) {
            self.announce(user).await;
            return;
        }
        self.gone_if_nowhere(user).await;
    }

    /// The user's last device here left: if no gateway holds one either,
    /// the user is offline from now, and every gateway is told.
    async fn gone_if_nowhere(&self, user: &UserId) {
        match self.presence.gateways(user).await {
            Ok(gateways) if gateways.is_empty() => {}
            Ok(_) => return,
            Err(err) => {
                tracing::debug!(error = %err, %user, "presence lookup failed; offline not told");
                return;
            }
        }
        let now = now_ms();
        if let Err(err) = self.presence.set_last_seen(user, now).await {
            tracing::warn!(error = %err, %user, "last_seen not saved");
        }
        self.tell_everyone(PresenceChange {
            user: user.clone(),
            online: false,
            last_seen: Some(now),
        })
        .await;
    }

    async fn tell_everyone(&self, change: PresenceChange) {
        if let Err(err) = self.bus.broadcast(change.into()).await {
            tracing::debug!(error = %err, "a presence change was not broadcast");
        }
    }

    /// Socket `socket` (a registration number) now watches `users`, each
    /// in the state it was just told; its earlier list is dropped.
    pub fn watch(&self, socket: u64, push: &Push, users: &[PresenceOf]) {
        self.unwatch(socket);
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        for seen in users {
            let watcher = Watcher {
                push: Arc::clone(push),
                online: seen.online,
            };
            watchers
                .entry(seen.user.clone())
                .or_default()
                .insert(socket, watcher);
        }
        let names = users.iter().map(|seen| seen.user.clone()).collect();
        self.watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(socket, names);
    }

    /// Socket `socket` watches nobody any more.
    pub fn unwatch(&self, socket: u64) {
        let users = self
            .watching
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&socket)
            .unwrap_or_default();
        let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
        for user in users {
            if let Some(sockets) = watchers.get_mut(&user) {
                sockets.remove(&socket);
                if sockets.is_empty() {
                    watchers.remove(&user);
                }
            }
        }
    }

    /// A user came online or went offline: every socket here watching them
    /// that was told otherwise hears of it.
    pub fn presence_changed(&self, change: &PresenceChange) {
        let mut pushes = Vec::new();
        {
            let mut watchers = self.watchers.lock().unwrap_or_else(|p| p.into_inner());
            let Some(sockets) = watchers.get_mut(&change.user) else {
                return;
            };
            for watcher in sockets.values_mut() {
                if watcher.online != change.online {
                    watcher.online = change.online;
                    pushes.push(Arc::clone(&watcher.push));
                }
            }
        }
        if pushes.is_empty() {
            return;
        }
        let frame = ServerFrame::Presence(PresenceOf {
            user: change.user.clone(),
            online: change.online,
            last_seen: change.last_seen,
        })
        .to_json();
        for push in pushes {
            push(&frame);
        }
    }

    /// Keeps presence right until `stop`: re-announces every user held here
    /// every `refresh` (claims have a TTL), and checks the presence store
    /// every `check`: after it restarted (its instance changed) the users are
    /// announced again at once; while it is unreachable (so the notify bus,
    /// on the same Redis, is too) the hub polls `heads` for its users' inbox
    /// heads instead of waiting for notifies that cannot come.
    pub async fn watch_presence(
        self: Arc<Self>,
        heads: Arc<dyn MessageApi>,
        every: PresenceTimes,
        stop: CancellationToken,
    ) {
        let mut checks = tokio::time::interval(every.check);
        let mut last_refresh = tokio::time::Instant::now();
        let mut instance: Option<String> = None;
        let mut catch_up_polls = 0;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = checks.tick() => {}
            }
            let due = last_refresh.elapsed() >= every.refresh;
            match self.presence.instance().await {
                Ok(now) => {
                    let restarted = instance.as_ref().is_some_and(|known| *known != now);
                    let was_down = instance.is_none();
                    instance = Some(now);
                    if due || restarted || was_down {
                        self.refresh_all().await;
                        last_refresh = tokio::time::Instant::now();
                    }
                    self.claim_again(heads.as_ref()).await;
                    if restarted || was_down {
                        // Notifies may have been lost meanwhile, and the
                        // message service's own Redis connection can come
                        // back a moment after this one: a few more polls
                        // before notifies alone are trusted again.
                        catch_up_polls = CATCH_UP_POLLS;
                    }
                    if catch_up_polls > 0 {
                        catch_up_polls -= 1;
                        self.poll_heads(heads.as_ref()).await;
                    }
                }
                Err(err) => {
                    if instance.take().is_some() {
                        tracing::warn!(error = %err, "presence store unreachable; polling inbox heads");
                    }
                    self.poll_heads(heads.as_ref()).await;
                }
            }
        }
    }

    async fn refresh_all(&self) {
        let users = self.listening_users();
        if let Err(err) = self.presence.refresh(&self.gateway, &users).await {
            tracing::warn!(error = %err, users = users.len(), "presence refresh failed");
        }
    }

    /// Claims the users whose claim failed, then polls their heads once:
    /// notifies for them were skipped while nobody knew they were here.
    async fn claim_again(&self, heads: &dyn MessageApi) {
        let users: Vec<UserId> = self.unclaimed().drain().collect();
        // Those who left meanwhile need no claim.
        let users: Vec<UserId> = users.into_iter().filter(|u| self.is_listening(u)).collect();
        if users.is_empty() {
            return;
        }
        if let Err(err) = self.presence.refresh(&self.gateway, &users).await {
            tracing::warn!(error = %err, users = users.len(), "presence claims failed again");
            self.unclaimed().extend(users);
            return;
        }
        self.poll_heads_of(heads, &users).await;
    }

    fn listening_users(&self) -> Vec<UserId> {
        self.users().keys().cloned().collect()
    }

    /// Reads the inbox head of every user held here and wakes those whose
    /// head moved: the fallback for notifies while the bus is down.
    async fn poll_heads(&self, heads: &dyn MessageApi) {
        self.poll_heads_of(heads, &self.listening_users()).await;
    }

    async fn poll_heads_of(&self, heads: &dyn MessageApi, users: &[UserId]) {
        for user in users {
            match heads.inbox_head(user).await {
                Ok(head) => self.notify(user, head, None),
                Err(err) => {
                    tracing::debug!(error = %err, %user, "head poll failed");
                    return;
                }
            }
        }
    }

    /// A notify arrived: wake the user's listeners if the head moved up.
    pub fn notify(&self, user: &UserId, head: Seq, inline: Option<&Inline>) {
        if let Some(listener) = self.users().get(user) {
            listener
                .head
                .send_if_modified(|current| current.advance(head, inline));
        }
    }

    /// Someone is typing: pushes the indicator to every socket of `typing.to`
    /// here.
    pub fn typing(&self, typing: &Typing) {
        let pushes: Vec<Push> = match self.users().get(&typing.to) {
            Some(listener) => listener.pushes.iter().map(|(_, p)| Arc::clone(p)).collect(),
            None => return,
        };
        let frame = ServerFrame::Typing {
            conv_id: typing.conv_id.clone(),
            from: typing.from.clone(),
        }
        .to_json();
        for push in pushes {
            push(&frame);
        }
    }

    /// Feeds the hub from this gateway's one bus subscription until `stop`.
    pub async fn run_bus(self: Arc<Self>, bus: Arc<dyn NotifyBus>, stop: CancellationToken) {
        let mut subscription = match bus.subscribe(&self.gateway).await {
            Ok(subscription) => subscription,
            Err(err) => {
                tracing::error!(error = %err, "cannot subscribe to the notify bus");
                return;
            }
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                note = subscription.recv() => match note {
                    Some(BusMessage::Head(note)) => self.notify(&note.user, note.head, note.inline.as_ref()),
                    Some(BusMessage::Typing(typing)) => self.typing(&typing),
                    Some(BusMessage::Presence(change)) => self.presence_changed(&change),
                    None => return,
                },
            }
        }
    }
}

/// Wall-clock Unix ms (0 before 1970).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(socket) = self.push {
            self.hub.unwatch(socket);
        }
        if !self.hub.unregister(&self.user, self.push) {
            return;
        }
        let (hub, user) = (Arc::clone(&self.hub), self.user.clone());
        // Presence is async; dropping happens in sync code, so hand it off.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { hub.withdraw(&user).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use msg_service::{Backends, MessageService, ServiceConfig};
    use proto::SendRequest;
    use storage::{
        Durability, EmbeddedStore, InProcessBus, InProcessCache, InProcessPresence, Result,
    };

    use super::*;

    /// Presence whose next `connected` calls fail; counts the checks; its
    /// `refresh` waits while `refreshes` is closed (false).
    struct FlakyClaims {
        inner: InProcessPresence,
        failing_claims: AtomicUsize,
        checks: watch::Sender<usize>,
        refreshes: watch::Sender<bool>,
    }

    #[async_trait]
    impl Presence for FlakyClaims {
        async fn connected(&self, user: &UserId, gateway: &GatewayId) -> Result<()> {
            let failing = self.failing_claims.load(Ordering::SeqCst);
            if failing > 0 {
                self.failing_claims.store(failing - 1, Ordering::SeqCst);
                return Err(storage::Error::Unavailable("injected".into()));
            }
            self.inner.connected(user, gateway).await
        }
        async fn disconnected(&self, user: &UserId, gateway: &GatewayId) -> Result<()> {
            self.inner.disconnected(user, gateway).await
        }
        async fn gateways(&self, user: &UserId) -> Result<Vec<GatewayId>> {
            self.inner.gateways(user).await
        }
        async fn refresh(&self, gateway: &GatewayId, users: &[UserId]) -> Result<()> {
            let mut open = self.refreshes.subscribe();
            let _ = open.wait_for(|open| *open).await;
            for user in users {
                self.inner.connected(user, gateway).await?;
            }
            Ok(())
        }
        async fn instance(&self) -> Result<String> {
            self.checks.send_modify(|n| *n += 1);
            Ok("one".into())
        }
        async fn set_last_seen(&self, user: &UserId, at_ms: u64) -> Result<()> {
            self.inner.set_last_seen(user, at_ms).await
        }
        async fn last_seen(&self, user: &UserId) -> Result<Option<u64>> {
            self.inner.last_seen(user).await
        }
    }

    fn user(name: &str) -> UserId {
        UserId::parse(name).expect("a valid user id")
    }

    #[tokio::test]
    async fn a_user_whose_presence_claim_failed_is_claimed_and_told_its_head_at_the_next_check()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let presence = Arc::new(FlakyClaims {
            inner: InProcessPresence::default(),
            failing_claims: AtomicUsize::new(0),
            checks: watch::channel(0).0,
            refreshes: watch::channel(true).0,
        });
        let service = Arc::new(MessageService::new(
            Backends {
                store: Arc::new(EmbeddedStore::open(dir.path(), Durability::Fsync)?),
                cache: Arc::new(InProcessCache::default()),
                bus: Arc::new(InProcessBus::default()),
                presence: Arc::clone(&presence) as _,
            },
            ServiceConfig::default(),
        ));
        let gateway = GatewayId("gw-1".into());
        let hub = Hub::new(
            gateway.clone(),
            Arc::clone(&presence) as _,
            Arc::new(InProcessBus::default()),
        );
        let stop = CancellationToken::new();
        // The refresh is far away: only the checks can claim bob in time.
        let times = PresenceTimes {
            refresh: Duration::from_secs(3600),
            check: Duration::from_millis(20),
        };
        let mut checks = presence.checks.subscribe();
        let watcher = tokio::spawn(Arc::clone(&hub).watch_presence(
            Arc::clone(&service) as _,
            times,
            stop.clone(),
        ));
        // Past the first check's refresh and its catch-up polls.
        checks
            .wait_for(|n| *n > CATCH_UP_POLLS as usize + 1)
            .await?;

        // No claim until the message is in: its notify finds no gateway.
        presence.refreshes.send_replace(false);
        presence.failing_claims.store(1, Ordering::SeqCst);
        let (alice, bob) = (user("alice"), user("bob"));
        let mut registration = hub.register(&bob).await;
        assert!(
            presence.gateways(&bob).await?.is_empty(),
            "the claim failed"
        );
        let request = SendRequest::new(Some("m-1"), None, Some("bob"), None, Some("hi".into()))?;
        service.send(&alice, request).await?;
        presence.refreshes.send_replace(true);

        tokio::time::timeout(Duration::from_secs(5), registration.head.changed()).await??;
        assert_eq!(registration.head.borrow().seq, 1);
        assert_eq!(presence.gateways(&bob).await?, [gateway]);
        stop.cancel();
        watcher.await?;
        Ok(())
    }
}
