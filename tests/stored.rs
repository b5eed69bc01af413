//! Stored writes (FORMAT.md 16.5): without an archive, a bulk record logs the vectors of the
//! fresh pages it fills without their bytes and writes those pages before its transaction can
//! commit. Each claim here fails if the rule it names is broken.

mod support;

use support::{Rng, seed_from_env};

use std::path::Path;
use std::sync::Arc;

use vellum::format::page::Space;
use vellum::format::record::{EditKind, Payload, decode};
use vellum::storage::{FaultKind, FaultPlan, SimConfig, SimStorage};
use vellum::{Error, Options, Row, Store};

const DIMENSION: u32 = 64;
const DB: &str = "/db";

fn sim_options(sim: &SimStorage, archive: bool) -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 4096 * 64,
        checkpoint_interval_bytes: 0,
        storage: Arc::new(sim.clone()),
        background_io: false,
        archive,
        stored_writes: true,
        ..Options::default()
    }
}

fn vector(n: u64) -> Vec<f32> {
    (0..DIMENSION).map(|j| (n * 131 + u64::from(j)) as f32).collect()
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// The vectors of `ids` for [`rows`]: id number `i` gets `vector(base + i)`.
fn vectors(ids: &[String], base: u64) -> Vec<Vec<f32>> {
    (0..ids.len() as u64).map(|i| vector(base + i)).collect()
}

/// `ids` with `vectors`, no metadata, as bulk rows.
fn rows<'a>(ids: &'a [String], vectors: &'a [Vec<f32>]) -> Vec<Row<'a>> {
    ids.iter()
        .zip(vectors)
        .map(|(id, v)| (id.as_str(), v.as_slice(), &[][..]))
        .collect()
}

/// Inserts `ids` in one `insert_many` and commits; the vector of id number `i` is
/// `vector(base + i)`.
fn load(store: &Store, ids: &[String], base: u64) -> vellum::Result<()> {
    let vectors = vectors(ids, base);
    store.insert_many(&rows(ids, &vectors)).map(|_| ())
}

/// Every id of `ids` reads back with its vector (base as in [`load`]).
fn assert_loaded(store: &Store, ids: &[String], base: u64, what: &str) {
    for (i, id) in ids.iter().enumerate() {
        let got = store
            .get(id)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: {id} is missing"));
        assert_eq!(
            &got[..],
            &vector(base + i as u64)[..],
            "{what}: {id} reads back its vector"
        );
    }
}

/// (stored writes, vector bytes logged in update records) in the log of the store at `dir`.
fn logged(storage: Arc<dyn vellum::storage::Storage>, dir: &Path) -> (usize, usize) {
    let dump = vellum::inspect::LogDump::open_with(storage, dir).unwrap();
    let page_size = dump.page_size_bytes();
    let mut reader = dump.reader();
    let (mut stored, mut vector_bytes) = (0, 0);
    while let Some(rec) = reader.next_record().unwrap() {
        if let Ok(Payload::Update { edits, .. }) = decode(rec.header.kind, rec.payload, rec.lsn, page_size) {
            for edit in edits.iter().filter(|e| e.page.space() == Space::Vector) {
                match edit.kind {
                    EditKind::Stored { .. } => stored += 1,
                    EditKind::Write if edit.before.is_none() => vector_bytes += edit.after.len(),
                    _ => {}
                }
            }
        }
    }
    (stored, vector_bytes)
}

#[test]
fn a_bulk_load_without_the_archive_logs_its_vectors_as_stored_writes_and_reads_them_back() {
    let sim = SimStorage::new(7);
    let store = Store::create(Path::new(DB), DIMENSION, sim_options(&sim, false)).unwrap();
    let rows = ids("a", 2000);
    for (k, chunk) in rows.chunks(500).enumerate() {
        load(&store, chunk, 500 * k as u64).unwrap();
    }
    let data_bytes = rows.len() * DIMENSION as usize * 4;
    let (stored, vector_bytes) = logged(Arc::new(sim.clone()), Path::new(DB));
    assert!(stored > 0, "the bulk records hold stored writes");
    assert!(
        vector_bytes * 10 < data_bytes,
        "at most a tenth of the vectors' bytes are in the log ({vector_bytes} of {data_bytes}): those of a page a record began before"
    );
    // A power cut before any checkpoint: the log holds no byte of most vectors, the pages do.
    let sim = sim.reboot();
    let store = Store::open(Path::new(DB), sim_options(&sim, false)).unwrap();
    let report = store.recovery_report().clone();
    assert!(
        report.records_redone + report.records_skipped > 0,
        "the open recovered: {report:?}"
    );
    assert_loaded(&store, &rows, 0, "after a power cut");
    store.close().unwrap();
}

#[test]
fn with_the_archive_on_a_bulk_load_logs_every_vector() {
    let sim = SimStorage::new(8);
    let store = Store::create(Path::new(DB), DIMENSION, sim_options(&sim, true)).unwrap();
    let rows = ids("a", 600);
    load(&store, &rows, 0).unwrap();
    let (stored, vector_bytes) = logged(Arc::new(sim.clone()), Path::new(DB));
    assert_eq!(stored, 0, "the archived log must hold every byte a restore replays");
    assert!(
        vector_bytes >= rows.len() * DIMENSION as usize * 4,
        "every vector is logged"
    );
}

#[test]
fn a_crash_anywhere_in_a_bulk_commit_with_stored_writes_keeps_it_all_or_nothing() {
    // Crash at every mutating operation of a second bulk commit (its records, their page
    // writes and syncs, its commit record): the first commit stays whole, the second is
    // present whole or absent whole.
    let (first, second) = (ids("a", 300), ids("b", 300));
    let dry = SimStorage::new(11);
    let store = Store::create(Path::new(DB), DIMENSION, sim_options(&dry, false)).unwrap();
    load(&store, &first, 0).unwrap();
    let before = dry.mutating_ops();
    load(&store, &second, 1000).unwrap();
    let ops = dry.mutating_ops() - before;
    drop(store);
    let (mut whole, mut absent) = (0, 0);
    for crash_at in 1..=ops + 1 {
        let sim = SimStorage::new(11);
        let store = Store::create(Path::new(DB), DIMENSION, sim_options(&sim, false)).unwrap();
        load(&store, &first, 0).unwrap();
        sim.crash_after_ops(crash_at);
        let acknowledged = load(&store, &second, 1000).is_ok() && !sim.is_crashed();
        drop(store);
        let sim = sim.reboot();
        let store = Store::open(Path::new(DB), sim_options(&sim, false))
            .unwrap_or_else(|e| panic!("crash at op {crash_at} of {ops}: reopen failed: {e}"));
        assert_loaded(&store, &first, 0, &format!("crash at op {crash_at}: the first commit"));
        let present = second.iter().filter(|id| store.get(id).unwrap().is_some()).count();
        if present == second.len() {
            assert_loaded(
                &store,
                &second,
                1000,
                &format!("crash at op {crash_at}: the second commit"),
            );
            whole += 1;
        } else {
            assert_eq!(
                present, 0,
                "crash at op {crash_at}: the second commit is all or nothing"
            );
            assert!(!acknowledged, "crash at op {crash_at}: an acknowledged commit is lost");
            absent += 1;
        }
    }
    assert!(
        whole > 0 && absent > 0,
        "the crashes fell on both sides of the commit ({whole} / {absent})"
    );
}

#[test]
fn a_page_older_than_a_committed_stored_write_is_damage_not_silence() {
    // The page a committed stored write made durable is gone (zeros, as a lost write leaves
    // it): its vectors are in no log record, so recovery must say so rather than serve zeros.
    let sim = SimStorage::new(12);
    let store = Store::create(Path::new(DB), DIMENSION, sim_options(&sim, false)).unwrap();
    load(&store, &ids("a", 300), 0).unwrap();
    drop(store);
    let sim = sim.reboot();
    let page_size = 4096u64;
    sim.damage(
        Path::new("/db/arena/vector-00000000.pages"),
        2 * page_size,
        &vec![0; page_size as usize],
    )
    .unwrap();
    let opened = Store::open(Path::new(DB), sim_options(&sim, false));
    assert!(
        matches!(&opened, Err(Error::Corrupted { reason, .. }) if reason.contains("stored write")),
        "a lost page of a committed stored write is damage: {:?}",
        opened.as_ref().err()
    );
}

#[test]
fn a_bulk_transaction_left_open_with_stored_writes_is_rolled_back() {
    let sim = SimStorage::new(13);
    let store = Store::create(Path::new(DB), DIMENSION, sim_options(&sim, false)).unwrap();
    load(&store, &ids("a", 100), 0).unwrap();
    let open = ids("b", 400);
    let open_vectors = vectors(&open, 0);
    let mut tx = store.begin().unwrap();
    tx.insert_many(&rows(&open, &open_vectors)).unwrap();
    let (stored, _) = logged(Arc::new(sim.clone()), Path::new(DB));
    assert!(stored > 0, "the open transaction's pages were written as stored writes");
    std::mem::forget(tx);
    std::mem::forget(store);
    let sim = sim.reboot();
    let store = Store::open(Path::new(DB), sim_options(&sim, false)).unwrap();
    assert_eq!(
        store.recovery_report().losers.len(),
        1,
        "the open transaction is a loser"
    );
    assert_eq!(store.len(), 100, "none of its rows survive");
    assert_loaded(&store, &ids("a", 100), 0, "the committed rows");
    store.close().unwrap();
}

#[test]
fn a_bulk_write_whose_pages_fail_to_reach_the_disk_never_commits() {
    // A sync fails somewhere in a bulk load: at the log's flush (the store stops: nothing more
    // is logged) or at the arena's, after the record is logged. Then the load reports the
    // error and its transaction rolls back at its commit (it must not commit: its vectors are
    // in no log record); either way the store holds what it held, also after a reopen.
    let mut rolled_back = 0;
    for sync in 1..=6 {
        let sim = SimStorage::with_config(SimConfig {
            seed: 5,
            ..SimConfig::default()
        });
        let store = Store::create(Path::new(DB), DIMENSION, sim_options(&sim, false)).unwrap();
        load(&store, &ids("a", 100), 0).unwrap();
        let (failing, failing_vectors) = (ids("b", 400), vectors(&ids("b", 400), 0));
        let batch = rows(&failing, &failing_vectors);
        let mut tx = store.begin().unwrap();
        sim.inject(FaultPlan {
            kind: FaultKind::SyncEio,
            after_ops: sync,
            persistent: false,
        });
        let failed = tx.insert_many(&batch);
        sim.clear_faults();
        if failed.is_ok() {
            drop(tx);
            continue;
        }
        let committed = tx.commit();
        assert!(
            committed.is_err(),
            "sync {sync}: a bulk write that failed never commits"
        );
        if matches!(&committed, Err(Error::Closed(why)) if why.contains("rolled back")) {
            rolled_back += 1;
        }
        assert_eq!(store.len(), 100, "sync {sync}: nothing of it is visible");
        drop(store);
        let sim = sim.reboot();
        let store = Store::open(Path::new(DB), sim_options(&sim, false)).unwrap();
        assert_eq!(store.len(), 100, "sync {sync}: nor after a reopen");
        assert_loaded(&store, &ids("a", 100), 0, "the committed rows");
    }
    assert!(
        rolled_back > 0,
        "some fault struck an arena sync after its record was logged"
    );
}

#[test]
fn a_page_with_a_committed_stored_write_is_rewritten_through_the_doublewrite_area() {
    // Its committed vectors are in no log record: a torn rewrite could not be rebuilt from its
    // page-init, so the checkpoint that writes it again must protect it (FORMAT.md 16.3), though
    // it was initialised since the checkpoint in force.
    let sim = SimStorage::new(14);
    let store = Store::create(Path::new(DB), DIMENSION, sim_options(&sim, false)).unwrap();
    let rows = ids("a", 300);
    load(&store, &rows, 0).unwrap();
    // Rewrites reach the pages of the load: each freed slot's owner entry is zeroed.
    for id in rows.iter().step_by(17) {
        assert!(store.delete(id).unwrap(), "{id} was loaded");
    }
    store.checkpoint().unwrap();
    let doublewrite = sim.read_file(Path::new("/db/DOUBLEWRITE")).unwrap();
    let page_size = 4096;
    let vector_images = doublewrite
        .chunks_exact(page_size)
        .skip(1)
        .filter(|image| {
            let id = u64::from_le_bytes(image[8..16].try_into().unwrap());
            image.iter().any(|&b| b != 0) && vellum::format::page::PageId(id).space() == Space::Vector
        })
        .count();
    assert!(
        vector_images > 0,
        "the rewritten vector pages went through the doublewrite area ({} bytes in it)",
        doublewrite.len()
    );
    store.close().unwrap();
}

// ---------------------------------------------------------------------------------------------
// Real crashes of bulk loads whose stored pages are written beside the writer.

/// Rows of one bulk commit in the kill test: enough for several records (so the call writes
/// their pages on a thread beside it).
const KILL_ROWS: u64 = 2000;

fn kill_options() -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 20,
        archive: false,
        stored_writes: true,
        ..Options::default()
    }
}

