//! Fuzz target `archive_decode`: the body and its invariants are `vellum::testing::fuzz::archive_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::testing::fuzz::archive_decode(data));
