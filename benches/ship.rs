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

/// The objects a restore to the latest point reads (of the one history in `objects`): the
/// control and epoch files, the newest base image, and the log from its truncation point
/// (whole segments, or the pieces of a live one), in that order. The download baseline is
/// these objects, not the whole bucket (which holds every older base image too).
fn objects_a_restore_reads(remote: &Remote, objects: &[vellum::ship::remote::RemoteObject]) -> Vec<String> {
    let generation_name = objects[0].name.split_once('/').unwrap().0.to_string();
    let prefix = format!("{generation_name}/");
    let within = objects.iter().filter_map(|o| o.name.strip_prefix(&prefix));
    let generation = vellum::ship::Generation::from_names(&generation_name, within);
    let (_, base) = generation.bases.iter().next_back().unwrap();
    let base = format!("{prefix}{base}");
    let head = remote
        .get_range(&base, 0..vellum::archive::ARCHIVE_HEADER_BYTES as u64)
        .unwrap();
    let header = vellum::archive::decode_header(std::path::Path::new(&base), &head).unwrap();
    let segment_bytes = options().segment_size_bytes;
    let (_, numbers) = generation.log_chain(header.truncate_lsn.get() / segment_bytes, segment_bytes);
    let mut names = vec![format!("{prefix}CONTROL"), format!("{prefix}EPOCH"), base];
    for n in numbers {
        match generation.segments.get(&n) {
            Some(name) => names.push(format!("{prefix}{name}")),
            None => {
                let (pieces, _) = generation.piece_chain(n, segment_bytes);
                names.extend(pieces.into_iter().map(|(_, _, name)| format!("{prefix}{name}")));
            }
        }
    }
    names.retain(|name| objects.iter().any(|o| &o.name == name));
    names
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
    let opened = started.elapsed();
    let status = store.ship_now(Duration::from_secs(600)).unwrap();
    let shipping = started.elapsed();
    println!(
        "ship/throughput: open {:.2} s; the shipper uploaded {} objects, {:.1} MB in {} rounds",
        opened.as_secs_f64(),
        status.uploaded_objects,
        status.uploaded_bytes as f64 / 1e6,
        status.rounds
    );
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
    let local_report = vellum::restore(&primary, scratch.path().join("local"), RestoreTarget::Latest).unwrap();
    let local = started.elapsed();
    let remote = Remote::new(&url).unwrap();
    let objects = remote.list("").unwrap();
    let names = objects_a_restore_reads(&remote, &objects);
    let started = Instant::now();
    remote.get_each(&names, |_, _| Ok(())).unwrap();
    let download = started.elapsed();
    let started = Instant::now();
    let bucket_report = vellum::restore(&url, scratch.path().join("from-bucket"), RestoreTarget::Latest).unwrap();
    let from_bucket = started.elapsed();
    println!(
        "ship/restore: from the bucket {:.2} s; local restore {:.2} s + download {:.2} s: {:.2}x (target >= 0.8x)",
        from_bucket.as_secs_f64(),
        local.as_secs_f64(),
        download.as_secs_f64(),
        (local + download).as_secs_f64() / from_bucket.as_secs_f64()
    );
    let phases = |report: &vellum::RestoreReport| {
        report
            .phases
            .iter()
            .map(|(name, took)| format!("{name} {:.2} s", took.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("ship/restore: local phases: {}", phases(&local_report));
    println!("ship/restore: from the bucket phases: {}", phases(&bucket_report));
    println!(
        "ship/restore: the download: {} of the bucket's {} objects ({:.1} of {:.1} MB); the restore read {} segments",
        names.len(),
        objects.len(),
        objects
            .iter()
            .filter(|o| names.contains(&o.name))
            .map(|o| o.size_bytes)
            .sum::<u64>() as f64
            / 1e6,
        objects.iter().map(|o| o.size_bytes).sum::<u64>() as f64 / 1e6,
        bucket_report.segments_from_archive + bucket_report.segments_live
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
