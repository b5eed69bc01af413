//! Open time and memory do not grow with the number of vectors (issue "nothing rebuilt at
//! open"): stores of 250,000 and 1,000,000 vectors of dimension 256 (1 KiB each), built with
//! the bulk path and closed, then, for each size:
//!
//! - `open_warm_ms`: `Store::open` of the closed store, its files in the page cache (median of
//!   7 opens, each followed by a close that writes nothing);
//! - `open_cold_ms`: the same open after the store's files were dropped from the page cache
//!   (fsync, then `posix_fadvise(DONTNEED)` on every file; median of 3);
//! - `rss_anon_kib`: the process's anonymous memory (`RssAnon` of `/proc/self/status`) after
//!   the open and 10,000 random `get`s, minus what it was before the open;
//! - `get_p50_ns`: the median of those 10,000 `get`s (id formatting and a copy of the vector
//!   included, as the peers benchmark reads): nearly every one touches pages this process has
//!   not read yet, so it pays their page faults and the check of their checksums;
//! - `get_again_p50_ns`: the median of the same 10,000 `get`s again (pages mapped and checked).
//!
//! The claim holds when the 1M column is within noise of the 250k one. Not criterion: each
//! figure is one number per store, printed as a table. `cargo test --benches` builds tiny
//! stores (2,000 and 8,000 vectors) as a smoke test.
//!
//! ```text
//! cargo bench --bench open_scale
//! ```

mod common;
use common::{fill_vector, machine_load, quick, temp_dir};

use std::path::Path;
use std::time::Instant;

use vellum::{Options, Row, Store, SyncMode};

const DIMENSION: usize = 256;

fn options() -> Options {
    Options {
        sync: SyncMode::Never,
        ..Options::default()
    }
}

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn build(dir: &Path, count: u64) {
    let store = Store::create(dir, DIMENSION as u32, options()).expect("create");
    let mut vectors = vec![0f32; 1000 * DIMENSION];
    for start in (0..count).step_by(1000) {
        let n = (count - start).min(1000) as usize;
        let ids: Vec<String> = (start..start + n as u64).map(|i| format!("v{i:08}")).collect();
        for (i, chunk) in vectors.chunks_exact_mut(DIMENSION).take(n).enumerate() {
            fill_vector(start + i as u64, chunk);
        }
        let rows: Vec<Row<'_>> = ids
            .iter()
            .zip(vectors.chunks_exact(DIMENSION))
            .map(|(id, v)| (id.as_str(), v, &[][..]))
            .collect();
        store.insert_many(&rows).expect("insert_many");
    }
    store.close().expect("close");
}

struct Figures {
    open_warm_ms: f64,
    open_cold_ms: f64,
    rss_anon_kib: u64,
    get_p50_ns: f64,
    get_again_p50_ns: f64,
}

/// The median time of a `get` of each id of `ids`, the vector copied out.
fn get_p50_ns(store: &Store, ids: &[String]) -> f64 {
    let (mut out, mut times) = (Vec::with_capacity(DIMENSION), Vec::with_capacity(ids.len()));
    for id in ids {
        let started = Instant::now();
        let found = store.get(id).expect("get").expect("present");
        out.clear();
        out.extend_from_slice(&found);
        drop(found);
        times.push(started.elapsed().as_nanos() as f64);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Drops every file below `dir` from the page cache (fsync first: only clean pages go).
fn evict_page_cache(dir: &Path) {
    use std::os::fd::AsRawFd;
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            evict_page_cache(&path);
            continue;
        }
        let file = std::fs::File::open(&path).expect("open");
        file.sync_all().expect("fsync");
        // SAFETY: the descriptor belongs to `file`, alive across the call; posix_fadvise takes
        // no pointers and only advises the kernel about the file's cached pages.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

/// The median of `runs` timed opens (each closed untimed), after `before` each.
fn open_ms(dir: &Path, runs: usize, mut before: impl FnMut()) -> f64 {
    let mut opens = Vec::new();
    for _ in 0..runs {
        before();
        let started = Instant::now();
        let store = Store::open(dir, options()).expect("open");
        opens.push(started.elapsed().as_secs_f64() * 1e3);
        store.close().expect("close");
    }
    opens.sort_by(f64::total_cmp);
    opens[opens.len() / 2]
}

fn measure(dir: &Path, count: u64) -> Figures {
    let open_warm_ms = open_ms(dir, 7, || {});
    let open_cold_ms = open_ms(dir, 3, || evict_page_cache(dir));
    let before = rss_anon_kib();
    let store = Store::open(dir, options()).expect("open");
    let mut rng = vellum::rng::SplitMix64::new(7);
    let ids: Vec<String> = (0..10_000).map(|_| format!("v{:08}", rng.next_u64() % count)).collect();
    let first = get_p50_ns(&store, &ids);
    let rss_anon_kib = rss_anon_kib().saturating_sub(before);
    let figures = Figures {
        open_warm_ms,
        open_cold_ms,
        rss_anon_kib,
        get_p50_ns: first,
        get_again_p50_ns: get_p50_ns(&store, &ids),
    };
    store.close().expect("close");
    figures
}

fn main() {
    let counts: [u64; 2] = if quick() { [2_000, 8_000] } else { [250_000, 1_000_000] };
    let mut rows = Vec::new();
    for count in counts {
        let dir = temp_dir("open-scale");
        let store_dir = dir.path().join("store");
        let started = Instant::now();
        build(&store_dir, count);
        eprintln!("built {count} vectors in {:.1} s", started.elapsed().as_secs_f64());
        rows.push((count, measure(&store_dir, count)));
    }
    if quick() {
        return;
    }
    println!(
        "\n| vectors (dimension 256) | open, warm (ms) | open, cold (ms) | RssAnon after open + 10k gets (KiB) | get p50 (ns) |"
    );
    println!("|---|---|---|---|---|");
    for (count, f) in &rows {
        println!(
            "| {count} | {:.3} | {:.2} | {} | {:.0} |",
            f.open_warm_ms, f.open_cold_ms, f.rss_anon_kib, f.get_p50_ns
        );
    }
    let (small, large) = (&rows[0].1, &rows[1].1);
    println!(
        "\n1M ÷ 250k: open warm {:.2}×, cold {:.2}×, RssAnon {:.2}×, get p50 {:.2}× (again {:.2}×) ({})",
        large.open_warm_ms / small.open_warm_ms,
        large.open_cold_ms / small.open_cold_ms,
        large.rss_anon_kib as f64 / small.rss_anon_kib.max(1) as f64,
        large.get_p50_ns / small.get_p50_ns,
        large.get_again_p50_ns / small.get_again_p50_ns,
        machine_load()
    );
}
