// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use super::writer::Writer;
use crate::Keyspace;
use lsm_tree::{AbstractTree, SeqNo};
use std::{
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, RwLock},
};

/// Stores the highest seqno of a keyspace found in a journal.
#[derive(Clone)]
pub struct EvictionWatermark {
    pub(crate) keyspace: Keyspace,
    pub(crate) lsn: SeqNo,
}

impl std::fmt::Debug for EvictionWatermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.keyspace.name, self.lsn)
    }
}

pub struct Item {
    pub(crate) path: PathBuf,
    pub(crate) size_in_bytes: u64,
    pub(crate) watermarks: Vec<EvictionWatermark>,
}

impl std::fmt::Debug for Item {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JournalManagerItem {:?} => {:#?}",
            self.path, self.watermarks
        )
    }
}

/// The [`JournalManager`] keeps track of sealed journals that are being flushed.
///
/// Each journal may contain items of different keyspaces.
#[expect(clippy::module_name_repetitions)]
#[derive(Debug)]
pub struct JournalManager {
    items: Vec<Item>,
    disk_space_in_bytes: u64,

    /// Held by the one thread deleting old journals ([`collect_garbage`]),
    /// so that they are deleted oldest first
    collector: Arc<Mutex<()>>,
}

impl Drop for JournalManager {
    fn drop(&mut self) {
        log::trace!("Dropping journal manager");

        #[cfg(feature = "__internal_whitebox")]
        crate::drop::decrement_drop_counter();
    }
}

impl JournalManager {
    pub(crate) fn new() -> Self {
        #[cfg(feature = "__internal_whitebox")]
        crate::drop::increment_drop_counter();

        Self {
            items: Vec::with_capacity(10),
            disk_space_in_bytes: 0,
            collector: Arc::default(),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }

    pub(crate) fn enqueue(&mut self, item: Item) {
        self.disk_space_in_bytes = self.disk_space_in_bytes.saturating_add(item.size_in_bytes);
        self.items.push(item);
    }

    /// Returns the number of journals
    pub(crate) fn journal_count(&self) -> usize {
        // NOTE: + 1 = active journal
        self.sealed_journal_count() + 1
    }

    /// Returns the number of sealed journals
    pub(crate) fn sealed_journal_count(&self) -> usize {
        self.items.len()
    }

    /// Returns the number of bytes used on disk by journals
    pub(crate) fn disk_space_used(&self) -> u64 {
        self.disk_space_in_bytes
    }

    /// Gets keyspaces to be flushed so that the oldest journal can be safely evicted
    pub(crate) fn get_keyspaces_to_flush_for_oldest_journal_eviction(&self) -> Vec<Keyspace> {
        let mut items = vec![];

        if let Some(item) = self.items.first() {
            for item in &item.watermarks {
                let Some(partition_seqno) = item.keyspace.tree.get_highest_persisted_seqno() else {
                    items.push(item.keyspace.clone());
                    continue;
                };

                if partition_seqno < item.lsn {
                    items.push(item.keyspace.clone());
                }
            }
        }

        items
    }

    /// The paths of the oldest journals whose items are all flushed to
    /// tables, oldest first: what [`collect_garbage`] deletes.
    fn evictable(&self) -> Vec<PathBuf> {
        log::debug!("Running journal maintenance");

        let mut evicted = vec![];

        for item in &self.items {
            // TODO: unit test: check deleted keyspace does not prevent journal eviction
            for watermark in &item.watermarks {
                // Only check keyspace seqno if not deleted
                if !watermark
                    .keyspace
                    .is_deleted
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    let Some(keyspace_seqno) =
                        watermark.keyspace.tree.get_highest_persisted_seqno()
                    else {
                        return evicted;
                    };

                    if keyspace_seqno < watermark.lsn {
                        log::trace!(
                            "Keyspace {:?} not flushed enough to evict journal",
                            watermark.keyspace.name,
                        );
                        return evicted;
                    }
                }
            }

            // NOTE: Once the LSN of *every* keyspace's tables [1] is higher than the journal's stored keyspace seqno,
            // it can be deleted from disk, as we know the entire journal has been flushed to tables [2].
            //
            // [1] We cannot use the keyspace's max seqno, because the memtable will get writes, which increase the seqno.
            // We *need* to check the tables specifically, they are the source of truth for flushed data.
            //
            // [2] Checking the seqno is safe because the queues inside the flush manager are FIFO.
            //
            // IMPORTANT: On recovery, the journals need to be flushed from oldest to newest.
            evicted.push(item.path.clone());
        }

        evicted
    }

