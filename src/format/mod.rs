//! The byte-level format (format-spec/FORMAT.md): every structure Vellum writes, with its
//! encoder and its checks, and the format versions. This is the public face for tools that
//! read or write the bytes themselves (`vellum verify` and `wal-dump`, the fuzz targets, the
//! conformance tests); the embedding API is at the crate root.
//!
//! Nothing here does I/O: these are pure codecs over byte slices.

pub mod archive;
pub mod control;
pub mod doublewrite;
pub mod graph;
pub mod index;
pub mod meta;
pub mod page;
pub mod record;
pub mod wal;

/// Major format version of the store's structures (control file, log, arena, doublewrite
/// area). A reader refuses another major version.
pub const FORMAT_VERSION_MAJOR: u16 = 4;
/// Minor format version: additions a reader of the same major may ignore (FORMAT.md 18).
pub const FORMAT_VERSION_MINOR: u16 = 1;
