//! Verification of a store's files: every checksum of every file, the store's completeness
//! (every file it must have), then a read-only open, without writing anything. `vellum verify`
//! prints what it finds; a library user gets the same [`Report`].
//!
//! It reads the files (nothing is written, and it works on read-only media): both copies of the
//! control file, every log record from the oldest segment (scanned as `RecoveryMode::Strict`),
//! every arena page as it is in its file, the doublewrite area and every archive file in full.
//! Then it opens the store read-only (recovery replayed in memory) and fails if that open is
//! refused: whatever an open refuses, verify reports. On the store that open recovered it
//! checks the id index and every page it reaches in full (`inspect::index`): an open reads
//! the index lazily, so damage with valid checksums shows only there.
//! While it runs it holds a shared lock on the store if it can, so no writer opens the store
//! meanwhile; if a writer has it open, that is a warning (pages may change under it), and what
//! the writer changes under the reads is not taken for damage: the control file and the log are
//! read again while a read finds a failure (a checkpoint may retire the segment the control
//! file named, a record may be half-written at the tail), a page that fails its check is read
//! again (the checkpointer may be writing it), and an archive file the writer's retention
//! deleted after it was listed is a note. Damage is found on every read, and reported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zerocopy::FromBytes;

use super::{Progress, StoreLock, dir_usage, try_lock_store};
use crate::arena::doublewrite::{Doublewrite, DoublewriteOpen};
use crate::arena::{Arena, ArenaOpen, arena_file_name};
use crate::error::Result;
use crate::format::control::{CONTROL_FILE_BYTES, CONTROL_FILE_NAME, CONTROL_SLOT_BYTES, Control};
use crate::format::doublewrite::{DOUBLEWRITE_FILE_NAME, DOUBLEWRITE_HEADER_BYTES, DOUBLEWRITE_MAGIC};
use crate::format::page::{PageId, Space};
use crate::format::record::{self, Kind};
use crate::format::wal::{Geometry, LogIdentity};
use crate::storage::{RealStorage, Storage};
use crate::wal::{ScanReport, TornTail, Wal, WalConfig};
use crate::{Error, Lsn, RecoveryMode, SyncMode};

/// How bad a problem is: failures make verify exit 1, warnings do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The store is damaged or incomplete: `vellum verify` exits 1.
    Failure,
    /// Worth knowing, but the store is sound (a torn tail the next open erases, a writer holding the
    /// store).
    Warning,
}

/// One thing found wrong.
#[derive(Clone, Debug)]
pub struct Problem {
    /// How bad it is.
    pub severity: Severity,
    /// control, wal, arena, doublewrite, archive or store.
    pub component: &'static str,
    /// The file, relative to the store directory.
    pub file: Option<String>,
    /// The page number inside that file (arena pages).
    pub page: Option<u64>,
    /// The log position it concerns (log problems).
    pub lsn: Option<u64>,
    /// What is wrong, in words.
    pub reason: String,
}

