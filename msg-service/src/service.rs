//! The message service value: its backends, its limits, and its logs.

use std::sync::Arc;

use proto::{ConvId, Seq, UserId};
use storage::{InboxCache, LogId, MessageStore, NotifyBus, Presence, SeqAllocator};

use crate::background::LowPriority;
use crate::bulkhead::{Bulkhead, BulkheadConfig};
use crate::fanouts::FanoutTurns;
use crate::inbox::{InboxWrite, announcer};
use crate::intents::InFlight;
use crate::known_dms::KnownDms;
use crate::logs::{Logs, silent};
use crate::ownership::{LeaseKeeper, Routes};
use crate::rate_limit::SendLimiter;
use crate::retry::{RetryConfig, RetrySignals, RetryWorker};
use crate::send::{Posted, queue_late_fanout};
use crate::stripes::Stripes;
use crate::unread_counts::UnreadCounts;
use crate::{Error, Result};

/// Limits and tuning of the message service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Members of a group at most, the creator included.
    pub max_group_members: usize,
    /// Seqs handed out per persisted ceiling (seqsvr's step).
    pub seq_step: u64,
    /// Inbox appends of one message's fan-out in flight at once.
    pub fanout_concurrency: usize,
    /// Sends per user per second (token bucket refill).
    pub send_rate: u32,
    /// Sends per user in a burst (token bucket size).
    pub send_burst: u32,
    /// The fan-out retry worker's backoff and polling.
    pub retry: RetryConfig,
    /// Sends running at once, and waiting.
    pub send_bulkhead: BulkheadConfig,
    /// Syncs and inbox-head reads running at once, and waiting.
    pub sync_bulkhead: BulkheadConfig,
    /// History pages running at once, and waiting: few, as a page is the
    /// heaviest read and a flood of them must not take what sends need.
    pub history_bulkhead: BulkheadConfig,
    /// Inbox appends of all fan-outs running at once, and waiting; a
    /// delivery turned away fails its send, which the client retries with
    /// the same client_msg_id, and the retry resumes the fan-out.
    pub fanout_bulkhead: BulkheadConfig,
    /// Where history pages run, when not with everything else: a runtime
    /// of low priority, so that a history flood does not slow sends.
    pub history_runtime: Option<Arc<LowPriority>>,
    /// Inboxes, and conversation logs, whose state (head, seq cursor,
    /// writer) is kept at most, each; past it idle ones are forgotten and
    /// read again from the store on their next touch.
    pub max_cached_logs: usize,
    /// Deadline of a call forwarded to another replica (below the gateways'
    /// own, so that they get the owner's answer, not a timeout).
    pub peer_timeout: std::time::Duration,
    /// How long after a message its sender may recall it.
    pub recall_window: std::time::Duration,
    /// How long after a message its sender may edit it.
    pub edit_window: std::time::Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_group_members: 500,
            seq_step: 10_000,
            fanout_concurrency: 64,
            send_rate: 20,
            send_burst: 50,
            retry: RetryConfig::default(),
            send_bulkhead: BulkheadConfig::new(256, 1024),
            sync_bulkhead: BulkheadConfig::new(256, 1024),
            history_bulkhead: BulkheadConfig::new(32, 64),
            fanout_bulkhead: BulkheadConfig::new(512, 8192),
            history_runtime: None,
            max_cached_logs: 200_000,
            peer_timeout: std::time::Duration::from_secs(4),
            recall_window: std::time::Duration::from_secs(120),
            edit_window: std::time::Duration::from_secs(900),
        }
    }
}

/// How many logs of each kind have their state kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedLogs {
    /// Inboxes.
    pub inboxes: usize,
    /// Conversation logs.
    pub conversations: usize,
}

/// The data systems the service runs on.
#[derive(Clone)]
pub struct Backends {
    /// The durable store: the truth.
    pub store: Arc<dyn MessageStore>,
    /// The newest entries of each inbox.
    pub cache: Arc<dyn InboxCache>,
    /// Notifies to gateways.
    pub bus: Arc<dyn NotifyBus>,
    /// Which gateways hold which users.
    pub presence: Arc<dyn Presence>,
}

