//! The store's claims: the API contract, bad input, abort, isolation, checkpoints, reopen.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use support::{Rng, seed_from_env};
use vellum::{Error, Lsn, Options, RecoveryMode, Store, SyncMode};

fn small_options() -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 20,
        ..Options::default()
    }
}

fn vector(seed: u64, dimension: usize) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..dimension)
        .map(|_| (rng.below(2_000_000) as f32 / 1_000_000.0) - 1.0)
        .collect()
}

type Model = BTreeMap<String, (Vec<f32>, Vec<(String, String)>)>;

fn snapshot(store: &Store, model: &Model) -> Model {
    model
        .keys()
        .filter_map(|id| {
            store.get(id).unwrap().map(|r| {
                let meta = r.metadata().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                (id.clone(), (r.to_vec(), meta))
            })
        })
        .collect()
}

#[test]
fn the_api_contract_works_as_written() -> vellum::Result<()> {
    use vellum::{Error, Lsn, Options, RecoveryMode, Store, SyncMode};
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().join("store");
    let v = vec![0.5f32; 384];
    let store = Store::create(&dir, 384, Options::default())?;
    let lsn: Lsn = store.insert("doc-1", &v, &[("lang", "en")])?;
    assert!(lsn > Lsn(0));
    assert!(
        matches!(store.insert("doc-1", &v, &[]), Err(Error::AlreadyExists)),
        "duplicate insert is refused"
    );
    store.upsert("doc-1", &v, &[])?;
    store.insert("c", &v, &[])?;
    let existed: bool = store.delete("doc-1")?;
    assert!(existed);
    store.upsert("doc-1", &v, &[("lang", "en"), ("tier", "gold")])?;
    if let Some(r) = store.get("doc-1")? {
        let pairs: Vec<(&str, &str)> = r.metadata().collect();
        assert_eq!(pairs, [("lang", "en"), ("tier", "gold")], "metadata in insertion order");
        assert_eq!(&*r, &v[..]);
    } else {
        panic!("doc-1 is present");
    }
    let mut tx = store.begin()?;
    tx.insert("a", &v, &[])?;
    tx.upsert("b", &v, &[])?;
    tx.delete("c")?;
    let lsn = tx.commit()?;
    assert!(lsn > Lsn(0));
    store.checkpoint()?;
    store.sync()?;
    assert_eq!(store.len(), 3);
    assert_eq!(store.dimension(), 384);
    store.close()?;
    let store = Store::open(
        &dir,
        Options {
            sync: SyncMode::Always,
            recovery: RecoveryMode::Strict,
            ..Default::default()
        },
    )?;
    assert_eq!(store.len(), 3, "a, b and doc-1 survive the reopen");
    assert!(store.get("c")?.is_none());
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
    Ok(())
}

#[test]
fn create_refuses_an_existing_store_and_open_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 8, small_options()).unwrap();
    store.close().unwrap();
    let error = Store::create(dir.path(), 8, small_options()).unwrap_err();
    assert!(matches!(error, Error::AlreadyExists), "a store is there: {error}");
    let error = Store::open(dir.path().join("nothing"), small_options()).unwrap_err();
    assert!(matches!(error, Error::NotFound(_)), "no store there: {error}");
}

#[test]
fn bad_input_gets_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, small_options()).unwrap();
    store.insert("keep", &[1.0, 2.0, 3.0, 4.0], &[("a", "b")]).unwrap();
    let before_lsn = store.wal().end_lsn();
    let long_id = "x".repeat(1025);
    let big_value = "v".repeat(64 * 1024);
    type Case<'a> = (&'a str, Vec<f32>, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case<'_>> = vec![
        ("wrong-dimension", vec![1.0; 5], vec![]),
        ("nan", vec![1.0, f32::NAN, 0.0, 0.0], vec![]),
        ("infinite", vec![f32::INFINITY, 0.0, 0.0, 0.0], vec![]),
        ("", vec![0.0; 4], vec![]),
        (&long_id, vec![0.0; 4], vec![]),
        ("big-metadata", vec![0.0; 4], vec![("k", &big_value)]),
    ];
    for (id, v, meta) in &cases {
        let error = store.insert(id, v, meta).unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)), "{id:.20}: {error}");
        let error = store.upsert(id, v, meta).unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)), "{id:.20}: {error}");
    }
    let error = store.insert("keep", &[0.0; 4], &[]).unwrap_err();
    assert!(matches!(error, Error::AlreadyExists), "{error}");
    let mut tx = store.begin().unwrap();
    tx.insert("in-tx", &[0.0; 4], &[]).unwrap();
    assert!(tx.insert("bad", &[f32::NAN; 4], &[]).is_err());
    tx.commit().unwrap();
    assert_eq!(store.len(), 2, "only valid inserts landed");
    assert_eq!(&*store.get("keep").unwrap().unwrap(), &[1.0, 2.0, 3.0, 4.0]);
    assert!(store.wal().end_lsn() > before_lsn);
}

