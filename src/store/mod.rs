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

pub mod control;
pub mod epoch;
pub mod meta;
pub mod settings;
pub mod state;
mod txn;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::arena::{Arena, ArenaOpen};
use crate::doublewrite::{Doublewrite, DoublewriteOpen};
use crate::error::{IoContext, Result};
use crate::page::{PageHeader, PageId, PageKind};
use crate::record::{self, Edit, Kind};
use crate::recovery::{self, RecoveryReport};
use crate::storage::{RealStorage, Storage};
use crate::wal::format::{Geometry, LogIdentity};
use crate::wal::{RecordSpec, Wal, WalConfig, now_us};
use crate::{Error, Lsn, RecoveryMode, SyncMode};
use control::{Control, ControlFile};
use epoch::{Epochs, Pin};
use state::{IdKey, IdMap, Located, Meta, PageMap, WriterState};
pub use txn::Transaction;

/// How to open or create a store.
#[derive(Clone, Debug)]
pub struct Options {
    /// When a commit is durable. Default: `Always`.
    pub sync: SyncMode,
    /// What recovery does with damage. Default: `TolerateTornTail`.
    pub recovery: RecoveryMode,
    /// Page size of the log and the arena (creation only; a store keeps its own). Default 16 KiB.
    pub page_size_bytes: u32,
    /// Size of each log segment and arena file (creation only). Default 64 MiB.
    pub segment_size_bytes: u64,
    /// A checkpoint runs in the background after this much log; 0 turns them off. Default 256 MiB.
    pub checkpoint_interval_bytes: u64,
    /// Where the bytes go: the real file system, or a crash simulator in tests.
    pub storage: Arc<dyn Storage>,
    /// Run segment preparation and automatic checkpoints on background threads (default).
    /// Off, every storage operation happens on a caller's thread in a reproducible order, as
    /// deterministic crash simulation needs; automatic checkpoints then run inline after the
    /// commit that crosses the interval.
    pub background_io: bool,
    /// Keep retired log segments, LZ4-compressed, in `archive/` (default). Off, they are
    /// recycled at once and point-in-time restore reaches back only to the live log.
    pub archive: bool,
    /// Store a compressed image of the arena in `archive/` at every Nth checkpoint (the first
    /// checkpoint, at creation, always makes one); 0 makes none after that. Default 4.
    pub base_image_every: u32,
    /// What the archive keeps. Default `Stored`: the store's own setting (`SETTINGS`, set at
    /// creation or with [`Store::set_retention`]), `KeepLast(2)` where none is set. Another
    /// value applies to this open only (at creation, it is stored).
    pub retention: Retention,
    /// Ship the archive to object storage (`s3://bucket/prefix`, `gs://…`, `az://…`,
    /// `file:///…`; feature `object-store`). `None` (default): the store's own setting
    /// (`SETTINGS`, set at creation or with `Store::set_archive_url`); `Some("")`: do not ship
    /// in this open; another value ships there in this open only (at creation, it is stored).
    pub archive_url: Option<String>,
    /// With an archive URL: the remote copy of the durable log is never more than about this
    /// far behind (the live log is shipped in pieces after it). `None`: the stored setting,
    /// else 10 s; another value applies to this open (at creation, it is stored).
    pub archive_timeout: Option<Duration>,
}

/// What the archive keeps. Nothing a retained base image needs is ever deleted.
///
/// Written and parsed (`FromStr`, `Display`) as `keep-all`, `keep-last:N`, `max-bytes:N` and
/// `stored`, as the command line and the `SETTINGS` file take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Whatever the store's settings say (`KeepLast(2)` where they say nothing).
    Stored,
    /// Every base image and every archived segment: every LSN since creation stays restorable.
    KeepAll,
    /// The newest `n` base images (at least 1) and the log they need.
    KeepLast(u32),
    /// The newest base images whose archive (with the log they need) fits in this many bytes;
    /// always at least the newest one.
    MaxBytes(u64),
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sync: SyncMode::Always,
            recovery: RecoveryMode::TolerateTornTail,
            page_size_bytes: 16 * 1024,
            segment_size_bytes: 64 << 20,
            checkpoint_interval_bytes: 256 << 20,
            storage: Arc::new(RealStorage::new()),
            background_io: true,
            archive: true,
            base_image_every: 4,
            retention: Retention::Stored,
            archive_url: None,
            archive_timeout: None,
        }
    }
}

