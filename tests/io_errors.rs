//! Injected I/O errors (EIO on a write, a sync or a read; ENOSPC), one engine rule per test:
//! each error is typed, a failed sync is never trusted later, a log that cannot describe the
//! store stops, and the next open (before or after a reboot) recovers every acknowledged commit.
//! The randomised family is in `tests/simulation.rs`; these pin the cases it found.

use std::sync::Arc;

use vellum::storage::{FaultKind, FaultPlan, SimStorage};
use vellum::{Error, Options, RecoveryMode, Store, SyncMode};

const DIR: &str = "/db";

fn options(sim: &SimStorage) -> Options {
    Options {
        sync: SyncMode::Always,
        recovery: RecoveryMode::TolerateTornTail,
        page_size_bytes: 4096,
        segment_size_bytes: 4096 * 16,
        checkpoint_interval_bytes: 0,
        storage: Arc::new(sim.clone()),
        background_io: false,
        ..Options::default()
    }
}

fn vector(i: u32) -> Vec<f32> {
    (0..8).map(|c| i as f32 + c as f32).collect()
}

fn big_meta() -> String {
    "L".repeat(3000)
}

fn once(kind: FaultKind, after_ops: u64) -> FaultPlan {
    FaultPlan {
        kind,
        after_ops,
        persistent: false,
    }
}

/// A fresh store (seeded by `seed`, prepared by `setup`) on which `action` failed because a
/// one-shot fault of `kind` struck an operation whose error says `context`; the fault is
/// cleared. Tries the fault at each operation of the class in turn.
fn store_failing_at(
    seed: u64,
    kind: FaultKind,
    context: &str,
    setup: impl Fn(&Store),
    action: impl Fn(&Store) -> vellum::Result<()>,
) -> (SimStorage, Store, Error) {
    for n in 1..400 {
        let sim = SimStorage::new(seed * 1000 + n);
        let store = Store::create(DIR, 8, options(&sim)).unwrap();
        setup(&store);
        sim.inject(once(kind, n));
        if let Err(error) = action(&store)
            && error.to_string().contains(context)
        {
            sim.clear_faults();
            return (sim, store, error);
        }
    }
    panic!("no {kind:?} fault made the action fail while {context}");
}

fn insert_five(store: &Store) {
    for i in 0..5 {
        store.insert(&format!("v{i}"), &vector(i), &[]).unwrap();
    }
}

fn assert_five_present(store: &Store, what: &str) {
    for i in 0..5 {
        let got = store
            .get(&format!("v{i}"))
            .unwrap_or_else(|e| panic!("{what}: v{i}: {e}"));
        assert_eq!(got.as_deref(), Some(&vector(i)[..]), "{what}: v{i} was acknowledged");
    }
}

fn is_poisoned(result: vellum::Result<impl std::fmt::Debug>) -> bool {
    matches!(result, Err(Error::Closed(why)) if why.contains("reopen"))
}

#[test]
fn a_failed_read_of_the_epoch_file_is_an_io_error_in_every_recovery_mode() {
    for mode in [
        RecoveryMode::Strict,
        RecoveryMode::TolerateTornTail,
        RecoveryMode::SkipCorrupted,
    ] {
        let sim = SimStorage::new(1);
        Store::create(DIR, 8, options(&sim)).unwrap().close().unwrap();
        let opened = (1..10).find_map(|n| {
            sim.inject(once(FaultKind::ReadEio, n));
            let opened = Store::open(
                DIR,
                Options {
                    recovery: mode,
                    ..options(&sim)
                },
            );
            sim.clear_faults();
            match opened {
                Err(error) if error.to_string().contains("EPOCH") => Some(Err(error)),
                Ok(store) if sim.faults_injected() > 0 && n > 2 => Some(Ok(store)),
                _ => None,
            }
        });
        assert!(
            matches!(opened, Some(Err(Error::Io { .. }))),
            "{mode:?}: a read that failed is an I/O error, not damage nor a missing epoch: {opened:?}"
        );
    }
}

