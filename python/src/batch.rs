//! Many rows at once: `upsert_many`.
//!
//! A batch goes through the library's bulk path (`Transaction::upsert_many`): every row is
//! checked before any is written, and the rows are logged many to a record.
//!
//! `Store.upsert_many` hands the library [`BYTES_PER_CHECK`] of vectors at a time and runs Python's
//! signal handlers between them: Ctrl-C (or any handler that raises) stops a load of millions
//! of rows within a fraction of a second, and its transaction, never committed, is rolled
//! back: nothing of the batch is written. (In one call, 2,000,000 rows of 64 dimensions took
//! 6.7 s, and a `KeyboardInterrupt` came only after they were committed.)

use pyo3::Python;
use vellum::{Error, Lsn, Row, Store, Transaction};

use crate::convert::{MetadataRows, Strings};
use crate::errors::Failure;

/// Rows taken out of Python objects, readable with the GIL released.
pub struct Batch<'a> {
    pub ids: &'a Strings,
    /// Row after row, `dim` components each.
    pub vectors: &'a [f32],
    pub dim: usize,
    /// Empty, or one entry per row.
    pub metadata: &'a MetadataRows,
}

impl Batch<'_> {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Bytes of vectors [`upsert_many`] hands the library between two runs of the signal
/// handlers: 65,536 rows of 64 dimensions, about a tenth of a second of work. The parts cost
/// nothing measurable on this noisy machine: 2,000,000 rows of 64 dimensions took 6.3-7.8 s
/// in parts (with every row checked first), 6.7 s in one call before.
pub const BYTES_PER_CHECK: usize = 16 << 20;

/// Upserts every row of `batch` in one transaction; returns its commit LSN. A row the library
/// refuses, or a signal handler that raises (`KeyboardInterrupt`), aborts the whole batch:
/// nothing of it is written. Called without the GIL: it takes it only to run the handlers.
pub fn upsert_many(store: &Store, batch: &Batch<'_>) -> Result<Lsn, Failure> {
    let rows_per_check = (BYTES_PER_CHECK / (batch.dim.max(1) * 4)).max(1);
    upsert_many_checked(store, batch, rows_per_check, &run_signal_handlers)
}

/// Runs Python's signal handlers (taking the GIL); `Err` if one raised.
pub fn run_signal_handlers() -> Result<(), Failure> {
    Python::attach(|py| py.check_signals()).map_err(Failure::Interrupted)
}

/// Runs `work` (a call of the library that takes a watcher) with a watcher that calls `tell`
/// (which runs the signal handlers and a progress callback, on this thread): the first failure
/// of `tell` stops the work, and is what this returns if the work was stopped by it.
pub fn watched<P, T>(
    mut tell: impl FnMut(P) -> Result<(), Failure>,
    work: impl FnOnce(&mut dyn FnMut(P) -> std::ops::ControlFlow<()>) -> vellum::Result<T>,
) -> Result<T, Failure> {
    let mut raised = None;
    let done = work(&mut |step| match tell(step) {
        Ok(()) => std::ops::ControlFlow::Continue(()),
        Err(failure) => {
            raised = Some(failure);
            std::ops::ControlFlow::Break(())
        }
    });
    match (done, raised) {
        (Err(vellum::Error::Interrupted(_)), Some(failure)) => Err(failure),
        (done, _) => Ok(done?),
    }
}

/// Runs Python's signal handlers every [`SignalChecks::INTERVAL`] at most, for a loop of many
/// short steps without the GIL (taking it costs up to the interpreter's switch interval when
/// another thread holds it).
pub struct SignalChecks {
    last: std::time::Instant,
}

impl SignalChecks {
    pub const INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

    pub fn new() -> SignalChecks {
        SignalChecks {
            last: std::time::Instant::now(),
        }
    }

    /// Runs the handlers if the last run is [`SignalChecks::INTERVAL`] ago.
    pub fn maybe(&mut self) -> Result<(), Failure> {
        if self.last.elapsed() < SignalChecks::INTERVAL {
            return Ok(());
        }
        self.last = std::time::Instant::now();
        run_signal_handlers()
    }
}