/// The message service: owns every inbox and conversation log (one writer
/// each). Writes run on spawned tasks, so a caller that goes away (a client
/// disconnecting mid-send) never cuts a send or a membership change in half.
#[derive(Clone)]
pub struct MessageService {
    core: Arc<Core>,
}

/// The service's state and logic; `MessageService` is its cancel-safe face.
pub(crate) struct Core {
    pub(crate) backends: Backends,
    pub(crate) config: ServiceConfig,
    /// Inbox logs, keyed `u:<user>`.
    pub(crate) inboxes: Logs<InboxWrite>,
    /// Conversation logs, keyed `c:<conv_id>`.
    pub(crate) conversations: Logs<Posted>,
    /// Serializes the dedup step of one sender's sends (up to the logging
    /// of the message), so a duplicate `client_msg_id` sent twice at once
    /// stores one message. Not held through the fan-out.
    pub(crate) senders: Stripes,
    /// One user's read marks, one at a time (protocol 1.1).
    pub(crate) readers: Stripes,
    /// One fan-out at a time per message.
    pub(crate) fanout_turns: FanoutTurns,
    /// Serializes the look-then-append of one message into one inbox (see
    /// `deliver`): the fan-out turn is the conversation owner's, and a
    /// Deliver call from it runs here without one.
    pub(crate) deliveries: Stripes,
    /// Per-user send rate limit.
    pub(crate) send_limit: SendLimiter,
    /// Wakes the fan-out retry worker and counts its passes.
    pub(crate) retry: Arc<RetrySignals>,
    /// Concurrency limits per kind of work.
    pub(crate) bulkheads: Bulkheads,
    /// The fan-out intents this process has not finished.
    pub(crate) in_flight: Arc<InFlight>,
    /// Where logs this process does not serve are served (`None`: it
    /// serves every log).
    pub(crate) routes: Option<Arc<Routes>>,
    /// Direct conversations the store is known to have.
    pub(crate) known_dms: KnownDms,
    /// How far each member's unread count in a conversation was taken.
    pub(crate) unread_counts: UnreadCounts,
}

/// Direct conversations remembered as stored (about 100 bytes each).
const KNOWN_DMS_CAP: usize = 100_000;

/// Unread counts remembered (about 120 bytes each).
const UNREAD_COUNTS_CAP: usize = 100_000;

/// One bulkhead per kind of work.
pub(crate) struct Bulkheads {
    pub(crate) send: Bulkhead,
    pub(crate) sync: Bulkhead,
    pub(crate) history: Bulkhead,
    pub(crate) fanout: Bulkhead,
}

impl Bulkheads {
    fn new(config: &ServiceConfig) -> Self {
        Bulkheads {
            send: Bulkhead::new("send", config.send_bulkhead),
            sync: Bulkhead::new("sync", config.sync_bulkhead),
            history: Bulkhead::new("history", config.history_bulkhead),
            fanout: Bulkhead::new("fanout", config.fanout_bulkhead),
        }
    }
}

pub(crate) fn inbox_key(user: &UserId) -> String {
    format!("u:{user}")
}

pub(crate) fn conv_key(conv: &ConvId) -> String {
    format!("c:{conv}")
}

/// The inbox under an [`inbox_key`].
fn inbox_of_key(key: &str) -> Option<LogId> {
    let user = key.strip_prefix("u:")?;
    UserId::parse(user).ok().map(LogId::Inbox)
}

/// The conversation log under a [`conv_key`].
fn conversation_of_key(key: &str) -> Option<LogId> {
    let conv = key.strip_prefix("c:")?;
    ConvId::parse(conv).ok().map(LogId::Conversation)
}

impl MessageService {
    /// A service over these backends that owns every log (the embedded
    /// store belongs to one process).
    pub fn new(backends: Backends, config: ServiceConfig) -> Self {
        Self::serving(backends, config, None)
    }

