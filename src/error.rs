//! The one error type of Vellum.
//!
//! Disk damage is `Err(Corrupted { .. })`; bad caller input is `InvalidArgument`;
//! a broken internal invariant is a panic. The three are never mixed.

use std::io;
use std::path::PathBuf;

use crate::Lsn;

/// Every fallible Vellum operation returns this error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error, with what Vellum was doing when it happened.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What Vellum was doing ("starting a WAL thread").
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The file system has no room left (`ENOSPC`/`EDQUOT`). Nothing acknowledged is lost.
    #[error("disk full while {context}")]
    DiskFull {
        /// What Vellum was doing.
        context: String,
    },
    /// On-disk bytes failed validation: a checksum, magic, length or address did not hold.
    #[error("corrupted {}{}: {reason}", file_text(.file), lsn_text(.lsn))]
    Corrupted {
        /// Where in the log the damage is, for log damage.
        lsn: Option<Lsn>,
        /// The damaged file, when one is known.
        file: Option<PathBuf>,
        /// What did not hold.
        reason: String,
    },
    /// The caller passed something Vellum refuses (wrong dimension, NaN, oversized id, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// `insert` of an id that is present, or `Store::create` where a store exists.
    #[error("already exists")]
    AlreadyExists,
    /// A store, file or record that was asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The files were written by a format version this build cannot read.
    #[error("incompatible format: {0}")]
    Incompatible(String),
    /// The object was closed, or poisoned by an earlier fatal I/O error.
    #[error("closed: {0}")]
    Closed(String),
    /// A write to a store opened with [`crate::Store::open_read_only`] (or to files the process
    /// may not write): nothing was changed.
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// The store is open elsewhere: a writer holds it (or readers do, and a writer asked).
    #[error("locked: {0}")]
    Locked(String),
    /// The caller asked a long operation to stop (the watcher of
    /// [`crate::Store::create_index_watched`] returned `Break`): nothing of it was kept.
    #[error("interrupted: {0}")]
    Interrupted(String),
}

fn file_text(file: &Option<PathBuf>) -> String {
    match file {
        Some(path) => path.display().to_string(),
        None => "data".to_string(),
    }
}

fn lsn_text(lsn: &Option<Lsn>) -> String {
    match lsn {
        Some(lsn) => format!(" at LSN {lsn}"),
        None => String::new(),
    }
}

impl Error {
    /// An equal error (same variant and text) for a second caller that the same failure
    /// stopped: the commits one failed flush carried (src/store/combine.rs).
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Io { context, source } => Error::Io {
                context: context.clone(),
                source: crate::exhausted::duplicate(source),
            },
            Error::DiskFull { context } => Error::DiskFull {
                context: context.clone(),
            },
            Error::Corrupted { lsn, file, reason } => Error::Corrupted {
                lsn: *lsn,
                file: file.clone(),
                reason: reason.clone(),
            },
            Error::InvalidArgument(text) => Error::InvalidArgument(text.clone()),
            Error::AlreadyExists => Error::AlreadyExists,
            Error::NotFound(text) => Error::NotFound(text.clone()),
            Error::Incompatible(text) => Error::Incompatible(text.clone()),
            Error::Closed(text) => Error::Closed(text.clone()),
            Error::ReadOnly(text) => Error::ReadOnly(text.clone()),
            Error::Locked(text) => Error::Locked(text.clone()),
            Error::Interrupted(text) => Error::Interrupted(text.clone()),
        }
    }
}

impl Error {
    /// True if this is an I/O error that says the process or the system ran out of something
    /// (descriptors, memory, address space): nothing reached the disk, and the call may
    /// succeed later (see [`crate::exhausted::is_exhaustion`]).
    pub(crate) fn is_exhaustion(&self) -> bool {
        matches!(self, Error::Io { source, .. } if crate::exhausted::is_exhaustion(source))
    }
}

/// Vellum's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error; `ENOSPC` and `EDQUOT` become [`Error::DiskFull`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        let context = context.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::DiskFull { context },
            _ => Error::Io { context, source },
        }
    }

    /// Damage found in the log at `lsn`.
    pub fn corrupted_at(lsn: Lsn, reason: impl Into<String>) -> Error {
        Error::Corrupted {
            lsn: Some(lsn),
            file: None,
            reason: reason.into(),
        }
    }

    /// Damage found in `file`.
    pub fn corrupted_file(file: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Corrupted {
            lsn: None,
            file: Some(file.into()),
            reason: reason.into(),
        }
    }
}

/// Adds context to `io::Result`s.
pub(crate) trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::io(what(), source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duplicate_error_has_the_variant_the_io_kind_and_the_text_of_the_original() {
        let errors = [
            Error::io("syncing the log", io::Error::from(io::ErrorKind::TimedOut)),
            Error::DiskFull {
                context: "appending".into(),
            },
            Error::corrupted_at(Lsn(4096), "bad CRC"),
            Error::corrupted_file("arena/vector-0.pages", "torn page"),
            Error::InvalidArgument("dimension".into()),
            Error::AlreadyExists,
            Error::NotFound("id".into()),
            Error::Incompatible("format 9".into()),
            Error::Closed("poisoned".into()),
            Error::ReadOnly("opened read-only".into()),
            Error::Locked("held".into()),
            Error::Interrupted("the index build".into()),
        ];
        for error in &errors {
            let copy = error.duplicate();
            assert_eq!(copy.to_string(), error.to_string(), "the same text");
            assert_eq!(
                std::mem::discriminant(&copy),
                std::mem::discriminant(error),
                "the same variant: {error}"
            );
            if let (Error::Io { source: a, .. }, Error::Io { source: b, .. }) = (error, &copy) {
                assert_eq!(a.kind(), b.kind(), "an I/O error keeps its kind");
            }
        }
    }
}
