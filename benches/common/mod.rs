//! Helpers shared by the benchmarks (each bench file includes this module).
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::OnceLock;

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
