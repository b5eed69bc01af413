//! Read-only inspection of a store's files, for tools (`vellum verify`, `wal-dump`, `stats`):
//! nothing here writes a byte, and everything works on a store no open accepts.
//!
//! - [`verify_store`]: every checksum of every file, the store's completeness, then a
//!   read-only open and a full check of its index; a [`Report`] of what was found.
//! - [`check_index`], [`index_report`]: the full check of an open store's id index and of the
//!   pages it reaches (what `verify` runs after its open).
//! - [`LogDump`]: the log's records in LSN order, opened with the control file's geometry.
//! - [`read_control`]: the control data in force; [`archive_entries`]: what `archive/` holds.

mod graph;
mod index;
mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::wal::{Record, ScanReport, SkippedRange, TornTail};
pub use index::{INDEX_DAMAGE_KEPT_MAX, IndexCheck, IndexDamage, IndexSummary, check_index, index_report};
pub use verify::{Problem, Report, Severity, SlotCheck, verify_store};

use crate::error::Result;
use crate::format::control::Control;
use crate::format::wal::{Geometry, LogIdentity};
use crate::storage::{RealStorage, Storage};
use crate::store::control_file::ControlFile;
use crate::wal::{Wal, WalConfig, WalReader};
use crate::{Error, Lsn, RecoveryMode, SyncMode};

/// What a long inspection reports as it goes (a progress bar, or nothing: `&()`).
pub trait Progress {
    /// A new phase begins, of `total` units (0: unknown).
    fn phase(&self, message: &str, total: u64);
    /// `done` units of the current phase are done.
    fn position(&self, done: u64);
}

impl Progress for () {
    fn phase(&self, _message: &str, _total: u64) {}
    fn position(&self, _done: u64) {}
}

/// The control data in force of the store in `dir` (the control file is opened read-only).
pub fn read_control(dir: &Path) -> Result<Control> {
    ControlFile::open(&RealStorage::new(), dir).map(|(_, control)| control)
}

/// What `archive/` holds besides usable archive files ([`archive_entries`]).
#[derive(Clone, Debug, Default)]
pub struct ArchiveEntries {
    /// Entries that are not archive files (directories, stray files).
    pub unknown: Vec<PathBuf>,
    /// Base images whose header is damaged, and why.
    pub damaged: Vec<(PathBuf, String)>,
}

/// What `archive/` of the store in `dir` holds besides archive files. Such entries never stop
/// an open; `verify` and `stats` report them.
pub fn archive_entries(dir: &Path) -> Result<ArchiveEntries> {
    let listing = crate::archive::list(&RealStorage::new(), dir, false)?;
    Ok(ArchiveEntries {
        unknown: listing.unknown,
        damaged: listing.damaged,
    })
}

/// Total size and count of the regular files under `dir` (recursively); zeros if absent.
pub fn dir_usage(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

/// The log of a store, opened read-only for dumping (the store itself is not opened, so no
/// recovery runs): scanned from its oldest segment with `TolerateTornTail`, so a torn tail
/// ends it (see [`LogDump::scan`]).
pub struct LogDump {
    wal: Wal,
    scan: ScanReport,
    page_size_bytes: u32,
}

impl LogDump {
    /// Opens the log of the store in `dir` with the geometry and identity its control file
    /// holds.
    pub fn open(dir: &Path) -> Result<LogDump> {
        LogDump::open_with(Arc::new(RealStorage::new()), dir)
    }

    /// [`LogDump::open`] of a store on `storage` (a crash simulator's, in tests).
    pub fn open_with(storage: Arc<dyn Storage>, dir: &Path) -> Result<LogDump> {
        let (_, control) = ControlFile::open(storage.as_ref(), dir)?;
        let geometry = Geometry::new(control.page_size_bytes, control.segment_size_bytes)
            .map_err(|reason| Error::corrupted_file(dir.join("CONTROL"), reason))?;
        let identity = LogIdentity {
            store_id: control.store_id,
            timeline: control.timeline,
        };
        let config = WalConfig {
            required_files: control.extent.is_some(),
            ..WalConfig::new(geometry, identity, SyncMode::Never)
        };
        let (wal, scan) = Wal::open_read_only(storage, &dir.join("wal"), config, None, RecoveryMode::TolerateTornTail)?;
        Ok(LogDump {
            wal,
            scan,
            page_size_bytes: control.page_size_bytes,
        })
    }

    /// What the scan found: where the log ends, and a torn tail if any.
    pub fn scan(&self) -> &ScanReport {
        &self.scan
    }

    /// The first record start of the oldest segment present.
    pub fn first_lsn(&self) -> Lsn {
        self.wal.first_lsn()
    }

    /// The page size (payload decoders need it).
    pub fn page_size_bytes(&self) -> u32 {
        self.page_size_bytes
    }

    /// The records from the oldest on, in LSN order.
    pub fn reader(&self) -> LogReader {
        LogReader(self.wal.reader(self.wal.first_lsn()))
    }
}

/// Reads the records of a [`LogDump`], one at a time.
pub struct LogReader(WalReader);

impl LogReader {
    /// The next record, or `None` at the end of the log; damage is an error.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>> {
        self.0.next_record()
    }
}

/// A store's locks (its directory's and `LOCK`'s), as a tool that must not run beside an open
/// store tries them.
pub enum StoreLock {
    /// Taken; released when dropped.
    Held(#[allow(dead_code)] Box<dyn std::any::Any + Send + Sync>),
    /// A process has the store open (for writing, or for reading when asked for exclusive).
    Busy,
    /// Neither could be taken for a reason other than a holder (no `LOCK` file and a file
    /// system that cannot lock a directory, read-only media, another user's store).
    Unavailable,
}

/// Tries to take the locks of the store in `dir` as an open does, `exclusive` as a writer's
/// or shared as a reader's, creating nothing: its directory's, and `LOCK` if the file exists.
/// `Busy` if a holder has either.
pub fn try_lock_store(dir: &Path, exclusive: bool) -> StoreLock {
    let storage = RealStorage::new();
    let held = |e: &std::io::Error| e.kind() == std::io::ErrorKind::WouldBlock;
    let dir_guard = match storage.lock_dir(dir, exclusive) {
        Ok(guard) => Some(guard),
        Err(e) if held(&e) => return StoreLock::Busy,
        Err(_) => None,
    };
    let path = dir.join("LOCK");
    let taken = match path.is_file() {
        true if exclusive => Some(storage.lock_exclusive(&path)),
        true => Some(storage.lock_shared(&path)),
        false => None,
    };
    let file_guard = match taken {
        Some(Ok(guard)) => Some(guard),
        Some(Err(e)) if held(&e) => return StoreLock::Busy,
        Some(Err(_)) | None => None,
    };
    match (file_guard, dir_guard) {
        (None, None) => StoreLock::Unavailable,
        guards => StoreLock::Held(Box::new(guards)),
    }
}
