//! Rows as CQL returns them, and the values CQL binds, converted to and
//! from the protocol's types. Whatever fails to convert back (an id that no
//! longer parses, an unknown kind, a negative seq) is `BadData`.

use ::scylla::DeserializeRow;
use ::scylla::response::query_result::QueryResult;
use ::scylla::value::{CqlValue, Row};
use proto::{ConvKind, Entry, HistoryMessage, MessageKind, Seq, UserId};

use super::bodies::{Pending, inline_body};
use super::buckets::{from_cql, to_cql};
use super::errors;
use crate::model::{ConversationMeta, MessageRef};
use crate::{Error, Result};

fn message_kind_name(kind: MessageKind) -> &'static str {
    kind.as_str()
}

fn message_kind(name: &str) -> Result<MessageKind> {
    MessageKind::parse(name).map_err(|_| Error::BadData(format!("unknown message kind {name:?}")))
}

fn conv_kind_name(kind: ConvKind) -> &'static str {
    match kind {
        ConvKind::Dm => "dm",
        ConvKind::Group => "group",
    }
}

fn conv_kind(name: &str) -> Result<ConvKind> {
    match name {
        "dm" => Ok(ConvKind::Dm),
        "group" => Ok(ConvKind::Group),
        other => Err(Error::BadData(format!(
            "unknown conversation kind {other:?}"
        ))),
    }
}

/// Parses an id read from a row.
pub(crate) fn id<T: std::str::FromStr>(what: &str, text: &str) -> Result<T> {
    text.parse()
        .map_err(|_| Error::BadData(format!("{what} {text:?} in storage is not valid")))
}

/// A row of `messages` (the columns of `MESSAGE_COLUMNS`).
#[derive(Debug, DeserializeRow)]
#[scylla(crate = ::scylla)]
pub(crate) struct MessageRow {
    pub(crate) conv_id: String,
    pub(crate) conv_seq: i64,
    pub(crate) sender: String,
    pub(crate) client_msg_id: String,
    pub(crate) kind: String,
    /// Null when the body is stored apart (see `bodies`).
    pub(crate) body: Option<String>,
    pub(crate) ts: i64,
    /// A recall's or an edit's message (null in rows before version 6).
    pub(crate) ref_seq: Option<i64>,
    /// Null in rows before version 6 and in rows never recalled.
    pub(crate) recalled: Option<bool>,
}

impl MessageRow {
    /// The message; its body is still to be read when it was stored apart.
    pub(crate) fn into_message(self) -> Result<Pending<HistoryMessage>> {
        let body_apart = self.body.is_none();
        let item = HistoryMessage {
            conv_id: id("conv_id", &self.conv_id)?,
            conv_seq: from_cql(self.conv_seq)?,
            from: id("sender", &self.sender)?,
            client_msg_id: id("client_msg_id", &self.client_msg_id)?,
            kind: message_kind(&self.kind)?,
            body: self.body.unwrap_or_default(),
            ts: from_cql(self.ts)?,
            refers_to: self.ref_seq.map(from_cql).transpose()?,
            recalled: self.recalled.unwrap_or(false),
        };
        Ok(Pending { item, body_apart })
    }
}

/// A row of `inbox` (the columns of `INBOX_COLUMNS`).
#[derive(Debug, DeserializeRow)]
#[scylla(crate = ::scylla)]
pub(crate) struct InboxRow {
    pub(crate) seq: i64,
    pub(crate) conv_id: String,
    pub(crate) conv_seq: i64,
    pub(crate) sender: String,
    pub(crate) client_msg_id: String,
    pub(crate) kind: String,
    /// Null when the body is stored apart (see `bodies`).
    pub(crate) body: Option<String>,
    pub(crate) ts: i64,
    pub(crate) ref_seq: Option<i64>,
    pub(crate) recalled: Option<bool>,
}

