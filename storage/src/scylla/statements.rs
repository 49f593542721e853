//! Every statement the store runs, prepared once at start-up with its
//! settings: reads and plain writes are idempotent (the driver may retry
//! them on another node after a timeout), LWTs are not, the ceiling read
//! runs at the serial level so it sees every committed LWT.
//!
//! Appends are not batched: an append writes the row that finds it again
//! (the dedup record, the inbox index) and its bucket's entry, then its
//! row, each a plain write, and reads trust a pointer only once its row is
//! found (see `appends`, which says why a logged batch stalls while a node
//! is dead but not yet convicted). Membership changes are still LOGGED
//! batches (both directions all-or-nothing; rows in different partitions,
//! which only the batch log makes atomic). A body over 2 KiB is written
//! alone first by `PUT_BODY` (see `bodies`).

use ::scylla::client::session::Session;
use ::scylla::frame::types::{Consistency, SerialConsistency};
use ::scylla::statement::batch::{Batch, BatchType};
use ::scylla::statement::prepared::PreparedStatement;

use super::config::{ConsistencyLevel, Keyspace};
use super::errors;
use super::schema::in_keyspace;
use crate::Result;

const MESSAGE_COLUMNS: &str =
    "conv_id, conv_seq, sender, client_msg_id, kind, body, ts, ref_seq, recalled";
const INBOX_COLUMNS: &str =
    "seq, conv_id, conv_seq, sender, client_msg_id, kind, body, ts, ref_seq, recalled";

pub(crate) const PUT_CONVERSATION: &str =
    "INSERT INTO {ks}.conversations (conv_id, kind, title, created_at) VALUES (?, ?, ?, ?)";
pub(crate) const CONVERSATION: &str =
    "SELECT conv_id, kind, title, created_at FROM {ks}.conversations WHERE conv_id = ?";
pub(crate) const ADD_MEMBER: &str = "INSERT INTO {ks}.members (conv_id, user_id) VALUES (?, ?)";
pub(crate) const ADD_USER_CONV: &str =
    "INSERT INTO {ks}.user_convs (user_id, conv_id) VALUES (?, ?)";
pub(crate) const REMOVE_MEMBER: &str = "DELETE FROM {ks}.members WHERE conv_id = ? AND user_id = ?";
pub(crate) const REMOVE_USER_CONV: &str =
    "DELETE FROM {ks}.user_convs WHERE user_id = ? AND conv_id = ?";
pub(crate) const MEMBERS: &str = "SELECT user_id FROM {ks}.members WHERE conv_id = ?";
pub(crate) const USER_CONVS: &str = "SELECT conv_id FROM {ks}.user_convs WHERE user_id = ?";

pub(crate) const INSERT_MESSAGE: &str = "INSERT INTO {ks}.messages \
     (conv_id, bucket, conv_seq, sender, client_msg_id, kind, body, ts, ref_seq, recalled) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub(crate) const INSERT_MESSAGE_BUCKET: &str =
    "INSERT INTO {ks}.message_buckets (conv_id, bucket) VALUES (?, ?)";
pub(crate) const INSERT_DEDUP: &str = "INSERT INTO {ks}.dedup \
     (user_id, client_msg_id, conv_id, conv_seq, members) VALUES (?, ?, ?, ?, ?) USING TTL ?";
pub(crate) const MESSAGE: &str =
    "SELECT {message} FROM {ks}.messages WHERE conv_id = ? AND bucket = ? AND conv_seq = ?";
pub(crate) const MESSAGE_STORED: &str =
    "SELECT conv_seq FROM {ks}.messages WHERE conv_id = ? AND bucket = ? AND conv_seq = ?";
pub(crate) const MESSAGES_BEFORE: &str = "SELECT {message} FROM {ks}.messages \
     WHERE conv_id = ? AND bucket = ? AND conv_seq < ? LIMIT ?";
pub(crate) const MESSAGES_AFTER: &str = "SELECT {message} FROM {ks}.messages \
     WHERE conv_id = ? AND bucket = ? AND conv_seq > ? ORDER BY conv_seq ASC LIMIT ?";
