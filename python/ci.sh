#!/usr/bin/env bash
# The Python binding's CI: lints its crate, installs it with `pip install ./python` into a
# virtual environment under target/, and runs its tests with pytest.
# Needs CPython >= 3.9 with pip and venv, the Rust toolchain, and PyPI (maturin, numpy, pytest,
# mypy for its stubtest).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
venv="$root/target/python-venv"
# Build artifacts beside the root crate's, under its ignored target/ directory.
export CARGO_TARGET_DIR="$root/target/python"

cd "$here"
cargo fmt --check
cargo clippy --all-targets -- -D warnings

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check numpy pytest mypy
# The command a user runs (the build backend, maturin, comes from pyproject.toml).
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$here"

cd "$root/target"  # mypy leaves its cache in the working directory: keep it under target/
# The type stubs match the module as built (names, signatures, defaults).
"$venv/bin/python" -m mypy.stubtest vellum
cd "$root"
"$venv/bin/python" -m pytest -q python/tests
