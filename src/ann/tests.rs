//! Tests of the HNSW index over the in-memory store. Randomised tests print their seed;
//! `VELLUM_ANN_SEED=<n>` replays one.

use std::sync::OnceLock;

use super::*;
use crate::rng::{SplitMix64 as Rng, mix64};
use crate::{Error, Metric};

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| crate::rng::seed_from_env("VELLUM_ANN_SEED", 0xA11_5EED))
}

/// Uniform in [-1, 1).
fn signed(rng: &mut Rng) -> f32 {
    rng.next_f32() * 2.0 - 1.0
}

/// Uniform in `0..n`.
fn below(rng: &mut Rng, n: usize) -> usize {
    rng.below(n as u64) as usize
}

fn random_vectors(rng: &mut Rng, count: usize, dimension: usize) -> Vec<f32> {
    (0..count * dimension).map(|_| signed(rng)).collect()
}

fn params(metric: Metric) -> Params {
    Params {
        metric,
        seed: seed(),
        ..Params::default()
    }
}

/// A graph of `count` random vectors, inserted one by one.
fn inserted(rng: &mut Rng, count: usize, dimension: usize, params: Params) -> (Hnsw, MemoryStore) {
    let hnsw = Hnsw::new(params).unwrap();
    let mut store = MemoryStore::new(dimension, params.m).unwrap();
    let mut scratch = Scratch::new();
    for v in random_vectors(rng, count, dimension).chunks_exact(dimension) {
        let node = store.allocate(v).unwrap();
        hnsw.insert(&mut store, node, &mut scratch).unwrap();
    }
    (hnsw, store)
}

/// Mean recall@k of the index against the exact scan over `queries`.
fn recall(hnsw: &Hnsw, store: &MemoryStore, queries: &[f32], k: usize, ef: Option<usize>) -> f64 {
    let mut scratch = Scratch::new();
    let (mut found, mut wanted) = (0, 0);
    for q in queries.chunks_exact(store.dimension()) {
        let truth = hnsw.exact_search(store, q, k, None).unwrap();
        let got = hnsw.search(store, q, k, ef, &mut scratch).unwrap();
        assert!(
            got.windows(2).all(|w| is_ordered(hnsw, w[0], w[1])),
            "results best first"
        );
        found += got.iter().filter(|h| truth.iter().any(|t| t.node == h.node)).count();
        wanted += truth.len();
    }
    found as f64 / wanted as f64
}

fn is_ordered(hnsw: &Hnsw, a: Hit, b: Hit) -> bool {
    match hnsw.params().metric {
        Metric::L2 => a.score <= b.score,
        Metric::Cosine | Metric::Dot => a.score >= b.score,
    }
}

fn assert_clean(hnsw: &Hnsw, store: &MemoryStore, context: &str) -> CheckReport {
    let report = hnsw.check(store).unwrap();
    assert!(report.is_clean(), "{context}: {:?}", report.problems);
    report
}

#[test]
fn recall_at_10_is_at_least_0_95_at_the_default_ef_for_every_metric() {
    let mut rng = Rng::new(seed());
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        let (hnsw, store) = inserted(&mut rng, 6000, 24, params(metric));
        assert_clean(&hnsw, &store, "after inserts");
        let queries = random_vectors(&mut rng, 100, 24);
        let recall = recall(&hnsw, &store, &queries, 10, None);
        eprintln!("{metric:?}: recall@10 = {recall:.4} at ef {}", hnsw.params().ef_search);
        assert!(recall >= 0.95, "{metric:?}: recall@10 {recall} (seed {})", seed());
    }
}

