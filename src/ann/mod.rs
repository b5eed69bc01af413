//! Approximate nearest-neighbour search: an HNSW graph (Malkov and Yashunin, 2016) whose
//! algorithms run over a narrow storage trait, [`GraphView`] for reads and [`GraphStore`] for
//! the mutations of an insert, so the same code serves the in-memory [`MemoryStore`] of tests
//! and benchmarks, the parallel builder's concurrent graph, and the store's WAL-logged pages
//! (`store::graph`, whose page layout is `format::graph` and FORMAT.md 14.13).
//!
//! Not part of the public API: the store's index is (`Store::create_index`,
//! `Store::search_with`). This module is public (hidden from the docs) only so
//! `benches/ann.rs` can measure it alone.
//!
//! # What is here
//!
//! * [`Hnsw::insert`]: levels drawn from a seed and the node id ([`Hnsw::level_for`]), greedy
//!   descent through the upper layers, an `ef_construction` search per layer, the neighbour
//!   heuristic of the paper's Algorithm 4 (with `keepPrunedConnections` as an option), and
//!   links back, re-selecting a full list by the same heuristic.
//! * [`Hnsw::search`]: greedy descent, an `ef` search at layer 0, and the candidates rescored
//!   by the exact f64 kernels of [`crate::search`], so the scores and ties are those of
//!   `Store::search`. Traversal uses f32 kernels (`distance.rs` says why and how).
//! * [`Hnsw::search_filtered`]: always `min(k, matching)` results; a scan below a selectivity
//!   threshold, a self-widening graph search above it (`filter.rs`).
//! * [`Hnsw::delete`] (a tombstone) and [`Hnsw::vacuum`] (repair, then free the slots, which
//!   [`MemoryStore::allocate`] hands out again).
//! * [`Hnsw::build`]: every core inserting into one concurrent graph, then written out once.
//! * [`Hnsw::reconnect`]: links every live node a walk of layer 0 misses (after a build or a
//!   vacuum: `reconnect.rs`).
//! * [`Hnsw::calibrate_ef`]: the default candidate list of an index, measured on its own data.
//! * [`Hnsw::check`]: the invariants `verify` checks.
//! * [`watch`]: the long phases on every core, watched (progress, a stop) from the calling
//!   thread.
//!
//! # On pages
//!
//! The store's layout (`format::graph`) follows what this module was written for: node ids are
//! vector slot numbers (page × slots per page + slot), so a node's vector is read where it
//! already is, in the vector pages, and the graph adds only its own records: fixed-size node
//! records (level, state, the layer-0 list of `2M` ids: 8 + 8M bytes, 136 for M = 16, 120 per
//! 16 KiB page) addressed by id, and upper lists in runs of fixed-size slots (a node of level
//! `L` owns `L` consecutive slots of one page). Storing a copy of each vector beside its list,
//! as pgvector does, would save no page reads (a search reads the list of the node it expands
//! and the vectors of that node's neighbours, which are elsewhere anyway) and would double the
//! vector bytes.
//!
//! Every [`GraphStore`] mutation changes one record on one page: on pages it is an edit of the
//! operation's update record, with its before-image. A writer holds the store alone, so the
//! physical undo of a transaction's edits, newest first, restores exactly what was there: an
//! aborted insert leaves no trace. Tombstones keep their vector slots until a vacuum has
//! repaired every list that names them.
//!
//! # Parallel build
//!
//! [`Hnsw::build`] builds in memory with every core and returns a [`Built`] graph, which is
//! written page by page: each node page once, full, logged as one image.

// Outside the tests and benchmarks, some re-exports have no user.
#![cfg_attr(not(feature = "testing"), allow(unused_imports))]

mod build;
mod calibrate;
mod check;
mod distance;
mod filter;
mod graph;
mod hnsw;
mod memory;
mod reconnect;
mod vacuum;
pub mod watch;

#[cfg(test)]
mod tests;

pub use build::{Built, BuiltView, VectorSource};
pub use calibrate::EF_CANDIDATES;
pub use check::CheckReport;
pub use filter::{Filter, FilterPlan};
pub use graph::{DeleteStore, GraphStore, GraphView, LEVEL_MAX, NodeId, NodeState};
pub use hnsw::{Hit, Hnsw, Params, Scratch};
pub(crate) use hnsw::Admit;
pub use memory::MemoryStore;
pub use vacuum::VacuumReport;
