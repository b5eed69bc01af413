//! The write-ahead log: preallocated, memory-mapped segment files of fixed-size pages.
//!
//! - `format`: the on-disk structures; `view`: decoding at an address; `scan`: the end of the
//!   log on open; `writer`: laying records out; `segment`: the files; `reader`: iteration.
//! - Appends copy into an in-memory tail under a short lock (`tail`) and return the LSN.
//! - A flush takes the `io` lock, swaps the tail out (appends go on meanwhile), writes it with
//!   pwrite and, for durability, fdatasyncs every segment it touched. Committers that find a
//!   flush under way queue on `io`; the next one takes everything appended meanwhile, so one
//!   fdatasync serves them all (group commit).
//! - With background threads, a preallocator keeps the next segment and a spare ready, and a
//!   writer thread takes the write-outs (every `write_out_bytes`) off the appenders and starts
//!   a commit's sync while its committer publishes (`start_commit`). Without them (the crash
//!   simulator) the appender writes out inline, deterministically.
//! - Readers read the segments' shared read-only mappings below `written_lsn`.

mod epoch;
pub mod format;
mod reader;
mod scan;
pub mod segment;
pub mod view;
mod writer;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Condvar, Mutex, RwLock};

use zerocopy::FromBytes;

use crate::error::{IoContext, Result};
use crate::storage::Storage;
use crate::{Error, Lsn, RecoveryMode};

pub use format::{Geometry, LogIdentity, RECORD_HEADER_BYTES, RECORD_MAX_BYTES, RecordHeader};
pub use reader::{Record, WalReader};
pub use scan::{ScanReport, SkippedRange, TornTail};
use segment::{Segment, SegmentDir};
use view::LogView;
pub use writer::RecordSpec;
use writer::{Layout, Tail};

/// When a commit's log bytes become durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// A commit returns only after its bytes are durable (fdatasync). Concurrent committers
    /// share one flush.
    #[default]
    Always,
    /// A background flusher makes the log durable every interval: a crash loses at most the
    /// commits of the last interval, never a part of one.
    Interval(Duration),
    /// Durable only at checkpoints, `sync()` and close.
    Never,
}

/// How to configure a log.
#[derive(Clone, Debug)]
pub struct WalConfig {
    pub geometry: Geometry,
    pub identity: LogIdentity,
    pub sync: SyncMode,
    /// Hand the tail to the OS (pwrite, no sync) once it holds this many bytes.
    pub write_out_bytes: usize,
    /// Prepare segments on a background thread (default). Without it every storage operation
    /// happens on a caller's thread, in an order a seed reproduces (crash simulation).
    pub background: bool,
    /// The log belongs to a store of format minor ≥ 1, whose files are all required: its
    /// epoch file (a reader checks it too), and the segment after the one holding the end of
    /// the log whenever the end lies in that segment's last page or a record there runs on
    /// (the successor rule, which such writers keep), so a missing last segment is damage, not
    /// a shorter log. Off for logs of minor 0, which did not keep the rule, and for logs read
    /// without their store (inspection of bare segments).
    pub required_files: bool,
}

impl WalConfig {
    /// A configuration with the default write-out threshold.
    pub fn new(geometry: Geometry, identity: LogIdentity, sync: SyncMode) -> WalConfig {
        WalConfig {
            geometry,
            identity,
            sync,
            write_out_bytes: 256 << 10,
            background: true,
            required_files: false,
        }
    }
}

/// The records a segment holds (for archive headers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    pub first_lsn: Lsn,
    pub end_lsn: Lsn,
    pub first_us: u64,
    pub last_us: u64,
}

/// The tail may grow to this before appenders wait for a write-out.
const TAIL_MAX_BYTES: usize = 64 << 20;

struct IoState {
    spare: Vec<u8>,
    unsynced: BTreeSet<u64>,
}

struct Shared {
    config: WalConfig,
    epoch: u32,
    /// False until this open's epoch is durable in `EPOCH`: it is written before the first byte
    /// this open appends reaches a segment, so an open that appends nothing writes nothing.
    epoch_durable: AtomicBool,
    /// The end of the log when it was opened: nothing was appended while the end is here.
    opened_at: u64,
    read_only: bool,
    dir: SegmentDir,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    installed_max: AtomicU64,
    install_lock: Mutex<()>,
    tail: Mutex<Tail>,
    io: Mutex<IoState>,
    written_lsn: AtomicU64,
    durable_lsn: AtomicU64,
    /// The records the open scan checked whole (see `Wal::verified_reader`).
    crc_checked: Range<u64>,
    poisoned: AtomicBool,
    shutdown: Mutex<bool>,
    wake: Condvar,
    /// Set by an append that finds `write_out_bytes` in the tail; the writer thread clears it
    /// and writes the tail out (background threads only).
    write_out_wanted: AtomicBool,
    write_out_wake: Condvar,
    /// One past the highest commit record a committer asked the writer thread to make durable
    /// early (`Wal::start_commit`).
    sync_wanted: AtomicU64,
    /// True while a committer leads a group-commit flush.
    flush_leader: Mutex<bool>,
    flush_done: Condvar,
    /// Committers inside `flush_through`, and records appended since the last tail swap: a new
    /// leader gives the other committers a moment to append before it takes the tail.
    committers: AtomicUsize,
    records_in_tail: AtomicUsize,
}

