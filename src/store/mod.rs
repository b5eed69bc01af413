//! The store: a directory holding vectors durably, with transactions and checkpoints.
//!
//! Layout of a store directory (format-spec/FORMAT.md, "Store directory"):
//! `CONTROL`, `LOCK`, `DOUBLEWRITE`, `wal/` (log segments), `arena/` (page files).
//!
//! Discipline (ARIES, steal/no-force): every change is logged before it is applied to a page in
//! memory; pages reach disk only at checkpoints, after the log is durable through their page
//! LSN; commit forces only the log.
//!
//! Isolation (read committed): a writer never modifies bytes a reader can reach. New vectors
//! and catalog entries go to free space; the id index readers use changes only at commit; space
//! a commit frees is reused only after readers that might still hold it have left (`epoch`).
//! So readers never block on a writer and never see uncommitted or aborted data: the committed
//! version is whatever the index points to, and the pages under it do not change.

mod alloc;
mod apply;
pub(crate) mod archiver;
pub(crate) mod catalog;
pub(crate) mod checkpoint;
mod combine;
pub mod control_file;
mod deletions;
mod edits;
mod get_many;
pub(crate) mod graph;
mod inner;
mod iter;
mod lifecycle;
mod mask;
mod options;
mod prefetch;
pub(crate) mod prepare;
pub(crate) mod readers;
pub mod recovery;
mod runs;
pub(crate) mod scan;
pub mod settings;
#[cfg(feature = "object-store")]
pub(crate) mod shipper;
pub(crate) mod shipping;
pub mod state;
mod stored;
pub(crate) mod tree;
mod txn;
mod unfinished;

use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::arena::{Arena, ArenaOpen};
use crate::arena::doublewrite::{Doublewrite, DoublewriteOpen};
use crate::error::{IoContext, Result};
use recovery::RecoveryReport;

/// How many times `get` looks an id up again when a commit freed what its first lookup found.
const GET_TRIES_MAX: u32 = 64;
use crate::wal::{Wal, now_us};
use crate::{Error, Lsn};
use crate::format::control::Control;
use control_file::ControlFile;
use readers::Pin;
pub use get_many::{GET_MANY_COLD_WINDOW, GET_MANY_WINDOW};
pub use txn::{BATCH_RECORD_BYTES, Row, Transaction};
pub use iter::{Entries, Entry, Ids, ListOptions};
pub use options::{Options, Retention};
pub use graph::{IndexBuildPhase, IndexBuildProgress, IndexInfo, IndexOptions, SearchOptions};
pub(crate) use apply::{apply_edits, format_page};
pub(crate) use inner::{ActiveTxn, Inner};
use inner::checkpointer;
use lifecycle::{
    absolute_dir, check_creation_options, check_file_size_limit, check_room_for_segment, create_files, lock_for_creation, lock_store, random_u64, wal_config};

/// An embedded vector store. `Send + Sync`: share it with `Arc`.
///
/// Not across `fork()`: in a child of the process that opened it for writing, every call
/// that returns a `Result` (its transactions' too) returns [`Error::Closed`], and its close
/// and drop write nothing (the files stay the parent's). A store opened with
/// [`Store::open_read_only`] reads on in the child.
pub struct Store {
    inner: Arc<Inner>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    /// The checkpointer was started (or need not be): set by the first transaction.
    checkpointer_started: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("len", &self.len())
            .finish()
    }
}

/// Where a store's log stands ([`Store::log_info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogInfo {
    /// The numbers of the live log segments (`wal/<n as 16 hex digits>.wal`), oldest first.
    pub segments: Vec<u64>,
    /// Their total size.
    pub segment_bytes: u64,
    /// Where a scan of the oldest segment starts.
    pub first_lsn: Lsn,
    /// The end of the log: where the next record goes.
    pub end_lsn: Lsn,
    /// Every log byte below this is durable.
    pub durable_lsn: Lsn,
    /// Commits acknowledged since this open (every sync mode).
    pub commits: u64,
    /// fdatasyncs of the log since this open: with `SyncMode::Always`, `commits / log_syncs`
    /// is how many commits one flush served on average (group commit).
    pub log_syncs: u64,
    /// Of `log_syncs`, the flushes written past the page cache, each a durable
    /// `O_DIRECT | O_DSYNC` write that stands for a pwrite and an fdatasync (small commits on a
    /// file system that has direct I/O).
    pub direct_flushes: u64,
    /// Writes and fdatasyncs of `wal/EPOCH` that moved the log's horizon since this open (not
    /// in `log_syncs`): one per 256 KiB of log for small commits, fewer a byte for bulk loads
    /// (the step grows with the log's pace, to 4 MiB).
    pub horizon_moves: u64,
}

