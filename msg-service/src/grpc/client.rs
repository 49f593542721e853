//! The client gateways use to call a remote msg-service: the same
//! [`MessageApi`] as the in-process service, with a timeout on every call,
//! a circuit breaker (`msg_service`) that fails calls fast while the service
//! is down, and budgeted retries of the reads (never of writes: a send that
//! fails answers `unavailable`, and the client resends it with the same
//! client_msg_id). History and conversation lists travel on a connection of
//! their own, so a flood of them cannot hold up sends and syncs behind it on
//! one HTTP/2 connection (its stream limit and flow-control window), and
//! through a breaker of their own (`msg_service_bulk`): history pages timing
//! out under a flood mean history is slow, not that the service is down, and
//! must not fail sends fast.

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use proto::grpc as pb;
use proto::grpc::messages_client::MessagesClient;
use proto::{Ack, ConvId, HistoryMessage, SendRequest, Seq, SyncResult, Target, UserId};
use storage::Page;
use storage::resilience::{
    Breaker, BreakerConfig, RetryBudget, RetryPolicy, retry_when, watch_recovery,
};
use tonic::transport::{Channel, Endpoint};

use super::convert::*;
use crate::api::{Conversation, HistoryPage};
use crate::ownership::inbox_shard;
use crate::{MessageApi, Result};

/// How the client reaches the service.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The service's URL, e.g. `http://127.0.0.1:9090`.
    pub url: String,
    /// Deadline of every call.
    pub timeout: Duration,
    /// Deadline of establishing a connection.
    pub connect_timeout: Duration,
    /// When the `msg_service` breaker opens.
    pub breaker: BreakerConfig,
    /// How reads are retried.
    pub retry: RetryPolicy,
    /// The budget reads' retries draw on.
    pub budget: RetryBudget,
    /// The caller is another replica forwarding a call to the owner of its
    /// log: the callee serves it itself, never forwards it again.
    pub forwarded: bool,
}

impl ClientConfig {
    /// A client of the service at `url` with the given call deadline and
    /// the default breaker and retries.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Self {
        ClientConfig {
            url: url.into(),
            timeout,
            connect_timeout: Duration::from_secs(1),
            breaker: BreakerConfig::default(),
            retry: RetryPolicy::default(),
            budget: RetryBudget::default(),
            forwarded: false,
        }
    }

    /// A client of the replica at `addr` (`host:port`) for forwarded calls.
    pub fn peer(addr: &str, timeout: Duration) -> Self {
        ClientConfig {
            forwarded: true,
            ..ClientConfig::new(format!("http://{addr}"), timeout)
        }
    }
}

/// The deadline of a Deliver call: one inbox append per member at the
/// callee, well inside the deadline of a forwarded send that waits for it.
const DELIVER_TIMEOUT: Duration = Duration::from_millis(2_000);

/// The metadata key that marks a call forwarded by another replica.
pub(crate) const FORWARDED_KEY: &str = "chat-forwarded";

/// One connection to the service and the breaker its calls go through.
#[derive(Clone)]
struct Lane {
    client: MessagesClient<Channel>,
    breaker: Breaker,
}

/// A [`MessageApi`] over gRPC. Connects lazily: a gateway starts even while
/// the service is down, and its calls answer `unavailable` until it is up.
#[derive(Clone)]
pub struct RemoteMessageService {
    /// Sends, syncs and the other short calls.
    main: Lane,
    /// History pages and conversation lists: larger answers, on their own
    /// connection and breaker.
    bulk: Lane,
    retry: RetryPolicy,
    budget: RetryBudget,
    forwarded: bool,
}