impl InboxRow {
    /// The entry; its body is still to be read when it was stored apart.
    pub(crate) fn into_entry(self) -> Result<Pending<Entry>> {
        let message = MessageRow {
            conv_id: self.conv_id,
            conv_seq: self.conv_seq,
            sender: self.sender,
            client_msg_id: self.client_msg_id,
            kind: self.kind,
            body: self.body,
            ts: self.ts,
            ref_seq: self.ref_seq,
            recalled: self.recalled,
        };
        let Pending { item, body_apart } = message.into_message()?;
        let entry = Entry {
            seq: from_cql(self.seq)?,
            message: item,
        };
        Ok(Pending {
            item: entry,
            body_apart,
        })
    }
}

/// A row of `conversations`.
#[derive(Debug, DeserializeRow)]
#[scylla(crate = ::scylla)]
pub(crate) struct ConversationRow {
    pub(crate) conv_id: String,
    pub(crate) kind: String,
    pub(crate) title: Option<String>,
    pub(crate) created_at: i64,
}

impl ConversationRow {
    pub(crate) fn into_meta(self) -> Result<ConversationMeta> {
        Ok(ConversationMeta {
            conv_id: id("conv_id", &self.conv_id)?,
            kind: conv_kind(&self.kind)?,
            title: self.title,
            created_at: from_cql(self.created_at)?,
        })
    }
}

/// A row of `dedup`.
#[derive(Debug, DeserializeRow)]
#[scylla(crate = ::scylla)]
pub(crate) struct DedupRow {
    pub(crate) conv_id: String,
    pub(crate) conv_seq: i64,
    /// Null in records written before schema version 4.
    pub(crate) members: Option<Vec<String>>,
}

impl DedupRow {
    pub(crate) fn into_ref(self) -> Result<MessageRef> {
        Ok(MessageRef {
            conv_id: id("conv_id", &self.conv_id)?,
            conv_seq: from_cql(self.conv_seq)?,
            members: (self.members.unwrap_or_default().iter())
                .map(|m| id("user_id", m))
                .collect::<Result<_>>()?,
        })
    }
}

/// `(conv_id, kind, title, created_at)` for `PUT_CONVERSATION`.
pub(crate) fn conversation_values(
    meta: &ConversationMeta,
) -> Result<(&str, &'static str, Option<&str>, i64)> {
    Ok((
        meta.conv_id.as_str(),
        conv_kind_name(meta.kind),
        meta.title.as_deref(),
        to_cql(meta.created_at)?,
    ))
}

/// The message columns after the keys: `(sender, client_msg_id, kind, body,
/// ts, ref_seq, recalled)`, the body null when it is stored apart (see
/// `bodies`).
pub(crate) type MessageTail<'a> = (
    &'a str,
    &'a str,
    &'static str,
    Option<&'a str>,
    i64,
    Option<i64>,
    bool,
);

fn message_tail(msg: &HistoryMessage) -> Result<MessageTail<'_>> {
    Ok((
        msg.from.as_str(),
        msg.client_msg_id.as_str(),
        message_kind_name(msg.kind),
        inline_body(&msg.body),
        to_cql(msg.ts)?,
        msg.refers_to.map(to_cql).transpose()?,
        msg.recalled,
    ))
}

/// The values of `INSERT_MESSAGE`, in its column order.
#[allow(clippy::type_complexity)]
pub(crate) fn message_values(
    msg: &HistoryMessage,
    bucket: i64,
) -> Result<(
    &str,
    i64,
    i64,
    &str,
    &str,
    &'static str,
    Option<&str>,
    i64,
    Option<i64>,
    bool,
)> {
    let (sender, client_msg_id, kind, body, ts, ref_seq, recalled) = message_tail(msg)?;
    let conv_seq = to_cql(msg.conv_seq)?;
    Ok((
        msg.conv_id.as_str(),
        bucket,
        conv_seq,
        sender,
        client_msg_id,
        kind,
        body,
        ts,
        ref_seq,
        recalled,
    ))
}

