//! Benchmarks of the write-ahead log, with the raw I/O and CPU baselines they are judged against,
//! all measured in the same run.
//!
//! - `baseline/*`: pwrite 4 KiB + fdatasync on a zero-filled preallocated file, the same on a
//!   file preallocated with `fallocate` only (unwritten extents), memcpy 1 KiB into a shared
//!   mapping + msync of the page, CRC32C over 1 MiB, and plain 1 KiB memcpy into a large buffer.
//! - `wal/*`: append 1 KiB + commit (`SyncMode::Always`) with one and with four writers (group
//!   commit), append 1 KiB with `SyncMode::Never`, and `Wal::open` of a ~256 MiB log (which
//!   scans and CRC-checks every record). `wal/append_1k_unsynced_recycled` is a diagnostic: the
//!   unsynced appends with the log released as it goes, so its new segments are recycled files.
//!
//! After the groups a summary prints every figure per second and its ratio to its baseline and
//! target. The durable-write figures (fdatasync-bound: commits and the pwrite/mmap baselines) are
//! measured again for it in short interleaved rounds, because the fdatasync latency of a shared
//! disk drifts by large factors within a run and a ratio of two figures taken a minute apart can
//! be off by as much. The other figures come from the criterion runs themselves: every benchmark
//! times its own loop (`iter_custom`) and adds the time and iteration count to a tally, so their
//! rates are over every timed iteration of the run (criterion's warm-up included).
//!
//! `cargo test --benches` (criterion's test mode: no `--bench`, or `--test`) runs every benchmark
//! once on tiny files and skips the summary.
//!
//! Files live under `std::env::temp_dir()`: point `TMPDIR` at the disk to measure (not tmpfs).

mod common;
use common::{create_new, pattern, quick, rate_for, temp_dir, timing, verdict};

use std::collections::BTreeMap;
use std::fs::File;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use memmap2::MmapMut;
use tempfile::TempDir;
use vellum::storage::{RealStorage, Storage};
use vellum::wal::{Geometry, LogIdentity, RecordSpec, Wal, WalConfig};
use vellum::{RecoveryMode, SyncMode};

/// The payload of every benchmarked record, and of the memcpy baselines.
const RECORD_BYTES: usize = 1024;
/// The block of the pwrite baselines.
const BLOCK_BYTES: usize = 4096;
/// The WAL page size.
const PAGE_BYTES: u32 = 4096;
/// Concurrent committers of `wal/commit_1k_4writers`.
const WRITERS: u64 = 4;
/// `wal/append_1k_unsynced_recycled` releases the written log (untimed) every this many appends.
const RELEASE_EVERY: u64 = 16 * 1024;

const MIB: u64 = 1 << 20;

const PWRITE: &str = "baseline/pwrite_4k_fdatasync";
const MMAP: &str = "baseline/mmap_memcpy_msync";
const FALLOCATED: &str = "baseline/pwrite_4k_fdatasync_fallocated";
const CRC: &str = "baseline/crc32c";
const MEMCPY: &str = "baseline/memcpy";
const COMMIT_1: &str = "wal/commit_1k_1writer";
const COMMIT_4: &str = "wal/commit_1k_4writers";
const APPEND: &str = "wal/append_1k_unsynced";
const APPEND_RECYCLED: &str = "wal/append_1k_unsynced_recycled";
const SCAN: &str = "wal/scan_on_open";

/// File and buffer sizes: the real ones, or tiny ones in quick mode.
struct Sizes {
    /// The zero-filled files of the pwrite and mmap baselines.
    preallocated_file: u64,
    /// The `fallocate`d file; a new one is made once a run would reach its end.
    fallocated_file: u64,
    /// WAL segment size.
    segment: u64,
    /// The log `wal/scan_on_open` opens.
    scan_log: u64,
    /// `wal/append_1k_unsynced` starts a new log once its log is this long.
    append_log_cap: u64,
    /// The destination of `baseline/memcpy`.
    memcpy_arena: usize,
    /// The buffer of `baseline/crc32c`.
    crc_buffer: usize,
}

