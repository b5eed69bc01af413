//! The HNSW index (`vellum::ann`) against `hnsw_rs`, an in-memory HNSW library, in the same
//! run, with the same M, ef_construction, ef and thread count, on:
//!
//! * (a) 1,000,000 random unit vectors of dimension 128 (`--scale 0.1` or
//!   `VELLUM_ANN_SCALE=0.1` for 100,000);
//! * (b) 100,000 MiniLM sentence embeddings (dimension 384) that
//!   `benches/data/make_embeddings.py --count 101000` writes to
//!   `target/ann-data/minilm-101000.npy` (the last 1,000 rows are the queries; skipped, with a
//!   note, when the file is absent; `VELLUM_ANN_NPY=<path>` names another file).
//!
//! For each: build throughput, recall@10 and QPS over ef (a curve, both libraries), QPS at
//! recall 0.95 (interpolated on each curve) as a ratio, and p50 query latency against the
//! exact scan of the same vectors with Vellum's scan kernels. Queries are not in the index:
//! (a) 1,000 more random unit vectors, (b) the last 1,000 rows of the file.
//!
//! Then the same vectors in a Vellum store (16 KiB pages, `SyncMode::Never`, no archive): the
//! index built by `Store::create_index` (its pages and log included), its recall/QPS curve
//! through `Store::search_with`, the exact scan's p50 through the same API, single upserts into
//! the indexed store, and the open time of the store with its index and without it.
//!
//! `cargo bench --bench ann [-- --scale F] [--dataset random|minilm] [--no-store]`. Targets (issue 19):
//! recall@10 >= 0.95 at the default ef; QPS at recall 0.95 >= 0.5x the library's; build
//! throughput >= 0.5x; p50 latency at 1M x 128 >= 30x below the exact scan.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hnsw_rs::anndists::dist::DistDot;
use vellum::Metric;
use vellum::ann::{GraphView, Hnsw, MemoryStore, Params, Scratch};
use vellum::rng::SplitMix64;

const K: usize = 10;
const M: usize = 16;
const EF_CONSTRUCTION: usize = 128;
const QUERIES: usize = 1000;
/// Up to 2048: random vectors of dimension 128 need about 1,500 to reach recall 0.95 at 100k.
const EFS: [usize; 16] = [
    10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048,
];

struct Options {
    scale: f64,
    datasets: Vec<String>,
    threads: usize,
    store: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let quick = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test");
    let scale = value("--scale")
        .or_else(|| std::env::var("VELLUM_ANN_SCALE").ok())
        .map(|s| s.parse::<f64>().expect("--scale takes a number"))
        .unwrap_or(if quick { 0.002 } else { 1.0 });
    let datasets = match value("--dataset") {
        Some(d) => vec![d],
        None => vec!["random".into(), "minilm".into()],
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    Options {
        scale,
        datasets,
        threads,
        store: !args.iter().any(|a| a == "--no-store"),
    }
}

/// `count` random unit vectors of `dimension` (SplitMix64, Box-Muller-free: uniform then
/// normalised, which is uniform enough in direction for a benchmark).
fn random_unit(count: usize, dimension: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(count * dimension);
    for _ in 0..count {
        let start = out.len();
        let mut norm = 0f32;
        for _ in 0..dimension {
            // Sum of two uniforms: a bell-ish shape, so directions are closer to uniform.
            let bits = rng.next_u64();
            let a = (bits >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let b = ((bits >> 16) & 0xFF_FFFF) as f32 / (1u64 << 24) as f32 - 0.5;
            let x = a + b;
            norm += x * x;
            out.push(x);
        }
        let norm = norm.sqrt();
        out[start..].iter_mut().for_each(|x| *x /= norm);
    }
    out
}

/// A float32 C-order 2-D .npy file: (rows, columns, data).
fn read_npy(path: &PathBuf) -> Result<(usize, usize, Vec<f32>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not an .npy file".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ if bytes.len() >= 12 => (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12),
        _ => return Err("truncated header".into()),
    };
    let header = std::str::from_utf8(bytes.get(start..start + header_len).ok_or("truncated header")?)
        .map_err(|_| "header is not text")?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(format!("want little-endian float32 in C order, got {header}"));
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or("no shape")?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().map_err(|_| format!("bad shape {shape}")))
        .collect::<Result<_, _>>()?;
    let [rows, columns] = dims[..] else {
        return Err(format!("want 2 dimensions, got {shape}"));
    };
    let data = &bytes[start + header_len..];
    if data.len() != rows * columns * 4 {
        return Err(format!("{} data bytes for shape {shape}", data.len()));
    }
    let values = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    Ok((rows, columns, values))
}

