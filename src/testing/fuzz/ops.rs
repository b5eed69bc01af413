//! The `ops` target, and the encoding of its input (for seeds).

use std::path::Path;
use std::sync::OnceLock;

use super::{DIMENSION, STORE_DIR, checked_index_ids, long_id, meta_of, store_options, vector_of};
use crate::storage::SimStorage;
use crate::testing::model::{Model, State, version_of};
use crate::testing::{Bytes, StoreImage};
use crate::{Error, Options, RecoveryMode, Store, SyncMode};

/// One write inside a transaction (or autocommit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    Insert { id: u8, meta: u8 },
    Upsert { id: u8, meta: u8 },
    Delete { id: u8 },
}

/// One step of the ops target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// An autocommit write.
    Single(Write),
    /// A transaction of writes, committed or aborted.
    Txn {
        writes: Vec<Write>,
        commit: bool,
    },
    Checkpoint,
    Sync,
    /// Power cut now: reboot the disk and recover.
    Crash,
    /// Close cleanly and reopen (Strict).
    Reopen,
    /// Arm a crash at the `n`-th storage operation from now.
    CrashAfterOps(u8),
    /// Look a vector up and hold it (a reader that stays).
    Hold(u8),
    /// Let a held reader go.
    Release(u8),
}

/// A decoded ops input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsInput {
    pub sync: SyncMode,
    pub ops: Vec<Op>,
}

const OPS_IDS: u8 = 12;
const OPS_MAX: usize = 64;

fn decode_write(input: &mut Bytes<'_>) -> Write {
    match input.u8() % 3 {
        0 => Write::Insert {
            id: input.u8() % OPS_IDS,
            meta: input.u8(),
        },
        1 => Write::Upsert {
            id: input.u8() % OPS_IDS,
            meta: input.u8(),
        },
        _ => Write::Delete {
            id: input.u8() % OPS_IDS,
        },
    }
}

fn encode_write(out: &mut Vec<u8>, write: Write) {
    match write {
        Write::Insert { id, meta } => out.extend([0, id, meta]),
        Write::Upsert { id, meta } => out.extend([1, id, meta]),
        Write::Delete { id } => out.extend([2, id]),
    }
}

/// Decodes an ops input: byte 0 bit 0 = `SyncMode::Never` (else `Always`); then up to 64 ops,
/// each a tag byte (modulo 9: single write, transaction, checkpoint, sync, crash, reopen,
/// crash-after-ops, hold, release) and its arguments.
pub fn decode_ops(data: &[u8]) -> OpsInput {
    let mut input = Bytes(data);
    let sync = if input.u8() & 1 == 0 {
        SyncMode::Always
    } else {
        SyncMode::Never
    };
    let mut ops = Vec::new();
    while !input.is_empty() && ops.len() < OPS_MAX {
        let op = match input.u8() % 9 {
            0 => Op::Single(decode_write(&mut input)),
            1 => {
                let header = input.u8();
                let count = 1 + usize::from(header & 7);
                let writes = (0..count).map(|_| decode_write(&mut input)).collect();
                Op::Txn {
                    writes,
                    commit: header & 8 == 0,
                }
            }
            2 => Op::Checkpoint,
            3 => Op::Sync,
            4 => Op::Crash,
            5 => Op::Reopen,
            6 => Op::CrashAfterOps(input.u8()),
            7 => Op::Hold(input.u8() % OPS_IDS),
            _ => Op::Release(input.u8()),
        };
        ops.push(op);
    }
    OpsInput { sync, ops }
}

/// Encodes an ops input as [`decode_ops`] reads it (for seeds).
pub fn encode_ops(input: &OpsInput) -> Vec<u8> {
    let mut out = vec![u8::from(input.sync != SyncMode::Always)];
    for op in &input.ops {
        match op {
            Op::Single(write) => {
                out.push(0);
                encode_write(&mut out, *write);
            }
            Op::Txn { writes, commit } => {
                assert!((1..=8).contains(&writes.len()));
                out.push(1);
                out.push((writes.len() - 1) as u8 | if *commit { 0 } else { 8 });
                for write in writes {
                    encode_write(&mut out, *write);
                }
            }
            Op::Checkpoint => out.push(2),
            Op::Sync => out.push(3),
            Op::Crash => out.push(4),
            Op::Reopen => out.push(5),
            Op::CrashAfterOps(n) => out.extend([6, *n]),
            Op::Hold(id) => out.extend([7, *id]),
            Op::Release(i) => out.extend([8, *i]),
        }
    }
    out
}

