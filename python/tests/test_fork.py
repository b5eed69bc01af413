"""A store is not carried across fork(): a child's calls on a store its parent opened for
writing raise ClosedError and its garbage collection writes nothing, so the parent's store
stays whole; a store opened read-only reads on in forked workers, and many processes may open
one read-only at once."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

import vellum
from conftest import child_env

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")


def vec(i: float) -> np.ndarray:
    return np.array([i, 1.0, -i, 0.5], dtype=np.float32)


# Run in a fresh interpreter: forking pytest's own process (its threads, its capture) would
# make the test depend on them.
CHILD_WRITES = r"""
import os, sys, numpy as np, vellum
path = sys.argv[1]
s = vellum.Store.open(path)
for i in range(300):
    s.upsert(f"p{i}", np.full(4, i, dtype=np.float32))
pid = os.fork()
if pid == 0:
    refused = 0
    for call in (lambda: s.upsert("child", np.ones(4, dtype=np.float32)),
                 lambda: s.get("p1"),
                 lambda: s.search(np.ones(4, dtype=np.float32), 1),
                 lambda: s.delete("p2")):
        try:
            call()
        except vellum.ClosedError as e:
            refused += "fork" in str(e)
    s.close()          # writes nothing here
    del s              # nor does garbage collection
    os._exit(0 if refused == 4 else 1)
_, status = os.waitpid(pid, 0)
for i in range(300, 600):
    s.upsert(f"p{i}", np.full(4, i, dtype=np.float32))
s.close()
print(os.waitstatus_to_exitcode(status))
"""


def run_on_a_new_store(script: str, path) -> str:
    """Creates an empty store at ``path``, runs ``script`` on it in a fresh interpreter that
    must exit 0, and returns what it printed."""
    vellum.Store.create(path, dim=4).close()
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=child_env(), timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_forked_child_cannot_use_the_parents_writable_store_and_the_store_stays_whole(tmp_path):
    path = tmp_path / "store"
    printed = run_on_a_new_store(CHILD_WRITES, path)
    assert printed == "0", f"the child's four calls were not all refused as a fork's: {printed}"
    with vellum.Store.open(path) as s:
        assert len(s) == 600, "every row of the parent, before and after the fork"
        assert "child" not in s
        assert s.get("p599") is not None


def nearest(query: list) -> str:
    return SHARED.search(np.array(query, dtype=np.float32), k=1)[0][0]


SHARED: "vellum.Store"


def test_forked_workers_search_a_store_opened_read_only(tmp_path):
    global SHARED
    path = tmp_path / "store"
    with vellum.Store.create(path, dim=4) as s:
        for i in range(50):
            s.insert(f"v{i}", vec(i))
    SHARED = vellum.Store.open(path, read_only=True)
    try:
        with multiprocessing.get_context("fork").Pool(2) as pool:
            found = pool.map(nearest, [vec(i).tolist() for i in (3, 17, 42)])
        assert found == ["v3", "v17", "v42"]
    finally:
        SHARED.close()


def test_many_read_only_opens_share_a_store_and_refuse_writes(tmp_path):
    path = tmp_path / "store"
    with vellum.Store.create(path, dim=4) as s:
        s.insert("a", vec(1))
    first = vellum.Store.open(path, read_only=True)
    second = vellum.Store.open(path, read_only=True)
    assert first.get("a") is not None and second.get("a") is not None
    with pytest.raises(vellum.ReadOnlyError):
        first.insert("b", vec(2))
    with pytest.raises(vellum.StoreLockedError):
        vellum.Store.open(path)  # a writer waits for the readers to close
    first.close()
    second.close()
    with vellum.Store.open(path) as s:
        assert len(s) == 1, "the refused write changed nothing"


CHILD_CLOSES_DURING_A_CALL = r"""
import os, sys, threading, time, numpy as np, vellum
path = sys.argv[1]
s = vellum.Store.open(path)
rows = 200_000
ids = [f"b{i}" for i in range(rows)]
vectors = np.random.default_rng(1).random((rows, 4), dtype=np.float32)
started = threading.Event()
def long_call():
    started.set()
    s.upsert_many(ids, vectors)   # holds the store for the whole call, the GIL released
t = threading.Thread(target=long_call)
t.start()
started.wait()
time.sleep(0.05)
pid = os.fork()
if pid == 0:
    # The other thread's call does not exist here, and never gives the store back:
    # close must not wait for it.
    s.close()
    os._exit(0)
deadline = time.monotonic() + 30
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        print("hung")
        sys.exit(0)
    time.sleep(0.01)
t.join()
s.close()
print(os.waitstatus_to_exitcode(status))
"""


def test_a_forked_childs_close_does_not_wait_for_calls_of_threads_it_does_not_have(tmp_path):
    path = tmp_path / "store"
    printed = run_on_a_new_store(CHILD_CLOSES_DURING_A_CALL, path)
    assert printed == "0", f"the child's close hung or failed: {printed}"
    with vellum.Store.open(path) as s:
        assert len(s) == 200_000, "the parent's call committed whole"
