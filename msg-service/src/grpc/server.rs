//! The gRPC server: each call validates its fields, then calls the service.

use std::sync::Arc;

use proto::grpc as pb;
use proto::grpc::messages_server::Messages;
use proto::{SendRequest, Seq, clamp_sync_limit};
use storage::Page;
use tonic::{Request, Response, Status};

use super::convert::*;
use crate::MessageApi;

/// Serves a [`MessageApi`] (the in-process service) over gRPC.
pub struct GrpcService {
    api: Arc<dyn MessageApi>,
}

impl GrpcService {
    /// A server for `api`; wrap it in `MessagesServer::new` to serve it.
    pub fn new(api: Arc<dyn MessageApi>) -> Self {
        GrpcService { api }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn reply<T, U>(result: crate::Result<T>, convert: impl FnOnce(T) -> U) -> Reply<U> {
    result
        .map(|v| Response::new(convert(v)))
        .map_err(error_to_status)
}

fn invalid(err: proto::ProtoError) -> Status {
    error_to_status(crate::Error::Invalid(err))
}

#[tonic::async_trait]
impl Messages for GrpcService {
    async fn send(&self, request: Request<pb::SendRequest>) -> Reply<pb::Ack> {
        let r = request.into_inner();
        let sender = user(&r.user)?;
        let (conv_id, to) = match &r.target {
            Some(pb::send_request::Target::ConvId(c)) => (Some(c.as_str()), None),
            Some(pb::send_request::Target::To(t)) => (None, Some(t.as_str())),
            None => (None, None),
        };
        let kind = (!r.kind.is_empty()).then_some(r.kind.as_str());
        let send = SendRequest::new(Some(&r.client_msg_id), conv_id, to, kind, Some(r.body))
            .map_err(invalid)?;
        reply(self.api.send(&sender, send).await, ack_to_pb)
    }

    async fn sync(&self, request: Request<pb::SyncRequest>) -> Reply<pb::SyncReply> {
        let r = request.into_inner();
        let limit = clamp_sync_limit(Some(u64::from(r.limit))).map_err(invalid)?;
        let result = self.api.sync(&user(&r.user)?, r.since, limit).await;
        reply(result, |s| pb::SyncReply {
            entries: s.entries.into_iter().map(entry_to_pb).collect(),
            head: s.head,
            more: s.more,
        })
    }

    async fn inbox_head(&self, request: Request<pb::UserRequest>) -> Reply<pb::HeadReply> {
        let r = request.into_inner();
        reply(self.api.inbox_head(&user(&r.user)?).await, |head: Seq| {
            pb::HeadReply { head }
        })
    }

    async fn history(&self, request: Request<pb::HistoryRequest>) -> Reply<pb::HistoryReply> {
        let r = request.into_inner();
        let page = match r.page {
            Some(pb::history_request::Page::After(after)) => Page::After(after),
            Some(pb::history_request::Page::Before(before)) => Page::Before(before),
            None => Page::Before(Seq::MAX),
        };
        let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
        let result = self
            .api
            .history(&user(&r.user)?, &conv(&r.conv_id)?, page, limit)
            .await;
        reply(result, |h| pb::HistoryReply {
            messages: h.messages.into_iter().map(message_to_pb).collect(),
            next: h.next,
            degraded: h.degraded,
        })
    }

    async fn conversations(
        &self,
        request: Request<pb::UserRequest>,
    ) -> Reply<pb::ConversationsReply> {
        let r = request.into_inner();
        reply(self.api.conversations(&user(&r.user)?).await, |list| {
            pb::ConversationsReply {
                conversations: list.into_iter().map(conversation_to_pb).collect(),
            }
        })
    }

    async fn get_conversation(
        &self,
        request: Request<pb::ConversationRequest>,
    ) -> Reply<pb::Conversation> {
        let r = request.into_inner();
        reply(
            self.api
                .conversation(&user(&r.user)?, &conv(&r.conv_id)?)
                .await,
            conversation_to_pb,
        )
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Reply<pb::Conversation> {
        let r = request.into_inner();
        let result = self
            .api
            .create_group(&user(&r.user)?, users(&r.members)?, r.title)
            .await;
        reply(result, conversation_to_pb)
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Reply<pb::Conversation> {
        let r = request.into_inner();
        let result = self
            .api
            .add_members(&user(&r.user)?, &conv(&r.conv_id)?, users(&r.members)?)
            .await;
        reply(result, conversation_to_pb)
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::Conversation> {
        let r = request.into_inner();
        let result = self
            .api
            .remove_member(&user(&r.user)?, &conv(&r.conv_id)?, &user(&r.member)?)
            .await;
        reply(result, conversation_to_pb)
    }
}