/// A store just created and closed, on a crashed disk to boot a copy of per input (creating
/// a store for every input made the target several times slower).
fn ops_fresh_disk() -> &'static SimStorage {
    static DISK: OnceLock<SimStorage> = OnceLock::new();
    DISK.get_or_init(|| {
        let sim = SimStorage::new(0);
        let options = ops_options(&sim, RecoveryMode::Strict, SyncMode::Always);
        Store::create(STORE_DIR, DIMENSION as u32, options)
            .and_then(Store::close)
            .expect("creating the ops base store");
        StoreImage::of(&sim, Path::new(STORE_DIR)).boot_disk()
    })
}

/// What ended the life of one open store.
enum Next {
    Crashed,
    Reopen,
    Done,
}

struct OpsRun {
    sim: SimStorage,
    sync: SyncMode,
    model: Model,
    version: u32,
}

fn ops_options(sim: &SimStorage, mode: RecoveryMode, sync: SyncMode) -> Options {
    Options {
        checkpoint_interval_bytes: 24 * 1024,
        ..store_options(sim, mode, sync)
    }
}

/// **ops**: a sequence of API calls (see [`decode_ops`]) against a store in SimStorage with
/// background I/O off (4 KiB pages, 8-page segments, automatic checkpoints every 24 KiB of log),
/// checked against the in-memory model `tests/simulation.rs` uses too ([`Model`]).
///
/// Invariants:
/// - with no crash, every call succeeds (an insert of a present id fails with `AlreadyExists`
///   and changes nothing; a delete reports whether the id existed), a transaction sees its own
///   writes, and after every step the store holds exactly the model's last committed state;
/// - a held vector never changes under its reader;
/// - after a crash (now, or at an armed storage operation, inside commits, checkpoints, closes
///   and recovery too) the store reopens, and its state equals the model's state after some
///   prefix of the commits that includes every commit acknowledged as durable
///   (`SyncMode::Always`, or made durable by `sync`, a checkpoint or a close);
/// - after a clean close the store reopens in Strict mode with exactly the last state;
/// - after every step, and after every recovery and reopen, the full check of the index
///   (`inspect::index_report`: the tree, every leaf value's entry and vector slot, the lists,
///   no orphan) finds nothing wrong, and the index holds exactly the ids of the store's state,
///   in byte order.
///
/// The ids are long (up to 1004 bytes), so that the twelve of them fill several leaves and
/// the tree splits, shrinks and frees nodes.
pub fn ops(data: &[u8]) {
    let input = decode_ops(data);
    let sim = ops_fresh_disk().reboot_with_seed(u64::from(data.len() as u32));
    let store = Store::open(STORE_DIR, ops_options(&sim, RecoveryMode::Strict, input.sync))
        .expect("opening a fresh store in SimStorage");
    let mut run = OpsRun {
        sim,
        sync: input.sync,
        model: Model::new(),
        version: 0,
    };
    let mut ops = input.ops.iter();
    let mut store = Some(store);
    loop {
        let current = store.take().expect("a store is open");
        let next = run.life(&current, &mut ops);
        match next {
            Next::Reopen => match current.close() {
                Ok(()) => {
                    run.model.all_durable();
                    store = Some(run.open_strict());
                }
                Err(e) => {
                    assert!(run.sim.is_crashed(), "close failed without a crash: {e}");
                    store = Some(run.recover());
                }
            },
            Next::Crashed => {
                run.sim.crash_now();
                drop(current);
                store = Some(run.recover());
            }
            Next::Done => {
                run.sim.crash_now();
                drop(current);
                run.recover();
                return;
            }
        }
    }
}