#[test]
fn abort_and_drop_restore_every_before_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 16, small_options()).unwrap();
    let mut model = Model::new();
    for i in 0..200u64 {
        let id = format!("id-{i}");
        let v = vector(i, 16);
        let meta = vec![("n".to_string(), i.to_string())];
        store.insert(&id, &v, &[("n", &i.to_string())]).unwrap();
        model.insert(id, (v, meta));
    }
    let before = snapshot(&store, &model);
    for use_drop in [false, true] {
        let mut tx = store.begin().unwrap();
        for i in 0..150u64 {
            match i % 3 {
                0 => drop(tx.delete(&format!("id-{i}")).unwrap()),
                1 => drop(
                    tx.upsert(&format!("id-{i}"), &vector(i + 1000, 16), &[("big", &"m".repeat(3000))])
                        .unwrap(),
                ),
                _ => drop(tx.insert(&format!("new-{i}"), &vector(i + 2000, 16), &[]).unwrap()),
            }
        }
        if use_drop {
            drop(tx);
        } else {
            tx.abort().unwrap();
        }
        assert_eq!(
            snapshot(&store, &model),
            before,
            "after abort (drop: {use_drop}) every vector is as before"
        );
        assert_eq!(store.len(), 200);
        assert!(store.get("new-2").unwrap().is_none(), "aborted inserts are gone");
    }
    store.close().unwrap();
    let store = Store::open(dir.path(), small_options()).unwrap();
    assert_eq!(snapshot(&store, &model), before, "and after reopen");
}

#[test]
fn readers_during_a_long_write_transaction_see_only_committed_data() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::create(dir.path(), 8, small_options()).unwrap());
    for i in 0..50u64 {
        store.insert(&format!("id-{i}"), &[i as f32; 8], &[]).unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for i in 0..50u64 {
                        let r = store
                            .get(&format!("id-{i}"))
                            .unwrap()
                            .expect("committed ids stay visible");
                        assert!(
                            r.iter().all(|&x| x == i as f32),
                            "a reader sees the committed version only"
                        );
                        reads += 1;
                    }
                    assert!(
                        store.get("uncommitted-0").unwrap().is_none(),
                        "uncommitted inserts are invisible"
                    );
                }
                reads
            })
        })
        .collect();
    let mut tx = store.begin().unwrap();
    for round in 0..20u64 {
        for i in 0..50u64 {
            tx.upsert(&format!("id-{i}"), &[(1000 + round) as f32; 8], &[]).unwrap();
            tx.insert(&format!("uncommitted-{}", round * 50 + i), &[1.0; 8], &[])
                .unwrap();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    tx.abort().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().unwrap() > 0, "readers ran during the transaction");
    }
}

/// Metadata of this many bytes does not fit a 4 KiB catalog page: it lives in an overflow
/// chain, whose pages a replacing transaction frees in place.
fn big_metadata(tag: &str) -> Vec<(String, String)> {
    vec![("blob".to_string(), tag.repeat(6000 / tag.len()))]
}