pub(crate) const NEWEST_MESSAGE: &str =
    "SELECT conv_seq FROM {ks}.messages WHERE conv_id = ? AND bucket = ? LIMIT 1";
pub(crate) const MESSAGE_BUCKETS_DOWN: &str =
    "SELECT bucket FROM {ks}.message_buckets WHERE conv_id = ? AND bucket <= ? LIMIT ?";
pub(crate) const MESSAGE_BUCKETS_UP: &str = "SELECT bucket FROM {ks}.message_buckets \
     WHERE conv_id = ? AND bucket >= ? ORDER BY bucket ASC LIMIT ?";

pub(crate) const INSERT_INBOX: &str = "INSERT INTO {ks}.inbox \
     (user_id, bucket, seq, conv_id, conv_seq, sender, client_msg_id, kind, body, ts, ref_seq, \
     recalled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
pub(crate) const INSERT_INBOX_INDEX: &str = "INSERT INTO {ks}.inbox_index \
     (user_id, conv_id, bucket, conv_seq, seq) VALUES (?, ?, ?, ?, ?)";
pub(crate) const INSERT_INBOX_BUCKET: &str =
    "INSERT INTO {ks}.inbox_buckets (user_id, bucket) VALUES (?, ?)";
pub(crate) const INBOX_AFTER: &str = "SELECT {inbox} FROM {ks}.inbox \
     WHERE user_id = ? AND bucket = ? AND seq > ? LIMIT ?";
pub(crate) const NEWEST_INBOX: &str =
    "SELECT seq FROM {ks}.inbox WHERE user_id = ? AND bucket = ? ORDER BY seq DESC LIMIT 1";
pub(crate) const INBOX_BUCKETS_DOWN: &str =
    "SELECT bucket FROM {ks}.inbox_buckets WHERE user_id = ? AND bucket <= ? LIMIT ?";
pub(crate) const INBOX_BUCKETS_UP: &str = "SELECT bucket FROM {ks}.inbox_buckets \
     WHERE user_id = ? AND bucket >= ? ORDER BY bucket ASC LIMIT ?";
pub(crate) const INBOX_ENTRY_STORED: &str =
    "SELECT seq FROM {ks}.inbox WHERE user_id = ? AND bucket = ? AND seq = ?";
pub(crate) const INBOX_SEQ_OF: &str = "SELECT seq FROM {ks}.inbox_index \
     WHERE user_id = ? AND conv_id = ? AND bucket = ? AND conv_seq = ?";

/// A recall blanks the body in place; the caller has read the row first,
/// so the update does not make a row of its own.
pub(crate) const RECALL_MESSAGE: &str = "UPDATE {ks}.messages SET body = '', recalled = true \
     WHERE conv_id = ? AND bucket = ? AND conv_seq = ?";
pub(crate) const RECALL_ENTRY: &str = "UPDATE {ks}.inbox SET body = '', recalled = true \
     WHERE user_id = ? AND bucket = ? AND seq = ?";

pub(crate) const READ_MARKERS: &str =
    "SELECT user_id, up_to FROM {ks}.read_markers WHERE conv_id = ?";
pub(crate) const READ_MARKER: &str =
    "SELECT up_to FROM {ks}.read_markers WHERE conv_id = ? AND user_id = ?";
/// The marker is the write's timestamp too: the highest one wins.
pub(crate) const RAISE_READ_MARKER: &str = "INSERT INTO {ks}.read_markers (conv_id, user_id, up_to) \
     VALUES (?, ?, ?) USING TIMESTAMP ?";

pub(crate) const PUT_BODY: &str = "INSERT INTO {ks}.message_bodies \
     (conv_id, bucket, conv_seq, sender, client_msg_id, body) VALUES (?, ?, ?, ?, ?, ?)";
pub(crate) const BODY: &str = "SELECT body FROM {ks}.message_bodies \
     WHERE conv_id = ? AND bucket = ? AND conv_seq = ? AND sender = ? AND client_msg_id = ?";