impl OpsRun {
    /// Runs ops on `store` until one needs a new store (crash, reopen) or the ops run out.
    fn life<'s>(&mut self, store: &'s Store, ops: &mut std::slice::Iter<'_, Op>) -> Next {
        let mut held: Vec<(crate::VectorRef<'s>, u32)> = Vec::new();
        for op in ops.by_ref() {
            for (vector, version) in &held {
                assert_eq!(
                    version_of(vector),
                    Some(*version),
                    "a held vector changed under its reader"
                );
            }
            let result = match op {
                Op::Single(write) => self.single(store, *write),
                Op::Txn { writes, commit } => self.transaction(store, writes, *commit),
                Op::Checkpoint => store.checkpoint().map(|_| self.model.all_durable()),
                Op::Sync => store.sync().map(|()| self.model.all_durable()),
                Op::Crash => return Next::Crashed,
                Op::Reopen => return Next::Reopen,
                Op::CrashAfterOps(n) => {
                    self.sim.crash_after_ops(1 + u64::from(*n));
                    Ok(())
                }
                Op::Hold(id) => {
                    match store.get(&ops_id(*id)) {
                        Ok(Some(vector)) => {
                            let version = version_of(&vector).expect("a reader sees whole committed vectors");
                            held.push((vector, version));
                        }
                        Ok(None) => {}
                        Err(e) => assert!(self.sim.is_crashed(), "get failed without a crash: {e}"),
                    }
                    Ok(())
                }
                Op::Release(i) => {
                    if !held.is_empty() {
                        held.swap_remove(usize::from(*i) % held.len());
                    }
                    Ok(())
                }
            };
            if let Err(e) = result {
                assert!(self.sim.is_crashed(), "{op:?} failed without a crash: {e}");
                return Next::Crashed;
            }
            if self.sim.is_crashed() {
                return Next::Crashed;
            }
            let state = read_ops_state(store).unwrap_or_else(|e| panic!("reading the store after {op:?}: {e}"));
            assert_eq!(
                &state,
                self.model.latest(),
                "after {op:?} the store differs from the model"
            );
            check_index_holds(store, &state, &format!("after {op:?}"));
        }
        Next::Done
    }