fn sizes() -> &'static Sizes {
    static SIZES: OnceLock<Sizes> = OnceLock::new();
    SIZES.get_or_init(|| {
        if quick() {
            Sizes {
                preallocated_file: MIB,
                fallocated_file: MIB,
                segment: MIB,
                scan_log: 3 * MIB,
                append_log_cap: 16 * MIB,
                memcpy_arena: MIB as usize,
                crc_buffer: MIB as usize,
            }
        } else {
            Sizes {
                preallocated_file: 64 * MIB,
                fallocated_file: 256 * MIB,
                segment: 64 * MIB,
                // Stays inside four 64 MiB segments.
                scan_log: 255 * MIB,
                append_log_cap: 4096 * MIB,
                memcpy_arena: 64 << 20,
                crc_buffer: 1 << 20,
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Tallies for the summary.

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    iters: u64,
    elapsed: Duration,
    /// Bytes one iteration processes (0: a rate in operations only).
    bytes_per_iter: u64,
}

impl Tally {
    fn per_second(&self) -> f64 {
        self.iters as f64 / self.elapsed.as_secs_f64()
    }

    fn bytes_per_second(&self) -> f64 {
        self.per_second() * self.bytes_per_iter as f64
    }
}

static TALLIES: Mutex<BTreeMap<&'static str, Tally>> = Mutex::new(BTreeMap::new());

/// Adds a timed run of `iters` iterations to `name`'s tally and returns `elapsed` (for
/// `iter_custom`).
fn tally(name: &'static str, bytes_per_iter: u64, iters: u64, elapsed: Duration) -> Duration {
    let mut tallies = TALLIES.lock().expect("tally lock");
    let entry = tallies.entry(name).or_default();
    entry.iters += iters;
    entry.elapsed += elapsed;
    entry.bytes_per_iter = bytes_per_iter;
    elapsed
}

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// A file of `len` bytes written with zeros and synced: every block allocated and written.
fn zero_filled(path: &Path, len: u64) -> File {
    let file = create_new(path);
    let zeros = vec![0u8; MIB as usize];
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(MIB);
        file.write_all_at(&zeros[..n as usize], offset).expect("zero-filling");
        offset += n;
    }
    file.sync_all().expect("syncing the zero-filled file");
    file
}

/// A file of `len` bytes preallocated with `fallocate` only: its extents are unwritten.
fn fallocated(path: &Path, len: u64) -> File {
    let file = create_new(path);
    let len = libc::off_t::try_from(len).expect("file length fits off_t");
    // SAFETY: plain syscall on a descriptor this function owns; no memory is passed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    file.sync_all().expect("syncing the fallocated file");
    file
}

/// A loop of pwrite `BLOCK_BYTES` + fdatasync, moving forward through a file.
struct SyncedWrites {
    file: File,
    len: u64,
    pos: u64,
    block: Vec<u8>,
}

impl SyncedWrites {
    fn new(file: File, len: u64) -> SyncedWrites {
        SyncedWrites {
            file,
            len,
            pos: 0,
            block: pattern(BLOCK_BYTES, 7),
        }
    }

    /// Blocks left before the loop would wrap to the start of the file.
    fn blocks_left(&self) -> u64 {
        (self.len - self.pos) / BLOCK_BYTES as u64
    }

    fn step(&mut self) {
        if self.pos + BLOCK_BYTES as u64 > self.len {
            self.pos = 0;
        }
        self.file.write_all_at(&self.block, self.pos).expect("pwrite");
        self.file.sync_data().expect("fdatasync");
        self.pos += BLOCK_BYTES as u64;
    }

    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.step();
        }
        start.elapsed()
    }
}

/// A loop of memcpy `RECORD_BYTES` into a shared writable mapping of a zero-filled file + msync
/// of the page touched, moving forward through the file.
struct MappedWrites {
    map: MmapMut,
    pos: usize,
    record: Vec<u8>,
}

impl MappedWrites {
    fn new(path: &Path, len: u64) -> MappedWrites {
        let file = zero_filled(path, len);
        // SAFETY: the file is this benchmark's own (in a fresh temp dir); nothing truncates or
        // otherwise touches it while it is mapped.
        let map = unsafe { MmapMut::map_mut(&file) }.expect("mmap");
        MappedWrites {
            map,
            pos: 0,
            record: pattern(RECORD_BYTES, 3),
        }
    }

    fn step(&mut self) {
        if self.pos + RECORD_BYTES > self.map.len() {
            self.pos = 0;
        }
        self.map[self.pos..self.pos + RECORD_BYTES].copy_from_slice(&self.record);
        let page = self.pos & !(BLOCK_BYTES - 1);
        self.map.flush_range(page, BLOCK_BYTES).expect("msync");
        self.pos += RECORD_BYTES;
    }

    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.step();
        }
        start.elapsed()
    }
}

