//! Real crashes with the approximate index on (issue 19): a child process commits inserts,
//! upserts and deletes with `SyncMode::Always` into a store with an index and reports each
//! acknowledged commit over a pipe; the parent kills it with SIGKILL at random instants,
//! reopens the store and checks that its state is that after some prefix of the commits, that
//! the index holds every invariant (`check_index`), and that every committed vector is found
//! through the index as its own nearest neighbour. A second test kills a child while it builds
//! an index: the store opens, and the index is either complete or absent.
//!
//! `VELLUM_KILL_CYCLES=N` runs N kill cycles (default 20); the seed is printed and replays the
//! kill timings with `VELLUM_KILL_SEED`.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Rng, seed_from_env};
use vellum::{IndexOptions, Metric, Options, Store, SyncMode};

const DIMENSION: usize = 16;
const IDS: u64 = 300;

/// Commit `k`: `(id, Some(version))` upserts, `(id, None)` deletes (deterministic, so the parent
/// can compute the state after any prefix of commits).
fn ops_of_commit(k: u64) -> Vec<(u64, bool)> {
    let mut rng = Rng::new(k.wrapping_mul(0x9E37_79B9) ^ 0x1DE);
    (0..1 + rng.below(6))
        .map(|_| (rng.below(IDS), rng.chance(20)))
        .collect()
}

/// The vector of `id` at version `version`: distinct for every pair.
fn vector_of(id: u64, version: u64) -> Vec<f32> {
    let mut rng = Rng::new(
        id.wrapping_mul(1_000_003)
            .wrapping_add(version)
            .wrapping_mul(0x2545_F491),
    );
    (0..DIMENSION).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

fn options() -> Options {
    Options {
        sync: SyncMode::Always,
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 20,
        ..Options::default()
    }
}

/// The state after commits `1..=p`: id → version of its last upsert (commit 0 is the initial
/// load: every id at version 0).
fn state_after(p: u64) -> BTreeMap<u64, u64> {
    let mut state: BTreeMap<u64, u64> = (0..IDS).map(|id| (id, 0)).collect();
    for k in 1..=p {
        for (id, delete) in ops_of_commit(k) {
            if delete {
                state.remove(&id);
            } else {
                state.insert(id, k);
            }
        }
    }
    state
}

fn read_state(store: &Store) -> BTreeMap<u64, u64> {
    let mut state = BTreeMap::new();
    for id in 0..IDS {
        if let Some(r) = store.get(&format!("id-{id}")).unwrap() {
            let version: u64 = r.metadata().next().unwrap().1.parse().unwrap();
            assert_eq!(&*r, vector_of(id, version).as_slice(), "id-{id} holds its vector");
            state.insert(id, version);
        }
    }
    state
}

/// The index holds every invariant, and finds every vector of `state` as its own nearest.
fn check_index(store: &Store, state: &BTreeMap<u64, u64>, context: &str) {
    let check = store.check_index().unwrap().expect("the store keeps its index");
    assert!(check.problems.is_empty(), "{context}: {:?}", check.problems);
    assert_eq!(check.live, state.len() as u64, "{context}: one live node per vector");
    for (&id, &version) in state {
        let hits = store.search(&vector_of(id, version), 1, Metric::L2).unwrap();
        assert_eq!(
            hits[0],
            (format!("id-{id}"), 0.0),
            "{context}: id-{id} found through the index ({} live nodes unreachable; {:?})",
            check.unreachable_live,
            store
                .search_with(
                    &vector_of(id, version),
                    3,
                    &vellum::SearchOptions {
                        metric: Metric::L2,
                        ef: Some(300),
                        ..Default::default()
                    }
                )
                .unwrap()
        );
    }
}

/// The child: commits from `VELLUM_KILL_FROM` on until it is killed.
#[test]
fn index_kill_child_entry() {
    let Ok(dir) = std::env::var("VELLUM_INDEX_KILL_CHILD") else {
        return;
    };
    let store = Store::open(&dir, options()).unwrap();
    if std::env::var("VELLUM_INDEX_KILL_BUILD").is_ok() {
        println!("building");
        store
            .create_index(IndexOptions {
                metric: Metric::L2,
                ..IndexOptions::default()
            })
            .unwrap();
        println!("ack built");
        return;
    }
    let from: u64 = std::env::var("VELLUM_KILL_FROM").unwrap().parse().unwrap();
    let mut stdout = std::io::stdout().lock();
    for k in from.. {
        let mut tx = store.begin().unwrap();
        for (id, delete) in ops_of_commit(k) {
            let key = format!("id-{id}");
            if delete {
                tx.delete(&key).unwrap();
            } else {
                tx.upsert(&key, &vector_of(id, k), &[("version", &k.to_string())])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
        writeln!(stdout, "ack {k}").unwrap();
        stdout.flush().unwrap();
    }
}

/// Runs one child until killed after `run_for`; returns its last acknowledgement.
fn run_child(dir: &Path, env: &[(&str, String)], run_for: Duration) -> Option<String> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "index_kill_child_entry", "--nocapture", "--test-threads=1"])
        .env("VELLUM_INDEX_KILL_CHILD", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut last = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print "test index_kill_child_entry ... " before the first ack.
            if let Some((_, ack)) = line.rsplit_once("ack ") {
                last = Some(ack.trim().to_string());
            }
        }
        last
    });
    std::thread::sleep(run_for);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}

