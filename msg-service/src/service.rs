//! The message service value: its backends, its limits, and its logs.

use std::sync::Arc;

use proto::{ConvId, Seq, UserId};
use storage::{InboxCache, MessageStore, NotifyBus, Presence, SeqAllocator};

use crate::Result;
use crate::logs::Logs;
use crate::stripes::Stripes;

/// Limits and tuning of the message service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Members of a group at most, the creator included.
    pub max_group_members: usize,
    /// Seqs handed out per persisted ceiling (seqsvr's step).
    pub seq_step: u64,
    /// Inbox appends of one message's fan-out in flight at once.
    pub fanout_concurrency: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_group_members: 500,
            seq_step: 10_000,
            fanout_concurrency: 64,
        }
    }
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

/// The message service: owns every inbox and conversation log (one writer each).
pub struct MessageService {
    pub(crate) backends: Backends,
    pub(crate) config: ServiceConfig,
    /// Inbox logs, keyed `u:<user>`.
    pub(crate) inboxes: Logs,
    /// Conversation logs, keyed `c:<conv_id>`.
    pub(crate) conversations: Logs,
    /// Serializes the sends of one sender, so a duplicate `client_msg_id`
    /// sent twice at once stores one message.
    pub(crate) senders: Stripes,
}

pub(crate) fn inbox_key(user: &UserId) -> String {
    format!("u:{user}")
}

pub(crate) fn conv_key(conv: &ConvId) -> String {
    format!("c:{conv}")
}

impl MessageService {
    /// A service over these backends.
    pub fn new(backends: Backends, config: ServiceConfig) -> Self {
        let seqs = SeqAllocator::new(Arc::clone(&backends.store), config.seq_step);
        MessageService {
            inboxes: Logs::new(seqs.clone()),
            conversations: Logs::new(seqs),
            senders: Stripes::new(1024),
            backends,
            config,
        }
    }

    /// The backends (gateways in the same process share the bus and presence).
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

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
        self.send_message(sender, request).await
    }

    async fn sync(&self, user: &UserId, since: Seq, limit: usize) -> Result<proto::SyncResult> {
        self.sync_inbox(user, since, limit).await
    }

    async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        self.visible_inbox_head(user).await
    }

    async fn history(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: storage::Page,
        limit: usize,
    ) -> Result<crate::HistoryPage> {
        self.read_history(user, conv, page, limit).await
    }

    async fn conversations(&self, user: &UserId) -> Result<Vec<crate::Conversation>> {
        self.list_conversations(user).await
    }

    async fn conversation(&self, user: &UserId, conv: &ConvId) -> Result<crate::Conversation> {
        self.get_conversation(user, conv).await
    }

    async fn create_group(
        &self,
        creator: &UserId,
        members: Vec<UserId>,
        title: Option<String>,
    ) -> Result<crate::Conversation> {
        self.new_group(creator, members, title).await
    }

    async fn add_members(
        &self,
        caller: &UserId,
        conv: &ConvId,
        members: Vec<UserId>,
    ) -> Result<crate::Conversation> {
        self.add_group_members(caller, conv, members).await
    }

    async fn remove_member(
        &self,
        caller: &UserId,
        conv: &ConvId,
        member: &UserId,
    ) -> Result<crate::Conversation> {
        self.remove_group_member(caller, conv, member).await
    }

    async fn flush(&self) -> Result<()> {
        Ok(self.backends.store.flush().await?)
    }
}
