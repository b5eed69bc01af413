//! Exact search's claims: it agrees with a brute-force scan, sees committed data only,
//! filters by metadata, refuses bad queries, and works after reopen.

mod support;

use std::collections::BTreeMap;

use support::{Rng, seed_from_env};
use vellum::{Error, IndexOptions, Metric, Options, SearchOptions, Store};

fn options() -> Options {
    Options {
        page_size_bytes: 4096,
        segment_size_bytes: 1 << 20,
        ..Options::default()
    }
}

fn random_vector(rng: &mut Rng, dimension: usize) -> Vec<f32> {
    (0..dimension).map(|_| rng.below(2001) as f32 / 1000.0 - 1.0).collect()
}

fn brute_force(data: &BTreeMap<String, Vec<f32>>, query: &[f32], k: usize, metric: Metric) -> Vec<String> {
    let mut scored: Vec<(f32, &String)> = data
        .iter()
        .map(|(id, v)| {
            let dot: f32 = v.iter().zip(query).map(|(a, b)| a * b).sum();
            let key = match metric {
                Metric::Dot => -dot,
                Metric::L2 => v.iter().zip(query).map(|(a, b)| (a - b) * (a - b)).sum(),
                Metric::Cosine => {
                    let norms =
                        v.iter().map(|x| x * x).sum::<f32>().sqrt() * query.iter().map(|x| x * x).sum::<f32>().sqrt();
                    if norms == 0.0 { 0.0 } else { -dot / norms }
                }
            };
            (key, id)
        })
        .collect();
    scored.sort_by(|a, b| a.0.total_cmp(&b.0));
    scored.into_iter().take(k).map(|(_, id)| id.clone()).collect()
}

#[test]
fn search_agrees_with_a_brute_force_scan_for_every_metric() {
    let seed = seed_from_env("VELLUM_TEST_SEED", 3);
    let mut rng = Rng::new(seed);
    let dimension = 37;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), dimension as u32, options()).unwrap();
    let mut data = BTreeMap::new();
    let mut tx = store.begin().unwrap();
    for i in 0..600 {
        let v = random_vector(&mut rng, dimension);
        tx.insert(
            &format!("v{i}"),
            &v,
            &[("parity", if i % 2 == 0 { "even" } else { "odd" })],
        )
        .unwrap();
        data.insert(format!("v{i}"), v);
    }
    tx.commit().unwrap();
    for i in (0..600).step_by(7) {
        store.delete(&format!("v{i}")).unwrap();
        data.remove(&format!("v{i}"));
    }
    for i in (1..600).step_by(11) {
        let v = random_vector(&mut rng, dimension);
        store.upsert(&format!("v{i}"), &v, &[]).unwrap();
        data.insert(format!("v{i}"), v);
    }
    for metric in [Metric::Cosine, Metric::L2, Metric::Dot] {
        for _ in 0..5 {
            let query = random_vector(&mut rng, dimension);
            let found: Vec<String> = store
                .search(&query, 10, metric)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            assert_eq!(
                found,
                brute_force(&data, &query, 10, metric),
                "{metric:?} (seed {seed})"
            );
        }
    }
    let query = random_vector(&mut rng, dimension);
    let hits = store.search(&query, 2000, Metric::L2).unwrap();
    assert_eq!(hits.len(), data.len(), "k beyond the store returns every vector once");
    assert!(hits.windows(2).all(|w| w[0].1 <= w[1].1), "L2 distances ascend");
}