    /// A service that appends to, and reads the heads of, only the logs
    /// whose shards `keeper` holds under a valid lease (`None`: every log);
    /// other calls are answered `unavailable`, except the fan-out's inbox
    /// appends, which go to the replica that owns each inbox (see
    /// [`crate::ownership::RoutedService`] for the calls of gateways).
    pub fn serving(
        backends: Backends,
        config: ServiceConfig,
        keeper: Option<Arc<LeaseKeeper>>,
    ) -> Self {
        let seqs = SeqAllocator::new(Arc::clone(&backends.store), config.seq_step);
        let retry: Arc<RetrySignals> = Arc::default();
        let store = &backends.store;
        // This process's name as a writer of logs: new at every start.
        let writer: Arc<str> = format!("{:016x}", rand::random::<u64>()).into();
        let routes = keeper
            .clone()
            .map(|keeper| Arc::new(Routes::new(keeper, config.peer_timeout)));
        let core = Core {
            // A settled inbox entry is announced like any other.
            inboxes: Logs::new(
                "inbox",
                config.max_cached_logs,
                Arc::clone(&writer),
                inbox_of_key,
                keeper.clone(),
                seqs.clone(),
                Arc::clone(store),
                announcer(backends.clone()),
                silent(),
            ),
            conversations: Logs::new(
                "conversation",
                config.max_cached_logs,
                writer,
                conversation_of_key,
                keeper,
                seqs,
                Arc::clone(store),
                silent(),
                queue_late_fanout(Arc::clone(store), Arc::clone(&retry)),
            ),
            senders: Stripes::new(1024),
            readers: Stripes::new(1024),
            fanout_turns: FanoutTurns::default(),
            deliveries: Stripes::new(1024),
            send_limit: SendLimiter::new(config.send_rate, config.send_burst),
            retry,
            bulkheads: Bulkheads::new(&config),
            in_flight: Arc::new(InFlight::new()),
            routes,
            known_dms: KnownDms::new(KNOWN_DMS_CAP),
            unread_counts: UnreadCounts::new(UNREAD_COUNTS_CAP),
            backends,
            config,
        };
        MessageService {
            core: Arc::new(core),
        }
    }

    /// The backends (gateways in the same process share the bus and presence).
    pub fn backends(&self) -> &Backends {
        &self.core.backends
    }

    /// Starts the worker that drains the fan-out retry queue (call once,
    /// inside a Tokio runtime); stop it before dropping the service.
    pub fn start_retry_worker(&self) -> RetryWorker {
        RetryWorker::spawn(&self.core)
    }

    /// Counts the retry worker's completed passes: wait on it for progress.
    pub fn retry_passes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.core.retry.passes.subscribe()
    }

    /// How many inboxes and conversation logs have their state kept.
    pub fn cached_logs(&self) -> CachedLogs {
        CachedLogs {
            inboxes: self.core.inboxes.cached_count(),
            conversations: self.core.conversations.cached_count(),
        }
    }

    /// The routes to the other replicas, when it serves under leases.
    pub fn routes(&self) -> Option<&Arc<Routes>> {
        self.core.routes.as_ref()
    }

    /// Appends a stored message to the inboxes of `members` served here,
    /// for the replica that owns its conversation (the Deliver call), on a
    /// task of its own; each member's outcome, in order.
    pub async fn deliver_for_peer(
        &self,
        message: proto::HistoryMessage,
        members: Vec<UserId>,
    ) -> Vec<Result<Seq>> {
        let count = members.len();
        let delivered = self
            .detached(|core| async move { Ok(core.deliver_for_peer(&message, &members).await) })
            .await;
        delivered.unwrap_or_else(|err| {
            let reason = err.to_string();
            (0..count)
                .map(|_| Err(storage::Error::Unavailable(reason.clone().into()).into()))
                .collect()
        })
    }

    /// How many fan-outs wait in the retry queue.
    pub async fn retry_queue_depth(&self) -> Result<usize> {
        self.core.retry_queue_depth().await
    }

    /// Runs a write to completion on its own task, whatever the caller does.
    async fn detached<T, F, Fut>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Core>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        tokio::spawn(work(Arc::clone(&self.core)))
            .await
            .map_err(|err| {
                Error::Internal(storage::Error::BadData(format!(
                    "a service task failed: {err}"
                )))
            })?
    }
}

