//! Many rows at once: `upsert_many`.
//!
//! A batch goes through the library's bulk path (`Transaction::upsert_many`): every row is
//! checked before any is written, and the rows are logged many to a record.

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

/// Upserts every row of `batch` in one transaction; returns its commit LSN. A row the library
/// refuses aborts the whole batch: nothing of it is written.
pub fn upsert_many(store: &Store, batch: &Batch<'_>) -> Result<Lsn, Failure> {
    let mut tx = store.begin()?;
    upsert_rows(&mut tx, batch)?;
    Ok(tx.commit()?)
}

/// Upserts every row of `batch` into `tx`. A row the library refuses is named, and nothing of
/// the batch is written (every row is checked first).
pub fn upsert_rows(tx: &mut Transaction<'_>, batch: &Batch<'_>) -> Result<(), Failure> {
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
    tx.upsert_many(&rows).map_err(|error| match refused_row(&error) {
        Some((row, why)) if row < rows.len() => Failure::Row {
            row,
            id: rows[row].0.to_owned(),
            error: Error::InvalidArgument(why),
        },
        _ => Failure::from(error),
    })?;
    Ok(())
}

/// The row an `InvalidArgument` of the bulk path names ("row 12 (\"id\"): why"), and why.
fn refused_row(error: &Error) -> Option<(usize, String)> {
    let Error::InvalidArgument(text) = error else {
        return None;
    };
    let (head, why) = text.strip_prefix("row ")?.split_once("): ")?;
    Some((head.split(' ').next()?.parse().ok()?, why.to_string()))
}
