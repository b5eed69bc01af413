//! The workloads, run identically against every [`Engine`], and the records they write.
//!
//! A record is 1 KiB cut from a 16 MiB pool of pseudo-random bytes, with bit 30 of every
//! little-endian 32-bit word cleared (so that, read as f32, every word is finite: Vellum stores the
//! same bytes as a 256-dim vector), and its address in its first 12 bytes: `seq` (u64 LE, below
//! 2^30 so the masking keeps it) and `stream` (u32 LE). Every store gets the same records.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use vellum::rng::SplitMix64;

use crate::Res;
use crate::engines::Engine;
use crate::sys::{self, Latency, MIB, ms, ns};

pub const RECORD_BYTES: usize = 1024;
/// The env var that makes the bench binary the crash child: `ENGINE,FIRST_SEQ,RECORDS,DIR`.
pub const CRASH_CHILD_VAR: &str = "PEERS_CRASH_CHILD";
/// Each timed pass of point reads stops after this long, so a slow store cannot stretch the run.
const READ_PASS_BUDGET: Duration = Duration::from_secs(4);
/// Reads per read transaction in the first point-read pass.
const READS_PER_TXN: usize = 1000;
/// Point reads timed from a cold page cache, right after the cold reopen.
pub const COLD_READS: usize = 200;

/// Sizes of one run (scaled by `--scale`).
#[derive(Clone, Debug)]
pub struct Sizes {
    pub w1_records: usize,
    pub w2_threads: usize,
    pub w2_per_thread: usize,
    pub w3_bytes: usize,
    pub w3_batch: usize,
    pub crash_records: usize,
    pub reads: usize,
    pub raw_ops: usize,
    pub raw_sequential_bytes: usize,
}

impl Sizes {
    pub fn scaled(scale: f64) -> Sizes {
        let s = |x: usize, min: usize| ((x as f64 * scale).round() as usize).max(min);
        Sizes {
            w1_records: s(20_000, 100),
            w2_threads: 4,
            w2_per_thread: s(5_000, 25),
            w3_bytes: s(256, 4) * MIB,
            w3_batch: 1000,
            crash_records: 1000,
            reads: s(200_000, 1000),
            raw_ops: s(5_000, 100),
            raw_sequential_bytes: s(64, 4) * MIB,
        }
    }

    pub fn w3_records(&self) -> u64 {
        (self.w3_bytes / RECORD_BYTES) as u64
    }
}

/// What one workload measured: metric key, value.
type Figures = Vec<(&'static str, f64)>;

/// Metric key -> value, for one engine in one round.
pub type Metrics = BTreeMap<&'static str, f64>;

/// One round of every workload against one engine.
#[derive(Default)]
pub struct Outcome {
    pub metrics: Metrics,
    /// Workloads that failed, with the error.
    pub failed: BTreeMap<&'static str, String>,
    /// Where the w3 store's bytes on disk are after close, by top-level entry.
    pub size_breakdown: Option<String>,
}

impl Outcome {
    fn record(&mut self, engine: &str, workload: &'static str, result: Res<Figures>) {
        match result {
            Ok(values) => self.metrics.extend(values),
            Err(e) => {
                eprintln!("  !! {engine}: {workload} failed: {e}");
                self.failed.insert(workload, e.to_string());
            }
        }
    }
}

/// The source of every record's bytes.
pub struct Pool(Vec<u8>);

impl Pool {
    pub fn new() -> Pool {
        // Deterministic, and incompressible enough for every store alike.
        let mut rng = SplitMix64::new(0x5eed_c0ff_ee00_0001);
        let mut bytes = Vec::with_capacity(16 * MIB);
        while bytes.len() < 16 * MIB {
            bytes.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        Pool(bytes)
    }

    /// Writes record `(stream, seq)` into `out` (`RECORD_BYTES` long).
    pub fn fill(&self, out: &mut [u8], stream: u32, seq: u64) {
        let offset =
            ((seq as usize).wrapping_mul(RECORD_BYTES) + stream as usize * 4099) % (self.0.len() - RECORD_BYTES);
        out.copy_from_slice(&self.0[offset..offset + RECORD_BYTES]);
        for word in out.chunks_exact_mut(4) {
            word[3] &= !0x40; // bit 30 of the little-endian word: the exponent stays below 255
        }
        out[0..8].copy_from_slice(&seq.to_le_bytes());
        out[8..12].copy_from_slice(&stream.to_le_bytes());
    }

    /// `records` consecutive records of `stream` from `first_seq`, back to back.
    pub fn batch(&self, stream: u32, first_seq: u64, records: usize) -> Vec<u8> {
        let mut buf = vec![0u8; records * RECORD_BYTES];
        for (seq, out) in (first_seq..).zip(buf.chunks_exact_mut(RECORD_BYTES)) {
            self.fill(out, stream, seq);
        }
        buf
    }
}

/// Where one engine's round runs, and how to re-exec the bench as the crash child.
pub struct Ctx<'a> {
    pub dir: PathBuf,
    pub sizes: &'a Sizes,
    pub pool: &'a Pool,
}

/// Turns a panic inside a workload into an error, so that the other workloads and peers run.
fn guarded<T>(f: impl FnOnce() -> Res<T>) -> Res<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(format!("panicked: {message}").into())
    })
}

