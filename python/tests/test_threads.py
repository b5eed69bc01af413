"""Threads: searches run while one thread writes; waits happen without the GIL."""

from __future__ import annotations

import subprocess
import threading

import numpy as np
import pytest

import vellum
from conftest import child_env, make_store, python_child, unit_rows


def test_threads_search_and_read_while_one_writes(tmp_path):
    dim, rows, batches = 32, 200, 15
    s = make_store(tmp_path / "s", dim=dim)
    vectors = unit_rows(5, rows * batches, dim)
    s.upsert_many([str(i) for i in range(rows)], vectors[:rows])
    acknowledged = [rows]  # ids below this are committed
    errors: list[BaseException] = []
    searches = [0] * 3

    def writer():
        try:
            for b in range(1, batches):
                ids = [str(i) for i in range(b * rows, (b + 1) * rows)]
                s.upsert_many(ids, vectors[b * rows : (b + 1) * rows])
                acknowledged.append((b + 1) * rows)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    def reader(slot: int, seed: int):
        rng = np.random.default_rng(seed)
        try:
            while len(acknowledged) < batches or searches[slot] < 20:
                i = int(rng.integers(0, acknowledged[-1]))
                hits = s.search(vectors[i], k=1)
                assert hits[0][0] == str(i) and hits[0][1] > 0.999, (i, hits)
                assert s.get(str(i))[0].tobytes() == vectors[i].tobytes()
                ids, _ = s.search_many(vectors[i : i + 1], k=1, metric="l2")
                assert ids[0, 0] == str(i)
                searches[slot] += 1
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(slot, slot)) for slot in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors
    assert len(s) == rows * batches and all(n >= 20 for n in searches)
    s.close()


# Run in a child with a timeout: if a waiting call kept the GIL, the thread that could release
# the writer lock would never run again and the child would hang instead of failing.
GIL_CHILD = r"""
import sys, threading, time, vellum
s = vellum.Store.create(sys.argv[1], dim=4, segment_size=1 << 20)
tx = s.transaction()
done = []
def other_writer():
    s.upsert("u", [0, 1, 0, 0])          # waits for the writer lock that tx holds
    with s.transaction() as t2:            # and so does begin
        t2.upsert("v", [0, 0, 1, 0])
    done.append(True)
t = threading.Thread(target=other_writer)
t.start()
time.sleep(0.2)                            # the other thread is blocked in upsert by now
assert not done, "upsert returned while another transaction held the writer lock"
tx.upsert("t", [1, 0, 0, 0])               # needs the GIL: the blocked thread must not hold it
tx.commit()
t.join(timeout=20)
assert done and not t.is_alive()
assert "t" in s and "u" in s and "v" in s
s.close()
print("ok")
"""


def test_a_write_waiting_for_the_writer_lock_releases_the_gil(tmp_path):
    done = subprocess.run(
        python_child(GIL_CHILD, str(tmp_path / "s")), capture_output=True, env=child_env(), text=True, timeout=30
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_transaction_may_be_finished_by_another_thread(store):
    holder = {}

    def begin():
        tx = store.transaction()
        tx.upsert("a", [1, 0, 0, 0])
        holder["tx"] = tx

    t = threading.Thread(target=begin)
    t.start()
    t.join()
    holder.pop("tx").commit()
    assert "a" in store
    store.insert("b", [0, 1, 0, 0]), "the writer lock was released"


def test_a_transaction_dropped_by_another_thread_aborts(store):
    holder = {"tx": store.transaction()}
    holder["tx"].upsert("a", [1, 0, 0, 0])
    t = threading.Thread(target=holder.clear)  # the last reference goes in that thread
    t.start()
    t.join()
    assert "a" not in store
    store.insert("b", [0, 1, 0, 0])


def test_close_waits_for_running_searches_and_later_calls_raise_closed(tmp_path):
    s = make_store(tmp_path / "s", dim=64)
    s.upsert_many([str(i) for i in range(5000)], unit_rows(1, 5000, 64))
    outcomes: list[str] = []
    started = threading.Barrier(4)

    def search_until_closed():
        started.wait()
        try:
            while True:
                s.search(np.ones(64, np.float32), k=5)
        except vellum.ClosedError:
            outcomes.append("closed")
        except BaseException as e:  # noqa: BLE001
            outcomes.append(repr(e))

    threads = [threading.Thread(target=search_until_closed) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait()
    s.close()
    for t in threads:
        t.join(timeout=30)
    assert outcomes == ["closed"] * 3
    with vellum.Store.open(tmp_path / "s") as reopened:
        assert len(reopened) == 5000


@pytest.mark.parametrize("call", ["upsert", "transaction"])
def test_writes_wait_for_a_transaction_of_another_thread(store, call):
    tx = store.transaction()
    finished = threading.Event()

    def write():
        if call == "upsert":
            store.upsert("w", [0, 1, 0, 0])
        else:
            with store.transaction() as t2:
                t2.upsert("w", [0, 1, 0, 0])
        finished.set()

    t = threading.Thread(target=write)
    t.start()
    assert not finished.wait(0.1), "the write did not wait for the open transaction"
    tx.upsert("t", [1, 0, 0, 0])
    tx.commit()
    t.join(timeout=20)
    assert finished.is_set() and "w" in store and "t" in store
