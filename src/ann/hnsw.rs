//! The HNSW algorithms over any [`GraphStore`]: level assignment, insertion with the heuristic
//! neighbour selection, search (plain and filtered), exact scans, deletes with repair.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use super::distance::{Prepared, Space};
use super::graph::{DeleteStore, GraphStore, GraphView, LEVEL_MAX, NodeId, NodeState};
use crate::rng::mix64;
use crate::{Error, Metric, Result};

/// The parameters of an index.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub metric: Metric,
    /// Neighbours chosen per node and layer; lists hold up to `M` above layer 0 and `2M` at it.
    pub m: usize,
    /// The candidate list of an insert's search.
    pub ef_construction: usize,
    /// The candidate list of a search, unless the caller gives one.
    pub ef_search: usize,
    /// The seed of level assignment: the same seed and node ids give the same levels.
    pub seed: u64,
    /// Algorithm 4's keepPrunedConnections: fill a list up to its size with candidates the
    /// heuristic discarded, nearest first.
    pub keep_pruned: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            metric: Metric::Cosine,
            m: 16,
            ef_construction: 128,
            ef_search: 64,
            seed: 0x00C0_FFEE_5EED,
            keep_pruned: false,
        }
    }
}

/// A search result: the node and its exact score (as `Store::search` reports it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub node: NodeId,
    pub score: f32,
}

/// A node and its traversal distance, ordered by distance, then id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scored {
    pub(crate) distance: f32,
    pub(crate) node: NodeId,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.distance
            .total_cmp(&other.distance)
            .then(self.node.cmp(&other.node))
    }
}

/// Which nodes a search visited: a stamp per slot, so clearing is O(1).
#[derive(Default)]
struct Visited {
    stamps: Vec<u32>,
    stamp: u32,
}

impl Visited {
    fn clear(&mut self, slots: NodeId) {
        if self.stamps.len() < slots as usize {
            self.stamps.resize(slots as usize, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.stamps.fill(0);
            self.stamp = 1;
        }
    }

    /// True if `node` is marked.
    #[inline]
    fn contains(&self, node: NodeId) -> bool {
        self.stamps.get(node as usize) == Some(&self.stamp)
    }

    /// Marks `node`; true if it was not marked yet.
    #[inline]
    fn insert(&mut self, node: NodeId) -> bool {
        match self.stamps.get_mut(node as usize) {
            Some(s) if *s != self.stamp => {
                *s = self.stamp;
                true
            }
            Some(_) => false,
            // A node beyond the slots seen at `clear` (a concurrent build never has one).
            None => {
                self.stamps.resize(node as usize + 1, 0);
                self.stamps[node as usize] = self.stamp;
                true
            }
        }
    }
}

/// Reusable buffers of one searching thread.
#[derive(Default)]
pub struct Scratch {
    visited: Visited,
    candidates: BinaryHeap<Reverse<Scored>>,
    results: BinaryHeap<Scored>,
    list: Vec<NodeId>,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch::default()
    }
}

/// Which nodes a layer search may return (it traverses every node it reaches).
#[derive(Clone, Copy)]
pub(crate) enum Admit<'f> {
    /// Live nodes only.
    Live,
    /// Live nodes the predicate accepts.
    Filter(&'f dyn Fn(NodeId) -> bool),
}

/// One layer search: its candidate list size, its layer, and which nodes it may return.
#[derive(Clone, Copy)]
pub(crate) struct Pass<'f> {
    pub(crate) ef: usize,
    pub(crate) layer: u8,
    pub(crate) admit: Admit<'f>,
}

impl Pass<'_> {
    pub(crate) fn live(ef: usize, layer: u8) -> Pass<'static> {
        Pass {
            ef,
            layer,
            admit: Admit::Live,
        }
    }
}

/// An HNSW index's algorithms and parameters; the graph itself is in a [`GraphStore`].
#[derive(Clone)]
pub struct Hnsw {
    params: Params,
    space: Space,
    level_scale: f64,
}

