//! Point-in-time restore, backups, archive damage and retention.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use support::{Rng, seed_from_env};
use vellum::storage::SimStorage;
use vellum::{Error, Lsn, Options, RestoreTarget, Retention, Store, SyncMode, restore};

type State = BTreeMap<String, Vec<f32>>;

fn options() -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 18,
        checkpoint_interval_bytes: 0,
        base_image_every: 3,
        retention: Retention::KeepAll,
        ..Options::default()
    }
}

fn read_state(store: &Store, ids: u64) -> State {
    (0..ids)
        .filter_map(|i| {
            store
                .get(&format!("id-{i}"))
                .unwrap()
                .map(|v| (format!("id-{i}"), v.to_vec()))
        })
        .collect()
}

/// Runs a workload; returns (commit LSN, commit time, state after it) for every commit.
fn workload(store: &Store, rng: &mut Rng, commits: usize, checkpoint_every: usize) -> Vec<(Lsn, SystemTime, State)> {
    let mut state = State::new();
    let mut history = Vec::new();
    for n in 0..commits {
        let mut tx = store.begin().unwrap();
        let mut next = state.clone();
        for _ in 0..1 + rng.below(6) {
            let id = format!("id-{}", rng.below(80));
            if rng.chance(20) {
                tx.delete(&id).unwrap();
                next.remove(&id);
            } else {
                let v: Vec<f32> = (0..32).map(|_| rng.below(1000) as f32).collect();
                tx.upsert(&id, &v, &[("n", &n.to_string())]).unwrap();
                next.insert(id, v);
            }
        }
        if rng.chance(10) {
            tx.abort().unwrap();
        } else {
            let lsn = tx.commit().unwrap();
            state = next;
            std::thread::sleep(Duration::from_micros(300));
            history.push((lsn, SystemTime::now(), state.clone()));
            std::thread::sleep(Duration::from_micros(300));
        }
        if n % checkpoint_every == checkpoint_every - 1 {
            store.checkpoint().unwrap();
        }
    }
    history
}

fn restored_state(src: &Path, dest: &Path, target: RestoreTarget) -> (State, vellum::RestoreReport) {
    let report = restore(src, dest, target).unwrap_or_else(|e| panic!("restore to {target:?}: {e}"));
    let store = Store::open(dest, options()).unwrap();
    let state = read_state(&store, 80);
    store.close().unwrap();
    (state, report)
}

#[test]
fn restore_to_many_lsns_and_times_equals_the_state_at_that_point() {
    let seed = seed_from_env("VELLUM_TEST_SEED", 5);
    let mut rng = Rng::new(seed);
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let store = Store::create(&src, 32, options()).unwrap();
    let history = workload(&store, &mut rng, 400, 40);
    let final_state = read_state(&store, 80);
    store.close().unwrap();
    let before: Vec<(String, Vec<u8>)> = snapshot_files(&src);
    let mut from_archive = 0;
    for (i, pick) in [0usize, 1, 37, 120, 199, 250, 333, history.len() - 1]
        .into_iter()
        .enumerate()
    {
        let (lsn, time, expected) = &history[pick];
        let (state, report) = restored_state(&src, &root.path().join(format!("lsn-{i}")), RestoreTarget::Lsn(*lsn));
        assert_eq!(
            &state, expected,
            "restore to the LSN of commit {pick} includes exactly it (seed {seed})"
        );
        from_archive += report.segments_from_archive;
        let (state, _) = restored_state(&src, &root.path().join(format!("time-{i}")), RestoreTarget::Time(*time));
        assert_eq!(
            &state, expected,
            "restore to the time after commit {pick} (seed {seed})"
        );
        let mid = Lsn(lsn.0 + 1);
        let (state, _) = restored_state(&src, &root.path().join(format!("mid-{i}")), RestoreTarget::Lsn(mid));
        assert_eq!(
            &state, expected,
            "an LSN between commits restores the earlier commit (seed {seed})"
        );
    }
    assert!(from_archive > 0, "some restores read compressed archived segments");
    let (state, report) = restored_state(&src, &root.path().join("latest"), RestoreTarget::Latest);
    assert_eq!(state, final_state, "Latest restores everything committed");
    assert!(report.segments_live > 0, "the latest restore reads the live log too");
    let newest_commit = history.last().expect("a workload commits").0;
    assert!(
        report.target_lsn >= newest_commit && report.wal_bytes > newest_commit.0 - report.base_image_lsn.0,
        "Latest reports the last record it replayed ({} >= {newest_commit}) and the log it read",
        report.target_lsn
    );
    assert_eq!(report.timeline, 2, "the restored store starts a new timeline");
    assert_eq!(snapshot_files(&src), before, "restore never modifies the source");
}

