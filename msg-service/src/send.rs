//! The send path: dedup, membership, the conversation append, and the write
//! fan-out to every member's inbox, all durable before the ack. A retry of a
//! send that failed part-way finishes it instead of storing it again.

use std::sync::Arc;

use proto::{Ack, ConvId, ConvKind, HistoryMessage, ProtoError, SendRequest, Seq, Target, UserId};
use storage::{ConversationMeta, MessageRef, MessageStore, RetryItem, WriteTicket};

use crate::clock::now_ms;
use crate::deliveries::Pass;
use crate::fanouts::Turn;
use crate::intents::{InFlight, InFlightGuard};
use crate::logs::{Announce, Appended, Logged, Write};
use crate::retry::RetrySignals;
use crate::service::{Core, conv_key};
use crate::{Error, Result};

impl Core {
    #[tracing::instrument(skip_all, fields(user = %sender), err(level = "debug", Debug))]
    pub(crate) async fn send_message(&self, sender: &UserId, request: SendRequest) -> Result<Ack> {
        let conv = target_conv(sender, &request.target)?;
        let (appended, _turn) = match self.log_once(sender, &conv, request).await? {
            Dedup::Stored(stored) => return self.finish_stored_send(sender, stored).await,
            Dedup::Logged(appended, turn) => (appended, turn),
        };
        let Posted {
            message, members, ..
        } = &appended.value;
        let pass = Pass::First {
            conv_epoch: appended.epoch(),
        };
        let seqs = self.fan_out(members, message, pass).await;
        // A failure is logged there; the client's retry finishes the fan-out.
        let _ = self.queue_missing(message, members, &seqs).await;
        // Covered already by the fsyncs of the inbox appends, logged later:
        // waiting here does not cost a second fsync per send.
        self.backends.store.durable(appended.value.ticket).await?;
        self.conversations.publish(&appended).await;
        ack_for(sender, message, members, seqs)
    }

