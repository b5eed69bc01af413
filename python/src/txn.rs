//! `vellum.Transaction`: a library `Transaction` kept together with the store it borrows.
//!
//! `Transaction<'s>` borrows its `Store` and holds the single writer lock until it commits or
//! aborts. The Python object owns an `Arc<Store>` and the transaction that borrows it in one
//! `self_cell`, so the borrow never outlives the store and no lifetime is extended by hand.
//! The cell sits in a mutex (the class is `frozen`, shared between threads like any Python
//! object); the transaction is `Send` (parking_lot's `send_guard`), so whichever thread drops
//! the last reference can abort it, and commits run with the GIL released.

use std::sync::Arc;

use numpy::PyArray1;
use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::PyType;
use self_cell::self_cell;
use vellum::{Store, Transaction};

use crate::batch::{self, Batch};
use crate::convert;
use crate::errors::{Failure, IntoPy};
use crate::shared::Shared;

/// The transaction, `None` once it committed or aborted inside the cell.
type OpenTransaction<'a> = Option<Transaction<'a>>;

self_cell!(
    struct TransactionCell {
        owner: Arc<Store>,
        #[covariant]
        dependent: OpenTransaction,
    }
);

// The mutex around a cell is `Sync` only if the cell is `Send`: with the library's writer-lock
// guard from parking_lot, that needs its `send_guard` feature (see Cargo.toml).
const _: () = {
    const fn is_send<T: Send>() {}
    is_send::<TransactionCell>();
};

/// A write transaction of a :class:`Store`. Made by :meth:`Store.transaction`.
///
/// Use it as a context manager: it commits when the ``with`` block ends normally and aborts
/// when an exception leaves it. Until it finishes, it holds the store's single writer lock:
/// other writers (in any thread or process) wait, readers do not.
#[pyclass(frozen, name = "Transaction", module = "vellum")]
pub struct PyTransaction {
    shared: Arc<Shared>,
    cell: Mutex<Option<TransactionCell>>,
    id: u64,
    dim: usize,
}

impl PyTransaction {
    /// Begins a transaction on `shared`'s store (waits for the writer lock without the GIL).
    pub fn begin(py: Python<'_>, shared: &Arc<Shared>, dim: usize) -> PyResult<PyTransaction> {
        let begun = py.detach(|| {
            let store = shared.transaction_owner()?;
            match TransactionCell::try_new(store, |store| store.begin().map(Some)) {
                Ok(cell) => {
                    let id = cell.borrow_dependent().as_ref().map_or(0, Transaction::id);
                    shared.transaction_began(id);
                    Ok((cell, id))
                }
                Err(error) => {
                    shared.end_transaction(None);
                    Err(Failure::Store(error))
                }
            }
        });
        let (cell, id) = begun.py_err()?;
        Ok(PyTransaction {
            shared: shared.clone(),
            cell: Mutex::new(Some(cell)),
            id,
            dim,
        })
    }

    /// Runs `f` on the open transaction. Call it with the GIL released: another thread may
    /// hold the cell through a commit's flush.
    fn with<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T, Failure>) -> Result<T, Failure> {
        let mut cell = self.cell.lock();
        let cell = cell.as_mut().ok_or(Failure::Closed("the transaction has finished"))?;
        cell.with_dependent_mut(|_, open| f(open.as_mut().expect("an open cell holds its transaction")))
    }

    /// As [`PyTransaction::with`], with the store the transaction belongs to.
    fn with_store<T>(&self, f: impl FnOnce(&Store, &mut Transaction<'_>) -> Result<T, Failure>) -> Result<T, Failure> {
        let mut cell = self.cell.lock();
        let cell = cell.as_mut().ok_or(Failure::Closed("the transaction has finished"))?;
        cell.with_dependent_mut(|store, open| f(store, open.as_mut().expect("an open cell holds its transaction")))
    }

    /// Commits (`Some(lsn)`) or aborts (`None`), and lets go of the store.
    fn finish(&self, commit: bool) -> Result<Option<u64>, Failure> {
        let mut guard = self.cell.lock();
        let mut cell = guard.take().ok_or(Failure::Closed("the transaction has finished"))?;
        let result = cell.with_dependent_mut(|_, open| {
            let tx = open.take().expect("an open cell holds its transaction");
            if commit {
                tx.commit().map(|lsn| Some(lsn.get()))
            } else {
                tx.abort().map(|()| None)
            }
        });
        drop(cell);
        drop(guard);
        self.shared.end_transaction(Some(self.id));
        Ok(result?)
    }
}