fn as_refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[test]
fn readers_see_committed_overflow_metadata_while_a_writer_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::create(dir.path(), 4, small_options()).unwrap());
    let pairs = |m: &[(String, String)]| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>();
    let first = big_metadata("a");
    for i in 0..8 {
        store.insert(&format!("id-{i}"), &[1.0; 4], &as_refs(&first)).unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for i in 0..8 {
                    let found = store
                        .get(&format!("id-{i}"))
                        .expect("a reader never meets a freed chain");
                    let found = found.expect("committed ids stay visible");
                    let meta: Vec<(String, String)> =
                        found.metadata().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                    assert_eq!(meta.len(), 1, "the metadata is whole");
                    assert!(
                        meta[0].1.chars().all(|c| c == meta[0].1.chars().next().unwrap()),
                        "one committed version, never a mix"
                    );
                    reads += 1;
                }
            }
            reads
        })
    };
    for round in 0..40 {
        let tag = ["b", "c", "d"][round % 3];
        let mut tx = store.begin().unwrap();
        for i in 0..8 {
            tx.upsert(&format!("id-{i}"), &[2.0; 4], &as_refs(&big_metadata(tag)))
                .unwrap();
        }
        // Readers run while the old chains are marked free and the transaction is open.
        std::thread::sleep(std::time::Duration::from_millis(2));
        if round % 2 == 0 {
            tx.commit().unwrap();
        } else {
            tx.abort().unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0, "the reader ran");
    let last = store.get("id-0").unwrap().unwrap();
    let meta: Vec<(String, String)> = last.metadata().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(meta, pairs(&big_metadata("d")), "round 38 committed last");
}

#[test]
fn a_reader_keeps_the_version_it_looked_up_while_the_id_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, small_options()).unwrap();
    store.insert("x", &[1.0; 4], &[("v", "1")]).unwrap();
    let held = store.get("x").unwrap().unwrap();
    for round in 0..200 {
        store.upsert("x", &[round as f32; 4], &[("v", "new")]).unwrap();
        store.delete("x").unwrap();
        store.insert("x", &[2.0; 4], &[]).unwrap();
    }
    assert_eq!(&*held, &[1.0; 4], "the borrowed slot was not reused while borrowed");
    assert_eq!(held.metadata().collect::<Vec<_>>(), [("v", "1")]);
}

#[test]
fn readers_find_every_committed_id_while_the_index_grows() {
    // Commits of 1 to 1,000 new ids take the id index across several doublings of its table,
    // each built beside the readers and swapped in; a reader must never miss a committed id.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(
        dir.path().join("s"),
        4,
        Options {
            sync: SyncMode::Never,
            ..small_options()
        },
    )
    .unwrap();
    let v = [0.5f32; 4];
    let mut tx = store.begin().unwrap();
    for i in 0..100 {
        tx.insert(&format!("early-{i}"), &v, &[]).unwrap();
    }
    tx.commit().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let lookups = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut lookups = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for i in 0..100 {
                    let id = format!("early-{i}");
                    assert!(store.get(&id).unwrap().is_some(), "{id} is committed and must be found");
                    lookups += 1;
                }
            }
            lookups
        });
        let mut next = 0;
        for size in [1, 7, 100, 1000, 3, 2000, 5000, 10, 8000] {
            let mut tx = store.begin().unwrap();
            for _ in 0..size {
                tx.insert(&format!("late-{next}"), &v, &[]).unwrap();
                next += 1;
            }
            tx.commit().unwrap();
            for i in (0..next).step_by(97).chain([next - 1]) {
                assert!(
                    store.get(&format!("late-{i}")).unwrap().is_some(),
                    "late-{i} after {next}"
                );
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        reader.join().unwrap()
    });
    assert_eq!(store.len(), 100 + 16_121, "every id is in the index");
    assert!(lookups >= 100, "the reader ran beside the commits ({lookups} lookups)");
}

