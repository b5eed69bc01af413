//! The write-ahead log: preallocated, memory-mapped segment files of fixed-size pages.
//!
//! - `format`: the on-disk structures; `view`: decoding at an address; `scan`: the end of the
//!   log on open; `writer`: laying records out; `segment`: the files; `reader`: iteration.
//! - Appends copy into an in-memory tail under a short lock (`tail`) and return the LSN.
//! - A flush takes the `io` lock, swaps the tail out (appends go on meanwhile), writes it with
//!   pwrite and, for durability, fdatasyncs every segment it touched. Committers follow one
//!   leader at a time (group commit, `flush::Group`): the leader waits for the flush in flight
//!   to end, gathers the commits it expects (as many as the last flush served, itself
//!   included: a lone committer never waits), and flushes everything appended meanwhile with
//!   one pwrite and one fdatasync.
//! - With background threads, a preallocator keeps the next segment and a spare ready, and a
//!   writer thread takes the write-outs (every `write_out_bytes`) off the appenders and starts
//!   a lone commit's sync while its committer publishes (`start_commit`). Without them (the
//!   crash simulator) the appender writes out inline, deterministically.
//! - Readers read the segments' shared read-only mappings below `written_lsn`.

mod clock;
mod direct;
mod epoch_file;
pub(crate) use epoch_file::without_horizon as epoch_without_horizon;
mod flush;
mod horizon;
mod open;
mod reader;
mod scan;
pub mod segment;
pub mod view;
mod writer;

use flush::{flusher, preallocator, spawn_named, writer as writer_thread};
use open::{erase_garbage, first_record_start, needed_segment, oldest_record_start};

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Condvar, Mutex, RwLock};

use zerocopy::FromBytes;

use crate::error::{IoContext, Result};
use crate::storage::Storage;
use crate::{Error, Lsn, RecoveryMode, SyncMode};

pub use crate::format::wal::{Geometry, LogIdentity, RECORD_HEADER_BYTES, RECORD_MAX_BYTES};
#[cfg(feature = "testing")]
pub use crate::format::wal::RecordHeader;
pub use reader::{Record, WalReader};
pub use scan::{ScanReport, SkippedRange, TornTail};
pub(crate) use epoch_file::EPOCH_FILE_NAME;
use segment::{Segment, SegmentDir};
use view::LogView;
pub use writer::RecordSpec;
use writer::{Layout, Tail};

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
    /// A writer's open leaves the segments wholly before this LSN (the truncation point of the
    /// checkpoint in force) unopened: no recovery reads them, only the archiver, which a close
    /// did not wait for. [`Wal::detach_before`] hands them out first, opened and checked.
    /// `None` (the default) opens every segment.
    pub archive_before: Option<Lsn>,
    /// The log is read while a writer appends to it (`verify` beside a running store): the
    /// segments listed at the open end this read, and the successor rule is not checked at
    /// their end, since the writer may have made the next segment after the listing. Off (the
    /// default) for every open of a log no writer holds.
    pub beside_writer: bool,
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
            archive_before: None,
            beside_writer: false,
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
    /// The log's last partial block, for flushes past the page cache (see direct.rs).
    direct: direct::DirectTail,
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
    /// Set by a clean close (`Wal::finish`): the preallocator installs no segment ahead any
    /// more, and the close takes back those it had.
    closing: AtomicBool,
    /// Log bytes held back for the records that would undo the running transaction (see
    /// [`Wal::append_reserving`]): every other append leaves room for them past its end
    /// (installed segments or unused spares).
    undo_reserved_bytes: AtomicU64,
    tail: Mutex<Tail>,
    io: Mutex<IoState>,
    /// The horizon durable in `EPOCH` for this open (0 until its epoch is written): no log
    /// byte is written at or past it (see epoch_file.rs). Raised only under `horizon`, once
    /// the slot holding it is synced.
    horizon_durable: AtomicU64,
    horizon: Mutex<horizon::HorizonState>,
    /// The step of the last move (`HorizonState::step_bytes`), read without the lock.
    horizon_step_bytes: AtomicU64,
    /// Moves of the horizon since the open (`CommitStats::horizon_moves`).
    horizon_moves: AtomicU64,
    /// Set by a flush that used half the room below the horizon: the preallocator thread moves
    /// the horizon on before a flush has to (background threads only).
    horizon_wanted: AtomicBool,
    written_lsn: AtomicU64,
    durable_lsn: AtomicU64,
    /// The records the open scan checked whole (see `Wal::verified_reader`).
    crc_checked: Range<u64>,
    poisoned: AtomicBool,
    /// What stopped the log (the first error that poisoned it), told with every refusal after.
    poison_cause: Mutex<Option<String>>,
    shutdown: Mutex<bool>,
    wake: Condvar,
    /// Set by an append that finds `write_out_bytes` in the tail; the writer thread clears it
    /// and writes the tail out (background threads only).
    write_out_wanted: AtomicBool,
    write_out_wake: Condvar,
    /// Group commit: the leader, the commits waiting for a flush, how many to gather.
    group: Mutex<flush::Group>,
    /// Signalled when a leader's flush ends (its followers re-check `durable_lsn`).
    flush_done: Condvar,
    /// Signalled when a commit is announced while a leader leads (a leader gathering on a
    /// contended machine sleeps on it rather than yielding: see [`flush::Group`]).
    announced: Condvar,
    /// Segments the open left unopened for the archiver (see `WalConfig::archive_before`),
    /// in order; all older than every segment of `segments`.
    backlog: Mutex<Vec<u64>>,
    /// Commits acknowledged through [`Wal::commit`] since the open.
    commits: AtomicU64,
    /// fdatasyncs of log segments since the open.
    log_syncs: AtomicU64,
    /// The time records and checkpoints are stamped with (see clock.rs).
    clock: clock::RecordClock,
    /// Of `log_syncs`, the flushes written past the page cache.
    direct_flushes: AtomicU64,
}

