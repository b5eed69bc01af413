//! Segment files: naming, preallocation, recycling and their read-only mappings.
//!
//! A segment is a file of exactly `segment_size_bytes`, named `{segment_no:016x}.wal`, mapped
//! shared and read-only for zero-copy reads. The WAL writes segments only with `write_at`
//! (pwrite), never through the mapping: measured here, pwrite + fdatasync commits 5× faster
//! than stores into a shared mapping + msync/fdatasync.
//!
//! New segments are made from *spares*: files already at full length whose blocks are allocated,
//! so that a full disk is found when a spare is made, not in the middle of a commit. A spare
//! becomes a segment by one rename plus a directory sync; its stale bytes can never parse as
//! live records (every page header and record stores its own address). A spare is one of:
//!
//! - a retired segment, renamed: its blocks are written, and reusing it costs nothing;
//! - a *zero-filled* file: every block written with zeros and synced, so that an `fdatasync`
//!   after an append never has to commit file-system metadata. Made for a new log's first
//!   segment, and ahead of need while the log grows slowly, where commits are small and that
//!   metadata would be a large part of each;
//! - an *allocated* file (`fallocate`: blocks reserved, reading as zeros, never written). Made
//!   when a segment waits for its spare, or ahead of need while the log grows faster than
//!   [`ZERO_FILL_MAX_LOG_BYTES_PER_SEC`]: there, writing every segment twice (zeros, then the
//!   log) costs more device time than the extent conversions each sync then commits. Measured
//!   on this project's machine (ext4): transactions of 1,000 × 1 KiB vectors committed
//!   in 0.52 ms each into allocated segments, 1.2 ms while the next segment was zero-filled
//!   beside them; but single 1 KiB commits ran at 0.91× the rate of a bare pwrite + fdatasync
//!   in an allocated segment, 1.01× in a zero-filled one (benches/wal.rs).
//!
//! The choice is made when a spare is made, from the time between the last two installs (before
//! the first, from the time the first half segment took since the first append): a
//! log that turns slow after a fast phase (a bulk import, then small commits) commits into
//! allocated blocks until it reaches a segment whose spare was made while it was slow.
//!
//! The three read the same (zeros, or stale bytes that never parse): nothing on disk tells them
//! apart, and nothing needs to.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{IoContext, Result};
use crate::storage::{Mapping, Storage, StorageFile};

use crate::format::wal::Geometry;

const SEGMENT_SUFFIX: &str = ".wal";
const SPARE_PREFIX: &str = "spare-";
const ZERO_CHUNK_BYTES: usize = 1 << 20;
/// Retired segments kept as spares at most: what a log needs between two checkpoints beyond
/// this is made new (allocated, which costs a fast log little), so a store's footprint does not
/// keep every segment a burst of writes ever filled (a 256 MiB burst left four 64 MiB spares).
pub const SPARES_KEPT_MAX: usize = 2;
/// The log growth rate above which spares made ahead of need are allocated, not zero-filled.
pub const ZERO_FILL_MAX_LOG_BYTES_PER_SEC: u64 = 64 << 20;

/// Who a spare is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// A segment is being installed and waits for it: made as fast as possible.
    Now,
    /// The next segment, ahead of need.
    Ahead,
}

/// How fast the log is filling segments: the time between the last two installs.
#[derive(Debug, Default)]
struct Pace {
    last_install: Option<Instant>,
    interval: Option<Duration>,
}

/// The file name of segment `segment_no`.
pub fn segment_file_name(segment_no: u64) -> String {
    format!("{segment_no:016x}{SEGMENT_SUFFIX}")
}

/// The segment number named by `name`, if it is a segment file name.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SEGMENT_SUFFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// One mapped segment file.
#[derive(Debug)]
pub struct Segment {
    pub segment_no: u64,
    pub path: PathBuf,
    /// The file opened and mapped: every write of the segment goes to it, and every read
    /// comes from its mapping, whatever happens to its name.
    pub file: Arc<dyn StorageFile>,
    pub map: Mapping,
    /// The file put back at `path` after `file` lost its name while open (a mistaken `rm`, a
    /// cleanup of files it did not know): every later write and sync goes to it too, so what
    /// a flush makes durable is durable under the segment's name. See
    /// [`Segment::put_back_if_deleted`].
    named: Mutex<Option<Arc<dyn StorageFile>>>,
}