fn cycles() -> u64 {
    std::env::var("VELLUM_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

#[test]
fn kill_9_during_index_updates_leaves_a_consistent_index_of_the_committed_vectors() {
    if std::env::var("VELLUM_INDEX_KILL_CHILD").is_ok() {
        return;
    }
    let seed = seed_from_env("VELLUM_KILL_SEED", 1919);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::create(dir.path(), DIMENSION as u32, options()).unwrap();
        let mut tx = store.begin().unwrap();
        for id in 0..IDS {
            tx.insert(&format!("id-{id}"), &vector_of(id, 0), &[("version", "0")])
                .unwrap();
        }
        tx.commit().unwrap();
        store
            .create_index(IndexOptions {
                metric: Metric::L2,
                ..IndexOptions::default()
            })
            .unwrap();
        store.close().unwrap();
    }
    let mut committed = 0u64;
    for cycle in 0..cycles() {
        let run_for = Duration::from_millis(30 + rng.below(150));
        let acked = run_child(
            dir.path(),
            &[("VELLUM_KILL_FROM", (committed + 1).to_string())],
            run_for,
        );
        let floor = acked.map_or(committed, |a| a.parse().unwrap());
        let store = Store::open(dir.path(), options()).unwrap();
        let state = read_state(&store);
        // With one committer, at most one commit can be durable without its acknowledgement.
        let prefix = (floor..=floor + 1)
            .find(|&p| state_after(p) == state)
            .unwrap_or_else(|| panic!("cycle {cycle} (seed {seed}): the state matches no prefix from commit {floor}"));
        check_index(&store, &state, &format!("cycle {cycle} (seed {seed}), commit {prefix}"));
        committed = prefix;
        store.close().unwrap();
    }
    eprintln!("{} kill cycles, {committed} commits in the store", cycles());
    assert!(committed > cycles(), "the children made progress between kills");
}

#[test]
fn kill_9_during_a_build_leaves_the_index_complete_or_absent() {
    if std::env::var("VELLUM_INDEX_KILL_CHILD").is_ok() {
        return;
    }
    let seed = seed_from_env("VELLUM_KILL_SEED", 77);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let count = 8_000u64;
    {
        let store = Store::create(dir.path(), DIMENSION as u32, options()).unwrap();
        let mut tx = store.begin().unwrap();
        for id in 0..count {
            tx.insert(&format!("b{id}"), &vector_of(id, 1), &[]).unwrap();
        }
        tx.commit().unwrap();
        store.close().unwrap();
    }
    let (mut complete, mut absent) = (0, 0);
    for cycle in 0..cycles().min(8) {
        let run_for = Duration::from_millis(50 + rng.below(2500));
        let acked = run_child(dir.path(), &[("VELLUM_INDEX_KILL_BUILD", "1".into())], run_for);
        let store = Store::open(dir.path(), options()).unwrap();
        assert_eq!(store.len() as u64, count, "cycle {cycle}: the vectors stay");
        match store.index_info().unwrap() {
            None => {
                assert!(acked.is_none(), "cycle {cycle}: a build acknowledged is not lost");
                absent += 1;
            }
            Some(info) => {
                assert_eq!(info.live, count, "cycle {cycle}: a complete index");
                let check = store.check_index().unwrap().unwrap();
                assert!(check.problems.is_empty(), "cycle {cycle}: {:?}", check.problems);
                for id in (0..count).step_by(997) {
                    let hits = store.search(&vector_of(id, 1), 1, Metric::L2).unwrap();
                    assert_eq!(
                        hits[0].0,
                        format!("b{id}"),
                        "cycle {cycle}: b{id} found through the index"
                    );
                }
                complete += 1;
                store.drop_index().unwrap();
            }
        }
        store.close().unwrap();
    }
    eprintln!("builds killed: {absent} left no index, {complete} finished first (seed {seed})");
}
