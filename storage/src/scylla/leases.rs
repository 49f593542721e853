//! Leases on Scylla: instance leases and shard owners, every change a
//! lightweight transaction (Paxos at SERIAL), so that racing instances
//! agree on one winner. Rows written by LWTs are only ever changed by LWTs
//! (Cassandra does not order plain writes with Paxos ones).

use ::scylla::DeserializeRow;
use ::scylla::value::CqlValue;
use async_trait::async_trait;

use super::buckets::{from_cql, to_cql};
use super::bulkhead::Class;
use super::rows;
use super::store::ScyllaStore;
use crate::{Error, InstanceLease, LeaseStore, Result, ShardOwner};

#[derive(Debug, DeserializeRow)]
#[scylla(crate = ::scylla)]
struct InstanceRow {
    instance: String,
    addr: Option<String>,
    expires_at: Option<i64>,
    alive: Option<bool>,
}

#[derive(Debug, DeserializeRow)]
#[scylla(crate = ::scylla)]
struct ShardRow {
    shard: i32,
    owner: Option<String>,
    epoch: Option<i64>,
}

impl ShardRow {
    fn into_owner(self) -> Result<ShardOwner> {
        Ok(ShardOwner {
            shard: u16::try_from(self.shard)
                .map_err(|_| Error::BadData(format!("shard {} out of range", self.shard)))?,
            owner: self.owner.unwrap_or_default(),
            epoch: from_cql(self.epoch.unwrap_or(0))?,
        })
    }
}

impl ScyllaStore {
    async fn lwt(
        &self,
        statement: &::scylla::statement::prepared::PreparedStatement,
        values: impl ::scylla::serialize::row::SerializeRow,
    ) -> Result<bool> {
        rows::applied(self.execute(Class::Lwt, statement, values).await?)
    }
}

#[async_trait]
impl LeaseStore for ScyllaStore {
    async fn register_instance(&self, lease: &InstanceLease) -> Result<()> {
        let st = &self.statements().register_instance;
        let values = (&lease.instance, &lease.addr, to_cql(lease.expires_at)?);
        if self.lwt(st, values).await? {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "instance {} is registered already",
                lease.instance
            )))
        }
    }

    async fn renew_instance(&self, instance: &str, expires_at: u64) -> Result<bool> {
        let st = &self.statements().renew_instance;
        let until = to_cql(expires_at)?;
        let result = self
            .execute(Class::Lwt, st, (until, instance, until))
            .await?;
        let (applied, [alive, ends]) = rows::applied_and_current(result, ["alive", "expires_at"])?;
        // Not applied because a later renewal of ours got there first: the
        // lease lasts at least as long as asked. Not applied because it was
        // ended (`alive` false) or is gone: not renewed.
        let renewed_later = matches!(alive, Some(CqlValue::Boolean(true)))
            && matches!(ends, Some(CqlValue::BigInt(ends)) if ends >= until);
        Ok(applied || renewed_later)
    }

    async fn end_instance(&self, instance: &str, seen_expires_at: u64) -> Result<bool> {
        let st = &self.statements().end_instance;
        self.lwt(st, (instance, to_cql(seen_expires_at)?)).await
    }

    async fn remove_instance(&self, instance: &str) -> Result<()> {
        let st = &self.statements().remove_instance;
        // Not applied: it was gone already.
        self.lwt(st, (instance,)).await.map(|_| ())
    }

    async fn instances(&self) -> Result<Vec<InstanceLease>> {
        let st = &self.statements().instances;
        let rows: Vec<InstanceRow> = self.select_all(st, ()).await?;
        rows.into_iter()
            .map(|row| {
                Ok(InstanceLease {
                    instance: row.instance,
                    addr: row.addr.unwrap_or_default(),
                    expires_at: from_cql(row.expires_at.unwrap_or(0))?,
                    alive: row.alive.unwrap_or(false),
                })
            })
            .collect()
    }

    async fn shard_owners(&self) -> Result<Vec<ShardOwner>> {
        let st = &self.statements().shard_owners;
        let rows: Vec<ShardRow> = self.select_all(st, ()).await?;
        rows.into_iter().map(ShardRow::into_owner).collect()
    }

    async fn claim_shard(&self, seen: &ShardOwner, owner: &str) -> Result<bool> {
        let st = self.statements();
        let shard = i32::from(seen.shard);
        if seen.epoch == 0 {
            return self.lwt(&st.create_shard_owner, (shard, owner)).await;
        }
        let values = (
            owner,
            to_cql(seen.epoch + 1)?,
            shard,
            &seen.owner,
            to_cql(seen.epoch)?,
        );
        self.lwt(&st.claim_shard, values).await
    }

    async fn release_shard(&self, shard: u16, owner: &str, epoch: u64) -> Result<bool> {
        let st = &self.statements().release_shard;
        self.lwt(st, (i32::from(shard), owner, to_cql(epoch)?))
            .await
    }
}