fn snapshot_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in walk(dir) {
        if !entry.ends_with("LOCK") {
            files.push((entry.display().to_string(), std::fs::read(&entry).unwrap()));
        }
    }
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path))
        } else {
            out.push(path)
        }
    }
    out
}

#[test]
fn a_restored_store_is_a_new_writable_history() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let store = Store::create(&src, 32, options()).unwrap();
    let history = workload(&store, &mut Rng::new(9), 60, 25);
    store.close().unwrap();
    let dest = root.path().join("dest");
    restore(&src, &dest, RestoreTarget::Lsn(history[30].0)).unwrap();
    let store = Store::open(&dest, options()).unwrap();
    store.insert("after-restore", &[1.0; 32], &[]).unwrap();
    store.close().unwrap();
    let store = Store::open(&dest, options()).unwrap();
    assert!(
        store.get("after-restore").unwrap().is_some(),
        "the restored store takes new commits"
    );
    assert_eq!(read_state(&store, 80), history[30].2, "and keeps the restored state");
    store.close().unwrap();
    // Its own archive restores it again.
    let again = root.path().join("again");
    restore(&dest, &again, RestoreTarget::Latest).unwrap();
    let store = Store::open(&again, options()).unwrap();
    assert!(store.get("after-restore").unwrap().is_some());
}

#[test]
fn bad_restores_fail_clearly_and_leave_no_destination() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let store = Store::create(
        &src,
        32,
        Options {
            retention: Retention::KeepLast(1),
            base_image_every: 1,
            ..options()
        },
    )
    .unwrap();
    let history = workload(&store, &mut Rng::new(4), 200, 20);
    store.close().unwrap();
    let dest = root.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let error = restore(&src, &dest, RestoreTarget::Latest).unwrap_err();
    assert!(error.to_string().contains("already exists"), "{error}");
    std::fs::remove_dir(&dest).unwrap();
    let error = restore(&src, &dest, RestoreTarget::Lsn(history[0].0)).unwrap_err();
    assert!(
        matches!(error, Error::InvalidArgument(_)) && error.to_string().contains("oldest retained base image"),
        "{error}"
    );
    let text = error.to_string();
    let when = text.rsplit(", ").next().unwrap().as_bytes();
    assert!(
        when.len() == "2026-12-06T19:04:23.504986Z)".len()
            && when[4] == b'-'
            && when[10] == b'T'
            && when.ends_with(b"Z)"),
        "the base image's time as --time takes it (RFC 3339, UTC), not a count of microseconds: {text}"
    );
    assert!(!dest.exists(), "a failed restore leaves no destination");
    let archive = src.join("archive");
    let base = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("base-"))
        .unwrap();
    let bytes = std::fs::read(&base).unwrap();
    // Cut short; then whole but with a byte of the last block flipped: the base image is
    // decoded into the staged arena block by block, and its damage found only at the end.
    let mut flipped = bytes.clone();
    *flipped.last_mut().unwrap() ^= 0x10;
    for damaged in [bytes[..bytes.len() / 2].to_vec(), flipped] {
        std::fs::write(&base, &damaged).unwrap();
        let error = restore(&src, &dest, RestoreTarget::Latest).unwrap_err();
        assert!(
            matches!(error, Error::Corrupted { .. }) && error.to_string().contains("base-"),
            "names the file: {error}"
        );
        assert!(!dest.exists(), "a failed restore leaves no destination");
    }
    let leftovers: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no staging directory is left behind: {leftovers:?}");
}

