"""The approximate-search index through the binding: create, search with ef and exact, updates
kept in it, its info, drop, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

import vellum
from conftest import make_store, unit_rows


def recall(store: vellum.Store, queries: np.ndarray, k: int) -> float:
    found = wanted = 0
    for q in queries:
        truth = {i for i, _ in store.search(q, k, "dot", exact=True)}
        got = store.search(q, k, "dot")
        found += sum(1 for i, _ in got if i in truth)
        wanted += len(truth)
    return found / wanted


def test_the_index_answers_searches_with_the_exact_scans_scores(tmp_path):
    store = make_store(tmp_path / "s", dim=16)
    rows = unit_rows(1, 2000, 16)
    store.upsert_many([str(i) for i in range(2000)], rows)
    assert store.index_info() is None
    store.create_index(metric="dot", m=16, ef_construction=64)
    info = store.index_info()
    assert info["metric"] == "dot" and info["live"] == 2000 and info["tombstones"] == 0
    queries = unit_rows(2, 50, 16)
    assert recall(store, queries, 10) >= 0.95
    exact = dict(store.search(queries[0], 2000, "dot", exact=True))
    for ident, score in store.search(queries[0], 10, "dot", ef=200):
        assert score == exact[ident], "the index reports the exact scan's score"
    ids, scores = store.search_many(queries[:5], 3, "dot", ef=50)
    assert ids.shape == (5, 3) and scores.dtype == np.float32
    store.close()


def test_writes_are_kept_in_the_index_and_aborted_ones_never_found(tmp_path):
    store = make_store(tmp_path / "s", dim=8)
    store.upsert_many([str(i) for i in range(300)], unit_rows(3, 300, 8))
    store.create_index(metric="l2")
    far = np.full(8, 40.0, dtype=np.float32)
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.insert("aborted", far)
            raise RuntimeError("abort")
    assert store.search(far, 1, "l2")[0][0] != "aborted"
    store.insert("new", far)
    assert store.search(far, 1, "l2")[0] == ("new", 0.0)
    assert store.delete("new")
    assert store.search(far, 1, "l2")[0][0] != "new"
    assert store.index_info()["tombstones"] >= 1
    store.close()
    reopened = vellum.Store.open(tmp_path / "s")
    assert reopened.index_info()["live"] == 300, "the index survives a reopen"
    reopened.close()


def test_index_errors_are_typed(tmp_path):
    store = make_store(tmp_path / "s", dim=4, page_size=4096)
    store.insert("a", [1, 0, 0, 0])
    with pytest.raises(vellum.NotFoundError):
        store.drop_index()
    with pytest.raises(vellum.InvalidArgumentError):
        store.create_index(m=1000)
    with pytest.raises(vellum.InvalidArgumentError):
        store.create_index(metric="manhattan")
    store.create_index()
    with pytest.raises(vellum.AlreadyExistsError):
        store.create_index()
    with pytest.raises(vellum.InvalidArgumentError):
        store.search([1, 0, 0, 0], 1, ef=-1)
    store.drop_index()
    assert store.index_info() is None
    assert store.search([1, 0, 0, 0], 1)[0][0] == "a"
    store.close()


def test_a_build_reports_its_phases_and_a_progress_that_raises_stops_it(tmp_path):
    store = make_store(tmp_path / "s", dim=16)
    store.upsert_many([str(i) for i in range(3000)], unit_rows(3, 3000, 16))
    seen = []
    store.create_index(metric="dot", progress=lambda phase, done, total: seen.append((phase, done, total)))
    phases = [phase for phase, _, _ in seen]
    order = ["linking", "calibrating", "writing"]
    assert sorted(phases, key=order.index) == phases, f"phases in order: {phases}"
    for phase in order:
        last = [(done, total) for p, done, total in seen if p == phase][-1]
        assert last[0] == last[1] > 0, f"{phase} ends at its total: {last}"
    assert ("linking", 3000, 3000) in seen
    store.drop_index()

    class Stop(Exception):
        pass

    def stop_when_writing(phase, done, total):
        if phase == "writing":
            raise Stop()

    with pytest.raises(Stop):
        store.create_index(metric="dot", progress=stop_when_writing)
    assert store.index_info() is None, "nothing of the stopped build is kept"
    store.create_index(metric="dot")
    assert store.index_info()["live"] == 3000
    store.close()


def test_a_progress_callback_may_read_the_store_but_a_write_raises_instead_of_waiting_forever(tmp_path):
    # The callback runs on the thread of the build, which holds the store's writer lock: a
    # write, a transaction or a close there would wait for the build, which waits for the
    # callback. (Before, `s.upsert` in the callback hung the process.)
    store = make_store(tmp_path / "s", dim=16)
    rows = unit_rows(4, 2000, 16)
    store.upsert_many([str(i) for i in range(2000)], rows)
    outcomes = {}

    def callback(phase, done, total):
        if outcomes:
            return
        outcomes["search"] = store.search(rows[0], 1, "dot")[0][0]
        outcomes["len"] = len(store)
        for name, write in [
            ("upsert", lambda: store.upsert("x", rows[1])),
            ("transaction", store.transaction),
            ("close", store.close),
            ("drop_index", store.drop_index),
        ]:
            with pytest.raises(vellum.InvalidArgumentError, match="inside a call that writes"):
                write()
            outcomes[name] = "refused"

    store.create_index(metric="dot", progress=callback)
    assert outcomes == {
        "search": "0",
        "len": 2000,
        "upsert": "refused",
        "transaction": "refused",
        "close": "refused",
        "drop_index": "refused",
    }
    assert store.index_info()["live"] == 2000 and "x" not in store
    store.upsert("x", rows[1])
    store.close()
