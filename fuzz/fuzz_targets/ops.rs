//! Fuzz target `ops`: the body and its invariants are `vellum::testing::fuzz::ops`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::testing::fuzz::ops(data));