impl Problem {
    pub(crate) fn new(severity: Severity, component: &'static str, reason: impl Into<String>) -> Problem {
        Problem {
            severity,
            component,
            file: None,
            page: None,
            lsn: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn file(mut self, file: impl Into<String>) -> Problem {
        self.file = Some(file.into());
        self
    }

    pub(crate) fn lsn(mut self, lsn: Option<Lsn>) -> Problem {
        self.lsn = lsn.map(|l| l.get());
        self
    }

    /// "arena/vector-00000000.pages page 3: reason", "wal LSN 4128: reason".
    pub fn describe(&self) -> String {
        let mut place = self.component.to_string();
        if let Some(file) = &self.file {
            place = file.clone();
        }
        if let Some(page) = self.page {
            place.push_str(&format!(" page {page}"));
        }
        if let Some(lsn) = self.lsn {
            place.push_str(&format!(" LSN {lsn}"));
        }
        format!("{place}: {}", self.reason)
    }
}

/// One control-file slot.
#[derive(Clone, Debug)]
pub struct SlotCheck {
    /// True if the copy decodes and its checksum matches.
    pub valid: bool,
    /// The copy's sequence number, when valid.
    pub sequence: Option<u64>,
    /// Why the copy is invalid.
    pub error: Option<String>,
}

/// What verify found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// The store directory verified.
    pub store: PathBuf,
    /// The two copies of the control file, in file order.
    pub slots: Vec<SlotCheck>,
    /// Index in `slots` of the copy in force; `None` if neither is valid.
    pub in_force: Option<usize>,
    /// True if the log could be opened and was read.
    pub wal_checked: bool,
    /// Segment files of the log.
    pub wal_segments: u64,
    /// Log records read and decoded.
    pub wal_records: u64,
    /// LSN of the first record read (the log's first LSN when it holds none).
    pub wal_start_lsn: u64,
    /// LSN where the valid log ends.
    pub wal_end_lsn: u64,
    /// A torn tail after the valid log: its LSN and why it is torn.
    pub torn_tail: Option<(u64, String)>,
    /// True if the arena could be opened and its pages were read.
    pub arena_checked: bool,
    /// Catalog pages read.
    pub catalog_pages: u64,
    /// Vector pages read.
    pub vector_pages: u64,
    /// Arena pages that could not be read or failed their checks.
    pub damaged_pages: u64,
    /// True if the doublewrite file exists.
    pub doublewrite_present: bool,
    /// True if its header is intact and matches the store's page size.
    pub doublewrite_valid_header: bool,
    /// The batch sequence number of its header, when valid.
    pub doublewrite_batch_seq: Option<u64>,
    /// Page images its header announces.
    pub doublewrite_images: u64,
    /// Page images whose checksum matches.
    pub doublewrite_intact_images: u64,
    /// True if `archive/` exists.
    pub archive_present: bool,
    /// True if the archive files could be listed and were read.
    pub archive_checked: bool,
    /// Archive files checked in full (base images and segments; leftover temporary files are
    /// not archive files).
    pub archive_checked_files: u64,
    /// Regular files under `archive/`.
    pub archive_files: u64,
    /// Total size of the files under `archive/`, in bytes.
    pub archive_bytes: u64,
    /// The shape of the index, when the read-only open succeeded and the index was checked
    /// (its findings are among `problems`, component `index`).
    pub index: Option<super::IndexSummary>,
    /// Facts worth printing that are no problem (what the read-only open found, what was skipped).
    pub notes: Vec<String>,
    /// Everything found wrong, failures and warnings, in the order found.
    pub problems: Vec<Problem>,
    /// What kept the verification from reading part of the store, if anything did: the process
    /// ran out of descriptors or memory (see [`crate::storage::is_exhaustion`]). That says
    /// nothing of the store, so it is no problem: [`verify_store`] returns it as its error.
    stopped: Option<(String, std::io::ErrorKind)>,
}

impl Report {
    /// True if no failure was found (warnings allowed).
    pub fn clean(&self) -> bool {
        self.failures() == 0
    }

    /// How many problems are failures.
    pub fn failures(&self) -> usize {
        self.problems.iter().filter(|p| p.severity == Severity::Failure).count()
    }

    /// How many problems are warnings.
    pub fn warnings(&self) -> usize {
        self.problems.iter().filter(|p| p.severity == Severity::Warning).count()
    }

    /// True if `error` is a shortage of the process's (out of descriptors or memory), not a
    /// finding about the store: the first is kept for [`verify_store`] to return, and the
    /// caller reports nothing. Every place that turns an error into a problem asks first.
    pub(crate) fn stops(&mut self, error: &Error) -> bool {
        let Error::Io { source, .. } = error else {
            return false;
        };
        if !crate::storage::is_exhaustion(source) {
            return false;
        }
        if self.stopped.is_none() {
            self.stopped = Some((error.to_string(), source.kind()));
        }
        true
    }

    pub(crate) fn fail(&mut self, problem: Problem) {
        self.problems.push(Problem {
            severity: Severity::Failure,
            ..problem
        });
    }

