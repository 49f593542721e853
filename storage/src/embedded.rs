//! The embedded durable store on fjall: one keyspace per table of the
//! storage layout, keys ordered so that an inbox or a conversation range is
//! one scan, and every write made durable by the shared group commit.

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use proto::{ClientMsgId, ConvId, Entry, HistoryMessage, Seq, UserId};

use crate::background_priority;
use crate::clock::now_ms;
use crate::group_commit::GroupCommit;
use crate::model::{ConversationMeta, LogId, MessageRef, Page, RetryItem, RetryKey, WriteTicket};
use crate::writer::Writer;
use crate::{Error, MessageStore, Result};

mod fences;
mod leases;

/// Whether a write waits for fsync before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every write is fsynced (by a shared group commit) before it returns.
    Fsync,
    /// Writes reach the OS, not the disk: survives a process crash, not a
    /// power loss. Only for benchmarks' baselines.
    OsBuffers,
}

/// The tables, as fjall keyspaces.
struct Tables {
    db: Database,
    conversations: Keyspace,
    members: Keyspace,
    user_convs: Keyspace,
    messages: Keyspace,
    inbox: Keyspace,
    inbox_index: Keyspace,
    ceilings: Keyspace,
    dedup: Keyspace,
    /// The fan-out retry queue, by [`retry_key`].
    retries: Keyspace,
    /// The retry worker's checkpoint (one value under [`CHECKPOINT`]) and
    /// the fan-out watermark (under [`WATERMARK`]).
    retry_checkpoint: Keyspace,
    /// Fan-out intents, by [`retry_key`]; those below the watermark are
    /// removed when it is saved.
    intents: Keyspace,
    /// Serializes ceiling compare-and-sets. A std mutex: it is only taken on
    /// a blocking thread, for one read and one write.
    ceiling_lock: std::sync::Mutex<()>,
    /// Fences of logs, by `fences::fence_key`.
    fences: Keyspace,
    /// Shard owners and epochs, by shard (two bytes, big-endian).
    shard_owners: Keyspace,
    /// Read markers: `conv_id \0 user` -> conv_seq, big-endian.
    read_markers: Keyspace,
    /// Instance leases, and the lock of every lease compare-and-set.
    leases: std::sync::Mutex<leases::LeaseState>,
}

/// The embedded store under a data directory.
#[derive(Clone)]
pub struct EmbeddedStore {
    tables: Arc<Tables>,
    commit: Arc<GroupCommit>,
    writer: Arc<Writer<Tables>>,
    durability: Durability,
    /// The engine's compaction threads, run at a lower CPU priority.
    background_threads: Arc<[i32]>,
    /// The engine's flush thread, at the caller's CPU priority.
    flush_threads: Arc<[i32]>,
}

/// The name fjall gives its worker threads that compact. Its flush worker
/// (`fjall::FLUSH_WORKER_THREAD_NAME`, one of several) keeps the opener's
/// priority: see `background_priority`.
const ENGINE_WORKER_THREAD: &str = fjall::WORKER_THREAD_NAME;

/// The name of fjall's flush worker.
const ENGINE_FLUSH_THREAD: &str = fjall::FLUSH_WORKER_THREAD_NAME;

/// Separates a key's parts; ids never contain a NUL byte.
const SEP: u8 = 0;

fn key(prefix: &str, suffix: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 1 + suffix.len());
    key.extend_from_slice(prefix.as_bytes());
    key.push(SEP);
    key.extend_from_slice(suffix);
    key
}

fn seq_key(prefix: &str, seq: Seq) -> Vec<u8> {
    key(prefix, &seq.to_be_bytes())
}

/// The keys of `prefix` with seqs in `seqs`.
fn seq_range(prefix: &str, seqs: RangeInclusive<Seq>) -> RangeInclusive<Vec<u8>> {
    seq_key(prefix, *seqs.start())..=seq_key(prefix, *seqs.end())
}

fn seq_of(key: &[u8]) -> Result<Seq> {
    let tail = key
        .len()
        .checked_sub(8)
        .and_then(|start| key.get(start..))
        .ok_or_else(|| Error::BadData("a seq key is shorter than 8 bytes".into()))?;
    let bytes: [u8; 8] = tail
        .try_into()
        .map_err(|_| Error::BadData("a seq key has no 8-byte tail".into()))?;
    Ok(Seq::from_be_bytes(bytes))
}

