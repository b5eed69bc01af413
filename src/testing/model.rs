//! The in-memory model of a store's committed state, which `tests/simulation.rs` and the `ops`
//! fuzz body check crashed and recovered stores against.
//!
//! The workloads write ids `id-0`, `id-1`, … with a vector that encodes a version number in
//! every component ([`vector_of`]) and one metadata pair `("m", value)`, so a [`State`] is, per
//! id, the version and the value. The [`Model`] keeps every committed state in commit order and
//! the last one acknowledged as durable. A store that recovers after a crash must hold one of
//! the states from the durable one on: every acknowledged commit is there, each transaction is
//! all or nothing, and nothing uncommitted shows ([`Model::recovered`]).

use std::collections::BTreeMap;

use crate::Store;

/// A store's contents as the workloads see them: id → (version of its vector, value of its
/// metadata key `m`).
pub type State = BTreeMap<String, (u32, String)>;

/// The id of number `n`: `id-<n>`.
pub fn id_of(n: impl std::fmt::Display) -> String {
    format!("id-{n}")
}

/// A vector of `dimension` components that encodes `version` in every one, so a torn or
/// foreign read shows: component `i` is `version + i / 4`.
pub fn vector_of(version: u32, dimension: usize) -> Vec<f32> {
    (0..dimension).map(|i| version as f32 + i as f32 * 0.25).collect()
}

/// The version `vector` encodes, or `None` if it is no vector [`vector_of`] makes.
pub fn version_of(vector: &[f32]) -> Option<u32> {
    let version = *vector.first()? as u32;
    (vector == vector_of(version, vector.len()).as_slice()).then_some(version)
}

/// Reads ids `id-0` … `id-<ids - 1>` of `store`: `Err` saying why if a vector is not one
/// [`vector_of`] wrote, the metadata is not exactly one `m` pair, or the store holds other ids.
pub fn read_state(store: &Store, ids: u32) -> Result<State, String> {
    let mut state = State::new();
    for n in 0..ids {
        let id = id_of(n);
        if let Some(vector) = store.get(&id).map_err(|e| e.to_string())? {
            let version =
                version_of(&vector).ok_or_else(|| format!("{id}: a vector that was never written: {:?}", &*vector))?;
            let meta: Vec<_> = vector.metadata().collect();
            let [("m", value)] = meta.as_slice() else {
                return Err(format!("{id}: metadata {meta:?}"));
            };
            state.insert(id, (version, value.to_string()));
        }
    }
    if state.len() != store.len() {
        return Err(format!("len {} but {} ids readable", store.len(), state.len()));
    }
    Ok(state)
}

/// The committed states in commit order (the first is the empty store) and the index of the
/// last one acknowledged as durable: recovery may return no earlier state.
#[derive(Clone, Debug)]
pub struct Model {
    states: Vec<State>,
    durable: usize,
}

impl Default for Model {
    fn default() -> Model {
        Model::new()
    }
}

impl Model {
    /// The model of an empty store, durable.
    pub fn new() -> Model {
        Model {
            states: vec![State::new()],
            durable: 0,
        }
    }

    /// The state after the last commit.
    pub fn latest(&self) -> &State {
        self.states.last().expect("the model always holds the empty state")
    }

    /// How many states the model holds: the empty one and one per commit since the last
    /// recovery.
    pub fn state_count(&self) -> usize {
        self.states.len()
    }

    /// Appends the state after a commit that the store may have kept: one that returned (not
    /// durable until [`Model::all_durable`]), or one a crash or an error interrupted (it may
    /// have landed, or not).
    pub fn commit(&mut self, state: State) {
        self.states.push(state);
    }

    /// Every commit so far is durable: a commit returned under `SyncMode::Always`, or a sync, a
    /// checkpoint or a clean close returned.
    pub fn all_durable(&mut self) {
        self.durable = self.states.len() - 1;
    }

    /// Checks the state a store recovered to: it must equal the state after some commit from
    /// the durable one on (the newest such commit is taken). Then the model forgets the commits
    /// after it, and that state is the durable one. Returns its index; `Err` saying why if no
    /// state matches (the model is unchanged).
    pub fn recovered(&mut self, state: &State) -> Result<usize, String> {
        let matched = (self.durable..self.states.len())
            .rev()
            .find(|&p| self.states[p] == *state)
            .ok_or_else(|| {
                format!(
                    "the state matches no commit prefix from {} (durable) to {}",
                    self.durable,
                    self.states.len() - 1
                )
            })?;
        self.states.truncate(matched + 1);
        self.durable = matched;
        Ok(matched)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::SimStorage;
    use crate::{Options, SyncMode};

    fn state(entries: &[(u32, u32)]) -> State {
        entries
            .iter()
            .map(|&(n, version)| (id_of(n), (version, format!("v{version}"))))
            .collect()
    }

    #[test]
    fn a_recovered_state_before_the_durable_commit_is_refused() {
        let mut model = Model::new();
        model.commit(state(&[(0, 1)]));
        model.all_durable();
        model.commit(state(&[(0, 1), (1, 2)]));
        assert!(model.recovered(&State::new()).is_err(), "the durable commit was lost");
        assert!(
            model.recovered(&state(&[(1, 2)])).is_err(),
            "a state that was never committed"
        );
        assert_eq!(model.state_count(), 3, "a refused state changed the model");
    }

    #[test]
    fn recovery_to_an_undurable_commit_forgets_the_later_ones() {
        let mut model = Model::new();
        model.commit(state(&[(0, 1)]));
        model.commit(state(&[(0, 1), (1, 2)]));
        model.commit(state(&[(1, 2)]));
        assert_eq!(model.recovered(&state(&[(0, 1), (1, 2)])), Ok(2));
        assert_eq!(model.latest(), &state(&[(0, 1), (1, 2)]));
        assert_eq!(model.state_count(), 3);
        assert!(
            model.recovered(&state(&[(0, 1)])).is_err(),
            "the recovered state became the durable one"
        );
    }

    #[test]
    fn the_newest_equal_state_is_the_one_recovered() {
        let mut model = Model::new();
        model.commit(state(&[(0, 1)]));
        model.commit(State::new());
        assert_eq!(model.recovered(&State::new()), Ok(2), "an insert then its delete");
    }

    #[test]
    fn vectors_encode_their_version_and_nothing_else_decodes() {
        assert_eq!(version_of(&vector_of(7, 8)), Some(7));
        assert_eq!(version_of(&vector_of(0, 1)), Some(0));
        assert_eq!(version_of(&[]), None);
        let mut torn = vector_of(7, 8);
        torn[5] = vector_of(8, 8)[5];
        assert_eq!(version_of(&torn), None, "a vector mixing two versions");
    }

    #[test]
    fn read_state_reads_the_workload_ids_and_refuses_foreign_entries() {
        let sim = SimStorage::new(1);
        let options = Options {
            page_size_bytes: 4096,
            segment_size_bytes: 4096 * 8,
            storage: Arc::new(sim),
            background_io: false,
            sync: SyncMode::Never,
            ..Options::default()
        };
        let store = Store::create("/db", 4, options).unwrap();
        store.insert(&id_of(3), &vector_of(5, 4), &[("m", "v5")]).unwrap();
        assert_eq!(read_state(&store, 4), Ok(state(&[(3, 5)])));
        assert!(read_state(&store, 3).is_err(), "id-3 lies beyond the ids read");
        store.insert(&id_of(1), &[9.0, 1.0, 1.0, 1.0], &[("m", "x")]).unwrap();
        assert!(read_state(&store, 4).is_err(), "a vector no workload wrote");
    }
}