    /// Logs the message unless its dedup record says it was stored before.
    /// The sender's lock is held only this long: a duplicate sent at the same
    /// time then finds the record, and waits for the fan-out's turn.
    async fn log_once(
        &self,
        sender: &UserId,
        conv: &ConvId,
        request: SendRequest,
    ) -> Result<Dedup<'_>> {
        let _sender = self.senders.lock(sender).await;
        if let Some(stored) = self.dedup_record(sender, &request).await? {
            return Ok(Dedup::Stored(stored));
        }
        let appended = self.append_to_conversation(sender, conv, request).await?;
        // Taken before the sender's lock is let go, so no retry of this
        // message can fan it out first.
        let turn = self.fanout_turns.take(conv, appended.seq).await;
        Ok(Dedup::Logged(appended, turn))
    }

    /// The send's dedup record, if it counts: a record found is trusted only
    /// once the conversation is open for writing here, as opening it fences
    /// off a message that an earlier process logged but never settled.
    async fn dedup_record(
        &self,
        sender: &UserId,
        request: &SendRequest,
    ) -> Result<Option<MessageRef>> {
        let store = &self.backends.store;
        let Some(found) = store.dedup_get(sender, &request.client_msg_id).await? else {
            return Ok(None);
        };
        // The record's own conversation: a client may reuse an id elsewhere.
        self.open_conversation(&found.conv_id).await?;
        Ok(store.dedup_get(sender, &request.client_msg_id).await?)
    }

    /// Opens a conversation's log for writing here (fencing it, the first
    /// time): call before trusting a message of it that an earlier process
    /// may have logged above the head without settling it.
    pub(crate) async fn open_conversation(&self, conv: &ConvId) -> Result<()> {
        let store = &self.backends.store;
        let load_head = || async { Ok(store.last_conv_seq(conv).await?) };
        self.conversations.open(&conv_key(conv), load_head).await
    }

    /// A retry of a message that is already in its conversation's log:
    /// appends it to the inboxes that do not have it yet, then acks it.
    async fn finish_stored_send(&self, sender: &UserId, stored: MessageRef) -> Result<Ack> {
        let store = &self.backends.store;
        let message = store
            .message(&stored.conv_id, stored.conv_seq)
            .await?
            .ok_or_else(|| {
                storage::Error::BadData(format!(
                    "dedup record of {sender} points at a missing message"
                ))
            })?;
        let _turn = self
            .fanout_turns
            .take(&stored.conv_id, stored.conv_seq)
            .await;
        // A write that reported a failure but landed is visible only once settled.
        self.conversations
            .settle(&conv_key(&stored.conv_id))
            .await?;
        let members = self.members_sent_to(sender, stored).await?;
        let seqs = self.fan_out(&members, &message, Pass::Resume).await;
        // A failure is logged there; the client's retry finishes the fan-out.
        let _ = self.queue_missing(&message, &members, &seqs).await;
        ack_for(sender, &message, &members, seqs)
    }

    /// The members a stored message was sent to, as its dedup record keeps
    /// them: members added since do not get it, removed ones still do. A
    /// record written before the list was kept falls back to the members
    /// now, with the sender (a member when the message was logged: a
    /// removal since then does not take back its ack).
    async fn members_sent_to(&self, sender: &UserId, stored: MessageRef) -> Result<Vec<UserId>> {
        if !stored.members.is_empty() {
            return Ok(stored.members);
        }
        let mut members = match stored.conv_id.dm_members() {
            Some((a, b)) => vec![a, b],
            None => self.backends.store.members(&stored.conv_id).await?,
        };
        if !members.contains(sender) {
            members.push(sender.clone());
        }
        Ok(members)
    }

    /// The members a message to `conv` goes to; the sender must be one.
    async fn members_for_send(&self, sender: &UserId, conv: &ConvId) -> Result<Vec<UserId>> {
        if let Some((a, b)) = dm_members_of(sender, conv)? {
            return Ok(vec![a, b]);
        }
        let members = self.backends.store.members(conv).await?;
        if !members.contains(sender) {
            return Err(Error::Forbidden);
        }
        Ok(members)
    }

    /// A direct conversation exists implicitly once its first message is sent.
    async fn ensure_dm(&self, conv: &ConvId, a: &UserId, b: &UserId) -> Result<()> {
        if self.known_dms.contains(conv) {
            return Ok(());
        }
        let store = &self.backends.store;
        if store.conversation(conv).await?.is_none() {
            store.add_members(conv, &[a.clone(), b.clone()]).await?;
            let meta = ConversationMeta {
                conv_id: conv.clone(),
                kind: ConvKind::Dm,
                title: None,
                created_at: now_ms(),
            };
            store.put_conversation(&meta).await?;
        }
        self.known_dms.insert(conv);
        Ok(())
    }

    /// Logs the message in its conversation (with its dedup record); the
    /// caller publishes it to history once it is durable. The members are
    /// read as the conversation's writer: a membership change comes wholly
    /// before the message or wholly after it.
    async fn append_to_conversation(
        &self,
        sender: &UserId,
        conv: &ConvId,
        request: SendRequest,
    ) -> Result<Appended<Posted>> {
        let load_head = || async { Ok(self.backends.store.last_conv_seq(conv).await?) };
        let tag = format!("{sender}\0{}", request.client_msg_id);
        // Built once, so that re-issuing the write stores the same message.
        let template = HistoryMessage {
            conv_id: conv.clone(),
            conv_seq: 0,
            from: sender.clone(),
            client_msg_id: request.client_msg_id,
            kind: request.kind,
            body: request.body,
            ts: now_ms(),
            refers_to: request.refers_to,
            recalled: false,
        };
        // A direct conversation's members are fixed by its id: it is made to
        // exist before the writer's turn, so that its sends do not hold the
        // conversation's writer through a store read (under load that read
        // waits for a CPU, and the peer's sends would queue behind it).
        if let Some((a, b)) = dm_members_of(sender, conv)? {
            self.ensure_dm(conv, &a, &b).await?;
        }
        let prepare = || async {
            let mut members = self.members_for_send(sender, conv).await?;
            // A recall also reaches whoever got the message and has left.
            for had_it in self.check_change(sender, &template).await? {
                if !members.contains(&had_it) {
                    members.push(had_it);
                }
            }
            let store = Arc::clone(&self.backends.store);
            Ok(posting(store, &self.in_flight, template, members))
        };
        self.conversations
            .append(&conv_key(conv), tag, load_head, prepare)
            .await
    }
}

/// What the dedup step of a send found or did.
enum Dedup<'a> {
    /// The message was stored before: this is a retry.
    Stored(MessageRef),
    /// Logged now, with its fan-out turn.
    Logged(Appended<Posted>, Turn<'a>),
}