impl Core {
    pub(crate) async fn visible_inbox_head(&self, user: &UserId) -> Result<Seq> {
        let store = &self.backends.store;
        self.inboxes
            .head(&inbox_key(user), || async {
                Ok(store.inbox_head(user).await?)
            })
            .await
    }

    pub(crate) async fn visible_conv_head(&self, conv: &ConvId) -> Result<Seq> {
        let store = &self.backends.store;
        self.conversations
            .head(&conv_key(conv), || async {
                Ok(store.last_conv_seq(conv).await?)
            })
            .await
    }
}

#[async_trait::async_trait]
impl crate::MessageApi for MessageService {
    async fn send(&self, sender: &UserId, request: proto::SendRequest) -> Result<proto::Ack> {
        // Before anything is stored: a rate-limited send stores nothing.
        self.core.send_limit.check(sender)?;
        let sender = sender.clone();
        // The slot is taken inside the detached task, so a send whose
        // caller left holds it until the send really ends.
        self.detached(|core| async move {
            let work = core.send_message(&sender, request);
            core.bulkheads.send.run(work).await
        })
        .await
    }

    async fn sync(&self, user: &UserId, since: Seq, limit: usize) -> Result<proto::SyncResult> {
        let work = self.core.sync_inbox(user, since, limit);
        self.core.bulkheads.sync.run(work).await
    }

    async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        let work = self.core.visible_inbox_head(user);
        self.core.bulkheads.sync.run(work).await
    }

    async fn history(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: storage::Page,
        limit: usize,
    ) -> Result<crate::HistoryPage> {
        let Some(background) = self.core.config.history_runtime.clone() else {
            let work = self.core.read_history(user, conv, page, limit);
            return self.core.bulkheads.history.run(work).await;
        };
        // The bulkhead's slot is taken here: what it turns away never queues
        // on the low-priority thread.
        let (core, user, conv) = (Arc::clone(&self.core), user.clone(), conv.clone());
        let read = async move { core.read_history(&user, &conv, page, limit).await };
        let work = async move {
            background.run(read).await.unwrap_or_else(|not_run| {
                let reason = format!("history was not read: {not_run:?}");
                Err(storage::Error::Unavailable(reason.into()).into())
            })
        };
        self.core.bulkheads.history.run(work).await
    }

    async fn conversations(&self, user: &UserId) -> Result<Vec<crate::Conversation>> {
        self.core.list_conversations(user).await
    }

    async fn conversation(&self, user: &UserId, conv: &ConvId) -> Result<crate::Conversation> {
        self.core.get_conversation(user, conv).await
    }

    async fn mark_read(&self, user: &UserId, conv: &ConvId, conv_seq: Seq) -> Result<Seq> {
        let (user, conv) = (user.clone(), conv.clone());
        self.detached(|core| async move { core.mark_read(&user, &conv, conv_seq).await })
            .await
    }

    async fn create_group(
        &self,
        creator: &UserId,
        members: Vec<UserId>,
        title: Option<String>,
    ) -> Result<crate::Conversation> {
        let creator = creator.clone();
        self.detached(|core| async move { core.new_group(&creator, members, title).await })
            .await
    }

    async fn add_members(
        &self,
        caller: &UserId,
        conv: &ConvId,
        members: Vec<UserId>,
    ) -> Result<crate::Conversation> {
        let (caller, conv) = (caller.clone(), conv.clone());
        self.detached(|core| async move { core.add_group_members(&caller, &conv, members).await })
            .await
    }

    async fn remove_member(
        &self,
        caller: &UserId,
        conv: &ConvId,
        member: &UserId,
    ) -> Result<crate::Conversation> {
        let (caller, conv, member) = (caller.clone(), conv.clone(), member.clone());
        self.detached(|core| async move { core.remove_group_member(&caller, &conv, &member).await })
            .await
    }

    async fn flush(&self) -> Result<()> {
        Ok(self.core.backends.store.flush().await?)
    }
}