impl Retention {
    /// The policy of a store whose settings name none.
    pub const DEFAULT: Retention = Retention::KeepLast(2);
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retention::Stored => f.write_str("stored"),
            Retention::KeepAll => f.write_str("keep-all"),
            Retention::KeepLast(n) => write!(f, "keep-last:{n}"),
            Retention::MaxBytes(n) => write!(f, "max-bytes:{n}"),
        }
    }
}

impl std::str::FromStr for Retention {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Retention, String> {
        let number = |n: &str| n.parse::<u64>().map_err(|_| format!("{n:?} is not a number"));
        match text.split_once(':') {
            None if text == "keep-all" => Ok(Retention::KeepAll),
            None if text == "stored" => Ok(Retention::Stored),
            Some(("keep-last", n)) => {
                let n = u32::try_from(number(n)?).map_err(|_| format!("keep-last:{n} is too many"))?;
                if n == 0 {
                    return Err("keep-last needs at least 1 base image".into());
                }
                Ok(Retention::KeepLast(n))
            }
            Some(("max-bytes", n)) => Ok(Retention::MaxBytes(number(n)?)),
            _ => Err(format!("{text:?}: expected keep-all, keep-last:N or max-bytes:N")),
        }
    }
}

/// The transaction table entry of the running write transaction (at most one).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ActiveTxn {
    pub txn_id: u64,
    pub first_lsn: Lsn,
    pub last_lsn: Lsn,
}

/// State shared by the store, its transactions and its background checkpointer.
pub(crate) struct Inner {
    pub dir: PathBuf,
    pub options: Options,
    pub dimension: u32,
    /// Opened with [`Store::open_read_only`]: nothing is ever written.
    pub read_only: bool,
    /// Pages initialised per space (by [`crate::page::Space::index`]): the checkpoint records
    /// them, and a page below the count that reads as zero is damage.
    pub initialised: [AtomicU64; 2],
    /// The archive's retention in force (never `Stored`: the store's setting is resolved).
    pub retention: Mutex<Retention>,
    pub wal: Wal,
    pub arena: Arena,
    pub control: Mutex<(ControlFile, Control)>,
    pub doublewrite: Mutex<Doublewrite>,
    pub epochs: Epochs,
    pub index: RwLock<IdMap<Located>>,
    /// Committed owners of vector slots, for sequential scans (search).
    pub slots: RwLock<crate::search::SlotRegistry>,
    pub writer: Mutex<WriterState>,
    /// Held while a record is appended and applied, so a checkpoint never sees one without the
    /// other; guards the transaction table entry.
    pub apply: Mutex<Option<ActiveTxn>>,
    /// The dirty page table: page → recovery LSN (the first record that dirtied it).
    pub dirty: Mutex<PageMap<Lsn>>,
    /// Pages initialised since the last checkpoint but one (they skip the doublewrite area).
    pub recent_inits: Mutex<PageMap<Lsn>>,
    pub checkpoint_lock: Mutex<()>,
    pub checkpoint_wanted: (Mutex<bool>, Condvar),
    pub last_checkpoint_lsn: AtomicU64,
    /// Mirrors the writer's next transaction id for checkpoint records.
    pub next_txn_id: AtomicU64,
    pub stopping: AtomicBool,
    pub report: Mutex<RecoveryReport>,
    pub archiver: crate::archiver::Archiver,
    /// The shipper of the archive, if the store ships (src/shipping.rs).
    pub(crate) ship: crate::shipping::ShipSlot,
    /// Checkpoints since the last base image (see `Options::base_image_every`).
    pub checkpoints_since_base: std::sync::atomic::AtomicU32,
    _lock: Box<dyn std::any::Any + Send + Sync>,
}

/// An embedded vector store. `Send + Sync`: share it with `Arc`.
pub struct Store {
    inner: Arc<Inner>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("len", &self.len())
            .finish()
    }
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

enum MetaRef<'a> {
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
    pub fn metadata(&self) -> meta::Pairs<'_> {
        let bytes: &[u8] = match &self.meta {
            MetaRef::Inline(bytes) => bytes,
            MetaRef::Owned(bytes) => bytes,
        };
        match meta::Pairs::new(bytes) {
            Some(pairs) => pairs,
            None => meta::Pairs::empty(),
        }
    }
}