#[test]
fn checkpoint_during_an_open_transaction_keeps_it_atomic() {
    let sim = vellum::storage::SimStorage::new(seed_from_env("VELLUM_SIM_SEED", 11));
    let options = Options {
        storage: Arc::new(sim.clone()),
        ..small_options()
    };
    let dir = std::path::Path::new("/store");
    let store = Store::create(dir, 8, options).unwrap();
    store.insert("before", &[1.0; 8], &[]).unwrap();
    let mut tx = store.begin().unwrap();
    for i in 0..100 {
        tx.insert(&format!("t-{i}"), &[i as f32; 8], &[]).unwrap();
    }
    std::thread::scope(|s| s.spawn(|| store.checkpoint().unwrap()).join().unwrap());
    for i in 100..200 {
        tx.insert(&format!("t-{i}"), &[i as f32; 8], &[]).unwrap();
    }
    let committed: Lsn = tx.commit().unwrap();
    assert!(store.wal().durable_lsn() > committed);
    let mut loser = store.begin().unwrap();
    loser.insert("never", &[9.0; 8], &[]).unwrap();
    std::thread::scope(|s| s.spawn(|| store.checkpoint().unwrap()).join().unwrap());
    loser.insert("never-2", &[9.0; 8], &[]).unwrap();
    store.sync().unwrap();
    // Crash with the loser running.
    sim.crash_now();
    drop(loser);
    drop(store);
    let rebooted = sim.reboot();
    let options = Options {
        recovery: RecoveryMode::Strict,
        storage: Arc::new(rebooted),
        ..small_options()
    };
    let store = Store::open(dir, options).unwrap();
    let report = store.recovery_report();
    assert_eq!(report.losers.len(), 1, "the running transaction is a loser: {report}");
    assert!(
        report.clrs_written >= 2,
        "both of its inserts were compensated: {report}"
    );
    assert!(store.get("never").unwrap().is_none(), "its insert was undone");
    assert_eq!(store.len(), 201, "the committed transaction is whole");
}

#[test]
fn reopen_after_clean_close_returns_every_vector_bit_for_bit() {
    let seed = seed_from_env("VELLUM_TEST_SEED", 7);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let dimension = 24;
    let store = Store::create(
        dir.path(),
        dimension as u32,
        Options {
            sync: SyncMode::Never,
            ..small_options()
        },
    )
    .unwrap();
    let mut model = Model::new();
    for step in 0..3000u64 {
        let id = format!("id-{}", rng.below(800));
        match rng.below(10) {
            0..=5 => {
                let v: Vec<f32> = (0..dimension)
                    .map(|_| f32::from_bits(rng.next_u64() as u32 & 0x3fff_ffff))
                    .collect();
                let big = rng.chance(5);
                let value = if big { "M".repeat(5000) } else { step.to_string() };
                store.upsert(&id, &v, &[("step", &value)]).unwrap();
                model.insert(id, (v, vec![("step".into(), value)]));
            }
            6..=7 => {
                assert_eq!(
                    store.delete(&id).unwrap(),
                    model.remove(&id).is_some(),
                    "delete reports existence"
                );
            }
            _ => {
                if step % 500 == 0 {
                    store.checkpoint().unwrap();
                }
            }
        }
    }
    assert_eq!(
        snapshot(&store, &model),
        model,
        "live state equals the model (seed {seed})"
    );
    store.close().unwrap();
    let store = Store::open(
        dir.path(),
        Options {
            recovery: RecoveryMode::Strict,
            ..small_options()
        },
    )
    .unwrap();
    assert_eq!(store.len(), model.len());
    let read = snapshot(&store, &model);
    for (id, (v, _)) in &model {
        let bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        let got: Vec<u32> = read[id].0.iter().map(|x| x.to_bits()).collect();
        assert_eq!(bits, got, "{id} bit for bit (seed {seed})");
    }
    assert_eq!(read, model, "reopened state equals the model (seed {seed})");
}

#[test]
fn a_file_that_cannot_be_mapped_at_its_first_use_is_an_error_not_a_panic() {
    // An open checks every arena file but maps each at the first use of one of its pages: a
    // failure then (here the simulated disk gone: every call fails) is that read's error.
    let sim = vellum::storage::SimStorage::new(seed_from_env("VELLUM_SIM_SEED", 12));
    let options = || Options {
        storage: Arc::new(sim.clone()),
        ..small_options()
    };
    let dir = std::path::Path::new("/store");
    let store = Store::create(dir, 8, options()).unwrap();
    store.insert("v", &[1.0; 8], &[]).unwrap();
    store.close().unwrap();
    let store = Store::open(dir, options()).unwrap();
    sim.crash_now();
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.get("v").map(|v| v.is_some())));
    assert!(
        matches!(&read, Ok(Err(Error::Io { .. }))),
        "the vector's file is mapped at this read, and the failure is its error: {:?}",
        read.as_ref().map(|r| r.as_ref().map_err(|e| e.to_string()))
    );
    drop(store);
}