#[test]
fn a_vector_page_whose_creation_ran_out_of_space_is_created_by_the_next_insert() {
    let (sim, store, error) = store_failing_at(
        1,
        FaultKind::NoSpace,
        "/db/arena/vector",
        |_| {},
        |store| store.insert("a", &vector(1), &[]).map(|_| ()),
    );
    assert!(matches!(error, Error::DiskFull { .. }), "ENOSPC is DiskFull: {error:?}");
    assert!(matches!(store.get("a"), Ok(None)), "the failed insert changed nothing");
    store.insert("b", &vector(2), &[]).unwrap();
    store.close().unwrap();
    let store = Store::open(DIR, options(&sim.reboot())).unwrap();
    assert_eq!(store.get("b").unwrap().as_deref(), Some(&vector(2)[..]));
}

#[test]
fn pages_of_a_checkpoint_whose_arena_sync_failed_are_written_again_by_the_next() {
    for seed in 1..=8 {
        let (sim, store, _) = store_failing_at(seed, FaultKind::SyncEio, "syncing /db/arena/", insert_five, |store| {
            store.checkpoint().map(|_| ())
        });
        store.checkpoint().unwrap();
        sim.crash_now();
        drop(store);
        let store = Store::open(DIR, options(&sim.reboot())).unwrap();
        assert_five_present(&store, &format!("seed {seed}"));
    }
}

#[test]
fn pages_a_failed_sync_lost_are_written_again_after_a_reopen_without_a_reboot() {
    for seed in 1..=8 {
        let (sim, store, _) = store_failing_at(seed, FaultKind::SyncEio, "syncing /db/arena/", insert_five, |store| {
            store.checkpoint().map(|_| ())
        });
        drop(store);
        // The page cache still shows the pages the failed sync lost: recovery must not trust it.
        let store = Store::open(DIR, options(&sim)).unwrap();
        store.close().unwrap();
        let store = Store::open(DIR, options(&sim.reboot())).unwrap();
        assert_five_present(&store, &format!("seed {seed}"));
    }
}

#[test]
fn an_arena_directory_sync_that_failed_is_retried_by_the_next_checkpoint() {
    let (sim, store, _) = store_failing_at(
        1,
        FaultKind::SyncEio,
        "syncing directory /db/arena",
        insert_five,
        |store| store.checkpoint().map(|_| ()),
    );
    store.checkpoint().unwrap();
    sim.crash_now();
    drop(store);
    let store = Store::open(DIR, options(&sim.reboot())).unwrap();
    assert_five_present(&store, "after the retried checkpoint");
}

#[test]
fn arena_files_an_earlier_open_created_are_durable_before_a_checkpoint_relies_on_them() {
    let sim = SimStorage::new(2);
    let store = Store::create(DIR, 8, options(&sim)).unwrap();
    insert_five(&store);
    // Dropped without a close: the new arena file's name was never synced.
    drop(store);
    Store::open(DIR, options(&sim)).unwrap().close().unwrap();
    let store = Store::open(DIR, options(&sim.reboot())).unwrap();
    assert_five_present(&store, "after a reopen, a close and a reboot");
}

#[test]
fn a_segment_install_whose_directory_sync_failed_poisons_the_log_and_the_next_open_syncs_it() {
    let fill = |store: &Store| {
        for i in 0..30 {
            store.insert(&format!("big{i}"), &vector(i), &[("m", &big_meta())])?;
        }
        Ok(())
    };
    let (sim, store, error) = store_failing_at(1, FaultKind::SyncEio, "syncing directory /db/wal", |_| {}, fill);
    assert!(matches!(error, Error::Io { .. }), "{error:?}");
    let next = store.insert("next", &vector(1), &[]);
    // Whoever meets the stopped log learns why (the failure may have gone to another
    // thread: a background flush, another committer).
    let why = format!("{:?}", next.as_ref().map(|_| ()));
    assert!(
        why.contains("syncing directory /db/wal"),
        "the refusal names the error that stopped the log: {why}"
    );
    assert!(
        is_poisoned(next),
        "the segment cannot be installed again: the log stops"
    );
    assert!(store.close().is_err(), "a poisoned store does not claim a clean close");
    let store = Store::open(DIR, options(&sim)).unwrap();
    for i in 0..30 {
        store
            .upsert(&format!("after{i}"), &vector(i), &[("m", &big_meta())])
            .unwrap();
    }
    sim.crash_now();
    drop(store);
    let store = Store::open(DIR, options(&sim.reboot())).unwrap();
    for i in 0..30 {
        assert!(
            matches!(store.get(&format!("after{i}")), Ok(Some(_))),
            "after{i} was acknowledged in the segment the failed install renamed"
        );
    }
}

