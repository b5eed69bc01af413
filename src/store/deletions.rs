//! Files of a store deleted under its writer (a cleanup of files it does not know, a mistaken
//! `rm`): `CONTROL`, `DOUBLEWRITE` and the arena files, put back before a durable commit
//! returns.
//!
//! A put-back makes `CONTROL` (from the control data in force) and `DOUBLEWRITE` again, and
//! copies a deleted arena file from its open descriptor, each synced and renamed into place,
//! under the checkpoint lock: no checkpoint writes pages meanwhile, so the copy holds every page
//! the checkpoints in force wrote, and the log the rest. Without it, a writer killed after the
//! `rm` left a store no open takes ("arena file 0 of the vector space is missing") although its
//! commits were acknowledged as durable. Log segments are the log's own concern (the durable
//! flush that syncs one puts it back). (Until the last stop the put-back was a whole checkpoint,
//! which writes every dirty page first: over 100 ms on a 40,000-row store with the disk busy,
//! where the file alone takes a copy of at most one arena file.)
//!
//! A store, from its first write, watches its directory and `arena/` for removals
//! ([`Storage::watch_removals`]: on Linux one inotify instance for the process). A commit made
//! durable before it returns (`SyncMode::Always`), and `Store::sync`, read the watch (one
//! non-blocking `read` while nothing happens) after the log is durable; if a removal was seen
//! that no put-back has handled, they run the put-back before they return, or wait for the one another committer runs, and return its error if it
//! fails: a commit cannot claim a durability its store would not open to. A later durable
//! commit tries again. A removal is handled by a put-back that started after it was counted,
//! so a committer never returns early because another thread read the event. The store's own
//! renames and removals are of `*.tmp` names, which the watch does not count (a close removes
//! unused arena files, after its last commit).
//!
//! The checkpointer reads the watch at each wake (250 ms) too, for the other sync modes.
//! Where there is no watch (no inotify, its watch limit reached, a storage that cannot watch, a
//! watched directory removed), the checkpointer looks for itself at each wake, and a kill
//! within 250 ms of the `rm` may still lose the store: it costs two `stat`s while nothing
//! changes (the store's directory and the arena's). Only when one of them changed (or did within
//! the last [`RECENT`], since a directory's time ticks coarsely) are its files looked at, one
//! `stat` each. A file replaced by a rename onto its name is found by the next checkpoint only.
//!
//! [`Storage::watch_removals`]: crate::storage::Storage::watch_removals

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::SyncMode;
use crate::error::Result;
use crate::format::control::CONTROL_FILE_NAME;
use crate::format::doublewrite::DOUBLEWRITE_FILE_NAME;
use crate::storage::RemovalWatch;
use crate::store::checkpoint;

use super::inner::Inner;

/// A directory changed this recently is looked into again at each wake.
const RECENT: Duration = Duration::from_secs(2);

/// The directories' times the checkpointer saw last.
#[derive(Debug, Default)]
pub(super) struct DeletionWatch {
    seen: [Option<SystemTime>; 2],
}

impl DeletionWatch {
    /// True if `CONTROL`, `DOUBLEWRITE` or an arena file in use has no file at its path.
    pub(super) fn files_deleted(&mut self, inner: &Inner) -> bool {
        if let Some(seen) = inner.deletions.seen() {
            return seen > inner.deletions.handled();
        }
        let storage = inner.options.storage.as_ref();
        let now = SystemTime::now();
        let mut changed = [false; 2];
        for (index, dir) in [inner.dir.as_path(), inner.arena.dir()].into_iter().enumerate() {
            // `None` (a storage that cannot tell, or a directory gone): no change to act on, so a
            // store whose directory was moved does not checkpoint at every wake in vain.
            let modified = storage.modified(dir);
            let recent = modified.is_some_and(|m| now.duration_since(m).map_or(true, |d| d < RECENT));
            changed[index] = recent || modified != self.seen[index];
            self.seen[index] = modified;
        }
        let [store_changed, arena_changed] = changed;
        (store_changed && store_files_missing(inner)) || (arena_changed && inner.arena.any_file_missing())
    }
}

/// True if `CONTROL` or `DOUBLEWRITE` has no file at its path.
fn store_files_missing(inner: &Inner) -> bool {
    let missing = |name: &str| !inner.options.storage.exists(&inner.dir.join(name));
    missing(CONTROL_FILE_NAME) || missing(DOUBLEWRITE_FILE_NAME)
}

/// True if `CONTROL`, `DOUBLEWRITE` or an arena file in use has no file at its path.
fn files_missing(inner: &Inner) -> bool {
    store_files_missing(inner) || inner.arena.any_file_missing()
}

/// The removals of the store's files its watch has seen, and how many a put-back has handled.
#[derive(Debug, Default)]
pub(crate) struct Deletions {
    /// Set by the store's first write ([`Deletions::start`]); `None` inside where the storage
    /// cannot watch. A store opened read-only, or not written yet, has none.
    watch: OnceLock<Option<Box<dyn RemovalWatch>>>,
    /// 1 if a file was missing already when the watch started (counted as one removal).
    missing_at_start: AtomicU64,
    /// The count that the last put-back to succeed had seen before it started.
    handled: AtomicU64,
}

