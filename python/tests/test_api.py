"""The round trip of every call of the Python API."""

from __future__ import annotations

import datetime
import gc
import time

import numpy as np
import pytest

import vellum
from conftest import make_store, unit_rows


def test_insert_get_roundtrip_returns_float32_vector_and_metadata(store):
    lsn = store.insert("a", [1, 0, 0, 0], {"lang": "en", "source": "wiki"})
    assert isinstance(lsn, int) and lsn > 0, "insert returns the commit LSN"
    vector, metadata = store.get("a")
    assert vector.dtype == np.float32 and vector.shape == (4,)
    assert vector.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert metadata == {"lang": "en", "source": "wiki"}
    assert list(metadata) == ["lang", "source"], "metadata keeps insertion order"
    assert store.get("missing") is None


def test_get_returns_a_copy_the_caller_may_change(store):
    store.insert("a", [1, 2, 3, 4])
    vector, _ = store.get("a")
    vector[0] = 99
    assert store.get("a")[0].tolist() == [1, 2, 3, 4]


def test_commit_lsns_increase(store):
    first = store.insert("a", [1, 0, 0, 0])
    second = store.upsert("a", [0, 1, 0, 0])
    third = store.upsert_many(["b"], np.ones((1, 4), dtype=np.float32))
    assert first < second < third


def test_upsert_replaces_vector_and_metadata(store):
    store.insert("a", [1, 0, 0, 0], {"v": "1"})
    store.upsert("a", np.array([0, 1, 0, 0], dtype=np.float32))
    vector, metadata = store.get("a")
    assert vector.tolist() == [0, 1, 0, 0]
    assert metadata == {}, "upsert without metadata leaves none"
    assert len(store) == 1


def test_upsert_many_writes_every_row_with_its_metadata(store):
    vectors = unit_rows(1, 50, 4)
    ids = [f"doc-{i}" for i in range(50)]
    metadata = [{"n": str(i)} if i % 2 else None for i in range(50)]
    store.upsert_many(ids, vectors, metadata)
    assert len(store) == 50
    for i in (0, 1, 49):
        vector, meta = store.get(f"doc-{i}")
        assert vector.tobytes() == vectors[i].tobytes()
        assert meta == ({"n": str(i)} if i % 2 else {})


def test_upsert_many_accepts_a_tuple_or_generator_of_ids(store):
    store.upsert_many(("a", "b"), np.eye(4, dtype=np.float32)[:2])
    store.upsert_many((f"g{i}" for i in range(2)), np.eye(4, dtype=np.float32)[2:])
    assert sorted(id for id, _ in store.search([1, 1, 1, 1], k=10)) == ["a", "b", "g0", "g1"]


def test_upsert_many_of_no_rows_changes_nothing(store):
    store.upsert_many([], np.zeros((0, 4), dtype=np.float32))
    assert len(store) == 0


def test_upsert_many_is_all_or_nothing(store):
    vectors = np.ones((3, 4), dtype=np.float32)
    vectors[2, 1] = np.nan
    with pytest.raises(vellum.InvalidArgumentError, match=r"row 2 \(id \"c\"\)"):
        store.upsert_many(["a", "b", "c"], vectors)
    assert len(store) == 0, "a refused row aborts the whole batch"


def test_delete_returns_whether_the_id_existed(store):
    store.insert("a", [1, 0, 0, 0])
    assert store.delete("a") is True
    assert store.delete("a") is False
    assert store.get("a") is None and len(store) == 0


def test_transaction_commits_at_the_end_of_its_block(store):
    store.insert("c", [0, 0, 1, 0])
    with store.transaction() as tx:
        assert tx.active
        record = tx.upsert("b", [0, 1, 0, 0], {"k": "v"})
        assert isinstance(record, int)
        assert tx.delete("c") is True
        assert tx.get_vector("b").tolist() == [0, 1, 0, 0], "a transaction sees its own writes"
        assert store.get("b") is None, "readers see committed data only"
    assert not tx.active
    assert store.get("b")[1] == {"k": "v"}
    assert store.get("c") is None


def test_transaction_aborts_when_an_exception_leaves_its_block(store):
    store.insert("c", [0, 0, 1, 0])
    with pytest.raises(RuntimeError, match="boom"):
        with store.transaction() as tx:
            tx.upsert("b", [0, 1, 0, 0])
            tx.delete("c")
            raise RuntimeError("boom")
    assert store.get("b") is None and store.get("c") is not None
    store.insert("d", [1, 1, 1, 1]), "the writer lock was released by the abort"


def test_transaction_explicit_commit_and_abort(store):
    tx = store.transaction()
    tx.insert("a", [1, 0, 0, 0])
    lsn = tx.commit()
    assert isinstance(lsn, int) and store.get("a") is not None
    with pytest.raises(vellum.ClosedError):
        tx.upsert("b", [1, 0, 0, 0])
    with pytest.raises(vellum.ClosedError):
        tx.commit()
    tx = store.transaction()
    tx.insert("b", [1, 0, 0, 0])
    tx.abort()
    assert store.get("b") is None