impl Segment {
    /// Writes `bytes` at `offset` (to the file put back too, if any).
    pub fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_at(bytes, offset)
            .context(|| format!("writing {}", self.path.display()))?;
        let named = self.named.lock().clone();
        if let Some(named) = named {
            named
                .write_at(bytes, offset)
                .context(|| format!("writing {} (put back)", self.path.display()))?;
        }
        Ok(())
    }

    /// Makes what was written durable (in the file put back too, if any).
    pub fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .context(|| format!("syncing {}", self.path.display()))?;
        // Cloned, not held: a sync takes long, and the preallocator's look must not wait for it.
        let named = self.named.lock().clone();
        if let Some(named) = named {
            named
                .sync_data()
                .context(|| format!("syncing {} (put back)", self.path.display()))?;
        }
        Ok(())
    }

    /// True once the segment was put back: writes go to two files, so none may go past the
    /// page cache to one alone (a direct write).
    pub fn is_put_back(&self) -> bool {
        self.named.lock().is_some()
    }

    /// True if the file bearing the segment's name has none (a hint: an error reads as no).
    pub fn looks_deleted(&self) -> bool {
        let named = self.named.lock().clone();
        named.as_ref().unwrap_or(&self.file).is_unlinked().unwrap_or(false)
    }

    /// If the file bearing the segment's name was deleted while open, puts the segment back
    /// at its path (its bytes read through `file`, which holds every byte written: see
    /// [`crate::storage::put_back`]) and writes to that file too from now on. The caller holds
    /// the log's I/O lock, so no write runs during the copy, and syncs the directory. True if
    /// it was put back.
    pub fn put_back_if_deleted(&self, storage: &dyn Storage) -> Result<bool> {
        let mut named = self.named.lock();
        let current = named.as_ref().unwrap_or(&self.file);
        let deleted = current
            .is_unlinked()
            .context(|| format!("checking {}", self.path.display()))?;
        if !deleted {
            return Ok(false);
        }
        let fresh = crate::storage::put_back(storage, self.file.as_ref(), &self.path)
            .context(|| format!("putting back {}, deleted while open", self.path.display()))?;
        *named = Some(fresh);
        Ok(true)
    }
}

/// Why [`SegmentDir::install`] failed.
#[derive(Debug)]
pub enum InstallError {
    /// Nothing changed (no room for a spare; no descriptor or address space left to open or
    /// map it, or no descriptor to sync the directory with, and the rename undone): the
    /// install may be tried again.
    Before(crate::Error),
    /// The spare took the segment's name and kept it (the rename failed, the directory sync
    /// after it failed with anything but a shortage, or the undo failed): whether the name is
    /// durable is not known, and the install cannot be redone.
    After(crate::Error),
}

impl InstallError {
    /// The error, whichever side of the rename it came from.
    pub fn into_error(self) -> crate::Error {
        match self {
            InstallError::Before(error) | InstallError::After(error) => error,
        }
    }
}

/// A full-length file waiting to become a segment. `previous` keeps a retired segment's
/// mapping alive while readers may still borrow from it; it is reused only once nobody does.
struct Spare {
    path: PathBuf,
    previous: Option<Arc<Segment>>,
}

impl Spare {
    fn is_unused(&self) -> bool {
        self.previous
            .as_ref()
            .is_none_or(|segment| Arc::strong_count(segment) == 1)
    }
}

/// The WAL directory: makes, opens, installs and retires segment files.
pub struct SegmentDir {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    geometry: Geometry,
    spares: Mutex<Vec<Spare>>,
    spare_seq: Mutex<u64>,
    /// Spares being zero-filled right now; whoever needs one waits for them rather than
    /// writing another 64 MiB of zeros beside them.
    preparing: Mutex<usize>,
    prepared: parking_lot::Condvar,
    pace: Mutex<Pace>,
    /// Open segments read-only (a reader: nothing is written).
    read_only: bool,
    /// The names [`SegmentDir::new`] listed, read again by the open's [`SegmentDir::list_segments`]
    /// and [`SegmentDir::adopt_leftover_spares`] instead of listing the directory three times;
    /// dropped by [`SegmentDir::opened`], before anything changes the directory.
    opening_names: Mutex<Option<Vec<String>>>,
    /// Spares an earlier run left, found by the open and not yet checked: their lengths are
    /// read when a spare is first needed (the first install, retire or preparation), not by an
    /// open, which may never write (two opens, stats and closes per spare were ~5 % of a warm
    /// open).
    leftover_spares: Mutex<Vec<String>>,
}