    pub(crate) fn warn(&mut self, problem: Problem) {
        self.problems.push(Problem {
            severity: Severity::Warning,
            ..problem
        });
    }
}

/// Verifies the store in `dir`. `Err` only when `dir` holds no store at all, or when the
/// process ran out of descriptors or memory before it read all of it (`Error::Io`).
pub fn verify_store(dir: &Path, progress: &dyn Progress) -> Result<Report> {
    let bar = progress;
    let control_path = dir.join(CONTROL_FILE_NAME);
    if !control_path.is_file() {
        return Err(Error::NotFound(format!(
            "no Vellum store at {} (no {CONTROL_FILE_NAME} file)",
            dir.display()
        )));
    }
    let mut report = Report {
        store: dir.to_path_buf(),
        ..Report::default()
    };
    let lock = match try_lock_store(dir, false) {
        StoreLock::Busy => {
            report.warn(Problem::new(
                Severity::Warning,
                "store",
                "the store is open in another process: pages and log may change while they are read",
            ));
            None
        }
        held => Some(held),
    };
    let live = lock.is_none();
    let storage: Arc<dyn Storage> = Arc::new(RealStorage::new());
    let Some((control, geometry)) = check_control_and_log(dir, &storage, live, &mut report, bar) else {
        return Ok(report);
    };
    // A writer may write pages past the end of the log read above while the arena is read:
    // pages are checked against the log's end only in a store no writer has open.
    let log_end_lsn = if live { 0 } else { report.wal_end_lsn };
    let arena = ArenaCheck {
        geometry,
        control: &control,
        log_end_lsn,
        live,
    };
    check_arena(dir, &storage, &arena, &mut report, bar);
    check_archive(dir, live, &mut report, bar);
    check_open(dir, &mut report, bar);
    match report.stopped.take() {
        // Before, a search of a store with more files than `ulimit -n` allowed was refused
        // with "Too many open files", and verify called each file it could not open damaged
        // ("NOT CLEAN: 4069 failures").
        Some((reason, kind)) => Err(Error::io(
            format!(
                "verifying {} (the verification could not read all of it)",
                dir.display()
            ),
            std::io::Error::new(kind, reason),
        )),
        None => Ok(report),
    }
}

/// How many times verify reads the control file and the log of a store a writer has open before
/// it reports what it found: a finding there may be the writer moving on under the reads (a
/// checkpoint retiring the segment the control file named, a record half-written at the tail),
/// which the next read does not find again; damage is found every time.
const LIVE_LOG_READS_MAX: usize = 4;

/// Checks the control file, then the log against it. On a store a writer has open (`live`) the
/// two are read again, up to [`LIVE_LOG_READS_MAX`] times, while a read finds a failure: the
/// first read that finds none is the one reported, else the last. `None`: nothing more can be
/// checked (no valid control data, or a geometry it cannot have).
fn check_control_and_log(
    dir: &Path,
    storage: &Arc<dyn Storage>,
    live: bool,
    report: &mut Report,
    bar: &dyn Progress,
) -> Option<(Control, Geometry)> {
    let reads_max = if live { LIVE_LOG_READS_MAX } else { 1 };
    let before = report.clone();
    let mut found = None;
    for read in 1..=reads_max {
        *report = before.clone();
        found = check_control_and_log_once(dir, storage, live, report, bar);
        if report.clean() {
            break;
        }
        if read == reads_max && reads_max > 1 {
            report.notes.push(format!(
                "the control file and the log were read {reads_max} times beside the writer: \
                 every read found the failures below"
            ));
        }
    }
    found
}

/// One read of the control file and of the log against it (see [`check_control_and_log`]).
fn check_control_and_log_once(
    dir: &Path,
    storage: &Arc<dyn Storage>,
    live: bool,
    report: &mut Report,
    bar: &dyn Progress,
) -> Option<(Control, Geometry)> {
    let Some(control) = check_control(&dir.join(CONTROL_FILE_NAME), report) else {
        report
            .notes
            .push("the log and the arena were not checked: no valid control data".into());
        return None;
    };
    let geometry = match Geometry::new(control.page_size_bytes, control.segment_size_bytes) {
        Ok(geometry) => geometry,
        Err(reason) => {
            report.fail(Problem::new(Severity::Failure, "control", reason).file(CONTROL_FILE_NAME));
            return None;
        }
    };
    let config = WalConfig {
        beside_writer: live,
        ..wal_config(geometry, &control)
    };
    check_wal(dir, storage, config, &control, report, bar);
    Some((control, geometry))
}

/// Opens the store read-only, as a reader would (recovery replayed in memory, nothing
/// written): an open that is refused is a failure, so verify never passes a store that no
/// open accepts.
fn check_open(dir: &Path, report: &mut Report, bar: &dyn Progress) {
    bar.phase("opening the store read-only", 0);
    match crate::Store::open_read_only(dir, crate::Options::default()) {
        Ok(store) => {
            report
                .notes
                .push(format!("a read-only open recovers the store: {} vectors", store.len()));
            check_open_index(&store, report, bar);
            super::graph::check(&store, report);
        }
        Err(Error::Locked(reason)) => report.warn(Problem::new(
            Severity::Warning,
            "store",
            format!("not opened, a writer has it ({reason})"),
        )),
        Err(error) if report.stops(&error) => {}
        Err(error) => {
            let problem = Problem::new(
                Severity::Failure,
                "store",
                format!("an open refuses the store: {error}"),
            );
            report.fail(match &error {
                Error::Corrupted { file: Some(file), .. } => problem.file(relative(file)),
                _ => problem,
            });
        }
    }
}

/// Checks the index of the store the read-only open recovered: each finding is a failure
/// naming its arena file and page.
fn check_open_index(store: &crate::Store, report: &mut Report, bar: &dyn Progress) {
    bar.phase("checking the index", 0);
    let check = super::index_report(store, &mut |_| {});
    if let Some(reason) = &check.unread {
        report
            .stopped
            .get_or_insert_with(|| (reason.clone(), std::io::ErrorKind::Other));
    }
    let pages_per_file = store.inner().arena.pages_per_file();
    for damage in &check.damage {
        let page = damage.page;
        let file = format!(
            "arena/{}",
            arena_file_name(page.space(), page.page_no() / pages_per_file)
        );
        report.fail(Problem {
            page: Some(page.page_no() % pages_per_file),
            ..Problem::new(Severity::Failure, "index", format!("{page}: {}", damage.reason)).file(file)
        });
    }
    let unlisted = check.damage_count - check.damage.len() as u64;
    if unlisted > 0 {
        report.fail(Problem::new(
            Severity::Failure,
            "index",
            format!("{unlisted} more findings in the index, not listed"),
        ));
    }
    let s = &check.summary;
    report.notes.push(format!(
        "index: {} entries, height {}, {} leaf and {} branch pages; {} catalog, {} overflow, {} free and {} vector pages, {} owned slots",
        s.entries,
        s.height,
        s.leaf_pages,
        s.branch_pages,
        s.catalog_pages,
        s.overflow_pages,
        s.free_pages,
        s.vector_pages,
        s.owned_slots
    ));
    report.index = Some(check.summary);
}

/// Decodes both control slots; returns the copy in force.
fn check_control(path: &Path, report: &mut Report) -> Option<Control> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            let error = Error::io(format!("reading {}", path.display()), e);
            if report.stops(&error) {
                return None;
            }
            report.fail(
                Problem::new(Severity::Failure, "control", format!("cannot read it: {error}")).file(CONTROL_FILE_NAME),
            );
            return None;
        }
    };
    if (bytes.len() as u64) < CONTROL_FILE_BYTES {
        report.fail(
            Problem::new(
                Severity::Failure,
                "control",
                format!("{} bytes, expected {CONTROL_FILE_BYTES}", bytes.len()),
            )
            .file(CONTROL_FILE_NAME),
        );
        return None;
    }
    let decoded: Vec<Result<Control, String>> = (0..2)
        .map(|i| Control::from_slot(&bytes[i * CONTROL_SLOT_BYTES..(i + 1) * CONTROL_SLOT_BYTES]))
        .collect();
    let valid = decoded.iter().filter(|d| d.is_ok()).count();
    let mut best: Option<(usize, Control)> = None;
    for (i, slot) in decoded.into_iter().enumerate() {
        match slot {
            Ok(control) => {
                report.slots.push(SlotCheck {
                    valid: true,
                    sequence: Some(control.sequence),
                    error: None,
                });
                if best.as_ref().is_none_or(|(_, b)| control.sequence > b.sequence) {
                    best = Some((i, control));
                }
            }
            Err(reason) => {
                report.slots.push(SlotCheck {
                    valid: false,
                    sequence: None,
                    error: Some(reason.clone()),
                });
                let problem = Problem::new(Severity::Warning, "control", format!("copy {i} is invalid: {reason}"))
                    .file(CONTROL_FILE_NAME);
                if valid == 1 {
                    report.warn(Problem {
                        reason: format!(
                            "{} (the other copy is in force; the next checkpoint rewrites this one)",
                            problem.reason
                        ),
                        ..problem
                    });
                } else {
                    report.fail(problem);
                }
            }
        }
    }
    let (slot, control) = best?;
    report.in_force = Some(slot);
    Some(control)
}