fn storage() -> Arc<dyn Storage> {
    Arc::new(RealStorage::new())
}

fn wal_config(sync: SyncMode) -> WalConfig {
    let geometry = Geometry::new(PAGE_BYTES, sizes().segment).expect("a valid geometry");
    WalConfig::new(
        geometry,
        LogIdentity {
            store_id: 1,
            timeline: 1,
        },
        sync,
    )
}

fn spec(txn_id: u64) -> RecordSpec {
    RecordSpec {
        kind: 7,
        flags: 0,
        txn_id,
        prev_lsn: 0,
        timestamp_us: 0,
    }
}

/// A fresh log in its own temp dir.
struct WalFixture {
    wal: Wal,
    // Dropped after `wal` (field order): the log's files go once its threads have stopped.
    _dir: TempDir,
}

impl WalFixture {
    fn new(label: &str, sync: SyncMode) -> WalFixture {
        let dir = temp_dir(label);
        let path = dir.path().join("wal");
        let wal = Wal::create(storage(), &path, wal_config(sync)).expect("creating the WAL");
        common::settle(&path, sizes().segment);
        WalFixture { wal, _dir: dir }
    }
}

// ---------------------------------------------------------------------------------------------
// Baselines.

fn baselines(c: &mut Criterion) {
    let dir = temp_dir("baseline");
    let mut group = c.benchmark_group("baseline");

    // 1. pwrite 4 KiB + fdatasync on a zero-filled, synced file.
    {
        let len = sizes().preallocated_file;
        let mut writes = SyncedWrites::new(zero_filled(&dir.path().join("zeroed"), len), len);
        group.throughput(Throughput::Elements(1));
        timing(&mut group, 500, 3000, 10);
        group.bench_function("pwrite_4k_fdatasync", |b| {
            b.iter_custom(|iters| tally(PWRITE, 0, iters, writes.run(iters)))
        });
    }

    // 2. memcpy 1 KiB into a shared writable mapping of a zero-filled file + msync of the page.
    {
        let mut writes = MappedWrites::new(&dir.path().join("mapped"), sizes().preallocated_file);
        group.throughput(Throughput::Elements(1));
        timing(&mut group, 500, 3000, 10);
        group.bench_function("mmap_memcpy_msync", |b| {
            b.iter_custom(|iters| tally(MMAP, 0, iters, writes.run(iters)))
        });
    }

    // 3. As 1, on a file preallocated by fallocate alone: every write lands on an unwritten
    //    extent (a fresh file is made, untimed, before a run would wrap around).
    {
        let len = sizes().fallocated_file;
        let mut seq = 0u32;
        let fresh = |seq: &mut u32| -> (PathBuf, SyncedWrites) {
            *seq += 1;
            let path = dir.path().join(format!("fallocated-{seq}"));
            let writes = SyncedWrites::new(fallocated(&path, len), len);
            (path, writes)
        };
        let (mut path, mut writes) = fresh(&mut seq);
        group.throughput(Throughput::Elements(1));
        timing(&mut group, 500, 3000, 10);
        group.bench_function("pwrite_4k_fdatasync_fallocated", |b| {
            b.iter_custom(|iters| {
                if writes.blocks_left() < iters {
                    std::fs::remove_file(&path).expect("removing a used fallocated file");
                    (path, writes) = fresh(&mut seq);
                }
                tally(FALLOCATED, 0, iters, writes.run(iters))
            })
        });
    }

    // 4. CRC32C over 1 MiB.
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
                tally(CRC, buffer.len() as u64, iters, start.elapsed())
            })
        });
    }

    // 5. memcpy of 1 KiB records, one after another, into a buffer much larger than the caches.
    {
        // Non-zero fill: every page is touched before it is measured.
        let mut arena = vec![0x5au8; sizes().memcpy_arena];
        let record = pattern(RECORD_BYTES, 5);
        let mut pos = 0usize;
        group.throughput(Throughput::Bytes(RECORD_BYTES as u64));
        timing(&mut group, 300, 1500, 20);
        group.bench_function("memcpy", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    if pos + RECORD_BYTES > arena.len() {
                        pos = 0;
                    }
                    arena[pos..pos + RECORD_BYTES].copy_from_slice(black_box(&record[..]));
                    pos += RECORD_BYTES;
                }
                black_box(&mut arena);
                tally(MEMCPY, RECORD_BYTES as u64, iters, start.elapsed())
            })
        });
    }

    group.finish();
}

