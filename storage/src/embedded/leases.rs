//! The embedded store's leases. Shard owners and epochs are kept on disk,
//! so a new process (a new instance) claims every shard at a higher epoch
//! than the last; instance leases live in memory, as the embedded store
//! belongs to one process. Compare-and-sets run under one lock.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::{EmbeddedStore, Tables, blocking};
use crate::{Error, InstanceLease, LeaseStore, Result, ShardOwner};

/// The instance leases of this process, and the lock that makes every
/// lease compare-and-set atomic.
#[derive(Default)]
pub(super) struct LeaseState {
    instances: HashMap<String, InstanceLease>,
}

fn owner_value(epoch: u64, owner: &str) -> Vec<u8> {
    let mut value = epoch.to_be_bytes().to_vec();
    value.extend_from_slice(owner.as_bytes());
    value
}

fn shard_owner(shard: u16, value: &[u8]) -> Result<ShardOwner> {
    let (epoch, owner) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| Error::BadData("a shard owner value is shorter than 8 bytes".into()))?;
    let owner = std::str::from_utf8(owner)
        .map_err(|_| Error::BadData("a shard owner is not UTF-8".into()))?;
    Ok(ShardOwner {
        shard,
        owner: owner.to_owned(),
        epoch: u64::from_be_bytes(*epoch),
    })
}

fn read_owner(tables: &Tables, shard: u16) -> Result<ShardOwner> {
    match tables.shard_owners.get(shard.to_be_bytes())? {
        Some(value) => shard_owner(shard, &value),
        None => Ok(ShardOwner {
            shard,
            owner: String::new(),
            epoch: 0,
        }),
    }
}

impl EmbeddedStore {
    fn leases(&self) -> std::sync::MutexGuard<'_, LeaseState> {
        // Every change under it is one insert or remove: nothing half done.
        self.tables.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets a shard's row under the lease lock if it is still `seen`.
    async fn swap_owner(&self, seen: ShardOwner, next: ShardOwner) -> Result<bool> {
        let tables = Arc::clone(&self.tables);
        let commit = Arc::clone(&self.commit);
        let ticket = blocking(move || {
            let _lock = tables.leases.lock().unwrap_or_else(|p| p.into_inner());
            if read_owner(&tables, seen.shard)? != seen {
                return Ok(None);
            }
            tables.shard_owners.insert(
                next.shard.to_be_bytes(),
                owner_value(next.epoch, &next.owner),
            )?;
            Ok(Some(commit.ticket()))
        })
        .await?;
        match ticket {
            // An epoch must be on disk before writes are fenced with it.
            Some(ticket) => self.commit.wait(ticket).await.map(|()| true),
            None => Ok(false),
        }
    }
}

#[async_trait]
impl LeaseStore for EmbeddedStore {
    async fn register_instance(&self, lease: &InstanceLease) -> Result<()> {
        self.leases()
            .instances
            .insert(lease.instance.clone(), lease.clone());
        Ok(())
    }

    async fn renew_instance(&self, instance: &str, expires_at: u64) -> Result<bool> {
        Ok(match self.leases().instances.get_mut(instance) {
            Some(lease) if lease.alive => {
                lease.expires_at = lease.expires_at.max(expires_at);
                true
            }
            _ => false,
        })
    }

    async fn end_instance(&self, instance: &str, seen_expires_at: u64) -> Result<bool> {
        Ok(match self.leases().instances.get_mut(instance) {
            Some(lease) if lease.expires_at == seen_expires_at => {
                lease.alive = false;
                true
            }
            _ => false,
        })
    }

    async fn remove_instance(&self, instance: &str) -> Result<()> {
        self.leases().instances.remove(instance);
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<InstanceLease>> {
        Ok(self.leases().instances.values().cloned().collect())
    }

    async fn shard_owners(&self) -> Result<Vec<ShardOwner>> {
        let tables = Arc::clone(&self.tables);
        blocking(move || {
            tables
                .shard_owners
                .iter()
                .map(|guard| {
                    let (key, value) = guard.into_inner()?;
                    let shard: [u8; 2] = key
                        .as_ref()
                        .try_into()
                        .map_err(|_| Error::BadData("a shard owner key is not two bytes".into()))?;
                    shard_owner(u16::from_be_bytes(shard), &value)
                })
                .collect()
        })
        .await
    }

    async fn claim_shard(&self, seen: &ShardOwner, owner: &str) -> Result<bool> {
        let next = ShardOwner {
            shard: seen.shard,
            owner: owner.to_owned(),
            epoch: seen.epoch + 1,
        };
        self.swap_owner(seen.clone(), next).await
    }

    async fn release_shard(&self, shard: u16, owner: &str, epoch: u64) -> Result<bool> {
        let seen = ShardOwner {
            shard,
            owner: owner.to_owned(),
            epoch,
        };
        let released = ShardOwner {
            owner: String::new(),
            ..seen.clone()
        };
        self.swap_owner(seen, released).await
    }
}
