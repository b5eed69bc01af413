//! Point-in-time restore and online backup (format-spec, "Archive files and base images").

#[cfg(feature = "object-store")]
pub(crate) mod remote;
pub(crate) mod scratch;
mod watch;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::archive::{self, ArchiveHeader};
use crate::arena::arena_file_name;
use crate::error::{IoContext, Result};
use crate::format::control::Control;
use crate::format::page::Space;
use crate::format::record::Kind;
use crate::format::wal::{Geometry, LogIdentity};
use crate::storage::{Adapted, RealStorage, Storage, StorageFile};
use crate::store::control_file::ControlFile;
use crate::wal::segment::segment_file_name;
use crate::wal::{ScanReport, Wal, WalConfig};
use crate::{Error, Lsn, Options, RecoveryMode, Store, SyncMode};
pub(crate) use watch::Watch;
pub use watch::{RestorePhase, RestoreProgress};

/// Where a restore stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreTarget {
    /// Include every record at or before this LSN (pass the LSN a commit returned and that
    /// transaction is in). Transactions still open there are rolled back. An LSN beyond the
    /// end of the log is an `Error::InvalidArgument` naming the end.
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
    /// Segments read from the archive.
    pub segments_from_archive: u64,
    /// Segments read from the source's live log.
    pub segments_live: u64,
    /// The timeline the restored store starts (a new history).
    pub timeline: u32,
    /// Wall time of the whole restore.
    pub duration: Duration,
    /// Where the time went, phase by phase, in order ("stage arena", "stage log", "find cut",
    /// "replay", "new timeline", "publish").
    pub phases: Vec<(&'static str, Duration)>,
}

impl RestoreReport {
    fn phase_done(&mut self, name: &'static str, since: &mut Instant) {
        let now = Instant::now();
        self.phases.push((name, now - *since));
        *since = now;
    }
}

/// Restores the store archived in `src` as it was at `target` into a new store at `dest`
/// (which must not exist). `src` is never modified; a restore that fails leaves no `dest`.
/// `src` may be the URL of a remote archive a store ships to (feature `object-store`).
pub fn restore(src: impl AsRef<Path>, dest: impl AsRef<Path>, target: RestoreTarget) -> Result<RestoreReport> {
    restore_from(src.as_ref(), dest.as_ref(), target, &Watch::new())
}

/// [`restore`], watched: `watcher` is called on this thread about every tenth of a second with
/// the phase running and its progress, and once more as the restore ends well (the restore
/// itself runs on a thread of its own). If it returns `Break`, the restore stops at its next
/// file operation (a replay within 1,024 log records), removes what it staged, and returns
/// `Err(Interrupted)`: `dest` does not exist. A `Break` after the restore's last file
/// operation changes nothing (the call returns `Ok`). The watcher must not restore into
/// `dest` itself.
pub fn restore_watched(
    src: impl AsRef<Path>,
    dest: impl AsRef<Path>,
    target: RestoreTarget,
    watcher: &mut dyn FnMut(RestoreProgress) -> ControlFlow<()>,
) -> Result<RestoreReport> {
    let (src, dest) = (src.as_ref(), dest.as_ref());
    watch::run_watched(dest, |watch| restore_from(src, dest, target, watch), watcher)
}

fn restore_from(src: &Path, dest: &Path, target: RestoreTarget, watch: &Watch) -> Result<RestoreReport> {
    // Hook (shipping): a URL (`s3://bucket/prefix`, `file:///…`) restores from object storage.
    if let Some(url) = src.to_str().filter(|s| crate::ship::is_url(s)) {
        return restore_from_url(url, dest, target, watch);
    }
    restore_watching(Arc::new(RealStorage::new()), src, dest, target, watch)
}

impl Store {
    /// Makes an online backup at `dest` (which must not exist, nor lie inside this store): a
    /// checkpoint with a base image, then a restore of everything committed into a new,
    /// openable store. Writers go on meanwhile; checkpoints wait until the copy is done, so no
    /// log segment it needs is recycled under it.
    pub fn backup(&self, dest: impl AsRef<Path>) -> Result<RestoreReport> {
        let _held = self.hold_for_copy()?;
        let storage = self.storage().clone();
        restore_watching(
            storage,
            self.path(),
            dest.as_ref(),
            RestoreTarget::Latest,
            &Watch::new(),
        )
    }