/// The names in the store's directory whose removal a put-back answers.
fn is_store_file(name: &str) -> bool {
    name == CONTROL_FILE_NAME || name == DOUBLEWRITE_FILE_NAME
}

/// The names in `arena/` whose removal a put-back answers (not `*.pages.tmp`: the arena's own).
fn is_arena_file(name: &str) -> bool {
    name.ends_with(".pages")
}

impl Deletions {
    /// Watches the directory and `arena/` of a store about to be written, once: at its first
    /// write, not at its open (two `inotify_add_watch` were ~10 us, 8%, of a warm open, and a
    /// store opened to be read needs no watch). A file deleted before the watch started (the
    /// open looked at each) is found by a look now, one `stat` a file asking for its type
    /// only, and counted as a removal.
    pub(super) fn start(&self, inner: &Inner) {
        self.watch.get_or_init(|| {
            let storage = inner.options.storage.as_ref();
            let watch = storage.watch_removals(&[(&inner.dir, is_store_file), (inner.arena.dir(), is_arena_file)]);
            if watch.is_some() && files_missing(inner) {
                self.missing_at_start.store(1, Ordering::Release);
            }
            watch
        });
    }

    /// The removals seen so far, if the watch can tell.
    fn seen(&self) -> Option<u64> {
        let removals = self.watch.get()?.as_ref()?.removals()?;
        Some(removals + self.missing_at_start.load(Ordering::Acquire))
    }

    fn handled(&self) -> u64 {
        self.handled.load(Ordering::Acquire)
    }
}

/// After a commit is durable, before it returns: puts back what was deleted if the commit was
/// made durable (`SyncMode::Always`; other modes leave it to the checkpointer's wake).
pub(crate) fn put_back_after_commit(inner: &Inner) -> Result<()> {
    if inner.wal.sync_mode() != SyncMode::Always {
        return Ok(());
    }
    put_back_owed(inner)
}

/// Puts back the files of the store deleted since the last put-back, if the watch saw any: returns once they are back and durable, or
/// with the error that kept one from coming back. Nothing to do (one non-blocking read) when
/// the watch saw nothing new, or cannot tell.
pub(crate) fn put_back_owed(inner: &Inner) -> Result<()> {
    match inner.deletions.seen() {
        Some(seen) if seen > inner.deletions.handled() => put_back(inner),
        _ => Ok(()),
    }
}

