//! Opening a log: the segments present and their identities, the scan for the end, the
//! successor rule, the epoch of this open, and erasing a torn tail.

use super::*;

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
        let (segment_dir, segments, report) = Self::scan_dir(storage.clone(), dir, &config, scan_from, mode, false)?;
        let epoch = next_epoch(storage.as_ref(), dir, &config, &report, mode)?;
        segment_dir.adopt_leftover_spares()?;
        let geometry = config.geometry;
        erase_garbage(&segments, &geometry, report.end_lsn.get(), report.zero_to)?;
        // The open's sync of every segment present and of `wal/` (FORMAT.md section 12: the page
        // cache may hold log bytes a crashed run never made durable, and a segment's name may
        // not be durable) is made before the first byte this open appends reaches a segment,
        // with the new epoch (`Shared::ensure_epoch_durable`), not here: nothing recovery
        // derives from those bytes reaches a file before an append (a checkpoint appends its
        // begin record and flushes it before it writes a page), and an open that appends
        // nothing (a reader, a `get`) then pays no fdatasync at all.
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
        let (segment_dir, segments, report) = Self::scan_dir(storage.clone(), dir, &config, scan_from, mode, true)?;
        // The epoch is read for its checks alone (a missing or foreign file is damage to a
        // reader of a store too); nothing is appended, so no new epoch is taken.
        if config.required_files {
            next_epoch(storage.as_ref(), dir, &config, &report, mode)?;
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

    /// Maps every segment in `dir` and scans the log from `scan_from` to its end.
    fn scan_dir(
        storage: Arc<dyn Storage>,
        dir: &Path,
        config: &WalConfig,
        scan_from: Option<Lsn>,
        mode: RecoveryMode,
        read_only: bool,
    ) -> Result<(SegmentDir, BTreeMap<u64, Arc<Segment>>, ScanReport)> {
        let segment_dir = if read_only {
            SegmentDir::new_read_only(storage, dir, config.geometry)?
        } else {
            SegmentDir::new(storage, dir, config.geometry)?
        };
        let numbers = segment_dir.list_segments()?;
        let Some(&oldest) = numbers.first() else {
            // A log always keeps the segment its end lies in: none at all is a lost log.
            let needed = scan_from.map_or(0, |lsn| config.geometry.segment_of(lsn.get()));
            return Err(Error::corrupted_file(
                dir.join(segment::segment_file_name(needed)),
                "the log has no segments: this one, which holds where recovery starts, is missing",
            ));
        };
        check_contiguous(dir, &numbers)?;
        let mut segments = BTreeMap::new();
        for &number in &numbers {
            segments.insert(number, segment_dir.open_segment(number)?);
        }
        let geometry = config.geometry;
        check_identities(&segments, dir, config)?;
        let limit = geometry.segment_base(numbers[numbers.len() - 1] + 1);
        let view = LogView {
            geometry,
            identity: config.identity,
            segments: &segments,
            limit,
            crc_checked: 0..0,
        };
        let start = match scan_from {
            Some(lsn) => check_scan_start(&view, lsn, oldest)?,
            None => first_record_start(&view, oldest),
        };
        let report = scan::scan(&view, start, mode)?;
        if config.required_files {
            check_successor(&view, dir, &report)?;
        }
        Ok((segment_dir, segments, report))
    }

}

/// The epoch of this open: above every epoch the log may have used (the epoch file's and any
/// the scan saw), and below `u32::MAX`, so that another open always remains possible: a log
/// one step from exhaustion is refused now, before anything is written, never after it.
pub(super) fn next_epoch(
    storage: &dyn Storage,
    dir: &Path,
    config: &WalConfig,
    report: &ScanReport,
    mode: RecoveryMode,
) -> Result<u32> {
    let stored = epoch_file::read(storage, dir, config.identity.store_id, mode, config.required_files)?;
    stored
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
pub(super) fn check_identities(segments: &BTreeMap<u64, Arc<Segment>>, dir: &Path, config: &WalConfig) -> Result<()> {
    for (&number, segment) in segments {
        // SAFETY: nothing writes a segment while the log is being opened.
        let bytes = unsafe { segment.map.bytes(0, crate::format::wal::SEGMENT_HEADER_BYTES) };
        if bytes.iter().all(|&b| b == 0) {
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

/// Zeroes `[end, zero_to)` (a torn tail's garbage) so no later scan can take it for records.
pub(super) fn erase_garbage(segments: &BTreeMap<u64, Arc<Segment>>, geometry: &Geometry, end: u64, zero_to: u64) -> Result<()> {
    let mut pos = end;
    let zeros = vec![0u8; geometry.page_size_bytes as usize];
    while pos < zero_to {
        let segment_no = geometry.segment_of(pos);
        let offset = geometry.offset_in_segment(pos);
        let n = (zero_to - pos).min(geometry.page_end(pos) - pos);
        if let Some(segment) = segments.get(&segment_no) {
            segment
                .file
                .write_at(&zeros[..n as usize], offset)
                .context(|| format!("erasing the torn tail of {}", segment.path.display()))?;
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
        let storage: Arc<dyn Storage> = Arc::new(sim.clone());
        let wal = Wal::create(storage, Path::new("/wal"), config(SyncMode::Always)).unwrap();
        for txn in 1..=20 {
            let lsn = wal.append(&spec(txn), &[&[txn as u8; 700]]).unwrap();
            wal.commit(lsn).unwrap();
        }
        wal.close().unwrap();
        let before = sim.mutating_ops();
        let (wal, report) = open(&sim, SyncMode::Always);
        assert_eq!(report.records, 20, "the scan reads the whole log");
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
}
