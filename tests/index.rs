//! The approximate-search index (issue 19) through the public API: recall against the exact
//! scan, updates kept current in their transactions, read-committed searches, aborted inserts,
//! deletes repaired and their space given back, filtered searches, reopening, errors.
//!
//! Randomised tests print their seed; `VELLUM_INDEX_SEED=<n>` replays one.

mod support;

use std::collections::HashSet;
use std::path::Path;

use support::{Rng, seed_from_env};
use vellum::{Error, IndexOptions, Metric, Options, SearchOptions, Store};

const DIMENSION: usize = 16;

fn options() -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 20,
        ..Options::default()
    }
}

fn random_vector(rng: &mut Rng) -> Vec<f32> {
    (0..DIMENSION).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

/// A store of `count` random vectors `v0`, `v1`, … (metadata `color`: `red` for every 20th,
/// else `blue`), committed in batches.
fn filled(dir: &Path, rng: &mut Rng, count: usize) -> Store {
    let store = Store::create(dir, DIMENSION as u32, options()).unwrap();
    for batch in (0..count).collect::<Vec<_>>().chunks(500) {
        let mut tx = store.begin().unwrap();
        for &i in batch {
            let color = if i % 20 == 0 { "red" } else { "blue" };
            tx.insert(&format!("v{i}"), &random_vector(rng), &[("color", color)])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    store
}

fn l2_index() -> IndexOptions {
    IndexOptions {
        metric: Metric::L2,
        ..IndexOptions::default()
    }
}

/// Mean recall@k of `store.search` (the index) against the exact scan over `queries`.
fn recall(store: &Store, queries: &[Vec<f32>], k: usize, metric: Metric) -> f64 {
    let (mut found, mut wanted) = (0, 0);
    for query in queries {
        let exact = SearchOptions {
            metric,
            exact: true,
            ..SearchOptions::default()
        };
        let truth: HashSet<String> = store
            .search_with(query, k, &exact)
            .unwrap()
            .into_iter()
            .map(|h| h.0)
            .collect();
        let got = store.search(query, k, metric).unwrap();
        assert_eq!(got.len(), truth.len(), "the index returns min(k, len) results");
        found += got.iter().filter(|(id, _)| truth.contains(id)).count();
        wanted += truth.len();
    }
    found as f64 / wanted as f64
}

fn assert_index_clean(store: &Store, context: &str) -> u64 {
    let check = store.check_index().unwrap().expect("the store has an index");
    assert!(check.problems.is_empty(), "{context}: {:?}", check.problems);
    check.live
}

#[test]
fn recall_at_10_is_at_least_0_95_and_scores_are_the_exact_scans() {
    let mut rng = Rng::new(seed_from_env("VELLUM_INDEX_SEED", 19));
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path(), &mut rng, 3000);
    store.create_index(l2_index()).unwrap();
    assert_eq!(assert_index_clean(&store, "after the build"), 3000);
    let queries: Vec<Vec<f32>> = (0..100).map(|_| random_vector(&mut rng)).collect();
    let recall = recall(&store, &queries, 10, Metric::L2);
    eprintln!("recall@10 = {recall:.4}");
    assert!(recall >= 0.95, "recall@10 {recall}");
    // A hit's score is the exact scan's score for that vector.
    let query = &queries[0];
    let exact = store
        .search_with(
            query,
            3000,
            &SearchOptions {
                metric: Metric::L2,
                exact: true,
                ..SearchOptions::default()
            },
        )
        .unwrap();
    for (id, score) in store.search(query, 10, Metric::L2).unwrap() {
        let truth = exact.iter().find(|h| h.0 == id).unwrap().1;
        assert_eq!(score.to_bits(), truth.to_bits(), "{id}: the index scores exactly");
    }
}

#[test]
fn writes_after_the_build_are_found_and_an_aborted_insert_never_is() {
    let mut rng = Rng::new(seed_from_env("VELLUM_INDEX_SEED", 7));
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path(), &mut rng, 400);
    store.create_index(l2_index()).unwrap();
    let mut inserted = Vec::new();
    for i in 0..300 {
        let vector = random_vector(&mut rng);
        store.insert(&format!("new{i}"), &vector, &[]).unwrap();
        inserted.push((format!("new{i}"), vector));
    }
    for (id, vector) in &inserted {
        assert_eq!(
            &store.search(vector, 1, Metric::L2).unwrap()[0].0,
            id,
            "{id} is its own nearest"
        );
    }
    let far: Vec<f32> = vec![50.0; DIMENSION];
    let mut tx = store.begin().unwrap();
    tx.insert("aborted", &far, &[]).unwrap();
    tx.upsert("new0", &far, &[]).unwrap();
    // Readers do not see the transaction's writes while it runs...
    let hits = store.search(&far, 2, Metric::L2).unwrap();
    assert!(
        hits.iter().all(|h| h.0 != "aborted"),
        "an uncommitted insert is invisible: {hits:?}"
    );
    let new0 = store.search(&inserted[0].1, 1, Metric::L2).unwrap();
    assert_eq!(
        (new0[0].0.as_str(), new0[0].1),
        ("new0", 0.0),
        "the replaced vector is still the committed one"
    );
    tx.abort().unwrap();
    // ...nor after its abort.
    let hits = store.search(&far, 5, Metric::L2).unwrap();
    assert!(
        hits.iter().all(|h| h.0 != "aborted"),
        "an aborted insert is never found: {hits:?}"
    );
    assert_eq!(store.search(&inserted[0].1, 1, Metric::L2).unwrap()[0].1, 0.0);
    assert_eq!(assert_index_clean(&store, "after the abort"), 700);
    let mut tx = store.begin().unwrap();
    tx.insert("committed", &far, &[]).unwrap();
    tx.commit().unwrap();
    assert_eq!(store.search(&far, 1, Metric::L2).unwrap()[0].0, "committed");
}

#[test]
fn deletes_and_upserts_keep_recall_and_vacuums_give_the_space_back() {
    let mut rng = Rng::new(seed_from_env("VELLUM_INDEX_SEED", 3));
    let dir = tempfile::tempdir().unwrap();
    let count = 1200;
    let store = filled(dir.path(), &mut rng, count);
    store.create_index(l2_index()).unwrap();
    let fresh_size = store.index_info().unwrap().unwrap().size_bytes;
    let queries: Vec<Vec<f32>> = (0..50).map(|_| random_vector(&mut rng)).collect();
    let mut ids: Vec<String> = (0..count).map(|i| format!("v{i}")).collect();
    let mut next = count;
    for round in 0..10 {
        // Half the vectors deleted, as many inserted, some replaced by upserts.
        let mut tx = store.begin().unwrap();
        for _ in 0..count / 2 {
            let at = rng.below(ids.len() as u64) as usize;
            assert!(tx.delete(&ids.swap_remove(at)).unwrap());
        }
        tx.commit().unwrap();
        let mut tx = store.begin().unwrap();
        for _ in 0..count / 2 {
            tx.insert(&format!("v{next}"), &random_vector(&mut rng), &[]).unwrap();
            ids.push(format!("v{next}"));
            next += 1;
        }
        for _ in 0..20 {
            let id = &ids[rng.below(ids.len() as u64) as usize];
            tx.upsert(id, &random_vector(&mut rng), &[]).unwrap();
        }
        tx.commit().unwrap();
        let info = store.index_info().unwrap().unwrap();
        assert_eq!(assert_index_clean(&store, &format!("round {round}")), count as u64);
        assert!(
            info.size_bytes as f64 <= 1.2 * fresh_size as f64,
            "round {round}: the index takes {} bytes, a fresh build {fresh_size}",
            info.size_bytes
        );
    }
    let recall = recall(&store, &queries, 10, Metric::L2);
    eprintln!("recall@10 after 10 rounds = {recall:.4}");
    assert!(recall >= 0.95, "recall@10 after churn {recall}");
}

#[test]
fn a_vacuum_frees_every_tombstone_and_their_slots_are_reused() {
    let mut rng = Rng::new(seed_from_env("VELLUM_INDEX_SEED", 5));
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path(), &mut rng, 600);
    store.create_index(l2_index()).unwrap();
    // Fewer tombstones than start a vacuum by themselves.
    for i in 0..20 {
        store.delete(&format!("v{i}")).unwrap();
    }
    let info = store.index_info().unwrap().unwrap();
    assert_eq!((info.live, info.deleted), (580, 20));
    assert_eq!(store.vacuum_index().unwrap(), 20, "a vacuum frees every tombstone");
    let check = store.check_index().unwrap().unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!((check.live, check.deleted, check.edges_to_tombstones), (580, 0, 0));
    let pages_before = store.index_info().unwrap().unwrap().node_pages;
    for i in 0..20 {
        store
            .insert(&format!("again{i}"), &random_vector(&mut rng), &[])
            .unwrap();
    }
    assert_eq!(
        store.index_info().unwrap().unwrap().node_pages,
        pages_before,
        "new vectors take the freed slots: the index does not grow"
    );
    assert_eq!(assert_index_clean(&store, "after reuse"), 600);
}