#[test]
fn search_sees_only_committed_vectors_and_filters_by_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, options()).unwrap();
    store
        .insert("far", &[10.0, 10.0, 10.0, 10.0], &[("lang", "en")])
        .unwrap();
    store.insert("mid", &[2.0, 2.0, 2.0, 2.0], &[("lang", "fr")]).unwrap();
    let query = [0.0f32; 4];
    std::thread::scope(|s| {
        let mut tx = store.begin().unwrap();
        tx.insert("near", &[0.1, 0.1, 0.1, 0.1], &[("lang", "en")]).unwrap();
        tx.delete("far").unwrap();
        s.spawn(|| {
            let hits = store.search(&query, 3, Metric::L2).unwrap();
            let ids: Vec<_> = hits.iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(
                ids,
                ["mid", "far"],
                "uncommitted inserts and deletes are invisible to search"
            );
        })
        .join()
        .unwrap();
        tx.commit().unwrap();
    });
    let hits = store.search(&query, 3, Metric::L2).unwrap();
    assert_eq!(
        hits.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["near", "mid"]
    );
    let english = store
        .search_filtered(&query, 3, Metric::L2, Some(("lang", "en")))
        .unwrap();
    assert_eq!(english.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["near"]);
    store.close().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let hits = store.search(&query, 3, Metric::L2).unwrap();
    assert_eq!(
        hits.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["near", "mid"],
        "after reopen"
    );
    assert!((hits[0].1 - 0.2).abs() < 1e-5, "L2 scores are distances: {}", hits[0].1);
}

#[test]
fn bad_queries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, options()).unwrap();
    for (query, k) in [(vec![0.0; 3], 1), (vec![f32::NAN, 0.0, 0.0, 0.0], 1), (vec![0.0; 4], 0)] {
        let error = store.search(&query, k, Metric::Cosine).unwrap_err();
        assert!(
            matches!(error, Error::InvalidArgument(_)),
            "{query:?}, k = {k}: {error}"
        );
    }
    assert!(
        store.search(&[0.0; 4], 5, Metric::Cosine).unwrap().is_empty(),
        "an empty store finds nothing"
    );
}

#[test]
fn a_k_beyond_the_store_returns_every_match_without_allocating_for_k() {
    // A `k` of usize::MAX ("all of them") once reserved room for k results and aborted the
    // process (a failed allocation of k × 16 bytes), through the scan and the index alike.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, options()).unwrap();
    for i in 0..50u16 {
        let tag = if i % 2 == 0 { "even" } else { "odd" };
        let v = [f32::from(i), 1.0, 0.5, -1.0];
        store.upsert(&format!("v{i:02}"), &v, &[("tag", tag)]).unwrap();
    }
    let query = [3.0, 1.0, 0.5, -1.0];
    let searches = |when: &str| {
        for k in [50, 51, usize::MAX / 16, usize::MAX] {
            let all = store.search(&query, k, Metric::L2).unwrap();
            assert_eq!(all.len(), 50, "{when}, k = {k}: every vector");
            assert_eq!(all[0].0, "v03", "{when}, k = {k}: best first");
            let even = store
                .search_filtered(&query, k, Metric::L2, Some(("tag", "even")))
                .unwrap();
            assert_eq!(even.len(), 25, "{when}, k = {k}: every match of the filter");
            for exact in [false, true] {
                let options = SearchOptions {
                    metric: Metric::L2,
                    exact,
                    ..SearchOptions::default()
                };
                let hits = store.search_with(&query, k, &options).unwrap();
                assert_eq!(hits.len(), 50, "{when}, k = {k}, exact {exact}: every vector");
                let widest = SearchOptions {
                    ef: Some(usize::MAX),
                    ..options
                };
                let hits = store.search_with(&query, k, &widest).unwrap();
                assert_eq!(hits.len(), 50, "{when}, k = {k}, exact {exact}, ef usize::MAX");
            }
        }
    };
    searches("without an index");
    store
        .create_index(IndexOptions {
            metric: Metric::L2,
            ..IndexOptions::default()
        })
        .unwrap();
    searches("with an index");
}

/// The ids of `hits`, in order.
fn ids(hits: &[(String, f32)]) -> Vec<&str> {
    hits.iter().map(|(id, _)| id.as_str()).collect()
}

