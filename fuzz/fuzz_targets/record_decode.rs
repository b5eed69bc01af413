//! Fuzz target `record_decode`: the body and its invariants are `vellum::testing::fuzz::record_decode`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::testing::fuzz::record_decode(data));
