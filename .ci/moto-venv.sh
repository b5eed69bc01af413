#!/usr/bin/env bash
# Installs moto's S3 server (PyPI `moto[server]`) into a virtual environment under target/, for
# tests/ship.rs, which starts and stops `target/moto-venv/bin/moto_server` on 127.0.0.1 itself.
# Needs CPython >= 3.9 with pip and venv, and PyPI.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/target/moto-venv"
if [ ! -x "$venv/bin/moto_server" ]; then
    mkdir -p "$root/target"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]'
fi
"$venv/bin/moto_server" --help > /dev/null
