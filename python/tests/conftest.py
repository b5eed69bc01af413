"""Shared helpers of the binding's tests: small stores (1 MiB segments) under pytest's tmp_path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

import vellum

# Small segments: a store is made in milliseconds instead of zero-filling the default 16 MiB.
SEGMENT_SIZE = 1 << 20


def make_store(path: Path, dim: int = 4, **options) -> vellum.Store:
    options.setdefault("segment_size", SEGMENT_SIZE)
    return vellum.Store.create(path, dim=dim, **options)


@pytest.fixture
def store(tmp_path: Path):
    s = make_store(tmp_path / "store")
    yield s
    s.close()


def unit_rows(seed: int, rows: int, dim: int) -> np.ndarray:
    """Deterministic unit-norm float32 rows."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((rows, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def python_child(code: str, *args: str) -> list[str]:
    """The command line that runs `code` in a new interpreter with this one's path."""
    return [sys.executable, "-c", code, *args]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return env
