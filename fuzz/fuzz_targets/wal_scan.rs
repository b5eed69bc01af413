//! Fuzz target `wal_scan`: the body and its invariants are `vellum::fuzz_targets::wal_scan`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::fuzz_targets::wal_scan(data));
