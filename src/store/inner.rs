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
    pub archiver: crate::store::archiver::Archiver,
    /// The shipper of the archive, if the store ships (src/shipping.rs).
    pub(crate) ship: crate::store::shipping::ShipSlot,
    /// Checkpoints since the last base image (see `Options::base_image_every`).
    pub checkpoints_since_base: std::sync::atomic::AtomicU32,
    /// The approximate-search index as readers see it (store/graph).
    pub graph: super::graph::GraphShared,
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
            layout,
            index_root: AtomicU64::new(0),
            applying: AtomicU64::new(0),
            count: AtomicU64::new(0),
            mask: Mask::default(),
            writer: Mutex::new(WriterState::new(1, None)),
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
pub(super) fn checkpointer(weak: Weak<Inner>) {
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
            let _ = crate::store::checkpoint::run_in_background(&inner);
        }
    }
}


impl Inner {
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
            return crate::store::checkpoint::run(self).map(|_| ());
        }
        *self.checkpoint_wanted.0.lock() = true;
        self.checkpoint_wanted.1.notify_all();
        Ok(())
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