/// [`upsert_many`], `rows_per_check` rows at a time, with `interrupted` run between them and
/// before the commit (an `Err` of either drops the transaction, which rolls it back).
pub fn upsert_many_checked(
    store: &Store,
    batch: &Batch<'_>,
    rows_per_check: usize,
    interrupted: &dyn Fn() -> Result<(), Failure>,
) -> Result<Lsn, Failure> {
    assert!(rows_per_check > 0, "a check every so many rows");
    with_rows(batch, |rows| {
        // Every row first, as one call of the library would: a bad row at the end of a long
        // batch is refused before any part of it is written (written parts would be undone
        // after the fact: 6.4 s for a NaN in the last of 2,000,000 rows, and 1.4 s of rollback).
        store.check_rows(rows).map_err(|error| refusal(error, rows, 0))?;
        let mut tx = store.begin()?;
        for (index, chunk) in rows.chunks(rows_per_check).enumerate() {
            upsert_chunk(&mut tx, chunk, index * rows_per_check)?;
            interrupted()?;
        }
        Ok(tx.commit()?)
    })
}

/// Upserts every row of `batch` into `tx`, a transaction of `store`, [`BYTES_PER_CHECK`] of
/// vectors at a time with Python's signal handlers run between them. A row the library refuses
/// is named, and nothing of the batch is written (every row is checked first); a handler that
/// raises stops the call there, the parts already upserted staying in `tx` (a `with` block
/// aborts it as the exception leaves).
pub fn upsert_rows(store: &Store, tx: &mut Transaction<'_>, batch: &Batch<'_>) -> Result<(), Failure> {
    let rows_per_check = (BYTES_PER_CHECK / (batch.dim.max(1) * 4)).max(1);
    upsert_rows_checked(store, tx, batch, rows_per_check, &run_signal_handlers)
}

/// [`upsert_rows`], `rows_per_check` rows at a time, with `interrupted` run between them.
pub fn upsert_rows_checked(
    store: &Store,
    tx: &mut Transaction<'_>,
    batch: &Batch<'_>,
    rows_per_check: usize,
    interrupted: &dyn Fn() -> Result<(), Failure>,
) -> Result<(), Failure> {
    assert!(rows_per_check > 0, "a check every so many rows");
    with_rows(batch, |rows| {
        store.check_rows(rows).map_err(|error| refusal(error, rows, 0))?;
        for (index, chunk) in rows.chunks(rows_per_check).enumerate() {
            if index > 0 {
                interrupted()?;
            }
            upsert_chunk(tx, chunk, index * rows_per_check)?;
        }
        Ok(())
    })
}

/// Runs `f` on the rows of `batch` as the library takes them.
fn with_rows<T>(batch: &Batch<'_>, f: impl FnOnce(&[Row<'_>]) -> T) -> T {
    assert_eq!(
        batch.vectors.len(),
        batch.len() * batch.dim,
        "a batch holds one vector per id"
    );
    let pairs: Vec<Vec<(&str, &str)>> = (0..batch.len())
        .map(|row| {
            let mut pairs = Vec::new();
            if !batch.metadata.is_empty() {
                batch.metadata.row_into(row, &mut pairs);
            }
            pairs
        })
        .collect();
    let rows: Vec<Row<'_>> = batch
        .vectors
        .chunks_exact(batch.dim.max(1))
        .zip(&pairs)
        .enumerate()
        .map(|(row, (vector, pairs))| (batch.ids.get(row), vector, pairs.as_slice()))
        .collect();
    f(&rows)
}

/// Upserts `rows`, the batch's rows from `first` on, into `tx`; a row the library refuses is
/// named by its place in the batch.
fn upsert_chunk(tx: &mut Transaction<'_>, rows: &[Row<'_>], first: usize) -> Result<(), Failure> {
    tx.upsert_many(rows).map_err(|error| refusal(error, rows, first))?;
    Ok(())
}

/// `error` of a call given `rows`, the batch's rows from `first` on: a refused row is named by
/// its place in the batch.
fn refusal(error: Error, rows: &[Row<'_>], first: usize) -> Failure {
    match refused_row(&error) {
        Some((row, why)) if row < rows.len() => Failure::Row {
            row: first + row,
            id: rows[row].0.to_owned(),
            error: Error::InvalidArgument(why),
        },
        _ => Failure::from(error),
    }
}

/// The row an `InvalidArgument` of the bulk path names ("row 12 (\"id\"): why"), and why.
fn refused_row(error: &Error) -> Option<(usize, String)> {
    let Error::InvalidArgument(text) = error else {
        return None;
    };
    let (head, why) = text.strip_prefix("row ")?.split_once("): ")?;
    Some((head.split(' ').next()?.parse().ok()?, why.to_string()))
}