pub(crate) const DEDUP: &str =
    "SELECT conv_id, conv_seq, members FROM {ks}.dedup WHERE user_id = ? AND client_msg_id = ?";

pub(crate) const LOAD_CEILING: &str =
    "SELECT max_seq FROM {ks}.seq_ceilings WHERE section = ? AND alloc_key = ?";
pub(crate) const CREATE_CEILING: &str = "INSERT INTO {ks}.seq_ceilings (section, alloc_key, max_seq) \
     VALUES (?, ?, ?) IF NOT EXISTS";
pub(crate) const RAISE_CEILING: &str = "UPDATE {ks}.seq_ceilings SET max_seq = ? \
     WHERE section = ? AND alloc_key = ? IF max_seq = ?";

pub(crate) const REGISTER_INSTANCE: &str = "INSERT INTO {ks}.instance_leases \
     (instance, addr, expires_at, alive) VALUES (?, ?, ?, true) IF NOT EXISTS";
/// Only ever later: a renewal that reaches the cluster late (queued in a
/// coordinator that hung, say) must not move a lease's end back, or other
/// instances would end a lease its holder still counts on.
pub(crate) const RENEW_INSTANCE: &str = "UPDATE {ks}.instance_leases SET expires_at = ? \
     WHERE instance = ? IF alive = true AND expires_at < ?";
pub(crate) const END_INSTANCE: &str =
    "UPDATE {ks}.instance_leases SET alive = false WHERE instance = ? IF expires_at = ?";
pub(crate) const REMOVE_INSTANCE: &str =
    "DELETE FROM {ks}.instance_leases WHERE instance = ? IF EXISTS";
pub(crate) const INSTANCES: &str =
    "SELECT instance, addr, expires_at, alive FROM {ks}.instance_leases";
pub(crate) const SHARD_OWNERS: &str = "SELECT shard, owner, epoch FROM {ks}.shard_owners";
pub(crate) const CREATE_SHARD_OWNER: &str = "INSERT INTO {ks}.shard_owners (shard, owner, epoch) \
     VALUES (?, ?, 1) IF NOT EXISTS";
pub(crate) const CLAIM_SHARD: &str = "UPDATE {ks}.shard_owners SET owner = ?, epoch = ? \
     WHERE shard = ? IF owner = ? AND epoch = ?";
pub(crate) const RELEASE_SHARD: &str =
    "UPDATE {ks}.shard_owners SET owner = '' WHERE shard = ? IF owner = ? AND epoch = ?";

pub(crate) const LOG_FENCE: &str =
    "SELECT writer FROM {ks}.log_fences WHERE kind = ? AND log_id = ?";
pub(crate) const SAVE_LOG_FENCE: &str =
    "INSERT INTO {ks}.log_fences (kind, log_id, writer) VALUES (?, ?, ?)";
pub(crate) const FENCE_INBOX: &str = "DELETE FROM {ks}.inbox \
     WHERE user_id = ? AND bucket = ? AND seq > ? AND seq <= ?";
pub(crate) const FENCE_MESSAGES: &str = "DELETE FROM {ks}.messages \
     WHERE conv_id = ? AND bucket = ? AND conv_seq > ? AND conv_seq <= ?";

pub(crate) const CONVERSATIONS_FIRST: &str = "SELECT conv_id FROM {ks}.conversations LIMIT ?";
/// A token-range scan: every partition of the table once, in token order.
pub(crate) const CONVERSATIONS_AFTER: &str =
    "SELECT conv_id FROM {ks}.conversations WHERE token(conv_id) > token(?) LIMIT ?";

const RETRY_COLUMNS: &str = "enqueued_at, conv_id, conv_seq, members, attempts, not_before";
pub(crate) const ENQUEUE_RETRY: &str = "INSERT INTO {ks}.fanout_retries \
     (shard, enqueued_at, conv_id, conv_seq, members, attempts, not_before) \
     VALUES (?, ?, ?, ?, ?, ?, ?)";
