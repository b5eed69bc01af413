//! Opening a log: the segments present and their identities, the scan for the end, the
//! successor rule, the epoch of this open, and erasing a torn tail.

use super::*;
use super::view::Decoded;
use crate::format::wal::RECORD_FLAG_CLOSING;

impl Wal {
    /// Opens the log in `dir`, scanning from `scan_from` (a record start or record end known to
    /// be valid, e.g. a checkpoint's) or, if `None`, from the oldest segment.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: WalConfig,
        scan_from: Option<Lsn>,
        mode: RecoveryMode,
    ) -> Result<(Wal, ScanReport)> {
        let epoch_read = Some(config.required_files);
        let (segment_dir, segments, scanned) =
            Self::scan_dir(storage.clone(), dir, &config, scan_from, mode, false, epoch_read)?;
        let report = scanned.report;
        let scanned_backlog = scanned.backlog;
        let in_use = scanned.in_use.expect("the epoch file was read");
        let epoch = next_epoch(dir, in_use, &report)?;
        segment_dir.adopt_leftover_spares()?;
        let geometry = config.geometry;
        erase_garbage(&segments, &geometry, report.end_lsn.get(), report.zero_to)?;
        // After a process crash the page cache may hold log bytes that never reached the disk;
        // recovery must not build on them, so make everything it read durable first. A log that
        // its last writer closed cleanly needs none of it (FORMAT.md section 12): that writer
        // made every byte below the end durable (its closing record is in the log only if the
        // flush of it succeeded, a failed one erases it), and segment names with it. An open
        // of a cleanly closed store then pays no fdatasync at all (3-8 ms each on a common
        // disk, which flushes its cache even for a clean file).
        if !scanned.clean_close {
            // The segments recovery reads (from the scan's start to the end and the torn
            // tail's zeros): those before were durable when the checkpoint it starts from was
            // taken, and those after hold no byte of the log (a segment installed ahead).
            let read = geometry.segment_of(report.start_lsn.get())
                ..=geometry.segment_of(report.end_lsn.get().max(report.zero_to));
            for segment in segments.values().filter(|s| read.contains(&s.segment_no)) {
                segment
                    .file
                    .sync_data()
                    .context(|| format!("syncing {}", segment.path.display()))?;
            }
            // A segment found here may have been installed by a run whose directory sync
            // failed (or that was dropped before it): its name must be durable before anything
            // it holds is acknowledged again.
            segment_dir.sync_dir()?;
        }
        let segments: Vec<_> = segments.into_values().collect();
        let checked = crc_checked(&report);
        let wal = Wal::start(
            segment_dir,
            config,
            segments,
            report.end_lsn.get(),
            epoch,
            false,
            checked,
        )?;
        *wal.shared.backlog.lock() = scanned_backlog;
        Ok((wal, report))
    }

    /// Opens the log in `dir` for reading only (inspection tools): nothing on disk changes, no
    /// torn tail is erased, and appends are refused.
    pub fn open_read_only(
        storage: Arc<dyn Storage>,
        dir: &Path,
        mut config: WalConfig,
        scan_from: Option<Lsn>,
        mode: RecoveryMode,
    ) -> Result<(Wal, ScanReport)> {
        config.background = false;
        if matches!(config.sync, SyncMode::Interval(_)) {
            config.sync = SyncMode::Never;
        }
        // The epoch is read for its checks (a missing or foreign file is damage to a reader of
        // a store too) and to bound the scan after a clean close; nothing is appended, so no
        // new epoch is taken.
        let epoch_read = config.required_files.then_some(true);
        let (segment_dir, segments, scanned) =
            Self::scan_dir(storage.clone(), dir, &config, scan_from, mode, true, epoch_read)?;
        let report = scanned.report;
        if let Some(in_use) = scanned.in_use {
            next_epoch(dir, in_use, &report)?;
        }
        let segments: Vec<_> = segments.into_values().collect();
        let wal = Wal::start(
            segment_dir,
            config,
            segments,
            report.end_lsn.get(),
            report.max_epoch,
            true,
            crc_checked(&report),
        )?;
        Ok((wal, report))
    }

    /// Maps every segment in `dir`, checks their identities, reads the epoch possibly in use
    /// from `EPOCH` if `epoch_read` says so (`Some(whole)`, see `epoch_file::read`), and scans
    /// the log from `scan_from` to its end (bounded after a clean close: [`scan_after_close`]).
    fn scan_dir(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: &WalConfig,
        scan_from: Option<Lsn>,
        mode: RecoveryMode,
        read_only: bool,
        epoch_read: Option<bool>,
    ) -> Result<(SegmentDir, BTreeMap<u64, Arc<Segment>>, Scanned)> {
        let epoch_storage = storage.clone();
        let segment_dir = if read_only {
            SegmentDir::new_read_only(storage, dir, config.geometry)?
        } else {
            SegmentDir::new(storage, dir, config.geometry)?
        };
        let LiveSegments {
            backlog,
            oldest,
            segments,
        } = Self::open_live_segments(&segment_dir, dir, config, scan_from)?;
        let geometry = config.geometry;
        let newest = *segments.keys().next_back().expect("open_live_segments opens at least one");
        let limit = geometry.segment_base(newest + 1);
        let view = LogView {
            geometry,
            identity: config.identity,
            segments: &segments,
            limit,
            crc_checked: 0..0,
        };
        // What is read after the segments' headers is asked for with them (after a cold
        // start, one wait on the disk rather than three): `EPOCH`, and the log from the scan's
        // start as far as a clean close's records reach.
        let epoch_opened = epoch_read.map(|_| epoch_file::open_ahead(epoch_storage.as_ref(), dir));
        if let Some(from) = scan_from {
            let from = geometry.page_start(from.get());
            will_need(&view, from, limit.min(from.saturating_add(CLOSE_WINDOW_PAGES * geometry.page_bytes())));
        }
        check_identities(&segments, dir, config)?;
        let start = match scan_from {
            Some(lsn) => check_scan_start(&view, lsn, oldest)?,
            None => oldest_record_start(&view, oldest),
        };
        let in_use = match (epoch_read, epoch_opened) {
            (Some(whole), Some(opened)) => {
                Some(epoch_file::read(opened, dir, config.identity.store_id, mode, whole)?)
            }
            _ => None,
        };
        let (report, clean_close) = scan_view(&view, start, mode, in_use)?;
        if let Some(from) = scan_from {
            check_scan_found_start(&report, from, mode)?;
        }
        if config.required_files && !config.beside_writer {
            check_successor(&view, dir, &report)?;
        }
        let scanned = Scanned {
            report,
            clean_close,
            in_use: in_use.map(|i| i.epoch),
            backlog,
        };
        Ok((segment_dir, segments, scanned))
    }

    /// Lists the segments of `segment_dir` (checking that their numbers are contiguous) and
    /// opens those recovery may read: returns the backlog left to the archiver, the oldest
    /// segment opened and the segments opened by number.
    fn open_live_segments(
        segment_dir: &SegmentDir,
        dir: &Path,
        config: &WalConfig,
        scan_from: Option<Lsn>,
    ) -> Result<LiveSegments> {
        let listed = segment_dir.list_segments()?;
        check_contiguous(dir, &listed)?;
        // Segments wholly before `archive_before` are left to the archiver, unopened: no
        // recovery reads them (the checkpoint in force needs no record before it).
        let live_from = config.archive_before.map_or(0, |lsn| config.geometry.segment_of(lsn.get()));
        let (backlog, numbers): (Vec<u64>, Vec<u64>) = listed.into_iter().partition(|&n| n < live_from);
        let Some(&oldest) = numbers.first() else {
            // A log always keeps the segment its end lies in: none at all is a lost log.
            let needed = scan_from.map_or(0, |lsn| config.geometry.segment_of(lsn.get()));
            return Err(Error::corrupted_file(
                dir.join(segment::segment_file_name(needed)),
                "the log has no segments: this one, which holds where recovery starts, is missing",
            ));
        };
        let mut segments = BTreeMap::new();
        for &number in &numbers {
            segments.insert(number, segment_dir.open_segment(number)?);
        }
        // Every header is read next (`check_identities`): asked for at once, after a cold start the reads wait for
        // the disk together rather than one segment after the other.
        for segment in segments.values() {
            segment
                .file
                .will_need(0, crate::format::wal::SEGMENT_HEADER_BYTES as u64);
        }
        Ok(LiveSegments {
            backlog,
            oldest,
            segments,
        })
    }
}