/// Checkpoints wait while this lives (see [`Store::hold_for_copy`]).
pub(crate) struct CopyGuard<'a> {
    _no_checkpoints: parking_lot::MutexGuard<'a, ()>,
}

/// A vector read zero-copy from the arena, with its metadata. Dereferences to `[f32]`.
///
/// The slot it borrows is not reused while the `VectorRef` lives, even if the id is deleted or
/// replaced meanwhile: a reader keeps the version it looked up.
pub struct VectorRef<'a> {
    vector: &'a [f32],
    meta: MetaRef<'a>,
    _pin: Pin<'a>,
}

pub(crate) enum MetaRef<'a> {
    Inline(&'a [u8]),
    Owned(Arc<[u8]>),
}

impl Deref for VectorRef<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        self.vector
    }
}

impl std::fmt::Debug for VectorRef<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorRef")
            .field("dimension", &self.vector.len())
            .finish()
    }
}

impl VectorRef<'_> {
    /// The metadata pairs, in insertion order.
    pub fn metadata(&self) -> crate::format::meta::Pairs<'_> {
        let bytes: &[u8] = match &self.meta {
            MetaRef::Inline(bytes) => bytes,
            MetaRef::Owned(bytes) => bytes,
        };
        match crate::format::meta::Pairs::new(bytes) {
            Some(pairs) => pairs,
            None => crate::format::meta::Pairs::empty(),
        }
    }
}

impl Store {
    /// Creates a store of `dimension`-component vectors in `dir` (created if missing).
    /// `Err(AlreadyExists)` if a store is there already; `Err(DiskFull)` if the file system has
    /// no room for the first log segment (nothing is left behind then).
    pub fn create(dir: impl AsRef<Path>, dimension: u32, options: Options) -> Result<Store> {
        let options = options.resolve_direct_io();
        let storage = options.storage.clone();
        let dir = &absolute_dir(storage.as_ref(), dir.as_ref())?;
        check_creation_options(dimension, &options)?;
        let control_path = dir.join(crate::format::control::CONTROL_FILE_NAME);
        if storage.exists(&control_path) {
            return Err(Error::AlreadyExists);
        }
        let creating = format!("creating a store in {}", dir.display());
        check_file_size_limit(storage.as_ref(), &creating, options.page_size_bytes, options.segment_size_bytes)?;
        storage
            .create_dir_all(dir)
            .context(|| format!("creating {}", dir.display()))?;
        // Now that it exists, its links are resolved too.
        let dir = &absolute_dir(storage.as_ref(), dir)?;
        // Before the lock, whose file a refusal would leave behind.
        check_room_for_segment(storage.as_ref(), dir, options.segment_size_bytes)?;
        // Looked at again under the lock: another creator may have made the store meanwhile.
        let creation_lock = lock_for_creation(&storage, dir)?;
        if storage.exists(&dir.join(crate::format::control::CONTROL_FILE_NAME)) {
            return Err(Error::AlreadyExists);
        }
        // The remains of a creation a crash cut short hold no row: cleared, and made again.
        if !unfinished::clear(storage.as_ref(), dir)? && storage.exists(&dir.join("wal")) {
            return Err(Error::InvalidArgument(format!(
                "{} holds a store's log but no control file (a store whose CONTROL was lost, not an unfinished creation): remove it first, or restore the store",
                dir.display()
            )));
        }
        let control = Control {
            page_size_bytes: options.page_size_bytes,
            segment_size_bytes: options.segment_size_bytes,
            dimension,
            timeline: 1,
            store_id: random_u64(),
            sequence: 0,
            checkpoint_lsn: Lsn::NONE,
            checkpoint_end_lsn: Lsn::NONE,
            redo_lsn: Lsn::NONE,
            next_txn_id: 1,
            created_us: now_us(),
            checkpoint_us: 0,
            truncate_lsn: Lsn::NONE,
            extent: Some(crate::format::control::ArenaExtent::default()),
        };
        create_files(storage.as_ref(), dir, &control, &options)?;
        // The open goes on with the locks taken above: no other process comes in between, and
        // a creator waiting for this one finds the store made.
        Self::open_locked(dir, options, false, Some(creation_lock))
    }

