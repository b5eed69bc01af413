//! Helpers shared by the benchmarks (each bench file includes this module).
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use criterion::BenchmarkGroup;
use criterion::measurement::WallTime;

use tempfile::TempDir;

/// True when criterion will not measure: test mode (`cargo test --benches` passes no `--bench`;
/// `cargo bench -- --test`) or `--list`. Then every file is tiny and there is no summary.
pub fn quick() -> bool {
    static QUICK: OnceLock<bool> = OnceLock::new();
    *QUICK.get_or_init(|| {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|arg| arg == flag);
        !has("--bench") || has("--test") || has("--list")
    })
}

pub fn temp_dir(label: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("vellum-bench-{label}-"))
        .tempdir_in(std::env::temp_dir())
        .expect("creating a temp dir")
}

pub fn create_new(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()))
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

pub fn verdict(ok: bool) -> &'static str {
    if ok { "  [met]" } else { "  [MISSED]" }
}

/// The machine's load average and core count, printed with the summary: the figures are only as
/// good as the machine was quiet (other processes share its cores and its disk).
pub fn machine_load() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("load average {} (1, 5, 15 min) on {cores} cores", load.join(" "))
}

/// The vector a benchmark stores under number `i`: finite, distinct per number.
pub fn fill_vector(i: u64, out: &mut [f32]) {
    for (j, x) in out.iter_mut().enumerate() {
        *x = ((i % 9973) as f32) * 0.001 + j as f32 * 0.01;
    }
}

/// Waits (at most 3 s) for the log's preallocator to have a full-length (`segment_bytes`) spare
/// segment ready in `wal_dir`, then for its fdatasync, so that its zero-fill is not measured (and
/// a crash does not interrupt it). Looks for a full-length `spare-*` file: a heuristic on the
/// segment directory's naming; on timeout it just goes on.
pub fn settle(wal_dir: &Path, segment_bytes: u64) {
    if quick() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let spare_ready = std::fs::read_dir(wal_dir).into_iter().flatten().flatten().any(|entry| {
            entry.file_name().to_string_lossy().starts_with("spare-")
                && entry.metadata().is_ok_and(|m| m.len() == segment_bytes)
        });
        if spare_ready {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
}

/// Criterion settings for one benchmark (ignored in quick mode, where each runs once).
pub fn timing(group: &mut BenchmarkGroup<'_, WallTime>, warm_up_ms: u64, measure_ms: u64, samples: usize) {
    group
        .warm_up_time(Duration::from_millis(warm_up_ms))
        .measurement_time(Duration::from_millis(measure_ms))
        .sample_size(samples);
}

/// Runs `op` for `slice`; returns operations per second.
pub fn rate_for(slice: Duration, mut op: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < slice {
        op();
        ops += 1;
    }
    ops as f64 / start.elapsed().as_secs_f64()
}