/// One point of a recall/QPS curve.
#[derive(Clone, Copy)]
struct Point {
    ef: usize,
    recall: f64,
    qps: f64,
    p50: Duration,
}

/// Runs `search` (query index → result ids) over all queries on `threads` threads: the
/// recall against `truth`, the QPS and the median latency.
fn measure(
    queries: usize,
    threads: usize,
    truth: &[Vec<u32>],
    search: &(dyn Fn(usize) -> Vec<u32> + Sync),
) -> (f64, f64, Duration) {
    let started = Instant::now();
    let per_thread: Vec<Vec<(usize, usize, Duration)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..queries)
                        .step_by(threads)
                        .map(|q| {
                            let at = Instant::now();
                            let found = search(q);
                            let took = at.elapsed();
                            let hits = found.iter().filter(|id| truth[q].contains(id)).count();
                            (hits, truth[q].len(), took)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let all: Vec<_> = per_thread.into_iter().flatten().collect();
    let (found, wanted) = all.iter().fold((0, 0), |(f, w), &(h, t, _)| (f + h, w + t));
    let mut latencies: Vec<Duration> = all.iter().map(|r| r.2).collect();
    latencies.sort_unstable();
    (
        found as f64 / wanted as f64,
        queries as f64 / elapsed,
        latencies[latencies.len() / 2],
    )
}

/// The QPS where a curve crosses `recall` (log-linear between the points around it).
fn qps_at(curve: &[Point], recall: f64) -> Option<f64> {
    curve.windows(2).find_map(|w| {
        let (a, b) = (w[0], w[1]);
        if a.recall >= recall {
            return Some(a.qps);
        }
        (b.recall >= recall).then(|| {
            let t = (recall - a.recall) / (b.recall - a.recall);
            (a.qps.ln() + t * (b.qps.ln() - a.qps.ln())).exp()
        })
    })
}

fn run(name: &str, dimension: usize, base: &[f32], queries: &[f32], options: &Options) {
    let threads = options.threads;
    let count = base.len() / dimension;
    let nq = queries.len() / dimension;
    println!("\n== {name}: {count} vectors of dimension {dimension}, {nq} queries, {threads} threads ==");
    let params = Params {
        metric: Metric::Dot,
        m: M,
        ef_construction: EF_CONSTRUCTION,
        ..Params::default()
    };
    let hnsw = Hnsw::new(params).unwrap();
    let mut store = MemoryStore::with_vectors(dimension, M, base).unwrap();
    let query = |q: usize| &queries[q * dimension..(q + 1) * dimension];

    // Builds.
    let started = Instant::now();
    hnsw.build(&store, threads).unwrap().write_into(&mut store).unwrap();
    let ours_build = count as f64 / started.elapsed().as_secs_f64();
    let peer = hnsw_rs::hnsw::Hnsw::<f32, DistDot>::new(M, count, 16, EF_CONSTRUCTION, DistDot {});
    let rows: Vec<(&[f32], usize)> = base.chunks_exact(dimension).zip(0..).collect();
    let started = Instant::now();
    peer.parallel_insert_slice(&rows);
    let peer_build = count as f64 / started.elapsed().as_secs_f64();
    println!(
        "build (M {M}, ef_construction {EF_CONSTRUCTION}): vellum {ours_build:.0} vectors/s, hnsw_rs {peer_build:.0} vectors/s, ratio {:.2}",
        ours_build / peer_build
    );

    // Ground truth and the exact scan's latency (Vellum's f64 scan kernels).
    let started = Instant::now();
    let truth: Vec<Vec<u32>> = {
        let exact = |q: usize| -> Vec<u32> {
            let hits = hnsw.exact_search(&store, query(q), K, None).unwrap();
            hits.iter().map(|h| h.node).collect()
        };
        let mut truth = vec![Vec::new(); nq];
        std::thread::scope(|scope| {
            let chunks: Vec<_> = truth.chunks_mut(nq.div_ceil(threads)).enumerate().collect();
            for (c, chunk) in chunks {
                let exact = &exact;
                scope.spawn(move || {
                    for (i, slot) in chunk.iter_mut().enumerate() {
                        *slot = exact(c * nq.div_ceil(threads) + i);
                    }
                });
            }
        });
        truth
    };
    println!(
        "ground truth (exact scans on {threads} threads) in {:.1?}",
        started.elapsed()
    );
    let mut scan_latencies: Vec<Duration> = (0..nq.min(30))
        .map(|q| {
            let at = Instant::now();
            std::hint::black_box(hnsw.exact_search(&store, query(q), K, None).unwrap());
            at.elapsed()
        })
        .collect();
    scan_latencies.sort_unstable();
    let scan_p50 = scan_latencies[scan_latencies.len() / 2];

    // Curves.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    println!(
        "\n{:>5} | {:>8} {:>9} {:>9} | {:>8} {:>9} {:>9}",
        "ef", "recall", "QPS", "p50", "recall", "QPS", "p50"
    );
    println!("{:>5} | {:^28} | {:^28}", "", "vellum::ann", "hnsw_rs");
    for ef in EFS.into_iter().filter(|&ef| ef <= count) {
        let search = |q: usize| -> Vec<u32> {
            thread_local!(static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::new()));
            SCRATCH.with_borrow_mut(|scratch| {
                let hits = hnsw.search(&store, query(q), K, Some(ef), scratch).unwrap();
                hits.iter().map(|h| h.node).collect()
            })
        };
        let (recall, qps, p50) = measure(nq, threads, &truth, &search);
        ours.push(Point { ef, recall, qps, p50 });
        let peer_search =
            |q: usize| -> Vec<u32> { peer.search(query(q), K, ef).iter().map(|n| n.d_id as u32).collect() };
        let (recall, qps, p50) = measure(nq, threads, &truth, &peer_search);
        theirs.push(Point { ef, recall, qps, p50 });
        let (a, b) = (ours.last().unwrap(), theirs.last().unwrap());
        println!(
            "{ef:>5} | {:>8.4} {:>9.0} {:>9.1?} | {:>8.4} {:>9.0} {:>9.1?}",
            a.recall, a.qps, a.p50, b.recall, b.qps, b.p50
        );
    }
    summary(
        &hnsw,
        &ours,
        &theirs,
        ours_build / peer_build,
        scan_p50,
        store.slot_count(),
    );
    if options.store {
        in_store(dimension, base, queries, threads, &truth, peer_build, &theirs);
    }
}