#[test]
#[cfg_attr(miri, ignore = "real files and threads")]
fn readers_on_several_threads_meet_unopened_arena_files_together_and_all_read_right() {
    // An open checks the first and last arena file of each space; every other file is opened,
    // checked and mapped by the first read that needs it. Four readers start on a fresh open at
    // once, in different orders, so that several reach the same unopened file together.
    let dir = tempfile::tempdir().unwrap();
    let dimension = 256;
    let count = 5_000u64;
    {
        let store = Store::create(dir.path(), dimension as u32, small_options()).unwrap();
        for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
            let ids: Vec<String> = chunk.iter().map(|i| format!("id-{i}")).collect();
            let vectors: Vec<Vec<f32>> = chunk.iter().map(|&i| vector(i, dimension)).collect();
            let rows: Vec<vellum::Row<'_>> = ids
                .iter()
                .zip(&vectors)
                .map(|(id, v)| (id.as_str(), v.as_slice(), &[][..]))
                .collect();
            store.insert_many(&rows).unwrap();
        }
        store.close().unwrap();
    }
    let vector_files = std::fs::read_dir(dir.path().join("arena"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("vector-"))
        .count();
    assert!(
        vector_files >= 4,
        "several vector files lie between the first and the last: {vector_files}"
    );
    for read_only in [false, true] {
        let store = Arc::new(if read_only {
            Store::open_read_only(dir.path(), small_options()).unwrap()
        } else {
            Store::open(dir.path(), small_options()).unwrap()
        });
        let readers: Vec<_> = (0..4u64)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    for k in 0..count {
                        let i = (k * (2 * t + 1) + t * 97) % count;
                        let got = store.get(&format!("id-{i}")).unwrap().expect("every id is there");
                        assert_eq!(&*got, vector(i, dimension).as_slice(), "id-{i} reads back (reader {t})");
                    }
                })
            })
            .collect();
        for reader in readers {
            reader.join().expect("a reader panicked");
        }
    }
}

#[test]
fn with_direct_io_off_every_durable_commit_is_a_pwrite_and_an_fdatasync() {
    // Under the target directory: a real disk where the system's temporary directory may be
    // tmpfs.
    for direct_io in [true, false] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let options = || Options {
            direct_io,
            ..Options::default()
        };
        let store = Store::create(dir.path(), 4, options()).unwrap();
        for i in 0..50 {
            store.insert(&format!("v{i}"), &[i as f32; 4], &[]).unwrap();
        }
        let info = store.log_info();
        store.close().unwrap();
        if !direct_io {
            assert_eq!(info.direct_flushes, 0, "off: no flush went past the cache ({info:?})");
        } else {
            eprintln!(
                "direct I/O on: {} of {} log syncs direct",
                info.direct_flushes, info.log_syncs
            );
        }
        let store = Store::open(dir.path(), options()).unwrap();
        assert_eq!(store.len(), 50, "direct I/O {direct_io}: every commit is there");
        store.close().unwrap();
    }
}

#[test]
fn get_many_returns_what_get_returns_for_every_id_in_order() {
    let seed = seed_from_env("VELLUM_TEST_SEED", 21);
    println!("seed {seed} (VELLUM_TEST_SEED replays it)");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let dimension = 16;
    let options = Options {
        sync: SyncMode::Never,
        ..small_options()
    };
    let store = Store::create(dir.path(), dimension as u32, options).unwrap();
    for n in 0..3000u64 {
        let big = rng.chance(50);
        let value = if big { "M".repeat(5000) } else { n.to_string() };
        store
            .upsert(&format!("id-{n}"), &vector(n, dimension), &[("n", &value)])
            .unwrap();
    }
    for n in (0..3000u64).step_by(7) {
        store.delete(&format!("id-{n}")).unwrap();
    }
    // Present, deleted, never there, repeated; more than a window's worth of each.
    let ids: Vec<String> = (0..2000)
        .map(|_| match rng.below(10) {
            0 => format!("absent-{}", rng.below(100)),
            _ => format!("id-{}", rng.below(3000)),
        })
        .collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    for batch in [&refs[..], &refs[..1], &refs[..0], &refs[..vellum::GET_MANY_WINDOW + 1]] {
        let mut seen = Vec::new();
        store
            .get_many(batch, |i, found| {
                let expected = store.get(batch[i]).unwrap();
                assert_eq!(
                    found.as_deref(),
                    expected.as_deref(),
                    "{}: the vector get returns (seed {seed})",
                    batch[i]
                );
                let pairs = |v: &Option<vellum::VectorRef<'_>>| {
                    v.as_ref().map(|v| {
                        v.metadata()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect::<Vec<_>>()
                    })
                };
                assert_eq!(
                    pairs(&found),
                    pairs(&expected),
                    "{}: its metadata (seed {seed})",
                    batch[i]
                );
                seen.push(i);
            })
            .unwrap();
        assert_eq!(seen, (0..batch.len()).collect::<Vec<_>>(), "every id once, in order");
    }
}