/// The write-ahead log.
pub struct Wal {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir.path())
            .field("end_lsn", &self.end_lsn())
            .field("durable_lsn", &self.durable_lsn())
            .finish()
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Wal {
    /// Creates an empty log in `dir` (created if missing; it must hold no segments).
    pub fn create(storage: Arc<dyn Storage>, dir: &Path, config: WalConfig) -> Result<Wal> {
        Wal::create_at(storage, dir, config, 0)
    }

    /// Creates an empty log whose first segment is `first_segment` (a restored store starts
    /// its new timeline past every LSN its pages already carry).
    pub fn create_at(storage: Arc<dyn Storage>, dir: &Path, config: WalConfig, first_segment: u64) -> Result<Wal> {
        storage
            .create_dir_all(dir)
            .context(|| format!("creating {}", dir.display()))?;
        let segment_dir = SegmentDir::new(storage.clone(), dir, config.geometry)?;
        if !segment_dir.list_segments()?.is_empty() {
            return Err(Error::AlreadyExists);
        }
        // The first segment is zero-filled, not allocated: nothing waits for it yet, and a new
        // store's first commits are often small ones, which would each pay for extent
        // conversions at their syncs in an allocated segment (segment.rs).
        segment_dir.ensure_spares(1)?;
        let first = segment_dir.install(first_segment)?;
        epoch::write(storage.as_ref(), dir, 1, config.identity.store_id)?;
        let start = config.geometry.segment_base(first_segment);
        let wal = Wal::start(segment_dir, config, vec![first], start, 1, false, 0..0)?;
        wal.shared.epoch_durable.store(true, Ordering::Release);
        Ok(wal)
    }

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
        for segment in segments.values() {
            // After a process crash the page cache may hold log bytes that never reached the
            // disk; recovery must not build on them, so make everything it read durable first.
            segment
                .file
                .sync_data()
                .context(|| format!("syncing {}", segment.path.display()))?;
        }
        // A segment found here may have been installed by a run whose directory sync failed
        // (or that was dropped before it): its name must be durable before anything it holds
        // is acknowledged again.
        segment_dir.sync_dir()?;
        // The new epoch is made durable before the first byte appended reaches a segment (see
        // `Shared::flush_locked`): every byte a crashed run left after the end of the log
        // carries an older epoch and can never be read as live.
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

    fn start(
        dir: SegmentDir,
        config: WalConfig,
        segments: Vec<Arc<Segment>>,
        end: u64,
        epoch: u32,
        read_only: bool,
        crc_checked: Range<u64>,
    ) -> Result<Wal> {
        let installed_max = segments
            .iter()
            .map(|s| s.segment_no)
            .max()
            .expect("a log has a segment");
        let sync = config.sync;
        assert!(
            config.background || !matches!(sync, SyncMode::Interval(_)),
            "Interval flushes on a thread"
        );
        let shared = Arc::new(Shared {
            epoch,
            epoch_durable: AtomicBool::new(false),
            opened_at: end,
            read_only,
            dir,
            segments: RwLock::new(segments.into_iter().map(|s| (s.segment_no, s)).collect()),
            installed_max: AtomicU64::new(installed_max),
            install_lock: Mutex::new(()),
            tail: Mutex::new(Tail::new(end)),
            io: Mutex::new(IoState {
                spare: Vec::new(),
                unsynced: BTreeSet::new(),
            }),
            written_lsn: AtomicU64::new(end),
            durable_lsn: AtomicU64::new(end),
            crc_checked,
            poisoned: AtomicBool::new(false),
            shutdown: Mutex::new(false),
            wake: Condvar::new(),
            write_out_wanted: AtomicBool::new(false),
            write_out_wake: Condvar::new(),
            sync_wanted: AtomicU64::new(0),
            flush_leader: Mutex::new(false),
            flush_done: Condvar::new(),
            committers: AtomicUsize::new(0),
            records_in_tail: AtomicUsize::new(0),
            config,
        });
        let mut threads = Vec::new();
        if shared.config.background {
            threads.push(spawn_named("vellum-wal-prealloc", &shared, preallocator)?);
            threads.push(spawn_named("vellum-wal-writer", &shared, writer)?);
        }
        if let SyncMode::Interval(every) = sync {
            threads.push(spawn_named("vellum-wal-flush", &shared, move |s| flusher(s, every))?);
        }
        Ok(Wal { shared, threads })
    }

    /// The page and segment sizes.
    pub fn geometry(&self) -> Geometry {
        self.shared.config.geometry
    }

    /// The store id and timeline the log belongs to.
    pub fn identity(&self) -> LogIdentity {
        self.shared.config.identity
    }

    /// The epoch of this open of the log.
    pub fn epoch(&self) -> u32 {
        self.shared.epoch
    }

    /// The sync mode.
    pub fn sync_mode(&self) -> SyncMode {
        self.shared.config.sync
    }

    /// The end of the log: where the next record will be appended (after padding).
    pub fn end_lsn(&self) -> Lsn {
        Lsn(self.shared.tail.lock().pos)
    }

    /// Every log byte below this is durable.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.shared.durable_lsn.load(Ordering::Acquire))
    }

    /// Every log byte below this has been handed to the files (readable through the mappings).
    pub fn written_lsn(&self) -> Lsn {
        Lsn(self.shared.written_lsn.load(Ordering::Acquire))
    }

    /// Appends a record and returns its LSN. The record is durable once `durable_lsn()` is
    /// past it; see [`Wal::commit`].
    pub fn append(&self, spec: &RecordSpec, payload: &[&[u8]]) -> Result<Lsn> {
        self.append_with_end(spec, payload).map(|(lsn, _)| lsn)
    }

    /// Appends a record and returns its LSN and end address.
    pub fn append_with_end(&self, spec: &RecordSpec, payload: &[&[u8]]) -> Result<(Lsn, u64)> {
        let shared = &*self.shared;
        shared.check_open()?;
        let payload_bytes: usize = payload.iter().map(|p| p.len()).sum();
        if payload_bytes > RECORD_MAX_BYTES as usize - RECORD_HEADER_BYTES {
            return Err(Error::InvalidArgument(format!(
                "a log record holds at most {} payload bytes, not {payload_bytes}",
                RECORD_MAX_BYTES as usize - RECORD_HEADER_BYTES
            )));
        }
        assert!(spec.kind != 0, "record kind 0 is reserved for zeroed space");
        let (lsn, end, tail_bytes) = {
            let mut tail = shared.tail.lock();
            let rollback = tail.pos;
            let layout = shared.layout();
            layout.advance_to_record_start(&mut tail);
            let lsn = tail.pos;
            let durable = shared.durable_lsn.load(Ordering::Acquire);
            let end = layout.put_record(&mut tail, spec, durable, payload);
            if let Err(error) = shared.ensure_segments_through(end) {
                tail.truncate_to(rollback);
                return Err(error);
            }
            shared.records_in_tail.fetch_add(1, Ordering::AcqRel);
            (lsn, end, tail.buf.len())
        };
        shared.after_append(end, tail_bytes)?;
        Ok((Lsn(lsn), end))
    }

    /// Applies the sync mode to a commit record at `lsn`: with `Always`, returns once it is
    /// durable (sharing one flush with concurrent committers); otherwise returns at once.
    pub fn commit(&self, lsn: Lsn) -> Result<()> {
        match self.shared.config.sync {
            SyncMode::Always => self.flush_through(lsn),
            SyncMode::Interval(_) | SyncMode::Never => Ok(()),
        }
    }

    /// Lets the writer thread start making the commit record at `lsn` durable while the caller
    /// does other work (a committer publishing its changes) before `commit(lsn)` waits for it.
    /// A hint: without background threads or with another sync mode it does nothing.
    pub fn start_commit(&self, lsn: Lsn) {
        let shared = &*self.shared;
        if !shared.config.background || shared.config.sync != SyncMode::Always {
            return;
        }
        if shared.sync_wanted.fetch_max(lsn.get() + 1, Ordering::AcqRel) <= lsn.get() {
            shared.wake_writer();
        }
    }

    /// Returns once the record at `lsn` (and everything before it) is durable.
    ///
    /// Group commit: one committer at a time leads a flush, taking everything appended so far;
    /// the others wait on a condition variable and all wake when it ends. Those it covered
    /// return; one of the rest leads the next flush, covering every record appended meanwhile.
    pub fn flush_through(&self, lsn: Lsn) -> Result<()> {
        let shared = &*self.shared;
        shared.committers.fetch_add(1, Ordering::AcqRel);
        let result = self.lead_or_follow(lsn);
        shared.committers.fetch_sub(1, Ordering::AcqRel);
        result
    }

    fn lead_or_follow(&self, lsn: Lsn) -> Result<()> {
        let shared = &*self.shared;
        loop {
            if shared.durable_lsn.load(Ordering::Acquire) > lsn.get() {
                return Ok(());
            }
            shared.check_open()?;
            {
                let mut leading = shared.flush_leader.lock();
                if shared.durable_lsn.load(Ordering::Acquire) > lsn.get() {
                    return Ok(());
                }
                if *leading {
                    shared.flush_done.wait(&mut leading);
                    continue;
                }
                *leading = true;
            }
            shared.gather_committers();
            let result = {
                let mut io = shared.io.lock();
                // The writer thread may have made it durable while this waited for `io`.
                if shared.durable_lsn.load(Ordering::Acquire) > lsn.get() {
                    Ok(())
                } else {
                    shared.flush_locked(&mut io, true)
                }
            };
            *shared.flush_leader.lock() = false;
            shared.flush_done.notify_all();
            result?;
        }
    }

    /// Stops the log as an I/O error does: every later append, flush and sync fails with
    /// `Error::Closed` until the store is reopened. For an owner whose state the log can no
    /// longer describe (a transaction whose rollback could not be logged).
    pub fn poison(&self) {
        self.shared.poisoned.store(true, Ordering::Release);
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<()> {
        let shared = &*self.shared;
        shared.check_open()?;
        let mut io = shared.io.lock();
        shared.flush_locked(&mut io, true)
    }

    /// Hands everything appended so far to the files (no sync), so readers see it.
    pub fn write_out(&self) -> Result<()> {
        let shared = &*self.shared;
        shared.check_open()?;
        let mut io = shared.io.lock();
        shared.flush_locked(&mut io, false)
    }

    /// A reader over the records from `from` (a record start, or the end of one) up to what has
    /// been written out when it is created.
    pub fn reader(&self, from: Lsn) -> WalReader {
        let limit = self.shared.written_lsn.load(Ordering::Acquire);
        WalReader::new(self.shared.clone(), from.get(), limit)
    }

    /// A reader for the passes of recovery over the log the open scan just checked: records that
    /// the scan found valid, checksum included, are not checksummed again. Only for readers
    /// that finish before any segment is recycled (recovery, restore): the bytes below the end
    /// of the scanned log never change until then.
    pub fn verified_reader(&self, from: Lsn) -> WalReader {
        self.reader(from).with_crc_checked(self.shared.crc_checked.clone())
    }

    /// A reader starting at the oldest record still in the log.
    pub fn reader_from_start(&self) -> WalReader {
        let start = self.first_lsn();
        self.reader(start)
    }

    /// The address scanning starts at for the oldest segment present.
    pub fn first_lsn(&self) -> Lsn {
        let segments = self.shared.segments.read();
        let oldest = *segments.keys().next().expect("a log has a segment");
        let limit = self.shared.written_lsn.load(Ordering::Acquire);
        let view = self.shared.view(&segments, limit);
        Lsn(first_record_start(&view, oldest))
    }

    /// The segment numbers in the log, oldest first.
    pub fn segment_numbers(&self) -> Vec<u64> {
        self.shared.segments.read().keys().copied().collect()
    }

    /// The path of a segment file.
    pub fn segment_path(&self, segment_no: u64) -> PathBuf {
        self.shared.dir.path().join(segment::segment_file_name(segment_no))
    }

    /// Retires every segment that lies wholly before `lsn` (they are recycled as spares).
    /// Returns how many were retired.
    pub fn release_before(&self, lsn: Lsn) -> Result<usize> {
        let shared = &*self.shared;
        shared.check_open()?;
        assert!(
            lsn.get() <= shared.written_lsn.load(Ordering::Acquire),
            "release only written log"
        );
        let retired = self.detach_before(lsn)?;
        let count = retired.len();
        for segment in retired {
            shared.dir.retire(segment)?;
        }
        if count > 0 {
            shared.dir.sync_dir()?;
        }
        Ok(count)
    }

    /// Takes every segment wholly before `lsn` out of the log (readers created later no longer
    /// see them) and returns them; their files stay in place until [`Wal::recycle`].
    pub fn detach_before(&self, lsn: Lsn) -> Result<Vec<Arc<Segment>>> {
        let shared = &*self.shared;
        shared.check_open()?;
        assert!(
            lsn.get() <= shared.written_lsn.load(Ordering::Acquire),
            "release only written log"
        );
        let keep_from = shared.config.geometry.segment_of(lsn.get());
        let mut segments = shared.segments.write();
        let numbers: Vec<u64> = segments.range(..keep_from).map(|(&n, _)| n).collect();
        Ok(numbers.iter().filter_map(|n| segments.remove(n)).collect())
    }

    /// Recycles a detached segment (renamed to a spare, reused once no reader holds it).
    pub fn recycle(&self, segment: Arc<Segment>) -> Result<()> {
        self.shared.dir.retire(segment)?;
        self.shared.dir.sync_dir()
    }

    /// The records of `segment` (detached or not): the first record starting in it, the end of
    /// the last, and their timestamps. `None` if no record starts in it.
    pub fn segment_summary(&self, segment: &Arc<Segment>) -> Option<SegmentSummary> {
        let shared = &*self.shared;
        let mut segments = shared.segments.read().clone();
        segments.insert(segment.segment_no, segment.clone());
        let limit = shared.written_lsn.load(Ordering::Acquire);
        let view = shared.view(&segments, limit);
        let segment_end = shared.config.geometry.segment_base(segment.segment_no + 1);
        let mut pos = first_record_start(&view, segment.segment_no);
        let (mut floor, mut scratch, mut summary) = (0u32, Vec::new(), None::<SegmentSummary>);
        while let view::Step::Start(at) = view.step(pos, &mut floor) {
            if at >= segment_end {
                break;
            }
            let view::Decoded::Record { header, end, .. } = view.decode(at, floor, &mut scratch) else {
                break;
            };
            let ts = header.timestamp_us.get();
            let s = summary.get_or_insert(SegmentSummary {
                first_lsn: Lsn(at),
                end_lsn: Lsn(end),
                first_us: ts,
                last_us: ts,
            });
            s.end_lsn = Lsn(end);
            s.last_us = ts;
            floor = header.epoch.get();
            pos = end;
        }
        summary
    }

    /// Flushes, makes the log durable and stops the background threads. The rest of the last
    /// page is zeroed, so a later open finds a clean end even in a recycled segment.
    pub fn close(mut self) -> Result<()> {
        let result = if self.shared.poisoned.load(Ordering::Acquire) || self.shared.read_only || !self.appended() {
            Ok(())
        } else {
            self.sync().and_then(|()| self.zero_rest_of_page())
        };
        self.stop_threads();
        result
    }

    /// Makes the log durable and zeroes the rest of its last page (what `close` does, for an
    /// owner that cannot give the `Wal` up, such as a store closing).
    pub fn finish(&self) -> Result<()> {
        if !self.appended() {
            // Nothing to make durable, and the end is clean already: the open found it so
            // (a torn tail is erased when the log is opened).
            return Ok(());
        }
        self.sync()?;
        self.zero_rest_of_page()
    }

    /// True once this open has appended a record.
    pub fn appended(&self) -> bool {
        self.shared.tail.lock().pos != self.shared.opened_at
    }

    fn zero_rest_of_page(&self) -> Result<()> {
        let shared = &*self.shared;
        let _io = shared.io.lock();
        let pos = shared.tail.lock().pos;
        let geometry = shared.config.geometry;
        if geometry.is_segment_start(pos) || pos.is_multiple_of(geometry.page_bytes()) {
            return Ok(());
        }
        let segments = shared.segments.read();
        let segment = segments
            .get(&geometry.segment_of(pos))
            .expect("the end lies in an installed segment");
        let zeros = vec![0u8; (geometry.page_end(pos) - pos) as usize];
        let offset = geometry.offset_in_segment(pos);
        segment
            .file
            .write_at(&zeros, offset)
            .context(|| format!("writing {}", segment.path.display()))?;
        segment
            .file
            .sync_data()
            .context(|| format!("syncing {}", segment.path.display()))
    }

    fn stop_threads(&mut self) {
        *self.shared.shutdown.lock() = true;
        self.shared.wake.notify_all();
        self.shared.write_out_wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

impl Shared {
    fn layout(&self) -> Layout<'_> {
        Layout {
            geometry: &self.config.geometry,
            identity: &self.config.identity,
            epoch: self.epoch,
        }
    }

    fn view<'a>(&self, segments: &'a BTreeMap<u64, Arc<Segment>>, limit: u64) -> LogView<'a> {
        LogView {
            geometry: self.config.geometry,
            identity: self.config.identity,
            segments,
            limit,
            crc_checked: 0..0,
        }
    }

    /// A new flush leader waits (at most `GATHER_MAX`) until the tail holds as many records as
    /// there are committers waiting, so committers that a flush just released can append their
    /// next record and share the next flush instead of forming a group of their own. A lone
    /// committer never waits: its own record already meets the count.
    fn gather_committers(&self) {
        const GATHER_MAX: Duration = Duration::from_micros(50);
        let started = std::time::Instant::now();
        while self.records_in_tail.load(Ordering::Acquire) < self.committers.load(Ordering::Acquire)
            && started.elapsed() < GATHER_MAX
        {
            std::thread::yield_now();
        }
    }

    /// Wakes the writer thread. The lock makes the wake-up impossible to miss: the writer
    /// checks what is wanted under it before it waits.
    fn wake_writer(&self) {
        let _writer_checks_under = self.shutdown.lock();
        self.write_out_wake.notify_one();
    }

    /// True if the writer thread has something to do (never once the log is poisoned: a sync
    /// that failed would otherwise be retried in a busy loop).
    fn writer_wanted(&self) -> bool {
        !self.poisoned.load(Ordering::Acquire)
            && (self.write_out_wanted.load(Ordering::Acquire)
                || self.sync_wanted.load(Ordering::Acquire) > self.durable_lsn.load(Ordering::Acquire))
    }

    fn check_open(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::InvalidArgument("the log was opened read-only".into()));
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Closed(
                "the WAL stopped after an I/O error; reopen the store".into(),
            ));
        }
        Ok(())
    }

    /// Makes sure every segment up to the one holding byte `end - 1` is installed. Runs under
    /// the tail lock; the preallocator normally has done it already.
    fn ensure_segments_through(&self, end: u64) -> Result<()> {
        let needed = needed_segment(&self.config.geometry, end);
        if self.installed_max.load(Ordering::Acquire) >= needed {
            return Ok(());
        }
        self.install_through(needed)
    }

    /// Installs segments up to `needed`: one rename and a directory sync each, from a spare.
    fn install_through(&self, needed: u64) -> Result<()> {
        let _installing = self.install_lock.lock();
        while self.installed_max.load(Ordering::Acquire) < needed {
            let next = self.installed_max.load(Ordering::Acquire) + 1;
            let segment = match self.dir.install(next) {
                Ok(segment) => segment,
                // No room for a spare: nothing was renamed, a later append may try again.
                Err(error @ Error::DiskFull { .. }) => return Err(error),
                // Anything else may have failed after the spare took the segment's name (a
                // directory sync that failed): the install cannot be redone, so the log stops.
                Err(error) => {
                    self.poisoned.store(true, Ordering::Release);
                    return Err(error);
                }
            };
            self.segments.write().insert(next, segment);
            self.installed_max.store(next, Ordering::Release);
        }
        Ok(())
    }

    fn after_append(&self, end: u64, tail_bytes: usize) -> Result<()> {
        let geometry = &self.config.geometry;
        let half = geometry.segment_size_bytes / 2;
        if geometry.offset_in_segment(end) >= half
            && self.installed_max.load(Ordering::Acquire) <= geometry.segment_of(end)
        {
            self.wake.notify_all();
        }
        if tail_bytes >= TAIL_MAX_BYTES {
            let mut io = self.io.lock();
            return self.flush_locked(&mut io, false);
        }
        if tail_bytes < self.config.write_out_bytes {
            return Ok(());
        }
        if self.config.background {
            // The writer thread takes it: appenders never wait for a pwrite.
            if !self.write_out_wanted.swap(true, Ordering::AcqRel) {
                self.wake_writer();
            }
            return Ok(());
        }
        if let Some(mut io) = self.io.try_lock() {
            return self.flush_locked(&mut io, false);
        }
        Ok(())
    }

    /// Writes the tail out and, with `sync`, makes it durable. Holds `io`; appends go on.
    fn flush_locked(&self, io: &mut IoState, sync: bool) -> Result<()> {
        self.check_open()?;
        let spare = std::mem::take(&mut io.spare);
        let (start, bytes) = {
            let mut tail = self.tail.lock();
            self.records_in_tail.store(0, Ordering::Release);
            tail.take(spare)
        };
        let end = start + bytes.len() as u64;
        let result = self
            .ensure_epoch_durable(&bytes)
            .and_then(|()| self.write_and_sync(io, start, &bytes, sync));
        io.spare = bytes;
        io.spare.clear();
        if let Err(error) = result {
            self.poisoned.store(true, Ordering::Release);
            self.erase_unsynced(end);
            return Err(error);
        }
        self.written_lsn.store(end, Ordering::Release);
        if sync {
            self.durable_lsn.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Makes this open's epoch durable before the first bytes it appended are written.
    fn ensure_epoch_durable(&self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() || self.epoch_durable.load(Ordering::Acquire) {
            return Ok(());
        }
        epoch::write(
            self.dir.storage().as_ref(),
            self.dir.path(),
            self.epoch,
            self.config.identity.store_id,
        )?;
        self.epoch_durable.store(true, Ordering::Release);
        Ok(())
    }

    /// After a failed flush: zeroes the log from the durable end to `end` in the files, best
    /// effort. Those bytes may sit in the page cache without being on disk — a failed sync
    /// loses them for good (the kernel marks them clean: the next sync does not write them), a
    /// failed write may have left a prefix — and an open of the store before a reboot would
    /// read them as log and append acknowledged commits after a hole the disk has. Zeros there
    /// end the log at the durable end instead (the next open syncs them).
    fn erase_unsynced(&self, end: u64) {
        let durable = self.durable_lsn.load(Ordering::Acquire);
        self.written_lsn.fetch_min(durable, Ordering::AcqRel);
        let segments = self.segments.read().clone();
        let _ = erase_garbage(&segments, &self.config.geometry, durable, end);
    }

    fn write_and_sync(&self, io: &mut IoState, start: u64, bytes: &[u8], sync: bool) -> Result<()> {
        let geometry = &self.config.geometry;
        let segments = self.segments.read().clone();
        let mut pos = start;
        let mut rest = bytes;
        while !rest.is_empty() {
            let segment_no = geometry.segment_of(pos);
            let offset = geometry.offset_in_segment(pos);
            let n = rest.len().min((geometry.segment_size_bytes - offset) as usize);
            let segment = segments.get(&segment_no).expect("appends install their segments first");
            segment
                .file
                .write_at(&rest[..n], offset)
                .context(|| format!("writing {}", segment.path.display()))?;
            if !sync {
                // The commit that syncs these bytes later finds them on their way to the
                // device already (a hint: failures show up at that sync).
                let _ = segment.file.start_writeback(offset, n as u64);
            }
            io.unsynced.insert(segment_no);
            pos += n as u64;
            rest = &rest[n..];
        }
        if sync {
            for segment_no in std::mem::take(&mut io.unsynced) {
                if let Some(segment) = segments.get(&segment_no) {
                    segment
                        .file
                        .sync_data()
                        .context(|| format!("syncing {}", segment.path.display()))?;
                }
            }
        }
        Ok(())
    }
}

/// The range of records an open scan checked whole: from its start to the end of the log, or
/// nothing when it skipped damaged ranges (their records must be checked, and found damaged,
/// again by every reader that walks over them).
fn crc_checked(report: &ScanReport) -> Range<u64> {
    if report.skipped.is_empty() {
        report.start_lsn.get()..report.end_lsn.get()
    } else {
        0..0
    }
}

fn spawn_named(
    name: &str,
    shared: &Arc<Shared>,
    body: impl FnOnce(Weak<Shared>) + Send + 'static,
) -> Result<JoinHandle<()>> {
    let weak = Arc::downgrade(shared);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || body(weak))
        .map_err(|e| Error::io("starting a WAL thread", e))
}

