//! Vacuum: repairs the lists that point to tombstones, then frees the tombstones' slots for
//! reuse (pgvector's index vacuum does the same in its own way).
//!
//! A list of a live node that names a tombstone is rebuilt from its live members and the live
//! members of each named tombstone's list at the same layer (the tombstone's neighbourhood is
//! where the node's lost paths went); if that gives fewer than `M` candidates, a search from
//! the entry point adds more. The heuristic then selects up to the layer's capacity, and each
//! newly chosen neighbour gets a link back, as an insert would give it. Only then are the
//! tombstones freed: no list points to them any more, so their slots may hold new nodes.

use super::graph::{DeleteStore, GraphStore, NodeId, NodeState};
use super::hnsw::{Hnsw, Pass, Scored, Scratch};
use crate::Result;

/// What a vacuum did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VacuumReport {
    /// Tombstones freed.
    pub freed: usize,
    /// Lists rebuilt (one page edit each, plus one per new back link).
    pub lists_repaired: usize,
    /// Repairs that searched the graph for more candidates.
    pub searches: usize,
    /// Whether the entry point was a tombstone and moved.
    pub entry_point_moved: bool,
}

impl Hnsw {
    /// Repairs every list that names a tombstone and frees the tombstones.
    pub fn vacuum<S: DeleteStore>(&self, store: &mut S, scratch: &mut Scratch) -> Result<VacuumReport> {
        let slots = store.slot_count();
        let mut dead = vec![false; slots as usize];
        let mut report = VacuumReport::default();
        for node in 0..slots {
            dead[node as usize] = store.state(node)? == NodeState::Deleted;
        }
        if !dead.contains(&true) {
            return Ok(report);
        }
        report.entry_point_moved = self.move_entry_point(store, &dead)?;
        let mut list = Vec::new();
        for node in 0..slots {
            if store.state(node)? != NodeState::Live {
                continue;
            }
            for layer in 0..=store.level(node)? {
                store.neighbours(node, layer, &mut list)?;
                if list.iter().any(|&n| dead[n as usize]) {
                    let searched = self.repair(store, node, layer, &list, &dead, scratch)?;
                    report.lists_repaired += 1;
                    report.searches += usize::from(searched);
                }
            }
        }
        for node in 0..slots {
            if dead[node as usize] {
                store.free_node(node)?;
                report.freed += 1;
            }
        }
        Ok(report)
    }

    /// If the entry point is a tombstone, makes the live node of the highest level (the
    /// lowest id among equals) the entry point, or none if no node is live. True if it moved.
    fn move_entry_point<S: GraphStore>(&self, store: &mut S, dead: &[bool]) -> Result<bool> {
        let Some(entry) = store.entry_point()? else {
            return Ok(false);
        };
        if !dead[entry as usize] {
            return Ok(false);
        }
        let mut best: Option<(u8, NodeId)> = None;
        for node in 0..store.slot_count() {
            if store.state(node)? == NodeState::Live {
                let level = store.level(node)?;
                if best.is_none_or(|(top, _)| level > top) {
                    best = Some((level, node));
                }
            }
        }
        store.set_entry_point(best.map(|(_, node)| node))?;
        Ok(true)
    }

    /// Rebuilds the list of `node` at `layer` (currently `old`) without tombstones; true if it
    /// searched the graph for candidates. A list that keeps at least half its capacity of live
    /// members just drops the tombstones: re-selecting it would cost about what inserting the
    /// node again costs, and after a vacuum of one tombstone in eight nearly every list names
    /// one, so that is what makes a vacuum cheaper than a rebuild.
    pub(crate) fn repair<S: GraphStore>(
        &self,
        store: &mut S,
        node: NodeId,
        layer: u8,
        old: &[NodeId],
        dead: &[bool],
        scratch: &mut Scratch,
    ) -> Result<bool> {
        let live: Vec<NodeId> = old.iter().copied().filter(|&n| !dead[n as usize]).collect();
        if live.len() * 2 >= self.capacity(layer) {
            store.set_neighbours(node, layer, &live)?;
            return Ok(false);
        }
        let mut ids: Vec<NodeId> = Vec::new();
        let mut hop = Vec::new();
        for &n in old {
            if !dead[n as usize] {
                ids.push(n);
                continue;
            }
            store.neighbours(n, layer, &mut hop)?;
            ids.extend(hop.iter().copied().filter(|&x| x != node && !dead[x as usize]));
        }
        ids.sort_unstable();
        ids.dedup();
        let vector = store.vector(node)?.to_vec();
        let from = self.space().prepare(&vector);
        let searched = ids.len() < self.params().m;
        if searched && let Some(entry) = self.descend(&*store, &from, layer, &mut hop)? {
            let ef = self.params().ef_construction;
            let found = self.search_layer(&*store, &from, &[entry], Pass::live(ef, layer), scratch)?;
            ids.extend(found.iter().map(|c| c.node).filter(|&x| x != node));
            ids.sort_unstable();
            ids.dedup();
        }
        let mut candidates = Vec::with_capacity(ids.len());
        for &n in &ids {
            candidates.push(Scored {
                distance: self.distance(&*store, &from, n)?,
                node: n,
            });
        }
        candidates.sort_unstable();
        let chosen: Vec<NodeId> = self
            .select(&*store, &candidates, self.capacity(layer))?
            .iter()
            .map(|c| c.node)
            .collect();
        store.set_neighbours(node, layer, &chosen)?;
        for &n in chosen.iter().filter(|n| !old.contains(n)) {
            self.link(store, n, layer, node)?;
        }
        Ok(searched)
    }
}