    /// [`Store::backup`], watched as [`restore_watched`] is: `Break` stops the copy at its next
    /// file operation, removes what it staged and returns `Err(Interrupted)` (no `dest`); the
    /// store goes on as before. The watcher may read the store and write to it, but not
    /// checkpoint it nor back it up (checkpoints wait for the copy).
    pub fn backup_watched(
        &self,
        dest: impl AsRef<Path>,
        watcher: &mut dyn FnMut(RestoreProgress) -> ControlFlow<()>,
    ) -> Result<RestoreReport> {
        let _held = self.hold_for_copy()?;
        let (storage, src, dest) = (self.storage().clone(), self.path(), dest.as_ref());
        watch::run_watched(
            dest,
            |watch| restore_watching(storage, src, dest, RestoreTarget::Latest, watch),
            watcher,
        )
    }
}

/// Restores from a remote archive (a URL source of [`restore`]).
fn restore_from_url(url: &str, dest: &Path, target: RestoreTarget, watch: &Watch) -> Result<RestoreReport> {
    #[cfg(feature = "object-store")]
    {
        crate::restore::remote::restore_from_url(url, None, dest, target, watch)
    }
    #[cfg(not(feature = "object-store"))]
    {
        let _ = (dest, target, watch);
        Err(Error::Incompatible(format!(
            "restoring from {url} needs the `object-store` feature, which this build lacks"
        )))
    }
}

/// [`restore`] through a given storage (crash simulation).
pub fn restore_with(
    storage: Arc<dyn Storage>,
    src: &Path,
    dest: &Path,
    target: RestoreTarget,
) -> Result<RestoreReport> {
    restore_watching(storage, src, dest, target, &Watch::new())
}

/// [`restore_with`], reporting to (and stopped by) `watch`.
fn restore_watching(
    storage: Arc<dyn Storage>,
    src: &Path,
    dest: &Path,
    target: RestoreTarget,
    watch: &Watch,
) -> Result<RestoreReport> {
    let started = Instant::now();
    if storage.exists(dest) {
        return Err(Error::InvalidArgument(format!(
            "restore destination {} already exists",
            dest.display()
        )));
    }
    if is_inside(dest, src) {
        return Err(Error::InvalidArgument(format!(
            "restore destination {} lies inside the store {} it restores: the new store would become part of it",
            dest.display(),
            src.display()
        )));
    }
    restore_staged(&storage, dest, target, started, watch, |working, staging, report| {
        stage_local(working, watch, src, staging, target, report)
    })
}

/// A restore into `dest` (checked not to exist) through a staging directory beside it, which
/// `stage` fills with the arena of a base image and the log after it, returning the source's
/// control data and that base image; then the common end of every restore (cut, replay, new
/// timeline, publish). A restore that fails leaves nothing behind.
///
/// Everything up to the publish goes through `watch`'s stoppable form of `storage` (which
/// `stage` is given to use); the removal of a failed staging directory and the publish go
/// through `storage` itself, so that a stop can neither leave a staging directory behind nor
/// come between `dest`'s appearance and its directory's sync.
pub(crate) fn restore_staged(
    storage: &Arc<dyn Storage>,
    dest: &Path,
    target: RestoreTarget,
    started: Instant,
    watch: &Watch,
    stage: impl FnOnce(&Arc<dyn Storage>, &Path, &mut RestoreReport) -> Result<(Control, ArchiveHeader)>,
) -> Result<RestoreReport> {
    if storage.exists(dest) {
        return Err(Error::InvalidArgument(format!(
            "restore destination {} already exists",
            dest.display()
        )));
    }
    // Held until the staging directory is renamed into place or removed: a restore that was
    // killed leaves it, and the next restore into `dest` removes it (src/restore/scratch.rs).
    let scratch = scratch::Scratch::beside(storage, dest, "restoring");
    let staging = scratch.path().to_path_buf();
    let mut report = RestoreReport::default();
    let working = watch.stoppable(storage);
    watch.enter(RestorePhase::Planning, 0);
    let result = working
        .create_dir_all(&staging.join("wal"))
        .and_then(|()| working.create_dir_all(&staging.join("arena")))
        .context(|| format!("creating {}", staging.display()))
        .and_then(|()| stage(&working, &staging, &mut report))
        .and_then(|(control, base)| finish(&working, watch, &staging, target, &control, &base, report))
        .and_then(|report| publish(storage, &staging, dest, report));
    match result {
        Ok(mut report) => {
            report.duration = started.elapsed();
            Ok(report)
        }
        Err(error) => {
            // A restore that fails leaves nothing behind.
            scratch::remove_tree(storage.as_ref(), &staging);
            Err(error)
        }
    }
}

