//! The chat domain: send (dedup, seq allocation, write fan-out), sync,
//! history, conversations and membership, behind the [`MessageApi`] trait
//! that gateways call (in-process here, over gRPC in the distributed mode).

mod api;
pub mod audit;
mod background;
mod bounded_map;
mod bulkhead;
mod changes;
mod clock;
mod conversations;
mod deliveries;
mod error;
mod fanouts;
pub mod fault_hook;
pub mod grpc;
mod history;
mod inbox;
mod intents;
mod known_dms;
mod logs;
pub mod ownership;
mod rate_limit;
mod read_markers;
mod retry;
mod send;
mod service;
mod service_args;
mod stripes;
mod sync;
mod unread_counts;
mod unsent;

pub use api::{Conversation, HistoryPage, MessageApi};
pub use background::LowPriority;
pub use bulkhead::{BulkheadConfig, BulkheadFull};
pub use error::{Error, Result};
pub use rate_limit::UserRate;
pub use retry::{RetryConfig, RetryWorker, queued_retries};
pub use service::{Backends, CachedLogs, MessageService, ServiceConfig};
pub use service_args::{BreakerArgs, ServiceArgs};
pub use storage;
