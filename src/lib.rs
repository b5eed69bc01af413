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

/// Declares modules private to the crate, made public (and hidden from the documentation)
/// with the `testing` feature, for the project's own tests, benchmarks and fuzz targets. They
/// are no part of the API: nothing in them is stable.
macro_rules! internal_modules {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$meta])*
            #[cfg(feature = "testing")]
            #[doc(hidden)]
            pub mod $name;
            $(#[$meta])*
            #[cfg(not(feature = "testing"))]
            #[allow(dead_code)]
            mod $name;
        )*
    };
}

internal_modules!(ann, arena, archive, search, ship, store, wal);

mod error;
pub mod format;
pub mod inspect;
mod lsn;
mod modes;
#[cfg(feature = "object-store")]
mod replica;
mod restore;
#[cfg(feature = "object-store")]
mod restore_remote;
/// The project's one seeded generator (SplitMix64), for the simulator, the HNSW level draws,
/// the demo, tests and benchmarks. No part of the API: nothing in it is stable.
#[doc(hidden)]
pub mod rng;
pub mod storage;
/// Test scaffolding: the fuzz targets' bodies (replayed by `tests/fuzz_corpus.rs`) and the model
/// of committed state the simulation checks against. No part of the API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

pub use error::{Error, Result};
pub use lsn::Lsn;
pub use modes::{RecoveryMode, SyncMode};
pub use restore::{RestoreReport, RestoreTarget, restore, restore_with};
pub use search::Metric;
pub use ship::is_url as is_archive_url;
pub use store::recovery::RecoveryReport;
pub use store::{LogInfo, Options, Retention, Store, Transaction, VectorRef};
#[cfg(feature = "object-store")]
pub use {
    replica::{Replica, ReplicaOptions, ReplicaStatus},
    store::shipper::ShipStatus,
};
