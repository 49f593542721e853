//! Start-up refusals: a consistency level below a quorum (unless allowed),
//! and a keyspace with fewer replicas than the options require.
//!
//! Below a quorum, a read may miss a write acknowledged just before it (R +
//! W <= RF), which breaks the sync invariant on any keyspace with more than
//! one replica. With one replica, an acknowledged write lives on one node,
//! in a commit log that `commitlog_sync: periodic` (the default) syncs to
//! disk only every few seconds: a power loss of that node can lose it.

use std::collections::HashMap;

use ::scylla::client::session::Session;

use super::config::{ConfigError, Keyspace, Replication, ScyllaOptions};
use super::{errors, rows};
use crate::{Error, Result};

const KEYSPACE_REPLICATION: &str =
    "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?";

/// Refuses a consistency level below a quorum unless the options allow it.
pub(crate) fn check_consistency(options: &ScyllaOptions) -> Result<(), ConfigError> {
    let level = options.consistency;
    if level.reads_own_writes() {
        return Ok(());
    }
    if options.allow_weak_consistency {
        tracing::warn!(
            consistency = %level,
            "weak consistency allowed: reads may miss acknowledged writes unless the keyspace \
             has one replica"
        );
        return Ok(());
    }
    Err(ConfigError(format!(
        "consistency {level} is below a quorum: reads may miss acknowledged writes unless the \
         keyspace has one replica. Use QUORUM or LOCAL_QUORUM, or allow weak consistency \
         explicitly"
    )))
}

/// The fewest replicas any data center holds, from the `replication` map of
/// `system_schema.keyspaces` (`class` plus `replication_factor`, or one entry
/// per data center; a factor may read `3/1`, replicas/transient replicas).
/// `None` when the map names no replica at all.
pub(crate) fn replication_factor(map: &HashMap<String, String>) -> Option<u32> {
    map.iter()
        .filter(|(key, _)| key.as_str() != "class")
        .filter_map(|(_, value)| value.split('/').next()?.trim().parse::<u32>().ok())
        .min()
}

/// The fewest replicas any data center gets from the replication the store
/// would create a missing keyspace with.
pub(crate) fn configured_factor(replication: &Replication) -> u32 {
    match replication {
        Replication::Simple { factor } => *factor,
        Replication::NetworkTopology { data_centers } => data_centers
            .iter()
            .map(|(_, factor)| *factor)
            .min()
            .unwrap_or(0),
    }
}

/// The replication map of an existing keyspace, or `None` if it is missing.
async fn keyspace_replication(
    session: &Session,
    keyspace: &Keyspace,
) -> Result<Option<HashMap<String, String>>> {
    let result = session
        .query_unpaged(KEYSPACE_REPLICATION, (keyspace.as_str(),))
        .await
        .map_err(errors::execution)?;
    let found: Vec<(HashMap<String, String>,)> = rows::all(result)?;
    Ok(found.into_iter().next().map(|(map,)| map))
}

/// Refuses a keyspace (the existing one, or the one the store would create)
/// with fewer replicas than `options.min_replication_factor`. Runs before
/// the schema is created, so a refused start leaves nothing behind.
pub(crate) async fn check_replication(session: &Session, options: &ScyllaOptions) -> Result<()> {
    let wanted = options.min_replication_factor;
    let keyspace = &options.keyspace;
    let (factor, source) = match keyspace_replication(session, keyspace).await? {
        Some(map) => (replication_factor(&map).unwrap_or(0), "has"),
        None => (
            configured_factor(&options.replication),
            "would be created with",
        ),
    };
    if factor >= wanted {
        return Ok(());
    }
    Err(Error::Rejected(Box::new(ConfigError(format!(
        "keyspace {keyspace} {source} replication factor {factor}; at least {wanted} is \
         required: one replica loses acknowledged writes with its node (commitlog_sync \
         periodic acknowledges before fsync). Use replication factor 3, or allow a single \
         replica explicitly"
    )))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::scylla::ConsistencyLevel;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn consistency_below_a_quorum_is_refused_unless_explicitly_allowed() {
        let mut options = ScyllaOptions::new(vec!["127.0.0.1:9042".into()]);
        for weak in ["ONE", "LOCAL_ONE", "TWO", "THREE"] {
            options.consistency = weak.parse().unwrap();
            options.allow_weak_consistency = false;
            let refused = check_consistency(&options).unwrap_err();
            assert!(refused.0.contains("below a quorum"), "{weak}: {refused}");
            options.allow_weak_consistency = true;
            assert_eq!(check_consistency(&options), Ok(()), "{weak}");
        }
        options.allow_weak_consistency = false;
        for strong in [
            ConsistencyLevel::Quorum,
            ConsistencyLevel::LocalQuorum,
            ConsistencyLevel::All,
        ] {
            options.consistency = strong;
            assert_eq!(check_consistency(&options), Ok(()), "{strong}");
        }
    }

    #[tokio::test]
    async fn connect_refuses_consistency_one_before_reaching_any_node() {
        // Port 1: a store that tried to connect would fail as unavailable.
        let mut options = ScyllaOptions::new(vec!["127.0.0.1:1".into()]);
        options.consistency = ConsistencyLevel::One;
        let refused = crate::ScyllaStore::connect(&options).await.err();
        match refused {
            Some(Error::Rejected(why)) => {
                assert!(why.to_string().contains("below a quorum"), "{why}");
            }
            other => panic!("not refused as weak consistency: {other:?}"),
        }
    }

    #[test]
    fn the_replication_factor_of_a_keyspace_is_its_smallest_data_center() {
        let simple = map(&[
            ("class", "org.apache.cassandra.locator.SimpleStrategy"),
            ("replication_factor", "1"),
        ]);
        assert_eq!(replication_factor(&simple), Some(1));
        let nts = map(&[
            (
                "class",
                "org.apache.cassandra.locator.NetworkTopologyStrategy",
            ),
            ("dc1", "3"),
            ("dc2", "2"),
        ]);
        assert_eq!(replication_factor(&nts), Some(2));
        let transient = map(&[("class", "NetworkTopologyStrategy"), ("dc1", "3/1")]);
        assert_eq!(replication_factor(&transient), Some(3));
        assert_eq!(replication_factor(&map(&[("class", "x")])), None);
    }

    #[test]
    fn a_keyspace_to_create_counts_the_replicas_of_its_smallest_data_center() {
        let simple: Replication = "SimpleStrategy:3".parse().unwrap();
        assert_eq!(configured_factor(&simple), 3);
        let nts: Replication = "NetworkTopologyStrategy:dc1=3,dc2=1".parse().unwrap();
        assert_eq!(configured_factor(&nts), 1);
    }
}