#[test]
fn a_parallel_build_has_the_recall_of_one_by_one_inserts_and_one_thread_gives_the_same_graph() {
    let mut rng = Rng::new(seed() ^ 1);
    let (dimension, count) = (24, 5000);
    let vectors = random_vectors(&mut rng, count, dimension);
    let hnsw = Hnsw::new(params(Metric::L2)).unwrap();
    let mut one_by_one = MemoryStore::with_vectors(dimension, 16, &vectors).unwrap();
    let mut scratch = Scratch::new();
    for node in 0..count as NodeId {
        hnsw.insert(&mut one_by_one, node, &mut scratch).unwrap();
    }
    for threads in [1, 4] {
        let mut store = MemoryStore::with_vectors(dimension, 16, &vectors).unwrap();
        hnsw.build(&store, threads).unwrap().write_into(&mut store).unwrap();
        assert_clean(&hnsw, &store, "after a parallel build");
        let queries = random_vectors(&mut rng, 100, dimension);
        let recall = recall(&hnsw, &store, &queries, 10, None);
        eprintln!("{threads} threads: recall@10 = {recall:.4}");
        assert!(
            recall >= 0.95,
            "{threads} threads: recall@10 {recall} (seed {})",
            seed()
        );
        if threads == 1 {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for node in 0..count as NodeId {
                for layer in 0..=store.level(node).unwrap() {
                    store.neighbours(node, layer, &mut a).unwrap();
                    one_by_one.neighbours(node, layer, &mut b).unwrap();
                    assert_eq!(a, b, "node {node} layer {layer}: one thread builds what inserts build");
                }
            }
            assert_eq!(store.entry_point().unwrap(), one_by_one.entry_point().unwrap());
        }
    }
}

#[test]
fn a_parallel_build_and_a_vacuum_leave_every_live_node_reachable() {
    for round in 0..6u64 {
        let mut rng = Rng::new(seed() ^ (round << 8));
        let (dimension, count) = (16, 300 + 100 * round as usize);
        let vectors = random_vectors(&mut rng, count, dimension);
        let hnsw = Hnsw::new(params(Metric::L2)).unwrap();
        let mut store = MemoryStore::with_vectors(dimension, 16, &vectors).unwrap();
        hnsw.build(&store, 4).unwrap().write_into(&mut store).unwrap();
        let report = assert_clean(&hnsw, &store, "after a parallel build");
        assert_eq!(report.unreachable_live, 0, "round {round}: every node reachable after a build");
        for node in (0..count as NodeId).step_by(3) {
            hnsw.delete(&mut store, node).unwrap();
        }
        let mut scratch = Scratch::new();
        hnsw.vacuum(&mut store, &mut scratch).unwrap();
        hnsw.reconnect(&mut store, &mut scratch).unwrap();
        let report = assert_clean(&hnsw, &store, "after a vacuum");
        assert_eq!(report.unreachable_live, 0, "round {round}: every node reachable after a vacuum");
    }
}

#[test]
fn levels_are_reproducible_from_the_seed_and_geometric_with_ratio_one_over_m() {
    let hnsw = Hnsw::new(params(Metric::Cosine)).unwrap();
    let again = Hnsw::new(params(Metric::Cosine)).unwrap();
    let other = Hnsw::new(Params {
        seed: seed() ^ 0xFF,
        ..params(Metric::Cosine)
    })
    .unwrap();
    let count = 200_000u32;
    let levels: Vec<u8> = (0..count).map(|n| hnsw.level_for(n)).collect();
    assert!(
        (0..count).all(|n| again.level_for(n) == levels[n as usize]),
        "same seed, same levels"
    );
    assert!(
        (0..count).any(|n| other.level_for(n) != levels[n as usize]),
        "another seed, other levels"
    );
    for level in 1..=3u8 {
        let share = levels.iter().filter(|&&l| l >= level).count() as f64 / f64::from(count);
        let expected = 16f64.powi(-i32::from(level));
        assert!(
            (share - expected).abs() <= 4.0 * (expected / f64::from(count)).sqrt() + 1e-5,
            "level >= {level}: share {share}, expected {expected}"
        );
    }
}

/// The shared graph of the filter tests: 20,000 random vectors.
fn filter_fixture() -> &'static (Hnsw, MemoryStore) {
    static FIXTURE: OnceLock<(Hnsw, MemoryStore)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = Rng::new(seed() ^ 2);
        let (dimension, count) = (16, 20_000);
        let vectors = random_vectors(&mut rng, count, dimension);
        let hnsw = Hnsw::new(params(Metric::L2)).unwrap();
        let mut store = MemoryStore::with_vectors(dimension, 16, &vectors).unwrap();
        hnsw.build(&store, 2).unwrap().write_into(&mut store).unwrap();
        (hnsw, store)
    })
}