// ---------------------------------------------------------------------------------------------
// The WAL.

fn commits(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal");
    group.throughput(Throughput::Elements(1));

    // 6. One writer: append 1 KiB + commit, durable on return.
    {
        let fixture = WalFixture::new("commit1", SyncMode::Always);
        let wal = &fixture.wal;
        let record = pattern(RECORD_BYTES, 1);
        let mut txn = 0u64;
        timing(&mut group, 500, 3000, 10);
        group.bench_function("commit_1k_1writer", |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    txn += 1;
                    let lsn = wal.append(&spec(txn), &[&record]).expect("append");
                    wal.commit(lsn).expect("commit");
                }
                tally(COMMIT_1, 0, iters, start.elapsed())
            })
        });
    }

    // 7. Four writers each appending 1 KiB + committing in a loop: aggregate commits/s.
    {
        let fixture = WalFixture::new("commit4", SyncMode::Always);
        let wal = &fixture.wal;
        let records: Vec<Vec<u8>> = (0..WRITERS).map(|w| pattern(RECORD_BYTES, w as u8)).collect();
        let mut round = 0u64;
        timing(&mut group, 500, 3000, 10);
        group.bench_function("commit_1k_4writers", |b| {
            b.iter_custom(|iters| {
                round += 1;
                let barrier = Barrier::new(WRITERS as usize + 1);
                let elapsed = std::thread::scope(|s| {
                    let writers: Vec<_> = (0..WRITERS)
                        .map(|w| {
                            let commits = iters / WRITERS + u64::from(w < iters % WRITERS);
                            let (barrier, record) = (&barrier, &records[w as usize]);
                            s.spawn(move || {
                                barrier.wait();
                                for i in 0..commits {
                                    let txn = (round << 40) | (w << 32) | i;
                                    let lsn = wal.append(&spec(txn), &[record]).expect("append");
                                    wal.commit(lsn).expect("commit");
                                }
                            })
                        })
                        .collect();
                    barrier.wait();
                    let start = Instant::now();
                    for writer in writers {
                        writer.join().expect("a writer panicked");
                    }
                    start.elapsed()
                });
                tally(COMMIT_4, 0, iters, elapsed)
            })
        });
    }

    group.finish();
}

fn appends(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal");

    // 8. Append 1 KiB records with SyncMode::Never: the in-memory tail, its write-outs (pwrite)
    //    and the installation of new segments as the log grows. The log is made untimed; past
    //    `append_log_cap` it is replaced (untimed) to bound the disk used.
    {
        let mut fixture = WalFixture::new("append", SyncMode::Never);
        let record = pattern(RECORD_BYTES, 2);
        let mut txn = 0u64;
        group.throughput(Throughput::Bytes(RECORD_BYTES as u64));
        timing(&mut group, 1000, 4000, 10);
        group.bench_function("append_1k_unsynced", |b| {
            b.iter_custom(|iters| {
                if fixture.wal.end_lsn().get() > sizes().append_log_cap {
                    // Dropped without a close: the files are deleted, so nothing needs syncing.
                    fixture = WalFixture::new("append", SyncMode::Never);
                }
                let wal = &fixture.wal;
                let start = Instant::now();
                for _ in 0..iters {
                    txn += 1;
                    black_box(wal.append(&spec(txn), &[&record]).expect("append"));
                }
                tally(APPEND, RECORD_BYTES as u64, iters, start.elapsed())
            })
        });
    }

    // 8b. Not in the brief, a diagnostic for 8: the same appends with the written log released
    //    as it goes (untimed, as checkpoints would), so that new segments are recycled spares
    //    (a rename) instead of new files. The gap to 8 is the cost of a new segment (allocated,
    //    as the log grows fast) for every segment the log grows by.
    {
        let fixture = WalFixture::new("append-recycled", SyncMode::Never);
        let wal = &fixture.wal;
        let record = pattern(RECORD_BYTES, 4);
        let mut txn = 0u64;
        group.throughput(Throughput::Bytes(RECORD_BYTES as u64));
        timing(&mut group, 1000, 4000, 10);
        group.bench_function("append_1k_unsynced_recycled", |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let chunk = (iters - done).min(RELEASE_EVERY);
                    let start = Instant::now();
                    for _ in 0..chunk {
                        txn += 1;
                        black_box(wal.append(&spec(txn), &[&record]).expect("append"));
                    }
                    elapsed += start.elapsed();
                    done += chunk;
                    wal.release_before(wal.written_lsn())
                        .expect("releasing the written log");
                }
                tally(APPEND_RECYCLED, RECORD_BYTES as u64, iters, elapsed)
            })
        });
    }

    group.finish();
}