impl Hnsw {
    pub fn new(params: Params) -> Result<Hnsw> {
        if !(2..=u16::MAX as usize).contains(&params.m) || params.ef_construction == 0 || params.ef_search == 0 {
            return Err(Error::InvalidArgument(format!(
                "HNSW needs 2 <= M <= 65535 and ef >= 1, not {params:?}"
            )));
        }
        Ok(Hnsw {
            params,
            space: Space::new(params.metric),
            level_scale: 1.0 / (params.m as f64).ln(),
        })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub(crate) fn space(&self) -> &Space {
        &self.space
    }

    /// The capacity of a neighbour list at `layer`: `2M` at layer 0, `M` above.
    pub fn capacity(&self, layer: u8) -> usize {
        if layer == 0 { 2 * self.params.m } else { self.params.m }
    }

    /// The level of `node`: `floor(-ln(u) / ln(M))` for `u` uniform in (0, 1], drawn from the
    /// seed and the node id alone, so it is the same whatever the order of inserts.
    pub fn level_for(&self, node: NodeId) -> u8 {
        let bits = mix64(self.params.seed ^ u64::from(node).wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let unit = ((bits >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let level = (-unit.ln() * self.level_scale).floor();
        level.min(f64::from(LEVEL_MAX)) as u8
    }

    /// The traversal distance from `from` to `node`'s vector.
    #[inline]
    pub(crate) fn distance<S: GraphView>(&self, store: &S, from: &Prepared<'_>, node: NodeId) -> Result<f32> {
        Ok(self.space.distance(from, store.vector(node)?))
    }

    /// Greedy descent at `layer` from `start`: moves to the closest neighbour while it is
    /// closer (the search of the layers above the one a search or insert works at).
    pub(crate) fn greedy<S: GraphView>(
        &self,
        store: &S,
        query: &Prepared<'_>,
        mut best: Scored,
        layer: u8,
        list: &mut Vec<NodeId>,
    ) -> Result<Scored> {
        loop {
            store.neighbours(best.node, layer, list)?;
            store.will_read(&mut list.iter().copied());
            let mut moved = false;
            for &n in list.iter() {
                let candidate = Scored {
                    distance: self.distance(store, query, n)?,
                    node: n,
                };
                if candidate < best {
                    best = candidate;
                    moved = true;
                }
            }
            if !moved {
                return Ok(best);
            }
        }
    }

    /// Descends from the entry point to `layer + 1`'s closest node: the entry of a search at
    /// `layer`. `None` in an empty graph.
    pub(crate) fn descend<S: GraphView>(
        &self,
        store: &S,
        query: &Prepared<'_>,
        layer: u8,
        list: &mut Vec<NodeId>,
    ) -> Result<Option<Scored>> {
        let Some(entry) = store.entry_point()? else {
            return Ok(None);
        };
        let mut best = Scored {
            distance: self.distance(store, query, entry)?,
            node: entry,
        };
        for upper in (layer + 1..=store.level(entry)?).rev() {
            best = self.greedy(store, query, best, upper, list)?;
        }
        Ok(Some(best))
    }

    /// The best `ef` admitted nodes at `layer` reachable from `entries` (Algorithm 2), nearest
    /// first. Every reached node is traversed, admitted or not (tombstones keep the graph
    /// connected until a vacuum repairs around them).
    pub(crate) fn search_layer<S: GraphView>(
        &self,
        store: &S,
        query: &Prepared<'_>,
        entries: &[Scored],
        Pass { ef, layer, admit }: Pass<'_>,
        scratch: &mut Scratch,
    ) -> Result<Vec<Scored>> {
        let Scratch {
            visited,
            candidates,
            results,
            list,
        } = scratch;
        visited.clear(store.slot_count());
        candidates.clear();
        results.clear();
        for &entry in entries {
            if visited.insert(entry.node) {
                candidates.push(Reverse(entry));
                if admitted(store, admit, entry.node)? {
                    results.push(entry);
                }
            }
        }
        trim(results, ef);
        while let Some(Reverse(current)) = candidates.pop() {
            if results.len() >= ef && results.peek().is_some_and(|worst| current.distance > worst.distance) {
                break;
            }
            store.neighbours(current.node, layer, list)?;
            store.will_read(&mut list.iter().copied().filter(|&n| !visited.contains(n)));
            for &n in list.iter() {
                if !visited.insert(n) {
                    continue;
                }
                let distance = self.distance(store, query, n)?;
                let full = results.len() >= ef;
                if full && results.peek().is_some_and(|worst| distance >= worst.distance) {
                    continue;
                }
                let scored = Scored { distance, node: n };
                candidates.push(Reverse(scored));
                if admitted(store, admit, n)? {
                    results.push(scored);
                    trim(results, ef);
                }
            }
        }
        let mut found = std::mem::take(results).into_vec();
        found.sort_unstable();
        Ok(found)
    }

    /// Algorithm 4: from `candidates` (nearest to the base node first), keeps those nearer to
    /// the base than to every one kept so far, up to `max`; with `keep_pruned`, fills up to
    /// `max` with the discarded ones, nearest first.
    pub(crate) fn select<S: GraphView>(&self, store: &S, candidates: &[Scored], max: usize) -> Result<Vec<Scored>> {
        let mut kept: Vec<Scored> = Vec::with_capacity(max);
        let mut pruned: Vec<Scored> = Vec::new();
        for &candidate in candidates {
            if kept.len() >= max {
                break;
            }
            let from = self.space.prepare(store.vector(candidate.node)?);
            let mut diverse = true;
            for k in &kept {
                if self.distance(store, &from, k.node)? <= candidate.distance {
                    diverse = false;
                    break;
                }
            }
            if diverse {
                kept.push(candidate);
            } else if self.params.keep_pruned {
                pruned.push(candidate);
            }
        }
        if self.params.keep_pruned {
            let room = max.saturating_sub(kept.len());
            kept.extend(pruned.into_iter().take(room));
        }
        Ok(kept)
    }

    /// Adds the free slot `node` (whose vector the store holds) to the graph (Algorithm 1).
    ///
    /// Page edits: the node's element and its lists (one per layer it has), then one list of
    /// each neighbour chosen (at most `M` per layer), and the entry point if `node` is higher.
    pub fn insert<S: GraphStore>(&self, store: &mut S, node: NodeId, scratch: &mut Scratch) -> Result<()> {
        let level = self.level_for(node);
        let Some(entry) = store.entry_point()? else {
            store.add_node(node, level)?;
            return store.raise_entry_point(node, level);
        };
        let top = store.level(entry)?;
        store.add_node(node, level)?;
        let vector = store.vector(node)?.to_vec();
        let query = self.space.prepare(&vector);
        let mut entries = vec![Scored {
            distance: self.distance(&*store, &query, entry)?,
            node: entry,
        }];
        for layer in (level.min(top) + 1..=top).rev() {
            entries[0] = self.greedy(&*store, &query, entries[0], layer, &mut scratch.list)?;
        }
        for layer in (0..=level.min(top)).rev() {
            let ef = self.params.ef_construction;
            let mut found = self.search_layer(&*store, &query, &entries, Pass::live(ef, layer), scratch)?;
            found.retain(|c| c.node != node);
            if found.is_empty() {
                // No live node is reachable (only tombstones, before a vacuum): link to where
                // the descent arrived, so the node stays reachable from the entry point.
                found = entries.iter().copied().filter(|c| c.node != node).collect();
            }
            let chosen = self.select(&*store, &found, self.capacity(layer))?;
            let ids: Vec<NodeId> = chosen.iter().map(|c| c.node).collect();
            self.set_own_list(store, node, layer, &ids)?;
            for &neighbour in &ids {
                self.link(store, neighbour, layer, node)?;
            }
            if !found.is_empty() {
                entries = found;
            }
        }
        if level > top {
            store.raise_entry_point(node, level)?;
        }
        Ok(())
    }

    /// Sets the list of the node being inserted at `layer` to `chosen`, keeping the links that
    /// concurrent inserts (a parallel build) made to it meanwhile: their nodes found this one
    /// through a layer above and chose it, and overwriting their links would leave them with
    /// one in-link less (and sometimes none). A list over capacity is re-selected by the
    /// heuristic. Alone, the list is empty here and this is a plain write.
    fn set_own_list<S: GraphStore>(&self, store: &mut S, node: NodeId, layer: u8, chosen: &[NodeId]) -> Result<()> {
        let capacity = self.capacity(layer);
        store.update_neighbours(node, layer, |store, list| {
            let linked: Vec<NodeId> = list.iter().copied().filter(|n| !chosen.contains(n) && *n != node).collect();
            list.clear();
            list.extend_from_slice(chosen);
            list.extend(linked);
            if list.len() <= capacity {
                return Ok(true);
            }
            let from = self.space.prepare(store.vector(node)?);
            let mut candidates = Vec::with_capacity(list.len());
            for &n in list.iter() {
                if store.state(n)? == NodeState::Live {
                    candidates.push(Scored {
                        distance: self.distance(store, &from, n)?,
                        node: n,
                    });
                }
            }
            candidates.sort_unstable();
            let kept = self.select(store, &candidates, capacity)?;
            list.clear();
            list.extend(kept.iter().map(|c| c.node));
            Ok(true)
        })
    }

    /// Adds `new` to the list of `node` at `layer`; a full list is re-selected from its live
    /// members and `new` by the heuristic. One read-modify-write of one list.
    pub(crate) fn link<S: GraphStore>(&self, store: &mut S, node: NodeId, layer: u8, new: NodeId) -> Result<()> {
        let capacity = self.capacity(layer);
        store.update_neighbours(node, layer, |store, list| {
            if list.contains(&new) || node == new {
                return Ok(false);
            }
            if list.len() < capacity {
                list.push(new);
                return Ok(true);
            }
            let from = self.space.prepare(store.vector(node)?);
            let mut candidates = Vec::with_capacity(list.len() + 1);
            for &n in list.iter().chain(std::iter::once(&new)) {
                if store.state(n)? == NodeState::Live {
                    candidates.push(Scored {
                        distance: self.distance(store, &from, n)?,
                        node: n,
                    });
                }
            }
            candidates.sort_unstable();
            let chosen = self.select(store, &candidates, capacity)?;
            list.clear();
            list.extend(chosen.iter().map(|c| c.node));
            Ok(true)
        })
    }

    /// The `k` live nodes nearest `query` by the graph, searched with a candidate list of
    /// `ef` (at least `k`; `None`: the index's `ef_search`), best first with exact scores.
    pub fn search<S: GraphView>(
        &self,
        store: &S,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        scratch: &mut Scratch,
    ) -> Result<Vec<Hit>> {
        self.check_query(store, query, k)?;
        let ef = ef.unwrap_or(self.params.ef_search).max(k);
        let found = self.search_graph(store, query, ef, Admit::Live, scratch)?;
        self.rescore(store, query, &found, k)
    }

    /// Descent, then the layer-0 search.
    pub(crate) fn search_graph<S: GraphView>(
        &self,
        store: &S,
        query: &[f32],
        ef: usize,
        admit: Admit<'_>,
        scratch: &mut Scratch,
    ) -> Result<Vec<Scored>> {
        let prepared = self.space.prepare(query);
        let Some(entry) = self.descend(store, &prepared, 0, &mut scratch.list)? else {
            return Ok(Vec::new());
        };
        self.search_layer(store, &prepared, &[entry], Pass { ef, layer: 0, admit }, scratch)
    }

    /// The best `k` of `found` by the exact kernels (the scores and order of `Store::search`).
    pub(crate) fn rescore<S: GraphView>(
        &self,
        store: &S,
        query: &[f32],
        found: &[Scored],
        k: usize,
    ) -> Result<Vec<Hit>> {
        let exact = self.space.exact_query(query);
        let mut keyed = Vec::with_capacity(found.len());
        for c in found {
            keyed.push((self.space.exact_key(&exact, store.vector(c.node)?), c.node));
        }
        keyed.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        Ok(keyed
            .into_iter()
            .take(k)
            .map(|(key, node)| Hit {
                node,
                score: self.space.score(key),
            })
            .collect())
    }

    pub(crate) fn check_query<S: GraphView>(&self, store: &S, query: &[f32], k: usize) -> Result<()> {
        if query.len() != store.dimension() {
            return Err(Error::InvalidArgument(format!(
                "query has {} components, the index holds {}",
                query.len(),
                store.dimension()
            )));
        }
        if let Some(at) = query.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidArgument(format!("query component {at} is not finite")));
        }
        if k == 0 {
            return Err(Error::InvalidArgument("k must be at least 1".into()));
        }
        Ok(())
    }

    /// The `k` live nodes nearest `query` among those `filter` accepts, by a scan of every
    /// slot with the exact kernels: the answer an index search approximates.
    pub fn exact_search<S: GraphView>(
        &self,
        store: &S,
        query: &[f32],
        k: usize,
        filter: Option<&dyn Fn(NodeId) -> bool>,
    ) -> Result<Vec<Hit>> {
        self.check_query(store, query, k)?;
        let exact = self.space.exact_query(query);
        // Room for what the store can hold, not for `k` (any size a caller passes).
        let capacity = k.min(store.slot_count() as usize).saturating_add(1);
        let mut heap: BinaryHeap<(KeyOrd, NodeId)> = BinaryHeap::with_capacity(capacity);
        for node in 0..store.slot_count() {
            if store.state(node)? != NodeState::Live || filter.is_some_and(|f| !f(node)) {
                continue;
            }
            let key = KeyOrd(self.space.exact_key(&exact, store.vector(node)?));
            if heap.len() < k {
                heap.push((key, node));
            } else if heap.peek().is_some_and(|worst| (key, node) < *worst) {
                heap.pop();
                heap.push((key, node));
            }
        }
        let mut found = heap.into_vec();
        found.sort_unstable();
        Ok(found
            .into_iter()
            .map(|(key, node)| Hit {
                node,
                score: self.space.score(key.0),
            })
            .collect())
    }

    /// Makes the live `node` a tombstone: searches stop returning it at once; a
    /// [`vacuum`](Hnsw::vacuum) later repairs the lists that point to it and frees its slot.
    /// One page edit (the node's element).
    pub fn delete<S: DeleteStore>(&self, store: &mut S, node: NodeId) -> Result<()> {
        store.set_deleted(node)
    }
}

/// Whether a layer search may return `node`.
#[inline]
fn admitted<S: GraphView>(store: &S, admit: Admit<'_>, node: NodeId) -> Result<bool> {
    Ok(store.state(node)? == NodeState::Live
        && match admit {
            Admit::Live => true,
            Admit::Filter(accept) => accept(node),
        })
}

/// Drops the worst results beyond `ef`.
fn trim(results: &mut BinaryHeap<Scored>, ef: usize) {
    while results.len() > ef {
        results.pop();
    }
}

/// An exact key in a heap (never NaN: `score_key` maps NaN to +inf).
#[derive(Clone, Copy, Debug, PartialEq)]
struct KeyOrd(f64);

impl Eq for KeyOrd {}
impl PartialOrd for KeyOrd {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for KeyOrd {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