fn kill_ids(commit: u64) -> Vec<String> {
    (0..KILL_ROWS).map(|i| format!("c{commit}-{i:05}")).collect()
}

/// The child of the kill test: bulk commits from `VELLUM_STORED_KILL_FROM` on until killed.
#[test]
fn stored_kill_child_entry() {
    use std::io::Write;
    let Ok(dir) = std::env::var("VELLUM_STORED_KILL_CHILD") else {
        return;
    };
    let from: u64 = std::env::var("VELLUM_STORED_KILL_FROM").unwrap().parse().unwrap();
    let store = Store::open(Path::new(&dir), kill_options()).unwrap();
    let mut stdout = std::io::stdout().lock();
    for commit in from.. {
        load(&store, &kill_ids(commit), commit * KILL_ROWS).unwrap();
        writeln!(stdout, "ack {commit}").unwrap();
        stdout.flush().unwrap();
    }
}

#[test]
fn kill_9_during_bulk_loads_with_stored_writes_loses_no_acknowledged_commit() {
    if std::env::var("VELLUM_STORED_KILL_CHILD").is_ok() {
        return;
    }
    let seed = seed_from_env("VELLUM_STORED_KILL_SEED", 41);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    Store::create(dir.path(), DIMENSION, kill_options())
        .unwrap()
        .close()
        .unwrap();
    let mut committed = 0u64;
    for cycle in 0..12 {
        let envs = [
            ("VELLUM_STORED_KILL_CHILD", dir.path().display().to_string()),
            ("VELLUM_STORED_KILL_FROM", (committed + 1).to_string()),
        ];
        let run_for = std::time::Duration::from_millis(30 + rng.below(150));
        let acknowledged = support::run_killed_child("stored_kill_child_entry", &envs, run_for).unwrap_or(committed);
        let store = Store::open(dir.path(), kill_options()).unwrap();
        // Every acknowledged commit whole; the one after it whole or absent; none after that.
        for commit in 1..=acknowledged {
            assert_loaded(
                &store,
                &kill_ids(commit),
                commit * KILL_ROWS,
                &format!("cycle {cycle} (seed {seed}): commit {commit}"),
            );
        }
        let next = kill_ids(acknowledged + 1);
        let present = next.iter().filter(|id| store.get(id).unwrap().is_some()).count();
        assert!(
            present == 0 || present == next.len(),
            "cycle {cycle} (seed {seed}): commit {} is all or nothing ({present} rows)",
            acknowledged + 1
        );
        committed = acknowledged + u64::from(present > 0);
        assert_eq!(
            store.len() as u64,
            committed * KILL_ROWS,
            "cycle {cycle} (seed {seed}): nothing partial"
        );
        store.close().unwrap();
    }
    let report = vellum::inspect::verify_store(dir.path(), &()).unwrap();
    assert!(report.clean(), "{:?}", report.problems);
    assert!(
        committed >= 12,
        "the children made progress between kills ({committed} commits)"
    );
}

