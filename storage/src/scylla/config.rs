//! What the Scylla store is configured with: contact points, keyspace,
//! replication, consistency, timeouts, limits; each parsed from the text an
//! operator writes (flags, environment) and checked once.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ::scylla::frame::types::{Consistency, SerialConsistency};

use super::bulkhead::Limits;

/// The shortest dedup TTL: the protocol promises a retry is recognized for
/// at least 24 hours.
pub const MIN_DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);

/// Everything the Scylla store needs to connect and run.
#[derive(Debug, Clone)]
pub struct ScyllaOptions {
    /// Contact points, `host:port` (the driver discovers the other nodes).
    pub nodes: Vec<String>,
    /// The keyspace holding every table; created if missing.
    pub keyspace: Keyspace,
    /// The keyspace's replication, used only when the store creates it.
    pub replication: Replication,
    /// Consistency of every read and write (LWTs use the matching serial level).
    pub consistency: ConsistencyLevel,
    /// Client-side deadline of one request, the driver's retries included.
    pub request_timeout: Duration,
    /// Deadline of a new connection to a node.
    pub connect_timeout: Duration,
    /// How many requests of each class may be in flight, and how long a
    /// request waits for a slot before it is turned away.
    pub limits: Limits,
    /// How long a dedup record lives (at least [`MIN_DEDUP_TTL`]).
    pub dedup_ttl: Duration,
    /// Accept a consistency level below a quorum (`ONE`, `LOCAL_ONE`,
    /// `TWO`, `THREE`). Off by default: `connect` refuses them, since reads
    /// may then miss acknowledged writes unless the keyspace has one replica.
    pub allow_weak_consistency: bool,
    /// The fewest replicas (in each data center) the keyspace may have:
    /// `connect` refuses a keyspace with fewer, before creating anything.
    /// 1 by default (any keyspace).
    pub min_replication_factor: u32,
}

impl ScyllaOptions {
    /// Defaults for the given contact points: keyspace `chat`, one replica
    /// (`SimpleStrategy:1`), `LOCAL_QUORUM`, 7-day dedup records; weak
    /// consistency refused, any replication factor accepted.
    pub fn new(nodes: Vec<String>) -> Self {
        ScyllaOptions {
            nodes,
            keyspace: Keyspace::default(),
            replication: Replication::Simple { factor: 1 },
            consistency: ConsistencyLevel::LocalQuorum,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            limits: Limits::default(),
            dedup_ttl: Duration::from_secs(7 * 24 * 3600),
            allow_weak_consistency: false,
            min_replication_factor: 1,
        }
    }

    /// The dedup TTL in seconds as CQL binds it, checked against the minimum.
    pub(crate) fn dedup_ttl_secs(&self) -> Result<i32, ConfigError> {
        if self.dedup_ttl < MIN_DEDUP_TTL {
            return Err(ConfigError(format!(
                "the dedup TTL must be at least 24 h, not {:?}",
                self.dedup_ttl
            )));
        }
        i32::try_from(self.dedup_ttl.as_secs())
            .map_err(|_| ConfigError(format!("dedup TTL {:?} is too long", self.dedup_ttl)))
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A keyspace name: a lowercase letter, then up to 47 lowercase letters,
/// digits or `_` (CQL's limit, unquoted, so it reads the same everywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyspace(String);

impl Keyspace {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Keyspace {
    fn default() -> Self {
        Keyspace("chat".into())
    }
}

impl fmt::Display for Keyspace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Keyspace {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if first_ok && rest_ok && s.len() <= 48 {
            Ok(Keyspace(s.to_owned()))
        } else {
            Err(ConfigError(format!(
                "keyspace {s:?}: a lowercase letter, then up to 47 of a-z 0-9 _"
            )))
        }
    }
}

/// How the keyspace is replicated: `SimpleStrategy:1` for one node or a
/// test cluster, `NetworkTopologyStrategy:dc1=3,dc2=3` in production.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `factor` replicas, placed without regard to data centers.
    Simple {
        /// Replicas of each partition.
        factor: u32,
    },
    /// Replicas per data center.
    NetworkTopology {
        /// `(data center, replicas)`, in the order given.
        data_centers: Vec<(String, u32)>,
    },
}

impl Replication {
    /// The CQL map of `WITH replication = ...`.
    pub fn cql_map(&self) -> String {
        match self {
            Replication::Simple { factor } => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {factor}}}")
            }
            Replication::NetworkTopology { data_centers } => {
                let dcs: Vec<String> = data_centers
                    .iter()
                    .map(|(dc, n)| format!(", '{dc}': {n}"))
                    .collect();
                format!("{{'class': 'NetworkTopologyStrategy'{}}}", dcs.concat())
            }
        }
    }
}