impl Store {
    /// Creates a store of `dimension`-component vectors in `dir` (created if missing).
    /// `Err(AlreadyExists)` if a store is there already; `Err(DiskFull)` if the file system has
    /// no room for the first log segment (nothing is left behind then).
    pub fn create(dir: impl AsRef<Path>, dimension: u32, options: Options) -> Result<Store> {
        let dir = dir.as_ref();
        let storage = options.storage.clone();
        check_creation_options(dimension, &options)?;
        if storage.exists(&dir.join(control::CONTROL_FILE_NAME)) {
            return Err(Error::AlreadyExists);
        }
        if storage.exists(&dir.join("wal")) {
            return Err(Error::InvalidArgument(format!(
                "{} holds the remains of a store whose creation did not finish; remove it first",
                dir.display()
            )));
        }
        storage
            .create_dir_all(dir)
            .context(|| format!("creating {}", dir.display()))?;
        check_room_for_segment(storage.as_ref(), dir, options.segment_size_bytes)?;
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
            extent: Some(control::ArenaExtent::default()),
        };
        create_files(storage.as_ref(), dir, &control, &options)?;
        Store::open(dir, options)
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
        let storage = options.storage.clone();
        // Hook (shipping): a replica's log is its primary's; it never opens for writing.
        let stored = settings::read(storage.as_ref(), dir)?;
        if !read_only {
            crate::shipping::refuse_writer_on_replica(dir, &stored)?;
        }
        let (control_file, control) = if read_only {
            ControlFile::open(storage.as_ref(), dir)?
        } else {
            ControlFile::open_writable(storage.as_ref(), dir)?
        };
        let lock = lock_store(dir, &storage, read_only)?;
        let mut config = wal_config(&control, &options)?;
        config.required_files = control.extent.is_some();
        let scan_from = (!control.checkpoint_lsn.is_none()).then_some(control.checkpoint_lsn);
        let wal_dir = dir.join("wal");
        let (wal, scan) = if read_only {
            Wal::open_read_only(storage.clone(), &wal_dir, config, scan_from, options.recovery)?
        } else {
            Wal::open(storage.clone(), &wal_dir, config, scan_from, options.recovery)?
        };
        let arena = Arena::open(
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
        if !read_only {
            arena.remove_leftovers()?;
        }
        let doublewrite = Doublewrite::open(
            storage.as_ref(),
            dir,
            control.page_size_bytes,
            DoublewriteOpen {
                store_id: control.store_id,
                required: control.extent.is_some() && !control.checkpoint_lsn.is_none(),
                read_only,
            },
        )?;
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
            crate::archiver::tidy(storage.as_ref(), dir)?;
            crate::archiver::start(&inner)?;
            crate::shipping::start(&inner, &stored)?; // Hook (shipping)
        }
        let store = Store {
            inner,
            checkpointer: Mutex::new(None),
        };
        recovery::recover(&store.inner, scan)?;
        if !read_only {
            store.start_checkpointer()?;
        }
        Ok(store)
    }

    /// The vector stored under `id`, or `None`.
    pub fn get(&self, id: &str) -> Result<Option<VectorRef<'_>>> {
        let pin = self.inner.epochs.pin();
        // The entry is read in place under the index's read lock (no clone); verifying the page
        // is one atomic load after its first use since open.
        let index = self.inner.index.read();
        let Some(located) = index.get(id) else {
            return Ok(None);
        };
        self.inner.arena.verify_in_use(located.vector_page)?;
        Ok(Some(self.inner.vector_ref(located, pin)))
    }

    /// Inserts a vector (autocommit). `Err(AlreadyExists)` if `id` is present.
    pub fn insert(&self, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<Lsn> {
        let mut tx = self.begin()?;
        tx.insert(id, vector, metadata)?;
        tx.commit()
    }

    /// Inserts or replaces a vector (autocommit).
    pub fn upsert(&self, id: &str, vector: &[f32], metadata: &[(&str, &str)]) -> Result<Lsn> {
        let mut tx = self.begin()?;
        tx.upsert(id, vector, metadata)?;
        tx.commit()
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
        crate::search::search(&self.inner, query, k, metric, None)
    }

    /// Like [`Store::search`], over the vectors whose metadata holds the pair `filter`.
    pub fn search_filtered(
        &self,
        query: &[f32],
        k: usize,
        metric: crate::Metric,
        filter: Option<(&str, &str)>,
    ) -> Result<Vec<(String, f32)>> {
        crate::search::search(&self.inner, query, k, metric, filter)
    }

    /// Starts a write transaction; waits while another one runs (one writer at a time).
    pub fn begin(&self) -> Result<Transaction<'_>> {
        Transaction::begin(self)
    }

    /// Runs a checkpoint now: writes dirty pages, records where recovery starts, releases log.
    pub fn checkpoint(&self) -> Result<Lsn> {
        self.inner.check_writable()?;
        crate::checkpoint::run(&self.inner)
    }

    /// Makes an online backup at `dest` (which must not exist): a checkpoint with a base image,
    /// then a restore of everything committed into a new, openable store. Writers go on
    /// meanwhile; checkpoints wait until the copy is done, so no log segment it needs is
    /// recycled under it.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<crate::RestoreReport> {
        let inner = &*self.inner;
        inner.check_writable()?;
        let _no_checkpoints = inner.checkpoint_lock.lock();
        crate::checkpoint::run_locked(inner, true, crate::checkpoint::Caller::Waiting)?;
        crate::restore::restore_with(
            inner.options.storage.clone(),
            &inner.dir,
            dest.as_ref(),
            crate::RestoreTarget::Latest,
        )
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
        crate::archiver::apply_retention(&self.inner)
    }

    /// Makes every commit so far durable (whatever the sync mode).
    pub fn sync(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.wal.sync()
    }

    /// The number of vectors.
    pub fn len(&self) -> usize {
        self.inner.index.read().len()
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

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.inner.dir
    }

    /// The write-ahead log (for inspection tools).
    pub fn wal(&self) -> &Wal {
        &self.inner.wal
    }

    /// Checkpoints, makes the log durable and closes the store.
    pub fn close(self) -> Result<()> {
        self.stop_checkpointer();
        if self.inner.read_only || !self.inner.wal.appended() {
            // Nothing changed since the open (every change is logged first): there is nothing
            // to write, and a close writes nothing.
            crate::shipping::finish(&self.inner); // Hook (shipping): what is left, bounded
            return Ok(());
        }
        let result = self.checkpoint().and_then(|_| crate::archiver::drain(&self.inner));
        // Durable, with the rest of the last log page zeroed: a clean end even in a recycled
        // segment for the next open and for independent readers.
        let finish = self.inner.wal.finish();
        crate::shipping::finish(&self.inner); // Hook (shipping): what is left, bounded
        result.and(finish)
    }

    fn start_checkpointer(&self) -> Result<()> {
        if self.inner.options.checkpoint_interval_bytes == 0 || !self.inner.options.background_io {
            return Ok(());
        }
        let weak = Arc::downgrade(&self.inner);
        let handle = std::thread::Builder::new()
            .name("vellum-checkpoint".into())
            .spawn(move || checkpointer(weak))
            .map_err(|e| Error::io("starting the checkpoint thread", e))?;
        *self.checkpointer.lock() = Some(handle);
        Ok(())
    }

    fn stop_checkpointer(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.checkpoint_wanted.1.notify_all();
        if let Some(handle) = self.checkpointer.lock().take() {
            let _ = handle.join();
        }
        crate::archiver::stop(&self.inner);
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.stop_checkpointer();
        crate::shipping::stop(&self.inner); // Hook (shipping)
    }
}

