//! The chat client protocol of PROTOCOL.md: identifiers, frames, entries and
//! error codes. Pure data and validation: no I/O, no runtime.

mod error;
mod frames;
mod ids;
mod messages;

pub use error::{ErrorCode, MAX_QUOTED_CHARS, ProtoError, Result, excerpt};
pub use frames::{
    ClientFrame, FrameError, MAX_PRESENCE_USERS, PresenceOf, Rid, ServerFrame, SyncFrame,
    parse_client_frame, presence_users, rid_of_frame,
};
pub use ids::{ClientMsgId, ConvId, ConvKind, DeviceId, UserId};
pub use messages::{
    Ack, DEFAULT_SYNC_LIMIT, Entry, HistoryMessage, MAX_BODY_BYTES, MAX_SYNC_LIMIT, MessageKind,
    SendRequest, SyncResult, Target, clamp_sync_limit,
};

/// A sequence number: an inbox `seq` or a conversation `conv_seq`.
pub type Seq = u64;

/// The internal gRPC API between gateways and the message service.
#[cfg(feature = "grpc")]
#[allow(missing_docs, clippy::all)]
pub mod grpc {
    tonic::include_proto!("chat.v1");
}
