//! The storage the HNSW algorithms run over: a narrow trait, so that the same code drives the
//! in-memory [`MemoryStore`](super::MemoryStore), the parallel builder's concurrent graph, and
//! (later) Vellum's WAL-logged pages.
//!
//! Every mutation is one bounded change to one node's fixed-size record: a node's element
//! (its level and state) or one of its neighbour lists (at most `2M` ids at layer 0, `M` above),
//! or the entry point. On pages each is one single-page WAL record (see the module docs).

use crate::Result;

/// A node of the graph: the number of its vector slot. Ids are dense, below
/// [`GraphStore::slot_count`].
pub type NodeId = u32;

/// The highest layer a node can have (levels are stored in a byte; with `M = 2` a level above
/// 15 has probability 2^-16 per node, and levels are clamped here).
pub const LEVEL_MAX: u8 = 15;

/// What a node slot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// No node: never used, or freed by a vacuum (no neighbour list points here).
    Free,
    /// A node searches return.
    Live,
    /// A tombstone: deleted, never returned, but still traversed (other lists point to it)
    /// until a vacuum repairs those lists and frees the slot.
    Deleted,
}

/// Read access: what a search needs.
///
/// Implementations validate what they read: an id or level on damaged storage is an
/// `Err(Corrupted)`, never a panic. Every id a list holds is below `slot_count` (the
/// algorithms index per-slot tables with them), and the algorithms pass back only ids they
/// read from here.
pub trait GraphView {
    /// Components per vector.
    fn dimension(&self) -> usize;
    /// One more than the highest node id that may be in use.
    fn slot_count(&self) -> NodeId;
    /// The vector of `node` (a slot below `slot_count`).
    fn vector(&self, node: NodeId) -> Result<&[f32]>;
    fn state(&self, node: NodeId) -> Result<NodeState>;
    /// The level of a live or deleted node: it has neighbour lists at layers `0..=level`.
    fn level(&self, node: NodeId) -> Result<u8>;
    /// Replaces `out` with the neighbours of `node` at `layer` (`layer <= level(node)`).
    fn neighbours(&self, node: NodeId, layer: u8, out: &mut Vec<NodeId>) -> Result<()>;
    /// The node searches start from: one of the highest level, `None` in an empty graph.
    fn entry_point(&self) -> Result<Option<NodeId>>;
    /// A hint that the vectors and states of `nodes` are read next (the neighbours a search
    /// is about to score): a store whose pages may be on disk asks for them all at once.
    fn will_read(&self, nodes: &mut dyn Iterator<Item = NodeId>) {
        let _ = nodes;
    }
}

/// The mutations an insert makes, beside read access.
pub trait GraphStore: GraphView {
    /// Makes the free slot `node` a live node of `level` with empty neighbour lists.
    fn add_node(&mut self, node: NodeId, level: u8) -> Result<()>;
    /// Replaces the neighbours of `node` at `layer` (at most the layer's capacity).
    fn set_neighbours(&mut self, node: NodeId, layer: u8, neighbours: &[NodeId]) -> Result<()>;
    fn set_entry_point(&mut self, node: Option<NodeId>) -> Result<()>;

    /// Reads the neighbours of `node` at `layer`, lets `edit` change them (it returns whether
    /// it did) and writes them back: one read-modify-write of one list, which a concurrent
    /// implementation makes atomic.
    fn update_neighbours<F>(&mut self, node: NodeId, layer: u8, mut edit: F) -> Result<()>
    where
        Self: Sized,
        F: FnMut(&Self, &mut Vec<NodeId>) -> Result<bool>,
    {
        let mut list = Vec::new();
        self.neighbours(node, layer, &mut list)?;
        if edit(self, &mut list)? {
            self.set_neighbours(node, layer, &list)?;
        }
        Ok(())
    }

    /// Makes `node` (of `level`) the entry point if the graph is empty or the current entry
    /// point's level is lower: atomically, in a concurrent implementation.
    fn raise_entry_point(&mut self, node: NodeId, level: u8) -> Result<()> {
        let raise = match self.entry_point()? {
            None => true,
            Some(entry) => self.level(entry)? < level,
        };
        if raise {
            self.set_entry_point(Some(node))?;
        }
        Ok(())
    }
}

/// The mutations deletes make: tombstones, and freeing repaired slots.
pub trait DeleteStore: GraphStore {
    /// Makes the live `node` a tombstone.
    fn set_deleted(&mut self, node: NodeId) -> Result<()>;
    /// Makes the tombstone `node` a free slot (clearing its lists); no list points to it.
    fn free_node(&mut self, node: NodeId) -> Result<()>;
}
