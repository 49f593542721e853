//! Inbox appends: one entry at a time through the inbox's writer, and what
//! follows once an entry is visible (the inbox cache, then the notify). Both
//! wait until the entry is durable, so neither can show a client an entry
//! that a machine crash takes back.

use std::sync::Arc;

use proto::{Entry, HistoryMessage, Seq, UserId};
use storage::{Inline, WriteTicket};

use crate::logs::{Announce, Logged, Write};
use crate::service::{Core, inbox_key};
use crate::unsent::Notifier;
use crate::{Backends, Result};

/// An inbox entry in the store's log, with what its announcement needs.
pub(crate) struct InboxWrite {
    user: UserId,
    entry: Entry,
    /// The seq handed out just before: the cache extends its run only by
    /// the successor of its newest entry.
    previous: Seq,
    ticket: WriteTicket,
}

impl Logged for InboxWrite {
    fn ticket(&self) -> WriteTicket {
        self.ticket
    }
}

impl Core {
    /// Appends one inbox entry, waits until it is durable, makes it visible
    /// (which also caches and notifies it).
    pub(crate) async fn append_to_inbox(
        &self,
        user: &UserId,
        message: &HistoryMessage,
    ) -> Result<Seq> {
        let store = &self.backends.store;
        self.recall_in_inbox(user, message).await?;
        let load_head = || async { Ok(store.inbox_head(user).await?) };
        // The entry's identity: its sender's idempotency key (a read entry,
        // which has no conv_seq, names its marker in it).
        let tag = format!(
            "{}\0{}\0{}",
            message.conv_id, message.from, message.client_msg_id
        );
        let write = inbox_write(self.backends.clone(), user.clone(), message.clone());
        let appended = self
            .inboxes
            .append(&inbox_key(user), tag, load_head, || async { Ok(write) })
            .await?;
        store.durable(appended.value.ticket).await?;
        self.inboxes.publish(&appended).await;
        Ok(appended.seq)
    }
}

/// The store write of one inbox entry, re-issuable at the same seq.
fn inbox_write(backends: Backends, user: UserId, message: HistoryMessage) -> Write<InboxWrite> {
    Arc::new(move |seq, previous| {
        let (backends, user) = (backends.clone(), user.clone());
        let entry = Entry {
            seq,
            message: message.clone(),
        };
        Box::pin(async move {
            let ticket = backends.store.append_inbox(&user, &entry).await?;
            Ok(InboxWrite {
                user,
                entry,
                previous,
                ticket,
            })
        })
    })
}

/// What an inbox entry that became visible (appended or settled late) sets
/// off: the cache is extended, then the gateways holding the user are told.
pub(crate) fn announcer(backends: Backends) -> Announce<InboxWrite> {
    let notifier = Notifier::new(Arc::clone(&backends.presence), Arc::clone(&backends.bus));
    Arc::new(move |written: &InboxWrite| {
        let (backends, notifier) = (backends.clone(), notifier.clone());
        let (user, previous, entry) = (
            written.user.clone(),
            written.previous,
            written.entry.clone(),
        );
        Box::pin(async move {
            if let Err(err) = backends.cache.append(&user, previous, &entry).await {
                tracing::warn!(error = %err, %user, "inbox cache write failed; dropping it");
                drop_cache(&backends, &user).await;
            }
            let seq = entry.seq;
            notifier
                .notify(&user, seq, inline_entry(previous, entry))
                .await;
        })
    })
}

/// Bodies up to this size go inline in the notify (protocol 1.1: "small",
/// up to about 4 KiB in all with the entry's other fields); a larger one is
/// fetched by the client's sync.
const INLINE_BODY_MAX: usize = 3 * 1024;

/// The entry as a notify carries it, when it is small.
fn inline_entry(previous: Seq, entry: Entry) -> Option<Inline> {
    (entry.message.body.len() <= INLINE_BODY_MAX).then(|| Inline {
        prev: previous,
        entries: vec![entry],
    })
}

async fn drop_cache(backends: &Backends, user: &UserId) {
    if let Err(err) = backends.cache.invalidate(user).await {
        tracing::error!(error = %err, %user, "inbox cache could not be dropped");
    }
}
