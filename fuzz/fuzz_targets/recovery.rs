//! Fuzz target `recovery`: the body and its invariants are `vellum::testing::fuzz::recovery`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::testing::fuzz::recovery(data));
