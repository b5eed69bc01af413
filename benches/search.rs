//! Exact search throughput against the machine's memory bandwidth, measured in the same run:
//! 1,000,000 vectors of dimension 384 (fewer with `--test`). Target: the scan reads vector
//! bytes at ≥ 50% of the bandwidth of a plain summing pass over the same number of bytes.

mod common;
use common::quick;

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vellum::rng::SplitMix64;
use vellum::{Metric, Options, Store, SyncMode};

const DIMENSION: usize = 384;

fn vector(seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..DIMENSION).map(|_| rng.next_f32() - 0.5).collect()
}

/// Bytes per second of a read pass over `buffer` (the memory-bandwidth baseline): eight
/// independent integer lanes, which the compiler vectorises, so the pass is bound by memory and
/// not by a chain of dependent float additions.
fn bandwidth(buffer: &[f32]) -> f64 {
    let started = Instant::now();
    let mut lanes = [0u32; 8];
    for chunk in buffer.chunks_exact(8) {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.wrapping_add(x.to_bits());
        }
    }
    std::hint::black_box(lanes);
    (buffer.len() * 4) as f64 / started.elapsed().as_secs_f64()
}

fn bench(c: &mut Criterion) {
    let count = if quick() { 20_000 } else { 1_000_000 };
    let root = tempfile::tempdir().unwrap();
    let options = Options {
        sync: SyncMode::Never,
        checkpoint_interval_bytes: 0,
        archive: false,
        ..Options::default()
    };
    let store = Store::create(root.path(), DIMENSION as u32, options.clone()).unwrap();
    let started = Instant::now();
    let mut tx = store.begin().unwrap();
    for i in 0..count {
        tx.insert(&format!("v{i}"), &vector(i as u64), &[]).unwrap();
        if i % 10_000 == 9_999 {
            tx.commit().unwrap();
            tx = store.begin().unwrap();
        }
    }
    tx.commit().unwrap();
    println!("loaded {count} vectors in {:?}", started.elapsed());
    let query = vector(u64::MAX);
    let vector_bytes = (count * DIMENSION * 4) as u64;
    let mut group = c.benchmark_group("search");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(if quick() { 1 } else { 8 }));
    group.throughput(Throughput::Bytes(vector_bytes));
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        group.bench_function(format!("{metric:?}_k10"), |b| {
            b.iter(|| store.search(&query, 10, metric).unwrap().len())
        });
    }
    group.finish();
    let buffer: Vec<f32> = (0..count * DIMENSION).map(|i| i as f32).collect();
    let baseline = (0..3).map(|_| bandwidth(&buffer)).fold(0f64, f64::max);
    println!("== vellum search summary ==");
    println!(
        "memory bandwidth (read pass over {:.0} MB): {:.2} GB/s",
        vector_bytes as f64 / 1e6,
        baseline / 1e9
    );
    summarise(&store, &query, count, baseline, 3);
    // A small store in a default arena file (16 MiB, 1,024 pages, of which its vectors fill
    // a few): a search reads its vectors, not the file (it had checked every page of it, 8 ms
    // a search whatever the store held).
    let small_count = 1_000;
    let small_root = tempfile::tempdir().unwrap();
    let small = Store::create(small_root.path(), DIMENSION as u32, options).unwrap();
    let mut tx = small.begin().unwrap();
    for i in 0..small_count {
        tx.insert(&format!("v{i}"), &vector(i as u64), &[]).unwrap();
    }
    tx.commit().unwrap();
    summarise(&small, &query, small_count, baseline, 100);
}

/// Prints the best of `rounds` searches of `store` (`count` vectors) by each metric, as a
/// share of the memory bandwidth `baseline`.
fn summarise(store: &Store, query: &[f32], count: usize, baseline: f64, rounds: usize) {
    let vector_bytes = (count * DIMENSION * 4) as u64;
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        let best = (0..rounds)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(store.search(query, 10, metric).unwrap());
                started.elapsed()
            })
            .min()
            .unwrap();
        let rate = vector_bytes as f64 / best.as_secs_f64();
        println!(
            "search {metric:?} k=10 over {count} × {DIMENSION}: {best:?} = {:.2} GB/s = {:.2} of memory bandwidth (target >= 0.50)",
            rate / 1e9,
            rate / baseline
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
