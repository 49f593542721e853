//! A throwaway keyspace for tests that need a real node: a random name per
//! test, created by the store at connect, dropped when the guard goes
//! (after a panic too). Tests find the node in `SCYLLA_NODES`. They are
//! `#[ignore]`d, so a plain `cargo test` reports them
//! as ignored; run with `--ignored` but without the variable, they fail:
//! a test that needs a node never passes without having checked anything.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime};

use super::config::{Keyspace, ScyllaOptions};
use super::store::ScyllaStore;

/// The variable that names the node(s): `127.0.0.1:9042[,host:port...]`.
pub const SCYLLA_NODES_VAR: &str = "SCYLLA_NODES";

/// A keyspace of its own for one test, dropped with the guard.
pub struct ScratchKeyspace {
    options: ScyllaOptions,
}

impl ScratchKeyspace {
    /// A fresh keyspace on the nodes of `SCYLLA_NODES`.
    ///
    /// # Panics
    ///
    /// When `SCYLLA_NODES` is unset or blank: the calling test was asked
    /// to run (`--ignored`) but has no node to run against, and must fail
    /// rather than pass without checking anything.
    pub fn from_env() -> Self {
        match nodes_from(std::env::var(SCYLLA_NODES_VAR).ok()) {
            Ok(nodes) => Self::on(&nodes),
            Err(missing) => panic!("{missing}"),
        }
    }

    /// A fresh keyspace on the given comma-separated nodes (one replica).
    pub fn on(nodes: &str) -> Self {
        let nodes = nodes.split(',').map(|n| n.trim().to_owned()).collect();
        let mut options = ScyllaOptions::new(nodes);
        options.keyspace = random_keyspace();
        ScratchKeyspace { options }
    }

    /// The options to connect with (keyspace set; change the rest freely).
    pub fn options(&self) -> &ScyllaOptions {
        &self.options
    }

    /// Connects a store to the keyspace, creating it.
    pub async fn connect(&self) -> crate::Result<ScyllaStore> {
        ScyllaStore::connect(&self.options).await
    }
}

/// The value of `SCYLLA_NODES` (`value`), or why a test that needs a node
/// cannot run.
fn nodes_from(value: Option<String>) -> Result<String, String> {
    match value {
        Some(nodes) if !nodes.trim().is_empty() => Ok(nodes),
        _ => {
            // The test harness names each test's thread after the test.
            let current = std::thread::current();
            let test = current.name().unwrap_or("this test");
            Err(format!(
                "{test} needs a ScyllaDB/Cassandra node and {SCYLLA_NODES_VAR} is not set: \
                 run it as `{SCYLLA_NODES_VAR}=host:port cargo test ... -- --ignored`"
            ))
        }
    }
}

fn random_keyspace() -> Keyspace {
    let salt = RandomState::new().hash_one(SystemTime::now());
    // Never a fallback name: this keyspace is dropped at the end.
    format!("chat_test_{salt:016x}")
        .parse()
        .expect("26 characters of a-z 0-9 _ are a keyspace name")
}

impl Drop for ScratchKeyspace {
    /// Drops the keyspace from a thread with a runtime of its own: the
    /// test's runtime may be single-threaded and is busy running this drop.
    fn drop(&mut self) {
        let options = self.options.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let drop = ScyllaStore::drop_keyspace(&options);
                match tokio::time::timeout(Duration::from_secs(60), drop).await {
                    Ok(result) => result.map_err(std::io::Error::other),
                    Err(elapsed) => Err(std::io::Error::other(elapsed)),
                }
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("could not drop keyspace {}: {err}", self.options.keyspace),
            Err(_) => eprintln!("dropping keyspace {} panicked", self.options.keyspace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_keyspaces_are_valid_and_distinct() {
        let (a, b) = (random_keyspace(), random_keyspace());
        assert!(a.as_str().starts_with("chat_test_"), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_test_that_needs_a_node_cannot_start_when_scylla_nodes_is_unset_or_blank() {
        for missing in [None, Some(String::new()), Some("  ".into())] {
            let why = nodes_from(missing).expect_err("no node given");
            assert!(why.contains("SCYLLA_NODES is not set"), "{why}");
            assert!(why.contains("--ignored"), "{why}");
        }
        assert_eq!(
            nodes_from(Some("127.0.0.1:9042".into())),
            Ok("127.0.0.1:9042".into())
        );
    }
}
