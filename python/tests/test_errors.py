"""Each error class: what raises it, and the built-in classes it also is."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import vellum
from conftest import child_env, make_store, python_child


def test_every_error_is_a_vellum_error_with_its_builtin_base():
    assert issubclass(vellum.AlreadyExistsError, KeyError)
    assert issubclass(vellum.InvalidArgumentError, ValueError)
    assert issubclass(vellum.DiskFullError, OSError) and issubclass(vellum.DiskFullError, vellum.StorageError)
    assert issubclass(vellum.NotFoundError, FileNotFoundError)
    assert issubclass(vellum.ClosedError, ValueError)
    for cls in (
        vellum.AlreadyExistsError,
        vellum.InvalidArgumentError,
        vellum.CorruptedError,
        vellum.StoreLockedError,
        vellum.DiskFullError,
        vellum.StorageError,
        vellum.NotFoundError,
        vellum.IncompatibleError,
        vellum.ClosedError,
    ):
        assert issubclass(cls, vellum.VellumError), cls
        assert cls.__module__ == "vellum", "errors print as vellum.<Name>"


def test_insert_of_a_present_id_raises_already_exists(store):
    store.insert("a", [1, 0, 0, 0])
    with pytest.raises(vellum.AlreadyExistsError) as caught:
        store.insert("a", [0, 1, 0, 0])
    assert str(caught.value) == 'id "a" already exists', "a sentence naming the id, not KeyError's quoted repr"
    assert store.get("a")[0].tolist() == [1, 0, 0, 0], "nothing changed"


def test_create_where_a_store_exists_raises_already_exists(tmp_path):
    make_store(tmp_path / "s").close()
    with pytest.raises(vellum.AlreadyExistsError) as caught:
        make_store(tmp_path / "s")
    assert str(caught.value) == f"a store at {tmp_path / 's'} already exists", "names the path"
    with pytest.raises(KeyError):
        make_store(tmp_path / "s")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s: s.insert("a", [1, 0, 0]), "3 components, the store holds 4"),
        (lambda s: s.insert("a", [1, 0, 0, float("nan")]), "NaN"),
        (lambda s: s.upsert("a", [1, 0, float("inf"), 0]), "inf"),
        (lambda s: s.insert("", [1, 0, 0, 0]), "id must be 1..=1024 bytes"),
        (lambda s: s.insert("x" * 1025, [1, 0, 0, 0]), "id must be 1..=1024 bytes"),
        (lambda s: s.insert("a", [1, 0, 0, 0], {"k": "v" * 70000}), "metadata encodes to more than"),
        (lambda s: s.search([1, 0, 0], k=1), "query has 3 components"),
        (lambda s: s.search([1, 0, 0, float("nan")], k=1), "not finite"),
        (lambda s: s.search([1, 0, 0, 0], k=0), "k must be at least 1"),
        (lambda s: s.search([1, 0, 0, 0], k=-3), "k must be at least 1"),
        (lambda s: s.search([1, 0, 0, 0], metric="manhattan"), "metric must be"),
        (lambda s: s.search([1, 0, 0, 0], filter={"a": "1", "b": "2"}), "exactly one"),
        (lambda s: s.upsert_many(["a", "b"], np.ones((3, 4), np.float32)), "2 ids for 3 vectors"),
        (lambda s: s.upsert_many(["a"], np.ones((1, 4), np.float32), [{}, {}]), "2 metadata entries for 1"),
        (lambda s: s.upsert_many(["a"], np.ones((1, 5), np.float32)), "must have 4 columns"),
        (lambda s: s.search_many(np.ones((2, 3), np.float32)), "must have 4 columns"),
    ],
)
def test_bad_input_raises_invalid_argument_and_changes_nothing(store, call, match):
    with pytest.raises(vellum.InvalidArgumentError, match=match):
        call(store)
    with pytest.raises(ValueError):
        call(store)
    assert len(store) == 0


@pytest.mark.parametrize("sync, interval", [("sometimes", 0.1), ("interval", 0.0), ("interval", -1.0)])
def test_bad_sync_options_raise_invalid_argument(tmp_path, sync, interval):
    with pytest.raises(vellum.InvalidArgumentError, match="sync"):
        make_store(tmp_path / "s", sync=sync, sync_interval=interval)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"dim": 0}, "dimension 0"),
        ({"dim": -1}, "dim out of range"),
        ({"dim": 2**40}, "dim out of range"),
        ({"dim": 5000}, "dimension 5000"),
        ({"dim": 4, "page_size": 5000}, "page"),
        ({"dim": 4, "page_size": -4096}, "page_size out of range"),
        ({"dim": 4, "segment_size": -1}, "segment_size out of range"),
    ],
)
def test_bad_creation_options_raise_invalid_argument_and_create_nothing(tmp_path, options, match):
    with pytest.raises(vellum.InvalidArgumentError, match=match):
        vellum.Store.create(tmp_path / "s", **options)
    assert not (tmp_path / "s" / "CONTROL").exists()


def test_damaged_control_file_raises_corrupted(tmp_path):
    path = tmp_path / "s"
    with make_store(path) as s:
        s.insert("a", [1, 0, 0, 0])
    control = bytearray((path / "CONTROL").read_bytes())
    for slot in (0, 512):
        control[slot + 100 : slot + 140] = bytes(b ^ 0xFF for b in control[slot + 100 : slot + 140])
    (path / "CONTROL").write_bytes(control)
    with pytest.raises(vellum.CorruptedError, match="control"):
        vellum.Store.open(path)


# "Store locked" is the library's Error::Locked, in this process and from another one.
def test_second_open_in_this_process_raises_store_locked(store):
    with pytest.raises(vellum.StoreLockedError, match="is open"):
        vellum.Store.open(store.path)


def test_open_of_a_store_another_process_holds_raises_store_locked(tmp_path):
    path = tmp_path / "s"
    make_store(path).close()
    holder = subprocess.Popen(
        python_child("import sys, vellum; s = vellum.Store.open(sys.argv[1]); print('open', flush=True); sys.stdin.read()", str(path)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(),
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(vellum.StoreLockedError):
            vellum.Store.open(path)
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0
    vellum.Store.open(path).close(), "free once the holder exits"


def test_open_of_a_missing_store_raises_not_found(tmp_path):
    with pytest.raises(vellum.NotFoundError) as caught:
        vellum.Store.open(tmp_path / "nothing")
    assert caught.value.errno == errno.ENOENT
    with pytest.raises(FileNotFoundError):
        vellum.Store.open(tmp_path / "nothing")


def test_os_errors_raise_storage_error_with_errno(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(vellum.StorageError) as caught:
        make_store(tmp_path / "file" / "s")
    assert caught.value.errno == errno.ENOTDIR
    assert isinstance(caught.value, OSError)


def test_closed_store_raises_closed_from_every_call(tmp_path):
    s = make_store(tmp_path / "s")
    s.insert("a", [1, 0, 0, 0])
    s.close()
    s.close()  # closing twice is allowed
    calls = [
        lambda: s.insert("b", [1, 0, 0, 0]),
        lambda: s.upsert("b", [1, 0, 0, 0]),
        lambda: s.upsert_many(["b"], np.ones((1, 4), np.float32)),
        lambda: s.get("a"),
        lambda: s.delete("a"),
        lambda: s.transaction(),
        lambda: s.search([1, 0, 0, 0]),
        lambda: s.search_many(np.ones((1, 4), np.float32)),
        lambda: s.checkpoint(),
        lambda: s.sync(),
        lambda: s.backup(tmp_path / "b"),
        lambda: len(s),
        lambda: "a" in s,
    ]
    for call in calls:
        with pytest.raises(vellum.ClosedError):
            call()
    assert s.dim == 4, "what the object knows without the store still answers"


def test_close_with_an_open_transaction_is_refused_and_the_store_stays_usable(store):
    tx = store.transaction()
    tx.insert("a", [1, 0, 0, 0])
    with pytest.raises(vellum.InvalidArgumentError, match="transaction"):
        store.close()
    tx.commit()
    assert "a" in store
    store.close()


def test_write_from_the_thread_holding_a_transaction_is_refused_instead_of_hanging(store):
    with store.transaction() as tx:
        with pytest.raises(vellum.InvalidArgumentError, match="open transaction"):
            store.insert("b", [1, 0, 0, 0])
        with pytest.raises(vellum.InvalidArgumentError, match="open transaction"):
            store.transaction()
        tx.insert("a", [1, 0, 0, 0])
        assert store.search([1, 0, 0, 0]) == [], "reads go on"
    store.insert("b", [1, 0, 0, 0])


DISK_FULL_CHILD = r"""
import json, os, subprocess, sys, tempfile
import numpy as np, vellum
mount = tempfile.mkdtemp()
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mount], check=True)
s = vellum.Store.create(os.path.join(mount, "s"), dim=64, page_size=4096, segment_size=64 << 10)
acked = 0
try:
    for batch in range(100000):
        s.upsert_many([f"{batch}-{i}" for i in range(50)], np.ones((50, 64), np.float32))
        acked += 50
    print(json.dumps({"error": None}))