#[test]
fn a_commit_whose_log_sync_failed_is_erased_so_a_reopen_does_not_build_on_it() {
    for seed in 1..=12 {
        let (sim, store, error) = store_failing_at(
            seed,
            FaultKind::SyncEio,
            "syncing /db/wal/",
            |store| store.insert("a", &vector(1), &[]).map(|_| ()).unwrap(),
            |store| store.insert("b", &vector(2), &[]).map(|_| ()),
        );
        assert!(matches!(error, Error::Io { .. }), "seed {seed}: {error:?}");
        let later = store.insert("c", &vector(3), &[]);
        assert!(
            is_poisoned(later),
            "seed {seed}: a failed log sync is not retried as a success"
        );
        assert!(
            matches!(store.get("a"), Ok(Some(_))),
            "seed {seed}: readers go on on a poisoned store"
        );
        drop(store);
        let store = Store::open(DIR, options(&sim)).unwrap();
        assert!(
            matches!(store.get("b"), Ok(None)),
            "seed {seed}: the commit the disk may not hold is gone from the log"
        );
        store.insert("d", &vector(4), &[]).unwrap();
        sim.crash_now();
        drop(store);
        let store = Store::open(DIR, options(&sim.reboot())).unwrap();
        assert!(matches!(store.get("a"), Ok(Some(_))), "seed {seed}: a");
        assert!(
            matches!(store.get("d"), Ok(Some(_))),
            "seed {seed}: d was acknowledged after the reopen"
        );
    }
}

/// Aborts transactions of varied sizes until one's rollback records need the next segment
/// (they end in the last page of this one: the successor rule needs the next installed then),
/// injecting `fault` just before that abort; returns what the abort returned.
fn abort_at_a_segment_boundary(store: &Store, sim: &SimStorage, fault: FaultKind) -> vellum::Result<()> {
    // Room for more than a page: the end is not in the last page before the abort.
    abort_where_room_is(store, sim, fault, 0..64, |tx, i| {
        let meta = "x".repeat((i % 97) as usize);
        tx.upsert(&format!("t{i}"), &vector(i), &[("m", &meta)]).unwrap();
    })
}

