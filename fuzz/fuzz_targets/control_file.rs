//! Fuzz target `control_file`: the body and its invariants are `vellum::fuzz_targets::control_file`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::fuzz_targets::control_file(data));
