//! A fault hook for fault-injection tests of the real binary
//! (`msg-service --fault-file PATH`, off unless given): the store is wrapped
//! in the storage crate's `FaultyStore`, driven by `PATH`, read every 100 ms:
//! `stall_writes` stalls the store's writes (as a remote store that stops
//! answering), `fail_inbox_every=N` fails every Nth inbox append before
//! writing it (a fan-out that fails part-way). An absent or empty file means
//! no fault.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use storage::MessageStore;
use storage::fault::{Fault, FaultyStore};

/// The faults the file asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Writes wait while this is set.
    pub stall_writes: bool,
    /// Every Nth inbox append fails (0: none).
    pub fail_inbox_every: usize,
}

impl Faults {
    /// Reads the file's lines; unknown lines are ignored.
    pub fn parse(text: &str) -> Self {
        let mut faults = Faults::default();
        for line in text.lines().map(str::trim) {
            if line == "stall_writes" {
                faults.stall_writes = true;
            } else if let Some(n) = line.strip_prefix("fail_inbox_every=") {
                faults.fail_inbox_every = n.trim().parse().unwrap_or(0);
            }
        }
        faults
    }

    fn apply(self, store: &FaultyStore) {
        store.set_writes(if self.stall_writes {
            Fault::Stall
        } else {
            Fault::Pass
        });
        store.set_fail_inbox_every(self.fail_inbox_every);
    }
}

/// Wraps `inner`; a task re-reads `path` every 100 ms while the store lives.
pub fn wrap(inner: Arc<dyn MessageStore>, path: PathBuf) -> Arc<dyn MessageStore> {
    let store = Arc::new(FaultyStore::new(inner));
    let driven = Arc::downgrade(&store);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        let mut current = Faults::default();
        loop {
            ticks.tick().await;
            let Some(store) = driven.upgrade() else {
                return;
            };
            // A few bytes from the page cache: cheaper than a blocking-pool hop.
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let wanted = Faults::parse(&text);
            if wanted != current {
                tracing::warn!(faults = ?wanted, "fault hook: faults changed");
                wanted.apply(&store);
                current = wanted;
            }
        }
    });
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_names_the_faults_and_anything_else_is_no_fault() {
        assert_eq!(Faults::parse(""), Faults::default());
        assert_eq!(
            Faults::parse("stall_writes\nfail_inbox_every=7\nnonsense"),
            Faults {
                stall_writes: true,
                fail_inbox_every: 7
            }
        );
        assert_eq!(Faults::parse("fail_inbox_every=x").fail_inbox_every, 0);
    }
}