fn scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal");

    // 9. Wal::open of a log of ~256 MiB of 1 KiB records (built once, untimed): it scans and
    //    CRC-checks every record. The files are in the page cache (they were just written).
    {
        let dir = temp_dir("scan");
        let path = dir.path().join("wal");
        let config = wal_config(SyncMode::Never);
        let log_end = {
            let wal = Wal::create(storage(), &path, config.clone()).expect("creating the WAL");
            let record = pattern(RECORD_BYTES, 9);
            let mut txn = 0u64;
            while wal.end_lsn().get() < sizes().scan_log {
                txn += 1;
                wal.append(&spec(txn), &[&record]).expect("append");
            }
            let end = wal.end_lsn().get();
            wal.close().expect("closing the WAL");
            end
        };
        group.throughput(Throughput::Bytes(log_end));
        group.sampling_mode(SamplingMode::Flat);
        timing(&mut group, 500, 2000, 10);
        group.bench_function("scan_on_open", |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let (wal, report) =
                        Wal::open(storage(), &path, config.clone(), None, RecoveryMode::TolerateTornTail)
                            .expect("opening the WAL");
                    elapsed += start.elapsed();
                    assert_eq!(report.end_lsn.get(), log_end, "the scan finds the whole log");
                    assert!(report.torn_tail.is_none(), "a cleanly closed log has no torn tail");
                    drop(wal);
                }
                tally(SCAN, log_end, iters, elapsed)
            })
        });
    }

    group.finish();
}

// ---------------------------------------------------------------------------------------------
// The summary.

/// Interleaved rounds of the summary's durable-write comparison.
const ROUNDS: usize = 6;
/// How long each figure runs in each round.
const ROUND_SLICE: Duration = Duration::from_millis(200);

/// `writers` threads each appending 1 KiB + committing for `slice`: aggregate commits per second.
fn commit_rate(wal: &Wal, writers: u64, slice: Duration) -> f64 {
    let barrier = Barrier::new(writers as usize + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let barrier = &barrier;
                s.spawn(move || {
                    let record = pattern(RECORD_BYTES, w as u8);
                    barrier.wait();
                    let start = Instant::now();
                    let mut commits = 0u64;
                    while start.elapsed() < slice {
                        let lsn = wal.append(&spec((w << 32) | commits), &[&record]).expect("append");
                        wal.commit(lsn).expect("commit");
                        commits += 1;
                    }
                    commits
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let commits: u64 = handles.into_iter().map(|h| h.join().expect("a writer panicked")).sum();
        commits as f64 / start.elapsed().as_secs_f64()
    })
}

/// The durable-write figures, measured again in short interleaved rounds so that their ratios
/// compare measurements taken moments apart: on a shared machine the fdatasync latency drifts
/// by large factors over a run. Returns each figure's rate per round.
fn paired_rounds() -> BTreeMap<&'static str, Vec<f64>> {
    let dir = temp_dir("summary");
    let len = sizes().preallocated_file;
    let mut zeroed = SyncedWrites::new(zero_filled(&dir.path().join("zeroed"), len), len);
    let fallocated_len = sizes().fallocated_file;
    let mut unwritten = SyncedWrites::new(
        fallocated(&dir.path().join("fallocated"), fallocated_len),
        fallocated_len,
    );
    let mut mapped = MappedWrites::new(&dir.path().join("mapped"), len);
    let fixture = WalFixture::new("summary", SyncMode::Always);
    let mut rates: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        let mut record = |name: &'static str, rate: f64| rates.entry(name).or_default().push(rate);
        record(PWRITE, rate_for(ROUND_SLICE, || zeroed.step()));
        record(COMMIT_1, commit_rate(&fixture.wal, 1, ROUND_SLICE));
        record(COMMIT_4, commit_rate(&fixture.wal, WRITERS, ROUND_SLICE));
        // Each round writes blocks not written before (the file outlasts every round).
        record(FALLOCATED, rate_for(ROUND_SLICE, || unwritten.step()));
        record(MMAP, rate_for(ROUND_SLICE, || mapped.step()));
    }
    rates
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}