/// The write-ahead log.
pub struct Wal {
    shared: Arc<Shared>,
    /// The background threads, started by the first append (an open that only reads, or
    /// recovers nothing, starts none: spawning them was a third of a warm open).
    threads: Mutex<Vec<JoinHandle<()>>>,
    threads_started: AtomicBool,
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
    clock::wall_clock_us()
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
        segment_dir.opened();
        // The first segment is zero-filled, not allocated: nothing waits for it yet, and a new
        // store's first commits are often small ones, which would each pay for extent
        // conversions at their syncs in an allocated segment (segment.rs).
        segment_dir.ensure_spares(1)?;
        let first = segment_dir
            .install(first_segment)
            .map_err(segment::InstallError::into_error)?;
        let start = config.geometry.segment_base(first_segment);
        let horizon = horizon::horizon_past(&config.geometry, start, epoch_file::HORIZON_AHEAD_BYTES);
        epoch_file::write(storage.as_ref(), dir, 1, config.identity.store_id, horizon)?;
        let wal = Wal::start(segment_dir, config, vec![first], start, 1, false, 0..0)?;
        wal.shared.horizon_durable.store(horizon, Ordering::Release);
        wal.shared.epoch_durable.store(true, Ordering::Release);
        Ok(wal)
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
        dir.opened();
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
        let direct_tail = direct::DirectTail::new(end, &config.geometry);
        let shared = Arc::new(Shared {
            epoch,
            epoch_durable: AtomicBool::new(false),
            opened_at: end,
            read_only,
            dir,
            segments: RwLock::new(segments.into_iter().map(|s| (s.segment_no, s)).collect()),
            installed_max: AtomicU64::new(installed_max),
            undo_reserved_bytes: AtomicU64::new(0),
            install_lock: Mutex::new(()),
            closing: AtomicBool::new(false),
            tail: Mutex::new(Tail::new(end)),
            io: Mutex::new(IoState {
                spare: Vec::new(),
                unsynced: BTreeSet::new(),
                direct: direct_tail,
            }),
            horizon_durable: AtomicU64::new(0),
            horizon: Mutex::new(horizon::HorizonState::new()),
            horizon_step_bytes: AtomicU64::new(epoch_file::HORIZON_AHEAD_BYTES),
            horizon_moves: AtomicU64::new(0),
            horizon_wanted: AtomicBool::new(false),
            written_lsn: AtomicU64::new(end),
            durable_lsn: AtomicU64::new(end),
            crc_checked,
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(None),
            shutdown: Mutex::new(false),
            wake: Condvar::new(),
            write_out_wanted: AtomicBool::new(false),
            write_out_wake: Condvar::new(),
            group: Mutex::new(flush::Group::default()),
            flush_done: Condvar::new(),
            announced: Condvar::new(),
            backlog: Mutex::new(Vec::new()),
            commits: AtomicU64::new(0),
            log_syncs: AtomicU64::new(0),
            direct_flushes: AtomicU64::new(0),
            clock: clock::RecordClock::default(),
            config,
        });
        Ok(Wal {
            shared,
            threads: Mutex::new(Vec::new()),
            threads_started: AtomicBool::new(false),
        })
    }

    /// Starts the background threads unless they run already (at the first append).
    fn ensure_threads(&self) -> Result<()> {
        if self.threads_started.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut threads = self.threads.lock();
        if self.threads_started.load(Ordering::Acquire) {
            return Ok(());
        }
        let shared = &self.shared;
        if shared.config.background {
            threads.push(spawn_named("vellum-wal-prealloc", shared, true, preallocator)?);
            threads.push(spawn_named("vellum-wal-writer", shared, false, writer_thread)?);
        }
        if let SyncMode::Interval(every) = shared.config.sync {
            threads.push(spawn_named("vellum-wal-flush", shared, false, move |s| flusher(s, every))?);
        }
        self.threads_started.store(true, Ordering::Release);
        Ok(())
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

    /// The time to stamp a record or a checkpoint with: the wall clock, or the latest time
    /// this log already issued or holds if that is later (records' times never go backwards:
    /// clock.rs).
    pub fn record_time_us(&self) -> u64 {
        self.shared.clock.now_us()
    }

    /// Raises the record clock to `time_us`, a time the log or the control file holds (the
    /// open, after reading them).
    pub fn raise_record_time(&self, time_us: u64) {
        self.shared.clock.raise(time_us);
    }

    /// Moves the wall clock this log stamps records by, by `delta_us` (the project's tests: a
    /// clock that steps back).
    #[cfg(feature = "testing")]
    pub fn shift_clock_for_tests(&self, delta_us: i64) {
        self.shared.clock.shift(delta_us);
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
        self.append_room(spec, payload, Room::KeepReserve)
    }

    /// Appends a record of a transaction that may have to be undone, and holds `undo_bytes`
    /// more log back for that undo (its compensation records): the append fails with
    /// `DiskFull`, having written nothing, unless the installed segments hold the record, the
    /// bytes already held back and `undo_bytes` (a segment that cannot be made means no room).
    /// So a transaction stopped by a full disk can always log its undo: without the room, an
    /// undo that could not be logged would stop the log until a reopen.
    pub fn append_reserving(&self, spec: &RecordSpec, payload: &[&[u8]], undo_bytes: u64) -> Result<Lsn> {
        self.append_room(spec, payload, Room::Reserve(undo_bytes)).map(|(lsn, _)| lsn)
    }

    /// Appends a record of an undo (or the record that ends a transaction) into the log held
    /// back for it: it needs room only for itself.
    pub fn append_undo(&self, spec: &RecordSpec, payload: &[&[u8]]) -> Result<Lsn> {
        self.append_room(spec, payload, Room::UseReserve).map(|(lsn, _)| lsn)
    }

    /// Gives back the log held back for an undo: the transaction committed or ended.
    pub fn release_undo_reserve(&self) {
        self.shared.undo_reserved_bytes.store(0, Ordering::Release);
    }

    fn append_room(&self, spec: &RecordSpec, payload: &[&[u8]], room: Room) -> Result<(Lsn, u64)> {
        let shared = &*self.shared;
        shared.check_open()?;
        self.ensure_threads()?;
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
            let reserved = shared.undo_reserved_bytes.load(Ordering::Acquire);
            let room_end = match room {
                Room::KeepReserve => end + reserved,
                Room::Reserve(undo_bytes) => end + reserved + undo_bytes,
                Room::UseReserve => end,
            };
            // The room held for an undo is installed segments, not merely a spare each: the
            // undo then appends into segments already open and named, and needs nothing that
            // can fail for want of a resource (a descriptor to open a spare with, a directory
            // sync after its rename).
            if let Err(error) = shared.ensure_segments_through(room_end) {
                tail.truncate_to(rollback);
                return Err(error);
            }
            if let Room::Reserve(undo_bytes) = room {
                shared.undo_reserved_bytes.fetch_add(undo_bytes, Ordering::AcqRel);
            }
            (lsn, end, tail.buf.len())
        };
        shared.after_append(end, tail_bytes)?;
        Ok((Lsn(lsn), end))
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
        Lsn(oldest_record_start(&view, oldest))
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
        let mut retired = retired.into_iter();
        while let Some(segment) = retired.next() {
            if let Err(error) = shared.dir.retire(segment.clone()) {
                // Nothing renamed (out of descriptors to check the spares, say): this segment
                // and those after it go back into the log, for the next release to retire.
                let mut segments = shared.segments.write();
                for kept in std::iter::once(segment).chain(retired) {
                    segments.insert(kept.segment_no, kept);
                }
                return Err(error);
            }
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
        let mut detached = self.open_backlog()?;
        let mut segments = shared.segments.write();
        let numbers: Vec<u64> = segments.range(..keep_from).map(|(&n, _)| n).collect();
        detached.extend(numbers.iter().filter_map(|n| segments.remove(n)));
        Ok(detached)
    }

    /// Opens and checks the segments the open left for the archiver (oldest first) and takes
    /// them out of the backlog; on a failure they all stay in it.
    fn open_backlog(&self) -> Result<Vec<Arc<Segment>>> {
        let shared = &*self.shared;
        let mut backlog = shared.backlog.lock();
        if backlog.is_empty() {
            return Ok(Vec::new());
        }
        let mut opened = BTreeMap::new();
        for &number in backlog.iter() {
            opened.insert(number, shared.dir.open_segment(number)?);
        }
        open::check_identities(&opened, shared.dir.path(), &shared.config)?;
        backlog.clear();
        Ok(opened.into_values().collect())
    }

    /// How many segments the open left unopened for the archiver and none has taken yet.
    pub fn backlog_segments(&self) -> usize {
        self.shared.backlog.lock().len()
    }

    /// Recycles a detached segment: renamed to a spare, reused once no reader holds it. The
    /// rename is durable after [`Wal::sync_dir`] (or the next install's directory sync).
    pub fn recycle(&self, segment: Arc<Segment>) -> Result<()> {
        self.shared.dir.retire(segment)
    }

    /// Makes the renames and creations in the log's directory durable.
    pub fn sync_dir(&self) -> Result<()> {
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
        let (mut floor, mut summary) = (0u32, None::<SegmentSummary>);
        while let view::Step::Start(at) = view.step(pos, &mut floor) {
            if at >= segment_end {
                break;
            }
            let view::Decoded::Record { header, end, .. } = view.check(at, floor) else {
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
        self.zero_rest_of_page()?;
        if self.shared.uninstall_ahead()? {
            self.shared.dir.sync_dir()?;
        }
        self.restore_unlinked_segments()?;
        self.shared.dir.trim_spares(1)
    }

    /// Puts back every live segment deleted while the log is open, from its open descriptor:
    /// what was written to it so far; a segment still appended to is written under its name
    /// too from then on (see [`Segment::put_back_if_deleted`]). Each checkpoint and the close
    /// call it, and the preallocator thread does the same every 200 ms at most. Without it a
    /// deleted segment's records went with the process, and the next open refused the store
    /// ("segment … is missing"). Returns how many.
    pub fn restore_unlinked_segments(&self) -> Result<usize> {
        if self.shared.read_only {
            return Ok(0);
        }
        // Under the I/O lock: no flush writes a segment while it is copied.
        let _io = self.shared.io.lock();
        self.shared.put_back_deleted(self.shared.segments.read().values())
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
        segment.write_at(&zeros, offset)?;
        shared.log_syncs.fetch_add(1, Ordering::Relaxed);
        segment.sync_data()
    }

    fn stop_threads(&mut self) {
        *self.shared.shutdown.lock() = true;
        self.shared.wake.notify_all();
        self.shared.write_out_wake.notify_all();
        for thread in self.threads.get_mut().drain(..) {
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

    fn check_open(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::InvalidArgument("the log was opened read-only".into()));
        }
        if self.poisoned.load(Ordering::Acquire) {
            let cause = self.poison_cause.lock().clone().unwrap_or_else(|| "an I/O error".into());
            return Err(Error::Closed(format!("the WAL stopped after {cause}; reopen the store")));
        }
        Ok(())
    }

    /// Stops the log for good (until the store is reopened), remembering the first `cause`.
    fn poison(&self, cause: &Error) {
        self.poison_cause.lock().get_or_insert_with(|| format!("an error ({cause})"));
        self.poisoned.store(true, Ordering::Release);
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
        self.install_locked(needed)
    }

    /// Installs segments up to `needed` ahead of need (the preallocator), unless the log is
    /// closing.
    fn install_ahead(&self, needed: u64) -> Result<()> {
        let _installing = self.install_lock.lock();
        if self.closing.load(Ordering::Acquire) {
            return Ok(());
        }
        self.install_locked(needed)
    }

    /// At a clean close, once the log is durable: the segments installed past the one holding
    /// the end (the preallocator installs the next once the end is half-way through its
    /// segment) go back to the spares, which the close then trims to one, so that a closed
    /// store holds the same files wherever its end fell. Kept when the end is in its segment's
    /// last page: the segment after it must exist then (FORMAT.md 6, the successor rule). Returns
    /// whether it took any back (the directory then needs a sync).
    fn uninstall_ahead(&self) -> Result<bool> {
        self.closing.store(true, Ordering::Release);
        // The tail's lock first, as an append that installs takes them; held throughout, so no
        // append moves the end meanwhile.
        let tail = self.tail.lock();
        let _installing = self.install_lock.lock();
        let end = tail.pos;
        let geometry = self.config.geometry;
        if geometry.offset_in_segment(end) >= geometry.segment_size_bytes - geometry.page_bytes() {
            return Ok(false);
        }
        let holding_end = geometry.segment_of(end);
        let mut taken = false;
        while self.installed_max.load(Ordering::Acquire) > holding_end {
            let last = self.installed_max.load(Ordering::Acquire);
            let segment = self.segments.write().remove(&last).expect("an installed segment is mapped");
            self.installed_max.store(last - 1, Ordering::Release);
            self.dir.retire(segment)?;
            taken = true;
        }
        Ok(taken)
    }

    fn install_locked(&self, needed: u64) -> Result<()> {
        while self.installed_max.load(Ordering::Acquire) < needed {
            let next = self.installed_max.load(Ordering::Acquire) + 1;
            let segment = match self.dir.install(next) {
                Ok(segment) => segment,
                // No room for a spare, no descriptor or address space to open or map it:
                // nothing was renamed, a later append may try again.
                Err(segment::InstallError::Before(error)) => return Err(error),
                // After the spare took the segment's name (a directory sync that failed): the
                // install cannot be redone, so the log stops.
                Err(segment::InstallError::After(error)) => {
                    self.poison(&error);
                    return Err(error);
                }
            };
            self.segments.write().insert(next, segment);
            self.installed_max.store(next, Ordering::Release);
        }
        Ok(())
    }
}

/// How much installed log an append needs past its record (see [`Wal::append_reserving`]).
#[derive(Clone, Copy, Debug)]
enum Room {
    /// The bytes held back for an undo stay free.
    KeepReserve,
    /// Those, and this many more bytes, held back from now on.
    Reserve(u64),
    /// The record is part of the undo the bytes were held back for.
    UseReserve,
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
