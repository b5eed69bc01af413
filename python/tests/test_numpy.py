"""NumPy in and out: dtypes, shapes, memory layouts.

The decision these tests pin: any real input (float64, float16, integers, lists of numbers) is
converted to float32 as ``astype(np.float32)`` rounds it; bool, complex, string and object data
are refused with TypeError; a value float32 cannot hold (1e40) becomes infinity and is refused
with InvalidArgumentError. Only a C-contiguous, aligned float32 matrix is read in place; other
layouts are copied once, with the same result.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import vellum
from conftest import unit_rows


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.int64, np.uint8, np.float32])
def test_real_dtypes_are_stored_as_float32_rounded_like_astype(store, dtype):
    source = (np.arange(4) * 1.1 + 0.3) if np.issubdtype(dtype, np.floating) else np.arange(4) * 7
    vector = np.asarray(source, dtype=dtype)
    store.upsert("one", vector)
    store.upsert_many(["many"], vector[None, :])
    expected = vector.astype(np.float32).tobytes()
    assert store.get("one")[0].tobytes() == expected
    assert store.get("many")[0].tobytes() == expected


def test_float64_rounding_is_to_nearest_float32(store):
    value = np.float64(0.1)  # not a float32: rounds to 0.100000001490116...
    store.upsert("a", [value, -value, 1 / 3, 2.0**-140])
    stored = store.get("a")[0]
    assert stored.tobytes() == np.array([value, -value, 1 / 3, 2.0**-140], dtype=np.float32).tobytes()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_a_float64_beyond_float32_range_is_refused_not_clamped(store):
    with pytest.raises(vellum.InvalidArgumentError, match="inf"):
        store.upsert("a", np.array([1e40, 0, 0, 0]))
    with pytest.raises(vellum.InvalidArgumentError, match="inf"):
        store.upsert_many(["a"], np.array([[1e40, 0, 0, 0]]))


def test_python_sequences_of_numbers_are_vectors(store):
    store.upsert("list", [1, 2.5, np.float32(3), True])
    store.upsert("tuple", (1, 2, 3, 4))
    store.upsert("range", range(4))
    assert store.get("list")[0].tolist() == [1, 2.5, 3, 1]
    assert store.get("range")[0].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "vector",
    [
        np.array([1, 0, 0, 1], dtype=bool),
        np.array([1j, 0, 0, 0]),
        np.array(["1", "0", "0", "0"]),
        np.array([1, 0, 0, None], dtype=object),
        ["1", "0", "0", "0"],
        [1, 0, 0, None],
    ],
)
def test_non_real_data_is_refused_with_type_error(store, vector):
    with pytest.raises(TypeError):
        store.upsert("a", vector)
    assert len(store) == 0


@pytest.mark.parametrize("matrix", [np.ones((2, 4), dtype=bool), np.ones((2, 4), dtype=complex), np.full((2, 4), "x")])
def test_non_real_matrices_are_refused_with_type_error(store, matrix):
    with pytest.raises(TypeError):
        store.upsert_many(["a", "b"], matrix)
    with pytest.raises(TypeError):
        store.search_many(matrix)


def test_a_vector_must_be_one_dimensional_and_a_matrix_two(store):
    with pytest.raises(vellum.InvalidArgumentError, match="1-D"):
        store.upsert("a", np.ones((1, 4)))
    with pytest.raises(vellum.InvalidArgumentError, match="2-D"):
        store.upsert_many(["a"], np.ones(4, dtype=np.float32))
    with pytest.raises(vellum.InvalidArgumentError, match="2-D"):
        store.search_many(np.ones((1, 1, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        store.upsert_many(["a", "b"], [[1, 2, 3, 4], [1, 2]])  # ragged


def test_ids_and_metadata_must_be_strings(store):
    with pytest.raises(TypeError, match=r"ids\[1\]"):
        store.upsert_many(["a", 2], np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="not one str"):
        store.upsert_many("ab", np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match=r"metadata\[0\]"):
        store.upsert_many(["a"], np.ones((1, 4), np.float32), [{"k": 1}])
    with pytest.raises(TypeError, match="metadata"):
        store.upsert("a", [1, 0, 0, 0], {"k": None})
    with pytest.raises(TypeError, match="dict"):
        store.upsert("a", [1, 0, 0, 0], [("k", "v")])
    with pytest.raises(TypeError):
        store.upsert(7, [1, 0, 0, 0])
    assert len(store) == 0


def test_numpy_str_ids_are_accepted(store):
    store.upsert_many(np.array(["a", "b"]), np.eye(4, dtype=np.float32)[:2])
    assert "a" in store and "b" in store


@pytest.mark.parametrize(
    "layout",
    ["c", "fortran", "column-slice", "row-step", "big-endian", "misaligned", "read-only"],
)
def test_every_memory_layout_stores_the_same_bits(tmp_path, layout):
    base = unit_rows(7, 6, 4)
    if layout == "c":
        vectors = base
    elif layout == "fortran":
        vectors = np.asfortranarray(base)
    elif layout == "column-slice":
        wide = np.zeros((6, 8), dtype=np.float32)
        wide[:, ::2] = base
        vectors = wide[:, ::2]
    elif layout == "row-step":
        tall = np.zeros((12, 4), dtype=np.float32)
        tall[::2] = base
        vectors = tall[::2]
    elif layout == "big-endian":
        vectors = base.astype(">f4")
    elif layout == "misaligned":
        raw = np.zeros(base.nbytes + 1, dtype=np.uint8)
        vectors = raw[1:].view(np.float32).reshape(base.shape)
        vectors[:] = base
        assert not vectors.flags.aligned
    else:
        vectors = base.copy()
        vectors.flags.writeable = False
    with vellum.Store.create(tmp_path / "s", dim=4, segment_size=1 << 20) as s:
        s.upsert_many([str(i) for i in range(6)], vectors)
        for i in range(6):
            assert s.get(str(i))[0].tobytes() == base[i].tobytes(), (layout, i)
        ids, _ = s.search_many(vectors, k=1, metric="l2")
        assert ids[:, 0].tolist() == [str(i) for i in range(6)]
        s.upsert("strided", vectors[2])
        assert s.get("strided")[0].tobytes() == base[2].tobytes()


def test_upsert_many_leaves_the_callers_array_unchanged(store):
    vectors = unit_rows(3, 5, 4)
    before = vectors.copy()
    store.upsert_many([str(i) for i in range(5)], vectors)
    assert vectors.tobytes() == before.tobytes() and vectors.flags.writeable


def test_search_many_output_arrays_are_fresh_and_c_contiguous(store):
    store.upsert_many(["a", "b"], np.eye(4, dtype=np.float32)[:2])
    ids, scores = store.search_many(np.eye(4, dtype=np.float32), k=5, metric="dot")
    assert ids.flags.c_contiguous and scores.flags.c_contiguous and scores.flags.writeable
    assert ids.shape == (4, 5)
    assert (ids[:, 2:] == "").all() and np.isnan(scores[:, 2:]).all(), "k beyond the store: padded"
    assert ids[0, 0] == "a" and scores[0, 0] == 1.0


def test_get_many_returns_a_row_an_id_and_which_were_found(store):
    rows = unit_rows(3, 300, 4)
    ids = [f"id{i}" for i in range(300)]
    store.upsert_many(ids, rows)
    store.delete("id7")
    # More ids than a window of the reader, absent ones, repeats, from a generator.
    wanted = [f"id{(i * 37) % 300}" for i in range(500)] + ["nope", "id7", "id5"]
    vectors, found = store.get_many(iter(wanted))
    assert vectors.shape == (len(wanted), 4) and vectors.dtype == np.float32
    assert found.shape == (len(wanted),) and found.dtype == np.bool_
    assert vectors.flags.c_contiguous and vectors.flags.writeable
    for row, id in enumerate(wanted):
        got = store.get(id)
        assert bool(found[row]) == (got is not None), id
        expected = got[0] if got is not None else np.zeros(4, dtype=np.float32)
        assert vectors[row].tobytes() == expected.tobytes(), id
    empty, none_found = store.get_many([])
    assert empty.shape == (0, 4) and none_found.shape == (0,)
    with pytest.raises(TypeError):
        store.get_many("id1")
    with pytest.raises(TypeError):
        store.get_many(["id1", 2])


def peak_numpy_bytes(call) -> int:
    """The peak of memory traced while `call` runs (NumPy reports its array buffers to
    tracemalloc; the extension's own Rust allocations are not traced)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


@pytest.mark.parametrize("layout, copied", [("c", False), ("fortran", True), ("float64", True)])
def test_upsert_many_reads_a_c_contiguous_float32_array_in_place(tmp_path, layout, copied):
    rows, dim = 20_000, 64
    base = unit_rows(9, rows, dim)
    vectors = {"c": base, "fortran": np.asfortranarray(base), "float64": base.astype(np.float64)}[layout]
    ids = [str(i) for i in range(rows)]
    with vellum.Store.create(tmp_path / "s", dim=dim, segment_size=8 << 20) as s:
        peak = peak_numpy_bytes(lambda: s.upsert_many(ids, vectors))
        assert s.get(str(rows - 1))[0].tobytes() == base[-1].tobytes()
    if copied:
        assert peak >= base.nbytes, f"{layout}: converted into a float32 C-ordered copy"
    else:
        assert peak < base.nbytes // 10, f"no copy of the {base.nbytes}-byte array: peak {peak} bytes"