#[test]
fn a_missing_archived_segment_is_named() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let store = Store::create(
        &src,
        32,
        Options {
            base_image_every: 100,
            ..options()
        },
    )
    .unwrap();
    workload(&store, &mut Rng::new(6), 300, 30);
    store.close().unwrap();
    let archived: Vec<_> = std::fs::read_dir(src.join("archive"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("wal-"))
        .collect();
    assert!(!archived.is_empty(), "segments were archived");
    std::fs::remove_file(&archived[0]).unwrap();
    let error = restore(&src, root.path().join("dest"), RestoreTarget::Latest).unwrap_err();
    assert!(
        matches!(error, Error::Corrupted { .. }) && error.to_string().contains("missing"),
        "{error}"
    );
}

#[test]
fn retention_keeps_everything_a_retained_base_image_needs() {
    for retention in [Retention::KeepLast(2), Retention::MaxBytes(1)] {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        let store = Store::create(
            &src,
            32,
            Options {
                retention,
                base_image_every: 1,
                ..options()
            },
        )
        .unwrap();
        let history = workload(&store, &mut Rng::new(8), 300, 15);
        let final_state = read_state(&store, 80);
        store.close().unwrap();
        let bases = std::fs::read_dir(src.join("archive"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("base-"))
            .count();
        let limit = if retention == Retention::KeepLast(2) { 2 } else { 1 };
        assert!(bases <= limit && bases >= 1, "{retention:?}: {bases} base images kept");
        let (state, _) = restored_state(&src, &root.path().join("latest"), RestoreTarget::Latest);
        assert_eq!(state, final_state, "{retention:?}: the newest state stays restorable");
        let old = restore(&src, root.path().join("old"), RestoreTarget::Lsn(history[0].0));
        assert!(
            old.is_err(),
            "{retention:?}: history before the kept base images is gone, and says so"
        );
    }
}

#[test]
fn an_online_backup_taken_while_writing_restores_every_commit_before_it() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let store = Arc::new(Store::create(&src, 32, options()).unwrap());
    workload(&store, &mut Rng::new(10), 100, 30);
    let before = read_state(&store, 80);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for i in 0..300 {
                store.upsert(&format!("live-{i}"), &[i as f32; 32], &[]).unwrap();
            }
        })
    };
    let report = store.backup(root.path().join("backup")).unwrap();
    writer.join().unwrap();
    let backup = Store::open(root.path().join("backup"), options()).unwrap();
    assert_eq!(
        read_state(&backup, 80),
        before,
        "every commit before the backup is in it ({report:?})"
    );
    let live = (0..300)
        .filter(|i| backup.get(&format!("live-{i}")).unwrap().is_some())
        .count();
    assert!(
        (0..300)
            .take(live)
            .all(|i| backup.get(&format!("live-{i}")).unwrap().is_some()),
        "a prefix of the concurrent commits"
    );
}

#[test]
fn the_archive_survives_a_crash_mid_archiving() {
    let base_seed = seed_from_env("VELLUM_SIM_SEED", 21);
    for seed in base_seed..base_seed + 30 {
        let sim = SimStorage::new(seed);
        let sim_options = || Options {
            storage: Arc::new(sim.clone()),
            background_io: false,
            sync: SyncMode::Always,
            ..options()
        };
        let store = Store::create(Path::new("/db"), 32, sim_options()).unwrap();
        let mut rng = Rng::new(seed);
        let history = workload(&store, &mut rng, 60, 10);
        let acked = history.last().unwrap().2.clone();
        // Crash somewhere in the next checkpoint, which archives segments and may write a base image.
        sim.crash_after_ops(1 + rng.below(40));
        let _ = store.checkpoint();
        sim.crash_now();
        drop(store);
        let disk = sim.reboot();
        let options = Options {
            storage: Arc::new(disk.clone()),
            background_io: false,
            ..options()
        };
        let store = Store::open(Path::new("/db"), options.clone()).unwrap();
        assert_eq!(
            read_state(&store, 80),
            acked,
            "seed {seed}: every acknowledged commit survives"
        );
        store.close().unwrap();
        let report = vellum::restore_with(
            Arc::new(disk.clone()),
            Path::new("/db"),
            Path::new("/restored"),
            RestoreTarget::Latest,
        )
        .unwrap_or_else(|e| panic!("seed {seed}: restore after a crash mid-archiving: {e}"));
        let restored = Store::open(Path::new("/restored"), options).unwrap();
        assert_eq!(
            read_state(&restored, 80),
            acked,
            "seed {seed}: the archive restores it ({report:?})"
        );
    }
}

