//! The default `ef` of an index, chosen when it is built: the smallest candidate list that
//! reaches a target recall@k on queries drawn from the data itself.
//!
//! Recall at a given `ef` is a property of the data (random vectors in high dimension need a
//! list ten times longer than clustered embeddings), so no constant suits every store. The
//! queries are a sample of the indexed vectors, each searched leave-one-out: its true
//! neighbours are the `k` nearest *other* vectors (by a brute-force scan of the nodes, in f32),
//! and the search runs on the graph without the query's node (nothing leads to it, and it leads
//! nowhere), so a query is as hard as an unseen vector where that one is. (Searching with the
//! node left in is far easier: the walk reaches the node, whose list is the answer; on random
//! vectors that overstated recall by 0.05.)

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::graph::{GraphView, NodeId};
use super::hnsw::{Admit, Hnsw, Scored, Scratch};
use super::watch::{self, Phase, Watcher};
use crate::Result;

/// The candidate lists tried, in order: each at most 1.5 times the one before, so the list
/// chosen is at most that much longer (and slower) than the one the target needs. (Without
/// 1536, random vectors of dimension 128, which reach recall 0.94 at 1024, got 2048: a third
/// slower than needed.)
pub const EF_CANDIDATES: [usize; 15] = [16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048];


/// One sampled node (its index in the sample) and its true nearest neighbours.
type Neighbours = (usize, Vec<NodeId>);

impl Hnsw {
    /// The smallest of [`EF_CANDIDATES`] whose leave-one-out recall@`k` over (at most)
    /// `queries` of `nodes` (the graph's live nodes, in any order) reaches `target`, or the
    /// largest; with the recall it measured. `threads` scan for the true neighbours.
    pub fn calibrate_ef<S: GraphView + Sync>(
        &self,
        store: &S,
        nodes: &[NodeId],
        calibration: (usize, usize, f64),
        threads: usize,
    ) -> Result<(usize, f64)> {
        let calibrated = self.calibrate_watched(store, nodes, calibration, threads, &mut watch::unwatched)?;
        Ok(calibrated.expect("an unwatched calibration is never stopped"))
    }

    /// [`Hnsw::calibrate_ef`], with `watch` told on this thread how far it has come, in steps
    /// of one sampled query given its true neighbours (about every [`watch::WATCH_INTERVAL`]
    /// while the scan runs) and then of one candidate list tried, out of the sample's size plus
    /// [`EF_CANDIDATES`]'s (the last call says all are done, if fewer lists were needed):
    /// `Ok(None)` if it asked to stop.
    pub fn calibrate_watched<S: GraphView + Sync>(
        &self,
        store: &S,
        nodes: &[NodeId],
        (queries, k, target): (usize, usize, f64),
        threads: usize,
        watch: Watcher<'_>,
    ) -> Result<Option<(usize, f64)>> {
        if nodes.len() <= k + 1 {
            return Ok(Some((self.params().ef_search, 1.0)));
        }
        let step = (nodes.len() / queries.max(1)).max(1);
        let sample: Vec<NodeId> = nodes.iter().step_by(step).take(queries).copied().collect();
        let steps = sample.len() + EF_CANDIDATES.len();
        let mut scan_watch = |done: usize, _: usize| watch(done, steps);
        let Some(truth) = self.true_neighbours(store, nodes, &sample, k, threads, &mut scan_watch)? else {
            return Ok(None);
        };
        let mut scratch = Scratch::new();
        let mut last = (self.params().ef_search, 0.0);
        for (tried, ef) in EF_CANDIDATES.into_iter().enumerate() {
            if !watch(sample.len() + tried, steps) {
                return Ok(None);
            }
            let (mut found, mut wanted) = (0, 0);
            for (&query, truth) in sample.iter().zip(&truth) {
                if store.entry_point()? == Some(query) {
                    continue;
                }
                let without = Without { store, hidden: query };
                let hits = self.search_graph(&without, store.vector(query)?, ef.max(k), Admit::Live, &mut scratch)?;
                found += hits.iter().take(k).filter(|c| truth.contains(&c.node)).count();
                wanted += truth.len();
            }
            let recall = found as f64 / wanted.max(1) as f64;
            last = (ef, recall);
            if recall >= target {
                break;
            }
        }
        Ok(watch(steps, steps).then_some(last))
    }

    /// The `k` nearest other nodes of each of `sample`, by a scan of `nodes` on `threads`,
    /// watched by `watch` (queries done of `sample`): `Ok(None)` if it asked to stop.
    fn true_neighbours<S: GraphView + Sync>(
        &self,
        store: &S,
        nodes: &[NodeId],
        sample: &[NodeId],
        k: usize,
        threads: usize,
        watch: Watcher<'_>,
    ) -> Result<Option<Vec<Vec<NodeId>>>> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Result<Neighbours>>> = Mutex::new(Vec::new());
        let scan = |phase: &Phase| {
            while !phase.stopped() {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&query) = sample.get(i) else { return };
                let found = self.nearest_others(store, nodes, query, k).map(|best| (i, best));
                if found.is_err() {
                    phase.stop();
                }
                results.lock().push(found);
                phase.add_done(1);
            }
        };
        let went_on = watch::run_watched(threads, sample.len(), scan, watch);
        let mut truth = vec![Vec::new(); sample.len()];
        for found in results.into_inner() {
            let (i, nodes) = found?;
            truth[i] = nodes;
        }
        Ok(went_on.then_some(truth))
    }

    /// The `k` nodes of `nodes` nearest `query`, itself left out, nearest first.
    fn nearest_others<S: GraphView>(&self, store: &S, nodes: &[NodeId], query: NodeId, k: usize) -> Result<Vec<NodeId>> {
        let from = self.space().prepare(store.vector(query)?);
        let mut best: Vec<Scored> = Vec::with_capacity(k + 1);
        for &node in nodes.iter().filter(|&&n| n != query) {
            let scored = Scored {
                distance: self.distance(store, &from, node)?,
                node,
            };
            if best.len() < k || best.last().is_some_and(|w| scored < *w) {
                let at = best.partition_point(|b| *b < scored);
                best.insert(at, scored);
                best.truncate(k);
            }
        }
        Ok(best.iter().map(|c| c.node).collect())
    }
}

/// A graph without one node: no list names it and it has none (a query's own node, hidden
/// from its search).
struct Without<'a, S> {
    store: &'a S,
    hidden: NodeId,
}

impl<S: GraphView> GraphView for Without<'_, S> {
    fn dimension(&self) -> usize {
        self.store.dimension()
    }

    fn slot_count(&self) -> NodeId {
        self.store.slot_count()
    }

    fn vector(&self, node: NodeId) -> Result<&[f32]> {
        self.store.vector(node)
    }

    fn state(&self, node: NodeId) -> Result<super::graph::NodeState> {
        if node == self.hidden {
            return Ok(super::graph::NodeState::Free);
        }
        self.store.state(node)
    }

    fn level(&self, node: NodeId) -> Result<u8> {
        self.store.level(node)
    }

    fn neighbours(&self, node: NodeId, layer: u8, out: &mut Vec<NodeId>) -> Result<()> {
        if node == self.hidden {
            out.clear();
            return Ok(());
        }
        self.store.neighbours(node, layer, out)?;
        out.retain(|&n| n != self.hidden);
        Ok(())
    }

    fn entry_point(&self) -> Result<Option<NodeId>> {
        self.store.entry_point()
    }
}
