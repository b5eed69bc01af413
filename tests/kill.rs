//! Real crashes: a child process commits with `SyncMode::Always` and reports every
//! acknowledged commit over a pipe; the parent kills it with SIGKILL at random instants,
//! reopens the store and checks that every acknowledged commit is there, nothing partial is,
//! and the state is the one after some prefix of the commit order.
//!
//! `VELLUM_KILL_CYCLES=N` runs N kill cycles (default 50); the seed is printed and replays
//! the kill timings with `VELLUM_KILL_SEED`.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use support::{Rng, seed_from_env};
use vellum::{Options, Store, SyncMode};

const DIMENSION: usize = 16;
const IDS: u64 = 60;

/// Commit `k` upserts these ids with vector version `k` (deterministic, so the parent can
/// compute the state after any prefix of commits).
fn ids_of_commit(k: u64) -> Vec<u64> {
    let mut rng = Rng::new(k.wrapping_mul(0x9E37_79B9));
    (0..1 + rng.below(4)).map(|_| rng.below(IDS)).collect()
}

fn vector_of(version: u64) -> Vec<f32> {
    (0..DIMENSION).map(|i| version as f32 + i as f32).collect()
}

fn options() -> Options {
    Options {
        sync: SyncMode::Always,
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 20,
        ..Options::default()
    }
}

/// The state after commits `1..=p`: id → version of its last upsert.
fn state_after(p: u64) -> BTreeMap<u64, u64> {
    let mut state = BTreeMap::new();
    for k in 1..=p {
        for id in ids_of_commit(k) {
            state.insert(id, k);
        }
    }
    state
}

fn read_state(store: &Store) -> BTreeMap<u64, u64> {
    let mut state = BTreeMap::new();
    for id in 0..IDS {
        if let Some(r) = store.get(&format!("id-{id}")).unwrap() {
            let version = r[0] as u64;
            assert_eq!(&*r, vector_of(version).as_slice(), "id-{id} holds a whole vector");
            let meta: Vec<_> = r.metadata().collect();
            assert_eq!(
                meta,
                [("version", version.to_string().as_str())],
                "metadata travels with its vector"
            );
            state.insert(id, version);
        }
    }
    state
}

/// The child: commits from `VELLUM_KILL_FROM` on until it is killed.
#[test]
fn kill_child_entry() {
    let Ok(dir) = std::env::var("VELLUM_KILL_CHILD") else {
        return;
    };
    let from: u64 = std::env::var("VELLUM_KILL_FROM").unwrap().parse().unwrap();
    let store = Store::open(&dir, options()).unwrap();
    let mut stdout = std::io::stdout().lock();
    for k in from.. {
        let mut tx = store.begin().unwrap();
        for id in ids_of_commit(k) {
            tx.upsert(&format!("id-{id}"), &vector_of(k), &[("version", &k.to_string())])
                .unwrap();
        }
        tx.commit().unwrap();
        writeln!(stdout, "ack {k}").unwrap();
        stdout.flush().unwrap();
    }
}

/// Runs one child until killed after `run_for`; returns the last acknowledged commit.
fn run_child(dir: &Path, from: u64, run_for: Duration) -> Option<u64> {
    let envs = [
        ("VELLUM_KILL_CHILD", dir.display().to_string()),
        ("VELLUM_KILL_FROM", from.to_string()),
    ];
    support::run_killed_child("kill_child_entry", &envs, run_for)
}

#[test]
fn kill_9_at_random_instants_loses_no_acknowledged_commit() {
    if std::env::var("VELLUM_KILL_CHILD").is_ok() {
        return;
    }
    let seed = seed_from_env("VELLUM_KILL_SEED", 99);
    let cycles: u64 = std::env::var("VELLUM_KILL_CYCLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    Store::create(dir.path(), DIMENSION as u32, options())
        .unwrap()
        .close()
        .unwrap();
    let mut committed = 0u64;
    let mut acknowledged_total = 0u64;
    for cycle in 0..cycles {
        let run_for = Duration::from_millis(20 + rng.below(120));
        let acked = run_child(dir.path(), committed + 1, run_for);
        let floor = acked.unwrap_or(committed);
        let store = Store::open(dir.path(), options()).unwrap();
        let state = read_state(&store);
        // With one committer, at most one commit can be durable without its acknowledgement.
        let prefix = (floor..=floor + 1)
            .find(|&p| state_after(p) == state)
            .unwrap_or_else(|| {
                panic!(
                    "cycle {cycle} (seed {seed}): the state matches no prefix from commit {floor}: {state:?}\n{}",
                    store.recovery_report()
                )
            });
        acknowledged_total += acked.map_or(0, |a| a.saturating_sub(committed));
        committed = prefix;
        store.close().unwrap();
    }
    eprintln!("{cycles} kill cycles, {acknowledged_total} acknowledged commits, {committed} in the store");
    assert!(committed > cycles, "the children made progress between kills");
}
