//! Benchmarks of recovery: `Store::open` after a crash, beside baselines of the same run.
//!
//! - `recovery/open_crashed_1gib_wal`: a store with ~1 GiB of log after its last checkpoint
//!   (no automatic checkpoints; transactions of 1,000 inserts of 1 KiB vectors with
//!   `SyncMode::Never`, then `sync`), dropped without a close (a crash), then `Store::open`
//!   timed: the log scan, analysis, redo, undo, the rebuild of the id index and the checkpoint
//!   recovery ends with. Figure: log bytes recovered per second (the range analysis scanned,
//!   `end_lsn - analysis_start`), beside `baseline/crc32c` (CRC32C over 1 MiB): the CPU floor
//!   of one pass over the log, and `baseline/read_crc_log`: the same log range read from the
//!   template's segment files with 1 MiB preads (warm page cache, as the opens are) and
//!   checksummed, the floor of one pass over those very bytes. `RECOVERY_LOG_MIB` sets the
//!   log's size (default 1024).
//! - `open/crashed_{256,64}mib`: stores of ~256 MiB and ~64 MiB of vectors (dimension 256,
//!   checkpointed), then 1,000 commits of one insert each (`SyncMode::Never`, then `sync`), then
//!   a crash; `Store::open` timed. `open/clean_{256,64}mib`: the same stores after a clean
//!   close. The two sizes test the claim that open time depends on the redo range and not on
//!   the store's size; the id index is rebuilt from every catalog page, which does scale with
//!   the number of vectors, and the summary shows how much.
//!
//! Every crashed open works on a fresh copy of a crashed template, made (sparse, synced) and
//! removed outside the timed region; the templates are built once. The copies are in the page
//! cache when they are opened (they were just written): these are warm-cache opens. Each
//! timed open is followed by three pwrite 4 KiB + fdatasync on a zero-filled file, so the
//! summary can express open times in units of the fdatasync latency of the moment (the shared
//! disk's latency drifts by large factors within a run).
//!
//! Criterion runs one open per sample for the crashed stores (each needs its own copy), so it
//! warns that the samples take longer than its target time; that is expected. The 1 GiB-log
//! open runs under criterion only if its ten samples fit `BIG_LOG_BUDGET`; otherwise (one open
//! takes tens of seconds with the engine as measured) it is timed as many times as fit, at least
//! once, outside criterion's sampler, and the summary says so.
//!
//! `cargo test --benches` (criterion's test mode: no `--bench`, or `--test`) runs every
//! benchmark once on tiny stores and skips the summary.
//!
//! Files live under `std::env::temp_dir()`: point `TMPDIR` at the disk to measure (not tmpfs).

mod common;
use common::{create_new, fill_vector, machine_load, pattern, quick, temp_dir, timing, verdict};

use std::collections::BTreeMap;
use std::fs::File;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tempfile::TempDir;
use vellum::{Options, RecoveryReport, Store, SyncMode};

const MIB: u64 = 1 << 20;
/// Dimension of every store: 1 KiB vectors.
const DIMENSION: u32 = 256;
const VECTOR_BYTES: u64 = DIMENSION as u64 * 4;
/// Inserts per transaction of the 1 GiB log.
const LOG_TXN: u64 = 1000;
/// Inserts per transaction of the bulk loads.
const LOAD_TXN: u64 = 10_000;
/// pwrite 4 KiB + fdatasync probes after each timed open.
const FSYNC_PROBES: usize = 3;
/// The default page size (`Options::default()`).
const PAGE_BYTES: u64 = 16 * 1024;
/// Wall time `recovery/open_crashed_1gib_wal` may take, copies included (template excluded).
const BIG_LOG_BUDGET: Duration = Duration::from_secs(120);

const CRC: &str = "baseline/crc32c";
const OPEN_BIG_LOG: &str = "recovery/open_crashed_1gib_wal";
const CRASHED_LARGE: &str = "open/crashed_256mib";
const CLEAN_LARGE: &str = "open/clean_256mib";
const CRASHED_SMALL: &str = "open/crashed_64mib";
const CLEAN_SMALL: &str = "open/clean_64mib";