fn id_after_prefix<T: std::str::FromStr>(key: &[u8], prefix_len: usize) -> Result<T> {
    let tail = key.get(prefix_len + 1..).unwrap_or_default();
    std::str::from_utf8(tail)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::BadData("an id in a key is not valid".into()))
}

impl EmbeddedStore {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self> {
        // This store's engine workers are the ones that are new after it opens.
        let known = background_priority::threads_named(ENGINE_WORKER_THREAD);
        let known_flushers = background_priority::threads_named(ENGINE_FLUSH_THREAD);
        let db = Database::builder(dir).open()?;
        let background_threads = background_priority::lower_new_threads_named(
            ENGINE_WORKER_THREAD,
            &known,
            background_priority::BACKGROUND_NICENESS,
        );
        let flush_threads =
            background_priority::new_threads_named(ENGINE_FLUSH_THREAD, &known_flushers);
        let open = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let tables = Tables {
            conversations: open("conversations")?,
            members: open("members")?,
            user_convs: open("user_convs")?,
            messages: open("messages")?,
            inbox: open("inbox")?,
            inbox_index: open("inbox_index")?,
            ceilings: open("seq_ceilings")?,
            dedup: open("dedup")?,
            retries: open("fanout_retries")?,
            retry_checkpoint: open("fanout_retry_checkpoint")?,
            intents: open("fanout_intents")?,
            ceiling_lock: std::sync::Mutex::new(()),
            shard_owners: open("shard_owners")?,
            read_markers: open("read_markers")?,
            fences: open("log_fences")?,
            leases: std::sync::Mutex::default(),
            db: db.clone(),
        };
        let tables = Arc::new(tables);
        let commit = Arc::new(GroupCommit::start(db.clone()).map_err(Error::unavailable)?);
        let writer = Writer::start(db, Arc::clone(&tables), Arc::clone(&commit))
            .map_err(Error::unavailable)?;
        Ok(EmbeddedStore {
            tables,
            commit,
            writer: Arc::new(writer),
            durability,
            background_threads: background_threads.into(),
            flush_threads: flush_threads.into(),
        })
    }

    /// The ids of the engine's compaction threads, which run at a lower
    /// CPU priority than the caller's (with one worker, the one that
    /// flushes too).
    pub fn background_threads(&self) -> &[i32] {
        &self.background_threads
    }

    /// The ids of the engine's flush thread (none with one worker), which
    /// keeps the caller's CPU priority.
    pub fn flush_threads(&self) -> &[i32] {
        &self.flush_threads
    }

    /// How many group fsyncs the store has run since it was opened.
    pub fn fsync_count(&self) -> u64 {
        self.commit.fsyncs()
    }

    /// Runs a batch of writes on the writer thread (see `writer`); returns
    /// its ticket once it is in the journal's OS buffer and the memtable.
    async fn write_logged<F>(&self, fill: F) -> Result<WriteTicket>
    where
        F: FnOnce(&Tables, &mut fjall::OwnedWriteBatch) + Send + 'static,
    {
        Ok(WriteTicket(self.writer.write(Box::new(fill)).await?))
    }

    /// Runs a batch of writes and waits until it is durable.
    async fn write<F>(&self, fill: F) -> Result<()>
    where
        F: FnOnce(&Tables, &mut fjall::OwnedWriteBatch) + Send + 'static,
    {
        let ticket = self.write_logged(fill).await?;
        self.durable(ticket).await
    }

    /// Runs a read on the calling task, for the same reason as writes: point
    /// reads and short ranges are served from the memtable and block cache.
    async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tables) -> Result<T> + Send + 'static,
    {
        read(&self.tables)
    }
}

async fn blocking<T, F>(work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(Error::unavailable)?
}

fn last_seq(keyspace: &Keyspace, prefix: &str) -> Result<Seq> {
    match keyspace.range(seq_range(prefix, 0..=Seq::MAX)).next_back() {
        Some(guard) => seq_of(&guard.key()?),
        None => Ok(0),
    }
}