/// What the scan at open found: the report, and whether the log's last writer closed it
/// cleanly (see [`scan_after_close`]).
struct Scanned {
    report: ScanReport,
    clean_close: bool,
    /// The epoch possibly in use by `EPOCH`, if it was read.
    in_use: Option<u32>,
    /// Segments left unopened for the archiver (`WalConfig::archive_before`).
    backlog: Vec<u64>,
}

/// How far past the scan start a clean close's last records may lie for [`scan_after_close`]
/// (its checkpoint-begin and closing checkpoint-end records take one page or two).
const CLOSE_WINDOW_PAGES: u64 = 8;

/// The segments an open reads, and those it leaves to the archiver.
struct LiveSegments {
    /// Segments wholly before `WalConfig::archive_before`, left unopened.
    backlog: Vec<u64>,
    /// The oldest segment opened.
    oldest: u64,
    /// The segments opened, by number: at least one.
    segments: BTreeMap<u64, Arc<Segment>>,
}

/// Scans `view` from `start` to the end of the log; returns the report and whether the log
/// ended at a clean close. With the epoch in use (`in_use`), a log a close left is read only
/// near its end ([`scan_after_close`]); otherwise the scan stops at the horizon `EPOCH` proves.
fn scan_view(
    view: &LogView<'_>,
    start: u64,
    mode: RecoveryMode,
    in_use: Option<epoch_file::InUse>,
) -> Result<(ScanReport, bool)> {
    if let Some(report) = in_use.and_then(|in_use| scan_after_close(view, start, mode, in_use.epoch)) {
        return Ok((report, true));
    }
    let geometry = view.geometry;
    // No open wrote a log page at or past the horizon `EPOCH` proves (see epoch_file.rs): the
    // walk and the look-ahead stop there, where they would otherwise read every page to the
    // end of the last segment file.
    let limit = match in_use.and_then(|i| i.horizon) {
        Some(horizon) => view.limit.min(horizon.max(geometry.page_end(start))),
        None => view.limit,
    };
    let bounded = LogView {
        geometry,
        identity: view.identity,
        segments: view.segments,
        limit,
        crc_checked: 0..0,
    };
    // The whole scan reads every page from `start` to the limit (the walk, then the
    // look-ahead): asked for at once, the reads are queued together rather than waited for one
    // readahead window at a time at each fault.
    will_need(&bounded, geometry.page_start(start), bounded.limit);
    Ok((scan::scan(&bounded, start, mode)?, false))
}