#[test]
fn get_many_beside_writers_finds_each_id_whole_as_some_commit_left_it() {
    // Each vector is its id's number and the version that wrote it, in every element: a read
    // whose entry was freed and its slot reused after the lookup would show another id's
    // numbers or a mix. Writers replace and delete ids while a reader reads them in batches.
    let seed = seed_from_env("VELLUM_TEST_SEED", 22);
    println!("seed {seed} (VELLUM_TEST_SEED replays it)");
    let dir = tempfile::tempdir().unwrap();
    let dimension = 8;
    let options = Options {
        sync: SyncMode::Never,
        ..small_options()
    };
    let store = Arc::new(Store::create(dir.path(), dimension as u32, options).unwrap());
    let ids: Vec<String> = (0..400).map(|n| format!("id-{n}")).collect();
    let row = move |n: usize, version: u64| vec![(n as u64 * 100_000 + version) as f32; dimension];
    for (n, id) in ids.iter().enumerate() {
        store.insert(id, &row(n, 0), &[]).unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (store, stop, ids) = (store.clone(), stop.clone(), ids.clone());
        std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut version = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = rng.below(ids.len() as u64) as usize;
                if rng.chance(4) {
                    store.delete(&ids[n]).unwrap();
                } else {
                    store.upsert(&ids[n], &row(n, version), &[]).unwrap();
                }
                version += 1;
                if version % 500 == 0 {
                    store.checkpoint().unwrap();
                }
            }
            version
        })
    };
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut found_count = 0;
    for _ in 0..200 {
        store
            .get_many(&refs, |i, found| {
                let Some(vector) = found else { return };
                found_count += 1;
                let first = vector[0];
                assert!(
                    vector.iter().all(|&x| x == first),
                    "{}: one version's vector, not a mix: {:?} (seed {seed})",
                    refs[i],
                    &vector[..]
                );
                assert_eq!(
                    (first as u64) / 100_000,
                    i as u64,
                    "{}: its own vector, not another id's (seed {seed})",
                    refs[i]
                );
            })
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let versions = writer.join().unwrap();
    assert!(
        versions > 100,
        "the writer wrote while the reader read ({versions} versions)"
    );
    assert!(found_count > 0, "the reader found ids");
}

#[test]
fn get_many_reports_a_damaged_page_as_get_does_and_reads_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let dimension = 16;
    let store = Store::create(dir.path(), dimension as u32, small_options()).unwrap();
    for n in 0..600u64 {
        store.insert(&format!("id-{n}"), &vector(n, dimension), &[]).unwrap();
    }
    store.close().unwrap();
    // A byte of the first vector page changed on disk: its checksum no longer holds.
    let file = dir.path().join("arena").join("vector-00000000.pages");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[2000] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    let damaged = store.get("id-0").map(|found| found.is_some());
    assert!(matches!(damaged, Err(Error::Corrupted { .. })), "get: {damaged:?}");
    let mut handed = Vec::new();
    let batch = store.get_many(&["id-500", "id-0", "id-501"], |i, found| {
        handed.push((i, found.is_some()))
    });
    assert!(
        matches!(batch, Err(Error::Corrupted { .. })),
        "get_many, as get: {batch:?}"
    );
    assert_eq!(handed, [(0, true)], "the ids before the damaged one were handed over");
    let mut read = 0;
    store
        .get_many(&["id-500", "id-501", "absent"], |_, found| {
            read += usize::from(found.is_some())
        })
        .unwrap();
    assert_eq!(read, 2, "ids on other pages read as before");
}
