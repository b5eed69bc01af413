//! Parallel build over vectors that already exist: every core inserts into one concurrent
//! graph in memory (the same [`Hnsw::insert`] as single inserts, through a [`GraphStore`] of
//! per-node locks), and the finished graph is then written to a store node by node, so a
//! paged store writes each page once.
//!
//! Levels come from the seed and node ids alone, so they are the same in every build. With
//! one thread the graph is fully determined by the seed; with more, which node sees which
//! during its insert depends on thread timing, and the lists may differ from run to run
//! (recall does not, measurably).

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::graph::{GraphStore, GraphView, NodeId, NodeState};
use super::hnsw::{Hnsw, Scratch};
use super::watch::{self, Phase, Watcher};
use crate::{Error, Result};

/// Vectors to build over: slots `0..count`, all of them nodes.
pub trait VectorSource: Sync {
    fn source_dimension(&self) -> usize;
    /// How many vectors: their ids are `0..source_count`.
    fn source_count(&self) -> NodeId;
    fn source_vector(&self, node: NodeId) -> Result<&[f32]>;
}

/// Nodes inserted per claim from the shared counter.
const CHUNK_NODES: usize = 32;

/// The graph under construction: lists in fixed-size slots of atomics (readers copy a list
/// without a lock and may see it half-rewritten, which costs nothing but a detour: every id
/// in it is a node), writers serialised per node by a lock.
struct Concurrent<'v, V: VectorSource> {
    vectors: &'v V,
    m: usize,
    levels: Vec<u8>,
    states: Vec<AtomicU8>,
    layer0: Vec<AtomicU32>,
    upper: Vec<Box<[AtomicU32]>>,
    locks: Vec<Mutex<()>>,
    entry: Mutex<Option<NodeId>>,
}

/// A finished graph, to be written into a store with [`Built::write_into`], or read node by
/// node ([`Built::level`], [`Built::neighbours`]).
pub struct Built {
    m: usize,
    levels: Vec<u8>,
    members: Vec<bool>,
    layer0: Vec<u32>,
    upper: Vec<Box<[u32]>>,
    entry: Option<NodeId>,
}

const LIVE: u8 = 1;

impl Hnsw {
    /// Builds the graph of all `vectors` with `threads` threads (at least 1).
    pub fn build<V: VectorSource>(&self, vectors: &V, threads: usize) -> Result<Built> {
        let nodes: Vec<NodeId> = (0..vectors.source_count()).collect();
        self.build_over(vectors, &nodes, threads)
    }

    /// Builds the graph of the vectors `nodes` (distinct, each below `source_count`) with
    /// `threads` threads (at least 1); the other slots stay free.
    pub fn build_over<V: VectorSource>(&self, vectors: &V, nodes: &[NodeId], threads: usize) -> Result<Built> {
        let built = self.build_watched(vectors, nodes, threads, &mut watch::unwatched)?;
        Ok(built.expect("an unwatched build is never stopped"))
    }

    /// [`Hnsw::build_over`], with `watch` told on this thread how many nodes are linked (about
    /// every [`watch::WATCH_INTERVAL`]): `Ok(None)` if it asked to stop.
    pub fn build_watched<V: VectorSource>(
        &self,
        vectors: &V,
        nodes: &[NodeId],
        threads: usize,
        watch: Watcher<'_>,
    ) -> Result<Option<Built>> {
        let count = vectors.source_count();
        let m = self.params().m;
        let mut members = vec![false; count as usize];
        for &node in nodes {
            match members.get_mut(node as usize) {
                Some(member) if !*member => *member = true,
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "node {node} is listed twice or beyond the {count} vectors"
                    )));
                }
            }
        }
        let levels: Vec<u8> = (0..count)
            .map(|n| if members[n as usize] { self.level_for(n) } else { 0 })
            .collect();
        let graph = Concurrent {
            vectors,
            m,
            states: (0..count).map(|_| AtomicU8::new(0)).collect(),
            layer0: (0..count as usize * (1 + 2 * m)).map(|_| AtomicU32::new(0)).collect(),
            upper: levels
                .iter()
                .map(|&l| (0..l as usize * (1 + m)).map(|_| AtomicU32::new(0)).collect())
                .collect(),
            locks: (0..count).map(|_| Mutex::new(())).collect(),
            entry: Mutex::new(None),
            levels,
        };
        if let Some(&first) = nodes.first() {
            self.insert(&mut &graph, first, &mut Scratch::new())?;
        }
        let rest = nodes.get(1..).unwrap_or(&[]);
        let next = AtomicUsize::new(0);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let link = |phase: &Phase| {
            let mut scratch = Scratch::new();
            let mut handle = &graph;
            loop {
                let first = next.fetch_add(CHUNK_NODES, Ordering::Relaxed);
                if first >= rest.len() || phase.stopped() {
                    return;
                }
                let chunk = &rest[first..(first + CHUNK_NODES).min(rest.len())];
                for &node in chunk {
                    if let Err(e) = self.insert(&mut handle, node, &mut scratch) {
                        *failure.lock() = Some(e);
                        phase.stop();
                        return;
                    }
                }
                phase.add_done(chunk.len());
            }
        };
        // Told in nodes of the whole build: the first, inserted before the workers start, is done.
        let mut watch_nodes = |done: usize, _: usize| watch(done + nodes.len().min(1), nodes.len());
        let went_on = watch::run_watched(threads, rest.len(), link, &mut watch_nodes);
        if let Some(e) = failure.into_inner() {
            return Err(e);
        }
        if !went_on {
            return Ok(None);
        }
        // Concurrent inserts leave a few more nodes without an in-link than one by one.
        self.reconnect(&mut &graph, &mut Scratch::new())?;
        Ok(Some(graph.finish(members)))
    }
}