pub(crate) const RETRIES_FIRST: &str =
    "SELECT {retry} FROM {ks}.fanout_retries WHERE shard = ? LIMIT ?";
pub(crate) const RETRIES_AFTER: &str = "SELECT {retry} FROM {ks}.fanout_retries \
     WHERE shard = ? AND (enqueued_at, conv_id, conv_seq) > (?, ?, ?) LIMIT ?";
pub(crate) const REMOVE_RETRY: &str = "DELETE FROM {ks}.fanout_retries \
     WHERE shard = ? AND enqueued_at = ? AND conv_id = ? AND conv_seq = ?";
pub(crate) const RETRY_CHECKPOINT: &str = "SELECT enqueued_at, conv_id, conv_seq \
     FROM {ks}.fanout_retry_checkpoint WHERE worker = ?";
pub(crate) const SAVE_RETRY_CHECKPOINT: &str = "INSERT INTO {ks}.fanout_retry_checkpoint \
     (worker, enqueued_at, conv_id, conv_seq) VALUES (?, ?, ?, ?)";
pub(crate) const CLEAR_RETRY_CHECKPOINT: &str =
    "DELETE FROM {ks}.fanout_retry_checkpoint WHERE worker = ?";

pub(crate) const INSERT_INTENT: &str = "INSERT INTO {ks}.fanout_intents \
     (minute, shard, written_at, conv_id, conv_seq, members) VALUES (?, ?, ?, ?, ?, ?)";
const INTENT_COLUMNS: &str = "written_at, conv_id, conv_seq, members";
pub(crate) const INTENTS_FROM: &str = "SELECT {intent} FROM {ks}.fanout_intents \
     WHERE minute = ? AND shard = ? AND written_at >= ? LIMIT ?";
pub(crate) const INTENTS_AFTER: &str = "SELECT {intent} FROM {ks}.fanout_intents \
     WHERE minute = ? AND shard = ? AND (written_at, conv_id, conv_seq) > (?, ?, ?) LIMIT ?";
pub(crate) const WATERMARK: &str = "SELECT at FROM {ks}.fanout_watermark WHERE owner = ?";
pub(crate) const SAVE_WATERMARK: &str =
    "INSERT INTO {ks}.fanout_watermark (owner, at) VALUES (?, ?)";

/// The full text of a statement for a keyspace.
pub(crate) fn render(text: &str, keyspace: &Keyspace) -> String {
    in_keyspace(text, keyspace)
        .replace("{message}", MESSAGE_COLUMNS)
        .replace("{inbox}", INBOX_COLUMNS)
        .replace("{retry}", RETRY_COLUMNS)
        .replace("{intent}", INTENT_COLUMNS)
}

