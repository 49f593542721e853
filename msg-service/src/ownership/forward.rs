//! The message API of one replica among N: a call about a log runs where
//! its shard is served; any other replica forwards it there, in one hop
//! (a forwarded call is never forwarded again).

use std::sync::Arc;

use async_trait::async_trait;
use proto::{Ack, ConvId, SendRequest, Seq, SyncResult, UserId};
use storage::Page;

use super::{Route, Routes, conversation_shard, inbox_shard};
use crate::api::{Conversation, HistoryPage};
use crate::send::target_conv;
use crate::{MessageApi, MessageService, Result};

/// A replica's service as gateways call it: sends, history and membership
/// changes at the owner of the conversation, syncs at the owner of the
/// inbox; the list of conversations and new groups wherever the call lands.
#[derive(Clone)]
pub struct RoutedService {
    local: MessageService,
    /// The same service, as the API calls served here go to.
    here: Arc<dyn MessageApi>,
}

impl RoutedService {
    /// Routes by `local`'s leases (a service without them serves all here).
    pub fn new(local: MessageService) -> Self {
        let here = Arc::new(local.clone());
        RoutedService { local, here }
    }

    /// Runs `call` where logs of `shard` are served: here, or forwarded
    /// to their owner; held while the shard is on its way between two
    /// replicas (see [`super::routes::Handover`]).
    async fn at_owner<T, F, Fut>(&self, shard: u16, call: F) -> Result<T>
    where
        F: Fn(Arc<dyn MessageApi>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let Some(routes) = self.local.routes() else {
            return call(Arc::clone(&self.here)).await;
        };
        let mut handover = routes.handover();
        loop {
            match self.at_routed_owner(routes, shard, &call).await {
                Err(err) if err.is_shard_not_served() && handover.wait().await => {}
                outcome => return outcome,
            }
        }
    }

    /// Runs `call` where `routes` say `shard` is served. A forwarded call
    /// whose shard moves meanwhile (its owner died, or was paused past its
    /// lease, and another took the shard over) is given up and made again
    /// at the new owner, a few times at most, instead of waiting out its
    /// deadline at a replica that will not answer. Making it again is
    /// safe: every call is idempotent (a send by its client_msg_id) and a
    /// deposed owner's writes are fenced off.
    async fn at_routed_owner<T, F, Fut>(&self, routes: &Routes, shard: u16, call: &F) -> Result<T>
    where
        F: Fn(Arc<dyn MessageApi>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        for _ in 0..MOVES_FOLLOWED {
            let (addr, peer) = match routes.to_shard(shard)? {
                Route::Here => return call(Arc::clone(&self.here)).await,
                Route::Peer(addr, peer) => (addr, peer),
            };
            let shards = [shard];
            tokio::select! {
                outcome = call(peer) => return outcome,
                () = routes.moved_from(&addr, &shards) => {
                    tracing::info!(shard, from = %addr, "a forwarded call's shard moved; calling its new owner");
                }
            }
        }
        Err(storage::Error::Unavailable(
            format!("shard {shard} keeps moving between replicas").into(),
        )
        .into())
    }
}

/// How many moves of its shard a forwarded call follows before it fails
/// (retryable): a shard moves once when its owner dies, twice when a paused
/// owner comes back.
const MOVES_FOLLOWED: usize = 3;

#[async_trait]
impl MessageApi for RoutedService {
    async fn send(&self, sender: &UserId, request: SendRequest) -> Result<Ack> {
        let conv = target_conv(sender, &request.target)?;
        self.at_owner(conversation_shard(&conv), |api| {
            let request = request.clone();
            async move { api.send(sender, request).await }
        })
        .await
    }

    async fn sync(&self, user: &UserId, since: Seq, limit: usize) -> Result<SyncResult> {
        self.at_owner(inbox_shard(user), |api| async move {
            api.sync(user, since, limit).await
        })
        .await
    }

    async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        self.at_owner(inbox_shard(user), |api| async move {
            api.inbox_head(user).await
        })
        .await
    }

    async fn history(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.at_owner(conversation_shard(conv), |api| async move {
            api.history(user, conv, page, limit).await
        })
        .await
    }

    async fn conversations(&self, user: &UserId) -> Result<Vec<Conversation>> {
        self.local.conversations(user).await
    }

    async fn conversation(&self, user: &UserId, conv: &ConvId) -> Result<Conversation> {
        self.at_owner(conversation_shard(conv), |api| async move {
            api.conversation(user, conv).await
        })
        .await
    }

    async fn create_group(
        &self,
        creator: &UserId,
        members: Vec<UserId>,
        title: Option<String>,
    ) -> Result<Conversation> {
        // A new group's id is picked in a shard served here; a replica
        // handing its shards over serves none, so another one picks it.
        if let Some(routes) = self.local.routes()
            && routes.keeper().handing_over()
            && let Route::Peer(_, peer) = routes.to_shard(0)?
        {
            return peer.create_group(creator, members, title).await;
        }
        self.local.create_group(creator, members, title).await
    }

    async fn add_members(
        &self,
        caller: &UserId,
        conv: &ConvId,
        members: Vec<UserId>,
    ) -> Result<Conversation> {
        self.at_owner(conversation_shard(conv), |api| {
            let members = members.clone();
            async move { api.add_members(caller, conv, members).await }
        })
        .await
    }

    async fn remove_member(
        &self,
        caller: &UserId,
        conv: &ConvId,
        member: &UserId,
    ) -> Result<Conversation> {
        self.at_owner(conversation_shard(conv), |api| async move {
            api.remove_member(caller, conv, member).await
        })
        .await
    }

    async fn mark_read(&self, user: &UserId, conv: &ConvId, conv_seq: Seq) -> Result<Seq> {
        self.at_owner(conversation_shard(conv), |api| async move {
            api.mark_read(user, conv, conv_seq).await
        })
        .await
    }

    async fn flush(&self) -> Result<()> {
        self.local.flush().await
    }
}