/// Every workload against `E`, in order; a failed workload is recorded and the next runs.
pub fn run_engine<E: Engine>(ctx: &Ctx<'_>) -> Outcome {
    let mut outcome = Outcome::default();
    let name = E::NAME;
    let sz = ctx.sizes;
    eprintln!("  {name}: w1 ({} records, one durable commit each)", sz.w1_records);
    outcome.record(name, "w1", guarded(|| w1::<E>(&ctx.dir.join("w1"), ctx)));
    eprintln!(
        "  {name}: w2 ({} writers x {} records)",
        sz.w2_threads, sz.w2_per_thread
    );
    outcome.record(name, "w2", guarded(|| w2::<E>(&ctx.dir.join("w2"), ctx)));
    outcome.record(
        name,
        "w2engine",
        guarded(|| w2_engine::<E>(&ctx.dir.join("w2engine"), ctx)),
    );
    outcome.record(
        name,
        "w2count",
        guarded(|| w2_counted::<E>(&ctx.dir.join("w2count"), ctx)),
    );
    eprintln!(
        "  {name}: w3 ({} MiB, one durable commit per {} records)",
        sz.w3_bytes / MIB,
        sz.w3_batch
    );
    let dir3 = ctx.dir.join("w3");
    match guarded(|| w3::<E>(&dir3, ctx)) {
        Ok((metrics, store, device_before)) => {
            outcome.record(name, "w3", Ok(metrics));
            eprintln!("  {name}: close, reopen warm and cold, point reads");
            let reopened = guarded(|| reopen::<E>(store, &dir3, ctx, device_before));
            let store = match reopened {
                Ok((metrics, store, breakdown)) => {
                    outcome.record(name, "reopen", Ok(metrics));
                    outcome.size_breakdown = Some(breakdown);
                    Some(store)
                }
                Err(e) => {
                    outcome.record(name, "reopen", Err(e));
                    None
                }
            };
            if let Some(store) = store {
                outcome.record(name, "reads", guarded(|| reads::<E>(store, &dir3, ctx)));
            }
            eprintln!(
                "  {name}: crash: a child commits {} records and exits without closing",
                sz.crash_records
            );
            outcome.record(name, "crash", guarded(|| crash::<E>(&dir3, ctx)));
        }
        Err(e) => outcome.record(name, "w3", Err(e)),
    }
    if let Some(memory_dir) = sys::memory_dir(&ctx.dir) {
        eprintln!("  {name}: w3 again in memory ({})", memory_dir.display());
        outcome.record(name, "w3mem", guarded(|| w3_in_memory::<E>(&memory_dir, ctx)));
        let _ = std::fs::remove_dir_all(&memory_dir);
    }
    let _ = std::fs::remove_dir_all(&ctx.dir);
    outcome
}

fn verify_count<E: Engine>(store: &E, expected: u64, when: &str) -> Res<()> {
    let count = store.count()?;
    if count != expected {
        return Err(format!("{}: {count} records {when}, expected {expected}", E::NAME).into());
    }
    Ok(())
}

fn reopen_and_verify<E: Engine>(dir: &Path, expected: u64, when: &str) -> Res<()> {
    let store = E::open(dir)?;
    verify_count(&store, expected, when)?;
    store.close()
}

