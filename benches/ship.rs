//! Shipping benchmarks (feature `object-store`), each against a raw baseline in the same run:
//!
//! - shipping throughput vs a plain `object_store` put loop of the same files to the same place;
//! - restore from the bucket vs a local restore of the same history plus the download time;
//! - replica lag at a steady 1 MB/s of commits (archive_timeout 1 s, poll 200 ms).
//!
//! The remote is `file://` under the system's temporary directory, or the S3 URL in
//! `VELLUM_BENCH_URL` (with the endpoint and credentials in the environment, e.g. moto's).
//! One run, printed; no loops of runs.

use std::time::{Duration, Instant};

use vellum::rng::SplitMix64;
use vellum::ship::Remote;
use vellum::{Options, Replica, ReplicaOptions, RestoreTarget, Store};

const DIMENSION: usize = 256;

fn vector(i: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(i);
    (0..DIMENSION).map(|_| rng.next_f32() - 0.5).collect()
}

fn fill(store: &Store, ids: std::ops::Range<u64>) {
    for chunk in ids.collect::<Vec<_>>().chunks(500) {
        let mut tx = store.begin().unwrap();
        for &i in chunk {
            tx.upsert(&format!("{i}"), &vector(i), &[]).unwrap();
        }
        tx.commit().unwrap();
    }
}

fn options() -> Options {
    Options {
        segment_size_bytes: 4 << 20,
        checkpoint_interval_bytes: 16 << 20,
        retention: vellum::Retention::KeepAll,
        ..Options::default()
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let url =
        std::env::var("VELLUM_BENCH_URL").unwrap_or_else(|_| format!("file://{}/remote", scratch.path().display()));
    // A history of about 200 MB of log: archived segments and base images.
    let primary = scratch.path().join("primary");
    let store = Store::create(&primary, DIMENSION as u32, options()).unwrap();
    fill(&store, 0..200_000);
    store.close().unwrap();
    let archive = primary.join("archive");
    let mut files: Vec<_> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let bytes: u64 = files.iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();

    // 1. A plain put loop of the same files, then the shipper.
    let remote = Remote::new(&format!("{url}-baseline")).unwrap();
    let started = Instant::now();
    for file in &files {
        let name = file.file_name().unwrap().to_str().unwrap();
        remote.put(&format!("g/{name}"), std::fs::read(file).unwrap()).unwrap();
    }
    let put_loop = started.elapsed();
    let started = Instant::now();
    let store = Store::open(
        &primary,
        Options {
            archive_url: Some(url.clone()),
            ..options()
        },
    )
    .unwrap();
    let status = store.ship_now(Duration::from_secs(600)).unwrap();
    let shipping = started.elapsed();
    assert!(status.pending_files == 0 && status.last_error.is_none(), "{status:?}");
    store.close().unwrap();
    let mb = bytes as f64 / 1e6;
    println!(
        "ship/throughput: {} files, {mb:.1} MB: shipper {:.0} MB/s, put loop {:.0} MB/s: {:.2}x (target >= 0.8x)",
        files.len(),
        mb / shipping.as_secs_f64(),
        mb / put_loop.as_secs_f64(),
        put_loop.as_secs_f64() / shipping.as_secs_f64()
    );

    // 2. Restore from the bucket vs a local restore plus the download of the same objects.
    let started = Instant::now();
    vellum::restore(&primary, scratch.path().join("local"), RestoreTarget::Latest).unwrap();
    let local = started.elapsed();
    let remote = Remote::new(&url).unwrap();
    let objects = remote.list("").unwrap();
    let started = Instant::now();
    let names: Vec<String> = objects.iter().map(|o| o.name.clone()).collect();
    remote.get_each(&names, |_, _| Ok(())).unwrap();
    let download = started.elapsed();
    let started = Instant::now();
    vellum::restore(&url, scratch.path().join("from-bucket"), RestoreTarget::Latest).unwrap();
    let from_bucket = started.elapsed();
    println!(
        "ship/restore: from the bucket {:.2} s; local restore {:.2} s + download {:.2} s: {:.2}x (target >= 0.8x)",
        from_bucket.as_secs_f64(),
        local.as_secs_f64(),
        download.as_secs_f64(),
        (local + download).as_secs_f64() / from_bucket.as_secs_f64()
    );

    // 3. Replica lag at 1 MB/s of commits (1 KiB vectors, 100 per 100 ms).
    let lagged = scratch.path().join("lag-primary");
    let lag_url = format!("{url}-lag");
    let timeout = Duration::from_secs(1);
    let store = Store::create(
        &lagged,
        DIMENSION as u32,
        Options {
            archive_url: Some(lag_url.clone()),
            archive_timeout: Some(timeout),
            ..options()
        },
    )
    .unwrap();
    fill(&store, 0..100);
    store.ship_now(Duration::from_secs(60));
    let poll = Duration::from_millis(200);
    let replica = Replica::start(
        &lag_url,
        scratch.path().join("replica"),
        ReplicaOptions {
            poll,
            ..Default::default()
        },
    )
    .unwrap();
    let mut worst = Duration::ZERO;
    let mut next = 1_000_000u64;
    let started = Instant::now();
    let mut pending: Vec<(u64, Instant)> = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        let tick = Instant::now();
        fill(&store, next..next + 100);
        pending.push((next + 99, Instant::now()));
        next += 100;
        let view = replica.store();
        pending.retain(|(id, at)| {
            let seen = view.get(&id.to_string()).unwrap().is_some();
            if seen {
                worst = worst.max(at.elapsed());
            }
            !seen
        });
        std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
    }
    while let Some((id, at)) = pending.first().copied() {
        if replica.store().get(&id.to_string()).unwrap().is_some() {
            worst = worst.max(at.elapsed());
            pending.remove(0);
        } else {
            assert!(
                at.elapsed() < Duration::from_secs(30),
                "the replica stalled: {:?}",
                replica.status()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    println!(
        "ship/replica_lag: 1 MB/s of commits for 8 s: worst lag {:.2} s (target <= archive_timeout {:.1} s + 1 s; poll {:.1} s)",
        worst.as_secs_f64(),
        timeout.as_secs_f64(),
        poll.as_secs_f64()
    );
    drop(replica);
    store.close().unwrap();
}