/// Store and log sizes: the real ones, or tiny ones in quick mode.
struct Sizes {
    /// Log written after the last checkpoint of `recovery/open_crashed_1gib_wal`.
    big_log: u64,
    /// Vector bytes of the `open/*_256mib` and `open/*_64mib` stores.
    large_store: u64,
    small_store: u64,
    /// Commits after the checkpoint of the `open/crashed_*` stores.
    commits: u64,
    /// The buffer of `baseline/crc32c`.
    crc_buffer: usize,
}

fn sizes() -> &'static Sizes {
    static SIZES: OnceLock<Sizes> = OnceLock::new();
    SIZES.get_or_init(|| {
        if quick() {
            Sizes {
                big_log: 4 * MIB,
                large_store: 4 * MIB,
                small_store: MIB,
                commits: 50,
                crc_buffer: MIB as usize,
            }
        } else {
            Sizes {
                big_log: std::env::var("RECOVERY_LOG_MIB")
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&mib| mib > 0)
                    .unwrap_or(1024)
                    * MIB,
                large_store: 256 * MIB,
                small_store: 64 * MIB,
                commits: 1000,
                crc_buffer: MIB as usize,
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Records for the summary.

/// One timed open.
#[derive(Clone, Debug)]
struct OpenSample {
    total: Duration,
    report: RecoveryReport,
    /// Median of the fdatasync probes right after it.
    fsync: Duration,
}

impl OpenSample {
    /// Open time outside the report's four passes: `Wal::open`'s scan of the log, mapping the
    /// arena, and rebuilding the id index and allocators from the catalog pages.
    fn other(&self) -> Duration {
        let r = &self.report;
        self.total
            .saturating_sub(r.analysis_time + r.redo_time + r.undo_time + r.checkpoint_time)
    }

    /// The log range analysis read.
    fn log_bytes(&self) -> u64 {
        self.report.end_lsn.get() - self.report.analysis_start.get()
    }

    fn redo_bytes(&self) -> u64 {
        self.report.end_lsn.get() - self.report.redo_start.get()
    }
}

static OPENS: Mutex<BTreeMap<&'static str, Vec<OpenSample>>> = Mutex::new(BTreeMap::new());
/// CRC32C: (bytes, time) over every timed iteration.
static CRC_TALLY: Mutex<(u64, Duration)> = Mutex::new((0, Duration::ZERO));
/// Reading and checksumming the 1 GiB template's log range: (bytes, time) over every iteration.
static READ_CRC_TALLY: Mutex<(u64, Duration)> = Mutex::new((0, Duration::ZERO));
/// What the templates are, for the summary.
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record(name: &'static str, sample: OpenSample) -> Duration {
    let total = sample.total;
    OPENS.lock().expect("opens lock").entry(name).or_default().push(sample);
    total
}

/// Prints a one-off measurement now and again in the summary.
fn note(line: String) {
    println!("{line}");
    NOTES.lock().expect("notes lock").push(line);
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

fn options() -> Options {
    Options {
        sync: SyncMode::Never,
        checkpoint_interval_bytes: 0,
        ..Default::default()
    }
}

/// Inserts `count` vectors with ids `{prefix}{n}` in transactions of `per_txn`, or until the log
/// has grown by `until_log` bytes if that comes first. Returns how many it inserted.
fn insert_many(store: &Store, prefix: &str, count: u64, per_txn: u64, until_log: u64) -> u64 {
    let log_start = store.wal().end_lsn().get();
    let mut vector = vec![0f32; DIMENSION as usize];
    let mut n = 0;
    while n < count && store.wal().end_lsn().get() - log_start < until_log {
        let mut tx = store.begin().expect("begin");
        for _ in 0..per_txn.min(count - n) {
            fill_vector(n, &mut vector);
            tx.insert(&format!("{prefix}{n:09}"), &vector, &[]).expect("insert");
            n += 1;
        }
        tx.commit().expect("commit");
    }
    n
}

/// Drops `store` without closing it: no checkpoint, as in a crash (its lock is released).
fn crash(store: Store) {
    common::settle(&store.path().join("wal"), Options::default().segment_size_bytes);
    drop(store);
}

/// Copies `from` to the new file `to` keeping its holes (an arena file is mostly holes until
/// its pages are checkpointed), and syncs it.
fn copy_sparse(from: &Path, to: &Path) {
    let src = File::open(from).unwrap_or_else(|e| panic!("opening {}: {e}", from.display()));
    let len = src.metadata().expect("metadata").len();
    let dst = create_new(to);
    dst.set_len(len).expect("sizing the copy");
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = 0u64;
    while pos < len {
        // SAFETY: lseek on a descriptor this function owns; no memory is passed.
        let data = unsafe { libc::lseek(src.as_raw_fd(), pos as libc::off_t, libc::SEEK_DATA) };
        if data < 0 {
            let error = std::io::Error::last_os_error();
            assert_eq!(error.raw_os_error(), Some(libc::ENXIO), "SEEK_DATA: {error}");
            break; // Only a hole remains.
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) };
        assert!(hole >= data, "SEEK_HOLE: {}", std::io::Error::last_os_error());
        let (mut at, end) = (data as u64, (hole as u64).min(len));
        while at < end {
            let n = (end - at).min(MIB) as usize;
            src.read_exact_at(&mut buf[..n], at).expect("reading the template");
            dst.write_all_at(&buf[..n], at).expect("writing the copy");
            at += n as u64;
        }
        pos = end;
    }
    dst.sync_all().expect("syncing the copy");
}

/// Copies the directory tree `from` to the new directory `to` (files sparse and synced).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap_or_else(|e| panic!("creating {}: {e}", to.display()));
    for entry in std::fs::read_dir(from).expect("listing the template") {
        let entry = entry.expect("a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            copy_sparse(&entry.path(), &target);
        }
    }
    File::open(to)
        .and_then(|d| d.sync_all())
        .expect("syncing the directory");
}

/// Bytes allocated to the files under `dir` (st_blocks), recursively.
fn allocated_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("listing")
        .map(|entry| {
            let entry = entry.expect("a directory entry");
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() {
                allocated_bytes(&entry.path())
            } else {
                meta.blocks() * 512
            }
        })
        .sum()
}

/// pwrite 4 KiB + fdatasync on a small zero-filled file: the disk's sync latency right now.
struct FsyncProbe {
    file: File,
    block: Vec<u8>,
    pos: u64,
    _dir: TempDir,
}

impl FsyncProbe {
    const LEN: u64 = 4 * MIB;

    fn new() -> FsyncProbe {
        let dir = temp_dir("fsync");
        let file = create_new(&dir.path().join("zeroed"));
        file.write_all_at(&vec![0u8; Self::LEN as usize], 0)
            .expect("zero-filling");
        file.sync_all().expect("syncing");
        FsyncProbe {
            file,
            block: pattern(4096, 3),
            pos: 0,
            _dir: dir,
        }
    }

    /// The median of `FSYNC_PROBES` timed pwrite + fdatasync.
    fn measure(&mut self) -> Duration {
        let mut times: Vec<Duration> = (0..FSYNC_PROBES)
            .map(|_| {
                self.pos = (self.pos + 4096) % Self::LEN;
                let start = Instant::now();
                self.file.write_all_at(&self.block, self.pos).expect("pwrite");
                self.file.sync_data().expect("fdatasync");
                start.elapsed()
            })
            .collect();
        times.sort();
        times[times.len() / 2]
    }
}

/// Opens the store at `path`, timed; then probes the fdatasync latency.
fn timed_open(path: &Path, probe: &mut FsyncProbe) -> (Store, OpenSample) {
    let start = Instant::now();
    let store = Store::open(path, options()).expect("opening the store");
    let total = start.elapsed();
    let report = store.recovery_report();
    let fsync = probe.measure();
    (store, OpenSample { total, report, fsync })
}

/// Opens a fresh copy of the crashed store `template` (copy untimed), then drops it and the copy.
fn open_copy(name: &'static str, template: &Path, probe: &mut FsyncProbe) -> Duration {
    let work = temp_dir("open");
    let path = work.path().join("store");
    copy_tree(template, &path);
    let (store, sample) = timed_open(&path, probe);
    black_box(store.len());
    drop(store);
    if name == OPEN_BIG_LOG {
        let r = &sample.report;
        println!(
            "{name}: open in {:.2} s (analysis {:.2} s, redo {:.2} s, undo {:.2} s, checkpoint {:.2} s, other {:.2} s)",
            sample.total.as_secs_f64(),
            r.analysis_time.as_secs_f64(),
            r.redo_time.as_secs_f64(),
            r.undo_time.as_secs_f64(),
            r.checkpoint_time.as_secs_f64(),
            sample.other().as_secs_f64()
        );
    }
    record(name, sample)
}

// ---------------------------------------------------------------------------------------------
// 1. Recovery of a long log.

/// Reads the log bytes `[start, end)` from the segment files in `wal_dir` with 1 MiB preads and
/// checksums them (CRC32C): the floor of a pass over that log. Returns the checksum.
fn read_and_crc_log(wal_dir: &Path, start: u64, end: u64, buf: &mut [u8]) -> u32 {
    let segment_bytes = Options::default().segment_size_bytes;
    let mut crc = 0u32;
    let mut pos = start;
    while pos < end {
        let segment_no = pos / segment_bytes;
        let segment_end = ((segment_no + 1) * segment_bytes).min(end);
        let path = wal_dir.join(format!("{segment_no:016x}.wal"));
        let file = File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        while pos < segment_end {
            let n = (segment_end - pos).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], pos % segment_bytes)
                .expect("reading the log");
            crc = crc32c::crc32c_append(crc, &buf[..n]);
            pos += n as u64;
        }
    }
    crc
}

