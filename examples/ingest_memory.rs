//! Measures what writing a large store costs in memory and time: peak anonymous memory
//! (`RssAnon` of `/proc/self/status`, sampled every 5 ms) and ingest throughput while importing
//! vectors the way `vellum import` does (transactions of 1,000 rows through the bulk path,
//! durable commits), then how long the close takes.
//!
//! ```text
//! cargo run --release --example ingest_memory -- <NEW-DIR> <MIB-OF-VECTORS> [DIMENSION]
//! ```
//!
//! The store is created with `Options::default()` (the default memory budget). Linux only
//! (`/proc/self/status`). A measurement, not a test: it asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vellum::{Options, Store};

/// The process's anonymous memory in bytes (`RssAnon`), 0 where the kernel does not say.
fn rss_anon_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Fills `out` with a vector that differs with `n` (a cheap generator: the measure is the store).
fn vector_for(n: u64, out: &mut [f32]) {
    let mut h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for x in out.iter_mut() {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        *x = (h >> 40) as f32 / (1u64 << 24) as f32;
    }
}

/// Prints the mappings holding the most anonymous memory (`/proc/self/smaps`), largest first.
fn print_anonymous_mappings(top: usize) {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut mappings: Vec<(u64, String)> = Vec::new();
    let mut name = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            name = line.split_whitespace().skip(5).collect::<Vec<_>>().join(" ");
            let range = first
                .split_once('-')
                .map(|(a, b)| u64::from_str_radix(b, 16).unwrap_or(0) - u64::from_str_radix(a, 16).unwrap_or(0));
            name = format!("{name} ({} MiB mapped)", range.unwrap_or(0) >> 20);
        } else if first == "Anonymous:" {
            let kib: u64 = line.split_whitespace().nth(1).and_then(|k| k.parse().ok()).unwrap_or(0);
            mappings.push((kib, name.clone()));
        }
    }
    mappings.sort_unstable_by_key(|m| std::cmp::Reverse(m.0));
    for (kib, name) in mappings.iter().take(top) {
        println!("  {:>8} KiB anonymous  {name}", kib);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: ingest_memory <NEW-DIR> <MIB-OF-VECTORS> [DIMENSION]");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&args[1]);
    let mib: u64 = args[2].parse().expect("MIB-OF-VECTORS is a number");
    let dimension: u32 = args.get(3).map_or(256, |d| d.parse().expect("DIMENSION is a number"));
    let count = (mib << 20) / (u64::from(dimension) * 4);
    let batch = 1000u64;

    let peak = Arc::new(AtomicU64::new(rss_anon_bytes()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_anon_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let before = rss_anon_bytes();
    let store = Store::create(&dir, dimension, Options::default()).expect("creating the store");
    let mut ids = vec![String::new(); batch as usize];
    let mut vectors = vec![vec![0f32; dimension as usize]; batch as usize];
    let started = Instant::now();
    let mut n = 0u64;
    while n < count {
        let rows_in = batch.min(count - n) as usize;
        for i in 0..rows_in {
            ids[i] = format!("v{:09}", n + i as u64);
            vector_for(n + i as u64, &mut vectors[i]);
        }
        let rows: Vec<vellum::Row<'_>> = (0..rows_in)
            .map(|i| (ids[i].as_str(), vectors[i].as_slice(), &[][..]))
            .collect();
        let mut tx = store.begin().expect("begin");
        tx.upsert_many(&rows).expect("upsert_many");
        tx.commit().expect("commit");
        n += rows_in as u64;
    }
    let ingest = started.elapsed();
    let after_load = rss_anon_bytes();
    if std::env::var_os("INGEST_SMAPS").is_some() {
        print_anonymous_mappings(8);
    }
    let closing = Instant::now();
    store.close().expect("close");
    let close = closing.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let vector_mb = (count * u64::from(dimension) * 4) as f64 / 1e6;
    println!(
        "{count} vectors x {dimension} ({vector_mb:.0} MB): ingest {:.1} s = {:.1} MB/s; \
         RssAnon before {} MiB, peak {} MiB, after the load {} MiB; close {} ms",
        ingest.as_secs_f64(),
        vector_mb / ingest.as_secs_f64(),
        before >> 20,
        peak.load(Ordering::Relaxed).max(rss_anon_bytes()) >> 20,
        after_load >> 20,
        close.as_millis()
    );
}
