//! Fuzz target `wal_scan`: the body and its invariants are `vellum::testing::fuzz::wal_scan`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::testing::fuzz::wal_scan(data));
