//! The graph's invariants, checked over a whole store (for tests, and for `verify` once the
//! graph is on pages).

use std::collections::VecDeque;

use super::graph::{GraphView, NodeId, NodeState};
use super::hnsw::Hnsw;
use crate::Result;

/// Problems listed in a report at most (the count goes on).
const PROBLEMS_LISTED_MAX: usize = 100;

/// What [`Hnsw::check`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub live: usize,
    pub deleted: usize,
    pub free: usize,
    /// Neighbour ids in all lists.
    pub edges: usize,
    /// Of those, ids of tombstones (allowed: a vacuum repairs them).
    pub edges_to_tombstones: usize,
    /// Live nodes that a walk of layer 0 from the entry point does not reach. Allowed (HNSW
    /// does not promise every node is reachable) but a measure of the graph's health.
    pub unreachable_live: usize,
    /// Broken invariants, the first [`PROBLEMS_LISTED_MAX`] of them described.
    pub problems: Vec<String>,
    pub problem_count: usize,
}

impl CheckReport {
    fn problem(&mut self, text: String) {
        self.problem_count += 1;
        if self.problems.len() < PROBLEMS_LISTED_MAX {
            self.problems.push(text);
        }
    }

    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }
}

impl Hnsw {
    /// Checks that every list of every live or deleted node holds at most its layer's
    /// capacity of distinct ids, each naming another node that is live or a tombstone (never
    /// a free slot) and has that layer; that the entry point is a node of the highest level;
    /// and counts the live nodes a walk of layer 0 from the entry point misses.
    pub fn check<S: GraphView>(&self, store: &S) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let slots = store.slot_count();
        let mut level_max: Option<u8> = None;
        let mut list = Vec::new();
        for node in 0..slots {
            match store.state(node)? {
                NodeState::Free => {
                    report.free += 1;
                    continue;
                }
                NodeState::Live => report.live += 1,
                NodeState::Deleted => report.deleted += 1,
            }
            let level = store.level(node)?;
            level_max = level_max.max(Some(level));
            for layer in 0..=level {
                store.neighbours(node, layer, &mut list)?;
                self.check_list(store, node, layer, &list, &mut report)?;
            }
        }
        self.check_entry_point(store, level_max, &mut report)?;
        report.unreachable_live = report.live - reachable_live(store)?;
        Ok(report)
    }

    fn check_list<S: GraphView>(
        &self,
        store: &S,
        node: NodeId,
        layer: u8,
        list: &[NodeId],
        report: &mut CheckReport,
    ) -> Result<()> {
        if list.len() > self.capacity(layer) {
            report.problem(format!(
                "node {node} has {} neighbours at layer {layer}, more than {}",
                list.len(),
                self.capacity(layer)
            ));
        }
        for (i, &n) in list.iter().enumerate() {
            report.edges += 1;
            if n >= store.slot_count() {
                report.problem(format!("node {node} layer {layer}: neighbour {n} is beyond the slots"));
                continue;
            }
            if n == node {
                report.problem(format!("node {node} layer {layer}: lists itself"));
            }
            if list[..i].contains(&n) {
                report.problem(format!("node {node} layer {layer}: lists {n} twice"));
            }
            match store.state(n)? {
                NodeState::Free => report.problem(format!("node {node} layer {layer}: neighbour {n} is a free slot")),
                NodeState::Deleted => report.edges_to_tombstones += 1,
                NodeState::Live => {}
            }
            if store.state(n)? != NodeState::Free && store.level(n)? < layer {
                report.problem(format!("node {node} layer {layer}: neighbour {n} has no layer {layer}"));
            }
        }
        Ok(())
    }

    fn check_entry_point<S: GraphView>(
        &self,
        store: &S,
        level_max: Option<u8>,
        report: &mut CheckReport,
    ) -> Result<()> {
        match (store.entry_point()?, level_max) {
            (None, None) => {}
            (None, Some(_)) => report.problem("the graph has nodes but no entry point".into()),
            (Some(entry), _) if entry >= store.slot_count() || store.state(entry)? == NodeState::Free => {
                report.problem(format!("the entry point {entry} is not a node"));
            }
            (Some(entry), level_max) => {
                let level = store.level(entry)?;
                if Some(level) != level_max {
                    report.problem(format!(
                        "the entry point {entry} has level {level}, the highest node {level_max:?}"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How many live nodes a breadth-first walk of layer 0 from the entry point reaches (through
/// tombstones too).
fn reachable_live<S: GraphView>(store: &S) -> Result<usize> {
    let Some(entry) = store.entry_point()? else {
        return Ok(0);
    };
    let slots = store.slot_count() as usize;
    if entry as usize >= slots || store.state(entry)? == NodeState::Free {
        return Ok(0);
    }
    let mut seen = vec![false; slots];
    let mut queue = VecDeque::from([entry]);
    seen[entry as usize] = true;
    let (mut live, mut list) = (0, Vec::new());
    while let Some(node) = queue.pop_front() {
        live += usize::from(store.state(node)? == NodeState::Live);
        store.neighbours(node, 0, &mut list)?;
        for &n in &list {
            let fresh = seen.get(n as usize).is_some_and(|s| !s) && store.state(n)? != NodeState::Free;
            if fresh {
                seen[n as usize] = true;
                queue.push_back(n);
            }
        }
    }
    Ok(live)
}