    /// Forgets the oldest journal, once [`collect_garbage`] deleted it.
    fn forget_oldest(&mut self) {
        if self.items.is_empty() {
            return;
        }

        let item = self.items.remove(0);
        self.disk_space_in_bytes = self.disk_space_in_bytes.saturating_sub(item.size_in_bytes);
    }

    pub(crate) fn rotate_journal(
        &mut self,
        journal_writer: &mut MutexGuard<Writer>,
        watermarks: Vec<EvictionWatermark>,
    ) -> crate::Result<()> {
        let journal_size = journal_writer.len()?;

        let (sealed_path, _) = journal_writer.rotate()?;

        self.enqueue(Item {
            path: sealed_path,
            watermarks,
            size_in_bytes: journal_size,
        });

        Ok(())
    }
}

/// Performs maintenance: deletes the oldest journals whose items are all
/// flushed, oldest first, stopping at the first that cannot be deleted (as
/// upstream's `maintenance` did), but without holding the manager's lock
/// across the unlinks: unlinking a journal of ~64 MB takes tens of
/// milliseconds on ext4, and the flush worker waits for that lock while it
/// holds the journal's. The manager's collector mutex keeps one deleter at a
/// time, so a journal is never deleted before an older one; only the
/// collector removes items, and rotations append, so the oldest items stay
/// put while it works.
pub(crate) fn collect_garbage(manager: &RwLock<JournalManager>) -> crate::Result<()> {
    #[expect(clippy::expect_used)]
    let collector = manager.read().expect("lock is poisoned").collector.clone();
    #[expect(clippy::expect_used)]
    let _collecting = collector.lock().expect("lock is poisoned");

    #[expect(clippy::expect_used)]
    let evictable = manager.read().expect("lock is poisoned").evictable();

    for path in evictable {
        log::trace!("Removing fully flushed journal at {}", path.display());

        remove_journal(&path).inspect_err(|e| {
            log::error!(
                "Failed to clean up stale journal file at {}: {e:?}",
                path.display(),
            );
        })?;

        #[expect(clippy::expect_used)]
        manager.write().expect("lock is poisoned").forget_oldest();
    }

    Ok(())
}

/// The extension a journal takes while it is being removed; recovery
/// ignores such files and deletes them.
pub(crate) const REMOVING_EXTENSION: &str = "removing";

