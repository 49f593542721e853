// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use crate::{
    memtable::Memtable,
    tree::sealed::SealedMemtables,
    version::{persist_version, Version},
    SeqNo, SequenceNumberCounter,
};
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{Arc, RwLock, RwLockWriteGuard},
};

/// A super version is a point-in-time snapshot of memtables and a [`Version`] (list of disk files)
#[derive(Clone)]
pub struct SuperVersion {
    /// Active memtable that is being written to
    #[doc(hidden)]
    pub active_memtable: Arc<Memtable>,

    /// Frozen memtables that are being flushed
    pub(crate) sealed_memtables: Arc<SealedMemtables>,

    /// Current tree version
    pub(crate) version: Version,

    pub(crate) seqno: SeqNo,
}

pub struct SuperVersions(VecDeque<SuperVersion>);

/// Super versions removed from the history by [`SuperVersions::retire`],
/// with their version files, to be released outside the version lock.
#[must_use = "release it once the version lock is released"]
#[derive(Default)]
pub struct Retired {
    versions: Vec<SuperVersion>,
    files: Vec<PathBuf>,
}

impl Retired {
    /// Deletes the retired version files, then drops the super versions
    /// (freeing the memtables only they referenced).
    ///
    /// # Errors
    ///
    /// Returns error, if an IO error occurred.
    pub fn release(self) -> crate::Result<()> {
        for path in &self.files {
            if path.try_exists()? {
                crate::file::retry_transient_io(|| std::fs::remove_file(path))?;
            }
        }

        Ok(())
    }
}

impl SuperVersions {
    pub fn new(version: Version) -> Self {
        Self(
            vec![SuperVersion {
                active_memtable: Arc::new(Memtable::new(0)),
                sealed_memtables: Arc::default(),
                version,
                seqno: 0,
            }]
            .into(),
        )
    }