impl Inner {
    /// The state of a store just opened, before recovery fills in its index.
    #[allow(clippy::too_many_arguments)]
    fn new(
        dir: &Path,
        options: Options,
        read_only: bool,
        control_file: ControlFile,
        control: Control,
        wal: Wal,
        arena: Arena,
        doublewrite: Doublewrite,
        lock: Box<dyn std::any::Any + Send + Sync>,
        retention: Retention,
    ) -> Inner {
        let initialised = control.extent.map_or([0, 0], |e| e.pages);
        Inner {
            retention: Mutex::new(retention),
            dir: dir.to_path_buf(),
            dimension: control.dimension,
            read_only,
            wal,
            arena,
            last_checkpoint_lsn: AtomicU64::new(control.checkpoint_lsn.0),
            next_txn_id: AtomicU64::new(control.next_txn_id),
            initialised: initialised.map(AtomicU64::new),
            control: Mutex::new((control_file, control)),
            doublewrite: Mutex::new(doublewrite),
            epochs: Epochs::default(),
            index: RwLock::new(IdMap::default()),
            slots: RwLock::new(Default::default()),
            writer: Mutex::new(state::WriterState {
                next_txn_id: 1,
                vectors: state::VectorAlloc {
                    free: Vec::new(),
                    fresh_page: 0,
                    fresh_slot: 0,
                    slots_per_page: 1,
                },
                catalog: state::CatalogAlloc::default(),
                pending: Default::default(),
                spare_overlay: Default::default(),
            }),
            apply: Mutex::new(None),
            dirty: Mutex::new(PageMap::default()),
            recent_inits: Mutex::new(PageMap::default()),
            checkpoint_lock: Mutex::new(()),
            checkpoint_wanted: (Mutex::new(false), Condvar::new()),
            stopping: AtomicBool::new(false),
            report: Mutex::new(RecoveryReport::default()),
            archiver: Default::default(),
            ship: Default::default(),
            checkpoints_since_base: Default::default(),
            options,
            _lock: lock,
        }
    }

