"""The child of the SIGKILL test: upserts batch after batch, acknowledging each on stdout.

Run as ``python kill_child.py STORE FIRST_BATCH SEED``: opens (or creates) the store with
sync="always" and upserts batches FIRST_BATCH, FIRST_BATCH + 1, ... until killed, printing each
batch number (flushed) once its ``upsert_many`` has returned, so the commit is durable.
Imported, it gives the parent the same batches to check against.
"""

from __future__ import annotations

import sys

import numpy as np

BATCH_ROWS = 2000
DIM = 32


def batch(seed: int, number: int) -> tuple[list[str], np.ndarray, list[dict[str, str]]]:
    """Batch `number`: ids, vectors of arbitrary finite float32 bit patterns, metadata."""
    rng = np.random.default_rng([seed, number])
    bits = rng.integers(0, 2**32, size=(BATCH_ROWS, DIM), dtype=np.uint32)
    exponent = (bits >> 23) & 0xFF
    bits[exponent == 0xFF] &= ~np.uint32(1 << 30)  # NaN and infinities become finite patterns
    ids = [f"{number}-{row}" for row in range(BATCH_ROWS)]
    metadata = [{"batch": str(number), "row": str(row)} for row in range(BATCH_ROWS)]
    return ids, bits.view(np.float32), metadata


def main() -> None:
    import vellum

    path, first, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    try:
        store = vellum.Store.open(path)
    except vellum.NotFoundError:
        store = vellum.Store.create(path, dim=DIM, segment_size=1 << 20)
    number = first
    while True:
        store.upsert_many(*batch(seed, number))
        print(number, flush=True)
        number += 1


if __name__ == "__main__":
    main()