    pub fn memtable_size_sum(&self) -> u64 {
        let mut set = crate::HashMap::default();

        for super_version in &self.0 {
            set.entry(super_version.active_memtable.id)
                .and_modify(|bytes| *bytes += super_version.active_memtable.size())
                .or_insert_with(|| super_version.active_memtable.size());

            for sealed in super_version.sealed_memtables.iter() {
                set.entry(sealed.id)
                    .and_modify(|bytes| *bytes += sealed.size())
                    .or_insert_with(|| sealed.size());
            }
        }

        set.into_values().sum()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn free_list_len(&self) -> usize {
        self.len().saturating_sub(1)
    }

    pub fn maintenance(&mut self, folder: &Path, gc_watermark: SeqNo) -> crate::Result<()> {
        self.retire(folder, gc_watermark).release()
    }

    /// Removes the super versions no snapshot can see any more, like
    /// [`SuperVersions::maintenance`], but leaves deleting their version
    /// files and dropping them to [`Retired::release`], to be called after
    /// the version lock is released: the last reference to a flushed
    /// memtable is often in one of them, and freeing a 64 MiB memtable takes
    /// ~100 ms, during which every read and memtable insert of the tree
    /// would wait for the lock.
    pub fn retire(&mut self, folder: &Path, gc_watermark: SeqNo) -> Retired {
        let mut retired = Retired::default();

        if gc_watermark == 0 {
            return retired;
        }

        if self.free_list_len() < 1 {
            return retired;
        }

        log::trace!("Running manifest GC with watermark={gc_watermark}");

        if let Some(hi_idx) = self.0.iter().rposition(|x| x.seqno < gc_watermark) {
            for _ in 0..hi_idx {
                let Some(head) = self.0.pop_front() else {
                    break;
                };

                log::trace!(
                    "Removing version #{} (seqno={})",
                    head.version.id(),
                    head.seqno,
                );

                retired
                    .files
                    .push(folder.join(format!("v{}", head.version.id())));
                retired.versions.push(head);
            }
        }

        log::trace!("Manifest GC done, version length now {}", self.0.len());

        retired
    }

    /// Modifies the level manifest atomically.
    ///
    /// The function accepts a transition function that receives the current version
    /// and returns a new version.
    ///
    /// The function takes care of persisting the version changes on disk.
    pub(crate) fn upgrade_version<F: FnOnce(&SuperVersion) -> crate::Result<SuperVersion>>(
        &mut self,
        tree_path: &Path,
        f: F,
        seqno: &SequenceNumberCounter,
        visible_seqno: &SequenceNumberCounter,
    ) -> crate::Result<()> {
        self.upgrade_version_with_seqno(tree_path, f, seqno.next(), visible_seqno)
    }

    /// Like `upgrade_version`, but takes an already-allocated sequence number.
    ///
    /// This is useful when the seqno must be coordinated with other operations
    /// (e.g., bulk ingestion where tables are recovered with the same seqno).
    pub(crate) fn upgrade_version_with_seqno<
        F: FnOnce(&SuperVersion) -> crate::Result<SuperVersion>,
    >(
        &mut self,
        tree_path: &Path,
        f: F,
        seqno: SeqNo,
        visible_seqno: &SequenceNumberCounter,
    ) -> crate::Result<()> {
        let mut next_version = f(&self.latest_version())?;
        next_version.seqno = seqno;
        log::trace!("Next version seqno={}", next_version.seqno);

        persist_version(tree_path, &next_version.version)?;
        self.append_version(next_version);

        visible_seqno.fetch_max(seqno + 1);

        Ok(())
    }

    /// Upgrades the table levels like [`SuperVersions::upgrade_version`], but
    /// writes the new version file *without* holding the write lock of
    /// `history`: the file, its directory and `CURRENT` are fsynced, and a
    /// memtable insert or a read waiting for that lock would wait for those
    /// fsyncs (a stall of a whole write path on every flush and compaction).
    ///
    /// `next_levels` derives the new levels from the latest super version
    /// (read under the read lock); `persist` writes them to disk with no lock
    /// of `history` held; then, under the write lock, the new levels replace
    /// those of the then-latest super version (whose memtables may have been
    /// rotated meanwhile), `on_install` adjusts its memtables, and it is
    /// appended with the next seqno. The write lock is returned held, for the
    /// caller's maintenance.
    ///
    /// The caller must hold the tree's compaction state lock: every change of
    /// the levels (flush, compaction, ingestion, `clear`) is made under it, so
    /// the levels cannot change between the read and the install.
    ///
    /// # Panics
    ///
    /// If the levels changed in between (a caller not holding the lock).
    pub(crate) fn upgrade_levels_off_lock<'a>(
        history: &'a RwLock<Self>,
        next_levels: impl FnOnce(&SuperVersion) -> crate::Result<Version>,
        persist: impl FnOnce(&Version) -> crate::Result<()>,
        on_install: impl FnOnce(&mut SuperVersion),
        seqno: &SequenceNumberCounter,
        visible_seqno: &SequenceNumberCounter,
    ) -> crate::Result<RwLockWriteGuard<'a, Self>> {
        #[expect(clippy::expect_used, reason = "lock is expected to not be poisoned")]
        let base = history.read().expect("lock is poisoned").latest_version();

        let levels = next_levels(&base)?;
        persist(&levels)?;

        #[expect(clippy::expect_used, reason = "lock is expected to not be poisoned")]
        let mut lock = history.write().expect("lock is poisoned");
        let mut next_version = lock.latest_version();

        assert_eq!(
            next_version.version.id(),
            base.version.id(),
            "table levels changed without the compaction state lock",
        );

        next_version.version = levels;
        on_install(&mut next_version);

        let seqno = seqno.next();
        next_version.seqno = seqno;
        log::trace!("Next version seqno={seqno}");

        lock.append_version(next_version);
        visible_seqno.fetch_max(seqno + 1);