fn replicas(text: &str) -> Result<u32, ConfigError> {
    match text.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(ConfigError(format!(
            "replication factor {text:?}: a whole number of at least 1"
        ))),
    }
}

fn data_center(pair: &str) -> Result<(String, u32), ConfigError> {
    let (dc, n) = pair
        .split_once('=')
        .ok_or_else(|| ConfigError(format!("{pair:?}: a data center is written dc=N")))?;
    let dc = dc.trim();
    let valid = !dc.is_empty()
        && dc
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(ConfigError(format!(
            "data center {dc:?}: letters, digits, _ - . only"
        )));
    }
    Ok((dc.to_owned(), replicas(n)?))
}

impl FromStr for Replication {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (class, args) = s.split_once(':').ok_or_else(|| {
            ConfigError(format!(
                "replication {s:?}: SimpleStrategy:N or NetworkTopologyStrategy:dc1=N,dc2=M"
            ))
        })?;
        match class.trim() {
            "SimpleStrategy" => Ok(Replication::Simple {
                factor: replicas(args)?,
            }),
            "NetworkTopologyStrategy" => {
                let data_centers = args
                    .split(',')
                    .map(data_center)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Replication::NetworkTopology { data_centers })
            }
            other => Err(ConfigError(format!(
                "replication class {other:?}: SimpleStrategy or NetworkTopologyStrategy"
            ))),
        }
    }
}

/// A consistency level valid for reads and writes alike (so not `ANY` nor
/// `EACH_QUORUM`, which reads refuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsistencyLevel {
    /// One replica.
    One,
    /// One replica in the local data center.
    LocalOne,
    /// Two replicas.
    Two,
    /// Three replicas.
    Three,
    /// A majority of all replicas.
    Quorum,
    /// A majority of the local data center's replicas (the default).
    LocalQuorum,
    /// Every replica.
    All,
}

const LEVELS: [(ConsistencyLevel, &str); 7] = [
    (ConsistencyLevel::One, "ONE"),
    (ConsistencyLevel::LocalOne, "LOCAL_ONE"),
    (ConsistencyLevel::Two, "TWO"),
    (ConsistencyLevel::Three, "THREE"),
    (ConsistencyLevel::Quorum, "QUORUM"),
    (ConsistencyLevel::LocalQuorum, "LOCAL_QUORUM"),
    (ConsistencyLevel::All, "ALL"),
];

impl ConsistencyLevel {
    /// The driver's value.
    pub(crate) fn driver(self) -> Consistency {
        match self {
            ConsistencyLevel::One => Consistency::One,
            ConsistencyLevel::LocalOne => Consistency::LocalOne,
            ConsistencyLevel::Two => Consistency::Two,
            ConsistencyLevel::Three => Consistency::Three,
            ConsistencyLevel::Quorum => Consistency::Quorum,
            ConsistencyLevel::LocalQuorum => Consistency::LocalQuorum,
            ConsistencyLevel::All => Consistency::All,
        }
    }

    /// The serial level of LWTs and of ceiling reads: confined to the local
    /// data center when this level is.
    pub(crate) fn serial(self) -> SerialConsistency {
        match self {
            ConsistencyLevel::LocalOne | ConsistencyLevel::LocalQuorum => {
                SerialConsistency::LocalSerial
            }
            _ => SerialConsistency::Serial,
        }
    }