#[test]
fn the_base_image_of_a_new_store_survives_a_crash_right_after_creation() {
    let sim = SimStorage::new(3);
    let sim_options = |sim: &SimStorage| Options {
        storage: Arc::new(sim.clone()),
        background_io: false,
        sync: SyncMode::Always,
        ..options()
    };
    let store = Store::create(Path::new("/db"), 4, sim_options(&sim)).unwrap();
    let created = vellum::archive::list(&sim, Path::new("/db"), false).unwrap();
    assert_eq!(created.bases.len(), 1, "creation stores a base image");
    sim.crash_now();
    drop(store);
    let disk = sim.reboot();
    let after = vellum::archive::list(&disk, Path::new("/db"), false).unwrap();
    assert_eq!(
        after.bases.iter().map(|b| b.1.clone()).collect::<Vec<_>>(),
        created.bases.iter().map(|b| b.1.clone()).collect::<Vec<_>>(),
        "the base image Store::create wrote (and its archive/ directory) is durable"
    );
}

#[test]
fn an_lsn_beyond_the_end_of_the_log_is_refused_naming_the_end() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let store = Store::create(&src, 32, options()).unwrap();
    workload(&store, &mut Rng::new(12), 20, 10);
    store.close().unwrap();
    let latest = restore(&src, root.path().join("latest"), RestoreTarget::Latest).unwrap();
    // Past the last record by far; the error names where the log ends (after that record).
    let dest = root.path().join("dest");
    let beyond = Lsn(latest.target_lsn.0 + (1 << 30));
    let error = restore(&src, &dest, RestoreTarget::Lsn(beyond)).unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, Error::InvalidArgument(_)) && message.contains("beyond the end of the log"),
        "{message}"
    );
    assert!(!dest.exists(), "a refused restore leaves no destination");
    let end: u64 = message
        .split("at LSN ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("the error names the end LSN: {message}"));
    assert!(
        end > latest.target_lsn.0,
        "the end lies after the last record: {message}"
    );
    for inside in [latest.target_lsn, Lsn(end)] {
        let report = restore(
            &src,
            root.path().join(format!("at-{}", inside.0)),
            RestoreTarget::Lsn(inside),
        )
        .unwrap();
        assert_eq!(report.target_lsn, latest.target_lsn, "up to the end is everything");
    }
    let error = restore(&src, &dest, RestoreTarget::Lsn(Lsn(end + 1))).unwrap_err();
    assert!(
        error.to_string().contains(&format!("at LSN {end}")),
        "one past the end: {error}"
    );
}