impl<V: VectorSource> Concurrent<'_, V> {
    fn finish(self, members: Vec<bool>) -> Built {
        let entry = self.entry.into_inner();
        Built {
            m: self.m,
            levels: self.levels,
            members,
            layer0: self.layer0.into_iter().map(AtomicU32::into_inner).collect(),
            upper: self
                .upper
                .into_iter()
                .map(|slots| slots.into_iter().map(AtomicU32::into_inner).collect())
                .collect(),
            entry,
        }
    }

    fn node(&self, node: NodeId) -> Result<usize> {
        let at = node as usize;
        if at < self.levels.len() {
            Ok(at)
        } else {
            Err(Error::InvalidArgument(format!(
                "node {node} is beyond the {} being built",
                self.levels.len()
            )))
        }
    }

    /// The slots of `node`'s list at `layer`: (slots, offset of the count, capacity).
    fn list(&self, node: NodeId, layer: u8) -> Result<(&[AtomicU32], usize, usize)> {
        let at = self.node(node)?;
        if layer > self.levels[at] {
            return Err(Error::InvalidArgument(format!("node {node} has no layer {layer}")));
        }
        Ok(if layer == 0 {
            (&self.layer0, at * (1 + 2 * self.m), 2 * self.m)
        } else {
            (&self.upper[at], (layer as usize - 1) * (1 + self.m), self.m)
        })
    }

    fn read(&self, node: NodeId, layer: u8, out: &mut Vec<NodeId>) -> Result<()> {
        let (slots, offset, capacity) = self.list(node, layer)?;
        // Acquire: the ids a writer stored before this count (Release) are visible.
        let count = (slots[offset].load(Ordering::Acquire) as usize).min(capacity);
        out.clear();
        out.extend(
            slots[offset + 1..offset + 1 + count]
                .iter()
                .map(|id| id.load(Ordering::Relaxed)),
        );
        Ok(())
    }

    fn write(&self, node: NodeId, layer: u8, neighbours: &[NodeId]) -> Result<()> {
        let (slots, offset, capacity) = self.list(node, layer)?;
        if neighbours.len() > capacity {
            return Err(Error::InvalidArgument(format!(
                "{} neighbours exceed {capacity}",
                neighbours.len()
            )));
        }
        for (slot, &id) in slots[offset + 1..].iter().zip(neighbours) {
            slot.store(id, Ordering::Relaxed);
        }
        slots[offset].store(neighbours.len() as u32, Ordering::Release);
        Ok(())
    }
}

impl<V: VectorSource> GraphView for &Concurrent<'_, V> {
    fn dimension(&self) -> usize {
        self.vectors.source_dimension()
    }

    fn slot_count(&self) -> NodeId {
        self.levels.len() as NodeId
    }

    fn vector(&self, node: NodeId) -> Result<&[f32]> {
        self.vectors.source_vector(node)
    }

    fn state(&self, node: NodeId) -> Result<NodeState> {
        Ok(match self.states[self.node(node)?].load(Ordering::Acquire) {
            LIVE => NodeState::Live,
            _ => NodeState::Free,
        })
    }

    fn level(&self, node: NodeId) -> Result<u8> {
        Ok(self.levels[self.node(node)?])
    }

    fn neighbours(&self, node: NodeId, layer: u8, out: &mut Vec<NodeId>) -> Result<()> {
        self.read(node, layer, out)
    }

    fn entry_point(&self) -> Result<Option<NodeId>> {
        Ok(*self.entry.lock())
    }
}