fn decode_values<T: serde::de::DeserializeOwned>(
    iter: impl Iterator<Item = fjall::Guard>,
    limit: usize,
) -> Result<Vec<T>> {
    iter.take(limit)
        .map(|guard| Ok(serde_json::from_slice(&guard.value()?)?))
        .collect()
}

fn decode_optional<T: serde::de::DeserializeOwned>(
    value: Option<fjall::UserValue>,
) -> Result<Option<T>> {
    value.map(|v| Ok(serde_json::from_slice(&v)?)).transpose()
}

/// `user \0 conv_id \0 conv_seq`: where a message landed in an inbox.
fn index_key(user: &UserId, conv: &ConvId, conv_seq: Seq) -> Vec<u8> {
    let mut k = key(user.as_str(), conv.as_str().as_bytes());
    k.push(SEP);
    k.extend_from_slice(&conv_seq.to_be_bytes());
    k
}

/// The checkpoint's one key.
const CHECKPOINT: &str = "fanout";
/// The fan-out watermark's key, beside the checkpoint.
const WATERMARK: &str = "fanout_watermark";

/// The saved fan-out watermark (0 when none).
fn saved_watermark(t: &Tables) -> Result<Option<u64>> {
    decode_optional::<u64>(t.retry_checkpoint.get(WATERMARK)?)
}

/// The write time an intent's key begins with.
fn intent_time(key: &[u8]) -> Result<u64> {
    key.get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| Error::BadData("an intent key shorter than its time".into()))
}

/// `enqueued_at \0 conv_id \0 conv_seq`, big-endian numbers: byte order is
/// the order of [`RetryKey`].
fn retry_key(at: &RetryKey) -> Vec<u8> {
    let mut k = at.enqueued_at.to_be_bytes().to_vec();
    k.push(SEP);
    k.extend_from_slice(at.conv_id.as_str().as_bytes());
    k.push(SEP);
    k.extend_from_slice(&at.conv_seq.to_be_bytes());
    k
}

/// Replaces the value at `k` if a value is there: a row removed meanwhile
/// (by a fence) is not brought back.
fn overwrite(keyspace: &Keyspace, batch: &mut fjall::OwnedWriteBatch, k: Vec<u8>, value: Vec<u8>) {
    if keyspace.contains_key(&k).unwrap_or(false) {
        batch.insert(keyspace, k, value);
    }
}