fn big_log(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline");
    {
        let buffer = pattern(sizes().crc_buffer, 11);
        group.throughput(Throughput::Bytes(buffer.len() as u64));
        timing(&mut group, 300, 1500, 20);
        group.bench_function("crc32c", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut acc = 0u32;
                for _ in 0..iters {
                    acc ^= crc32c::crc32c(black_box(&buffer));
                }
                black_box(acc);
                let elapsed = start.elapsed();
                let mut tally = CRC_TALLY.lock().expect("crc lock");
                tally.0 += iters * buffer.len() as u64;
                tally.1 += elapsed;
                elapsed
            })
        });
    }
    group.finish();

    // The crashed template: ~1 GiB of log after the checkpoint of its creation.
    let template = temp_dir("template-log");
    let path = template.path().join("store");
    {
        let store = Store::create(&path, DIMENSION, options()).expect("creating the store");
        let log_start = store.wal().end_lsn().get();
        let start = Instant::now();
        let inserted = insert_many(&store, "v", u64::MAX, LOG_TXN, sizes().big_log);
        store.sync().expect("sync");
        let elapsed = start.elapsed();
        let log = store.wal().end_lsn().get() - log_start;
        note(format!(
            "1 GiB-log template: {inserted} inserts in transactions of {LOG_TXN}, {:.0} MiB of log written and \
             synced in {:.2} s ({:.2} GB/s), then dropped without a close",
            log as f64 / MIB as f64,
            elapsed.as_secs_f64(),
            log as f64 / elapsed.as_secs_f64() / 1e9
        ));
        crash(store);
        note(format!(
            "1 GiB-log template: {:.0} MiB in all on disk (copied for each open)",
            allocated_bytes(&path) as f64 / MIB as f64
        ));
        let wal_dir = path.join("wal");
        let mut buf = vec![0u8; MIB as usize];
        let mut group = c.benchmark_group("baseline");
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Bytes(log));
        timing(&mut group, 500, 3000, 10);
        group.bench_function("read_crc_log", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(read_and_crc_log(&wal_dir, log_start, log_start + log, &mut buf));
                }
                let elapsed = start.elapsed();
                let mut tally = READ_CRC_TALLY.lock().expect("read-crc lock");
                tally.0 += iters * log;
                tally.1 += elapsed;
                elapsed
            })
        });
        group.finish();
    }

    // A first open decides how: under criterion if its ten samples fit the budget, else as many
    // more opens as fit, outside criterion's sampler (criterion takes at least ten samples).
    let mut probe = FsyncProbe::new();
    let started = Instant::now();
    open_copy(OPEN_BIG_LOG, &path, &mut probe);
    let per_open = started.elapsed();
    if quick() || per_open * 11 <= BIG_LOG_BUDGET {
        let mut group = c.benchmark_group("recovery");
        group.sampling_mode(SamplingMode::Flat);
        group.throughput(Throughput::Bytes(sizes().big_log));
        timing(&mut group, 1, 100, 10);
        group.bench_function("open_crashed_1gib_wal", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| open_copy(OPEN_BIG_LOG, &path, &mut probe)).sum())
        });
        group.finish();
    } else {
        let mut opens = 1;
        while started.elapsed() + per_open <= BIG_LOG_BUDGET {
            open_copy(OPEN_BIG_LOG, &path, &mut probe);
            opens += 1;
        }
        note(format!(
            "{OPEN_BIG_LOG}: one open takes {:.1} s with its copy, so criterion's ten samples do not fit the {} s \
             budget: {opens} opens timed outside criterion",
            per_open.as_secs_f64(),
            BIG_LOG_BUDGET.as_secs()
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. Open after a crash with 1,000 commits since the checkpoint, at two store sizes.

/// A checkpointed store of `vector_bytes` of vectors with `commits` single-insert commits after
/// the checkpoint, crashed; and a copy of it recovered and closed cleanly.
struct SizedTemplates {
    crashed: PathBuf,
    clean: PathBuf,
    _dir: TempDir,
}

impl SizedTemplates {
    fn build(label: &str, vector_bytes: u64) -> SizedTemplates {
        let dir = temp_dir(&format!("template-{label}"));
        let crashed = dir.path().join("crashed");
        let clean = dir.path().join("clean");
        let vectors = vector_bytes / VECTOR_BYTES;
        let start = Instant::now();
        let store = Store::create(&crashed, DIMENSION, options()).expect("creating the store");
        insert_many(&store, "v", vectors, LOAD_TXN, u64::MAX);
        store.checkpoint().expect("checkpoint");
        let log_at_checkpoint = store.wal().end_lsn().get();
        insert_many(&store, "c", sizes().commits, 1, u64::MAX);
        store.sync().expect("sync");
        let log_since = store.wal().end_lsn().get() - log_at_checkpoint;
        let arena = allocated_bytes(&crashed.join("arena"));
        let catalog_pages = std::fs::read_dir(crashed.join("arena"))
            .expect("listing the arena")
            .map(|e| e.expect("a directory entry"))
            .filter(|e| e.file_name().to_string_lossy().starts_with("catalog-"))
            .map(|e| e.metadata().expect("metadata").blocks() * 512 / PAGE_BYTES)
            .sum::<u64>();
        crash(store);
        let on_disk = allocated_bytes(&crashed);
        copy_tree(&crashed, &clean);
        Store::open(&clean, options())
            .expect("recovering")
            .close()
            .expect("closing");
        note(format!(
            "{label} template: {vectors} vectors + {} single-insert commits ({:.2} MiB of log) after the \
             checkpoint; arena {:.0} MiB on disk ({catalog_pages} catalog pages), {:.0} MiB in all (copied for \
             each crashed open); built in {:.1} s",
            sizes().commits,
            log_since as f64 / MIB as f64,
            arena as f64 / MIB as f64,
            on_disk as f64 / MIB as f64,
            start.elapsed().as_secs_f64()
        ));
        SizedTemplates {
            crashed,
            clean,
            _dir: dir,
        }
    }
}

fn sized_opens(c: &mut Criterion) {
    let large = SizedTemplates::build("256mib", sizes().large_store);
    let small = SizedTemplates::build("64mib", sizes().small_store);
    let mut probe = FsyncProbe::new();
    let mut group = c.benchmark_group("open");
    group.sampling_mode(SamplingMode::Flat);
    for (name, bench, templates) in [
        (CRASHED_LARGE, "crashed_256mib", &large),
        (CRASHED_SMALL, "crashed_64mib", &small),
    ] {
        timing(&mut group, 1, 100, 10);
        group.bench_function(bench, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| open_copy(name, &templates.crashed, &mut probe))
                    .sum()
            })
        });
    }
    for (name, bench, templates) in [
        (CLEAN_LARGE, "clean_256mib", &large),
        (CLEAN_SMALL, "clean_64mib", &small),
    ] {
        timing(&mut group, 1, 1000, 10);
        group.bench_function(bench, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        let (store, sample) = timed_open(&templates.clean, &mut probe);
                        store.close().expect("closing");
                        record(name, sample)
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// The summary.

fn median_of(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.is_empty() {
        f64::NAN
    } else if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

/// Median over `samples` of `f`, in milliseconds.
fn median_ms(samples: &[OpenSample], f: impl Fn(&OpenSample) -> Duration) -> f64 {
    median_of(samples.iter().map(|s| f(s).as_secs_f64() * 1e3))
}

fn summary(_: &mut Criterion) {
    if quick() {
        println!("recovery benches: test mode, summary skipped");
        return;
    }
    let opens = OPENS.lock().expect("opens lock").clone();
    let (crc_bytes, crc_time) = *CRC_TALLY.lock().expect("crc lock");

    println!();
    println!("== vellum recovery summary ==");
    println!("{}", machine_load());
    for line in NOTES.lock().expect("notes lock").iter() {
        println!("{line}");
    }

    // 1. The long log.
    let crc = crc_bytes as f64 / crc_time.as_secs_f64();
    println!();
    println!("{CRC} over 1 MiB = {:.2} GB/s", crc / 1e9);
    let (read_bytes, read_time) = *READ_CRC_TALLY.lock().expect("read-crc lock");
    let read_crc = read_bytes as f64 / read_time.as_secs_f64();
    println!(
        "baseline/read_crc_log (the template's log range: 1 MiB preads + CRC32C) = {:.2} GB/s",
        read_crc / 1e9
    );
    if let Some(samples) = opens.get(OPEN_BIG_LOG) {
        let last = &samples[samples.len() - 1];
        let log = last.log_bytes() as f64;
        let total_ms = median_ms(samples, |s| s.total);
        let passes = [
            ("scan + index (other)", median_ms(samples, OpenSample::other)),
            ("analysis", median_ms(samples, |s| s.report.analysis_time)),
            ("redo", median_ms(samples, |s| s.report.redo_time)),
            ("undo", median_ms(samples, |s| s.report.undo_time)),
            ("checkpoint", median_ms(samples, |s| s.report.checkpoint_time)),
        ];
        println!(
            "{OPEN_BIG_LOG}: {} opens, log {:.0} MiB (analysis {}..{}; scan {}..{}, {} records), {} records \
             redone, {} losers",
            samples.len(),
            log / MIB as f64,
            last.report.analysis_start,
            last.report.end_lsn,
            last.report.scan.start_lsn,
            last.report.scan.end_lsn,
            last.report.scan.records,
            last.report.records_redone,
            last.report.losers.len()
        );
        println!("  open time median {total_ms:.0} ms; median per part:");
        for (part, ms) in passes {
            println!(
                "    {part:<22} {ms:>8.0} ms  ({:>5.1}%, {:>6.2} GB/s of log)",
                ms / total_ms * 100.0,
                log / (ms / 1e3) / 1e9
            );
        }
        let rate = log / (total_ms / 1e3);
        println!(
            "recovery = {:.2} GB/s of log (target >= 1 GB/s){}",
            rate / 1e9,
            verdict(rate >= 1e9)
        );
        println!("ratio recovery / crc32c = {:.3}", rate / crc);
        println!("ratio recovery / read_crc_log = {:.3}", rate / read_crc);
        let without_checkpoint = total_ms - passes[4].1;
        println!(
            "  without the final checkpoint: {:.2} GB/s of log, ratio to crc32c {:.3}",
            log / (without_checkpoint / 1e3) / 1e9,
            log / (without_checkpoint / 1e3) / crc
        );
        println!(
            "  fdatasync (pwrite 4 KiB) right after the opens: median {:.2} ms",
            median_ms(samples, |s| s.fsync)
        );
    }

    // 2 and 3. The two store sizes.
    println!();
    println!(
        "Open after a crash with {} commits since the checkpoint, and after a clean close (median ms):",
        sizes().commits
    );
    println!(
        "  {:<22} {:>5} {:>8} {:>9} {:>8} {:>8} {:>8} {:>10} {:>8} {:>9} {:>7}",
        "benchmark",
        "opens",
        "total",
        "analysis",
        "redo",
        "undo",
        "other",
        "checkpoint",
        "fsync",
        "total/fs",
        "redo KiB"
    );
    for name in [CRASHED_LARGE, CLEAN_LARGE, CRASHED_SMALL, CLEAN_SMALL] {
        let Some(samples) = opens.get(name) else {
            println!("  {name:<22} not run");
            continue;
        };
        let total = median_ms(samples, |s| s.total);
        let fsync = median_ms(samples, |s| s.fsync);
        println!(
            "  {name:<22} {:>5} {total:>8.1} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>10.1} {fsync:>8.2} {:>9.1} {:>7.0}",
            samples.len(),
            median_ms(samples, |s| s.report.analysis_time),
            median_ms(samples, |s| s.report.redo_time),
            median_ms(samples, |s| s.report.undo_time),
            median_ms(samples, OpenSample::other),
            median_ms(samples, |s| s.report.checkpoint_time),
            median_of(samples.iter().map(|s| s.total.as_secs_f64() / s.fsync.as_secs_f64())),
            median_of(samples.iter().map(|s| s.redo_bytes() as f64 / 1024.0)),
        );
    }
    println!("  (other = open time outside the report's passes: log scan, arena mapping, id index rebuild)");
    let total = |name: &str| opens.get(name).map_or(f64::NAN, |s| median_ms(s, |s| s.total));
    let other = |name: &str| opens.get(name).map_or(f64::NAN, |s| median_ms(s, OpenSample::other));
    let crashed = total(CRASHED_LARGE);
    println!(
        "{CRASHED_LARGE} = {crashed:.1} ms (target <= 30 ms){}",
        verdict(crashed <= 30.0)
    );
    let vector_ratio = sizes().large_store as f64 / sizes().small_store as f64;
    println!(
        "ratio 256 MiB / 64 MiB ({vector_ratio:.0}x the vectors): crashed open {:.2}, clean open {:.2}, other {:.2} \
         (crashed) {:.2} (clean)",
        crashed / total(CRASHED_SMALL),
        total(CLEAN_LARGE) / total(CLEAN_SMALL),
        other(CRASHED_LARGE) / other(CRASHED_SMALL),
        other(CLEAN_LARGE) / other(CLEAN_SMALL),
    );
    let extra_vectors = (sizes().large_store - sizes().small_store) / VECTOR_BYTES;
    println!(
        "  size-dependent cost (clean other, 256 - 64 MiB): {:.1} ms for {extra_vectors} more vectors = {:.0} ns per \
         vector",
        other(CLEAN_LARGE) - other(CLEAN_SMALL),
        (other(CLEAN_LARGE) - other(CLEAN_SMALL)) * 1e6 / extra_vectors as f64
    );
    println!();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = big_log, sized_opens, summary
}
criterion_main!(benches);