/// True if `path` is `dir` or lies under it, once both are absolute and, as far as they exist,
/// free of symbolic links (`s/archive/r` and `./s/../s/r` both lie inside `s`).
fn is_inside(path: &Path, dir: &Path) -> bool {
    fn resolved(path: &Path) -> PathBuf {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        // Canonicalise the longest prefix that exists, then add the rest back.
        let mut existing = absolute.as_path();
        let mut rest = Vec::new();
        while !existing.exists() {
            let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                return absolute.clone();
            };
            rest.push(name.to_os_string());
            existing = parent;
        }
        let mut out = existing.canonicalize().unwrap_or_else(|_| existing.to_path_buf());
        out.extend(rest.iter().rev());
        out
    }
    resolved(path).starts_with(resolved(dir))
}

/// Stages the arena of the base image `target` needs and the log after it from the store or
/// archive at `src`.
fn stage_local(
    storage: &Arc<dyn Storage>,
    watch: &Watch,
    src: &Path,
    staging: &Path,
    target: RestoreTarget,
    report: &mut RestoreReport,
) -> Result<(Control, ArchiveHeader)> {
    let (_, control) = ControlFile::open(storage.as_ref(), src)?;
    let listing = archive::list(storage.as_ref(), src, false)?;
    let base = pick_base(&listing, target, src)?;
    // Live segments are copied in the kernel, which may share their extents (a reflink): only
    // archived ones, decoded and written, surely take room.
    let (first, last, live) = log_to_stage(storage, src, &listing, &base, &control)?;
    let archived = (first..=last).filter(|n| !live.contains(n)).count() as u64;
    let log_bytes = archived * control.segment_size_bytes;
    room_for_the_restore(storage, staging, &base, &control, target, log_bytes)?;
    let mut clock = Instant::now();
    stage_arena(storage, watch, staging, &listing, &base, &control)?;
    report.phase_done("stage arena", &mut clock);
    stage_log(storage, watch, src, staging, &listing, &base, &control, report)?;
    report.phase_done("stage log", &mut clock);
    Ok((control, base))
}

/// The end of a restore whose staging directory holds a base image's arena and the log after
/// it: the cut, the replay, the new timeline (then [`publish`]).
fn finish(
    storage: &Arc<dyn Storage>,
    watch: &Watch,
    staging: &Path,
    target: RestoreTarget,
    control: &Control,
    base: &ArchiveHeader,
    mut report: RestoreReport,
) -> Result<RestoreReport> {
    report.base_image_lsn = Lsn(base.first_lsn.get());
    let mut clock = Instant::now();
    let staged = Control {
        sequence: 0,
        checkpoint_lsn: Lsn(base.first_lsn.get()),
        checkpoint_end_lsn: Lsn(base.end_lsn.get()),
        redo_lsn: Lsn(base.first_lsn.get()),
        next_txn_id: base.next_txn_id.get(),
        checkpoint_us: base.first_us.get(),
        truncate_lsn: Lsn(base.truncate_lsn.get()),
        // The staged arena is the base image's, not the source's files of today; the restored
        // store's first checkpoint records its own extent.
        extent: None,
        ..control.clone()
    };
    ControlFile::create(storage.as_ref(), staging, &staged)?;
    watch.enter(RestorePhase::FindCut, 0);
    // Latest replays the whole staged log: recovery's own scan finds its end, so the log is
    // not scanned once more for a cut.
    let cut = if target == RestoreTarget::Latest {
        None
    } else {
        let cut = find_cut(storage, staging, &staged, target)?;
        apply_cut(storage, staging, &staged, cut)?;
        Some(cut)
    };
    report.phase_done("find cut", &mut clock);
    watch.enter(RestorePhase::Replay, 0);
    let (end_of_history, scan) = replay(storage, staging, &mut report)?;
    report.phase_done("replay", &mut clock);
    let (end, last_included) = match cut {
        Some(cut) => (cut.end, cut.last_included),
        None => (scan.end_lsn, scan.last_record_lsn.unwrap_or(staged.checkpoint_lsn)),
    };
    report.target_lsn = last_included;
    report.wal_bytes = end.0.saturating_sub(base.first_lsn.get());
    watch.enter(RestorePhase::NewTimeline, 0);
    start_timeline(storage, staging, &staged, end_of_history, &mut report)?;
    report.phase_done("new timeline", &mut clock);
    Ok(report)
}

