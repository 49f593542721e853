//! Conversions between the gRPC messages and the domain types, and between
//! service errors and gRPC statuses (the wire code rides in metadata).

use proto::grpc as pb;
use proto::{
    Ack, ClientMsgId, ConvId, ConvKind, Entry, ErrorCode, HistoryMessage, MessageKind, ProtoError,
    UserId,
};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use crate::Error;
use crate::api::Conversation;
use crate::error::RETRY_AFTER_MS;

const CODE_KEY: &str = "chat-error-code";
const RETRY_KEY: &str = "retry-after-ms";
/// Marks the answer of a replica that does not serve the call's shard now.
const NOT_SERVED_KEY: &str = "chat-shard-not-served";

/// A malformed field from the other side: the peer is buggy, not the client.
fn bad_field(what: &'static str) -> impl FnOnce(ProtoError) -> Status {
    move |err| Status::invalid_argument(format!("{what}: {err}"))
}

pub(crate) fn user(s: &str) -> Result<UserId, Status> {
    UserId::parse(s).map_err(bad_field("user"))
}

pub(crate) fn users(list: &[String]) -> Result<Vec<UserId>, Status> {
    list.iter().map(|u| user(u)).collect()
}

pub(crate) fn conv(s: &str) -> Result<ConvId, Status> {
    ConvId::parse(s).map_err(bad_field("conv_id"))
}

pub(crate) fn message_to_pb(m: HistoryMessage) -> pb::Message {
    pb::Message {
        conv_id: m.conv_id.into(),
        conv_seq: m.conv_seq,
        from: m.from.into(),
        client_msg_id: m.client_msg_id.into(),
        kind: m.kind.as_str().into(),
        body: m.body,
        ts: m.ts,
        r#ref: m.refers_to,
        recalled: m.recalled,
    }
}

pub(crate) fn message_from_pb(m: pb::Message) -> Result<HistoryMessage, Status> {
    Ok(HistoryMessage {
        conv_id: conv(&m.conv_id)?,
        conv_seq: m.conv_seq,
        from: user(&m.from)?,
        client_msg_id: ClientMsgId::parse(&m.client_msg_id).map_err(bad_field("client_msg_id"))?,
        kind: MessageKind::parse(&m.kind).map_err(bad_field("kind"))?,
        body: m.body,
        ts: m.ts,
        refers_to: m.r#ref,
        recalled: m.recalled,
    })
}

pub(crate) fn entry_to_pb(e: Entry) -> pb::Entry {
    pb::Entry {
        seq: e.seq,
        message: Some(message_to_pb(e.message)),
    }
}

pub(crate) fn entry_from_pb(e: pb::Entry) -> Result<Entry, Status> {
    let message = e
        .message
        .ok_or_else(|| Status::invalid_argument("entry without message"))?;
    Ok(Entry {
        seq: e.seq,
        message: message_from_pb(message)?,
    })
}

pub(crate) fn ack_to_pb(a: Ack) -> pb::Ack {
    pb::Ack {
        client_msg_id: a.client_msg_id.into(),
        conv_id: a.conv_id.into(),
        conv_seq: a.conv_seq,
        seq: a.seq,
        ts: a.ts,
    }
}

pub(crate) fn ack_from_pb(a: pb::Ack) -> Result<Ack, Status> {
    Ok(Ack {
        client_msg_id: ClientMsgId::parse(&a.client_msg_id).map_err(bad_field("client_msg_id"))?,
        conv_id: conv(&a.conv_id)?,
        conv_seq: a.conv_seq,
        seq: a.seq,
        ts: a.ts,
    })
}

pub(crate) fn conversation_to_pb(c: Conversation) -> pb::Conversation {
    pb::Conversation {
        conv_id: c.conv_id.into(),
        kind: match c.kind {
            ConvKind::Dm => "dm".into(),
            ConvKind::Group => "group".into(),
        },
        members: c.members.into_iter().map(String::from).collect(),
        title: c.title,
        last_conv_seq: c.last_conv_seq,
        read_up_to: c.read_up_to,
        unread: c.unread,
        read: c
            .read
            .unwrap_or_default()
            .into_iter()
            .map(|(user, up_to)| pb::ReadMarker {
                user: user.into(),
                up_to,
            })
            .collect(),
    }
}

