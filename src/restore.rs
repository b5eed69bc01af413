//! Point-in-time restore and online backup (format-spec, "Archive files and base images").

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::storage::{RealStorage, Storage};
use crate::{Error, Lsn, Result};

/// Where a restore stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTarget {
    /// Include every record at or before this LSN (pass the LSN a commit returned and that
    /// transaction is in). Transactions still open there are rolled back.
    Lsn(Lsn),
    /// Include every transaction that committed at or before this instant (commit timestamps
    /// only are compared).
    Time(SystemTime),
    /// Everything in the log.
    Latest,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// The begin LSN of the base image the restore started from.
    pub base_image_lsn: Lsn,
    /// The last log record included.
    pub target_lsn: Lsn,
    /// Log bytes replayed (from the base image's redo start to the target).
    pub wal_bytes: u64,
    /// Log records redone.
    pub records_redone: u64,
    /// Transactions open at the target that were rolled back.
    pub rolled_back: Vec<u64>,
    /// Segments read from the archive, and from the source's live log.
    pub segments_from_archive: u64,
    pub segments_live: u64,
    /// The timeline the restored store starts (a new history).
    pub timeline: u32,
    pub duration: Duration,
}

/// Restores the store archived in `src` as it was at `target` into a new store at `dest`
/// (which must not exist). `src` is never modified; a restore that fails leaves no `dest`.
pub fn restore(src: impl AsRef<Path>, dest: impl AsRef<Path>, target: RestoreTarget) -> Result<RestoreReport> {
    restore_with(Arc::new(RealStorage::new()), src.as_ref(), dest.as_ref(), target)
}

/// [`restore`] through a given storage (crash simulation).
pub fn restore_with(
    storage: Arc<dyn Storage>,
    src: &Path,
    dest: &Path,
    target: RestoreTarget,
) -> Result<RestoreReport> {
    let _ = (storage, src, dest, target);
    Err(Error::InvalidArgument("restore is being implemented".into()))
}