/// The scan of a log whose last open closed it cleanly, or `None` (then the whole scan runs).
///
/// After a clean close the log ends with a checkpoint-end record flagged
/// [`RECORD_FLAG_CLOSING`]: the open that wrote it (its epoch) appended nothing after it. If
/// that epoch is still the one in use by `EPOCH`, no open has appended since (each makes its
/// epoch durable there before its first byte), and no page after the record's page holds a
/// valid header: every open erases the valid pages its look-ahead finds after the end it
/// recovers to before it appends, and writes pages only up to its own end. The look-ahead of
/// section 12 of FORMAT.md would then read every data page up to the limit (two segments,
/// 128 MiB by default, from the disk when the cache is cold) to find nothing; here it stops a
/// page past the end's page, and its verdict is the same. Any other log (a crash, an older
/// writer, damage near the end) fails a condition below and is scanned whole.
fn scan_after_close(view: &LogView<'_>, start: u64, mode: RecoveryMode, in_use: u32) -> Option<ScanReport> {
    let geometry = view.geometry;
    let window_end = geometry.page_start(start) + CLOSE_WINDOW_PAGES * geometry.page_bytes();
    will_need(view, geometry.page_start(start), view.limit.min(window_end));
    let near = LogView {
        geometry,
        identity: view.identity,
        segments: view.segments,
        limit: view.limit.min(window_end),
        crc_checked: 0..0,
    };
    let report = scan::scan(&near, start, mode).ok()?;
    let end = report.end_lsn.get();
    // The end and the page after its page lie inside the window: the window did not cut the
    // walk or the look-ahead short of what the conditions below rely on.
    if !report.skipped.is_empty() || geometry.page_end(end) + geometry.page_bytes() > near.limit {
        return None;
    }
    let last = report.last_record_lsn?.get();
    let Decoded::Record { header, end: last_end, .. } = near.check(last, 0) else {
        return None;
    };
    let closing = header.kind == crate::format::record::Kind::CheckpointEnd as u8
        && header.flags & RECORD_FLAG_CLOSING != 0
        && header.epoch.get() == in_use
        && last_end <= end;
    closing.then_some(report)
}