/// Makes the restored store appear whole at `dest`: one rename of the staging directory, and
/// the sync of its parent.
fn publish(
    storage: &Arc<dyn Storage>,
    staging: &Path,
    dest: &Path,
    mut report: RestoreReport,
) -> Result<RestoreReport> {
    let mut clock = Instant::now();
    match storage.rename(staging, dest) {
        Ok(()) => {}
        // A storage that renames files only (the crash simulator) gets the tree moved file by
        // file; on a real file system the single rename above is what makes `dest` appear whole.
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => move_tree(storage, staging, dest)?,
        Err(e) => {
            return Err(Error::io(
                format!("renaming {} to {}", staging.display(), dest.display()),
                e,
            ));
        }
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    {
        storage
            .sync_dir(parent)
            .context(|| format!("syncing directory {}", parent.display()))?;
    }
    report.phase_done("publish", &mut clock);
    Ok(report)
}

/// The newest base image at or before the target.
pub(crate) fn pick_base(listing: &archive::Listing, target: RestoreTarget, src: &Path) -> Result<ArchiveHeader> {
    let oldest = listing.bases.first().map(|b| b.0).ok_or_else(|| {
        Error::NotFound(format!(
            "{} holds no base image: point-in-time restore needs the archive (Options::archive)",
            src.join(archive::ARCHIVE_DIR).display()
        ))
    })?;
    let fits = |b: &ArchiveHeader| match target {
        RestoreTarget::Latest => true,
        // A base image is fuzzy: its pages may hold changes logged up to its checkpoint's end
        // record, and a cut before that record could not undo them.
        RestoreTarget::Lsn(lsn) => b.end_lsn.get() <= lsn.0,
        RestoreTarget::Time(time) => b.first_us.get() <= micros(time),
    };
    listing.bases.iter().rev().map(|b| b.0).find(fits).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "the target is before the oldest retained base image (checkpoint at LSN {}, {})",
            oldest.first_lsn.get(),
            utc_text(oldest.first_us.get())
        ))
    })
}

/// Microseconds since the Unix epoch as an RFC 3339 UTC instant with microseconds, as
/// `--time` takes it ("2026-12-06T19:04:23.504986Z"): the proleptic Gregorian calendar from a
/// day count (eras of 400 years, 146,097 days, counted from 0000-03-01).
fn utc_text(us: u64) -> String {
    const US_PER_DAY: u64 = 86_400_000_000;
    let (days, of_day_us) = (us / US_PER_DAY, us % US_PER_DAY);
    let from_march_0000 = days + 719_468;
    let (era, day_of_era) = (from_march_0000 / 146_097, from_march_0000 % 146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    let seconds = of_day_us / 1_000_000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        seconds / 3_600,
        seconds / 60 % 60,
        seconds % 60,
        of_day_us % 1_000_000
    )
}

fn micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Writes the base image's arena files into the staging directory.
pub(crate) fn stage_arena(
    storage: &Arc<dyn Storage>,
    watch: &Watch,
    staging: &Path,
    listing: &archive::Listing,
    base: &ArchiveHeader,
    control: &Control,
) -> Result<()> {
    let path = listing
        .bases
        .iter()
        .find(|b| b.0.first_lsn == base.first_lsn)
        .map(|b| b.1.clone())
        .expect("picked from the listing");
    stage_arena_from(storage, watch, staging, base, control, &path, |sink| {
        archive::decode_streamed(storage.as_ref(), &path, sink)
    })
}