impl<V: VectorSource> GraphStore for &Concurrent<'_, V> {
    fn add_node(&mut self, node: NodeId, level: u8) -> Result<()> {
        let at = self.node(node)?;
        if self.levels[at] != level {
            return Err(Error::InvalidArgument(format!(
                "node {node} has level {}, not {level}",
                self.levels[at]
            )));
        }
        self.states[at].store(LIVE, Ordering::Release);
        Ok(())
    }

    fn set_neighbours(&mut self, node: NodeId, layer: u8, neighbours: &[NodeId]) -> Result<()> {
        let _guard = self.locks[self.node(node)?].lock();
        self.write(node, layer, neighbours)
    }

    fn set_entry_point(&mut self, node: Option<NodeId>) -> Result<()> {
        *self.entry.lock() = node;
        Ok(())
    }

    fn update_neighbours<F>(&mut self, node: NodeId, layer: u8, mut edit: F) -> Result<()>
    where
        F: FnMut(&Self, &mut Vec<NodeId>) -> Result<bool>,
    {
        let _guard = self.locks[self.node(node)?].lock();
        let mut list = Vec::with_capacity(2 * self.m + 1);
        self.read(node, layer, &mut list)?;
        if edit(self, &mut list)? {
            self.write(node, layer, &list)?;
        }
        Ok(())
    }

    fn raise_entry_point(&mut self, node: NodeId, level: u8) -> Result<()> {
        let mut entry = self.entry.lock();
        if entry.is_none_or(|e| self.levels[e as usize] < level) {
            *entry = Some(node);
        }
        Ok(())
    }
}

impl Built {
    /// How many slots the graph spans (nodes or not).
    pub fn slot_count(&self) -> NodeId {
        self.levels.len() as NodeId
    }

    /// True if slot `node` is a node of the graph.
    pub fn is_node(&self, node: NodeId) -> bool {
        self.members.get(node as usize).copied().unwrap_or(false)
    }

    /// The level of node `node` (0 for a slot that is no node).
    pub fn level(&self, node: NodeId) -> u8 {
        self.levels.get(node as usize).copied().unwrap_or(0)
    }

    /// The neighbours of node `node` at `layer` (at most its level).
    pub fn neighbours(&self, node: NodeId, layer: u8) -> &[NodeId] {
        let at = node as usize;
        assert!(layer <= self.levels[at], "node {node} has no layer {layer}");
        let (slots, offset): (&[u32], usize) = if layer == 0 {
            (&self.layer0, at * (1 + 2 * self.m))
        } else {
            (&self.upper[at], (layer as usize - 1) * (1 + self.m))
        };
        let count = slots[offset] as usize;
        &slots[offset + 1..offset + 1 + count]
    }

    /// The entry point.
    pub fn entry(&self) -> Option<NodeId> {
        self.entry
    }

    /// Writes the graph into `store`, whose slots hold the same vectors and are free: each
    /// node's element and lists in node order, then the entry point.
    pub fn write_into<S: GraphStore>(&self, store: &mut S) -> Result<()> {
        for node in 0..self.slot_count() {
            if !self.is_node(node) {
                continue;
            }
            let level = self.level(node);
            store.add_node(node, level)?;
            for layer in 0..=level {
                store.set_neighbours(node, layer, self.neighbours(node, layer))?;
            }
        }
        store.set_entry_point(self.entry)
    }
}

/// A finished graph read through its vectors: what searches need, before it is written.
pub struct BuiltView<'a, V: VectorSource> {
    built: &'a Built,
    vectors: &'a V,
}

impl Built {
    /// The graph as a [`GraphView`] over `vectors` (those it was built over).
    pub fn view<'a, V: VectorSource>(&'a self, vectors: &'a V) -> BuiltView<'a, V> {
        BuiltView { built: self, vectors }
    }
}

impl<V: VectorSource> GraphView for BuiltView<'_, V> {
    fn dimension(&self) -> usize {
        self.vectors.source_dimension()
    }

    fn slot_count(&self) -> NodeId {
        self.built.slot_count()
    }

    fn vector(&self, node: NodeId) -> Result<&[f32]> {
        self.vectors.source_vector(node)
    }

    fn state(&self, node: NodeId) -> Result<NodeState> {
        Ok(if self.built.is_node(node) { NodeState::Live } else { NodeState::Free })
    }

    fn level(&self, node: NodeId) -> Result<u8> {
        Ok(self.built.level(node))
    }

    fn neighbours(&self, node: NodeId, layer: u8, out: &mut Vec<NodeId>) -> Result<()> {
        out.clear();
        if self.built.is_node(node) && layer <= self.built.level(node) {
            out.extend_from_slice(self.built.neighbours(node, layer));
        }
        Ok(())
    }

    fn entry_point(&self) -> Result<Option<NodeId>> {
        Ok(self.built.entry())
    }
}
