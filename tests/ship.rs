//! Shipping the archive to object storage, restoring from it alone, following it as a replica
//! (feature `object-store`). `file://` remotes in process; S3 against a real S3 API
//! (`moto_server`, on loopback only) through the command line, with a fault-injecting proxy.
//! Without moto the S3 test is skipped with a printed reason, except in CI (`CI` set), where
//! it fails: `.ci/moto-venv.sh` installs it.
#![cfg(feature = "object-store")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vellum::{Error, Options, Replica, ReplicaOptions, RestoreTarget, Store};

fn options(url: &str) -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 64 << 10,
        archive_url: Some(url.to_string()),
        archive_timeout: Some(Duration::from_millis(50)),
        ..Options::default()
    }
}

fn vector(i: u64) -> Vec<f32> {
    vec![i as f32, 1.0, 2.0, 3.0]
}

fn commit_range(store: &Store, ids: std::ops::Range<u64>) {
    for chunk in ids.collect::<Vec<_>>().chunks(50) {
        let mut tx = store.begin().unwrap();
        for &i in chunk {
            tx.upsert(&format!("id-{i}"), &vector(i), &[]).unwrap();
        }
        tx.commit().unwrap();
    }
}

fn assert_holds(store: &Store, ids: std::ops::Range<u64>, what: &str) {
    for i in ids {
        let got = store.get(&format!("id-{i}")).unwrap();
        assert!(got.is_some_and(|v| *v == *vector(i)), "{what}: id-{i} is there, whole");
    }
}

#[test]
fn restore_from_a_file_url_holds_every_commit() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/remote", dir.path().display());
    let store = Store::create(dir.path().join("primary"), 4, options(&url)).unwrap();
    commit_range(&store, 0..3000);
    store.checkpoint().unwrap();
    commit_range(&store, 3000..3500);
    store.close().unwrap();
    let dest = dir.path().join("restored");
    let report = vellum::restore(&url, &dest, RestoreTarget::Latest).unwrap();
    assert!(
        report.phases.first().is_some_and(|p| p.0 == "download"),
        "the download is a phase"
    );
    let restored = Store::open(&dest, Options::default()).unwrap();
    assert_eq!(restored.len(), 3500, "every commit, from the bucket alone");
    assert_holds(&restored, 0..3500, "restored");
}

#[test]
fn a_live_segment_shipped_in_pieces_restores_without_a_close() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/remote", dir.path().display());
    let store = Store::create(dir.path().join("primary"), 4, options(&url)).unwrap();
    for round in 0..5u64 {
        commit_range(&store, round * 100..(round + 1) * 100);
        let status = store.ship_now(Duration::from_secs(20)).unwrap();
        assert_eq!(status.last_error, None, "round {round}: shipping works");
        assert_eq!(
            status.lag_bytes, 0,
            "round {round}: the durable log is remote: {status:?}"
        );
    }
    // The primary is still open (its live log only in pieces): restore from the bucket.
    let dest = dir.path().join("restored");
    vellum::restore(&url, &dest, RestoreTarget::Latest).unwrap();
    let restored = Store::open(&dest, Options::default()).unwrap();
    assert_holds(&restored, 0..500, "restored from pieces");
    drop(store);
}

#[test]
fn damaged_and_missing_remote_objects_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let remote_dir = dir.path().join("remote");
    let url = format!("file://{}", remote_dir.display());
    let store = Store::create(dir.path().join("primary"), 4, options(&url)).unwrap();
    commit_range(&store, 0..3000);
    store.close().unwrap();
    let generation = std::fs::read_dir(&remote_dir).unwrap().next().unwrap().unwrap().path();
    let segment = generation.join("wal-0000000000000002.lz4");
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let error = vellum::restore(&url, dir.path().join("r1"), RestoreTarget::Latest).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupted { file: Some(f), .. } if f.to_string_lossy().ends_with("wal-0000000000000002.lz4") && f.to_string_lossy().starts_with("file://")),
        "a damaged object is named by its URL: {error}"
    );
    assert!(!dir.path().join("r1").exists(), "a failed restore leaves nothing");
    std::fs::remove_file(&segment).unwrap();
    let error = vellum::restore(&url, dir.path().join("r2"), RestoreTarget::Latest).unwrap_err();
    assert!(
        matches!(&error, Error::Corrupted { file: Some(f), reason, .. } if f.to_string_lossy().ends_with("wal-0000000000000002.lz4") && reason.contains("missing")),
        "a gap in the chain is named before anything is replayed: {error}"
    );
}