        Ok(lock)
    }

    pub fn append_version(&mut self, version: SuperVersion) {
        self.0.push_back(version);
    }

    pub fn replace_latest_version(&mut self, version: SuperVersion) {
        if self.0.pop_back().is_some() {
            self.0.push_back(version);
        }
    }

    pub fn latest_version(&self) -> SuperVersion {
        #[expect(clippy::expect_used, reason = "SuperVersion is expected to exist")]
        self.0
            .iter()
            .last()
            .cloned()
            .expect("should always have a SuperVersion")
    }

    pub fn get_version_for_snapshot(&self, seqno: SeqNo) -> SuperVersion {
        if seqno == 0 {
            #[expect(clippy::expect_used, reason = "SuperVersion is expected to exist")]
            return self
                .0
                .front()
                .cloned()
                .expect("should always find a SuperVersion");
        }

        let version = self
            .0
            .iter()
            .rev()
            .find(|version| version.seqno < seqno)
            .cloned();

        if version.is_none() {
            log::error!("Failed to find a SuperVersion for snapshot with seqno={seqno}");
            log::error!("SuperVersions:");

            for version in self.0.iter().rev() {
                log::error!("-> {}, seqno={}", version.version.id(), version.seqno);
            }
        }

        #[expect(clippy::expect_used, reason = "SuperVersion is expected to exist")]
        version.expect("should always find a SuperVersion")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_log::test;

    fn super_version(memtable: &Arc<Memtable>, id: u64, seqno: SeqNo) -> SuperVersion {
        SuperVersion {
            active_memtable: memtable.clone(),
            sealed_memtables: Arc::default(),
            version: Version::new(id, crate::TreeType::Standard),
            seqno,
        }
    }

    // Patched (vendor/PATCHES.md): the version file is written with the lock free
    #[test]
    fn upgrade_levels_off_lock_persists_with_the_lock_free() -> crate::Result<()> {
        let rotated = Arc::new(Memtable::new(1));
        let history = RwLock::new(SuperVersions(
            vec![super_version(&Arc::new(Memtable::new(0)), 0, 0)].into(),
        ));
        let seqno = SequenceNumberCounter::new(5);
        let visible_seqno = SequenceNumberCounter::default();

        let lock = SuperVersions::upgrade_levels_off_lock(
            &history,
            |current| {
                Ok(Version::new(
                    current.version.id() + 1,
                    crate::TreeType::Standard,
                ))
            },
            |levels| {
                assert_eq!(1, levels.id());
                assert!(history.try_write().is_ok(), "persisted under the lock");

                // A memtable rotation while the file is written
                history
                    .write()
                    .expect("lock is poisoned")
                    .append_version(super_version(&rotated, 0, 3));
                Ok(())
            },
            |installed| installed.sealed_memtables = Arc::default(),
            &seqno,
            &visible_seqno,
        )?;

        let latest = lock.latest_version();
        assert_eq!(1, latest.version.id());
        assert_eq!(1, latest.active_memtable.id, "the rotated memtable is kept");
        assert_eq!(5, latest.seqno);
        assert_eq!(6, visible_seqno.get());

        Ok(())
    }

    // Patched (vendor/PATCHES.md): retired versions keep their files and
    // memtables until released
    #[test]
    fn retired_versions_are_deleted_and_freed_on_release() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let old = Arc::new(Memtable::new(0));
        let new = Arc::new(Memtable::new(1));
        let mut history = SuperVersions(
            vec![
                super_version(&old, 0, 0),
                super_version(&old, 1, 1),
                super_version(&new, 2, 2),
            ]
            .into(),
        );
        for id in 0..3 {
            std::fs::write(folder.path().join(format!("v{id}")), b"version")?;
        }

        let retired = history.retire(folder.path(), 3);

        assert_eq!(0, history.free_list_len());
        assert_eq!(3, Arc::strong_count(&old), "the retired versions hold it");
        assert!(folder.path().join("v0").try_exists()?);
        assert!(folder.path().join("v1").try_exists()?);

        retired.release()?;

        assert_eq!(1, Arc::strong_count(&old));
        assert!(!folder.path().join("v0").try_exists()?);
        assert!(!folder.path().join("v1").try_exists()?);
        assert!(folder.path().join("v2").try_exists()?);

        Ok(())
    }

    #[test]
    fn super_version_gc_above_watermark() -> crate::Result<()> {
        let mut history = SuperVersions(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 1,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 0)?;

        assert_eq!(history.free_list_len(), 2);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_simple() -> crate::Result<()> {
        let mut history = SuperVersions(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 1,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 1);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_simple_2() -> crate::Result<()> {
        let mut history = SuperVersions(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 1,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 8,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 2);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_keep() -> crate::Result<()> {
        let mut history = SuperVersions(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 8,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 2);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_shadowed() -> crate::Result<()> {
        let mut history = SuperVersions(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 1);

        Ok(())
    }
}
