//! Ownership of logs by msg-service instances: shards, their assignment to
//! the live instances, and the leases under which an instance serves them.

mod assign;
mod keeper;
mod shards;

pub use assign::{assigned_to, owner_of};
pub use keeper::{KeeperClock, KeeperConfig, LeaseKeeper, SystemClock};
pub use shards::{SHARDS, conversation_shard, inbox_shard, shard_of};