/// Property: for selectivities from 0.01% to 100%, with a right or a badly wrong estimate,
/// a filtered search returns exactly min(k, matching) results, all matching, best first.
#[test]
fn filtered_search_returns_min_k_matching_at_every_selectivity() {
    let (hnsw, store) = filter_fixture();
    let mut rng = Rng::new(seed() ^ 3);
    let mut scratch = Scratch::new();
    let slots = store.slot_count();
    let mut plans = Vec::new();
    for per_million in [100u64, 300, 1000, 3000, 10_000, 30_000, 100_000, 300_000, 1_000_000] {
        let salt = rng.next_u64();
        let accepts = move |n: NodeId| mix64(salt ^ u64::from(n)) % 1_000_000 < per_million;
        let matching = (0..slots).filter(|&n| accepts(n)).count();
        for estimate in [matching, slots as usize, 0] {
            let filter = Filter {
                accepts: &accepts,
                matching_estimate: estimate,
            };
            for _ in 0..5 {
                let q: Vec<f32> = (0..store.dimension()).map(|_| signed(&mut rng)).collect();
                let k = 1 + below(&mut rng, 20);
                let (hits, plan) = hnsw.search_filtered(store, &q, k, None, &filter, &mut scratch).unwrap();
                let context = format!("{per_million}/1e6 ({matching} match), estimate {estimate}, k {k}, {plan:?}");
                assert_eq!(hits.len(), k.min(matching), "{context}");
                assert!(hits.iter().all(|h| accepts(h.node)), "{context}: all match");
                assert!(
                    hits.windows(2).all(|w| w[0].score <= w[1].score),
                    "{context}: best first"
                );
                if plan != FilterPlan::Graph {
                    let exact = hnsw.exact_search(store, &q, k, Some(&accepts)).unwrap();
                    assert_eq!(hits, exact, "{context}: a scan is exact");
                }
                plans.push(plan);
            }
        }
    }
    for plan in [FilterPlan::Scan, FilterPlan::Graph, FilterPlan::GraphThenScan] {
        assert!(plans.contains(&plan), "the property covered the {plan:?} plan");
    }
}

#[test]
fn filtered_graph_searches_find_most_of_the_true_neighbours() {
    let (hnsw, store) = filter_fixture();
    let mut rng = Rng::new(seed() ^ 4);
    let mut scratch = Scratch::new();
    let accepts = |n: NodeId| n % 4 == 1;
    let filter = Filter {
        accepts: &accepts,
        matching_estimate: store.slot_count() as usize / 4,
    };
    let (mut found, mut wanted) = (0, 0);
    for _ in 0..50 {
        let q: Vec<f32> = (0..store.dimension()).map(|_| signed(&mut rng)).collect();
        let (hits, plan) = hnsw
            .search_filtered(store, &q, 10, None, &filter, &mut scratch)
            .unwrap();
        assert_eq!(plan, FilterPlan::Graph, "a quarter matching is searched in the graph");
        let exact = hnsw.exact_search(store, &q, 10, Some(&accepts)).unwrap();
        found += hits.iter().filter(|h| exact.contains(h)).count();
        wanted += exact.len();
    }
    let recall = found as f64 / wanted as f64;
    eprintln!("filtered recall@10 at 25% selectivity: {recall:.4}");
    assert!(recall >= 0.95, "filtered recall {recall} (seed {})", seed());
}