/// Opens the log read-only (Strict first, then as recovery would) and reads every record;
/// records what it finds in `report`.
fn check_wal(
    dir: &Path,
    storage: &Arc<dyn Storage>,
    config: WalConfig,
    control: &Control,
    report: &mut Report,
    bar: &dyn Progress,
) {
    let wal_dir = dir.join("wal");
    let geometry = config.geometry;
    let open = |mode| Wal::open_read_only(storage.clone(), &wal_dir, config.clone(), None, mode);
    let Some((wal, scan)) = open_wal_strict(&open, config.beside_writer, report) else {
        return;
    };
    report.wal_checked = true;
    report.wal_segments = wal.segment_numbers().len() as u64;
    read_records(&wal, &scan, geometry, control, report, bar);
}

/// The configuration of a read-only open of the log of the store `control` describes.
fn wal_config(geometry: Geometry, control: &Control) -> WalConfig {
    let config = WalConfig::new(
        geometry,
        LogIdentity {
            store_id: control.store_id,
            timeline: control.timeline,
        },
        SyncMode::Never,
    );
    WalConfig {
        required_files: control.extent.is_some(),
        ..config
    }
}

/// Opens the log as `RecoveryMode::Strict` (a torn tail is a warning); if Strict refuses it,
/// falls back to [`open_wal_tolerant`]. `None`: no mode opens it.
fn open_wal_strict(
    open: &impl Fn(RecoveryMode) -> Result<(Wal, ScanReport)>,
    live: bool,
    report: &mut Report,
) -> Option<(Wal, ScanReport)> {
    match open(RecoveryMode::Strict) {
        Ok((wal, scan)) => {
            if let Some(torn) = &scan.torn_tail {
                let warning = format!(
                    "torn tail ({} bytes: {}); the next open erases it",
                    torn.garbage_bytes, torn.reason
                );
                warn_torn_tail(report, torn, warning, live);
            }
            Some((wal, scan))
        }
        Err(strict) => open_wal_tolerant(open, strict, live, report),
    }
}

