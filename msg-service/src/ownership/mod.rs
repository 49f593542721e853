//! Ownership of logs by msg-service instances: shards, their assignment to
//! the live instances, the leases under which an instance serves them, and
//! the routing of calls to their owners.

mod assign;
mod forward;
mod keeper;
mod lease_rows;
mod routes;
mod shards;

pub use assign::{assigned_to, owner_of};
pub use forward::RoutedService;
pub use keeper::{KeeperClock, KeeperConfig, LeaseKeeper, NO_ADDRESS, SystemClock};
pub(crate) use routes::Route;
pub use routes::Routes;
pub use shards::{SHARDS, conversation_shard, inbox_shard, shard_of};
