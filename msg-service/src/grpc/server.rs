//! The gRPC server: each call validates its fields, then calls the service.

use std::sync::Arc;

use proto::grpc as pb;
use proto::grpc::messages_server::Messages;
use proto::{SendRequest, Seq, clamp_sync_limit};
use storage::Page;
use tonic::{Request, Response, Status};

use super::client::FORWARDED_KEY;
use super::convert::*;
use crate::ownership::RoutedService;
use crate::{MessageApi, MessageService};

/// Serves a [`MessageApi`] (the in-process service) over gRPC.
pub struct GrpcService {
    /// What gateways' calls go to.
    api: Arc<dyn MessageApi>,
    /// A replica's own service: what calls forwarded by other replicas go
    /// to (never forwarded again), and Deliver calls.
    owner: Option<MessageService>,
}

impl GrpcService {
    /// A server for `api`; wrap it in `MessagesServer::new` to serve it.
    pub fn new(api: Arc<dyn MessageApi>) -> Self {
        GrpcService { api, owner: None }
    }

    /// A server for one replica among several: gateways' calls are routed
    /// to the owners of their logs, forwarded calls served by `service`.
    pub fn replica(service: MessageService) -> Self {
        GrpcService {
            api: Arc::new(RoutedService::new(service.clone())),
            owner: Some(service),
        }
    }

    /// The service a call goes to: a forwarded one is served here.
    fn api_for<T>(&self, request: &Request<T>) -> &dyn MessageApi {
        match &self.owner {
            Some(owner) if request.metadata().contains_key(FORWARDED_KEY) => owner,
            _ => &*self.api,
        }
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
        let api = self.api_for(&request);
        let r = request.into_inner();
        let sender = user(&r.user)?;
        let (conv_id, to) = match &r.target {
            Some(pb::send_request::Target::ConvId(c)) => (Some(c.as_str()), None),
            Some(pb::send_request::Target::To(t)) => (None, Some(t.as_str())),
            None => (None, None),
        };
        let send = match r.kind.as_str() {
            "recall" => SendRequest::recall(Some(&r.client_msg_id), conv_id, r.r#ref),
            "edit" => SendRequest::edit(Some(&r.client_msg_id), conv_id, r.r#ref, Some(r.body)),
            kind => {
                let kind = (!kind.is_empty()).then_some(kind);
                SendRequest::new(Some(&r.client_msg_id), conv_id, to, kind, Some(r.body))
            }
        }
        .map_err(invalid)?;
        reply(api.send(&sender, send).await, ack_to_pb)
    }

    async fn sync(&self, request: Request<pb::SyncRequest>) -> Reply<pb::SyncReply> {
        let api = self.api_for(&request);
        let r = request.into_inner();
        let limit = clamp_sync_limit(Some(u64::from(r.limit))).map_err(invalid)?;
        let result = api.sync(&user(&r.user)?, r.since, limit).await;
        reply(result, |s| pb::SyncReply {
            entries: s.entries.into_iter().map(entry_to_pb).collect(),
            head: s.head,
            more: s.more,
        })
    }

    async fn inbox_head(&self, request: Request<pb::UserRequest>) -> Reply<pb::HeadReply> {
        let api = self.api_for(&request);
        let r = request.into_inner();
        reply(api.inbox_head(&user(&r.user)?).await, |head: Seq| {
            pb::HeadReply { head }
        })
    }

    async fn history(&self, request: Request<pb::HistoryRequest>) -> Reply<pb::HistoryReply> {
        let api = self.api_for(&request);
        let r = request.into_inner();
        let page = match r.page {
            Some(pb::history_request::Page::After(after)) => Page::After(after),
            Some(pb::history_request::Page::Before(before)) => Page::Before(before),
            None => Page::Before(Seq::MAX),
        };
        let limit = usize::try_from(r.limit).unwrap_or(usize::MAX);
        let result = api
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
        let api = self.api_for(&request);
        let r = request.into_inner();
        reply(api.conversations(&user(&r.user)?).await, |list| {
            pb::ConversationsReply {
                conversations: list.into_iter().map(conversation_to_pb).collect(),
            }
        })
    }

    async fn get_conversation(
        &self,
        request: Request<pb::ConversationRequest>,
    ) -> Reply<pb::Conversation> {
        let api = self.api_for(&request);
        let r = request.into_inner();
        reply(
            api.conversation(&user(&r.user)?, &conv(&r.conv_id)?).await,
            conversation_to_pb,
        )
    }

    async fn create_group(
        &self,
        request: Request<pb::CreateGroupRequest>,
    ) -> Reply<pb::Conversation> {
        let api = self.api_for(&request);
        let r = request.into_inner();
        let result = api
            .create_group(&user(&r.user)?, users(&r.members)?, r.title)
            .await;
        reply(result, conversation_to_pb)
    }

    async fn add_members(
        &self,
        request: Request<pb::AddMembersRequest>,
    ) -> Reply<pb::Conversation> {
        let api = self.api_for(&request);
        let r = request.into_inner();
        let result = api
            .add_members(&user(&r.user)?, &conv(&r.conv_id)?, users(&r.members)?)
            .await;
        reply(result, conversation_to_pb)
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::Conversation> {
        let api = self.api_for(&request);
        let r = request.into_inner();
        let result = api
            .remove_member(&user(&r.user)?, &conv(&r.conv_id)?, &user(&r.member)?)
            .await;
        reply(result, conversation_to_pb)
    }

    async fn mark_read(&self, request: Request<pb::MarkReadRequest>) -> Reply<pb::MarkReadReply> {
        let api = self.api_for(&request);
        let r = request.into_inner();
        let result = api
            .mark_read(&user(&r.user)?, &conv(&r.conv_id)?, r.conv_seq)
            .await;
        reply(result, |conv_seq| pb::MarkReadReply { conv_seq })
    }

    async fn deliver(&self, request: Request<pb::DeliverRequest>) -> Reply<pb::DeliverReply> {
        let Some(owner) = &self.owner else {
            return Err(Status::unimplemented("Deliver is a call between replicas"));
        };
        let r = request.into_inner();
        let message = message_from_pb(r.message.unwrap_or_default())?;
        let members = users(&r.members)?;
        let outcomes = owner.deliver_for_peer(message, members).await;
        let mut reply = pb::DeliverReply::default();
        for outcome in outcomes {
            let (seq, not_served) = match outcome {
                Ok(seq) => (seq, false),
                Err(err) if err.is_shard_not_served() => (0, true),
                Err(err) => {
                    tracing::warn!(error = ?err, "an inbox append for another replica failed");
                    (0, false)
                }
            };
            reply.seqs.push(seq);
            reply.not_served.push(not_served);
        }
        Ok(Response::new(reply))
    }
}