/// Keeps the next segment installed and one spare ready, so appends never wait for a file.
fn preallocator(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        {
            let mut stop = shared.shutdown.lock();
            if *stop {
                return;
            }
            shared.wake.wait_for(&mut stop, Duration::from_millis(200));
            if *stop {
                return;
            }
        }
        let end = shared.tail.lock().pos;
        if end == shared.opened_at {
            // An open that appends nothing makes no files (a reader, or a full disk whose
            // owner freed room for this open alone).
            continue;
        }
        let geometry = shared.config.geometry;
        let wanted =
            geometry.segment_of(end) + u64::from(geometry.offset_in_segment(end) >= geometry.segment_size_bytes / 2);
        // Failures here (a full disk) surface on the append that needs the segment.
        if shared.install_through(wanted).is_ok() {
            let _ = shared.dir.ensure_spares(1);
        }
    }
}

/// Writes the tail out whenever an append finds `write_out_bytes` in it, so that appenders
/// never wait for a pwrite and the commit that syncs finds its bytes on their way to the device;
/// and starts the sync of a commit whose committer has other work first (`Wal::start_commit`).
fn writer(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        {
            let mut stop = shared.shutdown.lock();
            if !*stop && !shared.writer_wanted() {
                shared.write_out_wake.wait_for(&mut stop, Duration::from_millis(200));
            }
            if *stop {
                return;
            }
        }
        // A failure poisons the log (flush_locked); the next append or commit reports it.
        let write_out = shared.write_out_wanted.swap(false, Ordering::AcqRel);
        let sync_wanted = shared.sync_wanted.load(Ordering::Acquire);
        if sync_wanted > shared.durable_lsn.load(Ordering::Acquire) {
            let mut io = shared.io.lock();
            if sync_wanted > shared.durable_lsn.load(Ordering::Acquire) {
                let _ = shared.flush_locked(&mut io, true);
            }
        } else if write_out {
            let mut io = shared.io.lock();
            let _ = shared.flush_locked(&mut io, false);
        }
    }
}

