//! Vellum: an embedded, crash-safe vector store.
//!
//! A memory-mapped, page-oriented storage engine for float32 embeddings with string ids and
//! key/value metadata: a write-ahead log on preallocated segment files of fixed-size pages,
//! a paged vector arena read zero-copy, fuzzy checkpoints and ARIES recovery.
//! The byte-level format is specified in `format-spec/FORMAT.md`.

#![deny(unsafe_op_in_unsafe_fn)]

// Vectors are read zero-copy as `&[f32]` from pages whose format fixes them as little-endian.
#[cfg(target_endian = "big")]
compile_error!("Vellum reads f32 vectors in place from little-endian pages; big-endian targets are not supported");

/// Approximate nearest-neighbour search (HNSW); not yet wired into the store.
#[doc(hidden)]
pub mod ann;
pub mod archive;
mod archiver;
pub mod arena;
mod checkpoint;
pub mod doublewrite;
pub mod error;
/// The bodies of the fuzz targets in `fuzz/` as plain functions (replayed by `tests/fuzz_corpus.rs`).
pub mod fuzz_targets;
mod lsn;
pub mod page;
pub mod record;
pub mod recovery;
pub mod restore;
pub mod search;
pub mod storage;
pub mod store;
pub mod wal;

pub use error::{Error, Result};
pub use lsn::Lsn;
pub use recovery::RecoveryReport;
pub use restore::{RestoreReport, RestoreTarget, restore};
pub use search::Metric;
pub use store::{Options, Retention, Store, Transaction, VectorRef};
pub use wal::SyncMode;

/// What recovery does with damage it finds (see `format-spec/FORMAT.md`, "End of the log").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Any damage is an error, and so is an ambiguous tail: a torn tail is accepted only when no
    /// valid record follows the damage.
    Strict,
    /// A torn tail (damage not proven to lie before the last durable byte) is accepted and
    /// erased; damage proven to lie inside the durable log is an error.
    #[default]
    TolerateTornTail,
    /// Damage inside the log is skipped (resynchronising at the next valid page) and reported.
    SkipCorrupted,
}
