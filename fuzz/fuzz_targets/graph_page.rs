//! Fuzz target `graph_page`: the body and its invariants are `vellum::testing::fuzz::graph_page`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| vellum::testing::fuzz::graph_page(data));