/// The same vectors in a Vellum store: the index through the store's API.
fn in_store(
    dimension: usize,
    base: &[f32],
    queries: &[f32],
    threads: usize,
    truth: &[Vec<u32>],
    peer_build: f64,
    theirs: &[Point],
) {
    use vellum::{IndexOptions, SearchOptions, Store, SyncMode};
    let count = base.len() / dimension;
    let nq = queries.len() / dimension;
    let query = |q: usize| &queries[q * dimension..(q + 1) * dimension];
    let tmp = std::env::var_os("TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(tmp).unwrap();
    let path = dir.path().join("store");
    let options = || vellum::Options {
        sync: SyncMode::Never,
        archive: false,
        ..vellum::Options::default()
    };
    println!("\n-- the same vectors in a Vellum store ({}) --", path.display());
    let store = Store::create(&path, dimension as u32, options()).unwrap();
    let ids: Vec<String> = (0..count).map(|i| i.to_string()).collect();
    let started = Instant::now();
    for (chunk, rows) in base.chunks(dimension * 10_000).zip(ids.chunks(10_000)) {
        let rows: Vec<vellum::Row<'_>> = rows
            .iter()
            .zip(chunk.chunks_exact(dimension))
            .map(|(id, v)| (id.as_str(), v, &[][..]))
            .collect();
        store.insert_many(&rows).unwrap();
    }
    println!("loaded {count} vectors in {:.1?} (bulk inserts)", started.elapsed());
    let started = Instant::now();
    store
        .create_index(IndexOptions {
            metric: Metric::Dot,
            m: M,
            ef_construction: EF_CONSTRUCTION,
        })
        .unwrap();
    let built = started.elapsed();
    let build = count as f64 / built.as_secs_f64();
    let info = store.index_info().unwrap().unwrap();
    println!(
        "create_index: {build:.0} vectors/s ({built:.1?}; {:.1} MiB of pages), {:.2}x hnsw_rs's build (target >= 0.5)",
        info.size_bytes as f64 / (1 << 20) as f64,
        build / peer_build
    );
    let mut curve = Vec::new();
    println!(
        "\n{:>5} | {:>8} {:>9} {:>9}   (Store::search_with)",
        "ef", "recall", "QPS", "p50"
    );
    for ef in EFS.into_iter().filter(|&ef| ef <= count) {
        let search = |q: usize| -> Vec<u32> {
            let options = SearchOptions {
                metric: Metric::Dot,
                ef: Some(ef),
                ..SearchOptions::default()
            };
            let hits = store.search_with(query(q), K, &options).unwrap();
            hits.iter().map(|h| h.0.parse::<u32>().unwrap()).collect()
        };
        let (recall, qps, p50) = measure(nq, threads, truth, &search);
        println!("{ef:>5} | {recall:>8.4} {qps:>9.0} {p50:>9.1?}");
        curve.push(Point { ef, recall, qps, p50 });
    }
    let exact = SearchOptions {
        metric: Metric::Dot,
        exact: true,
        ..SearchOptions::default()
    };
    let mut scans: Vec<Duration> = (0..nq.min(20))
        .map(|q| {
            let at = Instant::now();
            std::hint::black_box(store.search_with(query(q), K, &exact).unwrap());
            at.elapsed()
        })
        .collect();
    scans.sort_unstable();
    let scan_p50 = scans[scans.len() / 2];
    let default = vellum::SearchOptions {
        metric: Metric::Dot,
        ..vellum::SearchOptions::default()
    };
    let search = |q: usize| -> Vec<u32> {
        let hits = store.search_with(query(q), K, &default).unwrap();
        hits.iter().map(|h| h.0.parse::<u32>().unwrap()).collect()
    };
    let (recall, qps, p50) = measure(nq, threads, truth, &search);
    let default_ef = if info.ef_search == u32::MAX as usize {
        "none: no list reached the target, the default search scans".to_string()
    } else {
        info.ef_search.to_string()
    };
    println!(
        "recall@10 at the default ef ({default_ef}; calibrated by create_index): {recall:.4} (target >= 0.95), {qps:.0} QPS, p50 {p50:.1?}"
    );
    match (qps_at(&curve, 0.95), qps_at(theirs, 0.95)) {
        (Some(a), Some(b)) => println!(
            "QPS at recall 0.95: store {a:.0}, hnsw_rs {b:.0}, ratio {:.2} (target >= 0.5)",
            a / b
        ),
        (a, b) => println!("QPS at recall 0.95: store {a:?}, hnsw_rs {b:?}"),
    }
    if let Some(p) = curve.iter().find(|p| p.recall >= 0.95) {
        println!(
            "p50 at recall >= 0.95 (ef {}): {:.1?}; the store's exact scan: {scan_p50:.1?}: {:.0}x lower (target >= 30x at 1M)",
            p.ef,
            p.p50,
            scan_p50.as_secs_f64() / p.p50.as_secs_f64()
        );
    }
    let started = Instant::now();
    let upserts = 2000.min(count);
    for i in 0..upserts {
        store
            .upsert(&ids[i], &base[i * dimension..(i + 1) * dimension], &[])
            .unwrap();
    }
    println!(
        "{upserts} single upserts into the indexed store (each a new node and a tombstone): {:.0}/s",
        upserts as f64 / started.elapsed().as_secs_f64()
    );
    // One vector in eight deleted in one transaction: its commit runs the vacuum. The deleted
    // ones are dropped from the truth (the next 10 of the exact scan take their places).
    let deleted: std::collections::HashSet<usize> = (0..count).step_by(8).collect();
    let started = Instant::now();
    let mut tx = store.begin().unwrap();
    for &i in &deleted {
        tx.delete(&ids[i]).unwrap();
    }
    tx.commit().unwrap();
    let info = store.index_info().unwrap().unwrap();
    println!(
        "deleting {} vectors in one transaction, its commit vacuuming: {:.1?} ({} tombstones left)",
        deleted.len(),
        started.elapsed(),
        info.deleted
    );
    let exact_after = |q: usize| -> Vec<u32> {
        let hits = store.search_with(query(q), K, &exact).unwrap();
        hits.iter().map(|h| h.0.parse::<u32>().unwrap()).collect()
    };
    let truth_after: Vec<Vec<u32>> = (0..nq.min(200)).map(exact_after).collect();
    let (recall, _, _) = measure(nq.min(200), threads, &truth_after, &search);
    println!("recall@10 at the default ef after the vacuum: {recall:.4}");
    store.close().unwrap();
    // The open time with the index and without it, on two copies of the same store (one
    // with its index dropped), opened in turn so both see the same machine.
    let bare = dir.path().join("store-without-index");
    copy_dir(&path, &bare);
    let store = Store::open(&bare, options()).unwrap();
    store.drop_index().unwrap();
    store.close().unwrap();
    let open = |path: &PathBuf| {
        let started = Instant::now();
        let store = Store::open(path, options()).unwrap();
        let took = started.elapsed();
        store.close().unwrap();
        took
    };
    let (mut with, mut without): (Vec<Duration>, Vec<Duration>) = (0..9).map(|_| (open(&path), open(&bare))).unzip();
    with.sort_unstable();
    without.sort_unstable();
    println!(
        "open, warm page cache, 9 of each in turn: with the index median {:.1?} (least {:.1?}), without it median {:.1?} (least {:.1?})",
        with[4], with[0], without[4], without[0]
    );
}

/// Copies the files of the store directory `from` (flat but for the arena directory) to `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn summary(hnsw: &Hnsw, ours: &[Point], theirs: &[Point], build_ratio: f64, scan_p50: Duration, count: u32) {
    let verdict = |ok: bool| if ok { "[met]" } else { "[MISSED]" };
    let default_ef = hnsw.params().ef_search;
    if let Some(p) = ours.iter().find(|p| p.ef == default_ef) {
        println!(
            "recall@10 at the default ef ({default_ef}): {:.4} (target >= 0.95) {}",
            p.recall,
            verdict(p.recall >= 0.95)
        );
    }
    match (qps_at(ours, 0.95), qps_at(theirs, 0.95)) {
        (Some(a), Some(b)) => println!(
            "QPS at recall 0.95: vellum {a:.0}, hnsw_rs {b:.0}, ratio {:.2} (target >= 0.5) {}",
            a / b,
            verdict(a / b >= 0.5)
        ),
        (a, b) => println!("QPS at recall 0.95: vellum {a:?}, hnsw_rs {b:?} (a curve never reached 0.95)"),
    }
    println!(
        "build throughput ratio: {build_ratio:.2} (target >= 0.5) {}",
        verdict(build_ratio >= 0.5)
    );
    println!("exact scan p50 over {count} vectors (one thread, Vellum's scan kernels): {scan_p50:.1?}");
    if let Some(p) = ours.iter().find(|p| p.recall >= 0.95) {
        let ratio = scan_p50.as_secs_f64() / p.p50.as_secs_f64();
        println!(
            "p50 latency at recall >= 0.95 (ef {}): {:.1?} vs exact scan {scan_p50:.1?} over {count} vectors: {ratio:.0}x lower{}",
            p.ef,
            p.p50,
            if count >= 1_000_000 {
                format!(" (target >= 30x) {}", verdict(ratio >= 30.0))
            } else {
                String::new()
            }
        );
    }
}