/// Removes a fully flushed journal: renamed first, so that recovery never
/// sees it again (as with an unlink), then freed gradually.
///
/// Patched (vendor/PATCHES.md): unlinking a journal of ~100 MB at once held
/// the commit path's `fsync` for 18-22 ms here (see
/// `lsm_tree::file::remove_file_gradually`). Once renamed, the journal is
/// gone for recovery, so a failure to free it is only logged: recovery
/// deletes what is left.
fn remove_journal(path: &std::path::Path) -> std::io::Result<()> {
    let removing = path.with_extension(REMOVING_EXTENSION);
    std::fs::rename(path, &removing)?;
    if let Err(e) = lsm_tree::file::remove_file_gradually(&removing) {
        log::warn!(
            "Journal {} is out of use but could not be deleted (deleted at the next open): {e:?}",
            removing.display(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Database, KeyspaceCreateOptions};
    use std::path::Path;
    use test_log::test;

    fn sealed_journal(path: PathBuf, keyspace: &Keyspace, lsn: SeqNo) -> Item {
        Item {
            path,
            size_in_bytes: 7,
            watermarks: vec![EvictionWatermark {
                keyspace: keyspace.clone(),
                lsn,
            }],
        }
    }

    /// A manager with a sealed journal per lsn, files created, and a flushed
    /// keyspace (its persisted seqno is 0).
    fn manager_of(
        folder: &Path,
        keyspace: &Keyspace,
        lsns: &[SeqNo],
    ) -> crate::Result<(RwLock<JournalManager>, Vec<PathBuf>)> {
        let mut manager = JournalManager::new();
        let mut paths = vec![];
        for (i, &lsn) in lsns.iter().enumerate() {
            let path = folder.join(format!("sealed-{i}.jnl"));
            std::fs::write(&path, b"journal")?;
            manager.enqueue(sealed_journal(path.clone(), keyspace, lsn));
            paths.push(path);
        }
        Ok((RwLock::new(manager), paths))
    }

    fn flushed_keyspace(db: &Database) -> crate::Result<Keyspace> {
        let keyspace = db.keyspace("default", KeyspaceCreateOptions::default)?;
        keyspace.insert("a", "a")?;
        keyspace.rotate_memtable_and_wait()?;
        Ok(keyspace)
    }

    // Patched (vendor/PATCHES.md): the oldest flushed journals are deleted,
    // the first one not flushed and all after it kept
    #[test]
    fn collect_garbage_deletes_the_flushed_journals_oldest_first() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(folder.path().join("db")).open()?;
        let keyspace = flushed_keyspace(&db)?;
        let (manager, paths) = manager_of(folder.path(), &keyspace, &[0, 0, 1_000, 0])?;

        collect_garbage(&manager)?;

        let manager = manager.read().expect("lock is poisoned");
        assert_eq!(2, manager.sealed_journal_count());
        assert_eq!(14, manager.disk_space_used());
        let kept = paths
            .iter()
            .map(|p| p.try_exists())
            .collect::<Result<Vec<_>, _>>()?;
        assert_eq!(vec![false, false, true, true], kept);
        let removing = std::fs::read_dir(folder.path())?
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == REMOVING_EXTENSION))
            .count();
        assert_eq!(0, removing, "a journal was left half removed");

        Ok(())
    }

    // Patched (vendor/PATCHES.md): a journal whose removal a crash
    // interrupted is deleted when the database opens, and is not replayed
    #[test]
    fn a_journal_left_half_removed_is_deleted_at_recovery() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let path = folder.path().join("db");
        {
            let db = Database::builder(&path).open()?;
            db.keyspace("default", KeyspaceCreateOptions::default)?
                .insert("a", "a")?;
        }
        let half_removed = path.join("0").with_extension(REMOVING_EXTENSION);
        std::fs::write(&half_removed, b"not a journal")?;

        let db = Database::builder(&path).open()?;

        assert!(!half_removed.try_exists()?);
        let keyspace = db.keyspace("default", KeyspaceCreateOptions::default)?;
        assert_eq!(Some("a".as_bytes().into()), keyspace.get("a")?);
        Ok(())
    }

    // Patched (vendor/PATCHES.md): a journal that cannot be deleted stops the
    // collection and stays queued, so no younger journal goes before it
    #[test]
    fn collect_garbage_stops_at_a_journal_it_cannot_delete() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let db = Database::builder(folder.path().join("db")).open()?;
        let keyspace = flushed_keyspace(&db)?;
        let (manager, paths) = manager_of(folder.path(), &keyspace, &[0, 0])?;
        std::fs::remove_file(&paths[0])?;

        assert!(collect_garbage(&manager).is_err());

        assert_eq!(
            2,
            manager
                .read()
                .expect("lock is poisoned")
                .sealed_journal_count()
        );
        assert!(paths[1].try_exists()?, "deleted before an older journal");

        Ok(())
    }
}
