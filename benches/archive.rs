//! Archive benchmarks: compression ratio and throughput of archived log segments on realistic
//! embeddings and on metadata-heavy records, beside raw `lz4_flex` on the same bytes; and
//! restore throughput in log bytes per second (Latest, median of three) on two shapes: the
//! embedding store (inserts only: its arena is as large as its log, and the restored store's
//! first base image compresses all of it) and an upsert-heavy store (2,000 ids rewritten 50
//! times: a log many times its arena), beside a copy of the same log files. The restore's floor
//! is measured too: the copy of the log plus one base image of the restored arena (the arena
//! files compressed and written as the restore's own first base image is, with the same
//! threads) — what any restore that starts a new history with a base image must at least do.
//! Prints a summary of ratios at the end.

mod common;
use common::quick;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vellum::archive::{self, ArchiveHeader};
use vellum::rng::SplitMix64;
use vellum::{Options, RestoreTarget, Retention, Store, SyncMode, restore};
use zerocopy::FromZeros;

/// Deterministic unit-normalised vectors (SplitMix64), independent of each other: each seed
/// starts its own stream (an earlier version stepped every seed along one stream, so vector
/// `i + 1` was vector `i` shifted by one component and LZ4 found the repeats: a 1.8× "ratio"
/// that real embeddings never give).
fn embedding(seed: u64, dimension: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new((seed ^ 0x5851_F42D_4C95_7F2D).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let mut v: Vec<f32> = (0..dimension).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// The benchmarks' stores: small segments, no automatic checkpoints (the whole history stays in
/// the live log), everything archived kept.
fn log_options() -> Options {
    Options {
        sync: SyncMode::Never,
        segment_size_bytes: 8 << 20,
        checkpoint_interval_bytes: 0,
        retention: Retention::KeepAll,
        ..Options::default()
    }
}

/// Builds a store whose log holds `count` records of the given shape; returns its directory
/// and the bytes of its full log segments.
fn build_log(dir: &Path, count: usize, dimension: usize, metadata_bytes: usize) -> Vec<u8> {
    let store = Store::create(dir, dimension as u32, log_options()).unwrap();
    let text = "the quick brown fox jumps over the lazy dog; category=news lang=en author=someone ".repeat(64);
    let mut tx = store.begin().unwrap();
    for i in 0..count {
        let meta = &text[(i * 7) % 64..(i * 7) % 64 + metadata_bytes];
        tx.insert(
            &format!("doc-{i:08}"),
            &embedding(i as u64, dimension),
            &[("text", meta), ("seq", &i.to_string())],
        )
        .unwrap();
        if i % 1000 == 999 {
            tx.commit().unwrap();
            tx = store.begin().unwrap();
        }
    }
    tx.commit().unwrap();
    store.sync().unwrap();
    let numbers = store.wal().segment_numbers();
    let mut bytes = Vec::new();
    for n in &numbers[..numbers.len().saturating_sub(1).max(1)] {
        bytes.extend_from_slice(&std::fs::read(store.wal().segment_path(*n)).unwrap());
    }
    store.close().unwrap();
    bytes
}

struct Figures {
    name: &'static str,
    raw_bytes: usize,
    vellum_bytes: usize,
    vellum_time: Duration,
    lz4_bytes: usize,
    lz4_time: Duration,
}

fn measure(name: &'static str, log: &[u8]) -> Figures {
    let mut header = ArchiveHeader::new_zeroed();
    header.kind = archive::KIND_WAL_SEGMENT;
    let started = Instant::now();
    let file = archive::encode(header, log);
    let vellum_time = started.elapsed();
    let started = Instant::now();
    let lz4_bytes: usize = log
        .chunks(archive::BLOCK_RAW_MAX_BYTES)
        .map(|c| lz4_flex::block::compress(c).len())
        .sum();
    let lz4_time = started.elapsed();
    assert_eq!(
        archive::decode(Path::new("bench"), &file).unwrap().contents,
        log,
        "the archive round-trips"
    );
    Figures {
        name,
        raw_bytes: log.len(),
        vellum_bytes: file.len(),
        vellum_time,
        lz4_bytes,
        lz4_time,
    }
}

fn bench(c: &mut Criterion) {
    let root = tempfile::tempdir().unwrap();
    let count = if quick() { 2_000 } else { 20_000 };
    let embeddings = build_log(&root.path().join("embeddings"), count, 384, 0);
    let metadata = build_log(&root.path().join("metadata"), count * 4, 8, 2_000);
    let mut group = c.benchmark_group("archive");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(if quick() { 1 } else { 4 }));
    for (name, log) in [("embeddings", &embeddings), ("metadata", &metadata)] {
        group.throughput(Throughput::Bytes(log.len() as u64));
        group.bench_function(format!("compress_{name}"), |b| {
            let mut header = ArchiveHeader::new_zeroed();
            header.kind = archive::KIND_WAL_SEGMENT;
            b.iter(|| archive::encode(header, log).len())
        });
        group.bench_function(format!("raw_lz4_{name}"), |b| {
            b.iter(|| {
                log.chunks(archive::BLOCK_RAW_MAX_BYTES)
                    .map(|c| lz4_flex::block::compress(c).len())
                    .sum::<usize>()
            })
        });
    }
    group.finish();
    let (ids, rounds) = if quick() { (200, 5) } else { (2_000, 50) };
    build_upsert_store(&root.path().join("upserts"), ids, rounds);
    let restores = [
        measure_restore(root.path(), "embeddings"),
        measure_restore(root.path(), "upserts"),
    ];
    let figures = [measure("embeddings", &embeddings), measure("metadata", &metadata)];
    summary(&figures, &restores);
}

/// A store whose log is mostly upserts of a small set of ids (`rounds` × `ids` vectors of
/// dimension 384): the log is many times the arena, as in a store that changes in place.
fn build_upsert_store(dir: &Path, ids: usize, rounds: usize) {
    let store = Store::create(dir, 384, log_options()).unwrap();
    for round in 0..rounds {
        let mut tx = store.begin().unwrap();
        for i in 0..ids {
            let round_text = round.to_string();
            tx.upsert(
                &format!("doc-{i:06}"),
                &embedding((round * ids + i) as u64, 384),
                &[("round", &round_text)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    store.close().unwrap();
}

/// One restore shape: the log replayed, the median of three restores, its phases, and the
/// baseline: copying the same store's log files (what any restore must at least read and write).
struct RestoreFigure {
    name: &'static str,
    wal_bytes: u64,
    time: Duration,
    phases: Vec<(&'static str, Duration)>,
    copy_time: Duration,
    base_image_time: Duration,
}

/// Writes one base image of the arena files of the store at `dest` (into `dest/floor/`, with
/// the thread count a restore uses) and returns how long it took.
fn base_image_time(dest: &Path) -> Duration {
    let storage = vellum::storage::RealStorage::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dest.join("arena"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    let file_bytes = std::fs::metadata(&paths[0]).unwrap().len();
    let contents = archive::FileContents::open(&storage, &paths, file_bytes).unwrap();
    let mut header = ArchiveHeader::new_zeroed();
    header.kind = archive::KIND_BASE_IMAGE;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let started = Instant::now();
    let written = archive::write_streamed_unless(
        &storage,
        &dest.join("floor"),
        "base",
        header,
        &contents,
        threads,
        &|| false,
    );
    assert!(written.unwrap(), "nothing gives the write up");
    started.elapsed()
}

fn measure_restore(root: &Path, name: &'static str) -> RestoreFigure {
    let src = root.join(name);
    let mut base_image_times = Vec::new();
    let mut runs: Vec<(Duration, vellum::RestoreReport)> = (0..3)
        .map(|i| {
            let dest: PathBuf = root.join(format!("{name}-restored-{i}"));
            let started = Instant::now();
            let report = restore(&src, &dest, RestoreTarget::Latest).unwrap();
            let time = started.elapsed();
            base_image_times.push(base_image_time(&dest));
            std::fs::remove_dir_all(&dest).unwrap();
            (time, report)
        })
        .collect();
    runs.sort_by_key(|run| run.0);
    let (time, report) = runs.swap_remove(1);
    base_image_times.sort();
    let copy_dir = root.join(format!("{name}-copy"));
    std::fs::create_dir_all(&copy_dir).unwrap();
    let started = Instant::now();
    for entry in std::fs::read_dir(src.join("wal")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy_dir.join(entry.file_name())).unwrap();
    }
    let copy_time = started.elapsed();
    std::fs::remove_dir_all(&copy_dir).unwrap();
    RestoreFigure {
        name,
        wal_bytes: report.wal_bytes,
        time,
        phases: report.phases,
        copy_time,
        base_image_time: base_image_times[1],
    }
}

fn summary(figures: &[Figures], restores: &[RestoreFigure]) {
    println!("== vellum archive summary ==");
    for f in figures {
        let mbps = |bytes: usize, t: Duration| bytes as f64 / t.as_secs_f64() / 1e6;
        println!(
            "{:<11} {:>7.1} MB: vellum ratio {:.2}x at {:.0} MB/s; raw lz4_flex ratio {:.2}x at {:.0} MB/s",
            f.name,
            f.raw_bytes as f64 / 1e6,
            f.raw_bytes as f64 / f.vellum_bytes as f64,
            mbps(f.raw_bytes, f.vellum_time),
            f.raw_bytes as f64 / f.lz4_bytes as f64,
            mbps(f.raw_bytes, f.lz4_time),
        );
    }
    println!("targets: ratio >= 1.1x on embeddings, >= 3x on metadata; compression >= 300 MB/s");
    for r in restores {
        let mbps = r.wal_bytes as f64 / r.time.as_secs_f64() / 1e6;
        let phases: Vec<String> = r
            .phases
            .iter()
            .map(|(phase, t)| format!("{phase} {:.0} ms", t.as_secs_f64() * 1e3))
            .collect();
        println!(
            "restore ({}): {:.1} MB of log in {:.0} ms = {mbps:.0} MB/s (target >= 500 MB/s), {:.2}x the time of copying \
             its log files ({:.0} ms); {}",
            r.name,
            r.wal_bytes as f64 / 1e6,
            r.time.as_secs_f64() * 1e3,
            r.time.as_secs_f64() / r.copy_time.as_secs_f64(),
            r.copy_time.as_secs_f64() * 1e3,
            phases.join(", ")
        );
        let floor = r.copy_time + r.base_image_time;
        println!(
            "  floor ({}): copy of the log {:.0} ms + one base image of the restored arena {:.0} ms = {:.0} MB/s \
             at most; the restore takes {:.2}x the floor's time",
            r.name,
            r.copy_time.as_secs_f64() * 1e3,
            r.base_image_time.as_secs_f64() * 1e3,
            r.wal_bytes as f64 / floor.as_secs_f64() / 1e6,
            r.time.as_secs_f64() / floor.as_secs_f64()
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