pub(crate) fn conversation_from_pb(c: pb::Conversation) -> Result<Conversation, Status> {
    let conv_id = conv(&c.conv_id)?;
    let read = match conv_id.kind() {
        ConvKind::Group => Some(
            c.read
                .iter()
                .map(|marker| Ok((user(&marker.user)?, marker.up_to)))
                .collect::<Result<_, Status>>()?,
        ),
        ConvKind::Dm => None,
    };
    Ok(Conversation {
        kind: conv_id.kind(),
        conv_id,
        members: users(&c.members)?,
        title: c.title,
        last_conv_seq: c.last_conv_seq,
        read_up_to: c.read_up_to,
        unread: c.unread,
        read,
    })
}

/// A service error as a gRPC status, with the wire code in metadata.
pub(crate) fn error_to_status(err: Error) -> Status {
    let code = err.code();
    let grpc_code = match code {
        ErrorCode::BadRequest | ErrorCode::TooLarge => Code::InvalidArgument,
        ErrorCode::Unauthorized => Code::Unauthenticated,
        ErrorCode::Forbidden => Code::PermissionDenied,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::RateLimited => Code::ResourceExhausted,
        ErrorCode::Unavailable => Code::Unavailable,
        ErrorCode::Internal => Code::Internal,
    };
    if code == ErrorCode::Internal {
        tracing::error!(error = ?err, "request failed");
    }
    let message = match code {
        ErrorCode::Internal => "internal error".to_string(),
        _ => err.to_string(),
    };
    let mut status = Status::new(grpc_code, message);
    if let Ok(value) = MetadataValue::try_from(code.as_str()) {
        status.metadata_mut().insert(CODE_KEY, value);
    }
    if let Some(ms) = err.retry_after_ms()
        && let Ok(value) = MetadataValue::try_from(ms.to_string())
    {
        status.metadata_mut().insert(RETRY_KEY, value);
    }
    if err.is_shard_not_served() {
        status
            .metadata_mut()
            .insert(NOT_SERVED_KEY, MetadataValue::from_static("1"));
    }
    status
}

/// Whether `status` is the answer of a replica that does not serve the
/// call's shard now.
pub(crate) fn is_shard_not_served(status: &Status) -> bool {
    status.metadata().contains_key(NOT_SERVED_KEY)
}

/// Whether the call itself failed (the service down, unreachable or too
/// slow) rather than the service answering with an error: only that counts
/// against the breaker and is worth retrying.
pub(crate) fn is_call_failure(err: &Error) -> bool {
    match err {
        Error::Remote { status, .. } => status.metadata().get(CODE_KEY).is_none(),
        _ => false,
    }
}

/// A status from the remote service (or from the call failing) as an error.
pub(crate) fn status_to_error(status: Status) -> Error {
    let meta = |key: &str| {
        status
            .metadata()
            .get(key)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let relayed = meta(CODE_KEY).and_then(|c| ErrorCode::from_wire(&c));
    let retry = meta(RETRY_KEY).and_then(|ms| ms.parse().ok());
    let (code, retry_after_ms) = match relayed {
        Some(code) => (code, retry),
        // No code from the service: the call itself failed (down, timeout).
        None => (ErrorCode::Unavailable, Some(RETRY_AFTER_MS)),
    };
    Error::Remote {
        code,
        retry_after_ms,
        status: Box::new(status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_not_served_here_stays_so_across_a_hop_and_an_outage_does_not() {
        let relayed = status_to_error(error_to_status(Error::shard_not_served(7)));
        assert!(relayed.is_shard_not_served());
        assert_eq!(relayed.code(), ErrorCode::Unavailable);
        assert_eq!(relayed.retry_after_ms(), Some(250));

        let outage = Error::from(storage::Error::Unavailable("the store is down".into()));
        assert!(!outage.is_shard_not_served());
        assert!(!status_to_error(error_to_status(outage)).is_shard_not_served());
    }
}
