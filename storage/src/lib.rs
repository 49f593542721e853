//! Every adapter to a data system, behind traits: the durable message store,
//! the inbox cache, the notify bus and presence, with their single-machine
//! implementations (embedded fjall store, in-process cache, bus, presence)
//! and the distributed ones (Redis cache, bus, presence; the Scylla store
//! behind the `scylla` feature, on by default).

mod background_priority;
mod bus;
mod cache;
mod clock;
mod embedded;
mod error;
pub mod fault;
mod group_commit;
mod layered;
mod leases;
mod model;
mod presence;
mod redis;
pub mod resilience;
#[cfg(feature = "scylla")]
pub mod scylla;
mod seqsvr;
mod step_timing;
mod store;
pub mod suite;
mod writer;

pub use self::redis::{RedisBackends, RedisBus, RedisCache, RedisOptions, RedisPresence};
#[cfg(feature = "scylla")]
pub use self::scylla::{ScyllaOptions, ScyllaStore};
pub use bus::{
    BusMessage, InProcessBus, Inline, Notification, NotifyBus, PresenceChange, Subscription, Typing,
};
pub use cache::{InProcessCache, InboxCache};
pub use embedded::{Durability, EmbeddedStore};
pub use error::{Error, Result};
pub use leases::{InstanceLease, LeaseStore, ShardOwner};
pub use model::{
    ConversationMeta, GatewayId, LogId, MessageRef, Page, RetryItem, RetryKey, WriteTicket,
};
pub use presence::{InProcessPresence, Presence};
pub use seqsvr::{SeqAllocator, SeqCursor};
pub use store::MessageStore;