#[test]
fn a_stored_retention_outlives_its_open_and_set_retention_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let options = |retention| Options {
        page_size_bytes: 4096,
        segment_size_bytes: 64 * 1024,
        base_image_every: 1,
        retention,
        ..Options::default()
    };
    let bases = || {
        std::fs::read_dir(path.join("archive"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("base-"))
            .count()
    };
    let store = Store::create(&path, 4, options(Retention::KeepAll)).unwrap();
    store.close().unwrap();
    // Opened with the default (Retention::Stored): the store's keep-all applies.
    let store = Store::open(&path, options(Retention::Stored)).unwrap();
    assert_eq!(store.retention(), Retention::KeepAll, "the stored policy is in force");
    for i in 0..5 {
        store.insert(&format!("v{i}"), &[1.0, 0.0, 0.0, i as f32], &[]).unwrap();
        store.checkpoint().unwrap();
    }
    assert!(bases() >= 5, "keep-all kept every base image: {}", bases());
    store.set_retention(Retention::KeepLast(1)).unwrap();
    assert_eq!(bases(), 1, "set_retention applies the new policy at once");
    store.close().unwrap();
    let store = Store::open(&path, options(Retention::Stored)).unwrap();
    assert_eq!(
        store.retention(),
        Retention::KeepLast(1),
        "and stores it for later opens"
    );
    let explicit = Store::open(&path, options(Retention::KeepAll));
    assert!(explicit.is_err(), "the store is open (one writer)");
    drop(store);
    let explicit = Store::open(&path, options(Retention::KeepAll)).unwrap();
    assert_eq!(
        explicit.retention(),
        Retention::KeepAll,
        "an explicit policy applies to its open"
    );
}

#[test]
fn after_a_session_without_the_archive_the_next_checkpoint_stores_a_base_image_so_the_archive_restores_again() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let vector = |i: u64| (0..32).map(|j| (i * 32 + j) as f32).collect::<Vec<f32>>();
    let fill = |store: &Store, ids: std::ops::Range<u64>| {
        for i in ids {
            store.upsert(&format!("id-{}", i % 80), &vector(i), &[]).unwrap();
        }
    };
    let store = Store::create(&src, 32, options()).unwrap();
    fill(&store, 0..200);
    store.checkpoint().unwrap();
    store.close().unwrap();
    // A session without the archive: the segments its checkpoints retire are recycled, never
    // archived, so the archive's log stops short of the live log.
    let store = Store::open(
        &src,
        Options {
            archive: false,
            ..options()
        },
    )
    .unwrap();
    fill(&store, 200..3_000);
    store.checkpoint().unwrap();
    store.close().unwrap();
    // The archive on again, `base_image_every` 3: without a base image past the gap, a restore
    // would need the segments that session recycled.
    let store = Store::open(&src, options()).unwrap();
    let before = base_images(&src);
    fill(&store, 3_000..3_100);
    store.checkpoint().unwrap();
    assert_eq!(
        base_images(&src),
        before + 1,
        "the first checkpoint with the archive back stores a base image"
    );
    let expected = read_state(&store, 80);
    store.close().unwrap();
    let (state, _) = restored_state(&src, &root.path().join("latest"), RestoreTarget::Latest);
    assert_eq!(
        state, expected,
        "the archive restores the latest state once the archive is back"
    );
}