impl std::fmt::Debug for SegmentDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentDir").field("dir", &self.dir).finish()
    }
}

impl SegmentDir {
    /// The WAL directory `dir` (nothing is changed on disk).
    pub fn new(storage: Arc<dyn Storage>, dir: &Path, geometry: Geometry) -> Result<SegmentDir> {
        let names = storage.list(dir).context(|| format!("listing {}", dir.display()))?;
        Ok(SegmentDir {
            storage,
            dir: dir.to_path_buf(),
            geometry,
            spares: Mutex::new(Vec::new()),
            spare_seq: Mutex::new(0),
            preparing: Mutex::new(0),
            prepared: parking_lot::Condvar::new(),
            pace: Mutex::new(Pace::default()),
            read_only: false,
            opening_names: Mutex::new(Some(names)),
            leftover_spares: Mutex::new(Vec::new()),
        })
    }

    /// The open is over: later listings read the directory.
    pub fn opened(&self) {
        *self.opening_names.lock() = None;
    }

    fn names(&self) -> Result<Vec<String>> {
        if let Some(names) = &*self.opening_names.lock() {
            return Ok(names.clone());
        }
        self.storage
            .list(&self.dir)
            .context(|| format!("listing {}", self.dir.display()))
    }

    /// The WAL directory `dir` for a reader: its segments are opened read-only.
    pub fn new_read_only(storage: Arc<dyn Storage>, dir: &Path, geometry: Geometry) -> Result<SegmentDir> {
        let mut segment_dir = Self::new(storage, dir, geometry)?;
        segment_dir.read_only = true;
        Ok(segment_dir)
    }

    /// Reuses the spares an earlier run left (removing any whose zero-fill did not finish,
    /// when a spare is first needed: see `leftover_spares`). Numbers new spares past theirs.
    pub fn adopt_leftover_spares(&self) -> Result<()> {
        let names = self.names()?;
        let leftovers: Vec<String> = names.into_iter().filter(|n| n.starts_with(SPARE_PREFIX)).collect();
        let mut next_seq = self.spare_seq.lock();
        for name in &leftovers {
            let seq = name[SPARE_PREFIX.len()..].parse::<u64>().unwrap_or(0);
            *next_seq = (*next_seq).max(seq + 1);
        }
        *self.leftover_spares.lock() = leftovers;
        Ok(())
    }

    /// Checks the leftover spares not checked yet: keeps those of full length, removes the rest.
    fn check_leftover_spares(&self) -> Result<()> {
        let leftovers = std::mem::take(&mut *self.leftover_spares.lock());
        for (i, name) in leftovers.iter().enumerate() {
            if let Err(error) = self.adopt_leftover_spare(name) {
                // Checked again at the next need: nothing was lost.
                self.leftover_spares.lock().extend(leftovers[i..].iter().cloned());
                return Err(error);
            }
        }
        Ok(())
    }

    fn adopt_leftover_spare(&self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        let file = self
            .storage
            .open(&path, false)
            .context(|| format!("opening {}", path.display()))?;
        let len_bytes = file
            .len()
            .context(|| format!("reading the length of {}", path.display()))?;
        if len_bytes == self.geometry.segment_size_bytes {
            self.spares.lock().push(Spare { path, previous: None });
        } else {
            // A spare whose zero-fill never finished: its blocks may be unallocated.
            self.storage
                .remove_file(&path)
                .context(|| format!("removing {}", path.display()))?;
        }
        Ok(())
    }

    /// The storage the directory lives in.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The directory path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The segment numbers present, ascending.
    pub fn list_segments(&self) -> Result<Vec<u64>> {
        let names = self.names()?;
        let mut numbers: Vec<u64> = names.iter().filter_map(|n| parse_segment_file_name(n)).collect();
        numbers.sort_unstable();
        Ok(numbers)
    }

    /// Opens and maps existing segment `segment_no`; a file of the wrong length is damage.
    pub fn open_segment(&self, segment_no: u64) -> Result<Arc<Segment>> {
        let path = self.dir.join(segment_file_name(segment_no));
        let file = if self.read_only {
            self.storage.open_read_only(&path)
        } else {
            self.storage.open(&path, false)
        }
        .context(|| format!("opening {}", path.display()))?;
        let len_bytes = file
            .len()
            .context(|| format!("reading the length of {}", path.display()))?;
        if len_bytes != self.geometry.segment_size_bytes {
            return Err(crate::Error::corrupted_file(
                &path,
                format!(
                    "segment is {len_bytes} bytes, expected {}",
                    self.geometry.segment_size_bytes
                ),
            ));
        }
        self.map_segment(segment_no, path, file)
    }

