//! Deterministic crash simulation with the approximate index on (issue 19): random workloads
//! of inserts, upserts, deletes, aborted transactions, checkpoints, vacuums and the index's
//! drop and rebuild run against the crash-simulating storage, crash at a random storage
//! operation (inside recovery too, sometimes), recover, and are checked:
//!
//! - the state equals the model's after some commit prefix, every acknowledged commit present
//!   (as in `tests/simulation.rs`);
//! - the id index and the allocation state around it hold (`inspect::check_index`, which
//!   knows the graph's pages);
//! - the index is there unless a drop may have committed (a build or a drop is all or nothing),
//!   holds every invariant `verify` checks, has one live node per vector, and finds every
//!   committed vector as its own nearest neighbour.
//!
//! `VELLUM_INDEX_SIM_SEEDS=N` runs N scenarios (default 300); `VELLUM_INDEX_SIM_SEED=S`
//! replays one.

mod support;

use std::path::Path;
use std::sync::Arc;

use support::Rng;
use vellum::storage::SimStorage;
use vellum::testing::model::{self, Model, State, id_of};
use vellum::{IndexOptions, Metric, Options, RecoveryMode, Store, SyncMode};

const DIMENSION: usize = 8;
/// The workloads write ids `id-0` … `id-59`.
const IDS: u32 = 60;

fn vector_of(version: u32) -> Vec<f32> {
    model::vector_of(version, DIMENSION)
}

fn options(sim: &SimStorage, sync: SyncMode) -> Options {
    Options {
        sync,
        recovery: RecoveryMode::TolerateTornTail,
        page_size_bytes: 4096,
        segment_size_bytes: 4096 * 16,
        checkpoint_interval_bytes: 96 * 1024,
        storage: Arc::new(sim.clone()),
        background_io: false,
        ..Options::default()
    }
}

fn index_options() -> IndexOptions {
    IndexOptions {
        metric: Metric::L2,
        m: 4,
        ef_construction: 16,
    }
}

/// What the workload knows of the index: present or not after the last operation that
/// returned, and whether a crash may have caught a drop or a build in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Index {
    Present,
    Absent,
    Either,
}

/// Runs the random workload until it is done or the storage crashes.
fn workload(
    store: &Store,
    rng: &mut Rng,
    model: &mut Model,
    version: &mut u32,
    index: &mut Index,
    sync: SyncMode,
    steps: u32,
) {
    for _ in 0..steps {
        let mut state = model.latest().clone();
        let choice = rng.below(40);
        let abort = rng.chance(25);
        // Whether the operation commits a transaction (which a crash may still have landed).
        let mut commits = false;
        let result = match choice {
            0 => store.checkpoint().map(|_| model.all_durable()),
            1 if *index == Index::Present => store.vacuum_index().map(|_| ()),
            2 if *index == Index::Present => {
                *index = Index::Either;
                store.drop_index().map(|()| *index = Index::Absent)
            }
            3 if *index == Index::Absent => {
                *index = Index::Either;
                store.create_index(index_options()).map(|()| *index = Index::Present)
            }
            4..=12 => {
                commits = !abort;
                transaction(store, rng, &mut state, version, abort).map(|committed| {
                    if committed {
                        model.commit(state.clone());
                    }
                })
            }
            _ => {
                commits = true;
                single(store, rng, &mut state, version).map(|()| model.commit(state.clone()))
            }
        };
        match result {
            Ok(()) if sync == SyncMode::Always => model.all_durable(),
            Ok(()) => {}
            Err(_) => {
                if commits {
                    model.commit(state);
                }
                return;
            }
        }
    }
}

fn single(store: &Store, rng: &mut Rng, state: &mut State, version: &mut u32) -> vellum::Result<()> {
    let mut tx = store.begin()?;
    apply_random(&mut tx, rng, state, version)?;
    tx.commit().map(|_| ())
}

fn transaction(
    store: &Store,
    rng: &mut Rng,
    state: &mut State,
    version: &mut u32,
    abort: bool,
) -> vellum::Result<bool> {
    let mut tx = store.begin()?;
    let mut scratch = state.clone();
    for _ in 0..1 + rng.below(12) {
        apply_random(&mut tx, rng, &mut scratch, version)?;
    }
    if abort {
        tx.abort()?;
        return Ok(false);
    }
    *state = scratch;
    tx.commit()?;
    Ok(true)
}

fn apply_random(
    tx: &mut vellum::Transaction<'_>,
    rng: &mut Rng,
    state: &mut State,
    version: &mut u32,
) -> vellum::Result<()> {
    let id = id_of(rng.below(IDS.into()));
    if rng.chance(30) {
        tx.delete(&id)?;
        state.remove(&id);
        return Ok(());
    }
    *version += 1;
    let meta = format!("v{version}");
    tx.upsert(&id, &vector_of(*version), &[("m", &meta)])?;
    state.insert(id, (*version, meta));
    Ok(())
}