/// The values of `INSERT_INBOX`, in its column order.
#[allow(clippy::type_complexity)]
pub(crate) fn inbox_values<'a>(
    user: &'a UserId,
    entry: &'a Entry,
    bucket: i64,
) -> Result<(
    &'a str,
    i64,
    i64,
    &'a str,
    i64,
    &'a str,
    &'a str,
    &'static str,
    Option<&'a str>,
    i64,
    Option<i64>,
    bool,
)> {
    let msg = &entry.message;
    let (sender, client_msg_id, kind, body, ts, ref_seq, recalled) = message_tail(msg)?;
    Ok((
        user.as_str(),
        bucket,
        to_cql(entry.seq)?,
        msg.conv_id.as_str(),
        to_cql(msg.conv_seq)?,
        sender,
        client_msg_id,
        kind,
        body,
        ts,
        ref_seq,
        recalled,
    ))
}

/// Every row of a result.
pub(crate) fn all<R>(result: QueryResult) -> Result<Vec<R>>
where
    R: for<'frame, 'metadata> ::scylla::deserialize::row::DeserializeRow<'frame, 'metadata>,
{
    let rows = result.into_rows_result().map_err(errors::rows)?;
    let typed = rows.rows::<R>().map_err(errors::rows)?;
    typed.collect::<Result<Vec<R>, _>>().map_err(errors::rows)
}

/// Whether a conditional statement applied: the `[applied]` column, first
/// in the result on Cassandra and ScyllaDB alike (what follows it, the row
/// as it is, differs between them, so the row is read untyped).
pub(crate) fn applied(result: QueryResult) -> Result<bool> {
    let row = all::<Row>(result)?.into_iter().next();
    match row.as_ref().and_then(|r| r.columns.first()) {
        Some(Some(CqlValue::Boolean(applied))) => Ok(*applied),
        other => Err(Error::BadData(format!(
            "a conditional update answered {other:?}, not [applied]"
        ))),
    }
}

/// Whether a conditional statement applied and, when it did not, the
/// current values of `columns`, columns its condition names (each answer
/// carries those, by name, on Cassandra and ScyllaDB alike; `None` for a
/// column not in the answer, as when the row is missing).
pub(crate) fn applied_and_current<const N: usize>(
    result: QueryResult,
    columns: [&str; N],
) -> Result<(bool, [Option<CqlValue>; N])> {
    let rows = result.into_rows_result().map_err(errors::rows)?;
    let indexes = columns.map(|name| rows.column_specs().get_by_name(name).map(|(i, _)| i));
    let row = rows.rows::<Row>().map_err(errors::rows)?.next();
    let mut values = row.transpose().map_err(errors::rows)?.map(|r| r.columns);
    let applied = match values.as_ref().and_then(|v| v.first()) {
        Some(Some(CqlValue::Boolean(applied))) => *applied,
        other => {
            return Err(Error::BadData(format!(
                "a conditional update answered {other:?}, not [applied]"
            )));
        }
    };
    let current = indexes.map(|index| index.and_then(|i| values.as_mut()?.get_mut(i)?.take()));
    Ok((applied, current))
}

/// The ids of a one-column result, parsed.
pub(crate) fn ids<T: std::str::FromStr>(what: &str, rows: Vec<(String,)>) -> Result<Vec<T>> {
    rows.into_iter().map(|(text,)| id(what, &text)).collect()
}