    fn map_segment(&self, segment_no: u64, path: PathBuf, file: Arc<dyn StorageFile>) -> Result<Arc<Segment>> {
        let map = file.map_shared().context(|| format!("mapping {}", path.display()))?;
        assert_eq!(
            map.len() as u64,
            self.geometry.segment_size_bytes,
            "segment mapped at full length"
        );
        Ok(Arc::new(Segment {
            segment_no,
            path,
            file,
            map,
            named: Mutex::new(None),
        }))
    }

    /// Makes sure `count` unused spares exist ahead of need, waiting for spares already being
    /// made. Returns `DiskFull` if the file system has no room for a whole segment.
    pub fn ensure_spares(&self, count: usize) -> Result<()> {
        self.ensure_spares_for(count, Need::Ahead)
    }

    fn ensure_spares_for(&self, count: usize, need: Need) -> Result<()> {
        self.check_leftover_spares()?;
        if need == Need::Ahead && !self.room_for_spare_ahead() {
            // A spare made ahead of need must never take the last room on the disk (an owner
            // who freed space to let the store go on would find it gone): the segment that
            // needs it makes it then, or fails with DiskFull at that append.
            return Ok(());
        }
        loop {
            let mut preparing = self.preparing.lock();
            let unused = self.spares.lock().iter().filter(|s| s.is_unused()).count();
            if unused >= count {
                return Ok(());
            }
            if unused + *preparing >= count {
                self.prepared.wait(&mut preparing);
                continue;
            }
            *preparing += 1;
            drop(preparing);
            let result = self.make_spare(need);
            *self.preparing.lock() -= 1;
            self.prepared.notify_all();
            result?;
        }
    }

    /// Removes unused spares beyond `keep`, at a clean close: while a session runs, recycled
    /// segments pile up to [`SPARES_KEPT_MAX`] spares, but the next session's preallocator keeps
    /// one ([`SegmentDir::ensure_spares`]), so a closed store holds no more than that (16 MiB
    /// of disk less per spare, and nothing made again later: recycling makes the others).
    pub fn trim_spares(&self, keep: usize) -> Result<()> {
        let removed: Vec<Spare> = {
            let mut spares = self.spares.lock();
            let mut removed = Vec::new();
            while spares.iter().filter(|s| s.is_unused()).count() > keep {
                let at = spares.iter().position(Spare::is_unused).expect("counted above");
                removed.push(spares.remove(at));
            }
            removed
        };
        for spare in &removed {
            self.storage
                .remove_file(&spare.path)
                .context(|| format!("removing {}", spare.path.display()))?;
        }
        if removed.is_empty() { Ok(()) } else { self.sync_dir() }
    }

    fn make_spare(&self, need: Need) -> Result<()> {
        let path = {
            let mut seq = self.spare_seq.lock();
            *seq += 1;
            self.dir.join(format!("{SPARE_PREFIX}{}", *seq))
        };
        let zero_fill = need == Need::Ahead && !self.log_is_fast();
        if let Err(error) = self.prepare_spare(&path, zero_fill) {
            let _ = self.storage.remove_file(&path);
            return Err(error);
        }
        self.spares.lock().push(Spare { path, previous: None });
        Ok(())
    }

    /// True unless the file system is known to have less room than a spare and a margin of
    /// another segment beside it.
    fn room_for_spare_ahead(&self) -> bool {
        match self.storage.available_bytes(&self.dir) {
            Ok(Some(free)) => free >= self.geometry.segment_size_bytes.saturating_mul(2),
            _ => true,
        }
    }

    /// True once the time between two installs is known, so that a spare made ahead of need
    /// can be made the right way (zero-filled or allocated). Before that, a spare made ahead
    /// would be zero-filled blind: at the start of a bulk load that wrote a whole segment of
    /// zeros beside the load (in a 64 MiB import, more bytes than the log itself).
    pub fn pace_known(&self) -> bool {
        self.pace.lock().interval.is_some()
    }

