//! The audit: compares each conversation's log with its members' inboxes
//! (through the inbox index) for the messages of a time range, reports
//! every `(member, conv_id, conv_seq)` missing, and repairs them by queueing
//! them for the fan-out retry worker of each conversation's owner (its own
//! fan-out path: seqs, cache and notifies stay right, and no inbox is
//! written by anyone but its owner).
//!
//! Cost: every conversation is listed (a full scan of the conversations
//! table; a token-range scan on Scylla) and every log read from its start,
//! with one index lookup per member and message: an offline tool, not a
//! request path.
//!
//! Who should hold a message: a DM's two members always; a group's current
//! members from the first message they hold or sent in the log on. The
//! store keeps no join time, so messages older than that are taken to
//! predate the member's joining, and a member missing every message since
//! joining is not reported (the retry queue holds those fan-outs).

use std::collections::{BTreeMap, HashMap};

use proto::{ConvId, HistoryMessage, Seq, UserId};
use storage::{MessageStore, Page, RetryItem, RetryKey};

use crate::Result;
use crate::clock::now_ms;

/// Conversations and messages read per store call.
const PAGE: usize = 500;

/// A message a member's inbox should hold and does not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Missing {
    /// Whose inbox.
    pub member: UserId,
    /// The message's conversation.
    pub conv_id: ConvId,
    /// The message's position in its log.
    pub conv_seq: Seq,
}

/// What an audit looked at and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Conversations with a message in the range.
    pub conversations: usize,
    /// Messages in the range.
    pub messages: usize,
    /// Inbox entries missing, in `(member, conv_id, conv_seq)` order.
    pub missing: Vec<Missing>,
}

/// Finds the inbox entries missing for messages with `from_ms <= ts <= to_ms`.
pub async fn find_missing(
    store: &dyn MessageStore,
    from_ms: u64,
    to_ms: u64,
) -> Result<AuditReport> {
    let mut report = AuditReport::default();
    let mut after: Option<ConvId> = None;
    loop {
        let convs = store.conversation_ids(after.as_ref(), PAGE).await?;
        let Some(last) = convs.last().cloned() else {
            break;
        };
        for conv in convs {
            audit_conversation(store, &conv, (from_ms, to_ms), &mut report).await?;
        }
        after = Some(last);
    }
    report.missing.sort();
    Ok(report)
}

/// Walks one log from its start; adds what is missing in the range.
async fn audit_conversation(
    store: &dyn MessageStore,
    conv: &ConvId,
    (from_ms, to_ms): (u64, u64),
    report: &mut AuditReport,
) -> Result<()> {
    let (members, fixed) = match conv.dm_members() {
        Some((a, b)) => (vec![a, b], true),
        None => (store.members(conv).await?, false),
    };
    // A member's first held or sent message: where its inbox starts.
    let mut joined: HashMap<UserId, bool> = members.iter().map(|m| (m.clone(), fixed)).collect();
    let (mut after, mut in_range) = (0, 0);
    loop {
        let page = store.messages(conv, Page::After(after), PAGE).await?;
        let Some(last) = page.last().map(|m| m.conv_seq) else {
            break;
        };
        for message in &page {
            let counted = (from_ms..=to_ms).contains(&message.ts);
            in_range += usize::from(counted);
            check_message(store, message, &mut joined, counted, report).await?;
        }
        after = last;
    }
    if in_range > 0 {
        report.conversations += 1;
        report.messages += in_range;
    }
    Ok(())
}

async fn check_message(
    store: &dyn MessageStore,
    message: &HistoryMessage,
    joined: &mut HashMap<UserId, bool>,
    counted: bool,
    report: &mut AuditReport,
) -> Result<()> {
    for (member, member_joined) in joined.iter_mut() {
        let held = store
            .inbox_seq_of(member, &message.conv_id, message.conv_seq)
            .await?
            .is_some();
        *member_joined |= held || &message.from == member;
        if counted && !held && *member_joined {
            report.missing.push(Missing {
                member: member.clone(),
                conv_id: message.conv_id.clone(),
                conv_seq: message.conv_seq,
            });
        }
    }
    Ok(())
}

/// Queues the missing entries for the fan-out retry worker of each
/// conversation's owner: one item per message with its missing members.
/// The owner appends them through its fan-out path (looking in each inbox
/// first, so an entry that arrived meanwhile is not appended twice), so a
/// repair never writes an inbox behind its owner's back. The number of
/// items queued.
pub async fn queue_repairs(store: &dyn MessageStore, missing: &[Missing]) -> Result<usize> {
    let mut by_message: BTreeMap<(ConvId, Seq), Vec<UserId>> = BTreeMap::new();
    for m in missing {
        by_message
            .entry((m.conv_id.clone(), m.conv_seq))
            .or_default()
            .push(m.member.clone());
    }
    let items = by_message.len();
    for ((conv_id, conv_seq), members) in by_message {
        let item = RetryItem {
            key: RetryKey {
                enqueued_at: now_ms(),
                conv_id,
                conv_seq,
            },
            members,
            attempts: 0,
            not_before: 0,
        };
        store.enqueue_retry(&item).await?;
    }
    Ok(items)
}