/// The prepared statements and batches of one keyspace.
pub(crate) struct Statements {
    pub(crate) put_conversation: PreparedStatement,
    pub(crate) conversation: PreparedStatement,
    pub(crate) add_member: PreparedStatement,
    pub(crate) add_user_conv: PreparedStatement,
    pub(crate) members: PreparedStatement,
    pub(crate) user_convs: PreparedStatement,
    /// Deletes the member row and the user's conversation row together.
    pub(crate) remove_member: Batch,
    /// A message's row, its bucket's entry, its dedup record (with a TTL).
    pub(crate) insert_message: PreparedStatement,
    pub(crate) insert_message_bucket: PreparedStatement,
    pub(crate) insert_dedup: PreparedStatement,
    pub(crate) message: PreparedStatement,
    pub(crate) message_stored: PreparedStatement,
    pub(crate) messages_before: PreparedStatement,
    pub(crate) messages_after: PreparedStatement,
    pub(crate) newest_message: PreparedStatement,
    pub(crate) message_buckets_down: PreparedStatement,
    pub(crate) message_buckets_up: PreparedStatement,
    /// An inbox row, its index row, its bucket's entry.
    pub(crate) insert_inbox: PreparedStatement,
    pub(crate) insert_inbox_index: PreparedStatement,
    pub(crate) insert_inbox_bucket: PreparedStatement,
    pub(crate) inbox_entry_stored: PreparedStatement,
    pub(crate) inbox_after: PreparedStatement,
    pub(crate) newest_inbox: PreparedStatement,
    pub(crate) inbox_buckets_down: PreparedStatement,
    pub(crate) inbox_buckets_up: PreparedStatement,
    pub(crate) inbox_seq_of: PreparedStatement,
    /// A body too large for a batch, written before it.
    pub(crate) put_body: PreparedStatement,
    pub(crate) body: PreparedStatement,
    /// A recall: the body blanked in the log or an inbox (a body stored
    /// apart stays there, unread: every row that pointed to it is blanked
    /// before the recall is acked).
    pub(crate) recall_message: PreparedStatement,
    pub(crate) recall_entry: PreparedStatement,
    /// Read markers (protocol 1.1).
    pub(crate) read_markers: PreparedStatement,
    pub(crate) read_marker: PreparedStatement,
    pub(crate) raise_read_marker: PreparedStatement,
    pub(crate) dedup: PreparedStatement,
    pub(crate) load_ceiling: PreparedStatement,
    pub(crate) create_ceiling: PreparedStatement,
    pub(crate) log_fence: PreparedStatement,
    pub(crate) save_log_fence: PreparedStatement,
    pub(crate) fence_inbox: PreparedStatement,
    pub(crate) fence_messages: PreparedStatement,
    pub(crate) register_instance: PreparedStatement,
    pub(crate) renew_instance: PreparedStatement,
    pub(crate) end_instance: PreparedStatement,
    pub(crate) remove_instance: PreparedStatement,
    pub(crate) instances: PreparedStatement,
    pub(crate) shard_owners: PreparedStatement,
    pub(crate) create_shard_owner: PreparedStatement,
    pub(crate) claim_shard: PreparedStatement,
    pub(crate) release_shard: PreparedStatement,
    pub(crate) raise_ceiling: PreparedStatement,
    pub(crate) conversations_first: PreparedStatement,
    pub(crate) conversations_after: PreparedStatement,
    pub(crate) enqueue_retry: PreparedStatement,
    pub(crate) retries_first: PreparedStatement,
    pub(crate) retries_after: PreparedStatement,
    pub(crate) remove_retry: PreparedStatement,
    pub(crate) retry_checkpoint: PreparedStatement,
    pub(crate) save_retry_checkpoint: PreparedStatement,
    pub(crate) clear_retry_checkpoint: PreparedStatement,
    pub(crate) insert_intent: PreparedStatement,
    pub(crate) intents_from: PreparedStatement,
    pub(crate) intents_after: PreparedStatement,
    pub(crate) watermark: PreparedStatement,
    pub(crate) save_watermark: PreparedStatement,
}

/// Rows per page of a read that is not bounded by a `LIMIT`.
const PAGE_SIZE: i32 = 1000;

struct Preparer<'a> {
    session: &'a Session,
    keyspace: &'a Keyspace,
    serial: SerialConsistency,
}

impl Preparer<'_> {
    async fn prepare(&self, text: &str, idempotent: bool) -> Result<PreparedStatement> {
        let mut statement = self
            .session
            .prepare(render(text, self.keyspace))
            .await
            .map_err(errors::prepare)?;
        statement.set_is_idempotent(idempotent);
        statement.set_page_size(PAGE_SIZE);
        Ok(statement)
    }

    /// A select or a plain insert or delete: the same effect however often it runs.
    async fn plain(&self, text: &str) -> Result<PreparedStatement> {
        self.prepare(text, true).await
    }

    /// A conditional update: sent once; a second try could see its own write
    /// as a conflict, which the allocator handles by reloading.
    async fn lwt(&self, text: &str) -> Result<PreparedStatement> {
        let mut statement = self.prepare(text, false).await?;
        statement.set_serial_consistency(Some(self.serial));
        Ok(statement)
    }

    /// A read at the serial level: it completes any LWT in progress on the
    /// row first, so it sees the latest ceiling.
    async fn serial_read(&self, text: &str) -> Result<PreparedStatement> {
        let mut statement = self.prepare(text, true).await?;
        statement.set_consistency(match self.serial {
            SerialConsistency::Serial => Consistency::Serial,
            SerialConsistency::LocalSerial => Consistency::LocalSerial,
        });
        Ok(statement)
    }

    async fn logged_batch(&self, texts: &[&str]) -> Result<Batch> {
        let mut statements = Vec::with_capacity(texts.len());
        for text in texts {
            statements.push(self.plain(text).await?);
        }
        Ok(logged_batch(statements))
    }
}