#[test]
fn a_long_bulk_call_writes_its_pages_beside_the_writer_and_every_row_reads_back() {
    // 20,000 rows of 256 bytes in 4 KiB pages: ~1,300 pages in one call, more than one sync's
    // worth (`STORED_WRITE_PAGES`) on the thread beside the writer.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), DIMENSION, kill_options()).unwrap();
    let rows = ids("long", 20_000);
    load(&store, &rows, 7).unwrap();
    let (stored, vector_bytes) = logged(Arc::new(vellum::storage::RealStorage::new()), dir.path());
    assert!(stored > 0, "the call made stored writes");
    assert!(
        vector_bytes * 10 < rows.len() * DIMENSION as usize * 4,
        "the vectors are not in the log"
    );
    assert_loaded(&store, &rows, 7, "before the close");
    store.close().unwrap();
    let store = Store::open(dir.path(), kill_options()).unwrap();
    assert_loaded(&store, &rows, 7, "after a reopen");
    store.close().unwrap();
    let report = vellum::inspect::verify_store(dir.path(), &()).unwrap();
    assert!(report.clean(), "{:?}", report.problems);
}

#[test]
fn an_aborted_bulk_transaction_with_stored_writes_leaves_nothing_after_a_power_cut() {
    // Its pages were written and synced with its vectors before the abort; the abort's CLRs
    // undo the rest (owner entries, catalog, index), and the vectors' bytes are free: a power
    // cut after it, and the loads after that, find none of its rows and every committed one.
    let sim = SimStorage::new(15);
    let store = Store::create(Path::new(DB), DIMENSION, sim_options(&sim, false)).unwrap();
    load(&store, &ids("a", 100), 0).unwrap();
    let (aborted, aborted_vectors) = (ids("x", 500), vectors(&ids("x", 500), 9000));
    let mut tx = store.begin().unwrap();
    tx.insert_many(&rows(&aborted, &aborted_vectors)).unwrap();
    tx.abort().unwrap();
    load(&store, &ids("b", 300), 100).unwrap();
    let (stored, _) = logged(Arc::new(sim.clone()), Path::new(DB));
    assert!(stored > 0, "the aborted call and the load after it made stored writes");
    drop(store);
    let sim = sim.reboot();
    let store = Store::open(Path::new(DB), sim_options(&sim, false)).unwrap();
    assert_eq!(store.len(), 400, "the committed rows alone");
    assert!(
        aborted.iter().all(|id| store.get(id).unwrap().is_none()),
        "no aborted row survives"
    );
    assert_loaded(&store, &ids("a", 100), 0, "the first load");
    assert_loaded(&store, &ids("b", 300), 100, "the load after the abort");
    store.close().unwrap();
}