#[test]
fn tombstones_are_never_returned_and_check_accepts_lists_naming_them() {
    let mut rng = Rng::new(seed() ^ 5);
    let (hnsw, mut store) = inserted(&mut rng, 2000, 12, params(Metric::Cosine));
    let mut scratch = Scratch::new();
    for node in (0..2000).step_by(3) {
        hnsw.delete(&mut store, node).unwrap();
    }
    let report = assert_clean(&hnsw, &store, "with tombstones");
    assert!(report.edges_to_tombstones > 0, "lists name tombstones until a vacuum");
    assert_eq!(report.deleted, 667);
    for _ in 0..50 {
        let q: Vec<f32> = (0..12).map(|_| signed(&mut rng)).collect();
        let hits = hnsw.search(&store, &q, 10, None, &mut scratch).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| h.node % 3 != 0), "no tombstone is returned");
    }
    let vacuumed = hnsw.vacuum(&mut store, &mut scratch).unwrap();
    assert_eq!(vacuumed.freed, 667);
    let report = assert_clean(&hnsw, &store, "after the vacuum");
    assert_eq!((report.edges_to_tombstones, report.deleted, report.free), (0, 0, 667));
}

#[test]
fn check_reports_a_list_naming_a_free_slot_and_an_overfull_list() {
    let mut rng = Rng::new(seed() ^ 6);
    let (hnsw, mut store) = inserted(&mut rng, 300, 8, params(Metric::L2));
    let free = store.allocate(&[0.5; 8]).unwrap();
    store.set_neighbours(7, 0, &[free, 7]).unwrap();
    let report = hnsw.check(&store).unwrap();
    assert!(
        report.problems.iter().any(|p| p.contains("free slot")),
        "{:?}",
        report.problems
    );
    assert!(
        report.problems.iter().any(|p| p.contains("lists itself")),
        "{:?}",
        report.problems
    );
    let too_many: Vec<NodeId> = (100..133).collect();
    assert!(
        matches!(store.set_neighbours(8, 0, &too_many), Err(Error::InvalidArgument(_))),
        "a list beyond 2M is refused"
    );
}

/// Deletes half the live nodes at random, vacuums, inserts as many new vectors (into the freed
/// slots); returns the live vectors by node.
fn churn_round(rng: &mut Rng, hnsw: &Hnsw, store: &mut MemoryStore, dimension: usize) {
    let mut scratch = Scratch::new();
    let live: Vec<NodeId> = (0..store.slot_count())
        .filter(|&n| store.state(n).unwrap() == NodeState::Live)
        .collect();
    let mut doomed = live.clone();
    for i in 0..doomed.len() {
        let j = i + below(rng, doomed.len() - i);
        doomed.swap(i, j);
    }
    doomed.truncate(live.len() / 2);
    for &node in &doomed {
        hnsw.delete(store, node).unwrap();
    }
    hnsw.vacuum(store, &mut scratch).unwrap();
    for v in random_vectors(rng, doomed.len(), dimension).chunks_exact(dimension) {
        let node = store.allocate(v).unwrap();
        hnsw.insert(store, node, &mut scratch).unwrap();
    }
}

#[test]
fn ten_rounds_of_deleting_half_and_reinserting_keep_the_size_and_the_recall() {
    let mut rng = Rng::new(seed() ^ 7);
    let (dimension, count) = (32, 4000);
    let params = params(Metric::L2);
    let (hnsw, mut store) = inserted(&mut rng, count, dimension, params);
    let queries = random_vectors(&mut rng, 200, dimension);
    // Recall at ef = k (10) is well below 1 here, so a worse graph shows.
    let fresh = recall(&hnsw, &store, &queries, 10, Some(10));
    for round in 1..=10 {
        churn_round(&mut rng, &hnsw, &mut store, dimension);
        let report = assert_clean(&hnsw, &store, &format!("round {round}"));
        assert_eq!(report.live, count, "round {round}");
        assert!(
            store.slots() as f64 <= 1.2 * count as f64,
            "round {round}: {} slots for {count} nodes",
            store.slots()
        );
    }
    let churned = recall(&hnsw, &store, &queries, 10, Some(10));
    let churned_default = recall(&hnsw, &store, &queries, 10, None);
    // The same live vectors, built afresh.
    let live: Vec<f32> = (0..store.slot_count())
        .filter(|&n| store.state(n).unwrap() == NodeState::Live)
        .flat_map(|n| GraphView::vector(&store, n).unwrap().to_vec())
        .collect();
    let mut rebuilt = MemoryStore::with_vectors(dimension, params.m, &live).unwrap();
    hnsw.build(&rebuilt, 1).unwrap().write_into(&mut rebuilt).unwrap();
    let rebuilt_recall = recall(&hnsw, &rebuilt, &queries, 10, Some(10));
    let report = hnsw.check(&store).unwrap();
    eprintln!(
        "recall@10 at ef 10: fresh {fresh:.4}, after 10 rounds {churned:.4}, rebuilt {rebuilt_recall:.4}; \
         at ef {}: {churned_default:.4}; {} slots, {} unreachable",
        params.ef_search,
        store.slots(),
        report.unreachable_live
    );
    assert!(
        churned_default >= 0.95,
        "recall after churn {churned_default} (seed {})",
        seed()
    );
    assert!(
        churned >= rebuilt_recall - 0.03,
        "churned {churned} vs rebuilt {rebuilt_recall} at ef 10 (seed {})",
        seed()
    );
}