#[test]
fn cosine_of_huge_tiny_and_zero_vectors_is_finite_and_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, options()).unwrap();
    store.insert("zero", &[0.0; 4], &[]).unwrap();
    store.insert("half", &[1.0, 0.0, 0.0, 0.0], &[]).unwrap();
    store.insert("huge", &[3e38; 4], &[]).unwrap();
    store.insert("tiny", &[1e-30; 4], &[]).unwrap();
    store.insert("subnormal", &[-1e-44; 4], &[]).unwrap();
    let hits = store.search(&[1.0; 4], 10, Metric::Cosine).unwrap();
    assert!(hits.iter().all(|(_, s)| s.is_finite()), "no NaN, no inf: {hits:?}");
    assert_eq!(
        ids(&hits),
        ["huge", "tiny", "half", "zero", "subnormal"],
        "by angle alone, whatever the magnitude: {hits:?}"
    );
    let scores: Vec<f32> = hits.iter().map(|h| h.1).collect();
    assert_eq!(scores, [1.0, 1.0, 0.5, 0.0, -1.0], "{hits:?}");
    let huge_query = store.search(&[-3e38, 0.0, 0.0, 0.0], 1, Metric::Cosine).unwrap();
    assert_eq!(huge_query, [("subnormal".to_string(), 0.5)], "a query of any magnitude");
    let zero_query = store.search(&[0.0; 4], 10, Metric::Cosine).unwrap();
    assert!(
        zero_query.iter().all(|(_, s)| *s == 0.0 && s.is_sign_positive()),
        "a zero query has cosine +0 with everything: {zero_query:?}"
    );
    assert_eq!(
        ids(&zero_query),
        ["zero", "half", "huge", "tiny", "subnormal"],
        "ties rank in slot order"
    );
}

#[test]
fn l2_beyond_the_f32_range_ranks_last_in_exact_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, options()).unwrap();
    // Inserted farthest first: ties broken by slot would put them in this order.
    store.insert("farthest", &[3e38, 3e38, 0.0, 0.0], &[]).unwrap();
    store.insert("farther", &[3e38, 0.0, 0.0, 0.0], &[]).unwrap();
    store.insert("far", &[0.0; 4], &[]).unwrap();
    store.insert("near", &[-3e38, -3e38, 1.0, 0.0], &[]).unwrap();
    let hits = store.search(&[-3e38, -3e38, 0.0, 0.0], 10, Metric::L2).unwrap();
    assert_eq!(ids(&hits), ["near", "far", "farther", "farthest"], "{hits:?}");
    assert_eq!(hits[0].1, 1.0);
    assert!(
        hits[1..].iter().all(|(_, s)| *s == f32::INFINITY),
        "distances beyond f32::MAX are +inf: {hits:?}"
    );
    // Squared distances above f32::MAX (distances above 1.8e19) are no longer all alike.
    store.insert("2e20", &[2e20, 0.0, 0.0, 0.0], &[]).unwrap();
    store.insert("1e20", &[1e20, 0.0, 0.0, 0.0], &[]).unwrap();
    let hits = store.search(&[0.0, 0.0, 0.0, 1e-3], 3, Metric::L2).unwrap();
    assert_eq!(ids(&hits), ["far", "1e20", "2e20"], "{hits:?}");
    assert!(
        (hits[1].1 / 1e20 - 1.0).abs() < 1e-6 && (hits[2].1 / 2e20 - 1.0).abs() < 1e-6,
        "{hits:?}"
    );
}

#[test]
fn dot_products_beyond_the_f32_range_rank_in_exact_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path(), 4, options()).unwrap();
    // Inserted so that ties broken by slot would give the wrong order at both ends.
    for (id, x) in [
        ("+3e76", 1e38f32),
        ("+6e76", 2e38),
        ("-6e76", -2e38),
        ("-3e76", -1e38),
        ("+3e28", 1e-10),
    ] {
        store.insert(id, &[x, 0.0, 0.0, 0.0], &[]).unwrap();
    }
    store.insert("zero", &[0.0; 4], &[]).unwrap();
    let hits = store.search(&[3e38, 3e38, 0.0, 0.0], 10, Metric::Dot).unwrap();
    assert_eq!(
        ids(&hits),
        ["+6e76", "+3e76", "+3e28", "zero", "-3e76", "-6e76"],
        "{hits:?}"
    );
    let scores: Vec<f32> = hits.iter().map(|h| h.1).collect();
    assert_eq!(
        scores,
        [
            f32::INFINITY,
            f32::INFINITY,
            3e28,
            0.0,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY
        ],
        "{hits:?}"
    );
}
