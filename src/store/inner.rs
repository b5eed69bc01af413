//! The state a store, its transactions and its background threads share, and what the single
//! writer does with it: publish committed changes to readers, nudge the checkpointer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::arena::Arena;
use crate::arena::doublewrite::Doublewrite;
use crate::error::Result;
use crate::format::page::PageId;
use super::recovery::RecoveryReport;
use crate::wal::Wal;
use crate::{Error, Lsn};
use crate::format::control::Control;
use super::control_file::ControlFile;
use super::readers::{Epochs, Pin};
use super::{MetaRef, Options, Retention, VectorRef};
use super::alloc::WriterState;
use super::catalog::{EntryMeta, EntryView};
use super::mask::Mask;
use super::state::PageMap;
use crate::format::page::VectorLayout;


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
    /// The process that opened the store: in a child of its `fork()`, a store opened for
    /// writing refuses every call (`check_process`, src/fork.rs).
    pub origin: crate::fork::Origin,
    /// Pages initialised per space (by [`crate::format::page::Space::index`]): the checkpoint records
    /// them, and a page below the count that reads as zero is damage.
    pub initialised: [AtomicU64; 2],
    /// The archive's retention in force (never `Stored`: the store's setting is resolved).
    pub retention: Mutex<Retention>,
    pub wal: Wal,
    pub arena: Arena,
    pub control: Mutex<(ControlFile, Control)>,
    pub doublewrite: Mutex<Doublewrite>,
    pub epochs: Epochs,
    /// The layout of the vector pages.
    pub layout: VectorLayout,
    /// The index's root node (a page id, 0 = empty), set after each record that moves it.
    pub index_root: AtomicU64,
    /// Odd while a record's edits are being applied, bumped before and after each: a reader
    /// that met a malformed node tells a page changing under it (an undo putting a node back
    /// to what its page-init made it) from damage (see `tree::descend`).
    pub applying: AtomicU64,
    /// Committed entries (the meta page's count as of the last commit).
    pub count: AtomicU64,
    /// The running transaction's changes, hidden from readers.
    pub mask: Mask,
    pub writer: Mutex<WriterState>,
    /// Single-row durable writes from many threads, run by one (src/store/combine.rs).
    pub combiner: super::combine::Combiner,
    /// Held while a record is appended and applied, so a checkpoint never sees one without the
    /// other; guards the transaction table entry.
    pub apply: Mutex<Option<ActiveTxn>>,
    /// The dirty page table: page → recovery LSN (the first record that dirtied it).
    pub dirty: Mutex<PageMap<Lsn>>,
    /// Pages initialised since the last checkpoint but one (they skip the doublewrite area).
    pub recent_inits: Mutex<PageMap<Lsn>>,
    pub checkpoint_lock: Mutex<()>,
    pub checkpoint_wanted: (Mutex<bool>, Condvar),
    /// The begin LSN of the last checkpoint that counts for `Options::checkpoint_interval_bytes`
    /// and `Options::base_image_every` (every checkpoint but those that only give memory back).
    pub last_interval_lsn: AtomicU64,
    /// The memory budget's bookkeeping (`Options::memory_budget_bytes`).
    pub memory: MemoryBudget,
    /// Mirrors the writer's next transaction id for checkpoint records.
    pub next_txn_id: AtomicU64,
    pub stopping: AtomicBool,
    pub report: Mutex<RecoveryReport>,
    pub archiver: crate::store::archiver::Archiver,
    /// The shipper of the archive, if the store ships (src/shipping.rs).
    pub(crate) ship: crate::store::shipping::ShipSlot,
    /// Checkpoints since the last base image (see `Options::base_image_every`).
    pub checkpoints_since_base: std::sync::atomic::AtomicU32,
    /// The approximate-search index as readers see it (store/graph).
    pub graph: super::graph::GraphShared,
    /// Makes fresh pages ahead of the writer (store/prepare.rs).
    pub preparer: std::sync::Arc<super::prepare::Preparer>,
    /// Files of the store deleted under it, as its watch sees them (store/deletions.rs).
    pub deletions: super::deletions::Deletions,
    _lock: Box<dyn std::any::Any + Send + Sync>,
}


