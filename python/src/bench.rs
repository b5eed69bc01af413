//! Rust baselines for `python/bench.py`: the same work as the Python calls it measures, done by
//! the library's Rust API in a loop inside the extension (same build, same store, same sync
//! mode), timed around the loop only. Not part of the public API.

use std::time::Instant;

use pyo3::prelude::*;

use crate::convert;
use crate::errors::{Failure, IntoPy};
use crate::store::PyStore;

/// Upserts the rows of `vectors` under `ids` through the Rust API's bulk path, `batch` rows per
/// transaction (`Store::upsert_many`), as the binding's `upsert_many` does for one batch. The
/// ids are copied out of Python before the clock starts. Returns the seconds the loop took.
#[pyfunction]
pub fn _rust_upsert_batches(
    py: Python<'_>,
    store: &PyStore,
    ids: &Bound<'_, PyAny>,
    vectors: &Bound<'_, PyAny>,
    batch: usize,
) -> PyResult<f64> {
    let dim = store.dim_value();
    let matrix = convert::matrix(vectors, dim, "vectors")?;
    let ids = convert::ids(ids, matrix.rows())?;
    let ids: Vec<&str> = (0..ids.len()).map(|row| ids.get(row)).collect();
    let rows = matrix.as_slice();
    let batch = batch.max(1);
    py.detach(|| {
        let store = store.shared.write_lease()?;
        let started = Instant::now();
        for (ids, vectors) in ids.chunks(batch).zip(rows.chunks(batch * dim)) {
            let rows: Vec<vellum::Row<'_>> = ids
                .iter()
                .zip(vectors.chunks_exact(dim))
                .map(|(id, vector)| (*id, vector, &[][..]))
                .collect();
            store.upsert_many(&rows)?;
        }
        Ok::<_, Failure>(started.elapsed().as_secs_f64())
    })
    .py_err()
}

/// Calls the Rust `Store::search` `iterations` times with one query; returns the seconds the
/// loop took.
#[pyfunction]
pub fn _rust_search_loop(
    py: Python<'_>,
    store: &PyStore,
    query: &Bound<'_, PyAny>,
    k: usize,
    metric: &str,
    iterations: usize,
) -> PyResult<f64> {
    let query = convert::vector(query)?;
    let metric = convert::metric(metric)?;
    py.detach(|| {
        let store = store.shared.lease()?;
        let started = Instant::now();
        for _ in 0..iterations {
            std::hint::black_box(store.search(std::hint::black_box(&query), k, metric)?);
        }
        Ok::<_, Failure>(started.elapsed().as_secs_f64())
    })
    .py_err()
}
