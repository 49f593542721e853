//! Integration tests of the message service: the real service over the
//! embedded store (fsync on) in a temporary data dir, called through
//! `MessageApi` as a gateway calls it.

mod cache_support;
mod helpers;

mod audit;
mod bulkheads;
mod cache_agrees_with_store;
mod cache_spares_store;
mod dedup;
mod faults;
mod groups;
mod grpc;
mod late_writes;
mod log_state;
mod metrics_endpoint;
mod notify;
mod ownership;
mod paging;
mod recall;
mod redis_outage;
mod replicas;
mod restart;
mod retry_queue;
mod scylla_needs_node;
mod send;
mod serving;
mod store_double;
mod sync_invariant;
mod unread;
mod validation;
mod write_path;
