#!/usr/bin/env bash
# Runs the parts of the test suite that Miri can run (no real files, mmap or other syscalls):
# the library's unit tests (decoders, page logic, records, WAL format, archive blocks, control
# file, the crash simulator whose mappings are raw heap pointers, a whole store in it, search
# kernels), the golden-vector conformance tests and a sample of the decoder fuzz corpora
# (tests/conformance.rs and tests/fuzz_corpus.rs read files).
# Needs `rustup +nightly component add miri rust-src`.
#
#   fuzz/miri.sh            # everything below (tens of minutes on 2 cores)
#   fuzz/miri.sh lib        # only the library's unit tests (about 5 minutes)
#
# Tests that cannot run under Miri are marked `#[cfg_attr(miri, ignore)]` in the source.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/miri}"
what="${1:-all}"
# Isolation off: the store reads the wall clock (log timestamps) and the process id (store id
# seed), and the file-reading tests read files. Nothing here maps memory or opens a real store.
export MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-disable-isolation"

# Portable search kernels (Miri reports no AVX2), then the AVX2/FMA ones, which Miri emulates.
cargo +nightly miri test --lib
if [ "$what" = all ]; then
    RUSTFLAGS="-C target-feature=+avx2,+fma" cargo +nightly miri test --lib search::
    # These read files (the golden vectors, the corpora).
    cargo +nightly miri test --test conformance
    # (Not arena_page: it opens whole stores per input, over 5 minutes under Miri.)
    cargo +nightly miri test --test fuzz_corpus -- record_decode wal_page control_file archive_decode
fi
