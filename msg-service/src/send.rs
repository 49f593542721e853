//! The send path: dedup, membership, the conversation append, and the write
//! fan-out to every member's inbox, all durable before the ack.

use futures_util::stream::{self, StreamExt, TryStreamExt};
use proto::{
    Ack, ConvId, ConvKind, Entry, HistoryMessage, ProtoError, SendRequest, Seq, Target, UserId,
};
use storage::{ConversationMeta, Notification};

use crate::clock::now_ms;
use crate::service::{MessageService, conv_key, inbox_key};
use crate::{Error, Result};

impl MessageService {
    #[tracing::instrument(skip_all, fields(user = %sender), err)]
    pub(crate) async fn send_message(&self, sender: &UserId, request: SendRequest) -> Result<Ack> {
        let conv = target_conv(sender, &request.target)?;
        let store = &self.backends.store;
        let _turn = self.senders.lock(sender).await;
        if let Some(ack) = store.dedup_get(sender, &request.client_msg_id).await? {
            return Ok(ack);
        }
        let members = self.members_for_send(sender, &conv).await?;
        let message = self.append_to_conversation(sender, &conv, request).await?;
        let seq = self.fan_out(sender, &members, &message).await?;
        let ack = Ack {
            client_msg_id: message.client_msg_id,
            conv_id: message.conv_id,
            conv_seq: message.conv_seq,
            seq,
            ts: message.ts,
        };
        store.dedup_put(sender, &ack).await?;
        Ok(ack)
    }

    /// The members a message to `conv` goes to; the sender must be one.
    async fn members_for_send(&self, sender: &UserId, conv: &ConvId) -> Result<Vec<UserId>> {
        if let Some((a, b)) = conv.dm_members() {
            if sender != &a && sender != &b {
                return Err(Error::Forbidden);
            }
            self.ensure_dm(conv, &a, &b).await?;
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
        let store = &self.backends.store;
        if store.conversation(conv).await?.is_some() {
            return Ok(());
        }
        store.add_members(conv, &[a.clone(), b.clone()]).await?;
        let meta = ConversationMeta {
            conv_id: conv.clone(),
            kind: ConvKind::Dm,
            title: None,
            created_at: now_ms(),
        };
        Ok(store.put_conversation(&meta).await?)
    }

    async fn append_to_conversation(
        &self,
        sender: &UserId,
        conv: &ConvId,
        request: SendRequest,
    ) -> Result<HistoryMessage> {
        let store = &self.backends.store;
        let load_head = || async { Ok(store.last_conv_seq(conv).await?) };
        let (_, message) = self
            .conversations
            .append(&conv_key(conv), load_head, |conv_seq| async move {
                let message = HistoryMessage {
                    conv_id: conv.clone(),
                    conv_seq,
                    from: sender.clone(),
                    client_msg_id: request.client_msg_id,
                    kind: request.kind,
                    body: request.body,
                    ts: now_ms(),
                };
                store.append_message(&message).await?;
                Ok(message)
            })
            .await?;
        Ok(message)
    }

    /// Appends the message to every member's inbox (in parallel, bounded);
    /// returns the seq it got in the sender's inbox.
    async fn fan_out(
        &self,
        sender: &UserId,
        members: &[UserId],
        message: &HistoryMessage,
    ) -> Result<Seq> {
        // Built as a Vec first: a closure over borrowed members trips the
        // higher-ranked lifetime check of `Send` futures.
        let appends: Vec<_> = members
            .iter()
            .map(|member| self.append_member(member, message))
            .collect();
        let appends = stream::iter(appends).buffer_unordered(self.config.fanout_concurrency.max(1));
        let seqs: Vec<(&UserId, Seq)> = appends.try_collect().await?;
        seqs.into_iter()
            .find_map(|(member, seq)| (member == sender).then_some(seq))
            .ok_or(Error::Forbidden)
    }

    async fn append_member<'a>(
        &self,
        member: &'a UserId,
        message: &HistoryMessage,
    ) -> Result<(&'a UserId, Seq)> {
        Ok((member, self.append_to_inbox(member, message).await?))
    }

    /// Appends one inbox entry, updates the cache in order, and notifies.
    pub(crate) async fn append_to_inbox(
        &self,
        user: &UserId,
        message: &HistoryMessage,
    ) -> Result<Seq> {
        let Self { backends, .. } = self;
        let load_head = || async { Ok(backends.store.inbox_head(user).await?) };
        let (seq, ()) = self
            .inboxes
            .append(&inbox_key(user), load_head, |seq| async move {
                let entry = Entry {
                    seq,
                    message: message.clone(),
                };
                backends.store.append_inbox(user, &entry).await?;
                // The cache must never show a hole: if it misses an entry, drop it.
                if let Err(err) = backends.cache.append(user, &entry).await {
                    tracing::warn!(error = %err, %user, "inbox cache write failed; dropping it");
                    let _ = backends.cache.invalidate(user).await;
                }
                Ok(())
            })
            .await?;
        self.notify(user, seq).await;
        Ok(seq)
    }

    /// Tells the gateways holding `user` that the inbox head moved. Best
    /// effort: a lost notify loses nothing, the next sync finds the entry.
    async fn notify(&self, user: &UserId, head: Seq) {
        let gateways = match self.backends.presence.gateways(user).await {
            Ok(gateways) => gateways,
            Err(err) => {
                tracing::warn!(error = %err, %user, "presence lookup failed; notify skipped");
                return;
            }
        };
        for gateway in gateways {
            let note = Notification {
                user: user.clone(),
                head,
            };
            if let Err(err) = self.backends.bus.publish(&gateway, note).await {
                tracing::warn!(error = %err, %gateway, "notify publish failed");
            }
        }
    }
}

/// The conversation a send goes to.
fn target_conv(sender: &UserId, target: &Target) -> Result<ConvId> {
    match target {
        Target::Conv(conv) => Ok(conv.clone()),
        Target::Peer(peer) if peer == sender => Err(Error::Invalid(ProtoError::InvalidField {
            field: "to",
            reason: "must name another user, not the sender".into(),
        })),
        Target::Peer(peer) => Ok(ConvId::dm(sender, peer)?),
    }
}