/// Runs transactions that `build` fills (the `i`-th), aborting each, until one leaves room
/// `page + room_past_page` bytes (page: the log's page) to the end of its segment; injects
/// `fault` just before that abort and returns what it returned.
fn abort_where_room_is(
    store: &Store,
    sim: &SimStorage,
    fault: FaultKind,
    room_past_page: std::ops::Range<u64>,
    mut build: impl FnMut(&mut vellum::Transaction<'_>, u32),
) -> vellum::Result<()> {
    let geometry = store.wal().geometry();
    let page_bytes = u64::from(geometry.page_size_bytes);
    for i in 0..2000u32 {
        let mut tx = store.begin().unwrap();
        build(&mut tx, i);
        let end = store.wal().end_lsn().0;
        let room = geometry.segment_size_bytes - geometry.offset_in_segment(end);
        if room > page_bytes + room_past_page.start && room < page_bytes + room_past_page.end {
            sim.inject(FaultPlan {
                kind: fault,
                after_ops: 1,
                persistent: true,
            });
            return tx.abort();
        }
        tx.abort().unwrap();
    }
    panic!("no transaction ended next to a segment boundary");
}

#[test]
fn a_rollback_at_a_segment_boundary_on_a_full_disk_is_logged_in_the_room_held_for_it() {
    assert_a_rollback_at_a_segment_boundary_is_logged_despite(
        FaultKind::NoSpace,
        "the update held back the log its undo needs, so a full disk cannot stop the undo",
    );
}

#[test]
fn a_rollback_at_a_segment_boundary_whose_directory_syncs_fail_is_logged_in_the_segment_installed_for_it() {
    // The room an update holds back for its undo is installed segments, not spares: the
    // rollback's records need no install, so a directory sync that fails from then on cannot
    // stop them. (Before, the rollback installed the next segment itself, its directory sync
    // failed, and the store stopped until a reopen.)
    assert_a_rollback_at_a_segment_boundary_is_logged_despite(
        FaultKind::SyncEio,
        "the update installed the segment its undo needs",
    );
}

/// Aborts a transaction at a segment boundary with `fault` striking from then on: the abort
/// must succeed (`why`), and the store go on once the fault is gone, every row but the
/// aborted ones there after a reopen.
fn assert_a_rollback_at_a_segment_boundary_is_logged_despite(fault: FaultKind, why: &str) {
    let sim = SimStorage::new(3);
    let store = Store::create(DIR, 8, options(&sim)).unwrap();
    insert_five(&store);
    let aborted = abort_at_a_segment_boundary(&store, &sim, fault);
    assert!(aborted.is_ok(), "{why}: {aborted:?}");
    sim.clear_faults();
    store.insert("x", &vector(9), &[]).expect("the store goes on");
    store.close().expect("close");
    let store = Store::open(DIR, options(&sim)).unwrap();
    assert_five_present(&store, "reopened");
    assert_eq!(store.len(), 6, "the aborted transactions left nothing behind");
}

#[test]
fn a_rollback_that_cannot_be_logged_poisons_the_store_and_the_next_open_drops_it() {
    // A transaction open when the log stops (a sync failed under it): its rollback cannot log
    // its undoing, so the pages in memory hold changes the log does not undo.
    let sim = SimStorage::new(3);
    let store = Store::create(DIR, 8, options(&sim)).unwrap();
    insert_five(&store);
    let mut tx = store.begin().unwrap();
    tx.upsert("v0", &vector(7), &[]).unwrap();
    tx.insert("t", &vector(8), &[]).unwrap();
    sim.inject(FaultPlan {
        kind: FaultKind::SyncEio,
        after_ops: 1,
        persistent: false,
    });
    assert!(
        matches!(store.sync(), Err(Error::Io { .. })),
        "the sync of the transaction's records fails"
    );
    let aborted = tx.abort();
    assert!(is_poisoned(aborted), "the rollback cannot be logged on a stopped log");
    let next = store.insert("x", &vector(9), &[]);
    assert!(
        is_poisoned(next),
        "the log holds the transaction but not its undoing: nothing more may be logged"
    );
    assert_eq!(
        store.get("v0").unwrap().as_deref(),
        Some(&vector(0)[..]),
        "readers see the committed state, not the transaction's"
    );
    assert!(
        store.close().is_err(),
        "no checkpoint may write the transaction's pages"
    );
    let store = Store::open(DIR, options(&sim)).unwrap();
    assert_five_present(&store, "reopened");
    assert_eq!(store.len(), 5, "the aborted transaction left nothing behind");
}

/// A bulk transaction rolled back at a segment boundary on a full disk: its compensation record
/// is many times the fixed room every update holds back, and its update record logged its edits
/// in runs, fewer and longer than the compensation's. The update held back room for the edits
/// as applied, so the undo is logged.
#[test]
fn a_bulk_rollback_at_a_segment_boundary_on_a_full_disk_is_logged_in_the_room_held_for_it() {
    let sim = SimStorage::new(5);
    let store = Store::create(DIR, 8, options(&sim)).unwrap();
    let ids: Vec<String> = (0..60).map(|i| format!("b{i:02}")).collect();
    let first = vector(1);
    let rows: Vec<vellum::Row<'_>> = ids.iter().map(|id| (id.as_str(), first.as_slice(), &[][..])).collect();
    store.insert_many(&rows).unwrap();
    // Room for the abort record and a little more, not for the compensation record.
    let aborted = abort_where_room_is(&store, &sim, FaultKind::NoSpace, 1024..2048, |tx, i| {
        let (v, meta) = (vector(i + 2), "x".repeat((i % 97) as usize));
        let pairs = [("m", meta.as_str())];
        let rows: Vec<vellum::Row<'_>> = ids.iter().map(|id| (id.as_str(), v.as_slice(), &pairs[..])).collect();
        tx.upsert_many(&rows).unwrap();
    });
    assert!(
        aborted.is_ok(),
        "the bulk update held back the log its undo needs: {aborted:?}"
    );
    sim.clear_faults();
    store.insert("x", &vector(9), &[]).expect("the store goes on");
    store.close().expect("close");
    let store = Store::open(DIR, options(&sim)).unwrap();
    for id in &ids {
        let got = store.get(id).unwrap();
        assert_eq!(got.as_deref(), Some(&first[..]), "{id} as committed");
    }
    assert_eq!(store.len(), 61, "the rolled-back upserts left nothing behind");
}