    /// Whether a read at this level sees every write acknowledged at it
    /// whatever the replication factor (R + W > RF). Below it, the sync
    /// invariant holds only with one replica.
    pub fn reads_own_writes(self) -> bool {
        matches!(
            self,
            ConsistencyLevel::Quorum | ConsistencyLevel::LocalQuorum | ConsistencyLevel::All
        )
    }
}

impl fmt::Display for ConsistencyLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = LEVELS
            .iter()
            .find(|(level, _)| level == self)
            .map_or("?", |(_, name)| name);
        f.write_str(name)
    }
}

impl FromStr for ConsistencyLevel {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let wanted = s.trim().to_ascii_uppercase().replace('-', "_");
        LEVELS
            .iter()
            .find(|(_, name)| *name == wanted)
            .map(|(level, _)| *level)
            .ok_or_else(|| {
                let names: Vec<&str> = LEVELS.iter().map(|(_, name)| *name).collect();
                ConfigError(format!("consistency {s:?}: one of {}", names.join(", ")))
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn simple_replication_parses_and_renders_its_factor() {
        let r: Replication = "SimpleStrategy:1".parse().unwrap();
        assert_eq!(r, Replication::Simple { factor: 1 });
        assert_eq!(
            r.cql_map(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
    }

    #[test]
    fn network_topology_replication_keeps_every_data_center_in_order() {
        let r: Replication = "NetworkTopologyStrategy:dc1=3, eu-west.2=2"
            .parse()
            .unwrap();
        assert_eq!(
            r.cql_map(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'eu-west.2': 2}"
        );
    }

    #[test]
    fn bad_replication_options_are_refused_with_a_reason() {
        for bad in [
            "SimpleStrategy",
            "SimpleStrategy:0",
            "SimpleStrategy:x",
            "LocalStrategy:1",
            "NetworkTopologyStrategy:",
            "NetworkTopologyStrategy:dc1",
            "NetworkTopologyStrategy:dc1=0",
            "NetworkTopologyStrategy:d'c=3",
        ] {
            let err = bad.parse::<Replication>().unwrap_err();
            assert!(!err.0.is_empty(), "{bad}");
        }
    }

    #[test]
    fn consistency_levels_parse_in_any_case_and_print_as_cql_names() {
        for (level, name) in LEVELS {
            assert_eq!(name.parse::<ConsistencyLevel>().unwrap(), level);
            assert_eq!(level.to_string(), name);
        }
        assert_eq!(
            "local_quorum".parse::<ConsistencyLevel>().unwrap(),
            ConsistencyLevel::LocalQuorum
        );
        assert!("EACH_QUORUM".parse::<ConsistencyLevel>().is_err());
        assert!("ANY".parse::<ConsistencyLevel>().is_err());
    }

    #[test]
    fn local_levels_use_the_local_serial_level_for_lwts() {
        assert_eq!(
            ConsistencyLevel::LocalQuorum.serial(),
            SerialConsistency::LocalSerial
        );
        assert_eq!(ConsistencyLevel::Quorum.serial(), SerialConsistency::Serial);
        assert!(ConsistencyLevel::LocalQuorum.reads_own_writes());
        assert!(!ConsistencyLevel::One.reads_own_writes());
    }

    #[test]
    fn keyspace_names_are_plain_lowercase_identifiers() {
        assert_eq!("chat".parse::<Keyspace>().unwrap().as_str(), "chat");
        assert!("chat_test_0af3".parse::<Keyspace>().is_ok());
        for bad in ["", "Chat", "1chat", "chat-x", "chat;drop", &"a".repeat(49)] {
            assert!(bad.parse::<Keyspace>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_dedup_ttl_is_at_least_a_day() {
        let mut options = ScyllaOptions::new(vec!["127.0.0.1:9042".into()]);
        assert_eq!(options.dedup_ttl_secs().unwrap(), 604_800);
        options.dedup_ttl = Duration::from_secs(3600);
        assert!(options.dedup_ttl_secs().is_err());
    }
}