/// The base image objects of the one history under `remote_dir`, oldest first.
fn base_objects(remote_dir: &Path) -> Vec<PathBuf> {
    let generation = std::fs::read_dir(remote_dir).unwrap().next().unwrap().unwrap().path();
    let mut bases: Vec<PathBuf> = std::fs::read_dir(&generation)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("base-"))
        .collect();
    bases.sort();
    bases
}

#[test]
fn a_base_image_damaged_or_cut_short_in_the_bucket_is_named_as_it_streams() {
    let dir = tempfile::tempdir().unwrap();
    let remote_dir = dir.path().join("remote");
    let url = format!("file://{}", remote_dir.display());
    let store = Store::create(dir.path().join("primary"), 4, options(&url)).unwrap();
    commit_range(&store, 0..3000);
    store.checkpoint().unwrap();
    store.close().unwrap();
    let newest = base_objects(&remote_dir).pop().unwrap();
    let intact = std::fs::read(&newest).unwrap();
    let mut flipped = intact.clone();
    let middle = intact.len() / 2;
    flipped[middle] ^= 0x40;
    let cut = intact[..intact.len() - 7].to_vec();
    for (what, bytes) in [("a flipped bit", flipped), ("a cut-short object", cut)] {
        std::fs::write(&newest, &bytes).unwrap();
        let dest = dir.path().join("restored");
        let error = vellum::restore(&url, &dest, RestoreTarget::Latest).unwrap_err();
        let name = newest.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            matches!(&error, Error::Corrupted { file: Some(f), .. } if f.to_string_lossy().starts_with("file://") && f.to_string_lossy().ends_with(&name)),
            "{what}: the base image is named by its URL: {error}"
        );
        assert!(!dest.exists(), "{what}: a failed restore leaves nothing");
    }
    std::fs::write(&newest, &intact).unwrap();
    let restored = dir.path().join("restored");
    vellum::restore(&url, &restored, RestoreTarget::Latest).unwrap();
    assert_holds(
        &Store::open(&restored, Options::default()).unwrap(),
        0..3000,
        "repaired",
    );
}

#[test]
fn a_restore_to_an_lsn_before_the_newest_base_image_starts_from_an_older_one() {
    let dir = tempfile::tempdir().unwrap();
    let remote_dir = dir.path().join("remote");
    let url = format!("file://{}", remote_dir.display());
    let keep_all = Options {
        retention: vellum::Retention::KeepAll,
        base_image_every: 1,
        ..options(&url)
    };
    let store = Store::create(dir.path().join("primary"), 4, keep_all).unwrap();
    commit_range(&store, 0..1000);
    store.checkpoint().unwrap();
    let mut tx = store.begin().unwrap();
    tx.upsert("marker", &vector(7), &[]).unwrap();
    let marker_lsn = tx.commit().unwrap();
    commit_range(&store, 1000..3000);
    store.checkpoint().unwrap();
    store.close().unwrap();
    assert!(base_objects(&remote_dir).len() >= 2, "a base image at each checkpoint");
    let dest = dir.path().join("restored");
    let report = vellum::restore(&url, &dest, RestoreTarget::Lsn(marker_lsn)).unwrap();
    assert!(
        report.base_image_lsn < marker_lsn,
        "the base image of the checkpoint after the target does not fit: {report:?}"
    );
    let restored = Store::open(&dest, Options::default()).unwrap();
    assert_eq!(restored.len(), 1001, "the commits up to the marker, none after");
    assert_holds(&restored, 0..1000, "restored to the marker");
}

#[test]
fn a_copy_of_the_store_shipping_to_the_same_prefix_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/remote", dir.path().display());
    let store = Store::create(dir.path().join("primary"), 4, options(&url)).unwrap();
    commit_range(&store, 0..200);
    store.close().unwrap();
    let copy = dir.path().join("copy");
    let status = Command::new("cp")
        .arg("-r")
        .arg(dir.path().join("primary"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let second = Store::open(&copy, Options::default()).unwrap();
    commit_range(&second, 200..300);
    let status = second.ship_now(Duration::from_secs(20)).unwrap();
    assert!(status.refused, "a second primary is refused: {status:?}");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("another primary")),
        "and says so: {status:?}"
    );
    second.close().unwrap();
    let reopened = Store::open(dir.path().join("primary"), Options::default()).unwrap();
    let status = reopened.ship_now(Duration::from_secs(20)).unwrap();
    assert!(
        !status.refused && status.last_error.is_none(),
        "the first primary still ships: {status:?}"
    );
}

