//! Benchmarks of the store, beside baselines measured in the same run.
//!
//! - `get/*`: `Store::get` on 1,000,000 vectors of dimension 128, in a random order, beside a
//!   plain `HashMap<String, Vec<f32>>` holding the same ids and vectors. Every lookup reads the
//!   first component of its vector. The ids to look up are laid out in access order, so neither
//!   side pays for fetching the key. Latency is timed in batches of 1,000 lookups (one `Instant`
//!   per batch: a per-call `Instant` costs as much as a lookup): p50 is the median batch mean,
//!   the mean is over every timed lookup. The load (`SyncMode::Never`, transactions of 10,000
//!   inserts, no automatic checkpoints), the checkpoint after it, and a close and reopen (so no
//!   background work of the load is left) are timed once and printed.
//! - `txn/*`: transactions of 1,000 inserts of 1 KiB vectors (dimension 256) with
//!   `SyncMode::Always`: bytes of vector data committed per second. `txn/store` runs without
//!   automatic checkpoints (the commit path alone: ~1 MiB of log + one fdatasync per
//!   transaction); `txn/store_checkpointing` is a diagnostic with the default checkpoint interval
//!   (256 MiB of log), so background checkpoints share the disk. Baseline:
//!   `txn/pwrite_1m_fdatasync`, pwrite 1 MiB + fdatasync on a zero-filled preallocated file.
//!   A store is replaced (untimed) once it holds `txn_store_cap` bytes of vectors.
//!   The summary adds `txn/least_work`, a floor rather than a rival: the least a durable insert
//!   into a log, an arena and an id index can do, written plainly (per vector: format its id,
//!   CRC32C it, append id, CRC and vector to a log buffer, copy it into a warm arena buffer and
//!   insert the id into a `HashMap`; per transaction: pwrite the buffer and fdatasync, on the
//!   same zero-filled file kind as the baseline). No page headers, catalog, undo or concurrency:
//!   what the store achieves is judged against what this much work costs on the same machine.
//! - `checkpoint/store`: a fresh store loaded with 100,000 vectors of dimension 256 (~110 MB of
//!   pages; no automatic checkpoints; the log is synced and the segment preallocator settled,
//!   untimed), then `Store::checkpoint` timed. (100,000 rather than more because each of
//!   criterion's eleven rounds needs its own freshly loaded store, and a round of 200,000 takes
//!   over ten seconds with the engine as measured.) The bytes it writes are measured as the
//!   growth of the allocated blocks of the arena files (cross-checked against the count of
//!   vector pages).
//!   Right after each checkpoint, two baselines write the same byte count to a fresh file in
//!   1 MiB pwrites: with one fdatasync at the end (the target's reference) and with an
//!   fdatasync per MiB (the checkpoint's own sync granularity: one batch of 64 16 KiB pages).
//!
//! After the groups a summary prints every figure, its ratio to its baseline and its target.
//! Ratios are taken between measurements made moments apart, because on a shared machine
//! other processes' load and the fdatasync latency of the disk drift by large factors within
//! a run: after the `get` benchmarks, the two lookups run again for a few seconds, alternating
//! in blocks of 50 batches (the ratio is the median over pairs of adjacent blocks); the
//! transaction figures are measured again in short interleaved rounds; each checkpoint round
//! runs its own baselines immediately after it. The summary also prints the load average.
//!
//! `cargo test --benches` (criterion's test mode: no `--bench`, or `--test`) runs every
//! benchmark once on tiny stores and skips the summary.
//!
//! Files live under `std::env::temp_dir()`: point `TMPDIR` at the disk to measure (not tmpfs).

mod common;
use common::{create_new, fill_vector, machine_load, pattern, quick, rate_for, temp_dir, timing, verdict};

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tempfile::TempDir;
use vellum::rng::SplitMix64;
use vellum::{Options, Store, SyncMode};