impl RemoteMessageService {
    /// A client for the service at `config.url` (not yet connected).
    pub fn new(config: &ClientConfig) -> Result<Self, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(config.url.clone())?
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20));
        let names = if config.forwarded {
            ["peer", "peer_bulk"]
        } else {
            ["msg_service", "msg_service_bulk"]
        };
        let lane = |name| {
            let breaker = Breaker::new(name, config.breaker);
            watch_service_recovery(&breaker, endpoint.clone());
            // A lazy channel of the endpoint each: two HTTP/2 connections.
            Lane {
                client: MessagesClient::new(endpoint.connect_lazy()),
                breaker,
            }
        };
        Ok(RemoteMessageService {
            main: lane(names[0]),
            bulk: lane(names[1]),
            retry: config.retry,
            budget: config.budget.clone(),
            forwarded: config.forwarded,
        })
    }

    /// The `msg_service` breaker, of sends and syncs (for `/readyz`).
    pub fn breaker(&self) -> &Breaker {
        &self.main.breaker
    }

    fn client(&self) -> MessagesClient<Channel> {
        self.main.client.clone()
    }

    /// A request of `message`, marked when this client forwards for a replica.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if self.forwarded {
            request.metadata_mut().insert(
                FORWARDED_KEY,
                tonic::metadata::MetadataValue::from_static("1"),
            );
        }
        request
    }

    /// Appends a stored message to the inboxes of `members` at the replica
    /// that owns them (the caller holds the message's fan-out turn): each
    /// member's outcome, in order. Never retried here: the fan-out's own
    /// retry finds what landed.
    pub(crate) async fn deliver(
        &self,
        message: &HistoryMessage,
        members: &[UserId],
    ) -> Vec<Result<Seq>> {
        let request = pb::DeliverRequest {
            message: Some(message_to_pb(message.clone())),
            members: members.iter().map(ToString::to_string).collect(),
        };
        let mut request = self.request(request);
        // Inside the deadline of a forwarded send that waits for it.
        request.set_timeout(DELIVER_TIMEOUT);
        let reply = self.unary(self.client().deliver(request)).await;
        delivered(reply, members)
    }

    /// One call through the breaker: only the call itself failing (the
    /// service down or too slow) counts against it, never an error the
    /// service answered.
    async fn unary<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        unary_through(&self.main.breaker, call).await
    }

    /// A read on `connection` (`client` or `bulk`, see the module docs),
    /// retried within the policy and the budget while the call itself fails
    /// (not while the breaker is open).
    async fn read<M, T, F, Fut>(
        &self,
        lane: &Lane,
        name: &'static str,
        message: M,
        mut call: F,
    ) -> Result<T>
    where
        M: Clone,
        F: FnMut(MessagesClient<Channel>, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        retry_when(name, &self.retry, &self.budget, is_call_failure, || {
            let request = self.request(message.clone());
            unary_through(&lane.breaker, call(lane.client.clone(), request))
        })
        .await
    }
}

/// One call through `breaker`: only the call itself failing (the service
/// down or too slow) counts against it, never an error the service answered.
async fn unary_through<T>(
    breaker: &Breaker,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T> {
    let answered = async {
        call.await
            .map(tonic::Response::into_inner)
            .map_err(status_to_error)
    };
    breaker.run(answered, is_call_failure).await
}

/// How often an open `msg_service` breaker tries the service afresh.
const RECOVERY_PROBE_EVERY: Duration = Duration::from_millis(200);

/// While the breaker is open, a new connection to the service is tried every
/// 200 ms; once one is accepted the breaker lets its probes through, so a
/// restarted service is used again within a fraction of a second instead of
/// after the breaker's whole pause. Outside a tokio runtime (a client built
/// in a plain test) nothing is watched.
fn watch_service_recovery(breaker: &Breaker, endpoint: Endpoint) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    watch_recovery(breaker, RECOVERY_PROBE_EVERY, move || {
        let endpoint = endpoint.clone();
        async move { endpoint.connect().await.is_ok() }
    });
}

/// Each member's outcome of a Deliver call; every one fails as the call
/// did, and a 0 seq (not appended there) or a short reply is `unavailable`
/// (saying so when the callee does not serve the inbox's shard now).
fn delivered(reply: Result<pb::DeliverReply>, members: &[UserId]) -> Vec<Result<Seq>> {
    let (seqs, not_served) = match reply {
        Ok(reply) => (reply.seqs, reply.not_served),
        Err(err) => {
            let code = err.code();
            let retry_after_ms = err.retry_after_ms();
            let status = tonic::Status::unavailable(err.to_string());
            return members
                .iter()
                .map(|_| {
                    Err(crate::Error::Remote {
                        code,
                        retry_after_ms,
                        status: Box::new(status.clone()),
                    })
                })
                .collect();
        }
    };
    members
        .iter()
        .enumerate()
        .map(|(i, member)| match seqs.get(i) {
            Some(&seq) if seq > 0 => Ok(seq),
            _ if not_served.get(i) == Some(&true) => {
                Err(crate::Error::shard_not_served(inbox_shard(member)))
            }
            _ => Err(crate::Error::Unavailable {
                retry_after_ms: crate::error::RETRY_AFTER_MS,
                source: storage::Error::Unavailable(
                    "the inbox's owner did not append it; the fan-out's retry will".into(),
                ),
            }),
        })
        .collect()
}

fn decode<T>(result: Result<T, tonic::Status>) -> Result<T> {
    result.map_err(status_to_error)
}