/// `SyncMode::Interval`: makes the log durable every `every`.
fn flusher(weak: Weak<Shared>, every: Duration) {
    loop {
        let Some(shared) = weak.upgrade() else { return };
        {
            let mut stop = shared.shutdown.lock();
            if *stop {
                return;
            }
            shared.wake.wait_for(&mut stop, every);
            if *stop {
                return;
            }
        }
        if shared.durable_lsn.load(Ordering::Acquire) < shared.tail.lock().pos {
            let mut io = shared.io.lock();
            let _ = shared.flush_locked(&mut io, true);
        }
    }
}

/// The epoch of this open: above every epoch the log may have used (the epoch file's and any
/// the scan saw), and below `u32::MAX`, so that another open always remains possible: a log
/// one step from exhaustion is refused now, before anything is written, never after it.
fn next_epoch(
    storage: &dyn Storage,
    dir: &Path,
    config: &WalConfig,
    report: &ScanReport,
    mode: RecoveryMode,
) -> Result<u32> {
    let stored = epoch::read(storage, dir, config.identity.store_id, mode, config.required_files)?;
    stored
        .max(report.max_epoch)
        .checked_add(1)
        .filter(|&epoch| epoch < u32::MAX)
        .ok_or_else(|| Error::corrupted_file(dir.join(epoch::EPOCH_FILE_NAME), "the log epoch is exhausted"))
}