impl Inner {
    /// The state of a store just opened, before recovery fills in its index.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
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
        let layout = VectorLayout::new(control.page_size_bytes, control.dimension);
        Inner {
            deletions: super::deletions::Deletions::default(),
            retention: Mutex::new(retention),
            dir: dir.to_path_buf(),
            dimension: control.dimension,
            read_only,
            origin: crate::fork::Origin::here(),
            wal,
            arena,
            last_interval_lsn: AtomicU64::new(control.checkpoint_lsn.0),
            memory: MemoryBudget::default(),
            next_txn_id: AtomicU64::new(control.next_txn_id),
            initialised: initialised.map(AtomicU64::new),
            control: Mutex::new((control_file, control)),
            doublewrite: Mutex::new(doublewrite),
            epochs: Epochs::default(),
            layout,
            index_root: AtomicU64::new(0),
            applying: AtomicU64::new(0),
            count: AtomicU64::new(0),
            mask: Mask::default(),
            writer: Mutex::new(WriterState::new(1, None)),
            combiner: super::combine::Combiner::default(),
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
            graph: Default::default(),
            preparer: Default::default(),
            options,
            _lock: lock,
        }
    }

    /// Refuses any call (a read too) in a child of a `fork()` of the process that opened the
    /// store for writing: the child's copy of the log tail, pages and locks is the parent's
    /// at the fork, and the files are the parent's (src/fork.rs). A store opened read-only
    /// reads on there: nothing writes its files while it is open (`LOCK`).
    pub fn check_process(&self) -> Result<()> {
        if self.read_only || !self.origin.is_forked() {
            return Ok(());
        }
        Err(Error::Closed(format!(
            "{} was opened for writing by process {}, of which this process ({}) is a fork: \
             a store is not carried across fork() (the child would write into the parent's log \
             and pages); open it in this process once the other has closed it",
            self.dir.display(),
            self.origin.pid(),
            std::process::id()
        )))
    }

    /// Refuses a change to a store opened read-only, or in a forked child.
    pub fn check_writable(&self) -> Result<()> {
        self.check_process()?;
        if self.read_only {
            return Err(Error::ReadOnly(format!("{} was opened read-only", self.dir.display())));
        }
        // A log poisoned by an I/O error takes no more records, and the pages may still hold
        // the changes of a transaction whose undo it could not log (the mask hides them from
        // readers): a write refused here never builds on them (sim fault seed 16402: the undo's
        // abort record failed to install a segment, and the next insert read a free list the
        // undo had not restored, and called it damage).
        self.wal.check_appendable()
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


/// Runs checkpoints when enough log has accumulated, or when memory should be given back,
/// until the store stops.
pub(super) fn checkpointer(weak: Weak<Inner>) {
    let mut backlog_resumed = false;
    let mut deletions = super::deletions::DeletionWatch::default();
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
        if !backlog_resumed {
            // After the first wait: a session that ends sooner would give its copy up anyway.
            backlog_resumed = true;
            crate::store::archiver::resume_backlog(&inner);
        }
        // A failure poisons the log or is retried at the next trigger; commits report it.
        // A file deleted under the store is put back now, not at the next checkpoint.
        let due = inner
            .checkpoint_due()
            .or_else(|| deletions.files_deleted(&inner).then_some(Due::FilesDeleted));
        let result = match due {
            Some(Due::Interval) => crate::store::checkpoint::run_in_background(&inner).map(|_| ()),
            Some(Due::FilesDeleted) => super::deletions::put_back(&inner),
            Some(Due::Writeback) => crate::store::checkpoint::run_writeback(&inner).map(|_| ()),
            None => continue,
        };
        if result.is_err() {
            inner.memory.checkpoint_failed();
        }
    }
}

/// Why an automatic checkpoint is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// `Options::checkpoint_interval_bytes` of log since the last such checkpoint.
    Interval,
    /// The pages and log held in memory passed the writeback share of the memory budget.
    Writeback,
    /// A file the checkpoint puts back was deleted while the store is open (see
    /// src/store/deletions.rs).
    FilesDeleted,
}

/// The share of the memory budget past which the checkpointer writes pages back: small, so
/// that the dirty set stays small while a store is written and a close has little to write.
const WRITEBACK_SHARE: u64 = 16;

/// How long a writer over the budget waits while no checkpoint runs (checkpoints held off by a
/// backup's copy) before it goes on without one.
const STALL_WAIT: Duration = Duration::from_secs(2);

/// The memory budget's bookkeeping beside the dirty page table: pages a running checkpoint
/// holds, and the checkpointer's progress that writers over the budget wait for.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    /// Pages the running checkpoint took out of the dirty page table and has not given back
    /// yet: still private memory until they are released.
    held_pages: AtomicU64,
    /// Counts the checkpointer's steps (a batch of pages written, pages released, a checkpoint
    /// ended or failed); waiting writers are woken at each.
    progress: Mutex<u64>,
    progressed: Condvar,
    /// The progress count at which a waiting writer last gave up (no checkpoint ran for
    /// `STALL_WAIT`, or a checkpoint failed): no writer waits again until it moves.
    stalled_at: AtomicU64,
    /// Checkpoints running now (one at most: they take the checkpoint lock).
    running: std::sync::atomic::AtomicUsize,
    /// While a checkpoint stores a base image: the arena files it reads, per space. Held by a
    /// writer writing back pages outside them, so the checkpoint waits for it before it ends.
    imaging: Mutex<Option<[usize; 2]>>,
}