/// Opens the log Strict refused (with `strict`) as `RecoveryMode::TolerateTornTail`: a torn
/// tail there is a warning; anything else is a failure, and the log is then read as
/// [`open_wal_skipping`] opens it.
fn open_wal_tolerant(
    open: &impl Fn(RecoveryMode) -> Result<(Wal, ScanReport)>,
    strict: Error,
    live: bool,
    report: &mut Report,
) -> Option<(Wal, ScanReport)> {
    match open(RecoveryMode::TolerateTornTail) {
        // Strict refuses a tail followed by valid records that prove nothing; recovery
        // under the default mode accepts it as torn: a warning, not damage.
        Ok((wal, scan)) if scan.torn_tail.is_some() => {
            let torn = scan.torn_tail.as_ref().expect("checked");
            let warning = format!(
                "torn tail followed by records that were never proven durable ({}); \
                 the next open erases it, a Strict open refuses it: {strict}",
                torn.reason
            );
            warn_torn_tail(report, torn, warning, live);
            Some((wal, scan))
        }
        _ if report.stops(&strict) => None,
        _ => {
            report.fail(wal_problem(strict));
            open_wal_skipping(open, report)
        }
    }
}

/// Notes the torn tail `torn` in `report`, with `warning` as its warning; beside a writer
/// (`live`), a tail it was writing as it was read.
fn warn_torn_tail(report: &mut Report, torn: &TornTail, warning: String, live: bool) {
    report.torn_tail = Some((torn.lsn.get(), torn.reason.clone()));
    let warning = match live {
        true => format!(
            "the tail was being written as it was read ({} bytes: {}): the writer that has the store open appends there",
            torn.garbage_bytes, torn.reason
        ),
        false => warning,
    };
    report.warn(Problem::new(Severity::Warning, "wal", warning).lsn(Some(torn.lsn)));
}

/// Opens a damaged log as `RecoveryMode::SkipCorrupted`, each range it skips a failure.
/// `None`: even that open is refused.
fn open_wal_skipping(
    open: &impl Fn(RecoveryMode) -> Result<(Wal, ScanReport)>,
    report: &mut Report,
) -> Option<(Wal, ScanReport)> {
    let (wal, scan) = open(RecoveryMode::SkipCorrupted).ok()?;
    for skip in &scan.skipped {
        report.fail(
            Problem::new(
                Severity::Failure,
                "wal",
                format!("damaged log up to LSN {}: {}", skip.to, skip.reason),
            )
            .lsn(Some(skip.from)),
        );
    }
    Some((wal, scan))
}