/// Writes the arena files of the base image `base` (named `path` in errors) into the staging
/// directory, as `decode` hands its contents over a block at a time.
pub(crate) fn stage_arena_from(
    storage: &Arc<dyn Storage>,
    watch: &Watch,
    staging: &Path,
    base: &ArchiveHeader,
    control: &Control,
    path: &Path,
    decode: impl FnOnce(&mut dyn FnMut(&[u8]) -> Result<()>) -> Result<ArchiveHeader>,
) -> Result<()> {
    let (catalog, vector) = (base.catalog_files.get() as u64, base.vector_files.get() as u64);
    let file_bytes = control.segment_size_bytes;
    let mismatch = || Error::corrupted_file(path, "base image size does not match its arena files");
    if Some(base.raw_len.get()) != (catalog + vector).checked_mul(file_bytes)
        || base.segment_size_bytes.get() != control.segment_size_bytes
    {
        return Err(mismatch());
    }
    let names = (0..catalog)
        .map(|n| arena_file_name(Space::Catalog, n))
        .chain((0..vector).map(|n| arena_file_name(Space::Vector, n)));
    let mut files = Vec::new();
    for name in names {
        let path = staging.join("arena").join(name);
        let file = storage
            .open(&path, true)
            .context(|| format!("creating {}", path.display()))?;
        files.push((path, file));
    }
    // Decoded a block at a time straight into the arena files: an arena need not fit in memory.
    watch.enter(RestorePhase::StageArena, base.raw_len.get());
    let mut offset = 0u64;
    let decoded = decode(&mut |mut block: &[u8]| {
        while !block.is_empty() {
            // The header read now may differ from the listed one if `src` changed meanwhile.
            let (path, file) = files.get((offset / file_bytes) as usize).ok_or_else(mismatch)?;
            let within = offset % file_bytes;
            let n = (file_bytes - within).min(block.len() as u64) as usize;
            file.write_at(&block[..n], within)
                .context(|| format!("writing {}", path.display()))?;
            (block, offset) = (&block[n..], offset + n as u64);
            watch.add(n as u64);
        }
        Ok(())
    })?;
    if offset != base.raw_len.get() || decoded.first_lsn != base.first_lsn {
        return Err(mismatch());
    }
    for (path, file) in &files {
        file.sync_data().context(|| format!("syncing {}", path.display()))?;
    }
    Ok(())
}

/// Copies the log the base image needs (live copies preferred, else archived) into staging.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_log(
    storage: &Arc<dyn Storage>,
    watch: &Watch,
    src: &Path,
    staging: &Path,
    listing: &archive::Listing,
    base: &ArchiveHeader,
    control: &Control,
    report: &mut RestoreReport,
) -> Result<()> {
    let segment_bytes = control.segment_size_bytes;
    let (first, last, live) = log_to_stage(storage, src, listing, base, control)?;
    let live_dir = src.join("wal");
    watch.enter(RestorePhase::StageLog, (last - first + 1) * segment_bytes);
    for segment_no in first..=last {
        let dest_path = staging.join("wal").join(segment_file_name(segment_no));
        if live.contains(&segment_no) {
            // Copied without a sync, as every file of the staged log (`write_scratch_file`).
            let live_path = live_dir.join(segment_file_name(segment_no));
            storage
                .copy_file(&live_path, &dest_path)
                .context(|| format!("copying {} to {}", live_path.display(), dest_path.display()))?;
            report.segments_live += 1;
        } else if let Some((_, path, _)) = listing.segments.iter().find(|s| s.0 == segment_no) {
            let file = archive::decode(path, &archive::read_file(storage.as_ref(), path)?)?;
            if file.contents.len() as u64 != segment_bytes || file.header.segment_no.get() != segment_no {
                return Err(Error::corrupted_file(
                    path,
                    "archived segment has the wrong size or number",
                ));
            }
            write_scratch_file(storage, &dest_path, &file.contents)?;
            report.segments_from_archive += 1;
        } else {
            return Err(Error::corrupted_file(
                src.join(archive::ARCHIVE_DIR).join(archive::wal_file_name(segment_no)),
                format!("log segment {segment_no} is missing from the archive and the live log"),
            ));
        }
        watch.add(segment_bytes);
    }
    let epoch_path = live_dir.join("EPOCH");
    if storage.exists(&epoch_path) {
        let bytes = archive::read_file(storage.as_ref(), &epoch_path)?;
        write_scratch_file(
            storage,
            &staging.join("wal").join("EPOCH"),
            &crate::wal::epoch_without_horizon(&bytes),
        )?;
    }
    Ok(())
}

