//! Filtered search: the `k` nearest among the nodes a predicate accepts, always
//! `min(k, matching)` of them.
//!
//! A graph search that returns only matching nodes must traverse about `1/s` times as many
//! nodes as an unfiltered one to find as many results (`s` the fraction that matches), while a
//! scan of the matches scores `s·N` vectors (and asks the predicate about every slot, which is
//! much cheaper than a distance). Per result, the graph costs about `M` distances per node it
//! expands, so with `E` matches expected the graph costs about `M·ef·N/E` distances and the
//! scan `E`: the scan wins below `E² < M·ef·N`. With `N = 10^6`, `M = 16`, `ef = 64` that is
//! about 3% of the nodes; with `N = 10^4`, about 30%.
//!
//! Above the threshold the layer-0 search admits only matching nodes to its result list and
//! keeps expanding through the others until it holds `ef` matches or runs out of reachable
//! nodes: it widens by itself as the matches thin out. Should it still find fewer than `k`
//! (the estimate was too high, or the matches are not reachable from the entry point), the
//! exact scan answers instead, so the count is always `min(k, matching)`.

use super::graph::{GraphView, NodeId};
use super::hnsw::{Admit, Hit, Hnsw, Scratch};
use crate::Result;

/// Which nodes a filtered search may return.
pub struct Filter<'f> {
    /// Accepts the nodes that match (called for live nodes only).
    pub accepts: &'f dyn Fn(NodeId) -> bool,
    /// About how many live nodes match (a count from metadata statistics, say); it only
    /// chooses between the graph and a scan, never changes how many results come back.
    pub matching_estimate: usize,
}

/// How a filtered search was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterPlan {
    /// A scan of every slot, scoring the matches exactly (few matches expected).
    Scan,
    /// The graph, and it found at least `k` matches.
    Graph,
    /// The graph found fewer than `k`, so a scan answered.
    GraphThenScan,
}

impl Hnsw {
    /// The `k` live nodes nearest `query` that `filter` accepts: `min(k, matching)` of them,
    /// best first with exact scores, with the plan that answered.
    pub fn search_filtered<S: GraphView>(
        &self,
        store: &S,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: &Filter<'_>,
        scratch: &mut Scratch,
    ) -> Result<(Vec<Hit>, FilterPlan)> {
        self.check_query(store, query, k)?;
        let ef = ef.unwrap_or(self.params().ef_search).max(k);
        if self.scan_is_cheaper(store.slot_count(), ef, filter.matching_estimate) {
            return Ok((
                self.exact_search(store, query, k, Some(filter.accepts))?,
                FilterPlan::Scan,
            ));
        }
        let found = self.search_filtered_graph(store, query, ef, filter.accepts, scratch)?;
        if found.len() >= k {
            return Ok((found.into_iter().take(k).collect(), FilterPlan::Graph));
        }
        let hits = self.exact_search(store, query, k, Some(filter.accepts))?;
        Ok((hits, FilterPlan::GraphThenScan))
    }

    /// True if scanning the expected matches costs less than finding them by the graph.
    pub fn scan_is_cheaper(&self, slots: NodeId, ef: usize, matching_estimate: usize) -> bool {
        let expected = matching_estimate as f64;
        expected * expected < self.params().m as f64 * ef as f64 * f64::from(slots)
    }

    fn search_filtered_graph<S: GraphView>(
        &self,
        store: &S,
        query: &[f32],
        ef: usize,
        accepts: &dyn Fn(NodeId) -> bool,
        scratch: &mut Scratch,
    ) -> Result<Vec<Hit>> {
        let found = self.search_graph(store, query, ef, Admit::Filter(accepts), scratch)?;
        self.rescore(store, query, &found, found.len())
    }
}