/// Puts deleted files back (see the module's notes), unless a put-back that started after every
/// removal seen by now has run meanwhile (another committer's, waited for on the lock).
pub(crate) fn put_back(inner: &Inner) -> Result<()> {
    let _one_at_a_time = inner.checkpoint_lock.lock();
    // Read under the lock: every removal counted by now happened before this put-back starts,
    // so it finds their files without a name.
    let seen = inner.deletions.seen();
    if seen.is_some_and(|seen| seen <= inner.deletions.handled()) {
        return Ok(());
    }
    checkpoint::relink_files(inner)?;
    if let Some(seen) = seen {
        inner.deletions.handled.fetch_max(seen, Ordering::AcqRel);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use crate::storage::{SimStorage, Storage};
    use crate::store::{Options, Store};
    use crate::{Error, SyncMode};

    const FILES: [&str; 4] = [
        "CONTROL",
        "DOUBLEWRITE",
        "arena/vector-00000000.pages",
        "arena/catalog-00000000.pages",
    ];

    fn options(sim: &SimStorage) -> Options {
        Options {
            storage: Arc::new(sim.clone()),
            background_io: false,
            ..Options::default()
        }
    }

    fn vector(i: usize) -> [f32; 4] {
        [i as f32, 1.0, 2.0, 3.0]
    }

    /// The control file's sequence: one more at each checkpoint.
    fn checkpoints(store: &Store) -> u64 {
        store.inner().control.lock().1.sequence
    }

    /// A crash of `sim` now, and an open of the store in `dir` after it: `rows` rows.
    fn assert_a_crash_keeps_every_row(sim: &SimStorage, dir: &Path, rows: usize, file: &str) {
        let rebooted = sim.reboot();
        let store = Store::open(dir, options(&rebooted))
            .unwrap_or_else(|e| panic!("{file}: the store opens after the crash: {e}"));
        assert_eq!(store.len(), rows, "{file}: every acknowledged row");
    }

    #[test]
    fn a_file_deleted_under_a_writer_is_back_before_the_next_durable_commit_returns() {
        for (seed, file) in FILES.into_iter().enumerate() {
            let sim = SimStorage::new(seed as u64);
            let dir = Path::new("/store");
            let store = Store::create(dir, 4, options(&sim)).unwrap();
            for i in 0..50 {
                store.insert(&format!("v{i}"), &vector(i), &[]).unwrap();
            }
            store.checkpoint().unwrap();
            let before = checkpoints(&store);
            store.insert("v50", &vector(50), &[]).unwrap();
            assert_eq!(checkpoints(&store), before, "{file}: nothing deleted, no put-back");
            sim.remove_file(&dir.join(file)).unwrap();
            // A transaction's commit, then a single-row write (the combiner's path).
            let mut tx = store.begin().unwrap();
            tx.insert("v51", &vector(51), &[]).unwrap();
            tx.commit().unwrap();
            assert!(sim.exists(&dir.join(file)), "{file}: back when the commit returned");
            assert_eq!(
                checkpoints(&store),
                before,
                "{file}: put back alone, with no checkpoint writing the dirty pages first"
            );
            let after = checkpoints(&store);
            store.insert("v52", &vector(52), &[]).unwrap();
            assert_eq!(
                checkpoints(&store),
                after,
                "{file}: the put-back's own renames call for no other put-back"
            );
            sim.remove_file(&dir.join(file)).unwrap();
            store.insert("v53", &vector(53), &[]).unwrap();
            // A crash now: every acknowledged row is in a store that opens.
            assert_a_crash_keeps_every_row(&sim, dir, 54, file);
        }
    }

    #[test]
    fn a_file_deleted_after_the_open_and_before_the_first_write_is_back_when_that_write_returns() {
        // The watch starts with the first write (not at the open): a file deleted before it is
        // found by the look it starts with, and put back as one the watch saw.
        for (seed, file) in FILES.into_iter().enumerate() {
            let sim = SimStorage::new(40 + seed as u64);
            let dir = Path::new("/store");
            let store = Store::create(dir, 4, options(&sim)).unwrap();
            for i in 0..20 {
                store.insert(&format!("v{i}"), &vector(i), &[]).unwrap();
            }
            store.close().unwrap();
            let store = Store::open(dir, options(&sim)).unwrap();
            assert_eq!(store.len(), 20, "{file}: the store reopened");
            sim.remove_file(&dir.join(file)).unwrap();
            store.insert("v20", &vector(20), &[]).unwrap();
            assert!(sim.exists(&dir.join(file)), "{file}: back when the first write returned");
            assert_a_crash_keeps_every_row(&sim, dir, 21, file);
        }
    }

    #[test]
    fn a_commit_that_is_not_durable_when_it_returns_leaves_the_put_back_to_the_checkpointer() {
        let sim = SimStorage::new(7);
        let dir = Path::new("/store");
        let options = Options {
            sync: SyncMode::Never,
            ..options(&sim)
        };
        let store = Store::create(dir, 4, options).unwrap();
        store.insert("v0", &vector(0), &[]).unwrap();
        store.checkpoint().unwrap();
        sim.remove_file(&dir.join("CONTROL")).unwrap();
        store.insert("v1", &vector(1), &[]).unwrap();
        assert!(!sim.exists(&dir.join("CONTROL")), "no put-back in a commit that claims no durability");
        store.sync().unwrap();
        assert!(sim.exists(&dir.join("CONTROL")), "a sync makes the commits durable: the file is back");
    }

    #[test]
    fn a_put_back_that_fails_fails_the_durable_commit_that_needed_it_and_every_later_one_until_it_succeeds() {
        for seed in [21, 22] {
            let sim = SimStorage::new(seed);
            let dir = Path::new("/store");
            let store = Store::create(dir, 4, options(&sim)).unwrap();
            for i in 0..10 {
                store.insert(&format!("v{i}"), &vector(i), &[]).unwrap();
            }
            store.checkpoint().unwrap();
            sim.remove_file(&dir.join("CONTROL")).unwrap();
            sim.set_capacity(Some(sim.used_bytes()));
            let error = store.insert("v10", &vector(10), &[]).unwrap_err();
            assert!(
                matches!(error, Error::DiskFull { .. }),
                "seed {seed}: the commit whose put-back found the disk full says so: {error}"
            );
            let later = store.insert("v11", &vector(11), &[]).unwrap_err();
            assert!(
                matches!(later, Error::DiskFull { .. }),
                "seed {seed}: a later durable commit tries again, and fails while CONTROL is gone: {later}"
            );
            assert!(!sim.exists(&dir.join("CONTROL")), "seed {seed}: nothing half made under its name");
            sim.set_capacity(None);
            store.insert("v12", &vector(12), &[]).unwrap();
            assert!(sim.exists(&dir.join("CONTROL")), "seed {seed}: the first Ok comes with the file back");
            let rebooted = sim.reboot();
            let store = Store::open(dir, options(&rebooted))
                .unwrap_or_else(|e| panic!("seed {seed}: the store opens after the crash: {e}"));
            assert!(
                (0..10).chain([12]).all(|i| store.get(&format!("v{i}")).unwrap().is_some()),
                "seed {seed}: every acknowledged row"
            );
        }
    }
}