/// The smallest key above `key` in byte order: where a scan after it starts.
fn successor(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

fn ids_with_prefix<T: std::str::FromStr>(keyspace: &Keyspace, prefix: &str) -> Result<Vec<T>> {
    keyspace
        .prefix(key(prefix, b""))
        .map(|guard| id_after_prefix(&guard.key()?, prefix.len()))
        .collect()
}

#[async_trait]
impl MessageStore for EmbeddedStore {
    async fn put_conversation(&self, meta: &ConversationMeta) -> Result<()> {
        let (id, value) = (meta.conv_id.to_string(), serde_json::to_vec(meta)?);
        self.write(move |t, b| b.insert(&t.conversations, id, value))
            .await
    }

    async fn conversation(&self, conv: &ConvId) -> Result<Option<ConversationMeta>> {
        let id = conv.to_string();
        self.read(move |t| decode_optional(t.conversations.get(id)?))
            .await
    }

    async fn add_members(&self, conv: &ConvId, users: &[UserId]) -> Result<()> {
        let (conv, users) = (conv.to_string(), users.to_vec());
        self.write(move |t, b| {
            for user in &users {
                b.insert(&t.members, key(&conv, user.as_str().as_bytes()), b"");
                b.insert(&t.user_convs, key(user.as_str(), conv.as_bytes()), b"");
            }
        })
        .await
    }

    async fn remove_member(&self, conv: &ConvId, user: &UserId) -> Result<()> {
        let (conv, user) = (conv.to_string(), user.to_string());
        self.write(move |t, b| {
            b.remove(&t.members, key(&conv, user.as_bytes()));
            b.remove(&t.user_convs, key(&user, conv.as_bytes()));
        })
        .await
    }

    async fn members(&self, conv: &ConvId) -> Result<Vec<UserId>> {
        let conv = conv.to_string();
        self.read(move |t| ids_with_prefix(&t.members, &conv)).await
    }

    async fn user_conversations(&self, user: &UserId) -> Result<Vec<ConvId>> {
        let user = user.to_string();
        self.read(move |t| ids_with_prefix(&t.user_convs, &user))
            .await
    }

    async fn append_message(
        &self,
        msg: &HistoryMessage,
        intent: &RetryItem,
    ) -> Result<WriteTicket> {
        let k = seq_key(msg.conv_id.as_str(), msg.conv_seq);
        let value = serde_json::to_vec(msg)?;
        let dedup_key = key(msg.from.as_str(), msg.client_msg_id.as_str().as_bytes());
        let location = MessageRef {
            conv_id: msg.conv_id.clone(),
            conv_seq: msg.conv_seq,
            members: intent.members.clone(),
        };
        let dedup_value = serde_json::to_vec(&location)?;
        let (intent_key, intent_value) = (retry_key(&intent.key), serde_json::to_vec(intent)?);
        let (fence, conv_seq) = (
            fences::fence_key(&LogId::Conversation(msg.conv_id.clone())),
            msg.conv_seq,
        );
        // One batch: all three or none. The dedup record is kept without
        // expiry here: the protocol asks for at least 24 hours.
        self.write_logged(move |t, b| {
            if fences::fenced(t, &fence, conv_seq) {
                return;
            }
            b.insert(&t.messages, k, value);
            b.insert(&t.dedup, dedup_key, dedup_value);
            b.insert(&t.intents, intent_key, intent_value);
        })
        .await
    }

    async fn message(&self, conv: &ConvId, conv_seq: Seq) -> Result<Option<HistoryMessage>> {
        let k = seq_key(conv.as_str(), conv_seq);
        self.read(move |t| decode_optional(t.messages.get(k)?))
            .await
    }

    async fn messages(
        &self,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<Vec<HistoryMessage>> {
        let conv = conv.to_string();
        self.read(move |t| match page {
            Page::Before(0) => Ok(Vec::new()),
            Page::Before(n) => {
                decode_values(t.messages.range(seq_range(&conv, 0..=n - 1)).rev(), limit)
            }
            Page::After(Seq::MAX) => Ok(Vec::new()),
            Page::After(n) => {
                decode_values(t.messages.range(seq_range(&conv, n + 1..=Seq::MAX)), limit)
            }
        })
        .await
    }

    async fn recall_message(&self, conv: &ConvId, conv_seq: Seq) -> Result<()> {
        let Some(message) = self.message(conv, conv_seq).await? else {
            return Ok(());
        };
        let k = seq_key(conv.as_str(), conv_seq);
        let value = serde_json::to_vec(&message.recalled())?;
        self.write(move |t, b| overwrite(&t.messages, b, k, value))
            .await
    }

    async fn last_conv_seq(&self, conv: &ConvId) -> Result<Seq> {
        let conv = conv.to_string();
        self.read(move |t| last_seq(&t.messages, &conv)).await
    }

    async fn append_inbox(&self, user: &UserId, entry: &Entry) -> Result<WriteTicket> {
        let k = seq_key(user.as_str(), entry.seq);
        let value = serde_json::to_vec(entry)?;
        let index_key = index_key(user, &entry.message.conv_id, entry.message.conv_seq);
        let (fence, at) = (fences::fence_key(&LogId::Inbox(user.clone())), entry.seq);
        let seq = entry.seq.to_be_bytes();
        self.write_logged(move |t, b| {
            if fences::fenced(t, &fence, at) {
                return;
            }
            b.insert(&t.inbox, k, value);
            b.insert(&t.inbox_index, index_key, seq);
        })
        .await
    }

    async fn inbox_seq_of(
        &self,
        user: &UserId,
        conv: &ConvId,
        conv_seq: Seq,
    ) -> Result<Option<Seq>> {
        let k = index_key(user, conv, conv_seq);
        let user = user.to_string();
        self.read(move |t| {
            let Some(seq) = t.inbox_index.get(k)?.map(|v| seq_of(&v)).transpose()? else {
                return Ok(None);
            };
            // Counts only while its entry is there (a fence removes entries).
            Ok(t.inbox.contains_key(seq_key(&user, seq))?.then_some(seq))
        })
        .await
    }

    async fn read_markers(&self, conv: &ConvId) -> Result<Vec<(UserId, Seq)>> {
        let conv = conv.to_string();
        self.read(move |t| {
            t.read_markers
                .prefix(key(&conv, b""))
                .map(|guard| {
                    let (k, v) = guard.into_inner()?;
                    let user = id_after_prefix(&k, conv.len())?;
                    Ok((user, seq_of(&v)?))
                })
                .collect()
        })
        .await
    }

    async fn read_marker(&self, conv: &ConvId, user: &UserId) -> Result<Seq> {
        let k = key(conv.as_str(), user.as_str().as_bytes());
        self.read(move |t| t.read_markers.get(k)?.map_or(Ok(0), |v| seq_of(&v)))
            .await
    }

    async fn raise_read_marker(&self, conv: &ConvId, user: &UserId, up_to: Seq) -> Result<()> {
        let k = key(conv.as_str(), user.as_str().as_bytes());
        // The writer runs one batch at a time: the look and the write
        // cannot interleave with another raise.
        self.write(move |t, b| {
            let current = t
                .read_markers
                .get(&k)
                .ok()
                .flatten()
                .and_then(|v| seq_of(&v).ok())
                .unwrap_or(0);
            if up_to > current {
                b.insert(&t.read_markers, k, up_to.to_be_bytes());
            }
        })
        .await
    }

    async fn recall_entry(&self, user: &UserId, seq: Seq) -> Result<()> {
        let k = seq_key(user.as_str(), seq);
        let read_key = k.clone();
        let found: Option<Entry> = self
            .read(move |t| decode_optional(t.inbox.get(read_key)?))
            .await?;
        let Some(mut entry) = found else {
            return Ok(());
        };
        entry.message = entry.message.recalled();
        let value = serde_json::to_vec(&entry)?;
        self.write(move |t, b| overwrite(&t.inbox, b, k, value))
            .await
    }

    async fn read_inbox(&self, user: &UserId, after: Seq, limit: usize) -> Result<Vec<Entry>> {
        if after == Seq::MAX {
            return Ok(Vec::new());
        }
        let user = user.to_string();
        self.read(move |t| {
            decode_values(t.inbox.range(seq_range(&user, after + 1..=Seq::MAX)), limit)
        })
        .await
    }

    async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        let user = user.to_string();
        self.read(move |t| last_seq(&t.inbox, &user)).await
    }

    async fn durable(&self, ticket: WriteTicket) -> Result<()> {
        match self.durability {
            _ if ticket == WriteTicket::default() => Ok(()),
            Durability::Fsync => self.commit.wait(ticket.0).await,
            Durability::OsBuffers => Ok(()),
        }
    }

    async fn dedup_get(&self, sender: &UserId, id: &ClientMsgId) -> Result<Option<MessageRef>> {
        let k = key(sender.as_str(), id.as_str().as_bytes());
        self.read(move |t| {
            let Some(found) = decode_optional::<MessageRef>(t.dedup.get(k)?)? else {
                return Ok(None);
            };
            // Counts only while its message is there (a fence removes messages).
            let message = seq_key(found.conv_id.as_str(), found.conv_seq);
            Ok(t.messages.contains_key(message)?.then_some(found))
        })
        .await
    }

    async fn load_ceiling(&self, name: &str) -> Result<Seq> {
        let name = name.to_owned();
        self.read(move |t| match t.ceilings.get(name)? {
            Some(value) => seq_of(&value),
            None => Ok(0),
        })
        .await
    }

    async fn swap_ceiling(&self, name: &str, expected: Seq, max_seq: Seq) -> Result<()> {
        let name = name.to_owned();
        // A ceiling must be on disk before seqs under it are handed out, even
        // in the benchmark baseline: it is what keeps seqs from going back.
        let tables = Arc::clone(&self.tables);
        let commit = Arc::clone(&self.commit);
        let ticket = blocking(move || {
            // The compare and the set under one lock: fjall has no
            // conditional write, and two swaps from the same value must not
            // both succeed.
            let _guard = tables
                .ceiling_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let current = match tables.ceilings.get(&name)? {
                Some(value) => seq_of(&value)?,
                None => 0,
            };
            if current != expected {
                return Err(Error::Conflict(format!(
                    "ceiling of {name} is {current}, not {expected}"
                )));
            }
            tables.ceilings.insert(name, max_seq.to_be_bytes())?;
            Ok(commit.ticket())
        })
        .await?;
        self.commit.wait(ticket).await
    }

    async fn fence_log(&self, log: &LogId, writer: &str, after: Seq, up_to: Seq) -> Result<()> {
        self.fence(log, writer, after, up_to).await
    }

    async fn conversation_ids(&self, after: Option<&ConvId>, limit: usize) -> Result<Vec<ConvId>> {
        let start = after.map_or_else(Vec::new, |c| successor(c.as_str().as_bytes().to_vec()));
        // Off the async workers: the audit walks every conversation.
        let tables = Arc::clone(&self.tables);
        blocking(move || {
            tables
                .conversations
                .range(start..)
                .take(limit)
                .map(|guard| {
                    let k = guard.key()?;
                    std::str::from_utf8(&k)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| Error::BadData("a conversation key is not an id".into()))
                })
                .collect()
        })
        .await
    }

    async fn enqueue_retry(&self, item: &RetryItem) -> Result<()> {
        let (k, value) = (retry_key(&item.key), serde_json::to_vec(item)?);
        self.write(move |t, b| b.insert(&t.retries, k, value)).await
    }

    async fn retry_items(&self, after: Option<&RetryKey>, limit: usize) -> Result<Vec<RetryItem>> {
        let start = after.map_or_else(Vec::new, |k| successor(retry_key(k)));
        self.read(move |t| decode_values(t.retries.range(start..), limit))
            .await
    }

    async fn remove_retry(&self, key: &RetryKey) -> Result<()> {
        let k = retry_key(key);
        self.write(move |t, b| b.remove(&t.retries, k)).await
    }

    async fn retry_checkpoint(&self) -> Result<Option<RetryKey>> {
        self.read(|t| {
            Ok(decode_optional::<Option<RetryKey>>(t.retry_checkpoint.get(CHECKPOINT)?)?.flatten())
        })
        .await
    }

    async fn save_retry_checkpoint(&self, at: Option<&RetryKey>) -> Result<()> {
        let value = serde_json::to_vec(&at)?;
        self.write(move |t, b| b.insert(&t.retry_checkpoint, CHECKPOINT, value))
            .await
    }

    async fn fanout_intents(
        &self,
        from: u64,
        to: u64,
        after: Option<&RetryKey>,
        limit: usize,
    ) -> Result<Vec<RetryItem>> {
        let start = match after {
            Some(k) if k.enqueued_at >= from => successor(retry_key(k)),
            _ => from.to_be_bytes().to_vec(),
        };
        let end = to.to_be_bytes().to_vec();
        if start >= end {
            return Ok(Vec::new());
        }
        self.read(move |t| decode_values(t.intents.range(start..end), limit))
            .await
    }

    async fn fanout_watermark(&self) -> Result<u64> {
        self.read(|t| match saved_watermark(t)? {
            Some(at) => Ok(at),
            // None saved: from the oldest intent kept (none: nothing to do).
            None => match t.intents.first_key_value() {
                Some(guard) => intent_time(&guard.key()?),
                None => Ok(now_ms()),
            },
        })
        .await
    }

    async fn save_fanout_watermark(&self, at: u64) -> Result<()> {
        let value = serde_json::to_vec(&at)?;
        // On the writer thread, so no intent is written between the range
        // read and the batch. The range starts at the previous watermark:
        // what lies below was removed before (no walk over old tombstones).
        self.write(move |t, b| {
            // Unreadable: keep every intent (recovery only reads more).
            if let Ok(previous) = saved_watermark(t).map(Option::unwrap_or_default)
                && previous < at
            {
                let below = previous.to_be_bytes().to_vec()..at.to_be_bytes().to_vec();
                for guard in t.intents.range(below) {
                    if let Ok(k) = guard.key() {
                        b.remove(&t.intents, k);
                    }
                }
            }
            b.insert(&t.retry_checkpoint, WATERMARK, value);
        })
        .await
    }

    async fn flush(&self) -> Result<()> {
        let tables = Arc::clone(&self.tables);
        blocking(move || Ok(tables.db.persist(PersistMode::SyncAll)?)).await
    }
}
