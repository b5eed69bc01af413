//! Reconnection: every live node reachable from the entry point at layer 0 again.
//!
//! HNSW does not promise it: a node's in-links are the back-links of its neighbours, and a
//! neighbour whose list is full re-selects it by the heuristic and may drop it; when all do,
//! or when the tombstones that linked to it are freed, no search can reach the node. That is
//! rare one insert at a time, less rare in a parallel build, and after a vacuum. This pass
//! finds such nodes by a walk of layer 0 and links each from its nearest reachable node (a
//! search from the entry point, which reaches only reachable nodes): appended to that node's
//! list, or in place of its farthest neighbour when the list is full. A displaced neighbour
//! may lose its last in-link in turn, so the walk is repeated (a few rounds at most).

use std::collections::VecDeque;

use super::graph::{GraphStore, GraphView, NodeId, NodeState};
use super::hnsw::{Hnsw, Pass, Scored, Scratch};
use crate::Result;

/// Rounds of walk and repair at most (each round's links displace few others).
const ROUNDS_MAX: usize = 4;

impl Hnsw {
    /// Links every live node a walk of layer 0 from the entry point misses; returns how many
    /// it linked.
    pub fn reconnect<S: GraphStore>(&self, store: &mut S, scratch: &mut Scratch) -> Result<usize> {
        let mut linked = 0;
        for _ in 0..ROUNDS_MAX {
            let Some(mut reached) = reachable(store)? else { return Ok(linked) };
            let mut round = 0;
            for node in 0..store.slot_count() {
                if reached[node as usize] || store.state(node)? != NodeState::Live {
                    continue;
                }
                if self.link_from_nearest(store, node, scratch)? {
                    round += 1;
                    mark_from(store, node, &mut reached)?;
                }
            }
            linked += round;
            if round == 0 {
                break;
            }
        }
        Ok(linked)
    }

    /// Links `node` from its nearest reachable live node at layer 0; false if the graph has
    /// no other live node.
    fn link_from_nearest<S: GraphStore>(&self, store: &mut S, node: NodeId, scratch: &mut Scratch) -> Result<bool> {
        let vector = store.vector(node)?.to_vec();
        let query = self.space().prepare(&vector);
        let Some(entry) = self.descend(&*store, &query, 0, &mut Vec::new())? else { return Ok(false) };
        let ef = self.params().ef_construction;
        let found = self.search_layer(&*store, &query, &[entry], Pass::live(ef, 0), scratch)?;
        let Some(nearest) = found.iter().find(|c| c.node != node).map(|c| c.node) else {
            return Ok(false);
        };
        let capacity = self.capacity(0);
        store.update_neighbours(nearest, 0, |store, list| {
            if list.contains(&node) {
                return Ok(false);
            }
            if list.len() < capacity {
                list.push(node);
                return Ok(true);
            }
            let from = self.space().prepare(store.vector(nearest)?);
            let mut farthest: Option<(Scored, usize)> = None;
            for (i, &n) in list.iter().enumerate() {
                let scored = Scored {
                    distance: self.distance(store, &from, n)?,
                    node: n,
                };
                if farthest.is_none_or(|(f, _)| scored > f) {
                    farthest = Some((scored, i));
                }
            }
            let (_, at) = farthest.expect("a full list has members");
            list[at] = node;
            Ok(true)
        })?;
        Ok(true)
    }
}

/// Which slots a walk of layer 0 from the entry point reaches (through tombstones); `None` in
/// an empty graph.
fn reachable<S: GraphView>(store: &S) -> Result<Option<Vec<bool>>> {
    let Some(entry) = store.entry_point()? else { return Ok(None) };
    let mut reached = vec![false; store.slot_count() as usize];
    mark_from(store, entry, &mut reached)?;
    Ok(Some(reached))
}

/// Marks what a walk of layer 0 from `start` reaches.
fn mark_from<S: GraphView>(store: &S, start: NodeId, reached: &mut [bool]) -> Result<()> {
    let mut queue = VecDeque::from([start]);
    let mut list = Vec::new();
    if let Some(seen) = reached.get_mut(start as usize) {
        *seen = true;
    }
    while let Some(node) = queue.pop_front() {
        if store.state(node)? == NodeState::Free {
            continue;
        }
        store.neighbours(node, 0, &mut list)?;
        for &n in &list {
            if let Some(seen) = reached.get_mut(n as usize)
                && !*seen
            {
                *seen = true;
                queue.push_back(n);
            }
        }
    }
    Ok(())
}
