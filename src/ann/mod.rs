//! Approximate nearest-neighbour search: an HNSW graph (Malkov and Yashunin, 2016) whose
//! algorithms run over a narrow storage trait, [`GraphStore`], so the same code serves the
//! in-memory [`MemoryStore`] of tests and benchmarks and, later, Vellum's WAL-logged pages.
//!
//! Not yet part of the public API: the store does not maintain an index yet. This module is
//! public (hidden from the docs) only so `benches/ann.rs` can measure it.
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
//! * [`Hnsw::check`]: the invariants a future `verify` checks.
//!
//! # Recommended page layout
//!
//! Node ids are vector slot numbers (page × slots per page + slot), so a node's vector is read
//! where it already is, in the vector pages, and the graph adds only its own records:
//!
//! * **Node pages** (a new space, or a page kind): after the 64-byte page header, fixed-size
//!   node records addressed by id (`page = id / per_page`, no indirection). A record is
//!   `level: u8, state: u8 (free/live/deleted), count: u16, upper: u32` (the index of the
//!   node's first upper-list slot) and the layer-0 list, `2M` u32 ids: 8 + 8M bytes, **136 for
//!   M = 16**, so **120 records per 16 KiB page** (29 per 4 KiB), whatever the dimension.
//! * **Upper-list pages**: slots of `count: u32` and `M` ids, **68 bytes for M = 16, 240 per
//!   16 KiB page**. A node of level `L` takes `L` consecutive slots, allocated at insert from a
//!   free list per run length (levels are geometric: with M = 16 one node in 16 has any, one
//!   in 256 two, so these pages are about 1/15 of the node pages).
//! * **The index meta page**: parameters (metric, M, ef_construction, seed), the entry point,
//!   the free-list heads, the count of tombstones.
//!
//! The vectors stay where they are: dimension 128 is 31 per 16 KiB page (512-byte stride),
//! dimension 384 is 10 per page (1536 bytes). Storing a copy of each vector beside its list,
//! as pgvector does, would save no page reads (a search reads the list of the node it expands
//! and the vectors of that node's neighbours, which are elsewhere anyway) and would double the
//! vector bytes.
//!
//! # Which operations are which single-page WAL edits
//!
//! Every [`GraphStore`] mutation changes one record on one page, so each is one
//! physiological redo record (page, offset, new bytes) of at most 136 bytes of payload:
//!
//! | operation | records |
//! |---|---|
//! | `add_node` | the node record (level, state live, count 0, upper slots) |
//! | `set_neighbours`, one `update_neighbours` | the one list (or an append of one id, 4 bytes, when the list is not full) |
//! | `set_entry_point`, `raise_entry_point` | the meta page |
//! | `set_deleted` | the state byte of the node record |
//! | `free_node` | the node record (state free, count 0) and the free list on the meta page |
//!
//! An insert is thus `1 + L` records for the node itself, then one per chosen neighbour per
//! layer (at most `M` per layer: about 16 + 1 for most nodes with M = 16), and rarely the meta
//! page. None needs to be atomic with another: a crash between two leaves every list naming
//! only nodes that exist (the node record is written first), just a less connected node.
//! Undo of an aborted insert should therefore be logical (a compensation record that makes the
//! node a tombstone), never the physical undo of each list edit (other inserts may have
//! rewritten those lists since); the next vacuum repairs around it, as after a delete. The node
//! slot must not be reused by the vector store until the graph frees it in a vacuum (until then
//! lists may name it).
//!
//! A vacuum is one record per repaired list, one per link back, and one per freed node;
//! [`VacuumReport`] counts them.
//!
//! # Parallel build
//!
//! [`Hnsw::build`] builds in memory with every core and returns a [`Built`] graph, which
//! [`Built::write_into`] writes in node order: on pages, each node page is written once, full,
//! and can be logged as a full-page image rather than per-list records.

// The store does not use the index yet (issue 19 wires it into pages): outside the tests and
// benchmarks, its re-exports have no user.
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