/// The log segments a restore from `base` stages, `first..=last`, and those of them the source's
/// live log holds.
fn log_to_stage(
    storage: &Arc<dyn Storage>,
    src: &Path,
    listing: &archive::Listing,
    base: &ArchiveHeader,
    control: &Control,
) -> Result<(u64, u64, Vec<u64>)> {
    let first = base.truncate_lsn.get() / control.segment_size_bytes;
    let live_dir = src.join("wal");
    let live: Vec<u64> = storage
        .list(&live_dir)
        .context(|| format!("listing {}", live_dir.display()))?
        .iter()
        .filter_map(|n| segment_file_name_to_number(n))
        .collect();
    let archived = listing.segments.iter().map(|s| s.0);
    let last = live.iter().copied().chain(archived).max().unwrap_or(first).max(first);
    Ok((first, last, live))
}

/// Refuses a restore the file system holding `staging` has no room for, before it writes
/// anything: it needs at least the arena it replays into and the log it decodes (`log_bytes`),
/// both there at once and each written whole (the new timeline's first base image comes after
/// the staged log is gone). The arena is the base image's, and for `Latest` at least the one
/// the source's last checkpoint recorded (an arena never shrinks below the files its pages
/// use). An estimate from below, so that no restore that fits is refused.
pub(crate) fn room_for_the_restore(
    storage: &Arc<dyn Storage>,
    staging: &Path,
    base: &ArchiveHeader,
    control: &Control,
    target: RestoreTarget,
    log_bytes: u64,
) -> Result<()> {
    let Ok(Some(free_bytes)) = storage.available_bytes(staging) else {
        return Ok(());
    };
    let checkpointed_bytes = match (&control.extent, target) {
        (Some(extent), RestoreTarget::Latest) => {
            let files = u64::from(extent.files[0]) + u64::from(extent.files[1]);
            files.saturating_mul(control.segment_size_bytes)
        }
        _ => 0,
    };
    let arena_bytes = base.raw_len.get().max(checkpointed_bytes);
    let needed_bytes = arena_bytes.saturating_add(log_bytes);
    if free_bytes >= needed_bytes {
        return Ok(());
    }
    let mib = |bytes: u64| bytes as f64 / (1u64 << 20) as f64;
    Err(Error::DiskFull {
        context: format!(
            "checking the room for the restore in {}: it needs at least {:.1} MiB (the arena, {:.1} MiB, and \
             the log it decodes, {:.1} MiB); {:.1} MiB are free",
            staging.parent().unwrap_or(staging).display(),
            mib(needed_bytes),
            mib(arena_bytes),
            mib(log_bytes),
            mib(free_bytes)
        ),
    })
}

fn segment_file_name_to_number(name: &str) -> Option<u64> {
    crate::wal::segment::parse_segment_file_name(name)
}

/// Where the staged log is cut: the first byte not included, and the last record included.
#[derive(Clone, Copy, Debug)]
struct Cut {
    at: Option<Lsn>,
    end: Lsn,
    last_included: Lsn,
}

fn wal_config(control: &Control) -> Result<WalConfig> {
    let geometry =
        Geometry::new(control.page_size_bytes, control.segment_size_bytes).map_err(Error::InvalidArgument)?;
    let identity = LogIdentity {
        store_id: control.store_id,
        timeline: control.timeline,
    };
    Ok(WalConfig::new(geometry, identity, SyncMode::Never))
}

