//! `TestService`: a real message service over the embedded store in a fresh
//! temporary data dir, with in-process cache, bus and presence, and one typed
//! helper per call.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, bail};
use msg_service::{
    Backends, Conversation, HistoryPage, MessageApi, MessageService, Result, ServiceConfig,
};
use proto::{Ack, ConvId, Entry, SendRequest, Seq, SyncResult, UserId};
use storage::{
    Durability, EmbeddedStore, InProcessBus, InProcessCache, InProcessPresence, InboxCache,
    MessageStore, Page, Presence,
};
use tempfile::TempDir;

/// A user id for tests; panics on an invalid name (a bug in the test).
pub fn user(name: &str) -> UserId {
    UserId::parse(name).expect("a valid user id in a test")
}

/// Several users `{prefix}0`, `{prefix}1`, ...
pub fn users(prefix: &str, count: usize) -> Vec<UserId> {
    (0..count).map(|i| user(&format!("{prefix}{i}"))).collect()
}

/// The direct conversation of two users.
pub fn dm(a: &UserId, b: &UserId) -> ConvId {
    ConvId::dm(a, b).expect("two distinct users")
}

/// Where a test sends a message: a peer (`to`) or a conversation (`conv_id`).
pub trait Dest {
    /// The `(conv_id, to)` fields of a send frame.
    fn fields(&self) -> (Option<&str>, Option<&str>);
}

impl Dest for UserId {
    fn fields(&self) -> (Option<&str>, Option<&str>) {
        (None, Some(self.as_str()))
    }
}

impl Dest for ConvId {
    fn fields(&self) -> (Option<&str>, Option<&str>) {
        (Some(self.as_str()), None)
    }
}

/// Puts a test double around the embedded store (to inject faults).
pub type WrapStore = Arc<dyn Fn(EmbeddedStore) -> Arc<dyn MessageStore> + Send + Sync>;

/// Puts a test double around the in-process presence.
pub type WrapPresence = Arc<dyn Fn(Arc<InProcessPresence>) -> Arc<dyn Presence> + Send + Sync>;

/// What a test can change about the service it starts.
#[derive(Clone)]
pub struct Options {
    /// The service's limits.
    pub config: ServiceConfig,
    /// Entries cached per inbox (small values make syncs read the store).
    pub cache_per_inbox: usize,
    /// Wraps the store the service runs on; `None`: the embedded store itself.
    pub wrap_store: Option<WrapStore>,
    /// The inbox cache (a Redis one, say); `None`: an in-process cache of
    /// `cache_per_inbox` entries per inbox.
    pub cache: Option<Arc<dyn InboxCache>>,
    /// Wraps the presence notifies are routed with; `None`: it as is.
    pub wrap_presence: Option<WrapPresence>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: ServiceConfig::default(),
            cache_per_inbox: 200,
            wrap_store: None,
            cache: None,
            wrap_presence: None,
        }
    }
}

/// A running message service and the data dir it owns.
pub struct TestService {
    /// The service (shared with spawned tasks).
    pub service: Arc<MessageService>,
    /// The bus it publishes notifies on.
    pub bus: Arc<InProcessBus>,
    /// The presence it routes notifies with.
    pub presence: Arc<InProcessPresence>,
    options: Options,
    // Last field: dropped after the service, so the store closes first.
    dir: TempDir,
}