    /// True if the last segment filled faster than [`ZERO_FILL_MAX_LOG_BYTES_PER_SEC`].
    fn log_is_fast(&self) -> bool {
        let Some(interval) = self.pace.lock().interval else {
            return false;
        };
        let threshold =
            Duration::from_secs_f64(self.geometry.segment_size_bytes as f64 / ZERO_FILL_MAX_LOG_BYTES_PER_SEC as f64);
        interval < threshold
    }

    /// Creates a full-length spare at `path`, synced: zero-filled, or allocated (falling back
    /// to zeros where the file system cannot allocate).
    fn prepare_spare(&self, path: &Path, zero_fill: bool) -> Result<()> {
        let file = self
            .storage
            .open(path, true)
            .context(|| format!("creating {}", path.display()))?;
        let allocated = !zero_fill
            && file
                .allocate(self.geometry.segment_size_bytes)
                .context(|| format!("preallocating {}", path.display()))?;
        if !allocated {
            self.zero_fill(path, &*file)?;
        }
        file.sync_data().context(|| format!("syncing {}", path.display()))
    }

    fn zero_fill(&self, path: &Path, file: &dyn StorageFile) -> Result<()> {
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut offset = 0u64;
        while offset < self.geometry.segment_size_bytes {
            let chunk_bytes = (self.geometry.segment_size_bytes - offset).min(ZERO_CHUNK_BYTES as u64);
            file.write_at(&zeros[..chunk_bytes as usize], offset)
                .context(|| format!("preallocating {}", path.display()))?;
            offset += chunk_bytes;
        }
        Ok(())
    }

    /// Turns a spare into segment `segment_no` (rename + directory sync) and maps it.
    ///
    /// A step that fails for want of room, descriptors or address space (making the spare,
    /// opening and mapping it) leaves nothing changed ([`InstallError::Before`]): the segment is
    /// opened under its own name after the rename, and where that open or the mapping fails the
    /// rename is undone before the directory is synced. The commit that needed the segment
    /// fails, and a later one installs it. (Before, a process out of descriptors there stopped
    /// the log until the store was opened again. A crash between the rename and its undo leaves
    /// a segment file past the log's end that holds no valid record, as a crash right after any
    /// install does.)
    pub fn install(&self, segment_no: u64) -> std::result::Result<Arc<Segment>, InstallError> {
        self.ensure_spares_for(1, Need::Now).map_err(InstallError::Before)?;
        let spare = {
            let mut spares = self.spares.lock();
            let index = spares
                .iter()
                .position(Spare::is_unused)
                .expect("ensure_spares_for made an unused spare");
            spares.swap_remove(index)
        };
        let path = self.dir.join(segment_file_name(segment_no));
        assert!(!self.storage.exists(&path), "segment {segment_no} installed twice");
        self.storage
            .rename(&spare.path, &path)
            .context(|| format!("renaming {} to {}", spare.path.display(), path.display()))
            .map_err(InstallError::After)?;
        let opened = self
            .storage
            .open(&path, false)
            .context(|| format!("opening {}", path.display()))
            .and_then(|file| self.map_segment(segment_no, path.clone(), file));
        let synced = match opened {
            Ok(segment) => match self.sync_dir() {
                Ok(()) => Ok(segment),
                // No descriptor to open the directory with: nothing was asked of the disk, so
                // the rename is undone as below. Any other failure leaves the name's
                // durability unknown.
                Err(error) if error.is_exhaustion() => Err(error),
                Err(error) => return Err(InstallError::After(error)),
            },
            Err(error) => Err(error),
        };
        match synced {
            Ok(segment) => {
                drop(spare.previous);
                self.note_install();
                Ok(segment)
            }
            // Nothing was written through the new name: the spare takes its own name back and
            // waits for the next install.
            Err(error) => match self.storage.rename(&path, &spare.path) {
                Ok(()) => {
                    self.spares.lock().push(spare);
                    Err(InstallError::Before(error))
                }
                Err(_) => Err(InstallError::After(error)),
            },
        }
    }

    /// Takes `appended_bytes` of log in `elapsed` as the log's pace until an install measures
    /// it (see [`SegmentDir::pace_known`]).
    pub fn estimate_pace(&self, appended_bytes: u64, elapsed: Duration) {
        let mut pace = self.pace.lock();
        if pace.interval.is_none() && appended_bytes > 0 {
            let per_segment = elapsed.as_secs_f64() * self.geometry.segment_size_bytes as f64 / appended_bytes as f64;
            pace.interval = Some(Duration::from_secs_f64(per_segment));
        }
    }