impl Drop for PyTransaction {
    fn drop(&mut self) {
        // Dropped open: the library's transaction aborts as it drops.
        if let Some(cell) = self.cell.get_mut().take() {
            drop(cell);
            self.shared.end_transaction(Some(self.id));
        }
    }
}

#[pymethods]
impl PyTransaction {
    /// Inserts a vector; raises :class:`AlreadyExistsError` if ``id`` is present (in the store or
    /// earlier in this transaction). Returns the LSN of the update record.
    #[pyo3(signature = (id, vector, metadata=None))]
    fn insert(
        &self,
        py: Python<'_>,
        id: &str,
        vector: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let vector = convert::vector(vector)?;
        let metadata = convert::metadata(metadata)?;
        py.detach(|| self.with(|tx| Ok(tx.insert(id, &vector, &convert::pairs(&metadata))?.get())))
            .py_err_existing(|| format!("id {id:?}"))
    }

    /// Inserts or replaces a vector. Returns the LSN of the update record.
    #[pyo3(signature = (id, vector, metadata=None))]
    fn upsert(
        &self,
        py: Python<'_>,
        id: &str,
        vector: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<u64> {
        let vector = convert::vector(vector)?;
        let metadata = convert::metadata(metadata)?;
        py.detach(|| self.with(|tx| Ok(tx.upsert(id, &vector, &convert::pairs(&metadata))?.get())))
            .py_err()
    }

    /// Upserts the rows of an ``(n, dim)`` array under ``ids`` (see :meth:`Store.upsert_many`).
    /// Every row is checked first: if one is refused, none is written. Ctrl-C
    /// (``KeyboardInterrupt``) stops a long call between parts of 16 MiB of vectors; the parts
    /// already written stay in this transaction (a ``with`` block aborts it as the exception
    /// leaves).
    #[pyo3(signature = (ids, vectors, metadata=None))]
    fn upsert_many(
        &self,
        py: Python<'_>,
        ids: &Bound<'_, PyAny>,
        vectors: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let matrix = convert::matrix(vectors, self.dim, "vectors")?;
        let ids = convert::ids(ids, matrix.rows())?;
        let metadata = convert::metadata_rows(metadata, matrix.rows())?;
        let batch = Batch {
            ids: &ids,
            vectors: matrix.as_slice(),
            dim: self.dim,
            metadata: &metadata,
        };
        py.detach(|| self.with_store(|store, tx| batch::upsert_rows(store, tx, &batch)))
            .py_err()
    }

    /// Deletes a vector; returns whether it existed.
    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<bool> {
        py.detach(|| self.with(|tx| Ok(tx.delete(id)?))).py_err()
    }

    /// The vector ``id`` as this transaction sees it (its own writes included), as a new float32
    /// array, or ``None``. Metadata is read with :meth:`Store.get` once committed.
    fn get_vector<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Option<Bound<'py, PyArray1<f32>>>> {
        let vector = py.detach(|| self.with(|tx| Ok(tx.get(id)))).py_err()?;
        Ok(vector.map(|vector| PyArray1::from_vec(py, vector)))
    }

    /// Commits: the changes become visible, and durable as the store's sync mode says before
    /// this returns. Returns the commit LSN.
    fn commit(&self, py: Python<'_>) -> PyResult<u64> {
        let lsn = py.detach(|| self.finish(true)).py_err()?;
        Ok(lsn.expect("a commit returns its LSN"))
    }

    /// Rolls back every change of this transaction.
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.finish(false)).py_err()?;
        Ok(())
    }

    /// True until the transaction commits or aborts.
    #[getter]
    fn active(&self, py: Python<'_>) -> bool {
        // Without the GIL: another thread may hold the cell through a commit's flush.
        py.detach(|| self.cell.lock().is_some())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Commits if the block ended normally, aborts if an exception left it (which then goes
    /// on). Does nothing if the transaction already finished inside the block.
    #[pyo3(signature = (exc_type, _exc_value, _traceback))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyType>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if !self.active(py) {
            return Ok(false);
        }
        match exc_type {
            None => self.commit(py).map(|_| false),
            Some(_) => self.abort(py).map(|()| false),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let state = if self.active(py) { "open" } else { "finished" };
        format!("<vellum.Transaction {} ({state})>", self.id)
    }
}