#[test]
fn filtered_searches_return_k_rows_when_k_match() {
    let mut rng = Rng::new(seed_from_env("VELLUM_INDEX_SEED", 11));
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path(), &mut rng, 2000);
    store.create_index(l2_index()).unwrap();
    for _ in 0..20 {
        let query = random_vector(&mut rng);
        for (color, k) in [("red", 10), ("red", 200), ("blue", 10), ("green", 10)] {
            let options = SearchOptions {
                metric: Metric::L2,
                filter: Some(("color", color)),
                ..SearchOptions::default()
            };
            let got = store.search_with(&query, k, &options).unwrap();
            let exact = store
                .search_with(&query, k, &SearchOptions { exact: true, ..options })
                .unwrap();
            assert_eq!(got.len(), exact.len(), "{color}, k {k}: min(k, matching) rows");
            let truth: HashSet<&String> = exact.iter().map(|h| &h.0).collect();
            let hits = got.iter().filter(|h| truth.contains(&h.0)).count();
            assert!(
                hits * 10 >= got.len() * 9,
                "{color}, k {k}: {hits} of {} are the exact ones",
                got.len()
            );
        }
    }
}

#[test]
fn the_index_survives_a_reopen_and_open_reads_no_more_than_its_meta_page() {
    let mut rng = Rng::new(seed_from_env("VELLUM_INDEX_SEED", 13));
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path(), &mut rng, 800);
    store.create_index(l2_index()).unwrap();
    let info = store.index_info().unwrap().unwrap();
    let query = random_vector(&mut rng);
    let before = store.search(&query, 10, Metric::L2).unwrap();
    store.close().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert_eq!(store.index_info().unwrap().unwrap(), info);
    assert_eq!(store.search(&query, 10, Metric::L2).unwrap(), before);
    drop(store);
    let store = Store::open_read_only(dir.path(), options()).unwrap();
    assert_eq!(
        store.search(&query, 10, Metric::L2).unwrap(),
        before,
        "read-only opens use it too"
    );
    assert_index_clean(&store, "read-only");
}