/// The ack once every member's append succeeded; the first error otherwise
/// (the client retries with the same client_msg_id and the retry finishes).
fn ack_for(
    sender: &UserId,
    message: &HistoryMessage,
    members: &[UserId],
    seqs: Vec<Result<Seq>>,
) -> Result<Ack> {
    let mut sender_seq = None;
    for (member, seq) in members.iter().zip(seqs) {
        let seq = seq?;
        if member == sender {
            sender_seq = Some(seq);
        }
    }
    Ok(Ack {
        client_msg_id: message.client_msg_id.clone(),
        conv_id: message.conv_id.clone(),
        conv_seq: message.conv_seq,
        seq: sender_seq.ok_or(Error::Forbidden)?,
        ts: message.ts,
    })
}

/// The two members of a direct conversation, if `conv` is one; the sender
/// must be one of them.
fn dm_members_of(sender: &UserId, conv: &ConvId) -> Result<Option<(UserId, UserId)>> {
    match conv.dm_members() {
        Some((a, b)) if sender != &a && sender != &b => Err(Error::Forbidden),
        members => Ok(members),
    }
}

/// The conversation a send goes to.
pub(crate) fn target_conv(sender: &UserId, target: &Target) -> Result<ConvId> {
    match target {
        Target::Conv(conv) => Ok(conv.clone()),
        Target::Peer(peer) if peer == sender => Err(Error::Invalid(ProtoError::InvalidField {
            field: "to",
            reason: "must name another user, not the sender".into(),
        })),
        Target::Peer(peer) => Ok(ConvId::dm(sender, peer)?),
    }
}

/// A message in its conversation's log, with the members it goes to.
pub(crate) struct Posted {
    pub(crate) message: HistoryMessage,
    pub(crate) members: Vec<UserId>,
    ticket: WriteTicket,
    /// Its fan-out intent, in flight until every holder lets go (after the
    /// send's fan-out, or once a write settled late is queued for one).
    _intent: Arc<InFlightGuard>,
}

impl Logged for Posted {
    fn ticket(&self) -> WriteTicket {
        self.ticket
    }
}

/// The store write of a message at its conv_seq with its fan-out intent,
/// re-issuable (each issue writes the same intent). The intent stays in
/// flight while the write is unsettled (the log holds this write) and
/// while its message is fanned out (the `Posted` holds it): the watermark
/// cannot pass a write that may have landed with nobody fanning it out.
fn posting(
    store: Arc<dyn MessageStore>,
    in_flight: &Arc<InFlight>,
    template: HistoryMessage,
    members: Vec<UserId>,
) -> Write<Posted> {
    let guard = Arc::new(in_flight.register());
    Arc::new(move |conv_seq, _| {
        let store = Arc::clone(&store);
        let message = HistoryMessage {
            conv_seq,
            ..template.clone()
        };
        let (members, guard) = (members.clone(), Arc::clone(&guard));
        Box::pin(async move {
            let intent = RetryItem::intent(guard.at, &message, members.clone());
            let ticket = store.append_message(&message, &intent).await?;
            Ok(Posted {
                message,
                members,
                ticket,
                _intent: guard,
            })
        })
    })
}

/// What a conversation append settled by another caller needs: its own
/// send is gone (it answered `unavailable`), so nobody fans it out unless
/// its client retries. Its members go to the retry queue (a member that has
/// it already is skipped: a retry looks first); the intent stays in flight
/// until the item is written.
pub(crate) fn queue_late_fanout(
    store: Arc<dyn MessageStore>,
    retry: Arc<RetrySignals>,
) -> Announce<Posted> {
    Arc::new(move |posted: &Posted| {
        let (store, retry) = (Arc::clone(&store), Arc::clone(&retry));
        let message = &posted.message;
        let item = RetryItem {
            key: storage::RetryKey {
                enqueued_at: now_ms(),
                conv_id: message.conv_id.clone(),
                conv_seq: message.conv_seq,
            },
            members: posted.members.clone(),
            attempts: 0,
            not_before: 0,
        };
        Box::pin(async move {
            match store.enqueue_retry(&item).await {
                Ok(()) => retry.kick.notify_one(),
                Err(err) => tracing::error!(
                    error = %err, conv = %item.key.conv_id, conv_seq = item.key.conv_seq,
                    "the fan-out of a late-settled message could not be queued"
                ),
            }
        })
    })
}
