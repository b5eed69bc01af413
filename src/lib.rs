//! Vellum: an embedded, crash-safe vector store.
//!
//! A memory-mapped, page-oriented storage engine for float32 embeddings with string ids and
//! key/value metadata: a write-ahead log on preallocated segment files of fixed-size pages,
//! a paged vector arena read zero-copy, fuzzy checkpoints and ARIES recovery.
//! The byte-level format is specified in `format-spec/FORMAT.md`.
//!
//! # Quick start
//!
//! ```rust
//! use vellum::{Metric, Options, Store};
//!
//! fn example(dir: &std::path::Path) -> vellum::Result<()> {
//!     let store = Store::create(dir, 3, Options::default())?;
//!     store.insert("a", &[1.0, 0.0, 0.0], &[("lang", "en")])?;
//!
//!     let mut tx = store.begin()?;
//!     tx.upsert("b", &[0.0, 1.0, 0.0], &[])?;
//!     tx.upsert("c", &[0.6, 0.8, 0.0], &[("lang", "fr")])?;
//!     let commit_lsn = tx.commit()?; // durable when it returns (SyncMode::Always)
//!     assert!(commit_lsn.get() > 0);
//!
//!     let hits = store.search(&[1.0, 0.1, 0.0], 2, Metric::Cosine)?;
//!     assert_eq!(hits[0].0, "a");
//!     let french = store.search_filtered(&[1.0, 0.0, 0.0], 10, Metric::Cosine, Some(("lang", "fr")))?;
//!     assert_eq!(french.len(), 1);
//!
//!     let a = store.get("a")?.expect("a is there");
//!     assert_eq!(&*a, &[1.0, 0.0, 0.0]);
//!     assert_eq!(a.metadata().collect::<Vec<_>>(), [("lang", "en")]);
//!     drop(a);
//!     store.close()?;
//!
//!     let store = Store::open(dir, Options::default())?;
//!     println!("{}", store.recovery_report());
//!     assert_eq!(store.len(), 3);
//!     Ok(())
//! }
//! # fn main() -> vellum::Result<()> {
//! #     let dir = tempfile::tempdir().expect("a scratch directory");
//! #     example(&dir.path().join("store"))
//! # }
//! ```
//!
//! This is the example of README.md ("The library"); `tests/readme.rs` checks that the two
//! copies are the same.
//!
//! # The API
//!
//! - [`Store`]: creates, opens (as the one writer, or read-only) and closes a store; reads
//!   ([`Store::get`], [`Store::search`], and in id order [`Store::ids`] and [`Store::entries`]
//!   with [`ListOptions`]), single-operation writes and [`Transaction`]s
//!   ([`Store::begin`]), checkpoints, backups and the archive's retention. [`Options`] says how
//!   a store is opened: [`SyncMode`] (when a commit is durable), [`RecoveryMode`] (what recovery
//!   does with damage it finds) and the archive's settings.
//! - [`restore`] and [`restore_with`]: a new store from a store's archive as of a
//!   [`RestoreTarget`] (point-in-time restore); [`restore_watched`] reports its
//!   [`RestoreProgress`] to a watcher that may stop it.
//! - [`Error`]: every fallible call returns [`Result`]; damage on disk is
//!   [`Error::Corrupted`], bad input [`Error::InvalidArgument`].
//! - [`inspect`]: read-only tools over a store's files (verification, log dump, control data).
//! - [`format`](mod@format): the byte-level codecs, for tools that read the files themselves.
//! - [`storage`]: the narrow file-system layer every byte goes through.
//!
//! # Features
//!
//! - `cli` (default): the crates of the `vellum` command-line tool (clap, humantime, indicatif,
//!   serde); the library needs none of them.
//! - `object-store` (default): ships the archive to object storage (S3, GCS, Azure,
//!   `file://`), restores from a URL and follows it with a read-only `Replica`.
//! - `testing`: the crash simulator and the internal modules, for this project's own tests,
//!   benchmarks and fuzz targets. No part of the API.
//!
//! A program that only embeds the store can depend on
//! `vellum = { version = "0.1", default-features = false }`.

#![cfg_attr(not(feature = "testing"), warn(missing_docs))]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

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

mod address_space;
mod background;
mod error;
mod exhausted;
mod fork;
pub mod format;
mod hint;
pub mod inspect;
mod lsn;
mod modes;
#[cfg(feature = "object-store")]
mod replica;
mod restore;
mod zeros;
// The project's one seeded generator (SplitMix64), for the simulator, the HNSW level draws,
// the demo, tests and benchmarks. No part of the API: nothing in it is stable.
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
pub use restore::{
    RestorePhase, RestoreProgress, RestoreReport, RestoreTarget, restore, restore_watched, restore_with,
};
pub use search::Metric;
pub use ship::is_url as is_archive_url;
pub use store::recovery::RecoveryReport;
pub use store::{
    BATCH_RECORD_BYTES, GET_MANY_COLD_WINDOW, GET_MANY_WINDOW, IndexBuildPhase, IndexBuildProgress, IndexInfo,
    IndexOptions, LogInfo, Options, Retention, Row, SearchOptions, Store, Transaction, VectorRef,
};
pub use store::{Entries, Entry, Ids, ListOptions};
#[cfg(feature = "object-store")]
pub use {
    replica::{Replica, ReplicaOptions, ReplicaStatus},
    store::shipper::ShipStatus,
};