/// Reads the staged log from the base image's checkpoint to find where the target falls.
fn find_cut(storage: &Arc<dyn Storage>, staging: &Path, staged: &Control, target: RestoreTarget) -> Result<Cut> {
    let (wal, scan) = Wal::open_read_only(
        storage.clone(),
        &staging.join("wal"),
        wal_config(staged)?,
        Some(staged.checkpoint_lsn),
        RecoveryMode::TolerateTornTail,
    )?;
    let mut reader = wal.verified_reader(staged.checkpoint_lsn);
    let mut last_included = staged.checkpoint_lsn;
    while let Some(record) = reader.next_record()? {
        let beyond = match target {
            RestoreTarget::Latest => false,
            RestoreTarget::Lsn(lsn) => record.lsn > lsn,
            RestoreTarget::Time(time) => {
                record.header.kind == Kind::Commit as u8 && record.header.timestamp_us.get() > micros(time)
            }
        };
        if beyond {
            return Ok(Cut {
                at: Some(record.lsn),
                end: record.lsn,
                last_included,
            });
        }
        last_included = record.lsn;
    }
    if let RestoreTarget::Lsn(lsn) = target
        && lsn > scan.end_lsn
    {
        // Not silently `Latest`: an LSN past the end is a mistake (another store's, a typo),
        // and a restore "to" it would claim a point the log never reached.
        return Err(Error::InvalidArgument(format!(
            "LSN {} is beyond the end of the log, which is at LSN {}: pass an LSN at or before it",
            lsn.0, scan.end_lsn.0
        )));
    }
    Ok(Cut {
        at: None,
        end: scan.end_lsn,
        last_included,
    })
}

/// Zeroes the staged log from the cut to the end of its segment and drops later segments.
fn apply_cut(storage: &Arc<dyn Storage>, staging: &Path, staged: &Control, cut: Cut) -> Result<()> {
    let Some(at) = cut.at else { return Ok(()) };
    let segment_bytes = staged.segment_size_bytes;
    let (segment_no, offset) = (at.0 / segment_bytes, at.0 % segment_bytes);
    let dir = staging.join("wal");
    let path = dir.join(segment_file_name(segment_no));
    let file = storage
        .open(&path, false)
        .context(|| format!("opening {}", path.display()))?;
    file.write_at(&vec![0u8; (segment_bytes - offset) as usize], offset)
        .context(|| format!("writing {}", path.display()))?;
    file.sync_data().context(|| format!("syncing {}", path.display()))?;
    for name in storage.list(&dir).context(|| format!("listing {}", dir.display()))? {
        if segment_file_name_to_number(&name).is_some_and(|n| n > segment_no) {
            storage
                .remove_file(&dir.join(&name))
                .context(|| format!("removing {name}"))?;
        }
    }
    Ok(())
}

/// Recovers the staged store (redo to the cut, undo of what was open there); returns the end
/// of its log after the closing checkpoint, and what recovery's scan found.
fn replay(storage: &Arc<dyn Storage>, staging: &Path, report: &mut RestoreReport) -> Result<(Lsn, ScanReport)> {
    // The staged log is scratch (deleted by `start_timeline`): recovery need not sync what it
    // read, nor the records it appends. The arena and the control file are synced as ever.
    let scratch_log: Arc<dyn Storage> = Arc::new(Adapted::scratch_under(storage.clone(), &staging.join("wal")));
    let options = staging_options(&scratch_log, false);
    let store = Store::open(staging, options)?;
    let recovery = store.recovery_report();
    report.records_redone = recovery.records_redone;
    report.rolled_back = recovery.losers.clone();
    let scan = recovery.scan.clone();
    store.close()?;
    let (_, control) = ControlFile::open(storage.as_ref(), staging)?;
    Ok((control.checkpoint_end_lsn, scan))
}

fn staging_options(storage: &Arc<dyn Storage>, archive: bool) -> Options {
    Options {
        storage: storage.clone(),
        recovery: RecoveryMode::TolerateTornTail,
        archive,
        checkpoint_interval_bytes: 0,
        background_io: false,
        sync: SyncMode::Never,
        ..Options::default()
    }
}

