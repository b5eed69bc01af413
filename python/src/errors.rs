//! `vellum::Error` to the exception classes of `vellum/_errors.py`.
//!
//! The classes are defined in Python because several have two bases (`AlreadyExistsError` is a
//! `KeyError`, `DiskFullError` an `OSError`, ...), which `create_exception!` cannot express.

use pyo3::import_exception;
use pyo3::prelude::*;
use vellum::Error;

import_exception!(vellum._errors, VellumError);
import_exception!(vellum._errors, AlreadyExistsError);
import_exception!(vellum._errors, InvalidArgumentError);
import_exception!(vellum._errors, CorruptedError);
import_exception!(vellum._errors, StoreLockedError);
import_exception!(vellum._errors, StorageError);
import_exception!(vellum._errors, DiskFullError);
import_exception!(vellum._errors, NotFoundError);
import_exception!(vellum._errors, IncompatibleError);
import_exception!(vellum._errors, ClosedError);
import_exception!(vellum._errors, ReadOnlyError);

/// What went wrong in code that runs with the GIL released; turned into an exception once the
/// thread holds the GIL again.
#[derive(Debug)]
pub enum Failure {
    /// An error of the library.
    Store(Error),
    /// An error of the library about one row of a batch.
    Row { row: usize, id: String, error: Error },
    /// The store is closed, or the transaction finished.
    Closed(&'static str),
    /// A write from the thread that holds this store's open transaction: it would wait for
    /// that transaction, which only this thread can finish.
    WouldDeadlock,
    /// A write, a transaction or a close from inside a call that writes to this store, on its
    /// thread (`create_index`'s `progress` callback): it would wait for that call.
    InsideWriteCall,
    /// A close, checkpoint or backup on a thread inside a backup (its `progress` callback).
    InsideCopy,
    /// `close` while a transaction is open or waiting to begin.
    TransactionOpen,
    /// A signal handler raised (Ctrl-C: `KeyboardInterrupt`) while a long call ran; the call
    /// undid what it had done.
    Interrupted(PyErr),
}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure::Store(error)
    }
}

impl From<Failure> for PyErr {
    fn from(failure: Failure) -> PyErr {
        match failure {
            Failure::Store(error) => exception(error, ""),
            Failure::Row { row, id, error } => exception(error, &format!("row {row} (id {id:?}): ")),
            Failure::Closed(what) => ClosedError::new_err(what),
            Failure::WouldDeadlock => InvalidArgumentError::new_err(
                "this thread holds an open transaction of this store: write through it, or commit or \
                 abort it first (a write here would wait for it forever)",
            ),
            Failure::InsideWriteCall => InvalidArgumentError::new_err(
                "this thread is inside a call that writes to this store (create_index's progress \
                 callback): a write, a transaction or a close here would wait for that call forever; \
                 reads work",
            ),
            Failure::InsideCopy => InvalidArgumentError::new_err(
                "this thread is inside a backup of this store (its progress callback): a close, a \
                 checkpoint or another backup here would wait for that backup forever; reads and \
                 writes work",
            ),
            Failure::TransactionOpen => InvalidArgumentError::new_err(
                "a transaction of this store is open: commit or abort it before closing the store",
            ),
            Failure::Interrupted(raised) => raised,
        }
    }
}

/// The exception for `error`, its message prefixed by `context`.
pub fn exception(error: Error, context: &str) -> PyErr {
    match error {
        Error::AlreadyExists => AlreadyExistsError::new_err(format!("{context}already exists")),
        Error::Locked(message) => StoreLockedError::new_err(format!("{context}{message}")),
        Error::InvalidArgument(message) => InvalidArgumentError::new_err(format!("{context}{message}")),
        Error::Corrupted { .. } => CorruptedError::new_err(format!("{context}{error}")),
        Error::DiskFull { .. } => DiskFullError::new_err((libc::ENOSPC, format!("{context}{error}"))),
        Error::Io { ref source, .. } => match vellum::storage::os_error_code(source) {
            Some(code) => StorageError::new_err((code, format!("{context}{error}"))),
            None => StorageError::new_err(format!("{context}{error}")),
        },
        Error::NotFound(message) => NotFoundError::new_err((libc::ENOENT, format!("{context}{message}"))),
        Error::Incompatible(_) => IncompatibleError::new_err(format!("{context}{error}")),
        Error::Closed(_) => ClosedError::new_err(format!("{context}{error}")),
        Error::ReadOnly(_) => ReadOnlyError::new_err(format!("{context}{error}")),
        // `Error` is non-exhaustive: a variant added later is still a VellumError.
        _ => VellumError::new_err(format!("{context}{error}")),
    }
}

/// `Result<T, vellum::Error>` to `PyResult<T>`.
pub trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;

    /// As [`IntoPy::py_err`], with an `AlreadyExistsError` that names what exists (`what()`:
    /// `id "a"`, `a store at /x`), where the library's error names nothing.
    fn py_err_existing(self, what: impl FnOnce() -> String) -> PyResult<T>;
}

impl<T> IntoPy<T> for vellum::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(|error| exception(error, ""))
    }

    fn py_err_existing(self, what: impl FnOnce() -> String) -> PyResult<T> {
        self.map_err(Failure::from).py_err_existing(what)
    }
}

impl<T> IntoPy<T> for Result<T, Failure> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(PyErr::from)
    }

    fn py_err_existing(self, what: impl FnOnce() -> String) -> PyResult<T> {
        self.map_err(|failure| match failure {
            Failure::Store(Error::AlreadyExists) => AlreadyExistsError::new_err(format!("{} already exists", what())),
            other => PyErr::from(other),
        })
    }
}