    /// Opens the store in `dir`, recovering it to its last committed state.
    ///
    /// A store whose files are missing, short or swapped in from another store is refused with
    /// `Err(Corrupted)` naming the file, before anything is written. An open that finds nothing
    /// to recover writes nothing (no checkpoint, no new log file) until the first change.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_mode(dir.as_ref(), options, false)
    }

    /// Opens the store in `dir` for reading only: no byte anywhere is written (it works on
    /// read-only media and for a user without write permission), many read-only openers may
    /// share a store but none beside a writer (a shared lock on `LOCK`; `Err(Locked)` if a
    /// writer has it), and what a crash left to recover is replayed in memory only. Every
    /// write (`insert`, `begin`, `checkpoint`, `backup`, ...) is refused with
    /// `Err(ReadOnly)`. `Options::recovery` applies; sync and checkpoint options do not.
    pub fn open_read_only(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_mode(dir.as_ref(), options, true)
    }

    fn open_mode(dir: &Path, options: Options, read_only: bool) -> Result<Store> {
        Self::open_locked(dir, options, read_only, None)
    }

    /// Opens the store in `dir`, with the store's locks `held` already (a create's), or taking
    /// them.
    fn open_locked(
        dir: &Path,
        options: Options,
        read_only: bool,
        held: Option<Box<dyn std::any::Any + Send + Sync>>,
    ) -> Result<Store> {
        let options = options.resolve_direct_io();
        let storage = options.storage.clone();
        let dir = &absolute_dir(storage.as_ref(), dir)?;
        // Hook (shipping): a replica's log is its primary's; it never opens for writing.
        let stored = settings::read(storage.as_ref(), dir)?;
        if !read_only {
            crate::store::shipping::refuse_writer_on_replica(dir, &stored)?;
        }
        let (control_file, control) = if read_only {
            ControlFile::open(storage.as_ref(), dir)?
        } else {
            let (file, control) = ControlFile::open_writable(storage.as_ref(), dir)?;
            let opening = format!("opening {} for writing", dir.display());
            check_file_size_limit(storage.as_ref(), &opening, control.page_size_bytes, control.segment_size_bytes)?;
            (file, control)
        };
        let lock = match held {
            Some(lock) => lock,
            None => lock_store(dir, &storage, read_only)?,
        };
        let OpenedFiles {
            wal,
            scan,
            arena,
            doublewrite,
        } = open_files(dir, &options, &control, &stored, read_only)?;
        let retention = settings::effective_retention(&options, &stored)?;
        let inner = Arc::new(Inner::new(
            dir,
            options,
            read_only,
            control_file,
            control,
            wal,
            arena,
            doublewrite,
            lock,
            retention,
        ));
        if !read_only {
            crate::store::archiver::start(&inner)?;
            crate::store::shipping::start(&inner, &stored)?; // Hook (shipping)
        }
        let store = Store {
            inner,
            checkpointer: Mutex::new(None),
            checkpointer_started: AtomicBool::new(false),
        };
        let checkpoint_due = recovery::recover(&store.inner, scan)?;
        graph::load(&store.inner)?; // Hook (approximate index): one page read
        // The checkpointer starts with the first transaction (`ensure_checkpointer`): an open
        // that only reads spawns no thread, unless recovery left it a checkpoint to run.
        if checkpoint_due {
            store.ensure_checkpointer()?;
            store.inner.want_checkpoint();
        }
        Ok(store)
    }

    /// The vector stored under `id`, or `None`.
    pub fn get(&self, id: &str) -> Result<Option<VectorRef<'_>>> {
        let inner = &*self.inner;
        inner.check_process()?;
        let mut tries = 0;
        loop {
            let pin = inner.epochs.pin();
            let token = inner.mask.token();
            let found = tree::lookup(inner, id.as_bytes())?;
            let Some(visible) = inner.mask.visible_since(token, id.as_bytes(), found) else {
                tries += 1;
                assert!(tries < GET_TRIES_MAX * 1024, "a reader looked an id up again without end");
                continue;
            };
            let Some(value) = visible else {
                return Ok(None);
            };
            let entry = catalog::read_entry(&inner.arena, &inner.layout, &value)?;
            match inner.vector_ref(&entry, pin) {
                Ok(found) => return Ok(Some(found)),
                // A commit between the lookup and the read freed the entry's overflow chain
                // (and published the id's new value): look again.
                // An undo between the two put the chain back just after the read met it
                // freed. Neither happened (no clear of the mask since the lookup): damage.
                Err(error) => {
                    tries += 1;
                    if inner.mask.token() == token || tries == GET_TRIES_MAX {
                        return Err(error);
                    }
                }
            }
        }
    }

    /// Inserts a vector (autocommit). `Err(AlreadyExists)` if `id` is present.
    ///
    /// With `SyncMode::Always`, concurrent calls (and [`Store::upsert`]s) are combined: one
    /// calling thread runs each queued row as its own transaction and leads the flush that
    /// makes them all durable; each caller gets its own row's result.
    pub fn insert(&self, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<Lsn> {
        if self.combines() {
            self.inner.check_process()?; // before the combiner's lock, which a fork may hold
            return self.inner().combiner.write(self, combine::RowOp::Insert, id, vector, metadata);
        }
        let mut tx = self.begin()?;
        tx.insert(id, vector, metadata)?;
        tx.commit()
    }

    /// Inserts or replaces a vector (autocommit).
    pub fn upsert(&self, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<Lsn> {
        if self.combines() {
            self.inner.check_process()?; // before the combiner's lock, which a fork may hold
            return self.inner().combiner.write(self, combine::RowOp::Upsert, id, vector, metadata);
        }
        let mut tx = self.begin()?;
        tx.upsert(id, vector, metadata)?;
        tx.commit()
    }

    /// Whether single-row writes go through the combiner (src/store/combine.rs): only where
    /// each waits for its own flush, which concurrent writers then share.
    fn combines(&self) -> bool {
        self.inner().options.sync == crate::SyncMode::Always
    }

    /// Inserts every row `(id, vector, metadata)` in one transaction (the bulk path: many
    /// rows to a log record); `Err(AlreadyExists)` if an id is present or given twice. On any
    /// error nothing changes.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let store = vellum::Store::create(dir.path(), 2, vellum::Options::default())?;
    /// let rows: Vec<(String, Vec<f32>)> = (0..1000).map(|i| (format!("v{i:04}"), vec![i as f32, 1.0])).collect();
    /// let rows: Vec<vellum::Row<'_>> = rows.iter().map(|(id, v)| (id.as_str(), v.as_slice(), &[][..])).collect();
    /// store.insert_many(&rows)?;
    /// assert_eq!(store.len(), 1000);
    /// assert!(matches!(store.insert_many(&rows[..1]), Err(vellum::Error::AlreadyExists)), "present ids are refused");
    /// # Ok::<(), vellum::Error>(())
    /// ```
    pub fn insert_many(&self, rows: &[Row<'_>]) -> Result<Lsn> {
        let mut tx = self.begin()?;
        tx.insert_many(rows)?;
        tx.commit()
    }

    /// Inserts or replaces every row in one transaction (an id given twice ends with its last
    /// row); on any error nothing changes. See [`Transaction::upsert_many`].
    pub fn upsert_many(&self, rows: &[Row<'_>]) -> Result<Lsn> {
        let mut tx = self.begin()?;
        tx.upsert_many(rows)?;
        tx.commit()
    }

    /// Checks `rows` as [`Transaction::upsert_many`] and [`Transaction::insert_many`] do before
    /// they change anything (each id, each vector's length and components, each row's
    /// metadata), without a transaction and without the writer lock: the first bad row is an
    /// `InvalidArgument` naming it ("row 12 (\"id\"): component 3 is NaN …"). For a caller that
    /// hands a batch to a transaction in parts (to stay interruptible) and wants a bad row
    /// refused before any part is written.
    pub fn check_rows(&self, rows: &[Row<'_>]) -> Result<()> {
        txn::check_rows(self.dimension(), rows)
    }

    /// Deletes a vector (autocommit); returns whether it existed.
    pub fn delete(&self, id: &str) -> Result<bool> {
        let mut tx = self.begin()?;
        let existed = tx.delete(id)?;
        tx.commit()?;
        Ok(existed)
    }

    /// The `k` vectors closest to `query` by `metric`, best first: `(id, score)`. Scores are
    /// similarities for `Cosine` and `Dot` (higher is closer) and distances for `L2`.
    pub fn search(&self, query: &[f32], k: usize, metric: crate::Metric) -> Result<Vec<(String, f32)>> {
        let options = SearchOptions { metric, ..SearchOptions::default() };
        self.search_with(query, k, &options) // the index when it has this metric, else a scan
    }

    /// Like [`Store::search`], over the vectors whose metadata holds the pair `filter`.
    pub fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        metric: crate::Metric,
        filter: Option<(&str, &str)>,
    ) -> Result<Vec<(String, f32)>> {
        let options = SearchOptions { metric, filter, ..SearchOptions::default() };
        self.search_with(query, k, &options) // the index when it has this metric, else a scan
    }

    /// Starts a write transaction; waits while another one runs (one writer at a time).
    pub fn begin(&self) -> Result<Transaction<'_>> {
        Transaction::begin(self)
    }

    /// Runs a checkpoint now: writes dirty pages, records where recovery starts, releases log
    /// (to the archiver, which copies it in the background: see [`Store::archive_now`]).
    pub fn checkpoint(&self) -> Result<Lsn> {
        self.inner.check_writable()?;
        crate::store::checkpoint::run(&self.inner)
    }

    /// Archives, on the caller's thread, every log segment the checkpoints released that the
    /// archiver has not copied yet — those a session that ended without a close left in the log
    /// directory, and those the background archiver has not reached — and returns
    /// once the archive holds them all. Nothing to do without `Options::archive`.
    pub fn archive_now(&self) -> Result<()> {
        self.inner.check_writable()?;
        crate::store::archiver::catch_up(&self.inner)
    }

    /// Takes a checkpoint with a base image and holds off later checkpoints (and so the
    /// recycling of any log segment) until the guard is dropped: what a copy of the store
    /// (`Store::backup`, in `restore`) needs to read its archive and live log whole.
    pub(crate) fn hold_for_copy(&self) -> Result<CopyGuard<'_>> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let no_checkpoints = inner.checkpoint_lock.lock();
        checkpoint::run_locked(inner, true, checkpoint::Caller::Waiting)?;
        Ok(CopyGuard {
            _no_checkpoints: no_checkpoints,
        })
    }

    /// The storage the store's files live on.
    pub(crate) fn storage(&self) -> &Arc<dyn crate::storage::Storage> {
        &self.inner.options.storage
    }

    /// Sets the archive's retention policy of this store: stored in its settings, so every later
    /// open applies it (unless that open's `Options::retention` names another), and applied now.
    /// `Retention::Stored` resets it to the default (`KeepLast(2)`).
    pub fn set_retention(&self, retention: Retention) -> Result<()> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let storage = inner.options.storage.as_ref();
        let mut stored = settings::read(storage, &inner.dir)?;
        match retention {
            Retention::Stored => stored.unset(settings::RETENTION),
            policy => stored.set(settings::RETENTION, &policy.to_string())?,
        }
        settings::write(storage, &inner.dir, &stored)?;
        *inner.retention.lock() = stored.retention()?.unwrap_or(Retention::DEFAULT);
        self.prune_archive()
    }

    /// The archive's retention policy in force for this open.
    pub fn retention(&self) -> Retention {
        *self.inner.retention.lock()
    }

    /// Deletes, now, the base images and archived segments the retention in force does not keep
    /// (checkpoints do it too). Nothing a retained base image needs is deleted.
    pub fn prune_archive(&self) -> Result<()> {
        self.inner.check_writable()?;
        crate::store::archiver::apply_retention(&self.inner)
    }

    /// Makes every commit so far durable (whatever the sync mode), and puts back a file of the
    /// store deleted under it that its watch saw (src/store/deletions.rs).
    pub fn sync(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.wal.sync()?;
        deletions::put_back_owed(&self.inner)
    }

    /// The number of vectors.
    pub fn len(&self) -> usize {
        self.inner.count.load(Ordering::Acquire) as usize
    }

    /// True if the store holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of components of every vector.
    pub fn dimension(&self) -> usize {
        self.inner.dimension as usize
    }

    /// What the last open's recovery did.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.inner.report.lock().clone()
    }

    /// The store's directory, as the open resolved it (absolute, its symbolic links resolved).
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The write-ahead log (the project's tests).
    #[cfg(feature = "testing")]
    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// Every commit whose LSN is below this is durable (with `SyncMode::Interval` or `Never`,
    /// commits become durable later than they return).
    pub fn durable_lsn(&self) -> Lsn {
        self.inner.wal.durable_lsn()
    }

    /// Where the log stands: its live segments and addresses.
    pub fn log_info(&self) -> LogInfo {
        let wal = &self.inner.wal;
        let segments = wal.segment_numbers();
        let stats = wal.commit_stats();
        LogInfo {
            commits: stats.commits,
            log_syncs: stats.log_syncs,
            direct_flushes: stats.direct_flushes,
            horizon_moves: stats.horizon_moves,
            segment_bytes: segments.len() as u64 * wal.geometry().segment_size_bytes,
            segments,
            first_lsn: wal.first_lsn(),
            end_lsn: wal.end_lsn(),
            durable_lsn: wal.durable_lsn(),
        }
    }

    /// Checkpoints (writing back what the background checkpoints left; the closing checkpoint
    /// stores no base image), makes the log durable and closes the store. A checkpoint that finds the disk
    /// full is given up (the next open redoes the log instead): the close still succeeds once
    /// the log is durable.
    pub fn close(self) -> Result<()> {
        if self.inner.origin.is_forked() {
            // A forked child's copy: its drop leaves the files to the process that opened it.
            return Ok(());
        }
        self.stop_checkpointer();
        if self.inner.read_only || (!self.inner.wal.appended() && self.inner.dirty.lock().is_empty()) {
            // Nothing changed since the open (every change is logged first, and recovery left
            // no page to write back): there is nothing to write, and a close writes nothing
            // (unless a file of the store was deleted while it was open: it is made again).
            crate::store::shipping::finish(&self.inner); // Hook (shipping): what is left, bounded
            if !self.inner.read_only {
                checkpoint::relink_files(&self.inner)?;
            }
            return Ok(());
        }
        // The segments the closing checkpoint retires (everything before the active one), and
        // any the archiver had not taken yet, are archived now, as PostgreSQL's archiver does
        // at shutdown: a closed store holds its arena and the log's active segment and one
        // spare, not up to a checkpoint interval of log waiting for the next session's
        // archiver (and a store that ships needs them in the bucket before the close finishes
        // the shipper). Up to four at a time: ~25 ms a 16 MiB segment here.
        let result = checkpoint::run_closing(&self.inner).and_then(|_| {
            // A file made ahead that no page used (store/prepare.rs) is left out of the extent
            // the closing checkpoint recorded: it goes, so a closed store holds only the files
            // it uses. (Not synced: a crash that brings it back leaves a file of zeros past
            // the extent, which an open accepts.)
            if let Some(extent) = self.inner.control.lock().1.extent {
                self.inner.arena.remove_files_from(extent.files);
            }
            if self.inner.options.archive || crate::store::shipping::ships(&self.inner) {
                crate::store::archiver::drain(&self.inner)
            } else {
                Ok(())
            }
        });
        // Durable, with the rest of the last log page zeroed: a clean end even in a recycled
        // segment for the next open and for independent readers.
        let finish = self.inner.wal.finish();
        crate::store::shipping::finish(&self.inner); // Hook (shipping): what is left, bounded
        match (result, finish) {
            // Every commit is durable in the log; the checkpoint only shortens the next open's
            // recovery, which redoes what it could not write. On a full disk (the closing
            // checkpoint may need room for new arena files or archived segments) the close
            // still succeeds: the store is whole, and nothing acknowledged depends on it.
            // Unless a file of the store deleted while it was open could not be made again
            // (the checkpoint that makes it failed): the store would not open, and the close
            // says so (one more try here: the disk may have room now).
            (Err(Error::DiskFull { .. }), Ok(())) => checkpoint::relink_files(&self.inner),
            (result, finish) => result.and(finish),
        }
    }

    /// Starts the background checkpointer unless it runs already, was stopped, or is off.
    pub(super) fn ensure_checkpointer(&self) -> Result<()> {
        if self.checkpointer_started.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.checkpointer_started.swap(true, Ordering::AcqRel) || self.inner.read_only {
            return Ok(());
        }
        // The first write: from now on a durable commit puts back a file deleted under it.
        self.inner.deletions.start(&self.inner);
        self.start_checkpointer()
    }

    fn start_checkpointer(&self) -> Result<()> {
        if self.inner.options.background_io {
            prepare::start(&self.inner)?;
        }
        if self.inner.options.checkpoint_interval_bytes == 0 || !self.inner.options.background_io {
            return Ok(());
        }
        let weak = Arc::downgrade(&self.inner);
        let handle = crate::background::spawn("vellum-checkpoint", move || checkpointer(weak))
            .map_err(|e| Error::io("starting the checkpoint thread", e))?;
        *self.checkpointer.lock() = Some(handle);
        Ok(())
    }

    fn stop_checkpointer(&self) {
        {
            // Set under the lock the checkpointer checks it under before it waits: a stop set
            // between its check and its wait would otherwise be missed for a whole wait.
            let _wanted = self.inner.checkpoint_wanted.0.lock();
            self.inner.stopping.store(true, Ordering::SeqCst);
        }
        self.inner.checkpoint_wanted.1.notify_all();
        prepare::stop(&self.inner);
        if let Some(handle) = self.checkpointer.lock().take() {
            let _ = handle.join();
        }
        crate::store::archiver::stop(&self.inner);
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.inner.origin.is_forked() {
            // In a child of a fork() (src/fork.rs) the threads to stop do not exist (a join
            // would wait for ever) and the files are the parent's: the child's copy of the
            // store is left as it is, never dropped (its memory and descriptors go with the
            // process).
            std::mem::forget(Arc::clone(&self.inner));
            return;
        }
        self.stop_checkpointer();
        crate::store::shipping::stop(&self.inner); // Hook (shipping)
    }
}