    /// Refuses a change to a store opened read-only.
    pub fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly(format!("{} was opened read-only", self.dir.display())));
        }
        Ok(())
    }

    /// Notes that page `page` has been initialised (live, or by redo).
    pub fn note_initialised(&self, page: PageId) {
        self.initialised[page.space().index()].fetch_max(page.page_no() + 1, Ordering::AcqRel);
    }

    /// How many pages of each space have been initialised: every page below is in use.
    pub fn initialised_pages(&self) -> [u64; 2] {
        [0, 1].map(|i| self.initialised[i].load(Ordering::Acquire))
    }
}

/// Runs checkpoints when enough log has accumulated, until the store stops.
fn checkpointer(weak: Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        {
            let (lock, condvar) = &inner.checkpoint_wanted;
            let mut wanted = lock.lock();
            if !*wanted && !inner.stopping.load(Ordering::SeqCst) {
                condvar.wait_for(&mut wanted, Duration::from_millis(250));
            }
            *wanted = false;
        }
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        if inner.log_since_checkpoint() >= inner.options.checkpoint_interval_bytes {
            // A failure poisons the log or is retried at the next trigger; commits report it.
            let _ = crate::checkpoint::run_in_background(&inner);
        }
    }
}

impl Inner {
    /// The global slot number of a vector slot (page × slots per page + slot).
    pub fn global_slot(&self, page: PageId, slot: u32) -> usize {
        let per_page = crate::page::vector_slots_per_page(self.arena.page_size_bytes(), self.dimension);
        page.page_no() as usize * per_page + slot as usize
    }

    /// Publishes committed index changes to readers: the id index and the slot registry. The
    /// caller is the single writer (it holds the writer lock): nothing else changes the index.
    pub fn publish(&self, changes: impl ExactSizeIterator<Item = (IdKey, Option<Located>)>) {
        self.grow_index_for(changes.len());
        let mut index = self.index.write();
        let mut slots = self.slots.write();
        for (id, change) in changes {
            let owner = change.as_ref().map(|l| crate::search::SlotOwner {
                id: id.clone(),
                meta: l.meta.clone(),
            });
            let new_slot = change.as_ref().map(|l| self.global_slot(l.vector_page, l.vector_slot));
            let old = match change {
                Some(located) => index.insert(id, located),
                None => index.remove(&id),
            };
            if let Some(old) = old {
                slots.set(self.global_slot(old.vector_page, old.vector_slot), None);
            }
            if let (Some(slot), Some(owner)) = (new_slot, owner) {
                slots.set(slot, Some(owner));
            }
        }
    }

    /// Makes room in the id index for `additions` more entries, so that publishing them never
    /// rehashes under the write lock: a growing hash table rehashes every entry (about 40 ms
    /// for 200,000 here), and every reader would wait for all of it. The bigger table is filled
    /// from the current one beside the readers (under the read lock; keys and metadata are
    /// shared, not copied) and swapped in; the old one is dropped after the lock is released.
    /// Called by the single writer only.
    fn grow_index_for(&self, additions: usize) {
        let grown = {
            let index = self.index.read();
            if index.capacity() - index.len() >= additions {
                return;
            }
            let capacity = (index.len() + additions).max(index.capacity() * 2);
            let mut grown = IdMap::with_capacity_and_hasher(capacity, index.hasher().clone());
            grown.extend(index.iter().map(|(id, located)| (id.clone(), located.clone())));
            grown
        };
        let old = {
            let mut index = self.index.write();
            assert_eq!(index.len(), grown.len(), "the index changed under its single writer");
            std::mem::replace(&mut *index, grown)
        };
        drop(old);
    }

    pub fn log_since_checkpoint(&self) -> u64 {
        self.wal
            .end_lsn()
            .0
            .saturating_sub(self.last_checkpoint_lsn.load(Ordering::Relaxed))
    }

    /// Starts a checkpoint when the interval is crossed: on the background thread, or here
    /// when background I/O is off.
    pub fn nudge_checkpointer(&self) -> Result<()> {
        let interval = self.options.checkpoint_interval_bytes;
        if interval == 0 || self.log_since_checkpoint() < interval {
            return Ok(());
        }
        if !self.options.background_io {
            return crate::checkpoint::run(self).map(|_| ());
        }
        *self.checkpoint_wanted.0.lock() = true;
        self.checkpoint_wanted.1.notify_all();
        Ok(())
    }