impl TestService {
    /// A service with the default config on a fresh data dir.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(Options::default())
    }

    /// A service with the given config on a fresh data dir.
    pub fn with_config(config: ServiceConfig) -> anyhow::Result<Self> {
        Self::start_with(Options {
            config,
            ..Options::default()
        })
    }

    /// A service with these options on a fresh data dir.
    pub fn start_with(options: Options) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temp data dir")?;
        Self::open(dir, options)
    }

    fn open(dir: TempDir, options: Options) -> anyhow::Result<Self> {
        let store =
            EmbeddedStore::open(dir.path(), Durability::Fsync).context("opening the store")?;
        let bus = Arc::new(InProcessBus::default());
        let presence = Arc::new(InProcessPresence::default());
        let backends = Backends {
            store: match &options.wrap_store {
                Some(wrap) => wrap(store),
                None => Arc::new(store),
            },
            cache: match &options.cache {
                Some(cache) => Arc::clone(cache),
                None => Arc::new(InProcessCache::new(options.cache_per_inbox, 100_000)),
            },
            bus: Arc::clone(&bus) as _,
            presence: match &options.wrap_presence {
                Some(wrap) => wrap(Arc::clone(&presence)),
                None => Arc::clone(&presence) as _,
            },
        };
        let service = Arc::new(MessageService::new(backends, options.config.clone()));
        Ok(TestService {
            service,
            bus,
            presence,
            options,
            dir,
        })
    }

    /// Simulates a crash and a restart: drops the service and its store
    /// without `flush`, then opens a new service on the same data dir.
    pub fn restart(self) -> anyhow::Result<Self> {
        let TestService {
            service,
            options,
            dir,
            ..
        } = self;
        if Arc::into_inner(service).is_none() {
            bail!("a task still holds the service; it cannot be restarted");
        }
        Self::open(dir, options)
    }

    /// A send from `from` to a peer or a conversation, validated as the gateway does.
    pub async fn send(
        &self,
        from: &UserId,
        dest: &impl Dest,
        client_msg_id: &str,
        body: &str,
    ) -> Result<Ack> {
        send(&self.service, from, dest, client_msg_id, body).await
    }

    /// One sync call.
    pub async fn sync(&self, user: &UserId, since: Seq, limit: usize) -> Result<SyncResult> {
        self.service.sync(user, since, limit).await
    }

    /// Every entry of an inbox after `since`, syncing page by page.
    pub async fn sync_all(&self, user: &UserId, since: Seq) -> Result<Vec<Entry>> {
        drain(&self.service, user, since, 100).await
    }

    /// The visible head of an inbox.
    pub async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        self.service.inbox_head(user).await
    }

    /// One page of history.
    pub async fn history(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.service.history(user, conv, page, limit).await
    }

    /// A group of `creator` and `members`.
    pub async fn create_group(
        &self,
        creator: &UserId,
        members: &[UserId],
        title: Option<&str>,
    ) -> Result<Conversation> {
        let title = title.map(str::to_owned);
        self.service
            .create_group(creator, members.to_vec(), title)
            .await
    }

    /// Adds members to a conversation.
    pub async fn add_members(
        &self,
        caller: &UserId,
        conv: &ConvId,
        members: &[UserId],
    ) -> Result<Conversation> {
        self.service
            .add_members(caller, conv, members.to_vec())
            .await
    }

    /// Removes a member from a conversation.
    pub async fn remove_member(
        &self,
        caller: &UserId,
        conv: &ConvId,
        member: &UserId,
    ) -> Result<Conversation> {
        self.service.remove_member(caller, conv, member).await
    }

    /// One conversation as `user` sees it.
    pub async fn conversation(&self, user: &UserId, conv: &ConvId) -> Result<Conversation> {
        self.service.conversation(user, conv).await
    }

    /// The conversations of `user`.
    pub async fn conversations(&self, user: &UserId) -> Result<Vec<Conversation>> {
        self.service.conversations(user).await
    }

    /// The whole history of a conversation, oldest first, paging forward.
    pub async fn full_history(
        &self,
        user: &UserId,
        conv: &ConvId,
    ) -> Result<Vec<proto::HistoryMessage>> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.history(user, conv, Page::After(after), 50).await?;
            all.extend(page.messages);
            match page.next {
                Some(next) => after = next,
                None => return Ok(all),
            }
        }
    }
}

/// A send through any service (for spawned tasks that hold an `Arc`).
pub async fn send(
    service: &MessageService,
    from: &UserId,
    dest: &impl Dest,
    client_msg_id: &str,
    body: &str,
) -> Result<Ack> {
    let (conv_id, to) = dest.fields();
    let request = SendRequest::new(
        Some(client_msg_id),
        conv_id,
        to,
        None,
        Some(body.to_owned()),
    )?;
    service.send(from, request).await
}

/// Syncs from `since` with `limit` until `more` is false; returns every entry.
pub async fn drain(
    service: &MessageService,
    user: &UserId,
    since: Seq,
    limit: usize,
) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut since = since;
    loop {
        let page = service.sync(user, since, limit).await?;
        if let Some(last) = page.entries.last() {
            since = last.seq;
        }
        entries.extend(page.entries);
        if !page.more {
            return Ok(entries);
        }
    }
}

/// The seqs of some entries.
pub fn seqs(entries: &[Entry]) -> Vec<Seq> {
    entries.iter().map(|e| e.seq).collect()
}

/// The bodies of some entries, in order.
pub fn bodies(entries: &[Entry]) -> Vec<&str> {
    entries.iter().map(|e| e.message.body.as_str()).collect()
}

/// How many times each `(from, client_msg_id)` occurs in some entries.
pub fn count_by_sender_id(entries: &[Entry]) -> HashMap<(UserId, String), usize> {
    let mut counts = HashMap::new();
    for entry in entries {
        let key = (
            entry.message.from.clone(),
            entry.message.client_msg_id.to_string(),
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

/// Whether a sequence strictly increases.
pub fn strictly_increasing(seqs: &[Seq]) -> bool {
    seqs.windows(2).all(|w| w[0] < w[1])
}