/// A logged batch of `statements` (appended in order), idempotent: it only
/// inserts or deletes, so running it twice leaves the same rows.
pub(crate) fn logged_batch(statements: impl IntoIterator<Item = PreparedStatement>) -> Batch {
    let mut batch = Batch::new(BatchType::Logged);
    for statement in statements {
        batch.append_statement(statement);
    }
    batch.set_is_idempotent(true);
    batch
}

impl Statements {
    /// Prepares every statement against `keyspace` (which must exist).
    pub(crate) async fn prepare(
        session: &Session,
        keyspace: &Keyspace,
        level: ConsistencyLevel,
    ) -> Result<Self> {
        let p = Preparer {
            session,
            keyspace,
            serial: level.serial(),
        };
        Ok(Statements {
            put_conversation: p.plain(PUT_CONVERSATION).await?,
            conversation: p.plain(CONVERSATION).await?,
            add_member: p.plain(ADD_MEMBER).await?,
            add_user_conv: p.plain(ADD_USER_CONV).await?,
            members: p.plain(MEMBERS).await?,
            user_convs: p.plain(USER_CONVS).await?,
            remove_member: p.logged_batch(&[REMOVE_MEMBER, REMOVE_USER_CONV]).await?,
            insert_message: p.plain(INSERT_MESSAGE).await?,
            insert_message_bucket: p.plain(INSERT_MESSAGE_BUCKET).await?,
            insert_dedup: p.plain(INSERT_DEDUP).await?,
            message: p.plain(MESSAGE).await?,
            message_stored: p.plain(MESSAGE_STORED).await?,
            messages_before: p.plain(MESSAGES_BEFORE).await?,
            messages_after: p.plain(MESSAGES_AFTER).await?,
            newest_message: p.plain(NEWEST_MESSAGE).await?,
            message_buckets_down: p.plain(MESSAGE_BUCKETS_DOWN).await?,
            message_buckets_up: p.plain(MESSAGE_BUCKETS_UP).await?,
            insert_inbox: p.plain(INSERT_INBOX).await?,
            insert_inbox_index: p.plain(INSERT_INBOX_INDEX).await?,
            insert_inbox_bucket: p.plain(INSERT_INBOX_BUCKET).await?,
            inbox_entry_stored: p.plain(INBOX_ENTRY_STORED).await?,
            inbox_after: p.plain(INBOX_AFTER).await?,
            newest_inbox: p.plain(NEWEST_INBOX).await?,
            inbox_buckets_down: p.plain(INBOX_BUCKETS_DOWN).await?,
            inbox_buckets_up: p.plain(INBOX_BUCKETS_UP).await?,
            inbox_seq_of: p.plain(INBOX_SEQ_OF).await?,
            put_body: p.plain(PUT_BODY).await?,
            body: p.plain(BODY).await?,
            recall_message: p.plain(RECALL_MESSAGE).await?,
            recall_entry: p.plain(RECALL_ENTRY).await?,
            read_markers: p.plain(READ_MARKERS).await?,
            read_marker: p.plain(READ_MARKER).await?,
            raise_read_marker: p.plain(RAISE_READ_MARKER).await?,
            dedup: p.plain(DEDUP).await?,
            load_ceiling: p.serial_read(LOAD_CEILING).await?,
            create_ceiling: p.lwt(CREATE_CEILING).await?,
            log_fence: p.plain(LOG_FENCE).await?,
            save_log_fence: p.plain(SAVE_LOG_FENCE).await?,
            fence_inbox: p.plain(FENCE_INBOX).await?,
            fence_messages: p.plain(FENCE_MESSAGES).await?,
            register_instance: p.lwt(REGISTER_INSTANCE).await?,
            renew_instance: p.lwt(RENEW_INSTANCE).await?,
            end_instance: p.lwt(END_INSTANCE).await?,
            remove_instance: p.lwt(REMOVE_INSTANCE).await?,
            instances: p.plain(INSTANCES).await?,
            shard_owners: p.plain(SHARD_OWNERS).await?,
            create_shard_owner: p.lwt(CREATE_SHARD_OWNER).await?,
            claim_shard: p.lwt(CLAIM_SHARD).await?,
            release_shard: p.lwt(RELEASE_SHARD).await?,
            raise_ceiling: p.lwt(RAISE_CEILING).await?,
            conversations_first: p.plain(CONVERSATIONS_FIRST).await?,
            conversations_after: p.plain(CONVERSATIONS_AFTER).await?,
            enqueue_retry: p.plain(ENQUEUE_RETRY).await?,
            retries_first: p.plain(RETRIES_FIRST).await?,
            retries_after: p.plain(RETRIES_AFTER).await?,
            remove_retry: p.plain(REMOVE_RETRY).await?,
            retry_checkpoint: p.plain(RETRY_CHECKPOINT).await?,
            save_retry_checkpoint: p.plain(SAVE_RETRY_CHECKPOINT).await?,
            clear_retry_checkpoint: p.plain(CLEAR_RETRY_CHECKPOINT).await?,
            insert_intent: p.plain(INSERT_INTENT).await?,
            intents_from: p.plain(INTENTS_FROM).await?,
            intents_after: p.plain(INTENTS_AFTER).await?,
            watermark: p.plain(WATERMARK).await?,
            save_watermark: p.plain(SAVE_WATERMARK).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{HashMap, HashSet};

    use super::*;
    use crate::scylla::schema::{MIGRATIONS, TABLES};

    const ALL: &[&str] = &[
        READ_MARKERS,
        READ_MARKER,
        RAISE_READ_MARKER,
        RECALL_MESSAGE,
        RECALL_ENTRY,
        PUT_CONVERSATION,
        CONVERSATION,
        ADD_MEMBER,
        ADD_USER_CONV,
        REMOVE_MEMBER,
        REMOVE_USER_CONV,
        MEMBERS,
        USER_CONVS,
        INSERT_MESSAGE,
        INSERT_MESSAGE_BUCKET,
        INSERT_DEDUP,
        MESSAGE,
        MESSAGE_STORED,
        MESSAGES_BEFORE,
        MESSAGES_AFTER,
        NEWEST_MESSAGE,
        MESSAGE_BUCKETS_DOWN,
        MESSAGE_BUCKETS_UP,
        INSERT_INBOX,
        INSERT_INBOX_INDEX,
        INSERT_INBOX_BUCKET,
        INBOX_AFTER,
        NEWEST_INBOX,
        INBOX_BUCKETS_DOWN,
        INBOX_BUCKETS_UP,
        INBOX_ENTRY_STORED,
        INBOX_SEQ_OF,
        PUT_BODY,
        BODY,
        DEDUP,
        LOAD_CEILING,
        CREATE_CEILING,
        RAISE_CEILING,
        CONVERSATIONS_FIRST,
        CONVERSATIONS_AFTER,
        ENQUEUE_RETRY,
        RETRIES_FIRST,
        RETRIES_AFTER,
        REMOVE_RETRY,
        RETRY_CHECKPOINT,
        SAVE_RETRY_CHECKPOINT,
        CLEAR_RETRY_CHECKPOINT,
        INSERT_INTENT,
        INTENTS_FROM,
        INTENTS_AFTER,
        WATERMARK,
        SAVE_WATERMARK,
    ];

    const KEYWORDS: &[&str] = &[
        "select",
        "from",
        "where",
        "and",
        "insert",
        "into",
        "values",
        "update",
        "set",
        "if",
        "not",
        "exists",
        "delete",
        "order",
        "by",
        "asc",
        "desc",
        "limit",
        "using",
        "ttl",
        "token",
        "true",
        "timestamp",
    ];

    /// Table name -> its columns, read from the schema's DDL (`CREATE
    /// TABLE`s, then the columns `ALTER TABLE .. ADD` adds).
    fn schema_columns() -> HashMap<String, HashSet<String>> {
        let mut schema: HashMap<String, HashSet<String>> = HashMap::new();
        for ddl in TABLES
            .iter()
            .chain(MIGRATIONS.iter().flat_map(|(_, ddl)| ddl.iter()))
        {
            let head = ddl.lines().next().unwrap();
            let named = head.split("{ks}.").nth(1).unwrap();
            if let Some((table, added)) = named.split_once(" ADD ") {
                let column = added.split_whitespace().next().unwrap().to_owned();
                schema.get_mut(table).unwrap().insert(column);
                continue;
            }
            let columns = ddl
                .lines()
                .skip(1)
                .filter(|line| line.starts_with("    ") && !line.contains("PRIMARY KEY"))
                .map(|line| line.split_whitespace().next().unwrap().to_owned());
            schema
                .entry(named.trim_end_matches(" (").to_owned())
                .or_default()
                .extend(columns);
        }
        schema
    }

    fn words(text: &str) -> impl Iterator<Item = &str> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .filter(|w| !w.is_empty() && !w.starts_with(|c: char| c.is_ascii_digit()))
    }

    #[test]
    fn every_statement_uses_only_tables_and_columns_of_the_schema() {
        let schema = schema_columns();
        let ks: Keyspace = "ks".parse().unwrap();
        for text in ALL {
            let cql = render(text, &ks);
            let table = words(&cql)
                .find_map(|w| w.strip_prefix("ks."))
                .unwrap_or_else(|| panic!("no table in {cql}"));
            let columns = schema
                .get(table)
                .unwrap_or_else(|| panic!("{table} is not in the schema: {cql}"));
            for word in words(&cql).filter(|w| !w.starts_with("ks.")) {
                assert!(
                    KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                        || columns.contains(word),
                    "{word:?} is neither a keyword nor a column of {table}: {cql}"
                );
            }
        }
    }

    #[test]
    fn bind_markers_match_the_values_the_store_binds() {
        let ks = Keyspace::default();
        let markers = |text: &str| render(text, &ks).matches('?').count();
        assert_eq!(markers(INSERT_MESSAGE), 10);
        assert_eq!(markers(INSERT_INBOX), 12);
        assert_eq!(markers(RECALL_MESSAGE), 3);
        assert_eq!(markers(RECALL_ENTRY), 3);
        assert_eq!(
            markers(RAISE_READ_MARKER),
            4,
            "three columns and the timestamp"
        );
        assert_eq!(markers(INSERT_DEDUP), 6, "five columns and the TTL");
        assert_eq!(markers(INSERT_INTENT), 6);
        assert_eq!(markers(INTENTS_FROM), 4);
        assert_eq!(markers(INTENTS_AFTER), 6);
        assert_eq!(markers(PUT_BODY), 6);
        assert_eq!(markers(BODY), 5);
        assert_eq!(markers(RAISE_CEILING), 4);
        assert_eq!(markers(INBOX_AFTER), 4);
    }

    #[test]
    fn reads_that_page_across_buckets_are_ordered_the_way_they_walk() {
        let ks = Keyspace::default();
        assert!(
            !render(INBOX_AFTER, &ks).contains("ORDER BY"),
            "inbox is ascending"
        );
        assert!(render(MESSAGES_AFTER, &ks).contains("ORDER BY conv_seq ASC"));
        assert!(
            !render(MESSAGES_BEFORE, &ks).contains("ORDER BY"),
            "messages are newest first"
        );
        assert!(render(INBOX_BUCKETS_UP, &ks).contains("ORDER BY bucket ASC"));
        assert!(render(NEWEST_INBOX, &ks).contains("ORDER BY seq DESC LIMIT 1"));
    }
}