/// w1: one writer, one durable commit per record.
fn w1<E: Engine>(dir: &Path, ctx: &Ctx<'_>) -> Res<Figures> {
    sys::fresh_dir(dir)?;
    let store = E::open(dir)?;
    let n = ctx.sizes.w1_records;
    let mut record = vec![0u8; RECORD_BYTES];
    let mut samples_ns = Vec::with_capacity(n);
    let start = Instant::now();
    for seq in 0..n as u64 {
        ctx.pool.fill(&mut record, 0, seq);
        let t = Instant::now();
        store.commit_one(0, seq, &record)?;
        samples_ns.push(ns(t.elapsed()));
    }
    let seconds = start.elapsed().as_secs_f64();
    store.close()?;
    reopen_and_verify::<E>(dir, n as u64, "after w1 and a reopen")?;
    std::fs::remove_dir_all(dir)?;
    let latency = Latency::from_ns(samples_ns);
    Ok(vec![
        ("w1_commits_per_s", n as f64 / seconds),
        ("w1_p50_us", latency.p50_us),
        ("w1_p99_us", latency.p99_us),
    ])
}

/// The writers of w2 on an open store: each commits its records one by one, all starting
/// together. Returns the wall time and every commit's latency.
fn w2_writers<E: Engine>(store: &E, ctx: &Ctx<'_>) -> Res<(Duration, Vec<u64>)> {
    let (threads, per) = (ctx.sizes.w2_threads, ctx.sizes.w2_per_thread);
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|scope| {
        let writers: Vec<_> = (1..=threads as u32)
            .map(|stream| {
                let barrier = &barrier;
                scope.spawn(move || -> Res<Vec<u64>> {
                    let mut record = vec![0u8; RECORD_BYTES];
                    let mut samples_ns = Vec::with_capacity(per);
                    barrier.wait();
                    for seq in 0..per as u64 {
                        ctx.pool.fill(&mut record, stream, seq);
                        let t = Instant::now();
                        store.commit_one(stream, seq, &record)?;
                        samples_ns.push(ns(t.elapsed()));
                    }
                    Ok(samples_ns)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut all_ns = Vec::with_capacity(threads * per);
        for writer in writers {
            all_ns.extend(writer.join().map_err(|_| "a w2 writer panicked")??);
        }
        Ok((start.elapsed(), all_ns))
    })
}

/// w2: four writers, one durable commit per record each.
fn w2<E: Engine>(dir: &Path, ctx: &Ctx<'_>) -> Res<Figures> {
    sys::fresh_dir(dir)?;
    let store = E::open(dir)?;
    let before = store.commit_stats();
    let (wall, samples_ns) = w2_writers(&store, ctx)?;
    let after = store.commit_stats();
    store.close()?;
    let n = (ctx.sizes.w2_threads * ctx.sizes.w2_per_thread) as u64;
    reopen_and_verify::<E>(dir, n, "after w2 and a reopen")?;
    std::fs::remove_dir_all(dir)?;
    let latency = Latency::from_ns(samples_ns);
    let mut figures = vec![
        ("w2_commits_per_s", n as f64 / wall.as_secs_f64()),
        ("w2_p50_us", latency.p50_us),
        ("w2_p99_us", latency.p99_us),
    ];
    // The store's own counters, over the timed run itself.
    if let (Some((commits_0, syncs_0)), Some((commits_1, syncs_1))) = (before, after) {
        let (commits, syncs) = (commits_1 - commits_0, syncs_1 - syncs_0);
        if commits != n {
            return Err(format!("{}: {n} commits in w2, its stats count {commits}", E::NAME).into());
        }
        if syncs == 0 {
            return Err(format!("{}: {n} durable commits counted no log fdatasync", E::NAME).into());
        }
        figures.push(("w2_commits_per_sync", commits as f64 / syncs as f64));
    }
    Ok(figures)
}

/// w2 again, on a store that makes no commit durable (only engines that have such a mode): the
/// engine's own commits/s at w2's shape, its work a commit without the device. Not a durable
/// figure: the bound it sets on w2 is in `report::add_ratios`.
fn w2_engine<E: Engine>(dir: &Path, ctx: &Ctx<'_>) -> Res<Figures> {
    sys::fresh_dir(dir)?;
    let Some(store) = E::open_unsynced(dir)? else {
        std::fs::remove_dir_all(dir)?;
        return Ok(Vec::new());
    };
    eprintln!(
        "  {}: w2 again, no commit made durable (the engine's own work)",
        E::NAME
    );
    let (wall, _) = w2_writers(&store, ctx)?;
    let n = (ctx.sizes.w2_threads * ctx.sizes.w2_per_thread) as u64;
    verify_count(&store, n, "after w2 with no sync")?;
    store.close()?;
    std::fs::remove_dir_all(dir)?;
    Ok(vec![("w2_engine_commits_per_s", n as f64 / wall.as_secs_f64())])
}

/// w2 again, on a store whose log flushes are counted (only engines that can count them):
/// commits per log fdatasync. Not a timed figure.
fn w2_counted<E: Engine>(dir: &Path, ctx: &Ctx<'_>) -> Res<Figures> {
    sys::fresh_dir(dir)?;
    let Some((store, counts)) = E::open_counting(dir)? else {
        std::fs::remove_dir_all(dir)?;
        return Ok(Vec::new());
    };
    eprintln!("  {}: w2 again, counting the log's fdatasyncs", E::NAME);
    let before = counts.log();
    w2_writers(&store, ctx)?;
    let log_syncs = counts.log() - before;
    let n = (ctx.sizes.w2_threads * ctx.sizes.w2_per_thread) as u64;
    verify_count(&store, n, "after the counted w2")?;
    store.close()?;
    std::fs::remove_dir_all(dir)?;
    if log_syncs == 0 {
        return Err(format!("{}: {n} durable commits counted no log fdatasync", E::NAME).into());
    }
    Ok(vec![("w2_commits_per_sync_counted", n as f64 / log_syncs as f64)])
}

/// w3: bulk load, one durable commit per `w3_batch` records. Returns the store still open, and
/// the device's written-bytes counter before the load.
fn w3<E: Engine>(dir: &Path, ctx: &Ctx<'_>) -> Res<(Figures, E, Option<u64>)> {
    sys::fresh_dir(dir)?;
    let store = E::open(dir)?;
    let total = ctx.sizes.w3_records();
    let mut in_commits = Duration::ZERO;
    let mut seq = 0u64;
    let device_before = sys::device_written_bytes(dir);
    let (cpu_before, wall_before) = (sys::process_cpu(), Instant::now());
    while seq < total {
        let k = (ctx.sizes.w3_batch as u64).min(total - seq) as usize;
        let buf = ctx.pool.batch(0, seq, k);
        let records: Vec<&[u8]> = buf.chunks_exact(RECORD_BYTES).collect();
        let t = Instant::now();
        store.commit_batch(0, seq, &records)?;
        in_commits += t.elapsed();
        seq += k as u64;
    }
    // Every thread of the process (the engine's own included) while the load ran: with the
    // MB/s, what bounds it on this machine's cores.
    let (cpu, wall) = (sys::process_cpu() - cpu_before, wall_before.elapsed());
    let bytes = total as f64 * RECORD_BYTES as f64;
    let figures = vec![
        ("w3_mb_per_s", bytes / in_commits.as_secs_f64() / 1e6),
        ("w3_cpu_s_per_gb", cpu.as_secs_f64() / (bytes / 1e9)),
        ("w3_cores_busy", cpu.as_secs_f64() / wall.as_secs_f64()),
    ];
    Ok((figures, store, device_before))
}

/// w3 again in a directory of a memory file system (tmpfs): the same load with no device under
/// it, so its rate is what the engine's CPU work (and the kernel's copies) allow. Beside w3 on
/// the disk, it says which of the two bounds a load.
fn w3_in_memory<E: Engine>(dir: &Path, ctx: &Ctx<'_>) -> Res<Figures> {
    let (figures, store, _) = w3::<E>(dir, ctx)?;
    store.close()?;
    std::fs::remove_dir_all(dir)?;
    let renamed = |key: &str| match key {
        "w3_mb_per_s" => Some("w3_mem_mb_per_s"),
        "w3_cpu_s_per_gb" => Some("w3_mem_cpu_s_per_gb"),
        _ => None,
    };
    Ok(figures
        .into_iter()
        .filter_map(|(key, value)| renamed(key).map(|key| (key, value)))
        .collect())
}

/// Close (timed), size on disk, reopen warm (timed), close, drop the page cache, reopen cold
/// (timed); the record count is verified after each open. Returns the cold-opened store and where
/// its bytes on disk were after the close.
fn reopen<E: Engine>(store: E, dir: &Path, ctx: &Ctx<'_>, device_before: Option<u64>) -> Res<(Figures, E, String)> {
    let total = ctx.sizes.w3_records();
    let t = Instant::now();
    store.close()?;
    let close = t.elapsed();
    // What the device took for the load and the close (the bound of a load on a disk that
    // writes slower than the engine makes bytes: MB/s at most the device's rate ÷ this).
    let device_written = device_before.zip(sys::device_written_bytes(dir)).map(|(b, a)| a - b);
    let size_mib = sys::allocated_bytes(dir)? as f64 / MIB as f64;
    let breakdown = sys::size_breakdown(dir)?;

    let t = Instant::now();
    let store = E::open(dir)?;
    let warm = t.elapsed();
    verify_count(&store, total, "after the warm reopen")?;
    store.close()?;

    sys::evict_page_cache(dir)?;
    let resident = sys::resident_fraction(dir)?;
    let t = Instant::now();
    let store = E::open(dir)?;
    let cold = t.elapsed();
    verify_count(&store, total, "after the cold reopen")?;
    let mut metrics = vec![
        ("close_ms", ms(close)),
        ("size_mib", size_mib),
        ("warm_ms", ms(warm)),
        ("cold_ms", ms(cold)),
        ("cold_resident_pct", resident * 100.0),
    ];
    if let Some(written) = device_written {
        metrics.push((
            "w3_device_written_per_byte",
            written as f64 / (total as f64 * RECORD_BYTES as f64),
        ));
    }
    Ok((metrics, store, breakdown))
}

/// Point reads over the w3 store: first [`COLD_READS`] uniform random reads from the cold page
/// cache the cold reopen left (each timed, and what the device read for them), then every
/// record read once in key order (checked byte for byte: this warms the cache), then uniform
/// random reads timed in two passes: one read transaction per 1,000 reads, and one per read.
/// Closes the store.
fn reads<E: Engine>(store: E, dir: &Path, ctx: &Ctx<'_>) -> Res<Figures> {
    if !E::HAS_GET {
        return store.close().map(|()| Vec::new());
    }
    let mut figures = cold_reads(&store, dir, ctx)?;
    let total = ctx.sizes.w3_records();
    let mut expected = vec![0u8; RECORD_BYTES];
    let all: Vec<u64> = (0..total).collect();
    store.get_many(0, &all, &mut |seq, value| {
        ctx.pool.fill(&mut expected, 0, seq);
        if value == expected {
            Ok(())
        } else {
            Err(format!("{}: record 0:{seq} differs", E::NAME).into())
        }
    })?;
    let mut rng = SplitMix64::new(0x5eed);
    let seqs: Vec<u64> = (0..ctx.sizes.reads).map(|_| rng.below(total)).collect();
    let check = |seq: u64, value: &[u8]| -> Res<()> {
        let ok = value.len() == RECORD_BYTES && value[0..8] == seq.to_le_bytes() && value[8..12] == [0; 4];
        if ok {
            Ok(())
        } else {
            Err(format!("{}: read of 0:{seq} returned another record", E::NAME).into())
        }
    };
    let (mut done, start) = (0usize, Instant::now());
    for chunk in seqs.chunks(READS_PER_TXN) {
        store.get_many(0, chunk, &mut |seq, value| check(seq, value))?;
        done += chunk.len();
        if start.elapsed() > READ_PASS_BUDGET {
            break;
        }
    }
    let per_batch_ns = start.elapsed().as_nanos() as f64 / done as f64;
    let (mut out, mut done, start) = (Vec::with_capacity(RECORD_BYTES), 0usize, Instant::now());
    for chunk in seqs.chunks(READS_PER_TXN) {
        for &seq in chunk {
            if !store.get(0, seq, &mut out)? {
                return Err(format!("{}: record 0:{seq} missing", E::NAME).into());
            }
            check(seq, &out)?;
        }
        done += chunk.len();
        if start.elapsed() > READ_PASS_BUDGET {
            break;
        }
    }
    let per_read_ns = start.elapsed().as_nanos() as f64 / done as f64;
    let (p50_ns, p99_ns) = read_latencies(&store, &seqs, &mut out, &check)?;
    store.close()?;
    figures.extend([
        ("read_batch_ns", per_batch_ns),
        ("read_single_ns", per_read_ns),
        ("read_p50_ns", p50_ns),
        ("read_p99_ns", p99_ns),
    ]);
    Ok(figures)
}

/// Point reads from a cold page cache, right after the cold reopen: [`COLD_READS`] uniform
/// random records, each timed on its own; the median, the 99th percentile, and the bytes the
/// device read for them, a read (readahead around a fault on a mapping shows there).
fn cold_reads<E: Engine>(store: &E, dir: &Path, ctx: &Ctx<'_>) -> Res<Figures> {
    let total = ctx.sizes.w3_records();
    let mut rng = SplitMix64::new(0xc01d);
    let mut out = Vec::with_capacity(RECORD_BYTES);
    let mut latencies_ns = Vec::with_capacity(COLD_READS);
    let read_before = sys::device_read_bytes(dir);
    for _ in 0..COLD_READS {
        let seq = rng.below(total);
        let t = Instant::now();
        let found = store.get(0, seq, &mut out)?;
        latencies_ns.push(ns(t.elapsed()));
        if !found || out.len() != RECORD_BYTES || out[0..8] != seq.to_le_bytes() {
            return Err(format!("{}: cold read of 0:{seq} failed", E::NAME).into());
        }
    }
    let read_after = sys::device_read_bytes(dir);
    latencies_ns.sort_unstable();
    let at = |q: f64| latencies_ns[((latencies_ns.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    let mut figures = vec![("cold_read_p50_us", at(0.50)), ("cold_read_p99_us", at(0.99))];
    if let Some((before, after)) = read_before.zip(read_after) {
        figures.push(("cold_read_kib", (after - before) as f64 / 1024.0 / COLD_READS as f64));
    }
    Ok(figures)
}

/// A third pass of the same reads, one read transaction per read, each timed on its own (the
/// clock's two reads, ~20-50 ns, are in every figure, the same for every store): the median
/// and 99th percentile of a point read's latency, which the mean of the pass before hides.
fn read_latencies<E: Engine>(
    store: &E,
    seqs: &[u64],
    out: &mut Vec<u8>,
    check: &dyn Fn(u64, &[u8]) -> Res<()>,
) -> Res<(f64, f64)> {
    let mut latencies_ns: Vec<u64> = Vec::with_capacity(seqs.len());
    let start = Instant::now();
    for &seq in seqs {
        let before = Instant::now();
        let found = store.get(0, seq, out)?;
        latencies_ns.push(before.elapsed().as_nanos() as u64);
        if !found {
            return Err(format!("{}: record 0:{seq} missing", E::NAME).into());
        }
        check(seq, out)?;
        if start.elapsed() > READ_PASS_BUDGET {
            break;
        }
    }
    latencies_ns.sort_unstable();
    let at = |q: f64| latencies_ns[((latencies_ns.len() - 1) as f64 * q) as usize] as f64;
    Ok((at(0.50), at(0.99)))
}

/// Crash: a child process (this binary, re-executed with [`CRASH_CHILD_VAR`]) opens the w3 store,
/// commits `crash_records` more records durably and exits without closing; the parent drops the
/// page cache, times the open and verifies the count.
fn crash<E: Engine>(dir: &Path, ctx: &Ctx<'_>) -> Res<Figures> {
    let total = ctx.sizes.w3_records();
    let n = ctx.sizes.crash_records;
    let spec = format!("{},{total},{n},{}", E::NAME, dir.display());
    let status = Command::new(std::env::current_exe()?)
        .env(CRASH_CHILD_VAR, spec)
        .status()?;
    if !status.success() {
        return Err(format!("{}: the crash child failed: {status}", E::NAME).into());
    }
    sys::evict_page_cache(dir)?;
    let t = Instant::now();
    let store = E::open(dir)?;
    let open = t.elapsed();
    verify_count(&store, total + n as u64, "after the crash")?;
    let recovered_bytes = store.recovered_log_bytes();
    store.close()?;
    let mut figures = vec![("crash_ms", ms(open))];
    // The floor of an open that replays a log: reading, from the disk, the log it recovered
    // from (LMDB's open reads its two meta pages).
    if let Some(bytes) = recovered_bytes.filter(|&b| b > 0) {
        let floor_ms = sys::cold_read_ms(dir.parent().unwrap_or(dir), bytes as usize)?;
        figures.push(("crash_log_mib", bytes as f64 / MIB as f64));
        figures.push(("crash_floor_ms", floor_ms));
        figures.push(("crash_vs_floor", ms(open) / floor_ms));
    }
    Ok(figures)
}

/// The crash child's work: opens the store, commits `records` records from `first_seq` in one
/// durable transaction, and exits at once: no close, no destructors.
pub fn crash_child<E: Engine>(dir: &Path, first_seq: u64, records: usize) -> Res<()> {
    let store = E::open(dir)?;
    let pool = Pool::new();
    let buf = pool.batch(0, first_seq, records);
    let batch: Vec<&[u8]> = buf.chunks_exact(RECORD_BYTES).collect();
    store.commit_batch(0, first_seq, &batch)?;
    std::process::exit(0)
}