const MIB: u64 = 1 << 20;
/// Lookups per timed batch of the `get` benchmarks.
const GET_BATCH: u64 = 1000;
/// How long the interleaved lookups run after the `get` benchmarks.
const PAIRED_LOOKUPS_TIME: Duration = Duration::from_secs(6);
/// Batches per block of the interleaved lookups.
const PAIRED_BLOCK: usize = 50;
/// Dimension of the `get` store (512-byte vectors).
const GET_DIMENSION: u32 = 128;
/// Inserts per transaction of every load.
const LOAD_TXN: u64 = 10_000;
/// Dimension of the transaction and checkpoint stores: 1 KiB vectors.
const WIDE_DIMENSION: u32 = 256;
const WIDE_VECTOR_BYTES: u64 = WIDE_DIMENSION as u64 * 4;
/// Inserts per transaction of `txn/*`.
const TXN_INSERTS: u64 = 1000;
/// Bytes of vector data one `txn/*` transaction commits.
const TXN_BYTES: u64 = TXN_INSERTS * WIDE_VECTOR_BYTES;
/// The default page size (`Options::default()`).
const PAGE_BYTES: u32 = 16 * 1024;

const HASHMAP_GET: &str = "get/hashmap";
const STORE_GET: &str = "get/store";
const PWRITE_1M: &str = "txn/pwrite_1m_fdatasync";
const TXN: &str = "txn/store";
const TXN_CHECKPOINTING: &str = "txn/store_checkpointing";
const LEAST_WORK: &str = "txn/least_work";
const CHECKPOINT: &str = "checkpoint/store";

/// Store and file sizes: the real ones, or tiny ones in quick mode.
struct Sizes {
    /// Vectors of the `get` store and map.
    get_vectors: u64,
    /// A `txn/*` store is replaced once it holds this many bytes of vectors.
    txn_store_cap: u64,
    /// The zero-filled file of `txn/pwrite_1m_fdatasync` (written round and round).
    pwrite_file: u64,
    /// Vectors loaded before each timed checkpoint.
    checkpoint_vectors: u64,
}