    pub fn vector_ref<'a>(&'a self, located: &Located, pin: Pin<'a>) -> VectorRef<'a> {
        // SAFETY: `located.vector` points at `dimension` f32s (4-byte aligned: page offsets and
        // strides are multiples of 16) inside an arena mapping that lives as long as `self`;
        // the pin keeps the slot from being reused, and the writer never writes a slot that is
        // reachable from the index, so the bytes are immutable for the borrow.
        let vector = unsafe { std::slice::from_raw_parts(located.vector, self.dimension as usize) };
        let meta = match &located.meta {
            // SAFETY: as for the vector: an inline metadata range of a reachable catalog entry,
            // inside a mapping that outlives `self`, immutable while the pin holds.
            Meta::Inline { ptr, len } => MetaRef::Inline(unsafe { std::slice::from_raw_parts(*ptr, *len as usize) }),
            Meta::Owned(bytes) => MetaRef::Owned(bytes.clone()),
        };
        VectorRef {
            vector,
            meta,
            _pin: pin,
        }
    }

    /// Appends a record for transaction `active` (or none) and applies its edits to the pages
    /// in memory, atomically with respect to checkpoints. Returns the record's LSN.
    pub fn log_and_apply(
        &self,
        txn: Option<&mut ActiveTxn>,
        kind: Kind,
        payload: &[u8],
        edits: &[Edit<'_>],
    ) -> Result<Lsn> {
        let mut active = self.apply.lock();
        let spec = RecordSpec {
            kind: kind as u8,
            flags: 0,
            txn_id: txn.as_ref().map_or(0, |t| t.txn_id),
            prev_lsn: txn.as_ref().map_or(0, |t| t.last_lsn.0),
            timestamp_us: now_us(),
        };
        let lsn = self.wal.append(&spec, &[payload])?;
        if let Some(txn) = txn {
            if txn.first_lsn.is_none() {
                txn.first_lsn = lsn;
            }
            txn.last_lsn = lsn;
            // A transaction leaves the table in the same critical section as its commit or end
            // record, so no checkpoint can list it as running after that record.
            *active = if matches!(kind, Kind::Commit | Kind::End) {
                None
            } else {
                Some(*txn)
            };
        }
        apply_edits(&self.arena, &self.dirty, lsn, edits, false);
        Ok(lsn)
    }

    /// Logs and applies the initialisation of page `page` as an empty page of `kind`.
    pub fn init_page(&self, page: PageId, kind: PageKind, a: u32, b: u32) -> Result<Lsn> {
        self.arena.ensure_page(page)?;
        let payload = record::encode_page_init(page, kind as u8, a, b);
        let _active = self.apply.lock();
        let spec = RecordSpec {
            kind: Kind::PageInit as u8,
            flags: 0,
            txn_id: 0,
            prev_lsn: 0,
            timestamp_us: now_us(),
        };
        let lsn = self.wal.append(&spec, &[&payload])?;
        format_page(&self.arena, &self.dirty, page, kind as u8, a, b, lsn);
        self.note_initialised(page);
        self.recent_inits.lock().insert(page, lsn);
        Ok(lsn)
    }
}

/// Applies `edits` of the record at `lsn`: each page is changed if `only_older` is false or its
/// page LSN is older than `lsn`; its page LSN becomes `lsn` and it joins the dirty page table.
/// Returns how many pages were changed.
pub(crate) fn apply_edits(
    arena: &Arena,
    dirty: &Mutex<PageMap<Lsn>>,
    lsn: Lsn,
    edits: &[Edit<'_>],
    only_older: bool,
) -> usize {
    // Each page once, its edits in log order. A record edits a handful of pages, found by a scan
    // of the edits before each; a record with many edits (a hostile log may hold 65,535) goes
    // through a stable sort instead, so the work stays n log n.
    const SCAN_EDITS_MAX: usize = 32;
    if edits.len() > SCAN_EDITS_MAX {
        let mut order: Vec<usize> = (0..edits.len()).collect();
        order.sort_by_key(|&i| edits[i].page);
        return order
            .chunk_by(|&a, &b| edits[a].page == edits[b].page)
            .filter(|group| {
                let page = edits[group[0]].page;
                apply_page(arena, dirty, lsn, page, group.iter().map(|&i| &edits[i]), only_older)
            })
            .count();
    }
    let mut changed = 0;
    for (i, edit) in edits.iter().enumerate() {
        if edits[..i].iter().all(|e| e.page != edit.page) {
            let page_edits = edits[i..].iter().filter(|e| e.page == edit.page);
            changed += usize::from(apply_page(arena, dirty, lsn, edit.page, page_edits, only_older));
        }
    }
    changed
}

/// Applies `page_edits` (all of page `page`) under its latch, unless `only_older` and the page
/// already holds `lsn`. Returns whether the page changed.
fn apply_page<'e, 'a: 'e>(
    arena: &Arena,
    dirty: &Mutex<PageMap<Lsn>>,
    lsn: Lsn,
    page: PageId,
    page_edits: impl Iterator<Item = &'e Edit<'a>>,
    only_older: bool,
) -> bool {
    let _latch = arena.latch(page);
    if only_older && arena.page_lsn(page) >= lsn {
        return false;
    }
    for edit in page_edits {
        assert_eq!(edit.page, page, "the edits of one page");
        arena.write(page, edit.offset as usize, edit.after);
    }
    arena.set_page_lsn(page, lsn);
    dirty.lock().entry(page).or_insert(lsn);
    true
}

/// Formats `page` as an empty page (the redo of a page-init record).
pub(crate) fn format_page(
    arena: &Arena,
    dirty: &Mutex<PageMap<Lsn>>,
    page: PageId,
    kind: u8,
    a: u32,
    b: u32,
    lsn: Lsn,
) {
    use zerocopy::IntoBytes;
    let mut header: PageHeader = crate::page::new_header(PageKind::from_u8(kind).unwrap_or(PageKind::Zero), page, a, b);
    header.kind = kind;
    header.page_lsn = lsn.0.into();
    header.store_id = arena.store_id().into();
    let _latch = arena.latch(page);
    arena.reset_page(page, header.as_bytes());
    dirty.lock().entry(page).or_insert(lsn);
}

fn check_creation_options(dimension: u32, options: &Options) -> Result<()> {
    Geometry::new(options.page_size_bytes, options.segment_size_bytes).map_err(Error::InvalidArgument)?;
    if let Some(url) = options.archive_url.as_deref().filter(|u| !u.is_empty()) {
        crate::shipping::check_url(url)?; // Hook (shipping)
    }
    let max_dimension = crate::page::vector_slots_max_dimension(options.page_size_bytes);
    if dimension == 0 || dimension > max_dimension {
        return Err(Error::InvalidArgument(format!(
            "dimension {dimension} must be in 1..={max_dimension} for {}-byte pages",
            options.page_size_bytes
        )));
    }
    Ok(())
}

fn wal_config(control: &Control, options: &Options) -> Result<WalConfig> {
    let geometry = Geometry::new(control.page_size_bytes, control.segment_size_bytes)
        .map_err(|reason| Error::corrupted_file(control::CONTROL_FILE_NAME, reason))?;
    let identity = LogIdentity {
        store_id: control.store_id,
        timeline: control.timeline,
    };
    let mut config = WalConfig::new(geometry, identity, options.sync);
    config.background = options.background_io;
    if !options.background_io && matches!(options.sync, SyncMode::Interval(_)) {
        return Err(Error::InvalidArgument("SyncMode::Interval needs background_io".into()));
    }
    Ok(config)
}

/// Takes the store's lock file: exclusive for a writer, so two processes never write one
/// store; shared for a reader, so readers share a store but never beside a writer. A reader
/// that cannot take the lock because `LOCK` is missing or may not be opened (read-only
/// media, another user's store) reads without it: no writer can have opened the store
/// there, or the reader could not keep one out anyway.
fn lock_store(dir: &Path, storage: &Arc<dyn Storage>, read_only: bool) -> Result<Box<dyn std::any::Any + Send + Sync>> {
    let path = dir.join("LOCK");
    let taken = if read_only {
        storage.lock_shared(&path)
    } else {
        storage.lock_exclusive(&path)
    };
    match taken {
        Ok(guard) => Ok(guard),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(Error::Locked(format!(
            "{} is open for writing{} (in this process or another)",
            dir.display(),
            if read_only { "" } else { " or reading" }
        ))),
        Err(e)
            if read_only
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
        {
            Ok(Box::new(()))
        }
        Err(e) => Err(Error::io(format!("locking {}", path.display()), e)),
    }
}

/// Refuses a log segment larger than the free space of the file system (`statvfs`), before
/// anything is written: preallocating it would fill the disk and fail anyway.
fn check_room_for_segment(storage: &dyn Storage, dir: &Path, segment_size_bytes: u64) -> Result<()> {
    let available = storage
        .available_bytes(dir)
        .context(|| format!("reading the free space of {}", dir.display()))?;
    match available {
        Some(free) if free < segment_size_bytes => Err(Error::DiskFull {
            context: format!(
                "creating a store in {}: a log segment takes {segment_size_bytes} bytes, and only {free} are free",
                dir.display()
            ),
        }),
        _ => Ok(()),
    }
}

/// Writes a new store's files, in the order FORMAT.md gives (section 2): the log, the arena
/// directory, the doublewrite file with its header page, and the control file last (a store
/// exists once it is durable).
fn create_files(storage: &dyn Storage, dir: &Path, control: &Control, options: &Options) -> Result<()> {
    let config = wal_config(control, options)?;
    Wal::create(options.storage.clone(), &dir.join("wal"), config)?.close()?;
    storage
        .create_dir_all(&dir.join("arena"))
        .context(|| format!("creating {}/arena", dir.display()))?;
    let how = DoublewriteOpen {
        store_id: control.store_id,
        required: false,
        read_only: false,
    };
    Doublewrite::open(storage, dir, control.page_size_bytes, how)?.ensure_whole()?;
    let mut stored = settings::Settings::default();
    if options.retention != Retention::Stored {
        stored.set(settings::RETENTION, &options.retention.to_string())?;
    }
    crate::shipping::store_creation_settings(options, &mut stored)?; // Hook (shipping)
    if stored != settings::Settings::default() {
        settings::write(storage, dir, &stored)?;
    }
    storage
        .sync_dir(dir)
        .context(|| format!("syncing directory {}", dir.display()))?;
    ControlFile::create(storage, dir, control)?;
    storage
        .sync_dir(dir)
        .context(|| format!("syncing directory {}", dir.display()))
}

/// A random 64-bit number (store ids), from the standard library's per-process random keys.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_us());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::Space;
    use crate::storage::SimStorage;

