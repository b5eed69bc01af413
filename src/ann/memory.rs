//! An in-memory [`GraphStore`]: the layout the pages will have (fixed-size neighbour slots
//! addressed by node id), in flat vectors. For tests and benchmarks.

use super::graph::{DeleteStore, GraphStore, GraphView, LEVEL_MAX, NodeId, NodeState};
use crate::{Error, Result};

/// Vectors and an HNSW graph over them, in memory.
///
/// Layer-0 lists live in one flat array of fixed-size slots (`1 + 2M` u32s: a count, then the
/// ids), as they will on pages; a node of level `L > 0` has `L` more slots of `1 + M` u32s.
/// Freed node slots are handed out again by [`MemoryStore::allocate`].
pub struct MemoryStore {
    dimension: usize,
    m: usize,
    vectors: Vec<f32>,
    states: Vec<NodeState>,
    levels: Vec<u8>,
    layer0: Vec<u32>,
    upper: Vec<Box<[u32]>>,
    entry: Option<NodeId>,
    /// Free slots below `slot_count`, handed out (last first) before new ones.
    free: Vec<NodeId>,
}

impl MemoryStore {
    /// An empty store of `dimension`-component vectors for a graph of degree `m`.
    pub fn new(dimension: usize, m: usize) -> Result<MemoryStore> {
        if dimension == 0 || !(2..=u16::MAX as usize).contains(&m) {
            return Err(Error::InvalidArgument(format!(
                "an index needs dimension >= 1 and 2 <= M <= 65535, not {dimension} and {m}"
            )));
        }
        Ok(MemoryStore {
            dimension,
            m,
            vectors: Vec::new(),
            states: Vec::new(),
            levels: Vec::new(),
            layer0: Vec::new(),
            upper: Vec::new(),
            entry: None,
            free: Vec::new(),
        })
    }

    /// A store holding `vectors` (`dimension` components each, row after row) in slots
    /// `0..n`, none of them in the graph yet.
    pub fn with_vectors(dimension: usize, m: usize, vectors: &[f32]) -> Result<MemoryStore> {
        let mut store = MemoryStore::new(dimension, m)?;
        if !vectors.len().is_multiple_of(dimension) {
            return Err(Error::InvalidArgument(format!(
                "{} components are not a whole number of {dimension}-component vectors",
                vectors.len()
            )));
        }
        let count = vectors.len() / dimension;
        if count > NodeId::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "{count} vectors exceed the node id range"
            )));
        }
        check_finite(vectors)?;
        store.vectors = vectors.to_vec();
        store.states = vec![NodeState::Free; count];
        store.levels = vec![0; count];
        store.layer0 = vec![0; count * (1 + 2 * m)];
        store.upper = vec![Box::default(); count];
        Ok(store)
    }

    /// Stores `vector` in a free slot (a freed one first) and returns the slot; the node is
    /// not in the graph until `Hnsw::insert`.
    pub fn allocate(&mut self, vector: &[f32]) -> Result<NodeId> {
        if vector.len() != self.dimension {
            return Err(Error::InvalidArgument(format!(
                "a vector of {} components in an index of dimension {}",
                vector.len(),
                self.dimension
            )));
        }
        check_finite(vector)?;
        if let Some(node) = self.free.pop() {
            let at = node as usize * self.dimension;
            self.vectors[at..at + self.dimension].copy_from_slice(vector);
            return Ok(node);
        }
        let node = NodeId::try_from(self.states.len())
            .map_err(|_| Error::InvalidArgument("the index has no node id left".into()))?;
        self.vectors.extend_from_slice(vector);
        self.states.push(NodeState::Free);
        self.levels.push(0);
        self.layer0.resize(self.layer0.len() + 1 + 2 * self.m, 0);
        self.upper.push(Box::default());
        Ok(node)
    }

    /// How many node slots exist (in use or free): the size of the index.
    pub fn slots(&self) -> usize {
        self.states.len()
    }

    /// How many slots hold a node of `state`.
    pub fn count(&self, state: NodeState) -> usize {
        self.states.iter().filter(|&&s| s == state).count()
    }

    fn slot(&self, node: NodeId) -> Result<usize> {
        let at = node as usize;
        if at < self.states.len() {
            Ok(at)
        } else {
            Err(Error::InvalidArgument(format!(
                "node {node} is beyond the {} slots of the index",
                self.states.len()
            )))
        }
    }

    /// The slot of `node`'s list at `layer`: (array, offset, capacity).
    fn list_slot(&self, node: NodeId, layer: u8) -> Result<(bool, usize, usize)> {
        let at = self.slot(node)?;
        if layer > self.levels[at] {
            return Err(Error::InvalidArgument(format!(
                "node {node} has level {}, no layer {layer}",
                self.levels[at]
            )));
        }
        Ok(if layer == 0 {
            (false, at * (1 + 2 * self.m), 2 * self.m)
        } else {
            (true, (layer as usize - 1) * (1 + self.m), self.m)
        })
    }
}