#[test]
fn deleting_every_node_empties_the_graph_and_it_takes_inserts_again() {
    let mut rng = Rng::new(seed() ^ 8);
    let (hnsw, mut store) = inserted(&mut rng, 200, 8, params(Metric::Dot));
    let mut scratch = Scratch::new();
    let entry = store.entry_point().unwrap().unwrap();
    hnsw.delete(&mut store, entry).unwrap();
    let report = hnsw.vacuum(&mut store, &mut scratch).unwrap();
    assert!(report.entry_point_moved, "the entry point moved off its tombstone");
    assert_clean(&hnsw, &store, "after deleting the entry point");
    for node in 0..200 {
        if store.state(node).unwrap() == NodeState::Live {
            hnsw.delete(&mut store, node).unwrap();
        }
    }
    let q = [0.25f32; 8];
    assert!(
        hnsw.search(&store, &q, 5, None, &mut scratch).unwrap().is_empty(),
        "all tombstones"
    );
    hnsw.vacuum(&mut store, &mut scratch).unwrap();
    assert_eq!(store.entry_point().unwrap(), None);
    assert_clean(&hnsw, &store, "empty");
    let node = store.allocate(&q).unwrap();
    hnsw.insert(&mut store, node, &mut scratch).unwrap();
    let hits = hnsw.search(&store, &q, 5, None, &mut scratch).unwrap();
    assert_eq!(hits.iter().map(|h| h.node).collect::<Vec<_>>(), [node]);
}

#[test]
fn nodes_inserted_while_every_other_node_is_a_tombstone_are_found() {
    let mut rng = Rng::new(seed() ^ 11);
    let (hnsw, mut store) = inserted(&mut rng, 300, 8, params(Metric::L2));
    let mut scratch = Scratch::new();
    for node in 0..300 {
        hnsw.delete(&mut store, node).unwrap();
    }
    let fresh = random_vectors(&mut rng, 40, 8);
    let mut nodes = Vec::new();
    for v in fresh.chunks_exact(8) {
        let node = store.allocate(v).unwrap();
        hnsw.insert(&mut store, node, &mut scratch).unwrap();
        nodes.push(node);
    }
    assert_clean(&hnsw, &store, "new nodes among tombstones");
    for (v, &node) in fresh.chunks_exact(8).zip(&nodes) {
        let hits = hnsw.search(&store, v, 1, None, &mut scratch).unwrap();
        assert_eq!(hits[0].node, node, "a new node is reachable before any vacuum");
    }
    hnsw.vacuum(&mut store, &mut scratch).unwrap();
    let report = assert_clean(&hnsw, &store, "after the vacuum");
    assert_eq!((report.live, report.unreachable_live), (40, 0));
}