except vellum.VellumError as e:
    present = sum(s.get(f"{b}-{i}") is not None for b in range(acked // 50) for i in range(50))
    print(json.dumps({"error": type(e).__name__, "os_error": isinstance(e, OSError), "errno": e.errno,
                      "acked": acked, "present": present, "len": len(s)}))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) to mount a small tmpfs")
def test_a_full_file_system_raises_disk_full_and_keeps_every_acknowledged_batch():
    # A 2 MiB tmpfs in a private mount namespace of a child (user namespace: no privilege needed).
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", *python_child(DISK_FULL_CHILD)],
        capture_output=True,
        env=child_env(),
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["error"] == "DiskFullError" and result["os_error"], result
    assert result["errno"] == errno.ENOSPC
    assert result["acked"] > 0 and result["present"] == result["acked"] == result["len"], result


def test_a_read_only_open_reads_more_files_than_the_process_may_open_and_a_writer_keeps_the_errno(tmp_path):
    # 4 KiB pages in 20 KiB files: 4,000 rows of 64 dims take over 80 arena files.
    path = tmp_path / "s"
    with vellum.Store.create(path, dim=64, page_size=4096, segment_size=5 * 4096) as s:
        s.upsert_many([f"r{i}" for i in range(4000)], np.ones((4000, 64), dtype=np.float32))
    files = len(list((path / "arena").iterdir()))
    assert files > 80, files
    code = """
import errno, resource, sys
import numpy as np
import vellum
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
with vellum.Store.open(sys.argv[1], read_only=True) as s:
    found = s.search(np.ones(64, dtype=np.float32), k=3)
    assert len(found) == 3, found
    assert len(s) == 4000
s = vellum.Store.open(sys.argv[1])
try:
    s.upsert_many([f"w{i}" for i in range(4000)], np.ones((4000, 64), dtype=np.float32))
    s.search(np.ones(64, dtype=np.float32), k=3)
    s.checkpoint()
except vellum.StorageError as e:
    assert e.errno == errno.EMFILE, e.errno
    assert "ulimit -n" in str(e), str(e)
    print("writer stopped")
try:
    s.close()
except vellum.ClosedError:
    pass  # a log stopped by the shortage; what it acknowledged stays
"""
    done = subprocess.run(python_child(code, str(path)), env=child_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "writer stopped" in done.stdout, "a writer keeps a descriptor for each arena file it uses"
    with vellum.Store.open(path) as s:
        assert len(s) >= 4000, "every row committed before stays"
        assert s.get("r3999")[0].tolist() == [1.0] * 64
