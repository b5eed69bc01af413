//! Fuzz target `arena_page`: the body and its invariants are `vellum::fuzz_targets::arena_page`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::fuzz_targets::arena_page(data));