#[test]
fn bad_queries_and_vectors_are_refused_with_invalid_argument() {
    let mut rng = Rng::new(seed() ^ 9);
    let (hnsw, mut store) = inserted(&mut rng, 50, 8, params(Metric::Cosine));
    let mut scratch = Scratch::new();
    let bad = |r: crate::Result<Vec<Hit>>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(
        bad(hnsw.search(&store, &[0.0; 7], 5, None, &mut scratch)),
        "wrong dimension"
    );
    let mut nan = [0.0f32; 8];
    nan[3] = f32::NAN;
    assert!(bad(hnsw.search(&store, &nan, 5, None, &mut scratch)), "NaN component");
    assert!(bad(hnsw.search(&store, &[0.0; 8], 0, None, &mut scratch)), "k = 0");
    assert!(bad(hnsw.exact_search(&store, &[0.0; 8], 0, None)), "k = 0, exact");
    let before = store.slots();
    assert!(
        matches!(store.allocate(&[f32::INFINITY; 8]), Err(Error::InvalidArgument(_))),
        "an infinite vector"
    );
    assert!(
        matches!(store.allocate(&[1.0; 9]), Err(Error::InvalidArgument(_))),
        "a vector of the wrong dimension"
    );
    assert_eq!(store.slots(), before, "refused vectors take no slot");
    assert!(
        matches!(
            Hnsw::new(Params {
                m: 1,
                ..Params::default()
            }),
            Err(Error::InvalidArgument(_))
        ),
        "M = 1"
    );
    assert!(
        matches!(hnsw.delete(&mut store, 10_000), Err(Error::InvalidArgument(_))),
        "no such node"
    );
}

#[test]
fn search_scores_equal_the_exact_scan_scores() {
    let mut rng = Rng::new(seed() ^ 10);
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        let (hnsw, store) = inserted(&mut rng, 500, 10, params(metric));
        let mut scratch = Scratch::new();
        let q: Vec<f32> = (0..10).map(|_| signed(&mut rng)).collect();
        let hits = hnsw.search(&store, &q, 10, Some(500), &mut scratch).unwrap();
        let exact = hnsw.exact_search(&store, &q, 10, None).unwrap();
        assert_eq!(hits, exact, "{metric:?}: with ef = all nodes, the search is the scan");
    }
}

#[test]
fn ef_candidates_grow_by_at_most_half_at_each_step() {
    for pair in EF_CANDIDATES.windows(2) {
        assert!(
            pair[0] < pair[1] && 2 * pair[1] <= 3 * pair[0],
            "{} after {}: the chosen ef may overshoot the needed one by more than 1.5x",
            pair[1],
            pair[0]
        );
    }
}

#[test]
fn calibration_returns_a_candidate_that_reaches_its_target_recall_on_fresh_queries() {
    let mut rng = Rng::new(seed());
    let (hnsw, store) = inserted(&mut rng, 3000, 16, params(Metric::L2));
    let nodes: Vec<NodeId> = (0..store.slot_count()).collect();
    let (ef, measured) = hnsw.calibrate_ef(&store, &nodes, (100, 10, 0.96), 2).unwrap();
    eprintln!("calibrated ef {ef}, leave-one-out recall@10 {measured:.4}");
    let last = *EF_CANDIDATES.last().unwrap();
    assert!(EF_CANDIDATES.contains(&ef), "ef {ef} is one of the candidates");
    assert!(measured >= 0.96 || ef == last, "ef {ef} reached {measured} (seed {})", seed());
    // A target every candidate reaches picks the first; one none reaches, the last.
    let (first, _) = hnsw.calibrate_ef(&store, &nodes, (100, 10, 0.0), 2).unwrap();
    assert_eq!(first, EF_CANDIDATES[0], "the smallest candidate reaches recall 0");
    let (largest, _) = hnsw.calibrate_ef(&store, &nodes, (100, 10, 1.5), 2).unwrap();
    assert_eq!(largest, last, "no candidate reaches recall 1.5: the largest is returned");
    let queries = random_vectors(&mut rng, 100, 16);
    let recall = recall(&hnsw, &store, &queries, 10, Some(ef));
    assert!(recall >= 0.9, "recall@10 {recall} at the calibrated ef {ef} (seed {})", seed());
}
