//! A throwaway keyspace for tests that need a real node: a random name per
//! test, created by the store at connect, dropped when the guard goes
//! (after a panic too). Tests find the node in `SCYLLA_NODES`; without it
//! they print `SKIPPED: ...` (visible in the test output) and return, so
//! they pass vacuously: their names say they need a node.

use std::hash::{BuildHasher, RandomState};
use std::io::Write as _;
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
    /// A fresh keyspace on the nodes of `SCYLLA_NODES`; `None` (after
    /// printing `SKIPPED: <test> ...`) when it is not set.
    pub fn from_env() -> Option<Self> {
        // The test harness names each test's thread after the test.
        let current = std::thread::current();
        let test = current.name().unwrap_or("a test");
        match std::env::var(SCYLLA_NODES_VAR) {
            Ok(nodes) if !nodes.trim().is_empty() => Some(Self::on(&nodes)),
            _ => {
                // Straight to stderr, not through `eprintln!`, which the test
                // harness captures and hides for tests that pass.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: {test} needs a ScyllaDB/Cassandra node; set {SCYLLA_NODES_VAR}"
                );
                None
            }
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
}
