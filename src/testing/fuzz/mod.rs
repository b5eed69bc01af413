//! The bodies of the fuzz targets of `fuzz/` (cargo-fuzz), one plain function per target, one
//! file per target.
//!
//! Each `pub fn <target>(data: &[u8])` takes arbitrary bytes and returns, or panics: a panic is
//! a finding (a broken invariant of Vellum, written in the doc comment of each target). The
//! files in `fuzz/fuzz_targets/` only call these functions, so the targets are ordinary library
//! code: `tests/fuzz_corpus.rs` replays every corpus and regression input through them on the
//! stable toolchain, and a crash found by libFuzzer can be debugged with a plain test.
//!
//! The functions use only what an outside user of the crate can reach (the public API and the
//! crash-simulating [`SimStorage`]); nothing here touches a real file system.
//!
//! **Checksums.** Random bytes almost never carry a valid CRC32C, so a fuzzer that only feeds
//! raw bytes stops at the first checksum. Most targets therefore run their input twice: as
//! given, and *repaired* (every checksum the input's structure allows recomputed), so the
//! fuzzer also reaches the code behind the checks. A finding that needs the repaired variant is
//! reachable only with bytes whose checksums are valid: a buggy or foreign writer, not random
//! media damage. The reports say which variant a finding came from.

mod archive_decode;
mod arena_page;
mod control_file;
mod graph_page;
mod ops;
mod record_decode;
mod recovery;
mod repair;
mod wal_page;
mod wal_scan;

use std::sync::Arc;

use crate::format::page;
use crate::format::wal::LogIdentity;
use crate::storage::SimStorage;
use crate::testing::model;
use crate::{Options, RecoveryMode, Store, SyncMode};

pub use archive_decode::archive_decode;
pub use arena_page::arena_page;
pub use control_file::control_file;
pub use graph_page::{graph_page, graph_page_seeds};
pub use ops::{Op, OpsInput, Write, decode_ops, encode_ops, ops};
pub use record_decode::record_decode;
pub use recovery::{Mutation, RECOVERY_SEEDS, decode_mutations, encode_mutations, recovery};
pub use wal_page::wal_page;
pub use wal_scan::{WAL_SCAN_DIR, WalScanInput, decode_wal_scan, encode_wal_scan, wal_scan};

/// The page size every target uses (the smallest the format allows).
const PAGE: u32 = 4096;
const PAGE_BYTES: usize = PAGE as usize;
/// The store id of the logs the WAL targets build (and of the WAL seeds in `fuzz/corpus`).
pub const FUZZ_STORE_ID: u64 = 0x5645_4c4c_554d_465a;
/// The timeline of those logs.
pub const FUZZ_TIMELINE: u32 = 1;
const MODES: [RecoveryMode; 3] = [
    RecoveryMode::Strict,
    RecoveryMode::TolerateTornTail,
    RecoveryMode::SkipCorrupted,
];

fn fuzz_identity() -> LogIdentity {
    LogIdentity {
        store_id: FUZZ_STORE_ID,
        timeline: FUZZ_TIMELINE,
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn all_zero(bytes: &[u8]) -> bool {
    page::is_all_zero(bytes)
}

// Small stores in SimStorage.

const STORE_DIR: &str = "/db";
const DIMENSION: usize = 4;

fn store_options(sim: &SimStorage, mode: RecoveryMode, sync: SyncMode) -> Options {
    Options {
        sync,
        recovery: mode,
        page_size_bytes: PAGE,
        segment_size_bytes: PAGE as u64 * 8,
        checkpoint_interval_bytes: 0,
        storage: Arc::new(sim.clone()),
        background_io: false,
        ..Options::default()
    }
}

/// A vector of the targets' stores that encodes `version` in every component
/// ([`model::vector_of`]).
fn vector_of(version: u32) -> Vec<f32> {
    model::vector_of(version, DIMENSION)
}

/// The id of number `n` in the ops and recovery stores: `id-<n>` and a tail of up to 1000
/// bytes that depends on `n`, so that a dozen ids fill several 4 KiB leaves (the tree splits,
/// shrinks and frees nodes).
fn long_id(n: u64) -> String {
    let tail = 1000 - (n * 97 % 1000) as usize;
    format!("{}{}", model::id_of(n), ".".repeat(tail))
}

/// The ids the index of `store` holds, in order, after a full check of the index
/// (`inspect::index_report`), which must find nothing wrong: for stores whose files nothing
/// damaged. Their count must be the store's length.
fn checked_index_ids(store: &Store, context: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let check = crate::inspect::index_report(store, &mut |id| ids.push(String::from_utf8_lossy(id).into_owned()));
    assert!(check.clean(), "{context}: the index is damaged: {:#?}", check.damage);
    assert_eq!(
        check.summary.entries,
        store.len() as u64,
        "{context}: the length is not the index's count"
    );
    ids
}

/// Metadata of `len_class`: short (inline) or long enough for an overflow chain.
fn meta_of(version: u32, len_class: u8) -> String {
    if len_class & 0x80 != 0 {
        "L".repeat(2000 + usize::from(len_class & 0x7f) * 40)
    } else {
        format!("v{version}")
    }
}

/// What [`probe`] read: the version the vector encodes (if any) and the metadata pairs.
type Probed = (Option<u32>, Vec<(String, String)>);

/// Reads a store's answer for `id`: every `get` returns a vector of the store's dimension with
/// readable metadata, `None`, or an error; never panics.
fn probe(store: &Store, id: &str) -> Option<Probed> {
    match store.get(id) {
        Ok(Some(vector)) => {
            assert_eq!(
                vector.len(),
                store.dimension(),
                "get returned a vector of another dimension"
            );
            let meta: Vec<(String, String)> = vector
                .metadata()
                .take(1024)
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Some((model::version_of(&vector), meta))
        }
        Ok(None) | Err(_) => None,
    }
}