def test_transaction_committed_inside_its_block_is_left_alone_at_exit(store):
    with store.transaction() as tx:
        tx.insert("a", [1, 0, 0, 0])
        tx.commit()
    assert store.get("a") is not None


def test_dropped_transaction_aborts_and_frees_the_writer(store):
    tx = store.transaction()
    tx.insert("a", [1, 0, 0, 0])
    del tx
    assert store.get("a") is None
    store.insert("b", [0, 1, 0, 0])
    assert len(store) == 1


def test_transaction_upsert_many_and_insert_conflict(store):
    store.insert("a", [1, 0, 0, 0])
    with store.transaction() as tx:
        tx.upsert_many(["x", "y"], np.eye(4, dtype=np.float32)[:2], [{"m": "1"}, {}])
        with pytest.raises(vellum.AlreadyExistsError):
            tx.insert("a", [0, 1, 0, 0])
    assert store.get("x")[1] == {"m": "1"} and store.get("y") is not None


def test_search_returns_ids_and_scores_best_first(store):
    store.insert("a", [1, 0, 0, 0], {"lang": "en"})
    store.insert("b", [0, 1, 0, 0], {"lang": "fr"})
    store.insert("c", [0.6, 0.8, 0, 0])
    hits = store.search([1, 0.1, 0, 0], k=2)
    assert [id for id, _ in hits] == ["a", "c"]
    assert all(isinstance(id, str) and isinstance(score, float) for id, score in hits)
    assert hits[0][1] > hits[1][1], "cosine: higher is closer"
    assert store.search([1, 0, 0, 0], k=3, metric="l2")[0] == ("a", 0.0), "l2: a distance"
    assert store.search([2, 0, 0, 0], k=1, metric="dot") == [("a", 2.0)]
    assert store.search([1, 0, 0, 0], filter={"lang": "fr"}) == [("b", 0.0)]
    assert store.search([1, 0, 0, 0], filter=("lang", "en")) == [("a", 1.0)]
    assert len(store.search([1, 0, 0, 0], k=10**12)) == 3, "k beyond the store returns every vector"


def test_search_many_returns_id_and_score_arrays_padded_past_the_hits(store):
    store.insert("a", [1, 0, 0, 0], {"lang": "en"})
    store.insert("b", [0, 1, 0, 0], {"lang": "fr"})
    ids, scores = store.search_many(np.eye(4, dtype=np.float32)[:2], k=3, metric="l2")
    assert ids.shape == scores.shape == (2, 3)
    assert ids.dtype == object and scores.dtype == np.float32
    assert ids.tolist() == [["a", "b", ""], ["b", "a", ""]]
    assert scores[0, 0] == 0 and np.isnan(scores[:, 2]).all(), "padding: '' ids, NaN scores"
    ids, scores = store.search_many([[1, 0, 0, 0]], k=2, filter={"lang": "fr"})
    assert ids.tolist() == [["b", ""]]
    ids, scores = store.search_many(np.eye(4, dtype=np.float32)[:2], k=3, metric="l2")
    for row, query in enumerate(np.eye(4, dtype=np.float32)[:2]):
        got = [(id, float(score)) for id, score in zip(ids[row], scores[row]) if id]
        assert got == store.search(query, k=3, metric="l2"), "each row is what search returns"


def test_search_many_of_no_queries_is_empty(store):
    ids, scores = store.search_many(np.zeros((0, 4), dtype=np.float32), k=5)
    assert ids.shape == scores.shape == (0, 5)


def test_len_dim_path_contains_repr(tmp_path):
    s = make_store(tmp_path / "s", dim=8)
    assert len(s) == 0 and s.dim == 8 and s.path == tmp_path / "s"
    s.insert("a", np.ones(8))
    assert "a" in s and "b" not in s
    assert "dim=8" in repr(s)
    s.close()
    assert s.closed and "closed" in repr(s)


def test_checkpoint_and_sync_return(store):
    store.insert("a", [1, 0, 0, 0])
    assert store.checkpoint() > 0
    store.sync()


def test_archive_now_returns_once_done_and_the_store_goes_on(store):
    for i in range(50):
        store.insert(f"a{i}", [float(i), 0, 0, 1])
    store.checkpoint()
    assert store.archive_now() is None
    store.insert("after", [0, 1, 0, 0])
    assert store.get("a49") is not None and store.get("after") is not None


def test_context_manager_closes_and_reopen_sees_everything(tmp_path):
    path = tmp_path / "s"
    with make_store(path) as s:
        s.insert("a", [1, 0, 0, 0], {"k": "v"})
    assert s.closed
    with vellum.Store.open(path) as s:
        assert s.get("a")[1] == {"k": "v"} and s.dim == 4