#[test]
fn index_errors_are_typed_and_change_nothing() {
    let mut rng = Rng::new(seed_from_env("VELLUM_INDEX_SEED", 17));
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path(), &mut rng, 100);
    assert!(
        matches!(store.drop_index(), Err(Error::NotFound(_))),
        "no index to drop"
    );
    let too_wide = IndexOptions { m: 67, ..l2_index() };
    assert!(
        matches!(store.create_index(too_wide), Err(Error::InvalidArgument(_))),
        "M 67 does not fit 4 KiB pages"
    );
    let no_ef = IndexOptions {
        ef_construction: 0,
        ..l2_index()
    };
    assert!(
        matches!(store.create_index(no_ef), Err(Error::InvalidArgument(_))),
        "an ef_construction of 0 is refused as bad input"
    );
    assert!(store.index_info().unwrap().is_none(), "failed creations leave no index");
    store.create_index(l2_index()).unwrap();
    assert!(
        matches!(store.create_index(l2_index()), Err(Error::AlreadyExists)),
        "one index per store"
    );
    let query = random_vector(&mut rng);
    assert!(
        matches!(store.search(&query[..3], 1, Metric::L2), Err(Error::InvalidArgument(_))),
        "a query of the wrong dimension is refused as bad input"
    );
    assert!(
        matches!(store.search(&query, 0, Metric::L2), Err(Error::InvalidArgument(_))),
        "k = 0 is refused as bad input"
    );
    // Another metric scans: the exact answer.
    let cosine = store.search(&query, 5, Metric::Cosine).unwrap();
    let exact = store
        .search_with(
            &query,
            5,
            &SearchOptions {
                exact: true,
                ..SearchOptions::default()
            },
        )
        .unwrap();
    assert_eq!(cosine, exact);
    store.drop_index().unwrap();
    assert!(store.index_info().unwrap().is_none());
    assert_eq!(
        store.search(&query, 100, Metric::L2).unwrap().len(),
        100,
        "after a drop, searches scan"
    );
    store.create_index(IndexOptions { m: 8, ..l2_index() }).unwrap();
    assert_eq!(assert_index_clean(&store, "rebuilt"), 100);
}

/// Rewrites the graph meta page of the closed store in `dir` (4 KiB pages, files of 256 pages)
/// with `change` applied to its fields, resealed: damage only the index's own checks can see.
fn edit_graph_fields(dir: &Path, change: impl FnOnce(&mut vellum::format::graph::GraphFields)) {
    use vellum::format::graph::{GRAPH_FIELDS_OFFSET, GraphFields};
    use vellum::format::index::MetaFields;
    use zerocopy::IntoBytes;
    const PAGE_BYTES: usize = 4096;
    let pages_per_file = options().segment_size_bytes as usize / PAGE_BYTES;
    let file_of = |page: usize| {
        dir.join("arena")
            .join(format!("catalog-{:08x}.pages", page / pages_per_file))
    };
    let meta = std::fs::read(file_of(0)).unwrap();
    let graph = MetaFields::read(&meta[..PAGE_BYTES]).unwrap().graph.get() as usize;
    assert!(graph != 0, "the store has an index");
    let path = file_of(graph);
    let mut file = std::fs::read(&path).unwrap();
    let at = graph % pages_per_file * PAGE_BYTES;
    let image = &mut file[at..at + PAGE_BYTES];
    let mut fields = GraphFields::read(image).unwrap();
    change(&mut fields);
    image[GRAPH_FIELDS_OFFSET..GRAPH_FIELDS_OFFSET + size_of::<GraphFields>()].copy_from_slice(fields.as_bytes());
    vellum::format::page::seal(image);
    std::fs::write(&path, &file).unwrap();
}