    fn next_write(&mut self, tx: &mut crate::Transaction<'_>, write: Write, state: &mut State) -> crate::Result<()> {
        match write {
            Write::Insert { id, meta } | Write::Upsert { id, meta } => {
                let id = ops_id(id);
                self.version += 1;
                let value = meta_of(self.version, meta);
                let vector = vector_of(self.version);
                if matches!(write, Write::Insert { .. }) {
                    match tx.insert(&id, &vector, &[("m", &value)]) {
                        Ok(_) => assert!(!state.contains_key(&id), "insert of present {id} succeeded"),
                        Err(Error::AlreadyExists) => {
                            assert!(state.contains_key(&id), "insert of absent {id} refused");
                            return Ok(());
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    tx.upsert(&id, &vector, &[("m", &value)])?;
                }
                state.insert(id.clone(), (self.version, value));
                assert_eq!(tx.get(&id), Some(vector), "a transaction does not see its own write");
            }
            Write::Delete { id } => {
                let id = ops_id(id);
                let existed = tx.delete(&id)?;
                assert_eq!(
                    existed,
                    state.remove(&id).is_some(),
                    "delete of {id} misreports existence"
                );
                assert_eq!(tx.get(&id), None, "a transaction sees what it deleted");
            }
        }
        Ok(())
    }

    /// A commit returned: under `SyncMode::Always` it is durable.
    fn acknowledged(&mut self) {
        if self.sync == SyncMode::Always {
            self.model.all_durable();
        }
    }

    fn single(&mut self, store: &Store, write: Write) -> crate::Result<()> {
        let mut state = self.model.latest().clone();
        let result = (|| {
            let mut tx = store.begin()?;
            self.next_write(&mut tx, write, &mut state)?;
            tx.commit().map(|_| ())
        })();
        // A commit a crash hit may have landed (or not), as one that returned may be undurable.
        self.model.commit(state);
        if result.is_ok() {
            self.acknowledged();
        }
        result
    }

    fn transaction(&mut self, store: &Store, writes: &[Write], commit: bool) -> crate::Result<()> {
        let mut state = self.model.latest().clone();
        let result = (|| {
            let mut tx = store.begin()?;
            for &write in writes {
                self.next_write(&mut tx, write, &mut state)?;
            }
            if commit { tx.commit().map(|_| ()) } else { tx.abort() }
        })();
        if commit {
            self.model.commit(state);
            if result.is_ok() {
                self.acknowledged();
            }
        }
        result
    }

    /// Reboots the disk and recovers (again if a crash is armed inside recovery); checks the
    /// recovered state against the model and makes it the model's durable state.
    fn recover(&mut self) -> Store {
        for _ in 0..4 {
            self.sim = self.sim.reboot();
            match Store::open(
                STORE_DIR,
                ops_options(&self.sim, RecoveryMode::TolerateTornTail, self.sync),
            ) {
                Ok(store) => {
                    let state = read_ops_state(&store).unwrap_or_else(|e| panic!("reading a recovered store: {e}"));
                    check_index_holds(&store, &state, "after recovery");
                    if let Err(e) = self.model.recovered(&state) {
                        panic!("after recovery {e}: {state:?}");
                    }
                    return store;
                }
                Err(e) => assert!(self.sim.is_crashed(), "recovery failed without a crash: {e}"),
            }
        }
        panic!("recovery crashed four times in a row");
    }

    fn open_strict(&mut self) -> Store {
        match Store::open(STORE_DIR, ops_options(&self.sim, RecoveryMode::Strict, self.sync)) {
            Ok(store) => {
                let state = read_ops_state(&store).unwrap_or_else(|e| panic!("reading a reopened store: {e}"));
                check_index_holds(&store, &state, "after a clean reopen");
                assert_eq!(
                    &state,
                    self.model.latest(),
                    "after a clean close the state is not the last commit"
                );
                store
            }
            Err(e) => {
                assert!(self.sim.is_crashed(), "a clean reopen failed without a crash: {e}");
                self.recover()
            }
        }
    }
}

/// The id of number `n` (of [`OPS_IDS`]): long, so that the ids fill several leaves.
fn ops_id(n: u8) -> String {
    long_id(u64::from(n))
}

/// The state of the ids the target writes: `Err` saying why if a vector is not one
/// [`super::vector_of`] wrote, the metadata is not exactly one `m` pair, or the store holds
/// other ids.
fn read_ops_state(store: &Store) -> Result<State, String> {
    let mut state = State::new();
    for n in 0..OPS_IDS {
        let id = ops_id(n);
        if let Some(vector) = store.get(&id).map_err(|e| e.to_string())? {
            let version = version_of(&vector).ok_or_else(|| format!("{n}: a vector that was never written"))?;
            let meta: Vec<_> = vector.metadata().collect();
            let [("m", value)] = meta.as_slice() else {
                return Err(format!("{n}: metadata {meta:?}"));
            };
            state.insert(id, (version, value.to_string()));
        }
    }
    if state.len() != store.len() {
        return Err(format!("len {} but {} ids readable", store.len(), state.len()));
    }
    let batched = read_ops_state_batched(store)?;
    if batched != state {
        return Err(format!("get_many read {batched:?} where get read {state:?}"));
    }
    Ok(state)
}

/// The ids of the store as one `get_many` reads them (what `get` reads, id by id).
fn read_ops_state_batched(store: &Store) -> Result<State, String> {
    let ids: Vec<String> = (0..OPS_IDS).map(ops_id).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut state = State::new();
    let mut bad = None;
    store
        .get_many(&refs, |i, found| {
            let Some(vector) = found else { return };
            let meta: Vec<_> = vector.metadata().collect();
            match (version_of(&vector), meta.as_slice()) {
                (Some(version), [("m", value)]) => {
                    state.insert(ids[i].clone(), (version, value.to_string()));
                }
                _ => {
                    bad = Some(format!(
                        "{}: batched, a vector never written or metadata {meta:?}",
                        ids[i]
                    ))
                }
            }
        })
        .map_err(|e| e.to_string())?;
    bad.map_or(Ok(state), Err)
}

/// The index of `store` checks clean and holds exactly the ids of `state`, in order.
fn check_index_holds(store: &Store, state: &State, context: &str) {
    let ids = checked_index_ids(store, context);
    assert!(
        ids.iter().eq(state.keys()),
        "{context}: the index holds other ids than the store's state ({} against {})",
        ids.len(),
        state.len()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "builds and opens whole stores: minutes under Miri")]
    fn the_ops_ids_fill_a_tree_of_two_levels_and_emptying_it_frees_its_nodes() {
        let sim = ops_fresh_disk().reboot_with_seed(1);
        let store = Store::open(STORE_DIR, ops_options(&sim, RecoveryMode::Strict, SyncMode::Never)).expect("open");
        for n in 0..OPS_IDS {
            store.upsert(&ops_id(n), &vector_of(1), &[("m", "v")]).expect("upsert");
        }
        let full = crate::inspect::check_index(&store).expect("a clean index");
        assert!(full.height >= 2 && full.leaf_pages >= 2, "{full:?}");
        for n in 0..OPS_IDS {
            store.delete(&ops_id(n)).expect("delete");
        }
        let empty = crate::inspect::check_index(&store).expect("a clean index");
        assert_eq!((empty.entries, empty.height), (0, 0));
        assert!(empty.free_pages >= full.leaf_pages + full.branch_pages, "{empty:?}");
    }
}