/// Asks the OS to read the log's bytes `[from, to)` (page-aligned) into the page cache now, in
/// one request per segment, before the scan touches them through the mappings: a fault on a
/// cold mapping reads the whole readahead window around it instead (8 MiB on a common virtual
/// disk), several times over for a walk that touches a few pages. A hint: nothing changes if
/// the OS declines.
fn will_need(view: &LogView<'_>, from: u64, to: u64) {
    let geometry = view.geometry;
    let mut pos = from;
    while pos < to {
        let segment_no = geometry.segment_of(pos);
        let segment_end = geometry.segment_base(segment_no + 1).min(to);
        if let Some(segment) = view.segments.get(&segment_no) {
            let offset = geometry.offset_in_segment(pos) as usize;
            let len_bytes = ((segment_end - pos) as usize).min(segment.map.len().saturating_sub(offset));
            if len_bytes > 0 {
                // SAFETY: the range lies inside the live mapping of the segment (bounded by its
                // length above), which outlives the call, and starts at a page boundary of the
                // log (a multiple of the OS page size in a mapping that starts at one). The
                // advice only starts reads into the page cache: no byte of the mapping changes.
                let _ = unsafe { libc::madvise(segment.map.ptr_at(offset).cast(), len_bytes, libc::MADV_WILLNEED) };
            }
        }
        pos = segment_end;
    }
}

/// The epoch of this open: above every epoch the log may have used (`in_use`, the epoch file's,
/// and any the scan saw), and below `u32::MAX`, so that another open always remains possible:
/// a log one step from exhaustion is refused now, before anything is written, never after it.
pub(super) fn next_epoch(dir: &Path, in_use: u32, report: &ScanReport) -> Result<u32> {
    in_use
        .max(report.max_epoch)
        .checked_add(1)
        .filter(|&epoch| epoch < u32::MAX)
        .ok_or_else(|| Error::corrupted_file(dir.join(epoch_file::EPOCH_FILE_NAME), "the log epoch is exhausted"))
}

/// The last segment an append ending at `end` needs installed: the one holding its last byte,
/// and the next one too when that byte lies in a segment's last page (the successor rule, see
/// [`WalConfig::required_files`]).
pub(super) fn needed_segment(geometry: &Geometry, end: u64) -> u64 {
    let last = geometry.segment_of(end - 1);
    let last_page = geometry.segment_base(last + 1) - geometry.page_bytes();
    last + u64::from(end > last_page)
}

