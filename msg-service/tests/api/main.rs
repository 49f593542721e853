//! Integration tests of the message service: the real service over the
//! embedded store (fsync on) in a temporary data dir, called through
//! `MessageApi` as a gateway calls it.

mod helpers;

mod dedup;
mod faults;
mod groups;
mod grpc;
mod notify;
mod paging;
mod restart;
mod send;
mod sync_invariant;
mod validation;