fn sizes() -> &'static Sizes {
    static SIZES: OnceLock<Sizes> = OnceLock::new();
    SIZES.get_or_init(|| {
        if quick() {
            Sizes {
                get_vectors: 20_000,
                txn_store_cap: 4 * MIB,
                pwrite_file: 4 * MIB,
                checkpoint_vectors: 3_000,
            }
        } else {
            Sizes {
                get_vectors: 1_000_000,
                txn_store_cap: 1024 * MIB,
                pwrite_file: 256 * MIB,
                checkpoint_vectors: 100_000,
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

    fn mean_ns(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.iters as f64
    }
}

static TALLIES: Mutex<BTreeMap<&'static str, Tally>> = Mutex::new(BTreeMap::new());
/// Per-lookup means of every full batch of the `get` benchmarks, in nanoseconds.
static BATCH_MEANS: Mutex<BTreeMap<&'static str, Vec<f64>>> = Mutex::new(BTreeMap::new());
/// Interleaved lookups: (hashmap, store) p50 nanoseconds per lookup of adjacent blocks.
static PAIRED_LOOKUPS: Mutex<Vec<(f64, f64)>> = Mutex::new(Vec::new());
/// The checkpoint rounds, each with its baselines.
static CHECKPOINT_ROUNDS: Mutex<Vec<CheckpointRound>> = Mutex::new(Vec::new());
/// One-off measurements (the loads) for the summary.
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

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

/// Prints a one-off measurement now and again in the summary.
fn note(line: String) {
    println!("{line}");
    NOTES.lock().expect("notes lock").push(line);
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

/// A random permutation of `0..n` (Fisher-Yates) from a seed.
fn permutation(seed: u64, n: u64) -> Vec<u64> {
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<u64> = (0..n).collect();
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

fn id_of(i: u64) -> String {
    format!("id-{i:08}")
}

fn store_options(sync: SyncMode, checkpoint_interval_bytes: u64) -> Options {
    Options {
        sync,
        checkpoint_interval_bytes,
        ..Default::default()
    }
}

/// Inserts vectors `0..count` (ids `id_of(i)`) in transactions of `LOAD_TXN`.
fn load(store: &Store, count: u64) {
    let mut vector = vec![0f32; store.dimension()];
    let mut i = 0;
    while i < count {
        let mut tx = store.begin().expect("begin");
        for _ in 0..LOAD_TXN.min(count - i) {
            fill_vector(i, &mut vector);
            tx.insert(&id_of(i), &vector, &[]).expect("insert");
            i += 1;
        }
        tx.commit().expect("commit");
    }
}

/// Bytes allocated to the files of `dir` (st_blocks), not their apparent length.
fn allocated_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").metadata().expect("metadata").blocks() * 512)
        .sum()
}

// ---------------------------------------------------------------------------------------------
// 1. Lookups.

/// The store and the map of the `get` benchmarks, and the ids in lookup order.
struct GetFixture {
    store: Store,
    map: HashMap<String, Vec<f32>>,
    /// Every id once, in a random order; allocated in that order, so fetching the next key
    /// streams through memory for both sides.
    keys: Vec<String>,
    // Dropped after `store` (field order).
    _dir: TempDir,
}

impl GetFixture {
    fn build() -> GetFixture {
        let count = sizes().get_vectors;
        let dir = temp_dir("get");
        let path = dir.path().join("store");
        let store = Store::create(&path, GET_DIMENSION, store_options(SyncMode::Never, 0)).expect("creating the store");
        common::settle(&path.join("wal"), Options::default().segment_size_bytes);
        let started = Instant::now();
        load(&store, count);
        let loaded = started.elapsed();
        let started = Instant::now();
        store.checkpoint().expect("checkpoint");
        let checkpointed = started.elapsed();
        // Closed and reopened, so that background work the load left (archiving the log the
        // checkpoint retired) is over before the lookups, and the store is as an application
        // opens it.
        let started = Instant::now();
        store.close().expect("closing the store");
        let closed = started.elapsed();
        let started = Instant::now();
        let store = Store::open(&path, store_options(SyncMode::Never, 0)).expect("reopening the store");
        let reopened = started.elapsed();
        let vector_bytes = count * u64::from(GET_DIMENSION) * 4;
        note(format!(
            "get store load: {count} vectors of dim {GET_DIMENSION} in {:.2} s ({:.0} inserts/s, {:.0} MB/s of \
             vectors; SyncMode::Never, {LOAD_TXN} per transaction), then checkpoint {:.2} s, close {:.2} s, \
             reopen {:.2} s",
            loaded.as_secs_f64(),
            count as f64 / loaded.as_secs_f64(),
            vector_bytes as f64 / loaded.as_secs_f64() / 1e6,
            checkpointed.as_secs_f64(),
            closed.as_secs_f64(),
            reopened.as_secs_f64(),
        ));
        assert_eq!(store.len() as u64, count);

        let started = Instant::now();
        let mut map = HashMap::with_capacity(count as usize);
        for i in 0..count {
            let mut vector = vec![0f32; GET_DIMENSION as usize];
            fill_vector(i, &mut vector);
            map.insert(id_of(i), vector);
        }
        note(format!(
            "get baseline: HashMap<String, Vec<f32>> of the same {count} vectors built in {:.2} s",
            started.elapsed().as_secs_f64()
        ));
        let keys = permutation(0x5EED, count).into_iter().map(id_of).collect();
        GetFixture {
            store,
            map,
            keys,
            _dir: dir,
        }
    }
}

/// Times `n` lookups (`op` returns the first component of the vector found); adds the
/// components to `acc` so that nothing is optimised away.
fn lookup_batch(n: u64, acc: &mut f32, mut op: impl FnMut() -> f32) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        *acc += op();
    }
    start.elapsed()
}

/// Runs `iters` lookups in batches of `GET_BATCH`; records each full batch's mean per lookup
/// and returns the total time.
fn timed_lookups(name: &'static str, iters: u64, mut op: impl FnMut() -> f32) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut means = Vec::with_capacity((iters / GET_BATCH) as usize);
    let mut acc = 0f32;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(GET_BATCH);
        let batch = lookup_batch(n, &mut acc, &mut op);
        if n == GET_BATCH {
            means.push(batch.as_nanos() as f64 / n as f64);
        }
        elapsed += batch;
        done += n;
    }
    black_box(acc);
    BATCH_MEANS
        .lock()
        .expect("batch lock")
        .entry(name)
        .or_default()
        .extend(means);
    tally(name, 0, iters, elapsed)
}

/// The next key of `keys`, round and round.
fn next_key<'k>(keys: &'k [String], cursor: &mut usize) -> &'k str {
    let key = &keys[*cursor];
    *cursor += 1;
    if *cursor == keys.len() {
        *cursor = 0;
    }
    key
}

