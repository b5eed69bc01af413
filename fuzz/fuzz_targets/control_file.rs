//! Fuzz target `control_file`: the body and its invariants are `vellum::testing::fuzz::control_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::testing::fuzz::control_file(data));
