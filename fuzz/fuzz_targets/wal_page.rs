//! Fuzz target `wal_page`: the body and its invariants are `vellum::testing::fuzz::wal_page`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::testing::fuzz::wal_page(data));