def test_a_store_dropped_without_close_keeps_its_commits_and_lets_go_of_the_lock(tmp_path):
    path = tmp_path / "s"
    s = make_store(path)
    s.insert("a", [1, 0, 0, 0])
    del s
    gc.collect()
    with vellum.Store.open(path) as s:
        assert s.get("a")[0].tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize("sync", ["always", "interval", "never"])
def test_every_sync_mode_keeps_commits_across_close(tmp_path, sync):
    path = tmp_path / "s"
    with make_store(path, sync=sync, sync_interval=0.01) as s:
        s.insert("a", [1, 0, 0, 0])
    with vellum.Store.open(path, sync=sync) as s:
        assert "a" in s


def test_restore_to_an_lsn_a_time_and_the_latest(tmp_path):
    src = tmp_path / "src"
    with make_store(src) as s:
        first = s.insert("a", [1, 0, 0, 0])
        time.sleep(0.002)
        between = datetime.datetime.now(datetime.timezone.utc)
        time.sleep(0.002)
        s.insert("b", [0, 1, 0, 0])
        report = vellum.restore(src, tmp_path / "by-lsn", lsn=first)
        assert report["target_lsn"] <= first and report["timeline"] == 2
    vellum.restore(src, tmp_path / "by-time", time=between)
    vellum.restore(src, tmp_path / "latest")
    vellum.restore(src, tmp_path / "naive-time", time=between.astimezone().replace(tzinfo=None))
    expected = {"by-lsn": {"a"}, "by-time": {"a"}, "latest": {"a", "b"}, "naive-time": {"a"}}
    for name, ids in expected.items():
        with vellum.Store.open(tmp_path / name) as r:
            assert {id for id in ("a", "b") if id in r} == ids, name


def test_restore_refuses_both_targets_and_an_existing_destination(tmp_path):
    src = tmp_path / "src"
    make_store(src).close()
    with pytest.raises(vellum.InvalidArgumentError, match="not both"):
        vellum.restore(src, tmp_path / "d", lsn=1, time=datetime.datetime.now())
    with pytest.raises(vellum.InvalidArgumentError, match="exists"):
        vellum.restore(src, src)
    with pytest.raises(TypeError):
        vellum.restore(src, tmp_path / "d", time=1234)


def test_backup_copies_an_open_store(store, tmp_path):
    store.insert("a", [1, 0, 0, 0])
    report = store.backup(tmp_path / "copy")
    assert report["records_redone"] >= 0
    with vellum.Store.open(tmp_path / "copy") as copy:
        assert copy.get("a")[0].tolist() == [1, 0, 0, 0]


def test_ids_lists_committed_ids_in_byte_order_within_prefix_after_and_limit(store):
    ids = ["doc-10", "doc-2", "doc-1", "img-1", "é", "Z", "a\nb", "😀"]
    store.upsert_many(ids, unit_rows(3, len(ids), 4))
    ordered = sorted(ids, key=lambda s: s.encode("utf-8"))
    assert ordered == sorted(ids), "UTF-8 byte order is code point order"
    assert store.ids() == ordered
    assert store.ids(prefix="doc-") == ["doc-1", "doc-10", "doc-2"], "bytes, not numbers"
    assert store.ids(after="doc-2") == ordered[ordered.index("doc-2") + 1 :]
    assert store.ids(prefix="doc-", after="doc-1", limit=1) == ["doc-10"]
    assert store.ids(prefix="", limit=0) == []
    pages, after = [], None
    while page := store.ids(limit=3, after=after):
        pages.append(page)
        after = page[-1]
    assert sum(pages, []) == ordered and all(len(p) <= 3 for p in pages), "pages chained by after"
    with pytest.raises(vellum.InvalidArgumentError):
        store.ids(limit=-1)
    with store.transaction() as tx:
        tx.insert("new", [1, 0, 0, 0])
        tx.delete("img-1")
        assert store.ids() == ordered, "an open transaction's changes are not listed"
    assert "new" in store.ids() and "img-1" not in store.ids()
    store.close()
    with pytest.raises(vellum.ClosedError):
        store.ids()


def test_a_store_of_one_row_takes_tens_of_megabytes_not_hundreds(tmp_path):
    # The defaults are the library's (16 MiB segments): log segments and arena files are
    # preallocated, so even one row takes a few segments' worth; with 64 MiB segments, the
    # binding's default before, it took 194 MB.
    path = tmp_path / "s"
    with vellum.Store.create(path, dim=4) as s:
        s.upsert("a", [1.0, 2.0, 3.0, 4.0])
    allocated = sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())
    assert allocated <= 64 << 20, f"{allocated / 1e6:.0f} MB for one row"
    with vellum.Store.open(path) as s:
        assert s.get("a") is not None