/// Checks a recovered store: the model's invariants, then the index's.
fn check(store: &Store, model: &mut Model, index: Index) -> Result<usize, String> {
    let state = model::read_state(store, IDS)?;
    let matched = model.recovered(&state)?;
    // The id index and the allocation state around it, with the graph's pages among them.
    vellum::inspect::check_index(store).map_err(|e| format!("the id index: {e}"))?;
    let info = store.index_info().map_err(|e| format!("index info: {e}"))?;
    match (index, &info) {
        (Index::Present, None) => return Err("the index was lost".into()),
        (Index::Absent, Some(_)) => return Err("a dropped index came back".into()),
        _ => {}
    }
    if info.is_none() {
        return Ok(matched);
    }
    let check = store
        .check_index()
        .map_err(|e| format!("check_index: {e}"))?
        .expect("an index");
    if !check.problems.is_empty() {
        return Err(format!("the index is inconsistent: {:?}", check.problems));
    }
    if check.live != state.len() as u64 {
        return Err(format!("{} live nodes for {} vectors", check.live, state.len()));
    }
    for (id, (version, _)) in &state {
        let hits = store
            .search(&vector_of(*version), 1, Metric::L2)
            .map_err(|e| e.to_string())?;
        if hits.first().map(|h| (h.0.as_str(), h.1)) != Some((id.as_str(), 0.0)) {
            return Err(format!(
                "{id} (version {version}) is not found through the index: {hits:?}"
            ));
        }
    }
    Ok(matched)
}

/// Counts the storage operations of the crash-free run of a seed.
fn dry_run_ops(seed: u64, sync: SyncMode, steps: u32) -> u64 {
    let sim = SimStorage::new(seed);
    let store = Store::create(Path::new("/db"), DIMENSION as u32, options(&sim, sync)).unwrap();
    store.create_index(index_options()).unwrap();
    let mut index = Index::Present;
    workload(
        &store,
        &mut Rng::new(seed),
        &mut Model::new(),
        &mut 0,
        &mut index,
        sync,
        steps,
    );
    sim.mutating_ops()
}

/// One scenario: create (with an index), run, crash, (crash again in recovery), recover, check;
/// then run on, close, reopen strictly and check again.
fn scenario(seed: u64) -> Result<String, String> {
    let mut rng = Rng::new(seed ^ 0x1DE5);
    let sync = if rng.chance(75) {
        SyncMode::Always
    } else {
        SyncMode::Never
    };
    let steps = 10 + rng.below(40) as u32;
    let total_ops = dry_run_ops(seed, sync, steps);
    let sim = SimStorage::new(seed);
    let store = Store::create(Path::new("/db"), DIMENSION as u32, options(&sim, sync)).map_err(|e| e.to_string())?;
    store.create_index(index_options()).map_err(|e| e.to_string())?;
    let crash_at = 1 + rng.below(total_ops.saturating_sub(sim.mutating_ops()).max(1));
    sim.crash_after_ops(crash_at);
    let mut model = Model::new();
    let (mut version, mut index) = (0, Index::Present);
    workload(
        &store,
        &mut Rng::new(seed),
        &mut model,
        &mut version,
        &mut index,
        sync,
        steps,
    );
    sim.crash_now();
    drop(store);
    let mut disk = sim.reboot();
    if rng.chance(30) {
        disk.crash_after_ops(1 + rng.below(40));
        if Store::open(Path::new("/db"), options(&disk, sync)).is_ok() {
            disk.crash_now();
        }
        disk = disk.reboot();
    }
    let store = Store::open(Path::new("/db"), options(&disk, sync))
        .map_err(|e| format!("recovery failed (crash at op {crash_at}/{total_ops}): {e}"))?;
    if sync == SyncMode::Never {
        // A build or a drop that returned is durable only once something made it so.
        index = Index::Either;
    }
    let matched = check(&store, &mut model, index).map_err(|e| format!("crash at op {crash_at}/{total_ops}: {e}"))?;
    index = if store.index_info().map_err(|e| e.to_string())?.is_some() {
        Index::Present
    } else {
        Index::Absent
    };
    workload(
        &store,
        &mut Rng::new(seed.wrapping_add(1)),
        &mut model,
        &mut version,
        &mut index,
        SyncMode::Always,
        10,
    );
    store.close().map_err(|e| e.to_string())?;
    let strict = Options {
        recovery: RecoveryMode::Strict,
        ..options(&disk, sync)
    };
    let store = Store::open(Path::new("/db"), strict).map_err(|e| format!("clean reopen failed: {e}"))?;
    check(&store, &mut model, index).map_err(|e| format!("after a clean close: {e}"))?;
    if model::read_state(&store, IDS)? != *model.latest() {
        return Err("after a clean close the state is not the last commit".into());
    }
    Ok(format!("crash at op {crash_at}/{total_ops}, matched commit {matched}"))
}

#[test]
fn crashes_with_the_index_on_recover_a_consistent_index_of_a_committed_prefix() {
    let (first, count) = match std::env::var("VELLUM_INDEX_SIM_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        Some(seed) => (seed, 1),
        None => (
            1,
            std::env::var("VELLUM_INDEX_SIM_SEEDS")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(300u64),
        ),
    };
    let mut failures = Vec::new();
    for seed in first..first + count {
        let outcome = std::panic::catch_unwind(|| scenario(seed)).unwrap_or_else(|panic| {
            Err(panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic".into()))
        });
        match outcome {
            Ok(outcome) if count == 1 => eprintln!("seed {seed}: {outcome}"),
            Ok(_) => {}
            Err(why) => {
                eprintln!("seed {seed} FAILED: {why} (replay with VELLUM_INDEX_SIM_SEED={seed})");
                failures.push(seed);
            }
        }
    }
    eprintln!("{count} crash scenarios with the index, {} failed", failures.len());
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}
