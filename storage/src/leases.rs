//! The lease store: which msg-service instances are alive (a lease each,
//! renewed by heartbeats) and which instance owns each shard, at which
//! epoch. Every change that decides ownership is a compare-and-set, so of
//! two instances racing for one shard exactly one wins, and an instance
//! whose lease another one has ended can never renew it.

use async_trait::async_trait;

use crate::Result;

/// An instance's lease, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceLease {
    /// The instance: unique per process start (a name and a random
    /// incarnation), so a restarted process never inherits its old leases.
    pub instance: String,
    /// Where gateways and other instances reach it (`host:port`).
    pub addr: String,
    /// Until when it holds, in ms since the Unix epoch by the writer's
    /// clock; others treat it as ended only past this plus a drift margin.
    pub expires_at: u64,
    /// False once another instance ended the lease (it had expired): no
    /// renewal can revive it.
    pub alive: bool,
}

/// The owner of one shard, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardOwner {
    /// The shard, `0..SHARDS`.
    pub shard: u16,
    /// The owning instance; empty when its last owner released it.
    pub owner: String,
    /// Raised by one at every change of owner: what a shard's writes are
    /// fenced with.
    pub epoch: u64,
}

/// Leases of instances and owners of shards. Every method is durable before
/// it returns; `bool` results say whether a compare-and-set applied.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Writes a new instance's lease (alive). Instances are unique per
    /// process start, so this never overwrites another process's lease.
    async fn register_instance(&self, lease: &InstanceLease) -> Result<()>;
    /// Moves `instance`'s expiry up to `expires_at` if its lease is still
    /// alive; never back: a renewal that arrives after a later one leaves
    /// the later end, and answers true (the lease lasts as long as asked).
    async fn renew_instance(&self, instance: &str, expires_at: u64) -> Result<bool>;
    /// Ends `instance`'s lease if its expiry is still `seen_expires_at` (the
    /// expired value the caller read), so that a renewal racing with it
    /// either wins (and this fails) or fails.
    async fn end_instance(&self, instance: &str, seen_expires_at: u64) -> Result<bool>;
    /// Removes an instance's lease (a clean shutdown, after releasing its shards).
    async fn remove_instance(&self, instance: &str) -> Result<()>;
    /// Every instance lease, in any order.
    async fn instances(&self) -> Result<Vec<InstanceLease>>;

    /// Every shard that has had an owner, in any order (a shard never
    /// claimed has no row: owner empty, epoch 0).
    async fn shard_owners(&self) -> Result<Vec<ShardOwner>>;
    /// Makes `owner` the owner of `shard` at epoch `seen.epoch + 1` if the
    /// shard is still as `seen` (a shard never claimed: owner empty, epoch 0).
    async fn claim_shard(&self, seen: &ShardOwner, owner: &str) -> Result<bool>;
    /// Empties the owner of `shard` (its epoch stays) if `owner` at `epoch`
    /// still owns it.
    async fn release_shard(&self, shard: u16, owner: &str, epoch: u64) -> Result<bool>;
}