    fn note_install(&self) {
        let mut pace = self.pace.lock();
        let now = Instant::now();
        pace.interval = pace.last_install.map(|last| now - last);
        pace.last_install = Some(now);
    }

    /// Retires a segment no longer needed: it is renamed to a spare and recycled once no reader
    /// holds its mapping, or, when [`SPARES_KEPT_MAX`] spares wait already, removed (readers
    /// that still hold its mapping keep reading it). The directory is synced by the caller or
    /// the next `install`.
    pub fn retire(&self, segment: Arc<Segment>) -> Result<()> {
        self.check_leftover_spares()?;
        if self.spares.lock().len() >= SPARES_KEPT_MAX {
            return self.remove(&segment);
        }
        let spare_path = {
            let mut seq = self.spare_seq.lock();
            *seq += 1;
            self.dir.join(format!("{SPARE_PREFIX}{}", *seq))
        };
        self.storage
            .rename(&segment.path, &spare_path)
            .context(|| format!("renaming {} to {}", segment.path.display(), spare_path.display()))?;
        self.spares.lock().push(Spare {
            path: spare_path,
            previous: Some(segment),
        });
        Ok(())
    }

    /// Removes a segment file outright (used when it is handed to an archive instead).
    pub fn remove(&self, segment: &Segment) -> Result<()> {
        self.storage
            .remove_file(&segment.path)
            .context(|| format!("removing {}", segment.path.display()))
    }

