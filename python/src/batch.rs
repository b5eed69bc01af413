//! Many rows at once: `upsert_many`.
//!
//! Today a batch is one library transaction with `Transaction::upsert` per row. When the library
//! gains a bulk call (`Store::upsert_many`), [`upsert_many`] is the one place to switch to it.

use vellum::{Lsn, Store, Transaction};

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

/// Upserts every row of `batch` into `tx`; stops at the first row refused (the rows before it
/// stay in `tx`).
pub fn upsert_rows(tx: &mut Transaction<'_>, batch: &Batch<'_>) -> Result<(), Failure> {
    assert_eq!(
        batch.vectors.len(),
        batch.len() * batch.dim,
        "a batch holds one vector per id"
    );
    let mut pairs = Vec::new();
    for (row, vector) in batch.vectors.chunks_exact(batch.dim.max(1)).enumerate() {
        let id = batch.ids.get(row);
        if !batch.metadata.is_empty() {
            batch.metadata.row_into(row, &mut pairs);
        }
        tx.upsert(id, vector, &pairs).map_err(|error| Failure::Row {
            row,
            id: id.to_owned(),
            error,
        })?;
    }
    Ok(())
}
