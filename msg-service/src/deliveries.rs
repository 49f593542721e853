//! The fan-out's inbox appends, each at the owner of its inbox: those this
//! process serves here, the others as one Deliver call per owning replica.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::join_all;
use futures_util::stream::{self, StreamExt};
use proto::{HistoryMessage, MessageKind, Seq, UserId};

use crate::Result;
use crate::grpc::RemoteMessageService;
use crate::ownership::{Route, Routes, inbox_shard};
use crate::service::{Core, conv_key, inbox_key};

impl Core {
    /// Appends the message to every member's inbox, in parallel (bounded by
    /// the group size cap). Every append runs to its end even if another
    /// fails, so a retry only has the failed ones left to do. Each member's
    /// outcome, in order.
    pub(crate) async fn fan_out(
        &self,
        members: &[UserId],
        message: &HistoryMessage,
        pass: Pass,
    ) -> Vec<Result<Seq>> {
        // A recall reaches no inbox before its message is blanked in the log.
        if let Err(err) = self.recall_in_log(message).await {
            tracing::warn!(error = %err, conv = %message.conv_id, "a recall could not blank its message");
            return members.iter().map(|_| Err(recall_unfinished())).collect();
        }
        let Some(routes) = &self.routes else {
            return self.fan_out_here(members, message, pass).await;
        };
        // Inboxes whose shard is on its way between replicas are appended
        // to once it arrives, not left to the retry queue's backoff.
        let mut handover = routes.handover();
        let mut outcomes = self.fan_out_routed(routes, members, message, pass).await;
        loop {
            let moving: Vec<usize> = outcomes
                .iter()
                .enumerate()
                .filter(|(_, outcome)| matches!(outcome, Err(err) if err.is_shard_not_served()))
                .map(|(i, _)| i)
                .collect();
            if moving.is_empty() || !handover.wait().await {
                return outcomes;
            }
            let again: Vec<UserId> = moving.iter().map(|&i| members[i].clone()).collect();
            let retried = self.fan_out_routed(routes, &again, message, pass).await;
            for (i, outcome) in moving.into_iter().zip(retried) {
                outcomes[i] = outcome;
            }
        }
    }

    /// Appends the message to every member's inbox at its owner, as
    /// `routes` say now: here, or one Deliver call per owning replica.
    async fn fan_out_routed(
        &self,
        routes: &Routes,
        members: &[UserId],
        message: &HistoryMessage,
        pass: Pass,
    ) -> Vec<Result<Seq>> {
        let mut outcomes: Vec<Option<Result<Seq>>> = members.iter().map(|_| None).collect();
        let mut here = Vec::new();
        let mut away: HashMap<String, (Arc<RemoteMessageService>, Vec<usize>)> = HashMap::new();
        for (i, member) in members.iter().enumerate() {
            match routes.to_shard(inbox_shard(member)) {
                Ok(Route::Here) => here.push(i),
                Ok(Route::Peer(addr, peer)) => {
                    away.entry(addr).or_insert((peer, Vec::new())).1.push(i)
                }
                Err(err) => outcomes[i] = Some(Err(err)),
            }
        }
        let local: Vec<UserId> = here.iter().map(|&i| members[i].clone()).collect();
        let remote = join_all(away.into_iter().map(|(addr, (peer, indexes))| async move {
            let batch: Vec<UserId> = indexes.iter().map(|&i| members[i].clone()).collect();
            let shards: Vec<u16> = batch.iter().map(inbox_shard).collect();
            // A replica that dies or pauses mid-call does not answer: once
            // its shards moved, the batch fails at once (to be retried at
            // the new owners), not at the call's deadline.
            let results = tokio::select! {
                results = peer.deliver(message, &batch) => results,
                () = routes.moved_from(&addr, &shards) => batch.iter().map(|_| Err(moved_away())).collect(),
            };
            (indexes, results)
        }));
        let (local, remote) = tokio::join!(self.fan_out_here(&local, message, pass), remote);
        for (i, outcome) in here.into_iter().zip(local) {
            outcomes[i] = Some(outcome);
        }
        for (indexes, results) in remote {
            for (i, outcome) in indexes.into_iter().zip(results) {
                outcomes[i] = Some(outcome);
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|| Err(not_routed())))
            .collect()
    }