#[async_trait]
impl MessageApi for RemoteMessageService {
    async fn send(&self, sender: &UserId, request: SendRequest) -> Result<Ack> {
        let target = match request.target {
            Target::Conv(conv) => pb::send_request::Target::ConvId(conv.into()),
            Target::Peer(peer) => pb::send_request::Target::To(peer.into()),
        };
        let message = pb::SendRequest {
            user: sender.to_string(),
            client_msg_id: request.client_msg_id.into(),
            target: Some(target),
            kind: request.kind.as_str().into(),
            body: request.body,
            r#ref: request.refers_to,
        };
        decode(ack_from_pb(
            self.unary(self.client().send(self.request(message)))
                .await?,
        ))
    }

    async fn sync(&self, user: &UserId, since: Seq, limit: usize) -> Result<SyncResult> {
        let message = pb::SyncRequest {
            user: user.to_string(),
            since,
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        let reply = self
            .read(
                &self.main,
                "msg_service.sync",
                message,
                |mut c, request| async move { c.sync(request).await },
            )
            .await?;
        Ok(SyncResult {
            entries: decode(reply.entries.into_iter().map(entry_from_pb).collect())?,
            head: reply.head,
            more: reply.more,
        })
    }

    async fn inbox_head(&self, user: &UserId) -> Result<Seq> {
        let message = pb::UserRequest {
            user: user.to_string(),
        };
        let reply = self
            .read(
                &self.main,
                "msg_service.inbox_head",
                message,
                |mut c, request| async move { c.inbox_head(request).await },
            )
            .await?;
        Ok(reply.head)
    }

    async fn history(
        &self,
        user: &UserId,
        conv: &ConvId,
        page: Page,
        limit: usize,
    ) -> Result<HistoryPage> {
        let page = match page {
            Page::Before(before) => pb::history_request::Page::Before(before),
            Page::After(after) => pb::history_request::Page::After(after),
        };
        let message = pb::HistoryRequest {
            user: user.to_string(),
            conv_id: conv.to_string(),
            page: Some(page),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        let reply = self
            .read(
                &self.bulk,
                "msg_service.history",
                message,
                |mut c, request| async move { c.history(request).await },
            )
            .await?;
        Ok(HistoryPage {
            messages: decode(reply.messages.into_iter().map(message_from_pb).collect())?,
            next: reply.next,
            degraded: reply.degraded,
        })
    }

    async fn conversations(&self, user: &UserId) -> Result<Vec<Conversation>> {
        let message = pb::UserRequest {
            user: user.to_string(),
        };
        let reply = self
            .read(
                &self.bulk,
                "msg_service.conversations",
                message,
                |mut c, request| async move { c.conversations(request).await },
            )
            .await?;
        decode(
            reply
                .conversations
                .into_iter()
                .map(conversation_from_pb)
                .collect(),
        )
    }

    async fn conversation(&self, user: &UserId, conv: &ConvId) -> Result<Conversation> {
        let message = pb::ConversationRequest {
            user: user.to_string(),
            conv_id: conv.to_string(),
        };
        let reply = self
            .read(
                &self.bulk,
                "msg_service.conversation",
                message,
                |mut c, request| async move { c.get_conversation(request).await },
            )
            .await?;
        decode(conversation_from_pb(reply))
    }

    async fn create_group(
        &self,
        creator: &UserId,
        members: Vec<UserId>,
        title: Option<String>,
    ) -> Result<Conversation> {
        let message = pb::CreateGroupRequest {
            user: creator.to_string(),
            members: members.into_iter().map(String::from).collect(),
            title,
        };
        decode(conversation_from_pb(
            self.unary(self.client().create_group(self.request(message)))
                .await?,
        ))
    }

    async fn add_members(
        &self,
        caller: &UserId,
        conv: &ConvId,
        members: Vec<UserId>,
    ) -> Result<Conversation> {
        let message = pb::AddMembersRequest {
            user: caller.to_string(),
            conv_id: conv.to_string(),
            members: members.into_iter().map(String::from).collect(),
        };
        decode(conversation_from_pb(
            self.unary(self.client().add_members(self.request(message)))
                .await?,
        ))
    }

    async fn remove_member(
        &self,
        caller: &UserId,
        conv: &ConvId,
        member: &UserId,
    ) -> Result<Conversation> {
        let message = pb::RemoveMemberRequest {
            user: caller.to_string(),
            conv_id: conv.to_string(),
            member: member.to_string(),
        };
        decode(conversation_from_pb(
            self.unary(self.client().remove_member(self.request(message)))
                .await?,
        ))
    }

    async fn mark_read(&self, user: &UserId, conv: &ConvId, conv_seq: Seq) -> Result<Seq> {
        let message = pb::MarkReadRequest {
            user: user.to_string(),
            conv_id: conv.to_string(),
            conv_seq,
        };
        let reply = self
            .unary(self.client().mark_read(self.request(message)))
            .await?;
        Ok(reply.conv_seq)
    }

    /// The remote service makes its own writes durable; a gateway that
    /// shuts down has nothing of its own to flush.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}
