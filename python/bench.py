"""Benchmarks of the Python binding against the Rust API, measured in the same run.

    python python/bench.py [--rows 1000000] [--dim 128] [--batch 10000] [--sync always]

1. Bulk upserts: ``Store.upsert_many`` of ``rows`` x ``dim`` float32 rows from NumPy, ``batch``
   rows per call, against the Rust API doing the same work inside the extension
   (``vellum._vellum._rust_upsert_batches``: one ``Transaction`` per batch, ``upsert`` per row,
   ``commit``, timed inside Rust around that loop only). Both write fresh stores with the same
   options and sync mode, in the same directory, from the same array, taking turns batch by
   batch. Ids are made (and sliced into batches) before any clock starts.
2. Search overhead: ``Store.search`` on a store of 16 vectors (the scan costs next to nothing)
   against ``Store::search`` called in a Rust loop inside the extension, same query and k.
   The difference per call is what the binding adds: argument conversion, the GIL release and
   the list of results.

Prints one line per measurement and a summary. Needs the disk space of two stores of
``rows`` x ``dim`` at a time (about 3 GB for the defaults).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import vellum
from vellum import _vellum


def bulk_rounds(args: argparse.Namespace, workdir: Path) -> tuple[list[float], list[float]]:
    """Rows per second of each side, per round. In a round both sides write a fresh store of
    their own batch by batch, taking turns (which side goes first alternates per batch), so that
    both see the same machine: a shared disk's good and bad seconds fall on both alike."""
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"doc-{i}" for i in range(args.rows)]
    batches = [(ids[i : i + args.batch], vectors[i : i + args.batch]) for i in range(0, args.rows, args.batch)]
    python_rates, rust_rates = [], []
    for round_no in range(args.rounds):
        stores = {
            side: vellum.Store.create(workdir / f"{side}-{round_no}", dim=args.dim, sync=args.sync)
            for side in ("python", "rust")
        }
        seconds = {"python": 0.0, "rust": 0.0}
        for number, (batch_ids, batch_vectors) in enumerate(batches):
            for side in ("python", "rust") if number % 2 == 0 else ("rust", "python"):
                if side == "python":
                    started = time.perf_counter()
                    stores[side].upsert_many(batch_ids, batch_vectors)
                    seconds[side] += time.perf_counter() - started
                else:
                    seconds[side] += _vellum._rust_upsert_batches(stores[side], batch_ids, batch_vectors, args.batch)
        for side, store in stores.items():
            assert len(store) == args.rows
            store.close()
            shutil.rmtree(workdir / f"{side}-{round_no}")
        python_rates.append(args.rows / seconds["python"])
        rust_rates.append(args.rows / seconds["rust"])
        print(
            f"round {round_no}: python {python_rates[-1]:,.0f} rows/s ({seconds['python']:.2f} s), "
            f"rust {rust_rates[-1]:,.0f} rows/s ({seconds['rust']:.2f} s): {python_rates[-1] / rust_rates[-1]:.3f}x",
            flush=True,
        )
    return python_rates, rust_rates


def search_overhead(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    path = workdir / "search"
    store = vellum.Store.create(path, dim=args.dim, segment_size=1 << 20)
    rng = np.random.default_rng(2)
    store.upsert_many([str(i) for i in range(16)], rng.standard_normal((16, args.dim), dtype=np.float32))
    query = rng.standard_normal(args.dim, dtype=np.float32)
    query_list = query.tolist()
    n = args.search_iterations
    best = {"rust": float("inf"), "python ndarray": float("inf"), "python list": float("inf")}
    for _ in range(args.rounds + 2):
        best["rust"] = min(best["rust"], _vellum._rust_search_loop(store, query, 10, "cosine", n) / n)
        started = time.perf_counter()
        for _ in range(n):
            store.search(query, 10, "cosine")
        best["python ndarray"] = min(best["python ndarray"], (time.perf_counter() - started) / n)
        started = time.perf_counter()
        for _ in range(n):
            store.search(query_list, 10, "cosine")
        best["python list"] = min(best["python list"], (time.perf_counter() - started) / n)
    store.close()
    shutil.rmtree(path)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--sync", default="always", choices=["always", "interval", "never"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--search-iterations", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go (default: a temporary directory)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="vellum-bench-", dir=args.dir))
    try:
        print(f"bulk upsert: {args.rows:,} x {args.dim} float32, batches of {args.batch:,}, sync={args.sync}")
        python_rates, rust_rates = bulk_rounds(args, workdir)
        py_median, rust_median = statistics.median(python_rates), statistics.median(rust_rates)
        print(
            f"upsert_many: median {py_median:,.0f} rows/s vs Rust {rust_median:,.0f} rows/s: "
            f"{py_median / rust_median:.3f}x (target >= 0.9x)"
        )
        best = search_overhead(args, workdir)
        print(f"search, 16 vectors x {args.dim}, k=10, best of {args.rounds + 2} x {args.search_iterations:,} calls:")
        for name, seconds in best.items():
            print(f"  {name:>15}: {seconds * 1e6:.2f} us per call")
        for name in ("python ndarray", "python list"):
            overhead_us = (best[name] - best["rust"]) * 1e6
            print(f"search overhead ({name} query): {overhead_us:.2f} us per call (target <= 10 us)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