impl Default for MemoryBudget {
    fn default() -> MemoryBudget {
        MemoryBudget {
            held_pages: AtomicU64::new(0),
            progress: Mutex::new(0),
            progressed: Condvar::new(),
            stalled_at: AtomicU64::new(u64::MAX),
            running: std::sync::atomic::AtomicUsize::new(0),
            imaging: Mutex::new(None),
        }
    }
}

impl MemoryBudget {
    /// Notes `pages` taken out of the dirty page table by a checkpoint, until [`Self::give_back`].
    pub fn hold(&self, pages: u64) {
        self.held_pages.fetch_add(pages, Ordering::AcqRel);
    }

    /// Notes `pages` a checkpoint held as dealt with (released, or back in the dirty page
    /// table), and wakes the writers waiting for memory.
    pub fn give_back(&self, pages: u64) {
        let before = self.held_pages.fetch_sub(pages, Ordering::AcqRel);
        assert!(before >= pages, "a checkpoint gives back only pages it holds");
        self.step();
    }

    /// Wakes the writers waiting for memory: the checkpointer moved.
    pub fn step(&self) {
        *self.progress.lock() += 1;
        self.progressed.notify_all();
    }

    /// A checkpoint failed: writers waiting for memory go on (the commit that waits is durable
    /// already), and none waits again until the checkpointer moves.
    pub fn checkpoint_failed(&self) {
        let mut progress = self.progress.lock();
        *progress += 1;
        self.stalled_at.store(*progress, Ordering::Release);
        self.progressed.notify_all();
    }

    fn held_pages(&self) -> u64 {
        self.held_pages.load(Ordering::Acquire)
    }

    /// Notes a checkpoint running until the guard is dropped: writers over the budget wait for
    /// it however long it takes (a base image it stores takes long, and gives nothing back
    /// until it ends), since it ends or fails.
    pub fn running(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::AcqRel);
        Running(self)
    }

    fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire) > 0
    }

    /// Notes a base image of the arena files `files` (per space) being stored until the guard
    /// is dropped; dropping it waits for a writer writing back pages outside them.
    pub fn imaging(&self, files: [usize; 2]) -> Imaging<'_> {
        *self.imaging.lock() = Some(files);
        Imaging(self)
    }

    /// The files of the base image being stored, if one is; held, no checkpoint ends.
    pub fn imaging_files(&self) -> parking_lot::MutexGuard<'_, Option<[usize; 2]>> {
        self.imaging.lock()
    }
}

/// A base image being stored (see [`MemoryBudget::imaging`]).
pub(crate) struct Imaging<'a>(&'a MemoryBudget);

impl Drop for Imaging<'_> {
    fn drop(&mut self) {
        *self.0.imaging.lock() = None;
    }
}

/// A running checkpoint, as writers waiting for memory see it (see [`MemoryBudget::running`]).
pub(crate) struct Running<'a>(&'a MemoryBudget);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
        self.0.step();
    }
}


impl Inner {
    /// The memory the budget counts now (`Options::memory_budget_bytes`): every arena page
    /// changed in memory and not given back yet (in the dirty page table, or held by the
    /// running checkpoint), and the log's tail not yet handed to its files.
    pub fn budgeted_bytes(&self) -> u64 {
        let pages = self.dirty.lock().len() as u64 + self.memory.held_pages();
        let tail_bytes = self.wal.end_lsn().0.saturating_sub(self.wal.written_lsn().0);
        pages * u64::from(self.arena.page_size_bytes()) + tail_bytes
    }

    /// Which automatic checkpoint is due, if any. None ever with automatic checkpoints off
    /// (`checkpoint_interval_bytes` 0), which turns the memory budget off too.
    pub fn checkpoint_due(&self) -> Option<Due> {
        let interval = self.options.checkpoint_interval_bytes;
        if interval == 0 {
            return None;
        }
        let since_interval = self
            .wal
            .end_lsn()
            .0
            .saturating_sub(self.last_interval_lsn.load(Ordering::Relaxed));
        let budget = self.options.memory_budget_bytes;
        if since_interval >= interval {
            Some(Due::Interval)
        } else if budget > 0 && self.budgeted_bytes() >= (budget / WRITEBACK_SHARE).max(1) {
            Some(Due::Writeback)
        } else {
            None
        }
    }