/// Starts the restored store's own history: a new timeline whose log begins in the segment
/// after every LSN its pages carry, so its records can never be mixed up with the source's.
fn start_timeline(
    storage: &Arc<dyn Storage>,
    staging: &Path,
    staged: &Control,
    end: Lsn,
    report: &mut RestoreReport,
) -> Result<()> {
    let (_, recovered) = ControlFile::open(storage.as_ref(), staging)?;
    let wal_dir = staging.join("wal");
    for name in storage
        .list(&wal_dir)
        .context(|| format!("listing {}", wal_dir.display()))?
    {
        storage
            .remove_file(&wal_dir.join(&name))
            .context(|| format!("removing {name}"))?;
    }
    for name in ["DOUBLEWRITE", crate::format::control::CONTROL_FILE_NAME] {
        let path = staging.join(name);
        if storage.exists(&path) {
            storage
                .remove_file(&path)
                .context(|| format!("removing {}", path.display()))?;
        }
    }
    let timeline = staged
        .timeline
        .checked_add(1)
        .ok_or_else(|| Error::InvalidArgument("timeline exhausted".into()))?;
    let fresh = Control {
        timeline,
        sequence: 0,
        checkpoint_lsn: Lsn::NONE,
        checkpoint_end_lsn: Lsn::NONE,
        redo_lsn: Lsn::NONE,
        truncate_lsn: Lsn::NONE,
        next_txn_id: recovered.next_txn_id,
        ..staged.clone()
    };
    let first_segment = end.0 / staged.segment_size_bytes + 1;
    Wal::create_at(storage.clone(), &wal_dir, wal_config(&fresh)?, first_segment)?.close()?;
    ControlFile::create(storage.as_ref(), staging, &fresh)?;
    storage
        .sync_dir(staging)
        .context(|| format!("syncing directory {}", staging.display()))?;
    // The first open takes the first checkpoint of the new history (and its base image).
    Store::open(staging, staging_options(storage, true))?.close()?;
    report.timeline = timeline;
    Ok(())
}

/// Writes a file the restore reads back and deletes before `dest` appears (the staged log),
/// without a sync: a crash before `dest` appears leaves only a staging directory, which no
/// store ever opens, and a file deleted before writeback never costs the device a write.
fn write_scratch_file(storage: &Arc<dyn Storage>, path: &Path, bytes: &[u8]) -> Result<Arc<dyn StorageFile>> {
    let file = storage
        .open(path, true)
        .context(|| format!("creating {}", path.display()))?;
    file.write_at(bytes, 0)
        .context(|| format!("writing {}", path.display()))?;
    Ok(file)
}

/// Moves a directory tree file by file, syncing each directory.
fn move_tree(storage: &Arc<dyn Storage>, from: &Path, to: &Path) -> Result<()> {
    storage
        .create_dir_all(to)
        .context(|| format!("creating {}", to.display()))?;
    for name in storage.list(from).context(|| format!("listing {}", from.display()))? {
        let (source, target) = (from.join(&name), to.join(&name));
        if storage.list(&source).is_ok() {
            move_tree(storage, &source, &target)?;
        } else {
            storage
                .rename(&source, &target)
                .context(|| format!("moving {}", source.display()))?;
        }
    }
    storage
        .sync_dir(to)
        .context(|| format!("syncing directory {}", to.display()))?;
    storage
        .remove_dir(from)
        .context(|| format!("removing {}", from.display()))
}

#[cfg(test)]
mod tests {
    use super::utc_text;

    #[test]
    fn utc_text_is_the_calendar_instant_across_leap_days_and_centuries() {
        // Expected values from Python's datetime.
        for (us, text) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (946_684_799_500_000, "1999-12-31T23:59:59.500000Z"),
            (951_868_799_999_999, "2000-02-29T23:59:59.999999Z"),
            (1_796_583_863_504_986, "2026-12-06T19:04:23.504986Z"),
            (4_107_499_200_000_000, "2100-02-28T12:00:00.000000Z"),
            (4_107_542_400_000_000, "2100-03-01T00:00:00.000000Z"),
            (13_574_566_923_000_004, "2400-02-29T01:02:03.000004Z"),
        ] {
            assert_eq!(utc_text(us), text, "{us} µs");
        }
    }
}