fn main() {
    let options = options();
    println!(
        "vellum ann benchmark: scale {}, {} threads; {}",
        options.scale,
        options.threads,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    for dataset in &options.datasets {
        match dataset.as_str() {
            "random" => {
                let count = ((1_000_000.0 * options.scale) as usize).max(1000);
                let base = random_unit(count, 128, 1);
                let queries = random_unit(QUERIES.min(count / 2), 128, 2);
                run("random unit vectors", 128, &base, &queries, &options);
            }
            "minilm" => minilm(&options),
            other => panic!("unknown dataset {other}: random or minilm"),
        }
    }
}

fn minilm(options: &Options) {
    let path = std::env::var_os("VELLUM_ANN_NPY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/ann-data/minilm-101000.npy"));
    let (rows, dimension, data) = match read_npy(&path) {
        Ok(file) => file,
        Err(e) => {
            println!("\n== MiniLM embeddings: skipped ({e}); make them with benches/data/make_embeddings.py ==");
            return;
        }
    };
    let total = ((rows as f64 * options.scale.min(1.0)) as usize).clamp(2 * QUERIES.min(rows / 2), rows);
    let nq = QUERIES.min(total / 2);
    let (base, queries) = data[..total * dimension].split_at((total - nq) * dimension);
    run("MiniLM sentence embeddings", dimension, base, queries, options);
}
