"""Durability: bit-exact vectors after reopen, and acknowledged batches after SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import vellum
from conftest import child_env, make_store
from kill_child import BATCH_ROWS, batch


def finite_bit_patterns(rows: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bits = rng.integers(0, 2**32, size=(rows, dim), dtype=np.uint32)
    bits[((bits >> 23) & 0xFF) == 0xFF] &= ~np.uint32(1 << 30)
    vectors = bits.view(np.float32)
    specials = np.array([-0.0, 1e-45, -1e-45, 1.1754944e-38, 3.4028235e38, -3.4028235e38, 1.0, 0.0], np.float32)
    vectors[0, : len(specials)] = specials  # signed zero, subnormals, the extremes
    return vectors


def test_vectors_are_bit_exact_after_close_and_reopen(tmp_path):
    path = tmp_path / "s"
    vectors = finite_bit_patterns(300, 16, seed=11)
    with make_store(path, dim=16) as s:
        s.upsert_many([f"m{i}" for i in range(100)], vectors[:100])
        for i in range(100, 200):
            s.upsert(f"u{i}", vectors[i])
        with s.transaction() as tx:
            tx.upsert_many([f"t{i}" for i in range(200, 300)], vectors[200:])
    with vellum.Store.open(path) as s:
        for i in range(300):
            id = f"m{i}" if i < 100 else f"u{i}" if i < 200 else f"t{i}"
            assert s.get(id)[0].tobytes() == vectors[i].tobytes(), id


def test_vectors_are_bit_exact_after_recovery_of_a_process_that_never_closed(tmp_path):
    path = tmp_path / "s"
    vectors = finite_bit_patterns(50, 8, seed=12)
    np.save(tmp_path / "v.npy", vectors)
    code = (
        "import os, sys, numpy as np, vellum\n"
        "s = vellum.Store.create(sys.argv[1], dim=8, segment_size=1 << 20)\n"
        "s.upsert_many([str(i) for i in range(50)], np.load(sys.argv[2]))\n"
        "os._exit(0)\n"  # no close, no checkpoint: the next open recovers from the log
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "v.npy")], check=True, env=child_env())
    with vellum.Store.open(path) as s:
        assert len(s) == 50
        for i in range(50):
            assert s.get(str(i))[0].tobytes() == vectors[i].tobytes()


def present_rows(store: vellum.Store, seed: int, number: int) -> int:
    """How many rows of batch `number` the store holds; each one must be bit-exact."""
    ids, vectors, metadata = batch(seed, number)
    present = 0
    for row, id in enumerate(ids):
        found = store.get(id)
        if found is None:
            continue
        present += 1
        assert found[0].tobytes() == vectors[row].tobytes(), f"batch {number} row {row} differs"
        assert found[1] == metadata[row]
    return present


def kill_cycle(path: Path, first: int, seed: int, rng: random.Random) -> list[int]:
    """Runs the child from batch `first`, kills it with SIGKILL inside a later upsert_many;
    returns the batches it acknowledged."""
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("kill_child.py")), str(path), str(first), str(seed)],
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    acked = []
    try:
        for _ in range(rng.randint(1, 4)):
            line = child.stdout.readline()
            assert line, f"the child ended early (exit {child.poll()})"
            acked.append(int(line))
        time.sleep(rng.uniform(0, 0.004))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    acked.extend(int(line) for line in child.stdout.read().split())  # acks still in the pipe
    assert child.returncode == -signal.SIGKILL
    return acked


def test_every_acknowledged_batch_survives_sigkill_mid_upsert_many(tmp_path):
    seed = int(os.environ.get("VELLUM_PY_KILL_SEED", random.randrange(2**32)))
    print(f"VELLUM_PY_KILL_SEED={seed}")
    rng = random.Random(seed)
    path = tmp_path / "s"
    first = 0
    for cycle in range(4):
        acked = kill_cycle(path, first, seed, rng)
        assert acked == list(range(first, first + len(acked))), f"seed {seed}: acks in order"
        in_flight = first + len(acked)
        with vellum.Store.open(path) as s:
            for number in acked:
                assert present_rows(s, seed, number) == BATCH_ROWS, f"seed {seed}: acked batch {number} lost"
            partial = present_rows(s, seed, in_flight)
            assert partial in (0, BATCH_ROWS), f"seed {seed}: batch {in_flight} torn ({partial} rows)"
            assert s.get(f"{in_flight + 1}-0") is None, f"seed {seed}: a batch never begun is present"
            assert len(s) == (in_flight + (1 if partial else 0)) * BATCH_ROWS
            print(f"cycle {cycle}: acked {acked}, batch {in_flight} {'present' if partial else 'absent'}")
        first = in_flight + (1 if partial else 0)


def test_a_bulk_load_with_stored_writes_reads_back_bit_exact_after_reopen(tmp_path):
    # Without the archive, stored writes put each vector in its page only (not the log): the
    # pages a bulk call writes itself must hold every bit after a reopen.
    path = tmp_path / "s"
    vectors = finite_bit_patterns(3000, 64, seed=13)
    ids = [f"s{i}" for i in range(len(vectors))]
    with vellum.Store.create(path, 64, page_size=4096, archive=False, stored_writes=True) as s:
        s.upsert_many(ids, vectors)
    with vellum.Store.open(path, archive=False, stored_writes=True) as s:
        assert len(s) == len(ids)
        for i in range(len(ids)):
            assert s.get(ids[i])[0].tobytes() == vectors[i].tobytes(), ids[i]