/// Reads and decodes every record (their checksums are checked as they are read).
fn read_records(
    wal: &Wal,
    scan: &ScanReport,
    geometry: Geometry,
    control: &Control,
    report: &mut Report,
    bar: &dyn Progress,
) {
    let start = wal.first_lsn();
    report.wal_start_lsn = start.get();
    report.wal_end_lsn = scan.end_lsn.get();
    let log_bytes = scan.end_lsn.get().saturating_sub(start.get());
    bar.phase("verifying the log", log_bytes);
    let mut reader = wal.reader(start).with_skips(&scan.skipped);
    let mut checkpoint_found = false;
    loop {
        match reader.next_record() {
            Ok(Some(rec)) => {
                if report.wal_records == 0 {
                    report.wal_start_lsn = rec.lsn.get();
                }
                report.wal_records += 1;
                if report.wal_records.is_multiple_of(4096) {
                    bar.position(rec.lsn.get() - start.get());
                }
                if rec.lsn == control.checkpoint_lsn && rec.header.kind == Kind::CheckpointBegin as u8 {
                    checkpoint_found = true;
                }
                if let Err(e) = record::decode(rec.header.kind, rec.payload, rec.lsn, geometry.page_size_bytes) {
                    report.fail(wal_problem(e).lsn(Some(rec.lsn)));
                }
            }
            Ok(None) => break,
            Err(e) => {
                if !report.stops(&e) {
                    report.fail(wal_problem(e));
                }
                break;
            }
        }
    }
    bar.position(log_bytes);
    if !control.checkpoint_lsn.is_none() && !checkpoint_found {
        let reason = if control.checkpoint_lsn < start {
            format!("the log starts at LSN {start}, after the checkpoint recovery starts from (a segment is missing)")
        } else {
            "no checkpoint-begin record where the control file's checkpoint says".into()
        };
        report.fail(Problem::new(Severity::Failure, "wal", reason).lsn(Some(control.checkpoint_lsn)));
    }
}

/// A log error as a problem naming its LSN or file.
fn wal_problem(error: Error) -> Problem {
    match error {
        Error::Corrupted { lsn, file, reason } => {
            let problem = Problem::new(Severity::Failure, "wal", reason).lsn(lsn);
            match file {
                Some(file) => problem.file(relative(&file)),
                None => problem,
            }
        }
        other => Problem::new(Severity::Failure, "wal", other.to_string()),
    }
}

/// `…/store/arena/x.pages` → `arena/x.pages`.
fn relative(path: &Path) -> String {
    let parts: Vec<_> = path.components().rev().take(2).collect();
    parts
        .iter()
        .rev()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Opens the arena read-only and checks every page as it is in its file; records what it
/// finds in `report`.
/// What the pages of the arena are checked against.
struct ArenaCheck<'c> {
    geometry: Geometry,
    /// The control data in force (the extent the store had initialised).
    control: &'c Control,
    /// The log's end, if known: no page LSN may reach it. 0: not checked.
    log_end_lsn: u64,
    /// A writer has the store open: a page that fails its check is read again (the writer may
    /// have been writing it), and fails only if it fails every read.
    live: bool,
}

/// How many times a page of a store a writer has open is read before it is reported damaged.
const LIVE_PAGE_READS_MAX: usize = 3;

fn check_arena(
    dir: &Path,
    storage: &Arc<dyn Storage>,
    check: &ArenaCheck<'_>,
    report: &mut Report,
    bar: &dyn Progress,
) {
    let (geometry, control) = (check.geometry, check.control);
    let arena_dir = dir.join("arena");
    if !arena_dir.is_dir() {
        report.fail(Problem::new(Severity::Failure, "arena", "the arena directory is missing").file("arena"));
        return;
    }
    let page_size = geometry.page_size_bytes;
    let Some(arena) = open_arena(&arena_dir, storage, geometry, control, report) else {
        return;
    };
    let intact_copies = check_doublewrite(dir, storage, page_size, control, report);
    report.arena_checked = true;
    let total_pages = arena.page_count(Space::Catalog) + arena.page_count(Space::Vector);
    bar.phase("verifying pages", total_pages * geometry.page_bytes());
    let mut done = 0u64;
    for space in [Space::Catalog, Space::Vector] {
        let count = arena.page_count(space);
        match space {
            Space::Catalog => report.catalog_pages = count,
            Space::Vector => report.vector_pages = count,
        }
        for n in 0..count {
            let id = PageId::new(space, n);
            done += 1;
            if done.is_multiple_of(1024) {
                bar.position(done * geometry.page_bytes());
            }
            check_arena_page(&arena, id, check, &intact_copies, report);
        }
    }
}