    /// A Deliver call from the replica that owns the message's
    /// conversation: appends it to the inboxes of `members` served here,
    /// each looked at first (the caller's earlier try may have landed with
    /// its answer lost; see `deliver`). What is appended is the message as
    /// its conversation's log holds it: one the log does not hold (a
    /// deposed owner's, fenced off) is appended nowhere.
    pub(crate) async fn deliver_for_peer(
        &self,
        message: &HistoryMessage,
        members: &[UserId],
    ) -> Vec<Result<Seq>> {
        if message.kind == MessageKind::Read {
            return self.fan_out_here(members, message, Pass::Always).await;
        }
        let stored = self
            .backends
            .store
            .message(&message.conv_id, message.conv_seq)
            .await;
        match stored {
            Ok(Some(stored)) => self.fan_out_here(members, &stored, Pass::Resume).await,
            Ok(None) => members.iter().map(|_| Err(not_in_log(message))).collect(),
            Err(err) => {
                let err = crate::Error::from(err);
                let reason = err.to_string();
                members
                    .iter()
                    .map(|_| Err(storage::Error::Unavailable(reason.clone().into()).into()))
                    .collect()
            }
        }
    }

    /// Appends to the inboxes of `members`, all served here (an append to
    /// one that is not fails `unavailable`).
    async fn fan_out_here(
        &self,
        members: &[UserId],
        message: &HistoryMessage,
        pass: Pass,
    ) -> Vec<Result<Seq>> {
        // Collected first: a closure over borrowed members trips the
        // higher-ranked lifetime check of `Send` futures.
        let deliveries: Vec<_> = members
            .iter()
            .map(|member| {
                self.bulkheads
                    .fanout
                    .run(self.deliver(member, message, pass))
            })
            .collect();
        let concurrency = self.config.fanout_concurrency.max(1);
        // Polling a few futures together costs less than a buffered
        // stream's task per future and its wakers (a DM has two members).
        if deliveries.len() <= concurrency.min(FEW_MEMBERS) {
            return join_all(deliveries).await;
        }
        stream::iter(deliveries)
            .buffered(concurrency)
            .collect()
            .await
    }

    /// Appends to one inbox; when resuming, first looks whether it is there.
    /// The inbox's unsettled write is settled before the look, not after: it
    /// may be this message, and another append would settle it between the
    /// look and this append (a second copy).
    ///
    /// Every delivery holds the lock of `(user, message)` from its look to
    /// its append, so two of one message into one inbox never both append
    /// it: a Deliver call (always a resume) and a retry here, say. A first
    /// pass does not look while the lease it logged the message under
    /// holds; once the conversation moved, its new owner may already be
    /// resuming the message here, so it looks too. The lock is never held
    /// across a call to another replica.
    async fn deliver(&self, user: &UserId, message: &HistoryMessage, pass: Pass) -> Result<Seq> {
        let _once = self
            .deliveries
            .lock(&(user, &message.conv_id, message.conv_seq))
            .await;
        let look = match pass {
            Pass::Always => false,
            Pass::Resume => true,
            Pass::First { conv_epoch } => !self
                .conversations
                .serves_at(&conv_key(&message.conv_id), conv_epoch),
        };
        if look {
            self.inboxes.settle(&inbox_key(user)).await?;
            let store = &self.backends.store;
            // Opened first: an entry an earlier process left unsettled is
            // fenced off, not taken for delivered.
            let load_head = || async { Ok(store.inbox_head(user).await?) };
            self.inboxes.open(&inbox_key(user), load_head).await?;
            if let Some(seq) = store
                .inbox_seq_of(user, &message.conv_id, message.conv_seq)
                .await?
            {
                return Ok(seq);
            }
        }
        self.append_to_inbox(user, message).await
    }
}

/// Up to this many members, a fan-out polls its appends as one future.
const FEW_MEMBERS: usize = 8;

/// How a fan-out appends to each inbox.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pass {
    /// The first, by the send that logged the message, under this epoch of
    /// its conversation's lease.
    First {
        /// The epoch the message was logged under.
        conv_epoch: u64,
    },
    /// Any later one (a client's retry, the retry queue, recovery, a
    /// Deliver call): each inbox is looked at first.
    Resume,
    /// An entry that is in no conversation's log (a `read` entry): appended
    /// without a look; a repeat is another entry saying the same.
    Always,
}

/// A Deliver of a message its log does not hold: not appended, and said so
/// as a retryable failure (the caller's view of the log may be stale).
fn not_in_log(message: &HistoryMessage) -> crate::Error {
    storage::Error::Unavailable(
        format!(
            "message {} #{} is not in its log here",
            message.conv_id, message.conv_seq
        )
        .into(),
    )
    .into()
}

/// Every member is given a route or an outcome above; kept total anyway.
fn moved_away() -> crate::Error {
    storage::Error::Unavailable("the inbox moved to another replica during its append".into())
        .into()
}

fn recall_unfinished() -> crate::Error {
    storage::Error::Unavailable("the recalled message could not be blanked yet".into()).into()
}

fn not_routed() -> crate::Error {
    storage::Error::Unavailable("no route to the inbox's owner".into()).into()
}