/// The rows of `READ_MARKERS`: `(user_id, up_to)`.
pub(crate) fn read_markers(rows: Vec<(String, i64)>) -> Result<Vec<(UserId, Seq)>> {
    rows.into_iter()
        .map(|(user, up_to)| Ok((id("user_id", &user)?, from_cql(up_to)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proto::{ClientMsgId, ConvId};

    use super::*;

    fn sample() -> HistoryMessage {
        let (a, b) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        HistoryMessage {
            conv_id: ConvId::dm(&a, &b).unwrap(),
            conv_seq: 70_000,
            from: a,
            client_msg_id: ClientMsgId::parse("c-1").unwrap(),
            kind: MessageKind::Text,
            body: "hello".into(),
            ts: 1_764_262_800_000,
            refers_to: None,
            recalled: false,
        }
    }

    /// The row CQL would return for what `inbox_values` bound.
    fn inbox_row_of(user: &UserId, entry: &Entry) -> InboxRow {
        let (
            _,
            _,
            seq,
            conv_id,
            conv_seq,
            sender,
            client_msg_id,
            kind,
            body,
            ts,
            ref_seq,
            recalled,
        ) = inbox_values(user, entry, 1).unwrap();
        InboxRow {
            seq,
            conv_id: conv_id.into(),
            conv_seq,
            sender: sender.into(),
            client_msg_id: client_msg_id.into(),
            kind: kind.into(),
            body: body.map(str::to_owned),
            ts,
            ref_seq,
            recalled: Some(recalled),
        }
    }

    /// The row CQL would return for what `message_values` bound.
    fn message_row_of(msg: &HistoryMessage) -> MessageRow {
        let (conv_id, bucket, conv_seq, sender, client_msg_id, kind, body, ts, ref_seq, recalled) =
            message_values(msg, 1).unwrap();
        assert_eq!(bucket, 1);
        MessageRow {
            conv_id: conv_id.into(),
            conv_seq,
            sender: sender.into(),
            client_msg_id: client_msg_id.into(),
            kind: kind.into(),
            body: body.map(str::to_owned),
            ts,
            ref_seq,
            recalled: Some(recalled),
        }
    }

    #[test]
    fn a_message_reads_back_as_it_was_bound() {
        let msg = sample();
        let read = message_row_of(&msg).into_message().unwrap();
        assert!(!read.body_apart);
        assert_eq!(read.item, msg);
    }

    #[test]
    fn a_recall_edit_or_recalled_message_reads_back_as_it_was_bound() {
        let recall = HistoryMessage {
            kind: MessageKind::Recall,
            body: String::new(),
            refers_to: Some(7),
            ..sample()
        };
        let edit = HistoryMessage {
            kind: MessageKind::Edit,
            refers_to: Some(7),
            ..sample()
        };
        for msg in [recall, edit, sample().recalled()] {
            let read = message_row_of(&msg).into_message().unwrap();
            assert_eq!(read.item, msg);
        }
    }

    #[test]
    fn a_row_written_before_version_6_reads_as_not_recalled_and_without_ref() {
        let mut row = message_row_of(&sample());
        (row.ref_seq, row.recalled) = (None, None);
        assert_eq!(row.into_message().unwrap().item, sample());
    }

    #[test]
    fn an_inbox_entry_reads_back_as_it_was_bound() {
        let entry = Entry {
            seq: 9,
            message: sample(),
        };
        let user = UserId::parse("bob").unwrap();
        let read = inbox_row_of(&user, &entry).into_entry().unwrap();
        assert!(!read.body_apart);
        assert_eq!(read.item, entry);
    }

    /// Cassandra's `batch_size_warn_threshold_in_kb` default.
    const BATCH_WARN_BYTES: usize = 5 * 1024;

    /// The bytes the append batches bind for `entry` (message row, bucket
    /// and dedup; inbox row, index and bucket): texts by length, bigints
    /// and ints as 8 and 4. Cassandra counts the cells' data, about this.
    fn batch_bytes(user: &UserId, entry: &Entry) -> (usize, usize) {
        let msg = &entry.message;
        let (conv, _, _, sender, id, kind, body, ..) = message_values(msg, 1).unwrap();
        let texts = conv.len() + sender.len() + id.len() + kind.len();
        let body = body.map_or(0, str::len);
        let message_row = texts + body + 3 * 8;
        let message_batch =
            message_row + (conv.len() + 8) + (sender.len() + id.len() + conv.len() + 8 + 4);
        let inbox_row = user.as_str().len() + message_row + 8;
        let inbox_batch =
            inbox_row + (user.as_str().len() + conv.len() + 3 * 8) + (user.as_str().len() + 8);
        (message_batch, inbox_batch)
    }

    #[test]
    fn the_batches_of_the_largest_messages_stay_under_the_batch_warning_threshold() {
        let long = "u".repeat(64);
        let (a, b) = (
            UserId::parse(&long).unwrap(),
            UserId::parse(&long.replace('u', "v")).unwrap(),
        );
        for body_len in [
            crate::scylla::bodies::INLINE_BODY_MAX,
            proto::MAX_BODY_BYTES,
        ] {
            let message = HistoryMessage {
                conv_id: ConvId::dm(&a, &b).unwrap(),
                client_msg_id: ClientMsgId::parse(&"c".repeat(64)).unwrap(),
                body: "x".repeat(body_len),
                from: a.clone(),
                ..sample()
            };
            let entry = Entry { seq: 9, message };
            let (message_batch, inbox_batch) = batch_bytes(&b, &entry);
            assert!(
                message_batch < BATCH_WARN_BYTES,
                "{body_len}: {message_batch}"
            );
            assert!(inbox_batch < BATCH_WARN_BYTES, "{body_len}: {inbox_batch}");
        }
    }

    #[test]
    fn a_body_too_large_for_a_batch_binds_as_null_and_reads_back_as_stored_apart() {
        let mut message = sample();
        message.body = "x".repeat(proto::MAX_BODY_BYTES);
        let entry = Entry { seq: 9, message };
        let user = UserId::parse("bob").unwrap();
        let row = inbox_row_of(&user, &entry);
        assert_eq!(row.body, None, "the batch carries no body");
        let read = row.into_entry().unwrap();
        assert!(read.body_apart, "the reader fetches it from message_bodies");
        assert_eq!(read.item.message.body, "");
    }

    #[test]
    fn a_conversation_reads_back_with_or_without_a_title() {
        for title in [None, Some("team".to_owned())] {
            let meta = ConversationMeta {
                conv_id: ConvId::group("g1").unwrap(),
                kind: ConvKind::Group,
                title,
                created_at: 5,
            };
            let (conv_id, kind, title, created_at) = conversation_values(&meta).unwrap();
            let row = ConversationRow {
                conv_id: conv_id.into(),
                kind: kind.into(),
                title: title.map(str::to_owned),
                created_at,
            };
            assert_eq!(row.into_meta().unwrap(), meta);
        }
    }

    #[test]
    fn rows_that_do_not_convert_are_bad_data() {
        let entry = Entry {
            seq: 1,
            message: sample(),
        };
        let user = UserId::parse("bob").unwrap();
        let mut unknown_kind = inbox_row_of(&user, &entry);
        unknown_kind.kind = "sticker".into();
        let mut bad_id = inbox_row_of(&user, &entry);
        bad_id.sender = "not a user".into();
        let mut negative = inbox_row_of(&user, &entry);
        negative.seq = -3;
        for row in [unknown_kind, bad_id, negative] {
            assert!(matches!(row.into_entry(), Err(Error::BadData(_))));
        }
        let dedup = DedupRow {
            conv_id: "nope".into(),
            conv_seq: 1,
            members: None,
        };
        assert!(matches!(dedup.into_ref(), Err(Error::BadData(_))));
        let bad_member = DedupRow {
            conv_id: "g:ok".into(),
            conv_seq: 1,
            members: Some(vec!["not a user".into()]),
        };
        assert!(matches!(bad_member.into_ref(), Err(Error::BadData(_))));
    }

    #[test]
    fn a_timestamp_beyond_a_bigint_is_refused_before_it_is_written() {
        let mut msg = sample();
        msg.ts = u64::MAX;
        assert!(matches!(message_values(&msg, 0), Err(Error::BadData(_))));
    }
}