#[test]
fn a_graph_meta_count_below_its_tombstones_is_corruption_at_vacuum_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(seed_from_env("VELLUM_INDEX_SEED", 23));
    let store = filled(dir.path(), &mut rng, 60);
    store.create_index(l2_index()).unwrap();
    assert!(store.delete("v7").unwrap(), "v7 was stored");
    store.close().unwrap();
    // The tombstone of v7 stays, but the meta page counts no deleted node.
    edit_graph_fields(dir.path(), |fields| fields.deleted = 0.into());
    let store = Store::open(dir.path(), options()).unwrap();
    let vacuumed = store.vacuum_index();
    assert!(
        matches!(vacuumed, Err(Error::Corrupted { .. })),
        "freeing a tombstone the meta page does not count is damage, not an underflow: {vacuumed:?}"
    );
}

/// `create_index_watched` reports every phase in order, each ending at its total, and a watcher
/// that stops the build in any phase (the linking on every core, the calibration's scan, or
/// with the graph's pages already in the transaction) leaves no index and the store as it was,
/// after a reopen too.
#[test]
fn an_index_build_its_watcher_stops_in_any_phase_keeps_nothing() {
    use std::ops::ControlFlow;
    use vellum::{IndexBuildPhase, IndexBuildProgress};
    let mut rng = Rng::new(seed_from_env("VELLUM_INDEX_SEED", 23));
    let dir = tempfile::tempdir().unwrap();
    let store = filled(dir.path(), &mut rng, 3000);
    let mut reports: Vec<IndexBuildProgress> = Vec::new();
    let mut record = |progress: IndexBuildProgress| {
        assert!(progress.done <= progress.total, "{progress:?}");
        reports.push(progress);
        ControlFlow::Continue(())
    };
    store.create_index_watched(l2_index(), &mut record).unwrap();
    let phases = [
        IndexBuildPhase::Linking,
        IndexBuildPhase::Calibrating,
        IndexBuildPhase::Writing,
    ];
    let order = |p: &IndexBuildProgress| phases.iter().position(|q| *q == p.phase).unwrap();
    assert!(
        reports.windows(2).all(|w| order(&w[0]) <= order(&w[1])),
        "phases in order: {reports:?}"
    );
    for phase in phases {
        let last = reports
            .iter()
            .rev()
            .find(|p| p.phase == phase)
            .expect("every phase is reported");
        assert_eq!(last.done, last.total, "{phase:?} ends at its total");
    }
    assert_eq!(
        reports
            .iter()
            .find(|p| p.phase == IndexBuildPhase::Linking)
            .unwrap()
            .total,
        3000
    );
    assert_eq!(assert_index_clean(&store, "built watched"), 3000);
    store.drop_index().unwrap();
    let queries: Vec<Vec<f32>> = (0..5).map(|_| random_vector(&mut rng)).collect();
    let scanned: Vec<_> = queries
        .iter()
        .map(|q| store.search(q, 10, Metric::L2).unwrap())
        .collect();
    for (phase, at_call) in [
        (IndexBuildPhase::Linking, 0),
        (IndexBuildPhase::Calibrating, 0),
        (IndexBuildPhase::Writing, 0),
        (IndexBuildPhase::Writing, 1),
    ] {
        let mut calls = 0;
        let mut stop = |progress: IndexBuildProgress| {
            if progress.phase != phase {
                return ControlFlow::Continue(());
            }
            calls += 1;
            if calls > at_call {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        let result = store.create_index_watched(l2_index(), &mut stop);
        assert!(
            matches!(result, Err(Error::Interrupted(_))),
            "a build stopped in {phase:?} at call {at_call} says so: {result:?}"
        );
        assert!(store.index_info().unwrap().is_none(), "{phase:?}: no index is left");
        assert_eq!(store.len(), 3000, "{phase:?}: the vectors are as they were");
        let again: Vec<_> = queries
            .iter()
            .map(|q| store.search(q, 10, Metric::L2).unwrap())
            .collect();
        assert_eq!(again, scanned, "{phase:?}: searches scan, with the same answers");
    }
    store.close().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    assert!(
        store.index_info().unwrap().is_none(),
        "nothing of the stopped builds after a reopen"
    );
    store.create_index(l2_index()).unwrap();
    assert_eq!(assert_index_clean(&store, "built after the stopped ones"), 3000);
}