#[test]
fn a_replica_follows_the_primarys_commits() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}/remote", dir.path().display());
    let store = Store::create(dir.path().join("primary"), 4, options(&url)).unwrap();
    commit_range(&store, 0..100);
    store.ship_now(Duration::from_secs(20)).unwrap();
    let replica_options = ReplicaOptions {
        poll: Duration::from_millis(50),
        rebase_log_bytes: 256 << 10,
        ..ReplicaOptions::default()
    };
    let replica = Replica::start(&url, dir.path().join("replica"), replica_options).unwrap();
    assert_holds(&replica.store(), 0..100, "the replica's first restore");
    let reader = Store::open_read_only(dir.path().join("replica"), Options::default()).unwrap();
    assert_eq!(reader.len(), 100, "another reader opens the replica read-only");
    drop(reader);
    for round in 1..=8u64 {
        commit_range(&store, round * 500..round * 500 + 500);
        if round % 3 == 0 {
            store.checkpoint().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let last = format!("id-{}", round * 500 + 499);
        while replica.store().get(&last).unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "round {round}: the replica sees the commit: {:?}",
                replica.status()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let status = replica.status();
    assert!(status.refreshes >= 8, "{status:?}");
    assert_holds(&replica.store(), 500..4500, "the replica");
    let error = Store::open(dir.path().join("replica"), Options::default()).unwrap_err();
    assert!(
        matches!(error, Error::ReadOnly(_)),
        "a replica never opens for writing: {error}"
    );
    drop(replica);
    store.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// S3 (moto) through the command line, with a fault-injecting proxy.

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn http(port: u16, request: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

fn start_moto() -> Option<Moto> {
    let bin = std::env::var_os("VELLUM_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv/bin/moto_server"));
    if !bin.exists() {
        let why = format!("{} not found (bash .ci/moto-venv.sh installs it)", bin.display());
        assert!(std::env::var_os("CI").is_none(), "CI needs moto: {why}");
        eprintln!("skipping the S3 test: {why}");
        return None;
    }
    let port = free_port();
    let child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto { child, port };
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(moto);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("moto_server did not listen on 127.0.0.1:{port} within 30 s");
}

fn create_bucket(port: u16, bucket: &str) {
    let response = http(
        port,
        &format!("PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    );
    assert!(response.starts_with("HTTP/1.1 200"), "bucket {bucket}: {response}");
}

/// A loopback TCP proxy: forwards to `target`, or, while `down`, answers 503 and closes (and
/// cuts the connections it forwards).
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn start_proxy(target: u16) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (down, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let (d, s) = (down.clone(), stop.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            if s.load(Ordering::SeqCst) {
                return;
            }
            let Ok(mut client) = client else { continue };
            if d.load(Ordering::SeqCst) {
                let mut buf = [0u8; 4096];
                let _ = client.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = client.read(&mut buf);
                let _ = client
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let cut = d.clone();
                std::thread::spawn(move || {
                    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
                    let mut buf = vec![0u8; 64 << 10];
                    loop {
                        if cut.load(Ordering::SeqCst) {
                            break;
                        }
                        match from.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => break,
                        }
                    }
                    let _ = from.shutdown(std::net::Shutdown::Both);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    Proxy { port, down, stop }
}

fn vellum(endpoint_port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vellum"));
    command
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{endpoint_port}"))
        .env("AWS_ALLOW_HTTP", "true");
    command
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn write_records(path: &Path, ids: std::ops::Range<u64>) {
    let mut text = String::new();
    for i in ids {
        text.push_str(&format!("{{\"id\": \"id-{i}\", \"vector\": [{i}, 1, 2, 3]}}\n"));
    }
    std::fs::write(path, text).unwrap();
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap()
}

/// The ids 0..n present in a store, checked whole; returns n (the first absent id).
fn prefix_present(dir: &Path, max: u64) -> u64 {
    let store = Store::open(dir, Options::default()).unwrap();
    let n = (0..max)
        .find(|&i| store.get(&format!("id-{i}")).unwrap().is_none())
        .unwrap_or(max);
    assert_holds(&store, 0..n, "restored");
    assert_eq!(store.len() as u64, n, "the restored store holds a prefix of the import");
    n
}

#[test]
fn s3_ship_kill_restore_faults_and_replica() {
    let Some(moto) = start_moto() else { return };
    let dir = tempfile::tempdir().unwrap();
    create_bucket(moto.port, "vellum-test");
    let url = "s3://vellum-test/kill";
    let primary = dir.path().join("primary");
    run_ok(vellum(moto.port).args(["create"]).arg(&primary).args([
        "--dim",
        "4",
        "--page-size",
        "4096",
        "--segment-size",
        "64KiB",
        "--archive-url",
        url,
        "--archive-timeout",
        "50ms",
    ]));
    let records = dir.path().join("records.jsonl");
    write_records(&records, 0..40_000);

    // kill -9 the primary while it commits and ships.
    let mut child = vellum(moto.port)
        .arg("import")
        .arg(&primary)
        .arg(&records)
        .args(["--batch", "10", "--ack"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let acks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (stdout, counter) = (child.stdout.take().unwrap(), acks.clone());
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            counter.store(line.trim().parse().unwrap(), Ordering::SeqCst);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while acks.load(Ordering::SeqCst) < 5_000 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the shipper work beside the commits for a while, then kill -9 mid-upload.
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let acked = acks.load(Ordering::SeqCst);
    let first = dir.path().join("restored-after-kill");
    let report = json(&run_ok(
        vellum(moto.port)
            .args(["restore", url])
            .arg(&first)
            .args(["--latest", "--json"]),
    ));
    let shipped = prefix_present(&first, 40_000);
    eprintln!("killed after {acked} acknowledged records; the bucket alone restores {shipped} ({report})");
    assert!(
        shipped > 0 && shipped <= acked + 10,
        "a prefix of what was acknowledged (or in flight)"
    );

    // The primary reopens: its shipper resumes; closing ships the rest.
    // `stats` opens it (each open ships); until the bucket has caught up (bounded).
    for attempt in 0..10 {
        let stats = json(&run_ok(
            vellum(moto.port).arg("stats").arg(&primary).args(["--json", "--ship"]),
        ));
        let ship = &stats["ship"];
        if ship["lag_bytes"] == 0 && ship["pending_files"] == 0 {
            break;
        }
        eprintln!("attempt {attempt}: not caught up yet: {ship}");
    }
    let second = dir.path().join("restored-after-resume");
    run_ok(vellum(moto.port).args(["restore", url]).arg(&second).arg("--latest"));
    assert!(
        prefix_present(&second, 40_000) >= acked,
        "every acknowledged commit, from the bucket alone"
    );

    // Faults: a proxy that answers 503 and cuts connections; commits go on, the error is
    // reported, the local archive is kept, and everything ships once the proxy heals.
    create_bucket(moto.port, "vellum-faults");
    let proxy = start_proxy(moto.port);
    let faulty = dir.path().join("faulty");
    let url = "s3://vellum-faults/p";
    run_ok(vellum(proxy.port).args(["create"]).arg(&faulty).args([
        "--dim",
        "4",
        "--page-size",
        "4096",
        "--segment-size",
        "64KiB",
        "--archive-url",
        url,
        "--archive-timeout",
        "50ms",
    ]));
    write_records(&records, 0..2000);
    run_ok(
        vellum(proxy.port)
            .arg("import")
            .arg(&faulty)
            .arg(&records)
            .args(["--batch", "50"]),
    );
    proxy.down.store(true, Ordering::SeqCst);
    write_records(&records, 2000..6000);
    run_ok(
        vellum(proxy.port)
            .arg("import")
            .arg(&faulty)
            .arg(&records)
            .args(["--batch", "50"]),
    );
    let stats = json(&run_ok(
        vellum(proxy.port).arg("stats").arg(&faulty).args(["--json", "--ship"]),
    ));
    let ship = &stats["ship"];
    assert!(ship["last_error"].is_string(), "the outage is reported: {ship}");
    assert!(ship["lag_bytes"].as_u64().unwrap() > 0, "and the lag: {ship}");
    assert!(
        ship["pending_files"].as_u64().unwrap() > 0,
        "local archive files wait for their upload: {ship}"
    );
    proxy.down.store(false, Ordering::SeqCst);
    let stats = json(&run_ok(
        vellum(proxy.port).arg("stats").arg(&faulty).args(["--json", "--ship"]),
    ));
    let ship = &stats["ship"];
    assert!(ship["last_error"].is_null(), "healed: {ship}");
    assert_eq!(ship["lag_bytes"], 0, "caught up: {ship}");
    let third = dir.path().join("restored-after-faults");
    run_ok(vellum(moto.port).args(["restore", url]).arg(&third).arg("--latest"));
    assert_eq!(prefix_present(&third, 6000), 6000, "nothing was lost to the outage");

    // A replica from the bucket, readable by any process.
    let replica = dir.path().join("replica");
    run_ok(vellum(moto.port).args(["replica", url]).arg(&replica).arg("--once"));
    let got = run_ok(vellum(moto.port).arg("get").arg(&replica).arg("id-5999"));
    assert!(got.contains("5999.0"), "{got}");
    drop(proxy);
}