/// Opens the arena in `arena_dir` read-only; `None` (a failure in `report`) if it is refused.
fn open_arena(
    arena_dir: &Path,
    storage: &Arc<dyn Storage>,
    geometry: Geometry,
    control: &Control,
    report: &mut Report,
) -> Option<Arena> {
    let how = ArenaOpen {
        store_id: control.store_id,
        read_only: true,
        files_min: control.extent.map_or([0, 0], |e| e.files),
    };
    match Arena::open(
        storage.clone(),
        arena_dir,
        geometry.page_size_bytes,
        geometry.segment_size_bytes,
        how,
    ) {
        Ok(arena) => Some(arena),
        Err(e) if report.stops(&e) => None,
        Err(e) => {
            let problem = match e {
                Error::Corrupted {
                    file: Some(file),
                    reason,
                    ..
                } => Problem::new(Severity::Failure, "arena", reason).file(relative(&file)),
                other => Problem::new(Severity::Failure, "arena", other.to_string()),
            };
            report.fail(problem);
            None
        }
    }
}

/// Reads page `id` from its file and checks it (checksum, identity, owner, that a page the
/// store had initialised is not empty, and that its page LSN lies below `log_end_lsn`, the
/// log's end, if known); each finding is a damaged page in `report`.
fn check_arena_page(arena: &Arena, id: PageId, check: &ArenaCheck<'_>, intact_copies: &[PageId], report: &mut Report) {
    let (space, n) = (id.space(), id.page_no());
    let pages_per_file = check.geometry.segment_size_bytes / check.geometry.page_bytes();
    let file = format!("arena/{}", arena_file_name(space, n / pages_per_file));
    let reads_max = if check.live { LIVE_PAGE_READS_MAX } else { 1 };
    let mut found = None;
    for read in 1..=reads_max {
        if read > 1 {
            // The writer's checkpointer writes a page in microseconds: a page torn by that
            // write under this read is whole by the next.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        found = match page_finding(arena, id, check) {
            Ok(found) => found,
            // The page could not be read for want of descriptors or memory: no finding.
            Err(error) if report.stops(&error) => return,
            Err(error) => Some(error.to_string()),
        };
        if found.is_none() {
            return;
        }
    }
    let Some(reason) = found else { return };
    report.damaged_pages += 1;
    let note = if intact_copies.contains(&id) {
        " (DOUBLEWRITE holds an intact copy: the next open repairs it)"
    } else {
        ""
    };
    report.fail(Problem {
        page: Some(n % pages_per_file),
        ..Problem::new(Severity::Failure, "arena", format!("{reason}{note}")).file(file)
    });
}

/// What is wrong with page `id` as its file holds it now, if anything; `Err` if it could not
/// be read.
fn page_finding(arena: &Arena, id: PageId, check: &ArenaCheck<'_>) -> Result<Option<String>> {
    let (space, n) = (id.space(), id.page_no());
    let in_use = check.control.extent.map_or([0, 0], |e| e.pages);
    let image = arena.read_page_from_file(id)?;
    let finding = crate::format::page::check_page(&image, id)
        .or_else(|| crate::format::page::check_owner(&image, id, check.control.store_id))
        .or_else(|| {
            (n < in_use[space.index()] && crate::format::page::is_all_zero(&image))
                .then(|| format!("{id} is empty, but the store had initialised it (its contents were lost)"))
        })
        .or_else(|| crate::format::page::check_page_lsn_below(&image, id, check.log_end_lsn));
    Ok(finding)
}

/// Reads the doublewrite area (informational); returns the pages it holds intact copies of.
fn check_doublewrite(
    dir: &Path,
    storage: &Arc<dyn Storage>,
    page_size: u32,
    control: &Control,
    report: &mut Report,
) -> Vec<PageId> {
    let path = dir.join(DOUBLEWRITE_FILE_NAME);
    let Ok(bytes) = read_prefix(&path, DOUBLEWRITE_HEADER_BYTES) else {
        return Vec::new();
    };
    report.doublewrite_present = true;
    if bytes.len() == DOUBLEWRITE_HEADER_BYTES {
        let header = crate::format::doublewrite::DoublewriteHeader::read_from_bytes(&bytes).expect("exact size");
        let crc_ok = crc32c::crc32c(&bytes[..DOUBLEWRITE_HEADER_BYTES - 4]) == header.crc.get();
        if header.magic == DOUBLEWRITE_MAGIC && crc_ok && header.page_size_bytes.get() == page_size {
            report.doublewrite_valid_header = true;
            report.doublewrite_batch_seq = Some(header.batch_seq.get());
            report.doublewrite_images = u64::from(header.count.get());
        }
    }
    let how = DoublewriteOpen {
        store_id: control.store_id,
        required: control.extent.is_some() && !control.checkpoint_lsn.is_none(),
        read_only: true,
    };
    match Doublewrite::open(storage.as_ref(), dir, page_size, how).and_then(|dw| dw.read_images()) {
        Ok(images) => {
            report.doublewrite_intact_images = images.len() as u64;
            images.into_keys().collect()
        }
        Err(e) => {
            if !report.stops(&e) {
                report.warn(Problem::new(Severity::Warning, "doublewrite", e.to_string()).file(DOUBLEWRITE_FILE_NAME));
            }
            Vec::new()
        }
    }
}