fn base_images(src: &Path) -> usize {
    std::fs::read_dir(src.join("archive"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("base-"))
        .count()
}

#[test]
fn a_store_whose_archive_reaches_its_log_stores_base_images_only_at_their_interval() {
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let store = Store::create(&src, 32, options()).unwrap();
    assert_eq!(base_images(&src), 1, "the base image of a new store");
    let write_and_checkpoint = |store: &Store, round: u64| {
        for i in 0..400u64 {
            store
                .upsert(&format!("id-{}", i % 80), &[(round * 400 + i) as f32; 32], &[])
                .unwrap();
        }
        store.checkpoint().unwrap();
    };
    write_and_checkpoint(&store, 0);
    write_and_checkpoint(&store, 1);
    assert_eq!(base_images(&src), 1, "two checkpoints at base_image_every 3: none");
    write_and_checkpoint(&store, 2);
    assert_eq!(base_images(&src), 2, "the third stores one");
    store.close().unwrap();
    let store = Store::open(&src, options()).unwrap();
    write_and_checkpoint(&store, 3);
    store.close().unwrap();
    assert_eq!(
        base_images(&src),
        2,
        "a reopen with the archive on throughout stores none early"
    );
}

/// The time of every record of the log in `dir`, in log order.
fn record_times(dir: &Path) -> Vec<u64> {
    let dump = vellum::inspect::LogDump::open(dir).unwrap();
    let mut reader = dump.reader();
    let mut times = Vec::new();
    while let Some(rec) = reader.next_record().unwrap() {
        times.push(rec.header.timestamp_us.get());
    }
    times
}

#[test]
fn a_wall_clock_that_steps_back_never_stamps_a_record_earlier_than_one_before_it() {
    // A restore to a time cuts at the first commit stamped after it and trusts a base image's
    // time to be at or after every record before its checkpoint's end (FORMAT.md 19.6): a
    // clock that steps back (NTP, a resumed virtual machine) must not break either.
    const HOUR_US: i64 = 3_600_000_000;
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("s");
    let store = Store::create(&dir, 32, options()).unwrap();
    let vector = vec![1.0f32; 32];
    for i in 0..20 {
        store.upsert(&format!("a-{i}"), &vector, &[]).unwrap();
    }
    store.wal().shift_clock_for_tests(-HOUR_US);
    for i in 0..20 {
        store.upsert(&format!("b-{i}"), &vector, &[]).unwrap();
    }
    store.checkpoint().unwrap();
    store.close().unwrap();
    // The next session's wall clock is an hour behind too: the times go on from the log's.
    let store = Store::open(&dir, options()).unwrap();
    store.wal().shift_clock_for_tests(-HOUR_US);
    for i in 0..20 {
        store.upsert(&format!("c-{i}"), &vector, &[]).unwrap();
    }
    store.close().unwrap();
    let times = record_times(&dir);
    assert!(
        times.len() >= 120,
        "the log holds both sessions' records: {}",
        times.len()
    );
    let backwards: Vec<_> = times.windows(2).filter(|w| w[1] < w[0]).collect();
    assert!(backwards.is_empty(), "record times go backwards: {backwards:?}");
    let control = vellum::inspect::read_control(&dir).unwrap();
    assert!(
        control.checkpoint_us >= *times.iter().max().unwrap(),
        "the last checkpoint's time is at or after every record's"
    );
}

#[test]
fn a_killed_restores_staging_is_removed_by_the_next_restore_and_a_running_ones_is_not() {
    use vellum::storage::{RealStorage, Storage};
    let root = tempfile::tempdir().unwrap();
    let src = root.path().join("src");
    let store = Store::create(&src, 32, options()).unwrap();
    workload(&store, &mut Rng::new(5), 20, 10);
    store.close().unwrap();
    // What a restore into `dest` killed by Ctrl-C or kill -9 left: its staging directory, as
    // large as a store (and, from this release on, its lock file); and one of a restore that
    // is still running, whose lock is held.
    let abandoned = root.path().join(".dest.restoring-4000000-17");
    std::fs::create_dir_all(abandoned.join("arena")).unwrap();
    std::fs::write(
        abandoned.join("arena").join("vector-00000000.pages"),
        vec![7u8; 1 << 20],
    )
    .unwrap();
    let abandoned_lock_only = root.path().join(".dest.download-4000001-18.lock");
    std::fs::write(&abandoned_lock_only, b"").unwrap();
    let running = root.path().join(".dest.restoring-4000002-19");
    std::fs::create_dir_all(&running).unwrap();
    let _running_lock = RealStorage::new()
        .lock_exclusive(&root.path().join(".dest.restoring-4000002-19.lock"))
        .unwrap();
    let other_destination = root.path().join(".other.restoring-4000003-20");
    std::fs::create_dir_all(&other_destination).unwrap();
    restore(&src, root.path().join("dest"), RestoreTarget::Latest).unwrap();
    assert!(!abandoned.exists(), "the killed restore's staging directory is gone");
    assert!(
        !abandoned_lock_only.exists(),
        "a lock file left without its directory is gone"
    );
    assert!(running.exists(), "a running restore's staging directory is left alone");
    assert!(
        other_destination.exists(),
        "another destination's staging is not this restore's to judge"
    );
    let leftovers: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".dest.") && !n.contains("4000002"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the restore leaves nothing of its own beside dest: {leftovers:?}"
    );
}