fn check_finite(vector: &[f32]) -> Result<()> {
    match vector.iter().position(|x| !x.is_finite()) {
        Some(at) => Err(Error::InvalidArgument(format!("component {at} is not finite"))),
        None => Ok(()),
    }
}

impl GraphView for MemoryStore {
    fn dimension(&self) -> usize {
        self.dimension
    }

    fn slot_count(&self) -> NodeId {
        self.states.len() as NodeId
    }

    fn vector(&self, node: NodeId) -> Result<&[f32]> {
        let at = self.slot(node)? * self.dimension;
        Ok(&self.vectors[at..at + self.dimension])
    }

    fn state(&self, node: NodeId) -> Result<NodeState> {
        Ok(self.states[self.slot(node)?])
    }

    fn level(&self, node: NodeId) -> Result<u8> {
        Ok(self.levels[self.slot(node)?])
    }

    fn neighbours(&self, node: NodeId, layer: u8, out: &mut Vec<NodeId>) -> Result<()> {
        let (upper, offset, _) = self.list_slot(node, layer)?;
        let slots: &[u32] = if upper {
            &self.upper[node as usize]
        } else {
            &self.layer0
        };
        let count = slots[offset] as usize;
        out.clear();
        out.extend_from_slice(&slots[offset + 1..offset + 1 + count]);
        Ok(())
    }

    fn entry_point(&self) -> Result<Option<NodeId>> {
        Ok(self.entry)
    }
}

impl GraphStore for MemoryStore {
    fn add_node(&mut self, node: NodeId, level: u8) -> Result<()> {
        let at = self.slot(node)?;
        if self.states[at] != NodeState::Free || level > LEVEL_MAX {
            return Err(Error::InvalidArgument(format!(
                "node {node} ({:?}) cannot become a node of level {level}",
                self.states[at]
            )));
        }
        self.states[at] = NodeState::Live;
        self.levels[at] = level;
        self.layer0[at * (1 + 2 * self.m)] = 0;
        self.upper[at] = vec![0; level as usize * (1 + self.m)].into_boxed_slice();
        Ok(())
    }

    fn set_neighbours(&mut self, node: NodeId, layer: u8, neighbours: &[NodeId]) -> Result<()> {
        let (upper, offset, capacity) = self.list_slot(node, layer)?;
        if neighbours.len() > capacity {
            return Err(Error::InvalidArgument(format!(
                "{} neighbours exceed the {capacity} of layer {layer}",
                neighbours.len()
            )));
        }
        let slots: &mut [u32] = if upper {
            &mut self.upper[node as usize]
        } else {
            &mut self.layer0
        };
        slots[offset] = neighbours.len() as u32;
        slots[offset + 1..offset + 1 + neighbours.len()].copy_from_slice(neighbours);
        Ok(())
    }

    fn set_entry_point(&mut self, node: Option<NodeId>) -> Result<()> {
        if let Some(node) = node {
            self.slot(node)?;
        }
        self.entry = node;
        Ok(())
    }
}

impl DeleteStore for MemoryStore {
    fn set_deleted(&mut self, node: NodeId) -> Result<()> {
        let at = self.slot(node)?;
        if self.states[at] != NodeState::Live {
            return Err(Error::InvalidArgument(format!("node {node} is not live")));
        }
        self.states[at] = NodeState::Deleted;
        Ok(())
    }

    fn free_node(&mut self, node: NodeId) -> Result<()> {
        let at = self.slot(node)?;
        if self.states[at] != NodeState::Deleted {
            return Err(Error::InvalidArgument(format!("node {node} is not a tombstone")));
        }
        self.states[at] = NodeState::Free;
        self.levels[at] = 0;
        self.layer0[at * (1 + 2 * self.m)] = 0;
        self.upper[at] = Box::default();
        self.free.push(node);
        Ok(())
    }
}

impl super::build::VectorSource for MemoryStore {
    fn source_dimension(&self) -> usize {
        self.dimension
    }

    fn source_count(&self) -> NodeId {
        self.states.len() as NodeId
    }

    fn source_vector(&self, node: NodeId) -> Result<&[f32]> {
        GraphView::vector(self, node)
    }
}