/// The log, the arena and the doublewrite area of a store being opened.
struct OpenedFiles {
    wal: Wal,
    /// What the log's scan found, for recovery.
    scan: crate::wal::ScanReport,
    arena: Arena,
    doublewrite: Doublewrite,
}

/// Opens the log (scanning it to its end), the arena and the doublewrite area of the store in
/// `dir`, whose control file holds `control`.
fn open_files(
    dir: &Path,
    options: &Options,
    control: &Control,
    stored: &settings::Settings,
    read_only: bool,
) -> Result<OpenedFiles> {
    let storage = options.storage.clone();
    let mut config = wal_config(control, options)?;
    config.required_files = control.extent.is_some();
    let ships = crate::store::shipping::effective(options, stored)?.is_some();
    if !read_only && options.archive && !ships && !control.truncate_lsn.is_none() {
        // What a session that ended without a close left to the archiver stays unopened
        // until the archiver takes it. (A store that ships keeps it in its log: its shipper
        // sends the live log from there.)
        config.archive_before = Some(control.truncate_lsn);
    }
    let scan_from = (!control.checkpoint_lsn.is_none()).then_some(control.checkpoint_lsn);
    let wal_dir = dir.join("wal");
    // The arena's files are opened and their headers asked for before the log is read,
    // and checked after: after a cold start the disk serves both at once.
    let arena = Arena::prepare(
        storage.clone(),
        &dir.join("arena"),
        control.page_size_bytes,
        control.segment_size_bytes,
        ArenaOpen {
            store_id: control.store_id,
            read_only,
            files_min: control.extent.map_or([0, 0], |e| e.files),
        },
    )?;
    // The doublewrite file's header likewise: asked for now, checked last.
    let doublewrite = Doublewrite::prepare(
        storage.as_ref(),
        dir,
        DoublewriteOpen {
            store_id: control.store_id,
            required: control.extent.is_some() && !control.checkpoint_lsn.is_none(),
            read_only,
        },
    );
    let (wal, scan) = if read_only {
        Wal::open_read_only(storage.clone(), &wal_dir, config, scan_from, options.recovery)?
    } else {
        Wal::open(storage.clone(), &wal_dir, config, scan_from, options.recovery)?
    };
    let arena = arena.finish()?;
    // No page in a file lies at or past the end of the log (the WAL rule): one that does is
    // damage at its first read (`Arena::verify`).
    arena.raise_lsn_bound(scan.end_lsn);
    if !read_only {
        arena.remove_leftovers()?;
        lifecycle::remove_relink_leftovers(storage.as_ref(), dir)?;
    }
    let doublewrite = doublewrite.finish(storage.as_ref(), control.page_size_bytes)?;
    Ok(OpenedFiles {
        wal,
        scan,
        arena,
        doublewrite,
    })
}