fn read_prefix(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(len);
    std::fs::File::open(path)?.take(len as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Checks every archive file in full: header, compressed bytes and contents checksums.
/// On a store a writer has open (`live`), a file listed and gone when it was read was deleted
/// by the writer's retention meanwhile (it deletes the oldest files only; a hole in what is
/// left is still found by [`check_archive_chain`]): counted in a note, not a failure.
fn check_archive(dir: &Path, live: bool, report: &mut Report, bar: &dyn Progress) {
    let archive = dir.join(crate::archive::ARCHIVE_DIR);
    if !archive.is_dir() {
        return;
    }
    let (files, bytes) = dir_usage(&archive);
    report.archive_present = true;
    report.archive_files = files;
    report.archive_bytes = bytes;
    bar.phase("verifying the archive", bytes);
    match crate::archive::verify(&RealStorage::new(), dir) {
        Ok(results) => {
            report.archive_checked = true;
            let (pruned, results): (Vec<_>, Vec<_>) = results
                .into_iter()
                .partition(|(path, damage)| live && damage.is_some() && !path.exists());
            report.archive_checked_files = results.len() as u64;
            for (path, damage) in results {
                if let Some(error) = damage
                    && !report.stops(&error)
                {
                    report.fail(archive_problem(error, &path));
                }
            }
            if !pruned.is_empty() {
                report.notes.push(format!(
                    "{} archive files were deleted by the writer's retention while verify read them",
                    pruned.len()
                ));
            }
        }
        Err(error) => {
            if !report.stops(&error) {
                report.fail(archive_problem(error, &archive));
            }
        }
    }
    check_archive_chain(dir, report);
    bar.position(bytes);
}

/// Entries of `archive/` that are no archive files are warnings (they never stop an open);
/// a log segment missing between the oldest retained base image and the live log is a failure:
/// every restore from that image would need it.
fn check_archive_chain(dir: &Path, report: &mut Report) {
    // The live log's first segment is read before the archive is listed: a writer archives a
    // segment before it leaves the log, so every segment gone from the log by then is listed.
    let live_from = std::fs::read_dir(dir.join("wal"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| crate::wal::segment::parse_segment_file_name(&e.file_name().to_string_lossy()))
        .min();
    let Ok(listing) = crate::archive::list(&RealStorage::new(), dir, false) else {
        return; // the failure to list was reported above
    };
    for path in &listing.unknown {
        report.warn(
            Problem::new(
                Severity::Warning,
                "archive",
                "not an archive file (ignored; nothing reads it)",
            )
            .file(relative(path)),
        );
    }
    let Some((oldest_base, _, _)) = listing.bases.first() else {
        return;
    };
    let segment_bytes = oldest_base.segment_size_bytes.get().max(1);
    let needed_from = oldest_base.truncate_lsn.get() / segment_bytes;
    let Some(live_from) = live_from else { return };
    let archived: std::collections::BTreeSet<u64> = listing.segments.iter().map(|s| s.0).collect();
    if let Some(missing) = (needed_from..live_from).find(|n| !archived.contains(n)) {
        report.fail(
            Problem::new(
                Severity::Failure,
                "archive",
                format!(
                    "log segment {missing} is missing from the archive: a restore from base image {} needs it",
                    relative(&listing.bases[0].1)
                ),
            )
            .file(format!("archive/{}", crate::archive::wal_file_name(missing))),
        );
    }
}

fn archive_problem(error: Error, path: &Path) -> Problem {
    match error {
        Error::Corrupted { file, reason, .. } => {
            Problem::new(Severity::Failure, "archive", reason).file(relative(file.as_deref().unwrap_or(path)))
        }
        other => Problem::new(Severity::Failure, "archive", other.to_string()).file(relative(path)),
    }
}