    /// Makes creations and renames in the directory durable.
    pub fn sync_dir(&self) -> Result<()> {
        self.storage
            .sync_dir(&self.dir)
            .context(|| format!("syncing directory {}", self.dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Small, so the tests stay quick under Miri (the simulator tracks every sector).
    const SEGMENT_BYTES: u64 = 128 << 10;

    fn sim_dir(sim: &SimStorage) -> SegmentDir {
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        storage.create_dir_all(Path::new("/wal")).unwrap();
        let geometry = Geometry::new(4096, SEGMENT_BYTES).unwrap();
        SegmentDir::new(storage, Path::new("/wal"), geometry).unwrap()
    }

    fn assert_full_length_of_zeros(sim: &SimStorage, path: &Path) {
        let bytes = sim.read_file(path).unwrap();
        assert_eq!(bytes.len() as u64, SEGMENT_BYTES, "a spare is a whole segment long");
        assert!(bytes.iter().all(|&b| b == 0), "a new spare reads as zeros");
    }

    /// Makes one spare ahead of need and returns the bytes the storage wrote for it.
    fn bytes_written_by_a_spare_ahead(sim: &SimStorage, dir: &SegmentDir) -> u64 {
        let written_before = sim.written_bytes();
        dir.ensure_spares(1).unwrap();
        assert_full_length_of_zeros(sim, &dir.spares.lock()[0].path);
        sim.written_bytes() - written_before
    }

    #[test]
    fn leftover_spares_are_checked_at_the_first_need_not_at_open() {
        let sim = SimStorage::new(9);
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        storage.create_dir_all(Path::new("/wal")).unwrap();
        let (whole, short) = (Path::new("/wal/spare-7"), Path::new("/wal/spare-8"));
        storage.open(whole, true).unwrap().write_at(&vec![0u8; SEGMENT_BYTES as usize], 0).unwrap();
        storage.open(short, true).unwrap().write_at(&[0u8; 100], 0).unwrap();
        let geometry = Geometry::new(4096, SEGMENT_BYTES).unwrap();
        let dir = SegmentDir::new(storage.clone(), Path::new("/wal"), geometry).unwrap();
        dir.adopt_leftover_spares().unwrap();
        dir.opened();
        assert!(storage.exists(short), "the open reads no spare: the short one is still there");
        let written_before = sim.written_bytes();
        dir.install(1).unwrap();
        assert!(
            sim.written_bytes() - written_before < SEGMENT_BYTES,
            "the whole leftover spare became segment 1: no new spare was written"
        );
        assert!(!storage.exists(short), "the short spare was removed at the first need");
        assert!(!storage.exists(whole), "the whole one was renamed to segment 1");
        dir.ensure_spares(1).unwrap();
        let name = dir.spares.lock()[0].path.file_name().unwrap().to_string_lossy().into_owned();
        let number: u64 = name[SPARE_PREFIX.len()..].parse().unwrap();
        assert!(number > 8, "new spares are numbered past the leftovers: {name}");
    }

    /// The simulator, where opening `fails` fails with `EMFILE` while `short` is set, and a
    /// directory sync while `short_at_dir_sync` is.
    #[derive(Debug)]
    struct OutOfDescriptors {
        sim: SimStorage,
        fails: PathBuf,
        short: AtomicBool,
        short_at_dir_sync: AtomicBool,
    }

    impl OutOfDescriptors {
        fn new(sim: &SimStorage, fails: &Path) -> Arc<OutOfDescriptors> {
            Arc::new(OutOfDescriptors {
                sim: sim.clone(),
                fails: fails.to_path_buf(),
                short: AtomicBool::new(false),
                short_at_dir_sync: AtomicBool::new(false),
            })
        }
    }

    impl Storage for OutOfDescriptors {
        fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
            self.sim.create_dir_all(path)
        }
        fn open(&self, path: &Path, create: bool) -> std::io::Result<Arc<dyn StorageFile>> {
            if path == self.fails && self.short.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
            }
            self.sim.open(path, create)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            self.sim.rename(from, to)
        }
        fn remove_file(&self, path: &Path) -> std::io::Result<()> {
            self.sim.remove_file(path)
        }
        fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
            self.sim.remove_dir(path)
        }
        fn list(&self, path: &Path) -> std::io::Result<Vec<String>> {
            self.sim.list(path)
        }
        fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
            if self.short_at_dir_sync.load(Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
            }
            self.sim.sync_dir(path)
        }
        fn exists(&self, path: &Path) -> bool {
            self.sim.exists(path)
        }
    }

    #[test]
    fn an_install_whose_segment_cannot_be_opened_is_undone_and_the_next_one_succeeds() {
        let sim = SimStorage::new(4);
        let segment_path = Path::new("/wal").join(segment_file_name(1));
        let storage = OutOfDescriptors::new(&sim, &segment_path);
        storage.short.store(true, Ordering::SeqCst);
        storage.create_dir_all(Path::new("/wal")).unwrap();
        let geometry = Geometry::new(4096, SEGMENT_BYTES).unwrap();
        let dir = SegmentDir::new(storage.clone(), Path::new("/wal"), geometry).unwrap();
        let failed = dir.install(1);
        assert!(
            matches!(failed, Err(InstallError::Before(_))),
            "out of descriptors, nothing changed: {failed:?}"
        );
        assert!(!sim.exists(&segment_path), "the rename was undone");
        assert_eq!(dir.spares.lock().len(), 1, "the spare waits for the next install");
        storage.short.store(false, Ordering::SeqCst);
        let written_before = sim.written_bytes();
        let segment = dir.install(1).unwrap();
        assert!(
            sim.written_bytes() - written_before < SEGMENT_BYTES,
            "the spare made for the failed install became the segment"
        );
        assert_eq!(segment.path, segment_path);
        assert!(sim.exists(&segment_path));
    }

    #[test]
    fn an_install_out_of_descriptors_at_its_directory_sync_is_undone_and_the_next_one_succeeds() {
        let sim = SimStorage::new(5);
        let segment_path = Path::new("/wal").join(segment_file_name(1));
        let storage = OutOfDescriptors::new(&sim, &segment_path);
        storage.create_dir_all(Path::new("/wal")).unwrap();
        let geometry = Geometry::new(4096, SEGMENT_BYTES).unwrap();
        let dir = SegmentDir::new(storage.clone(), Path::new("/wal"), geometry).unwrap();
        dir.ensure_spares(1).unwrap();
        storage.short_at_dir_sync.store(true, Ordering::SeqCst);
        let failed = dir.install(1);
        assert!(
            matches!(&failed, Err(InstallError::Before(error)) if error.is_exhaustion()),
            "no descriptor to sync the directory: nothing asked of the disk, the install undone: {failed:?}"
        );
        assert!(!sim.exists(&segment_path), "the rename was undone");
        assert_eq!(dir.spares.lock().len(), 1, "the spare waits for the next install");
        storage.short_at_dir_sync.store(false, Ordering::SeqCst);
        let segment = dir.install(1).unwrap();
        assert_eq!(segment.path, segment_path);
        assert!(sim.reboot().exists(&segment_path), "the second install's name is durable");
    }

    #[test]
    fn a_spare_a_segment_waits_for_is_allocated_not_written() {
        let sim = SimStorage::new(1);
        let dir = sim_dir(&sim);
        let written_before = sim.written_bytes();
        let segment = dir.install(1).unwrap();
        assert!(
            sim.written_bytes() - written_before < SEGMENT_BYTES,
            "the commit that waits for a segment must not wait for a segment of zeros to be written"
        );
        assert_full_length_of_zeros(&sim, &segment.path);
    }

    #[test]
    fn a_spare_made_ahead_of_a_slow_log_is_zero_filled() {
        let sim = SimStorage::new(2);
        let dir = sim_dir(&sim);
        assert!(
            bytes_written_by_a_spare_ahead(&sim, &dir) >= SEGMENT_BYTES,
            "small commits into the spare must find every block written (no extent conversion at their syncs)"
        );
    }

    #[test]
    fn a_spare_made_ahead_of_a_fast_log_is_allocated() {
        let sim = SimStorage::new(3);
        let dir = sim_dir(&sim);
        dir.install(1).unwrap();
        // As if segment 1 had filled in 1 µs: far faster than ZERO_FILL_MAX_LOG_BYTES_PER_SEC.
        dir.pace.lock().interval = Some(Duration::from_micros(1));
        assert!(
            bytes_written_by_a_spare_ahead(&sim, &dir) < SEGMENT_BYTES,
            "a fast log must not have every segment written twice (zeros, then records)"
        );
    }

    #[test]
    fn half_a_segment_appended_slowly_or_fast_teaches_the_pace_before_any_install() {
        let sim = SimStorage::new(5);
        let dir = sim_dir(&sim);
        assert!(!dir.pace_known(), "a new log's pace is unknown");
        dir.estimate_pace(SEGMENT_BYTES / 2, Duration::from_secs(10));
        assert!(dir.pace_known() && !dir.log_is_fast(), "half a segment in 10 s is a slow log");
        assert!(
            bytes_written_by_a_spare_ahead(&sim, &dir) >= SEGMENT_BYTES,
            "so the spare made ahead is zero-filled"
        );
        let sim = SimStorage::new(6);
        let dir = sim_dir(&sim);
        dir.estimate_pace(SEGMENT_BYTES / 2, Duration::from_micros(1));
        assert!(dir.log_is_fast(), "half a segment in 1 us is a fast log");
        dir.estimate_pace(SEGMENT_BYTES / 2, Duration::from_secs(10));
        assert!(dir.log_is_fast(), "an estimate never replaces a pace already known");
    }

    #[test]
    fn a_spare_that_does_not_fit_is_disk_full_and_leaves_no_file() {
        let sim = SimStorage::new(4);
        let dir = sim_dir(&sim);
        sim.set_capacity(Some(SEGMENT_BYTES / 2));
        let result = dir.ensure_spares_for(1, Need::Now);
        assert!(
            matches!(result, Err(crate::Error::DiskFull { .. })),
            "a full disk is found when the spare a segment waits for is made, as DiskFull: {result:?}"
        );
        assert!(
            dir.storage.list(Path::new("/wal")).unwrap().is_empty(),
            "the spare that did not fit is removed"
        );
    }

    #[test]
    fn no_spare_is_made_ahead_of_need_without_room_for_two_segments() {
        let sim = SimStorage::new(4);
        let dir = sim_dir(&sim);
        sim.set_capacity(Some(SEGMENT_BYTES * 2 - 1));
        dir.ensure_spares(1).unwrap();
        assert!(
            dir.storage.list(Path::new("/wal")).unwrap().is_empty(),
            "the last room on the disk is left to the segment that needs it"
        );
        sim.set_capacity(Some(SEGMENT_BYTES * 2));
        dir.ensure_spares(1).unwrap();
        assert_eq!(
            dir.storage.list(Path::new("/wal")).unwrap().len(),
            1,
            "with room, it is made"
        );
    }

    #[test]
    fn segment_names_round_trip_and_reject_lookalikes() {
        assert_eq!(segment_file_name(26), "000000000000001a.wal");
        assert_eq!(parse_segment_file_name("000000000000001a.wal"), Some(26));
        assert_eq!(
            parse_segment_file_name("000000000000001A.wal"),
            None,
            "one spelling per number"
        );
        assert_eq!(parse_segment_file_name("1a.wal"), None);
        assert_eq!(parse_segment_file_name("000000000000001a.wal.tmp"), None);
    }
}