/// The successor rule, read back: if the end of the log lies in the last page of the last
/// segment present, or a record there runs on past it, the writer had made the next segment
/// before writing those bytes, so its absence is a missing file, not the end of the log.
pub(super) fn check_successor(view: &LogView<'_>, dir: &Path, report: &ScanReport) -> Result<()> {
    let geometry = view.geometry;
    let end = report.end_lsn.get();
    let last_present = geometry.segment_of(view.limit - 1);
    let runs_on = view.record_runs_past_limit(end);
    if needed_segment(&geometry, end.max(1)) > last_present || runs_on {
        let missing = last_present + 1;
        return Err(Error::corrupted_file(
            dir.join(segment::segment_file_name(missing)),
            format!(
                "log segment {missing} is missing: the log reaches it (its end is at {end}{})",
                if runs_on { ", inside a record that runs on" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// Checks the header of every segment present, not only of those the scan crosses: a segment
/// file swapped in from another store (or written by a newer format) is refused by name, even
/// where the scan would start inside it and, its records lining up, never read its header.
/// Zeros and stale headers (a segment not started yet) pass; a damaged one is the scan's to
/// judge (a torn header write of a segment just begun).
///
/// The headers are read with `pread`, not through the mappings: a fault on a mapping reads
/// the whole readahead window around it (megabytes) from a cold disk, for 128 bytes here.
pub(super) fn check_identities(segments: &BTreeMap<u64, Arc<Segment>>, dir: &Path, config: &WalConfig) -> Result<()> {
    for (&number, segment) in segments {
        let mut header_bytes = [0u8; crate::format::wal::SEGMENT_HEADER_BYTES];
        segment
            .file
            .read_at(&mut header_bytes, 0)
            .context(|| format!("reading {}", segment.path.display()))?;
        let bytes = &header_bytes[..];
        if crate::zeros::all_zero(bytes) {
            continue;
        }
        let header = crate::format::wal::SegmentHeader::read_from_bytes(bytes).expect("exact size");
        if let Err(crate::format::wal::HeaderFault::Foreign(reason)) = header.check(&config.geometry, &config.identity, number) {
            let path = dir.join(segment::segment_file_name(number));
            return Err(if header.version_major.get() != crate::format::wal::FORMAT_VERSION_MAJOR {
                Error::Incompatible(format!("{}: {reason}; nothing was changed", path.display()))
            } else {
                Error::corrupted_file(path, format!("{reason}, not to this one; nothing was changed"))
            });
        }
    }
    Ok(())
}

pub(super) fn check_contiguous(dir: &Path, numbers: &[u64]) -> Result<()> {
    for pair in numbers.windows(2) {
        if pair[1] != pair[0] + 1 {
            return Err(Error::corrupted_file(
                dir.join(segment::segment_file_name(pair[0] + 1)),
                format!("segment {} is missing between {} and {}", pair[0] + 1, pair[0], pair[1]),
            ));
        }
    }
    Ok(())
}

/// Where scanning starts in segment `segment_no`: its base, unless its first page continues a
/// record whose start lies in a released segment; then the first record start after the end
/// of that continuation, however many pages it fills.
pub(super) fn first_record_start(view: &LogView<'_>, segment_no: u64) -> u64 {
    let geometry = view.geometry;
    let base = geometry.segment_base(segment_no);
    let first_page = base + geometry.page_bytes();
    let continues = matches!(view.page_header(first_page, 0), Ok(h) if h.rem_len.get() > 0);
    if !continues {
        // A page that begins with a record, zeros or damage: the scan from the base validates
        // the segment header and reports what it finds.
        return base;
    }
    let segment_end = geometry.segment_base(segment_no + 1).min(view.limit);
    let mut page = first_page;
    while page < segment_end {
        match view.page_header(page, 0) {
            Ok(header) if header.rem_len.get() > 0 => {
                if let Some((start, _)) = view.resync_in_page(page) {
                    return start;
                }
            }
            // The continuation ended exactly at the page end (or left no room for a header):
            // the next page begins with a record, zeros or damage.
            _ => return page,
        }
        page = geometry.next_data_page(page);
    }
    page
}

/// Where reading the log starts without a given start: the first record start of the oldest
/// segment present. A record longer than a segment, begun in a released one, may fill every
/// data page of the oldest and run on: the search then goes on into the next segment, and so
/// on, until a page begins with a record (or zeros, or damage) or a continuation ends in one
/// (FORMAT.md 11, "Where to start").
pub(super) fn oldest_record_start(view: &LogView<'_>, oldest: u64) -> u64 {
    let geometry = view.geometry;
    let mut segment_no = oldest;
    loop {
        let start = first_record_start(view, segment_no);
        let next_base = geometry.segment_base(segment_no + 1);
        let continued_through = start == next_base + geometry.page_bytes();
        if !continued_through || next_base >= view.limit {
            return start;
        }
        segment_no += 1;
    }
}

/// Checks that a caller-supplied scan start lies in a segment present.
pub(super) fn check_scan_start(view: &LogView<'_>, lsn: Lsn, oldest: u64) -> Result<u64> {
    let segment_no = view.geometry.segment_of(lsn.get());
    if segment_no < oldest || lsn.get() > view.limit {
        return Err(Error::corrupted_at(
            lsn,
            format!("the log needed from here is missing (oldest segment is {oldest})"),
        ));
    }
    // A record start or end lies in a page's payload or on a page boundary; anything else
    // (inside a page or segment header) is a damaged address, which the scan must not walk from.
    let at = crate::format::wal::align_up(lsn.get());
    if !(view.geometry.in_payload(at) || at.is_multiple_of(view.geometry.page_bytes())) {
        return Err(Error::corrupted_at(
            lsn,
            "the log start lies inside a page or segment header",
        ));
    }
    Ok(lsn.get())
}

/// Refuses a log whose scan from `from` (the checkpoint recovery starts from) found no record
/// there: that checkpoint-begin record was durable before the control file named it (FORMAT.md
/// 16.1), so its absence is damage inside the durable log, not a torn tail: the log lost its
/// tail, or its files and the control file come from different moments (a copy of a store
/// taken file by file while it ran). Refused before the open writes anything (the torn tail's
/// erasure would write into the log). `SkipCorrupted` goes on; recovery reports it.
fn check_scan_found_start(report: &ScanReport, from: Lsn, mode: RecoveryMode) -> Result<()> {
    if report.end_lsn > from || mode == RecoveryMode::SkipCorrupted {
        return Ok(());
    }
    Err(Error::corrupted_at(
        from,
        "the log holds no record where the control file's checkpoint begins: the log lost its \
         tail, or its files and the control file come from different moments",
    ))
}

/// Zeroes `[end, zero_to)` (a torn tail's garbage) so no later scan can take it for records.
pub(super) fn erase_garbage(segments: &BTreeMap<u64, Arc<Segment>>, geometry: &Geometry, end: u64, zero_to: u64) -> Result<()> {
    let mut pos = end;
    let zeros = vec![0u8; geometry.page_size_bytes as usize];
    while pos < zero_to {
        let segment_no = geometry.segment_of(pos);
        let offset = geometry.offset_in_segment(pos);
        let n = (zero_to - pos).min(geometry.page_end(pos) - pos);
        if let Some(segment) = segments.get(&segment_no) {
            segment.write_at(&zeros[..n as usize], offset)?;
        }
        pos += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::wal::LogIdentity;
    use crate::storage::SimStorage;
    use crate::wal::RecordSpec;

    const PAGE_BYTES: u32 = 4096;
    const SEGMENT_PAGES: u64 = 8;

    fn config(sync: SyncMode) -> WalConfig {
        let geometry = Geometry::new(PAGE_BYTES, u64::from(PAGE_BYTES) * SEGMENT_PAGES).unwrap();
        let identity = LogIdentity {
            store_id: 7,
            timeline: 1,
        };
        let mut config = WalConfig::new(geometry, identity, sync);
        // Every storage operation on the caller's thread: the count of them is exact.
        config.background = false;
        config
    }

    fn spec(txn_id: u64) -> RecordSpec {
        RecordSpec {
            kind: 7,
            flags: 0,
            txn_id,
            prev_lsn: 0,
            timestamp_us: 1,
        }
    }

    fn open(sim: &SimStorage, sync: SyncMode) -> (Wal, ScanReport) {
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        Wal::open(storage, Path::new("/wal"), config(sync), None, RecoveryMode::Strict).unwrap()
    }

    fn txns(wal: &Wal) -> Vec<u64> {
        let mut reader = wal.reader_from_start();
        let mut found = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            found.push(record.header.txn_id.get());
        }
        found
    }

    #[test]
    fn an_open_of_a_cleanly_closed_log_that_appends_nothing_changes_and_syncs_nothing() {
        let sim = SimStorage::new(3);
        let (_, begin) = cleanly_closed_log(&sim, 20, 700);
        let before = sim.mutating_ops();
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let cfg = config(SyncMode::Always);
        let (wal, report) = Wal::open(storage, Path::new("/wal"), cfg, Some(Lsn(begin)), RecoveryMode::Strict).unwrap();
        assert_eq!(report.records, 2, "the scan reads the checkpoint's records");
        wal.close().unwrap();
        assert_eq!(
            sim.mutating_ops(),
            before,
            "no write, fdatasync or directory sync: a reader's open costs no device flush"
        );
    }

    #[test]
    fn log_bytes_an_open_read_from_the_page_cache_are_durable_before_its_first_commit() {
        // A run appends across a segment boundary without a sync and dies (a process crash:
        // the page cache keeps its bytes). The next open reads them as log and commits one
        // record durably, in the later segment only; a power failure then keeps a random part
        // of what was never synced. The commit must survive with everything before it: the
        // open's sync of every segment precedes its first append.
        for seed in 0..16 {
            let sim = SimStorage::new(seed);
            let storage: Arc<dyn Storage> = Arc::new(sim.clone());
            let mut unsynced = config(SyncMode::Never);
            unsynced.write_out_bytes = 1; // every append is handed to the files, none synced
            let wal = Wal::create(storage, Path::new("/wal"), unsynced).unwrap();
            for txn in 1..=40 {
                wal.append(&spec(txn), &[&[txn as u8; 700]]).unwrap();
            }
            std::mem::forget(wal); // dies without a close or a sync
            let (wal, report) = open(&sim, SyncMode::Always);
            let first_segment = wal.geometry().segment_of(report.start_lsn.get());
            assert!(
                wal.geometry().segment_of(report.end_lsn.get()) > first_segment,
                "seed {seed}: the unsynced records span two segments"
            );
            let lsn = wal.append(&spec(99), &[b"acknowledged"]).unwrap();
            wal.commit(lsn).unwrap();
            std::mem::forget(wal);
            let rebooted = sim.reboot();
            let (wal, _) = open(&rebooted, SyncMode::Always);
            let found = txns(&wal);
            assert_eq!(
                found.last(),
                Some(&99),
                "seed {seed}: the acknowledged commit survives the power failure: {found:?}"
            );
            assert_eq!(found.len(), 41, "seed {seed}: with every record before it");
        }
    }

    /// Writes a log of `records` records of `size` bytes, then a checkpoint-begin and a closing
    /// checkpoint-end record (what a store's close leaves), and closes it; returns the closing
    /// record's epoch and the begin record's LSN (where a store's open scans from).
    fn cleanly_closed_log(sim: &SimStorage, records: u64, size: usize) -> (u32, u64) {
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let wal = Wal::create(storage, Path::new("/wal"), config(SyncMode::Always)).unwrap();
        for txn in 1..=records {
            wal.append(&spec(txn), &[&vec![txn as u8; size]]).unwrap();
        }
        let begin = RecordSpec {
            kind: crate::format::record::Kind::CheckpointBegin as u8,
            ..spec(0)
        };
        let begin_lsn = wal.append(&begin, &[]).unwrap().get();
        let closing = RecordSpec {
            kind: crate::format::record::Kind::CheckpointEnd as u8,
            flags: RECORD_FLAG_CLOSING,
            ..spec(0)
        };
        let lsn = wal.append(&closing, &[b"closing"]).unwrap();
        wal.commit(lsn).unwrap();
        let epoch = wal.epoch();
        wal.close().unwrap();
        (epoch, begin_lsn)
    }

    fn scan_whole(sim: &SimStorage, from: u64, mode: RecoveryMode) -> ScanReport {
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let cfg = config(SyncMode::Always);
        let (_, _, scanned) = Wal::scan_dir(storage, Path::new("/wal"), &cfg, Some(Lsn(from)), mode, true, None).unwrap();
        scanned.report
    }

    #[test]
    fn after_a_clean_close_the_bounded_scan_reaches_the_whole_scans_verdict() {
        // Ends at every kind of place in a page and across segments, some with bytes left in
        // the rest of the end's page (a close that died before it zeroed them).
        for (records, size) in [(0, 0), (3, 100), (7, 500), (9, 3000), (30, 700), (61, 1500)] {
            for garbage in [false, true] {
                let sim = SimStorage::new(records);
                let (epoch, start) = cleanly_closed_log(&sim, records, size);
                let whole = scan_whole(&sim, start, RecoveryMode::Strict);
                if garbage && !whole.end_lsn.get().is_multiple_of(u64::from(PAGE_BYTES)) {
                    let geometry = config(SyncMode::Always).geometry;
                    let end = whole.end_lsn.get();
                    let path = Path::new("/wal").join(segment::segment_file_name(geometry.segment_of(end)));
                    sim.damage(&path, geometry.offset_in_segment(end) + 8, &[0xAB; 16]).unwrap();
                }
                let whole = scan_whole(&sim, start, RecoveryMode::Strict);
                let storage: Arc<dyn Storage> = Arc::new(sim.clone());
                let cfg = config(SyncMode::Always);
                let (dir, segments, _) =
                    Wal::scan_dir(storage, Path::new("/wal"), &cfg, None, RecoveryMode::Strict, true, None).unwrap();
                let view = LogView {
                    geometry: cfg.geometry,
                    identity: cfg.identity,
                    segments: &segments,
                    limit: cfg.geometry.segment_base(dir.list_segments().unwrap().last().unwrap() + 1),
                    crc_checked: 0..0,
                };
                let bounded = scan_after_close(&view, start, RecoveryMode::Strict, epoch);
                let case = format!("{records} records of {size} bytes, garbage {garbage}");
                assert_eq!(bounded.as_ref(), Some(&whole), "{case}: the bound is taken, with the same verdict");
                assert!(
                    scan_after_close(&view, start, RecoveryMode::Strict, epoch + 1).is_none(),
                    "{case}: a later epoch in use (an open appended since) scans the whole log"
                );
            }
        }
    }

    #[test]
    fn records_a_later_open_appended_after_a_clean_close_are_found_past_a_lost_page() {
        // A clean close, then an open that appended two pages' worth and died; the page right
        // after the closing record was lost. The records after the gap prove nothing, so
        // Strict refuses the ambiguous tail: the open must look past the closing record's
        // page, as it does without a clean close.
        let sim = SimStorage::new(5);
        let _ = cleanly_closed_log(&sim, 3, 100);
        let (wal, report) = open(&sim, SyncMode::Always);
        let end = report.end_lsn.get();
        for txn in 10..100 {
            let lsn = wal.append(&spec(txn), &[&[1u8; 900]]).unwrap();
            wal.commit(lsn).unwrap();
        }
        std::mem::forget(wal);
        // Lost: everything from the end to past the pages a clean close's scan looks at.
        let geometry = config(SyncMode::Always).geometry;
        let lost_to = geometry.page_start(end) + (CLOSE_WINDOW_PAGES + 2) * geometry.page_bytes();
        let mut pos = end;
        while pos < lost_to {
            let path = Path::new("/wal").join(segment::segment_file_name(geometry.segment_of(pos)));
            let n = geometry.page_end(pos) - pos;
            sim.damage(&path, geometry.offset_in_segment(pos), &vec![0u8; n as usize]).unwrap();
            pos += n;
        }
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let strict = Wal::open(storage, Path::new("/wal"), config(SyncMode::Always), None, RecoveryMode::Strict);
        assert!(
            matches!(&strict, Err(crate::Error::Corrupted { .. })),
            "records after the lost page are seen: {:?}",
            strict.map(|(_, r)| r)
        );
    }

    #[test]
    fn a_reader_over_a_stopped_storage_stops_within_its_check_interval() {
        let sim = SimStorage::new(11);
        cleanly_closed_log(&sim, 3000, 16);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::Adapted::stoppable(Arc::new(sim.clone()), stop.clone()));
        let (wal, _) = Wal::open(storage, Path::new("/wal"), config(SyncMode::Never), None, RecoveryMode::Strict).unwrap();
        let mut reader = wal.reader_from_start();
        for _ in 0..10 {
            reader.next_record().unwrap().expect("a record");
        }
        // The log is mapped: reading it touches no file, so only the reader's own check stops it.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut read = 0;
        let stopped = loop {
            match reader.next_record() {
                Ok(Some(_)) => read += 1,
                Ok(None) => break None,
                Err(error) => break Some(error),
            }
        };
        assert!(
            matches!(stopped, Some(Error::Interrupted(_))),
            "stopped, not read to the end: {stopped:?} after {read} records"
        );
        assert!(read < 1024, "within one check interval: {read} records");
    }
}