    #[test]
    fn edits_apply_page_by_page_in_log_order_however_many_there_are() {
        let storage: Arc<dyn Storage> = Arc::new(SimStorage::new(1));
        let arena = Arena::open(
            storage,
            Path::new("/arena"),
            4096,
            16 * 4096,
            crate::arena::ArenaOpen::TEST,
        )
        .unwrap();
        let pages = [
            PageId::new(Space::Vector, 3),
            PageId::new(Space::Catalog, 1),
            PageId::new(Space::Vector, 0),
        ];
        for page in pages {
            arena.ensure_page(page).unwrap();
        }
        // Three pages interleaved, later edits overwriting parts of earlier ones: 5 edits take
        // the scan path, 40 the sorted one (more than SCAN_EDITS_MAX).
        let images: Vec<[u8; 8]> = (1..=40u8).map(|i| [i; 8]).collect();
        let edits: Vec<Edit<'_>> = (0..40)
            .map(|i| Edit {
                page: pages[i % 3],
                offset: 100 + (i as u32 % 7) * 4,
                after: &images[i],
                before: None,
            })
            .collect();
        for (count, lsn) in [(5, Lsn(1000)), (40, Lsn(2000))] {
            let dirty = Mutex::new(PageMap::default());
            let changed = apply_edits(&arena, &dirty, lsn, &edits[..count], false);
            assert_eq!(changed, 3, "{count} edits: every page once");
            for page in pages {
                // The second round overwrites every byte the first wrote (its 40 edits cover
                // all seven offsets of every page), so both compare with a replay from zeros.
                let mut expected = [0u8; 36];
                arena.read(page, 100, &mut expected);
                let mut replayed = [0u8; 36];
                for edit in edits[..count].iter().filter(|e| e.page == page) {
                    let at = edit.offset as usize - 100;
                    replayed[at..at + 8].copy_from_slice(edit.after);
                }
                assert!(
                    expected == replayed,
                    "{count} edits: {page} holds its edits applied in log order"
                );
                assert_eq!(
                    arena.page_lsn(page),
                    lsn,
                    "{count} edits: {page} carries the record's LSN"
                );
                assert_eq!(dirty.lock().get(&page), Some(&lsn), "{page} joins the dirty page table");
            }
        }
        let dirty = Mutex::new(PageMap::default());
        assert_eq!(
            apply_edits(&arena, &dirty, Lsn(2000), &edits, true),
            0,
            "redo leaves pages that already hold the record alone"
        );
    }
}