fn short(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn target_note(value: f64, target: Option<f64>, unit: &str) -> String {
    match target {
        Some(t) => format!(" (target >= {t}{unit}){}", verdict(value >= t)),
        None => String::new(),
    }
}

fn summary(_: &mut Criterion) {
    if quick() {
        println!("wal benches: test mode, summary skipped");
        return;
    }
    let tallies = TALLIES.lock().expect("tally lock").clone();
    let get = |name: &str| tallies.get(name).copied();

    println!();
    println!("== vellum WAL summary ==");

    // Durable writes: ratios from interleaved rounds, if criterion ran any of them.
    let durable = [PWRITE, COMMIT_1, COMMIT_4, FALLOCATED, MMAP];
    if durable.iter().any(|name| tallies.contains_key(name)) {
        let rounds = paired_rounds();
        println!(
            "Durable writes, {ROUNDS} interleaved rounds of {} ms per figure: median rate (range over rounds)",
            ROUND_SLICE.as_millis()
        );
        for name in durable {
            let rates = &rounds[name];
            let (lo, hi) = rates
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
            println!("  {name:<42} {:>9.0} op/s  ({lo:.0}..{hi:.0})", median(rates));
        }
        let paired = |num: &str, den: &str, target: Option<f64>| {
            let per_round: Vec<f64> = rounds[num].iter().zip(&rounds[den]).map(|(n, d)| n / d).collect();
            let (lo, hi) = per_round
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
            let r = median(&per_round);
            println!(
                "ratio {} / {} = {r:.2}{}  (rounds {lo:.2}..{hi:.2})",
                short(num),
                short(den),
                target_note(r, target, "")
            );
        };
        paired(COMMIT_1, PWRITE, Some(0.95));
        paired(COMMIT_4, PWRITE, Some(3.5));
        paired(COMMIT_4, COMMIT_1, None);
        // The claims behind the WAL's design: preallocating by fallocate alone is slower
        // (ratio < 1), and pwrite + fdatasync beats stores into a shared mapping + msync.
        paired(FALLOCATED, PWRITE, None);
        paired(MMAP, PWRITE, None);
        println!();
    }

    println!("Criterion runs: rates over every timed iteration (warm-up included)");
    println!(
        "  {:<42} {:>10} {:>12} {:>14} {:>9}",
        "benchmark", "iterations", "per iter", "per second", "GB/s"
    );
    for (name, t) in &tallies {
        let per_iter = t.elapsed.as_secs_f64() / t.iters as f64;
        let gbps = if t.bytes_per_iter > 0 {
            format!("{:.3}", t.bytes_per_second() / 1e9)
        } else {
            "-".into()
        };
        println!(
            "  {name:<42} {:>10} {:>12} {:>9.0} op/s {gbps:>9}",
            t.iters,
            human_time(per_iter),
            t.per_second(),
        );
    }
    let ratio = |num: &str, den: &str, bytes: bool, target: Option<f64>| {
        let label = format!("ratio {} / {}", short(num), short(den));
        match (get(num), get(den)) {
            (Some(n), Some(d)) => {
                let r = if bytes {
                    n.bytes_per_second() / d.bytes_per_second()
                } else {
                    n.per_second() / d.per_second()
                };
                println!("{label} = {r:.3}{}", target_note(r, target, ""));
            }
            _ => println!("{label} = n/a (not run)"),
        }
    };
    let bandwidth = |name: &str, target: Option<f64>| match get(name) {
        Some(t) => {
            let gbps = t.bytes_per_second() / 1e9;
            println!("{} = {gbps:.2} GB/s{}", short(name), target_note(gbps, target, " GB/s"));
        }
        None => println!("{} = n/a (not run)", short(name)),
    };
    bandwidth(APPEND, Some(2.0));
    ratio(APPEND, MEMCPY, true, None);
    bandwidth(APPEND_RECYCLED, None);
    ratio(APPEND_RECYCLED, APPEND, true, None);
    bandwidth(SCAN, Some(2.0));
    ratio(SCAN, CRC, true, None);
    println!("(the durable-write ratios over the criterion runs, not interleaved:)");
    ratio(COMMIT_1, PWRITE, false, None);
    ratio(COMMIT_4, PWRITE, false, None);
    ratio(FALLOCATED, PWRITE, false, None);
    ratio(MMAP, PWRITE, false, None);
    println!();
}

fn human_time(secs: f64) -> String {
    if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else if secs >= 1e-6 {
        format!("{:.2} µs", secs * 1e6)
    } else {
        format!("{:.1} ns", secs * 1e9)
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = baselines, commits, appends, scan, summary
}
criterion_main!(benches);