/// The last segment an append ending at `end` needs installed: the one holding its last byte,
/// and the next one too when that byte lies in a segment's last page (the successor rule, see
/// [`WalConfig::required_files`]).
fn needed_segment(geometry: &Geometry, end: u64) -> u64 {
    let last = geometry.segment_of(end - 1);
    let last_page = geometry.segment_base(last + 1) - geometry.page_bytes();
    last + u64::from(end > last_page)
}

/// The successor rule, read back: if the end of the log lies in the last page of the last
/// segment present, or a record there runs on past it, the writer had made the next segment
/// before writing those bytes, so its absence is a missing file, not the end of the log.
fn check_successor(view: &LogView<'_>, dir: &Path, report: &ScanReport) -> Result<()> {
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
fn check_identities(segments: &BTreeMap<u64, Arc<Segment>>, dir: &Path, config: &WalConfig) -> Result<()> {
    for (&number, segment) in segments {
        // SAFETY: nothing writes a segment while the log is being opened.
        let bytes = unsafe { segment.map.bytes(0, format::SEGMENT_HEADER_BYTES) };
        if bytes.iter().all(|&b| b == 0) {
            continue;
        }
        let header = format::SegmentHeader::read_from_bytes(bytes).expect("exact size");
        if let Err(format::HeaderFault::Foreign(reason)) = header.check(&config.geometry, &config.identity, number) {
            let path = dir.join(segment::segment_file_name(number));
            return Err(if header.version_major.get() != format::FORMAT_VERSION_MAJOR {
                Error::Incompatible(format!("{}: {reason}; nothing was changed", path.display()))
            } else {
                Error::corrupted_file(path, format!("{reason}, not to this one; nothing was changed"))
            });
        }
    }
    Ok(())
}

fn check_contiguous(dir: &Path, numbers: &[u64]) -> Result<()> {
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
fn first_record_start(view: &LogView<'_>, segment_no: u64) -> u64 {
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
fn check_scan_start(view: &LogView<'_>, lsn: Lsn, oldest: u64) -> Result<u64> {
    let segment_no = view.geometry.segment_of(lsn.get());
    if segment_no < oldest || lsn.get() > view.limit {
        return Err(Error::corrupted_at(
            lsn,
            format!("the log needed from here is missing (oldest segment is {oldest})"),
        ));
    }
    // A record start or end lies in a page's payload or on a page boundary; anything else
    // (inside a page or segment header) is a damaged address, which the scan must not walk from.
    let at = format::align_up(lsn.get());
    if !(view.geometry.in_payload(at) || at.is_multiple_of(view.geometry.page_bytes())) {
        return Err(Error::corrupted_at(
            lsn,
            "the log start lies inside a page or segment header",
        ));
    }
    Ok(lsn.get())
}

/// Zeroes `[end, zero_to)` (a torn tail's garbage) so no later scan can take it for records.
fn erase_garbage(segments: &BTreeMap<u64, Arc<Segment>>, geometry: &Geometry, end: u64, zero_to: u64) -> Result<()> {
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

    fn report(skipped: Vec<SkippedRange>) -> ScanReport {
        ScanReport {
            start_lsn: Lsn(4096),
            end_lsn: Lsn(90_000),
            last_record_lsn: Some(Lsn(89_000)),
            records: 10,
            torn_tail: None,
            skipped,
            zero_to: 90_000,
            max_epoch: 1,
        }
    }

    #[test]
    fn only_a_scan_that_skipped_nothing_spares_later_checksums() {
        assert_eq!(crc_checked(&report(Vec::new())), 4096..90_000, "the scanned range");
        let skip = SkippedRange {
            from: Lsn(8192),
            to: Lsn(12_288),
            reason: "damaged".into(),
        };
        assert!(
            crc_checked(&report(vec![skip])).is_empty(),
            "readers must find a skipped range damaged again to jump over it"
        );
    }
}