fn gets(c: &mut Criterion) {
    let fixture = GetFixture::build();
    let (keys, map, store) = (&fixture.keys, &fixture.map, &fixture.store);
    let map_get = |cursor: &mut usize| map.get(black_box(next_key(keys, cursor))).expect("a stored id")[0];
    let store_get = |cursor: &mut usize| {
        let vector = store
            .get(black_box(next_key(keys, cursor)))
            .expect("get")
            .expect("a stored id");
        vector[0]
    };
    let mut group = c.benchmark_group("get");
    group.throughput(Throughput::Elements(1));
    for (name, bench, op) in [
        (HASHMAP_GET, "hashmap", &map_get as &dyn Fn(&mut usize) -> f32),
        (STORE_GET, "store", &store_get),
    ] {
        let mut cursor = 0;
        timing(&mut group, 1000, 4000, 20);
        group.bench_function(bench, |b| {
            b.iter_custom(|iters| timed_lookups(name, iters, || op(&mut cursor)))
        });
    }
    group.finish();

    // The same lookups again, the two sides alternating in blocks of `PAIRED_BLOCK` batches
    // (tens of milliseconds: long enough for each side to rewarm the caches, short enough that
    // the two blocks of a pair ran under the same load from other processes). The two sides
    // walk the keys half a round apart, so neither finds keys the other just brought in.
    if !quick() {
        let (mut map_cursor, mut store_cursor) = (0, keys.len() / 2);
        let mut acc = 0f32;
        let mut block = |cursor: &mut usize, op: &dyn Fn(&mut usize) -> f32| {
            let means: Vec<f64> = (0..PAIRED_BLOCK)
                .map(|_| lookup_batch(GET_BATCH, &mut acc, || op(cursor)).as_nanos() as f64 / GET_BATCH as f64)
                .collect();
            median(&means)
        };
        let mut pairs = Vec::new();
        let started = Instant::now();
        while started.elapsed() < PAIRED_LOOKUPS_TIME {
            let map_p50 = block(&mut map_cursor, &map_get);
            let store_p50 = block(&mut store_cursor, &store_get);
            pairs.push((map_p50, store_p50));
        }
        black_box(acc);
        *PAIRED_LOOKUPS.lock().expect("pairs lock") = pairs;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Batched transactions.

/// A store taking transactions of `TXN_INSERTS` new vectors.
struct TxnStore {
    store: Store,
    label: &'static str,
    checkpoint_interval_bytes: u64,
    inserted: u64,
    id: String,
    // Dropped after `store` (field order): the files go once its threads have stopped.
    _dir: TempDir,
}

impl TxnStore {
    fn new(label: &'static str, checkpoint_interval_bytes: u64) -> TxnStore {
        let dir = temp_dir(label);
        let path = dir.path().join("store");
        let store = Store::create(
            &path,
            WIDE_DIMENSION,
            store_options(SyncMode::Always, checkpoint_interval_bytes),
        )
        .expect("creating the store");
        common::settle(&path.join("wal"), Options::default().segment_size_bytes);
        TxnStore {
            store,
            label,
            checkpoint_interval_bytes,
            inserted: 0,
            id: String::new(),
            _dir: dir,
        }
    }

    /// Replaces the store with an empty one once it holds `txn_store_cap` bytes (untimed by
    /// the callers). Dropped without a close: its files are deleted, so nothing needs syncing.
    fn renew_if_full(&mut self) {
        if self.inserted * WIDE_VECTOR_BYTES >= sizes().txn_store_cap {
            *self = TxnStore::new(self.label, self.checkpoint_interval_bytes);
        }
    }

    /// One transaction of `TXN_INSERTS` inserts, durable on return.
    fn commit_batch(&mut self, vectors: &[Vec<f32>]) {
        use std::fmt::Write;
        let mut tx = self.store.begin().expect("begin");
        for vector in vectors {
            self.id.clear();
            write!(self.id, "t{:010}", self.inserted).expect("formatting an id");
            tx.insert(&self.id, vector, &[]).expect("insert");
            self.inserted += 1;
        }
        tx.commit().expect("commit");
    }

    /// `iters` transactions; returns the time spent in them (renewals excluded).
    fn run(&mut self, vectors: &[Vec<f32>], iters: u64) -> Duration {
        let mut elapsed = Duration::ZERO;
        for _ in 0..iters {
            self.renew_if_full();
            let start = Instant::now();
            self.commit_batch(vectors);
            elapsed += start.elapsed();
        }
        elapsed
    }

    /// Transactions for `slice` (renewals excluded); returns bytes of vectors per second.
    fn rate_for(&mut self, vectors: &[Vec<f32>], slice: Duration) -> f64 {
        let mut elapsed = Duration::ZERO;
        let mut txns = 0u64;
        while elapsed < slice {
            elapsed += self.run(vectors, 1);
            txns += 1;
        }
        (txns * TXN_BYTES) as f64 / elapsed.as_secs_f64()
    }
}

/// The vectors of one transaction (the same for every transaction; the ids differ).
fn txn_vectors() -> Vec<Vec<f32>> {
    (0..TXN_INSERTS)
        .map(|i| {
            let mut vector = vec![0f32; WIDE_DIMENSION as usize];
            fill_vector(i, &mut vector);
            vector
        })
        .collect()
}

/// pwrite 1 MiB + fdatasync, moving forward through a zero-filled file and wrapping around.
struct SyncedMibs {
    file: File,
    len: u64,
    pos: u64,
    block: Vec<u8>,
}

impl SyncedMibs {
    fn new(path: &Path, len: u64) -> SyncedMibs {
        SyncedMibs {
            file: zero_filled(path, len),
            len,
            pos: 0,
            block: pattern(MIB as usize, 7),
        }
    }

    fn step(&mut self) {
        let block = std::mem::take(&mut self.block);
        self.write_synced(&block);
        self.block = block;
    }

    /// pwrite `bytes` at the next position (wrapping to the start where they do not fit) and
    /// fdatasync.
    fn write_synced(&mut self, bytes: &[u8]) {
        let len = bytes.len() as u64;
        if self.pos + len > self.len {
            self.pos = 0;
        }
        self.file.write_all_at(bytes, self.pos).expect("pwrite");
        self.file.sync_data().expect("fdatasync");
        self.pos += len;
    }

    fn run(&mut self, iters: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..iters {
            self.step();
        }
        start.elapsed()
    }
}

/// The least work of a durable transaction of inserts (see the module notes): a log file written
/// forward and wrapped, a warm arena buffer written forward and wrapped, an id index emptied
/// once it holds as many ids as a `txn/*` store.
struct LeastWork {
    log: SyncedMibs,
    buffer: Vec<u8>,
    arena: Vec<u8>,
    arena_pos: usize,
    index: HashMap<String, u64, foldhash::fast::RandomState>,
    inserted: u64,
    id: String,
}

impl LeastWork {
    fn new(path: &Path) -> LeastWork {
        LeastWork {
            log: SyncedMibs::new(path, sizes().pwrite_file),
            buffer: Vec::with_capacity(2 * MIB as usize),
            arena: vec![1; 64 * MIB as usize],
            arena_pos: 0,
            index: HashMap::default(),
            inserted: 0,
            id: String::new(),
        }
    }

    fn commit_batch(&mut self, vectors: &[Vec<f32>]) {
        use std::fmt::Write;
        if self.inserted * WIDE_VECTOR_BYTES >= sizes().txn_store_cap {
            self.index.clear();
            self.inserted = 0;
        }
        self.buffer.clear();
        for vector in vectors {
            self.id.clear();
            write!(self.id, "t{:010}", self.inserted).expect("formatting an id");
            let bytes = zerocopy::IntoBytes::as_bytes(vector.as_slice());
            self.buffer.extend_from_slice(&(self.id.len() as u32).to_le_bytes());
            self.buffer.extend_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
            self.buffer.extend_from_slice(self.id.as_bytes());
            self.buffer.extend_from_slice(bytes);
            if self.arena_pos + bytes.len() > self.arena.len() {
                self.arena_pos = 0;
            }
            self.arena[self.arena_pos..self.arena_pos + bytes.len()].copy_from_slice(bytes);
            self.index.insert(self.id.clone(), self.arena_pos as u64);
            self.arena_pos += bytes.len();
            self.inserted += 1;
        }
        self.log.write_synced(&self.buffer);
    }

    /// Transactions for `slice`; returns bytes of vectors per second.
    fn rate_for(&mut self, vectors: &[Vec<f32>], slice: Duration) -> f64 {
        let start = Instant::now();
        let mut txns = 0u64;
        while start.elapsed() < slice {
            self.commit_batch(vectors);
            txns += 1;
        }
        (txns * TXN_BYTES) as f64 / start.elapsed().as_secs_f64()
    }
}

fn transactions(c: &mut Criterion) {
    let vectors = txn_vectors();
    let mut group = c.benchmark_group("txn");

    {
        let dir = temp_dir("pwrite");
        let mut writes = SyncedMibs::new(&dir.path().join("zeroed"), sizes().pwrite_file);
        group.throughput(Throughput::Bytes(MIB));
        timing(&mut group, 500, 3000, 10);
        group.bench_function("pwrite_1m_fdatasync", |b| {
            b.iter_custom(|iters| tally(PWRITE_1M, MIB, iters, writes.run(iters)))
        });
    }

    for (name, bench, interval) in [
        (TXN, "store", 0),
        (
            TXN_CHECKPOINTING,
            "store_checkpointing",
            Options::default().checkpoint_interval_bytes,
        ),
    ] {
        let mut fixture = TxnStore::new("txn", interval);
        group.throughput(Throughput::Bytes(TXN_BYTES));
        timing(&mut group, 500, 4000, 10);
        group.bench_function(bench, |b| {
            b.iter_custom(|iters| tally(name, TXN_BYTES, iters, fixture.run(&vectors, iters)))
        });
    }

    group.finish();
}

// ---------------------------------------------------------------------------------------------
// 3. Checkpoints.

/// One checkpoint of a freshly loaded store, and the baselines run right after it.
#[derive(Clone, Copy, Debug)]
struct CheckpointRound {
    checkpoint: Duration,
    /// Growth of the arena files' allocated blocks.
    arena_bytes: u64,
    /// Vector pages the load filled: `ceil(vectors / slots per page)`.
    vector_pages: u64,
    /// pwrite of `arena_bytes` in 1 MiB chunks to a fresh file + one fdatasync.
    write_sync_once: Duration,
    /// The same with an fdatasync after every MiB.
    write_sync_per_mib: Duration,
}

impl CheckpointRound {
    fn run() -> CheckpointRound {
        let vectors = sizes().checkpoint_vectors;
        let dir = temp_dir("checkpoint");
        let path = dir.path().join("store");
        let store =
            Store::create(&path, WIDE_DIMENSION, store_options(SyncMode::Never, 0)).expect("creating the store");
        load(&store, vectors);
        // The log is made durable first: the checkpoint would otherwise flush it.
        store.sync().expect("sync");
        common::settle(&path.join("wal"), Options::default().segment_size_bytes);
        let before = allocated_bytes(&path.join("arena"));
        let start = Instant::now();
        store.checkpoint().expect("checkpoint");
        let checkpoint = start.elapsed();
        let arena_bytes = allocated_bytes(&path.join("arena")) - before;
        drop(store);
        let slots = vellum::format::page::vector_slots_per_page(PAGE_BYTES, WIDE_DIMENSION) as u64;
        CheckpointRound {
            checkpoint,
            arena_bytes,
            vector_pages: vectors.div_ceil(slots),
            write_sync_once: write_fresh(&dir.path().join("once"), arena_bytes, false),
            write_sync_per_mib: write_fresh(&dir.path().join("per-mib"), arena_bytes, true),
        }
    }

    fn bandwidth(&self, time: Duration) -> f64 {
        self.arena_bytes as f64 / time.as_secs_f64()
    }
}

/// Writes `len` bytes to a new file in 1 MiB pwrites and fdatasyncs it (after every MiB, or
/// once at the end); returns the time taken.
fn write_fresh(path: &Path, len: u64, sync_every_mib: bool) -> Duration {
    let file = create_new(path);
    let block = pattern(MIB as usize, 5);
    let start = Instant::now();
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(MIB);
        file.write_all_at(&block[..n as usize], offset).expect("pwrite");
        if sync_every_mib {
            file.sync_data().expect("fdatasync");
        }
        offset += n;
    }
    file.sync_data().expect("fdatasync");
    start.elapsed()
}

fn checkpoints(c: &mut Criterion) {
    let mut group = c.benchmark_group("checkpoint");
    group.sampling_mode(SamplingMode::Flat);
    // One round per sample (a round takes seconds): criterion warns that the samples take
    // longer than the target time; that is expected.
    timing(&mut group, 1, 1000, 10);
    group.bench_function("store", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let round = CheckpointRound::run();
                elapsed += round.checkpoint;
                tally(CHECKPOINT, round.arena_bytes, 1, round.checkpoint);
                CHECKPOINT_ROUNDS.lock().expect("rounds lock").push(round);
            }
            elapsed
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// The summary.

/// Interleaved rounds of the summary's transaction comparison.
const ROUNDS: usize = 8;
/// How long each transaction figure runs in each round.
const ROUND_SLICE: Duration = Duration::from_millis(300);

/// The transaction figures, measured again in short interleaved rounds so that their ratios
/// compare measurements taken moments apart. Returns each figure's bytes per second per round.
fn transaction_rounds() -> BTreeMap<&'static str, Vec<f64>> {
    let dir = temp_dir("summary");
    let mut writes = SyncedMibs::new(&dir.path().join("zeroed"), sizes().pwrite_file);
    let vectors = txn_vectors();
    let mut plain = TxnStore::new("summary-txn", 0);
    let mut checkpointing = TxnStore::new("summary-txn", Options::default().checkpoint_interval_bytes);
    let mut least = LeastWork::new(&dir.path().join("least-work-log"));
    let mut rates: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    for _ in 0..ROUNDS {
        let mut record = |name: &'static str, rate: f64| rates.entry(name).or_default().push(rate);
        record(PWRITE_1M, rate_for(ROUND_SLICE, || writes.step()) * MIB as f64);
        record(TXN, plain.rate_for(&vectors, ROUND_SLICE));
        record(TXN_CHECKPOINTING, checkpointing.rate_for(&vectors, ROUND_SLICE));
        record(LEAST_WORK, least.rate_for(&vectors, ROUND_SLICE));
    }
    rates
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
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

fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// Ratios per round of `num` over `den`: their median and range.
fn paired_ratio(num: &[f64], den: &[f64]) -> (f64, f64, f64) {
    let ratios: Vec<f64> = num.iter().zip(den).map(|(n, d)| n / d).collect();
    let (lo, hi) = range(&ratios);
    (median(&ratios), lo, hi)
}

fn summary(_: &mut Criterion) {
    if quick() {
        println!("store benches: test mode, summary skipped");
        return;
    }
    let tallies = TALLIES.lock().expect("tally lock").clone();
    let batches = BATCH_MEANS.lock().expect("batch lock").clone();

    println!();
    println!("== vellum store summary ==");
    println!("{}", machine_load());
    for line in NOTES.lock().expect("notes lock").iter() {
        println!("{line}");
    }

    // 1. Lookups.
    println!();
    println!(
        "Lookups, {} vectors of dim {GET_DIMENSION}, random order, batches of {GET_BATCH}:",
        sizes().get_vectors
    );
    println!(
        "  {:<24} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "benchmark", "batches", "p50 ns", "p10 ns", "p90 ns", "mean ns"
    );
    let p50 = |name: &str| batches.get(name).map_or(f64::NAN, |b| median(b));
    for name in [HASHMAP_GET, STORE_GET] {
        let (Some(means), Some(t)) = (batches.get(name), tallies.get(name)) else {
            println!("  {name:<24} not run");
            continue;
        };
        let mut sorted = means.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
        println!(
            "  {name:<24} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>12.1}",
            sorted.len(),
            median(&sorted),
            at(0.1),
            at(0.9),
            t.mean_ns()
        );
    }
    let (store_p50, map_p50) = (p50(STORE_GET), p50(HASHMAP_GET));
    println!(
        "ratio p50 store / hashmap over the criterion runs = {:.2}",
        store_p50 / map_p50
    );
    if let (Some(s), Some(m)) = (tallies.get(STORE_GET), tallies.get(HASHMAP_GET)) {
        println!(
            "ratio mean store / hashmap over the criterion runs = {:.2}",
            s.mean_ns() / m.mean_ns()
        );
    }
    let pairs = PAIRED_LOOKUPS.lock().expect("pairs lock").clone();
    if !pairs.is_empty() {
        let map: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let store: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let ratios: Vec<f64> = pairs.iter().map(|p| p.1 / p.0).collect();
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
        let (store_p50, map_p50, ratio) = (median(&store), median(&map), median(&ratios));
        println!(
            "Interleaved in blocks of {PAIRED_BLOCK} batches, {} pairs of blocks over {} s: p50 hashmap {map_p50:.1} \
             ns, store {store_p50:.1} ns (medians of the blocks' p50s)",
            pairs.len(),
            PAIRED_LOOKUPS_TIME.as_secs(),
        );
        println!(
            "ratio store / hashmap, median over pairs = {ratio:.2} (target <= 2){}  (pairs p10..p90 {:.2}..{:.2})",
            verdict(ratio <= 2.0),
            at(0.1),
            at(0.9)
        );
        println!(
            "store get p50 = {store_p50:.1} ns (target <= 100 ns){}",
            verdict(store_p50 <= 100.0)
        );
    }

    // 2. Transactions: interleaved rounds, if criterion ran them.
    println!();
    if [TXN, TXN_CHECKPOINTING, PWRITE_1M]
        .iter()
        .any(|name| tallies.contains_key(name))
    {
        let rounds = transaction_rounds();
        println!(
            "Transactions of {TXN_INSERTS} x 1 KiB (SyncMode::Always), {ROUNDS} interleaved rounds of {} ms per \
             figure: median GB/s of vector data (range over rounds)",
            ROUND_SLICE.as_millis()
        );
        for name in [PWRITE_1M, TXN, TXN_CHECKPOINTING, LEAST_WORK] {
            let (lo, hi) = range(&rounds[name]);
            println!(
                "  {name:<28} {:>7.3} GB/s  ({:.3}..{:.3})",
                median(&rounds[name]) / 1e9,
                lo / 1e9,
                hi / 1e9
            );
        }
        let txn = median(&rounds[TXN]) / 1e9;
        println!("{TXN} = {txn:.3} GB/s (target >= 1 GB/s){}", verdict(txn >= 1.0));
        for name in [TXN, TXN_CHECKPOINTING, LEAST_WORK] {
            let (r, lo, hi) = paired_ratio(&rounds[name], &rounds[PWRITE_1M]);
            println!("ratio {name} / {PWRITE_1M} = {r:.2}  (rounds {lo:.2}..{hi:.2})");
        }
        let (r, lo, hi) = paired_ratio(&rounds[TXN], &rounds[LEAST_WORK]);
        println!("ratio {TXN} / {LEAST_WORK} = {r:.2}  (rounds {lo:.2}..{hi:.2}): the store against the floor");
        println!("(the same over the criterion runs, not interleaved:)");
        for name in [PWRITE_1M, TXN, TXN_CHECKPOINTING] {
            if let Some(t) = tallies.get(name) {
                println!(
                    "  {name:<28} {:>7.3} GB/s over {} iterations",
                    t.bytes_per_second() / 1e9,
                    t.iters
                );
            }
        }
    }

    // 3. Checkpoints: each round carries its own baselines.
    let rounds = CHECKPOINT_ROUNDS.lock().expect("rounds lock").clone();
    if !rounds.is_empty() {
        println!();
        let first = rounds[0];
        println!(
            "Checkpoints of a fresh store of {} vectors of dim {WIDE_DIMENSION}, {} rounds: arena bytes written = \
             growth of the arena files' allocated blocks = {:.1} MiB ({} pages of {} KiB; {} vector pages + {} \
             catalog pages by count of vectors per page)",
            sizes().checkpoint_vectors,
            rounds.len(),
            first.arena_bytes as f64 / MIB as f64,
            first.arena_bytes / u64::from(PAGE_BYTES),
            PAGE_BYTES / 1024,
            first.vector_pages,
            (first.arena_bytes / u64::from(PAGE_BYTES)).saturating_sub(first.vector_pages),
        );
        let figures: [(&str, Vec<f64>); 3] = [
            ("checkpoint", rounds.iter().map(|r| r.bandwidth(r.checkpoint)).collect()),
            (
                "pwrite 1 MiB x n + 1 fdatasync",
                rounds.iter().map(|r| r.bandwidth(r.write_sync_once)).collect(),
            ),
            (
                "pwrite 1 MiB + fdatasync, x n",
                rounds.iter().map(|r| r.bandwidth(r.write_sync_per_mib)).collect(),
            ),
        ];
        for (name, values) in &figures {
            let (lo, hi) = range(values);
            println!(
                "  {name:<32} {:>7.3} GB/s  ({:.3}..{:.3})",
                median(values) / 1e9,
                lo / 1e9,
                hi / 1e9
            );
        }
        let times: Vec<f64> = rounds.iter().map(|r| r.checkpoint.as_secs_f64() * 1e3).collect();
        println!("  checkpoint time median {:.0} ms", median(&times));
        let (r, lo, hi) = paired_ratio(&figures[0].1, &figures[1].1);
        println!(
            "ratio checkpoint / (pwrite + one fdatasync) = {r:.2} (target >= 0.70){}  (rounds {lo:.2}..{hi:.2})",
            verdict(r >= 0.7)
        );
        let (r, lo, hi) = paired_ratio(&figures[0].1, &figures[2].1);
        println!("ratio checkpoint / (pwrite + fdatasync per MiB) = {r:.2}  (rounds {lo:.2}..{hi:.2})");
    }
    println!();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = gets, transactions, checkpoints, summary
}
criterion_main!(benches);
