"""Ctrl-C stops a long call: Python's signal handlers run while ``upsert_many`` (of a store or of a
transaction), ``search_many``, ``create_index``, ``backup`` and ``restore`` work without the GIL,
so a ``KeyboardInterrupt`` (or whatever a handler raises) comes within a fraction of a second,
and an interrupted ``upsert_many``, ``create_index``, ``backup`` or ``restore`` keeps nothing."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import vellum

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGINT"), reason="POSIX signals")

# Rows enough for several seconds of work on any machine (about 1.5 us a row here): a SIGINT
# sent 0.2 s into the call arrives long before it could end.
ROWS = 1_500_000
DIM = 16


def send_sigint_after(seconds: float) -> threading.Timer:
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_an_interrupted_upsert_many_writes_none_of_its_rows(tmp_path: Path) -> None:
    store = vellum.Store.create(str(tmp_path / "s"), DIM)
    store.upsert("before", np.ones(DIM, dtype=np.float32))
    vectors = np.random.default_rng(7).random((ROWS, DIM), dtype=np.float32)
    ids = [f"r{i}" for i in range(ROWS)]
    timer = send_sigint_after(0.2)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        store.upsert_many(ids, vectors)
        # Without the checks the call ends, committed, and the interrupt comes only here.
        time.sleep(5)
    elapsed = time.monotonic() - started
    timer.join()
    assert len(store) == 1, "the interrupted batch was rolled back: only the row before it"
    assert store.get("r0") is None and store.get(f"r{ROWS - 1}") is None
    assert elapsed < 3.0, f"stopped within a fraction of the call's time: {elapsed:.2f} s"
    # The store goes on: the same batch, uninterrupted, commits whole and survives a reopen.
    store.upsert_many(ids[:1000], vectors[:1000])
    store.close()
    store = vellum.Store.open(str(tmp_path / "s"))
    assert len(store) == 1001
    store.close()


def test_an_interrupted_search_many_stops(tmp_path: Path) -> None:
    store = vellum.Store.create(str(tmp_path / "s"), DIM)
    rng = np.random.default_rng(8)
    store.upsert_many([f"r{i}" for i in range(20_000)], rng.random((20_000, DIM), dtype=np.float32))
    # Exact searches of 20,000 vectors (about 0.5 ms each here): 50,000 of them take some 20 s,
    # so a call that ran to its end would fail the bound below.
    queries = rng.random((50_000, DIM), dtype=np.float32)
    timer = send_sigint_after(0.2)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        store.search_many(queries, k=5, exact=True)
        time.sleep(5)
    elapsed = time.monotonic() - started
    timer.join()
    assert elapsed < 3.0, f"stopped within a fraction of the call's time: {elapsed:.2f} s"
    ids, _ = store.search_many(queries[:3], k=5, exact=True)
    assert ids.shape == (3, 5), "the store answers after the interrupt"
    store.close()


def test_a_bad_row_at_the_end_of_a_long_batch_is_refused_before_any_of_it_is_logged(tmp_path: Path) -> None:
    # The batch goes to the library in parts (to run the signal handlers between them): every
    # row is checked first, so a NaN in the last row costs no log and no rollback. The log's
    # growth between two single upserts shows it (LSNs are log offsets).
    store = vellum.Store.create(str(tmp_path / "s"), 64)
    rows = 300_000  # 73 MiB of vectors: five parts of 16 MiB
    vectors = np.random.default_rng(9).random((rows, 64), dtype=np.float32)
    vectors[-1, 3] = np.nan
    before = store.upsert("before", np.ones(64, dtype=np.float32))
    with pytest.raises(vellum.InvalidArgumentError, match=rf"row {rows - 1} .*NaN"):
        store.upsert_many([f"r{i}" for i in range(rows)], vectors)
    after = store.upsert("after", np.ones(64, dtype=np.float32))
    assert after - before < 1 << 20, f"the refused batch wrote {after - before} bytes of log"
    assert len(store) == 2
    store.close()


def test_an_interrupted_transaction_upsert_many_leaves_with_its_transaction_aborted(tmp_path: Path) -> None:
    store = vellum.Store.create(str(tmp_path / "s"), DIM)
    store.upsert("before", np.ones(DIM, dtype=np.float32))
    # Twice the rows of the tests above: a transaction's call took 3.1 s for ROWS here, at the
    # bound below, and one that ran to its end must fail it.
    rows = 2 * ROWS
    vectors = np.random.default_rng(9).random((rows, DIM), dtype=np.float32)
    ids = [f"r{i}" for i in range(rows)]
    timer = send_sigint_after(0.2)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with store.transaction() as tx:
            tx.upsert_many(ids, vectors)
            time.sleep(5)
    elapsed = time.monotonic() - started
    timer.join()
    assert elapsed < 3.0, f"stopped within a fraction of the call's time: {elapsed:.2f} s"
    assert len(store) == 1, "the with block aborted the transaction: only the row before it"
    assert store.get("r0") is None
    store.upsert("after", np.ones(DIM, dtype=np.float32))
    assert len(store) == 2, "the writer lock was let go"
    store.close()


def test_an_interrupted_create_index_keeps_nothing_of_the_build(tmp_path: Path) -> None:
    store = vellum.Store.create(str(tmp_path / "s"), 32)
    rng = np.random.default_rng(10)
    # Random vectors of 32 dimensions: a build of 40,000 takes several seconds on two cores.
    store.upsert_many([f"r{i}" for i in range(40_000)], rng.random((40_000, 32), dtype=np.float32) - 0.5)
    timer = send_sigint_after(0.3)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        store.create_index(metric="l2")
        time.sleep(5)
    elapsed = time.monotonic() - started
    timer.join()
    assert elapsed < 3.0, f"stopped within a fraction of the build's time: {elapsed:.2f} s"
    assert store.index_info() is None, "nothing of the stopped build is kept"
    ids, _ = store.search_many(rng.random((2, 32), dtype=np.float32) - 0.5, k=3, metric="l2")
    assert ids.shape == (2, 3), "searches scan after the stopped build"
    store.close()
    store = vellum.Store.open(str(tmp_path / "s"))
    assert store.index_info() is None and len(store) == 40_000
    store.close()


def store_of_64_mib(path: Path) -> vellum.Store:
    """A store whose restore or backup takes several tenths of a second (about 0.5 s here)."""
    store = vellum.Store.create(str(path), 256)
    rows = 65_536
    vectors = np.random.default_rng(9).random((rows, 256), dtype=np.float32)
    store.upsert_many([f"r{i}" for i in range(rows)], vectors)
    return store


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_ctrl_c_stops_a_restore_and_a_backup_keeping_nothing(tmp_path: Path) -> None:
    store = store_of_64_mib(tmp_path / "s")

    def interrupt_at_first_call(phase: str, done: int, total: int) -> None:
        # The handlers run at the watcher's next call, a tenth of a second later.
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        store.backup(str(tmp_path / "b"), progress=interrupt_at_first_call)
    assert not (tmp_path / "b").exists() and leftovers(tmp_path) == []
    store.close()
    with pytest.raises(KeyboardInterrupt):
        vellum.restore(str(tmp_path / "s"), str(tmp_path / "r"), progress=interrupt_at_first_call)
    assert not (tmp_path / "r").exists() and leftovers(tmp_path) == []
    # Nothing was changed: the same restore, unwatched, is whole.
    vellum.restore(str(tmp_path / "s"), str(tmp_path / "r"))
    restored = vellum.Store.open(str(tmp_path / "r"))
    assert len(restored) == 65_536
    restored.close()


def test_a_restore_reports_its_phases_and_a_progress_that_raises_stops_it(tmp_path: Path) -> None:
    store_of_64_mib(tmp_path / "s").close()
    calls: list[tuple[str, int, int]] = []
    report = vellum.restore(
        str(tmp_path / "s"), str(tmp_path / "r"), progress=lambda *step: calls.append(step)
    )
    order = ["planning", "stage arena", "stage log", "find cut", "replay", "new timeline"]
    phases = [phase for phase, _, _ in calls]
    assert phases, "called at least once, at the end"
    assert [order.index(p) for p in phases] == sorted(order.index(p) for p in phases), phases
    assert all(total == 0 or done <= total for _, done, total in calls), calls
    _, done, total = calls[-1]
    assert done == total, f"the last call ends its phase: {calls[-1]}"
    assert report["records_redone"] > 0

    class Enough(Exception):
        pass

    def stop(phase: str, done: int, total: int) -> None:
        raise Enough(phase)

    with pytest.raises(Enough):
        vellum.restore(str(tmp_path / "s"), str(tmp_path / "r2"), progress=stop)
    assert not (tmp_path / "r2").exists() and leftovers(tmp_path) == []


def test_a_backups_progress_callback_may_read_and_write_but_a_close_or_checkpoint_raises(tmp_path: Path) -> None:
    # A backup holds off checkpoints until it ends, and a close waits for it: from its callback,
    # on its thread, either would wait forever. (Before, `store.close()` there hung the process.)
    store = store_of_64_mib(tmp_path / "s")
    outcomes: dict[str, object] = {}

    def callback(phase: str, done: int, total: int) -> None:
        if outcomes:
            return
        outcomes["len"] = len(store)
        store.upsert("during", np.ones(256, dtype=np.float32))
        outcomes["upsert"] = "done"
        for name, call in [("close", store.close), ("checkpoint", store.checkpoint),
                           ("backup", lambda: store.backup(str(tmp_path / "b2")))]:
            with pytest.raises(vellum.InvalidArgumentError, match="inside a backup"):
                call()
            outcomes[name] = "refused"

    store.backup(str(tmp_path / "b"), progress=callback)
    assert outcomes == {"len": 65_536, "upsert": "done", "close": "refused", "checkpoint": "refused",
                        "backup": "refused"}
    assert not (tmp_path / "b2").exists()
    store.checkpoint()  # after the backup, on the same thread
    store.close()
    backup = vellum.Store.open(str(tmp_path / "b"))
    assert len(backup) in (65_536, 65_537), "a consistent copy, with or without the write made during it"
    backup.close()
