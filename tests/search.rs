//! Exact search's claims: it agrees with a brute-force scan, sees committed data only,
//! filters by metadata, refuses bad queries, and works after reopen.

mod common;

use std::collections::BTreeMap;

use common::{Rng, seed_from_env};
use vellum::{Error, Metric, Options, Store};

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