    /// After a commit: starts a checkpoint when one is due, on the background thread, or here
    /// when background I/O is off; then holds the committing writer while memory is over the
    /// budget (see [`Inner::wait_for_memory`]).
    pub fn nudge_checkpointer(&self) -> Result<()> {
        let Some(due) = self.checkpoint_due() else {
            return Ok(());
        };
        if !self.options.background_io {
            return match due {
                Due::Interval | Due::FilesDeleted => crate::store::checkpoint::run(self).map(|_| ()),
                Due::Writeback => crate::store::checkpoint::run_writeback(self).map(|_| ()),
            };
        }
        self.want_checkpoint();
        self.wait_for_memory();
        Ok(())
    }

    pub(crate) fn want_checkpoint(&self) {
        *self.checkpoint_wanted.0.lock() = true;
        self.checkpoint_wanted.1.notify_all();
    }

    /// Holds a committing writer while the memory the budget counts is over the budget, until
    /// the background checkpointer has given enough back: a writer that outruns the
    /// checkpointer is slowed rather than let memory grow. The caller holds no lock the
    /// checkpointer needs (the commit has released the writer lock), so a running checkpoint
    /// ends or fails, and the writer waits for it. A failed checkpoint, or no checkpoint
    /// running for `STALL_WAIT` (a backup holds them off), lets the writers go on, and none
    /// waits again until the checkpointer moves. Without background I/O the commit has run
    /// the checkpoint itself already (`nudge_checkpointer`).
    fn wait_for_memory(&self) {
        let budget = self.options.memory_budget_bytes;
        if budget == 0
            || self.options.checkpoint_interval_bytes == 0
            || !self.options.background_io
            || self.budgeted_bytes() < budget
        {
            return;
        }
        let memory = &self.memory;
        let mut last_step = (*memory.progress.lock(), std::time::Instant::now());
        loop {
            let seen = *memory.progress.lock();
            if seen == memory.stalled_at.load(Ordering::Acquire)
                || self.stopping.load(Ordering::SeqCst)
                || self.budgeted_bytes() < budget
            {
                return;
            }
            // A base image being stored holds the checkpointer: write back what it allows.
            match crate::store::checkpoint::clean_during_base_image(self) {
                Ok(0) => {}
                Ok(_) => continue,
                Err(_) => {
                    memory.checkpoint_failed();
                    return;
                }
            }
            self.want_checkpoint();
            let mut progress = memory.progress.lock();
            if *progress == seen {
                memory.progressed.wait_for(&mut progress, Duration::from_millis(50));
            }
            if *progress != last_step.0 || memory.is_running() {
                last_step = (*progress, std::time::Instant::now());
            } else if last_step.1.elapsed() >= STALL_WAIT {
                memory.stalled_at.store(*progress, Ordering::Release);
                return;
            }
        }
    }

    /// The metadata in the overflow chain starting at `first`; a chain the running
    /// transaction freed (its pages marked free in place) is read from the mask.
    pub fn read_meta_chain(&self, first: PageId, len: u32) -> Result<std::sync::Arc<[u8]>> {
        match super::catalog::read_chain(&self.arena, first, len) {
            Ok((bytes, _)) => Ok(bytes.into()),
            Err(error) => match self.mask.chain(first.0) {
                Some(bytes) if bytes.len() == len as usize => Ok(bytes),
                _ => Err(error),
            },
        }
    }

    /// A reader's view of the entry `entry` read (see `catalog::read_entry`): the vector and
    /// the metadata in place (a chain of overflow pages is read into memory).
    pub fn vector_ref<'a>(&'a self, entry: &EntryView, pin: Pin<'a>) -> Result<VectorRef<'a>> {
        // SAFETY: `entry.vector` points at `dimension` f32s (4-byte aligned: page offsets and
        // strides are multiples of 16) inside an arena mapping that lives as long as `self`;
        // the pin keeps the slot from reuse, and the writer never writes a slot that a
        // committed or masked entry owns, so the bytes are immutable for the borrow.
        let vector = unsafe { std::slice::from_raw_parts(entry.vector, self.dimension as usize) };
        let meta = match entry.meta {
            // SAFETY: as for the vector: the inline metadata of a live entry (its bounds were
            // checked against its page by `read_entry`), immutable while the pin holds.
            EntryMeta::Inline { ptr, len } => MetaRef::Inline(unsafe { std::slice::from_raw_parts(ptr, len as usize) }),
            EntryMeta::Chain { first, len } => MetaRef::Owned(self.read_meta_chain(first, len)?),
        };
        Ok(VectorRef {
            vector,
            meta,
            _pin: pin,
        })
    }
}
