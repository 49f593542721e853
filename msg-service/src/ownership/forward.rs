//! The message API of one replica among N: a call about a log runs where
//! its shard is served; any other replica forwards it there, in one hop
//! (a forwarded call is never forwarded again).

use std::sync::Arc;

use async_trait::async_trait;
use proto::{Ack, ConvId, SendRequest, Seq, SyncResult, UserId};
use storage::Page;

use super::{Route, conversation_shard, inbox_shard};
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

    /// Who serves calls about logs of `shard`: this replica or another.
    fn owner(&self, shard: u16) -> Result<Arc<dyn MessageApi>> {
        let route = match self.local.routes() {
            Some(routes) => routes.to_shard(shard)?,
            None => Route::Here,
        };
        Ok(match route {
            Route::Here => Arc::clone(&self.here),
            Route::Peer(_, peer) => peer,
        })
    }
}

#[async_trait]
impl MessageApi for RoutedService {
    async fn send(&self, sender: &UserId, request: SendRequest) -> Result<Ack> {
        let conv = target_conv(sender, &request.target)?;
        self.owner(conversation_shard(&conv))?
            .send(sender, request)
            .await
    }

    async fn sync(&self, user: &UserId, since: Seq, limit: usize) -> Result<SyncResult> {
        self.owner(inbox_shard(user))?
            .sync(user, since, limit)
            .await
    }

    async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        self.owner(inbox_shard(user))?.inbox_head(user).await
    }

    async fn history(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.owner(conversation_shard(conv))?
            .history(user, conv, page, limit)
            .await
    }

    async fn conversations(&self, user: &UserId) -> Result<Vec<Conversation>> {
        self.local.conversations(user).await
    }

    async fn conversation(&self, user: &UserId, conv: &ConvId) -> Result<Conversation> {
        self.owner(conversation_shard(conv))?
            .conversation(user, conv)
            .await
    }

    async fn create_group(
        &self,
        creator: &UserId,
        members: Vec<UserId>,
        title: Option<String>,
    ) -> Result<Conversation> {
        // A new group's id is picked in a shard served here.
        self.local.create_group(creator, members, title).await
    }

    async fn add_members(
        &self,
        caller: &UserId,
        conv: &ConvId,
        members: Vec<UserId>,
    ) -> Result<Conversation> {
        self.owner(conversation_shard(conv))?
            .add_members(caller, conv, members)
            .await
    }

    async fn remove_member(
        &self,
        caller: &UserId,
        conv: &ConvId,
        member: &UserId,
    ) -> Result<Conversation> {
        self.owner(conversation_shard(conv))?
            .remove_member(caller, conv, member)
            .await
    }

    async fn flush(&self) -> Result<()> {
        self.local.flush().await
    }
}
