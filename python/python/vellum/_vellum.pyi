"""Type stubs of the extension module (its classes are re-exported by ``vellum``)."""

import os
import pathlib
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Tuple, Type, Union, final

import numpy as np
import numpy.typing as npt

__all__ = ["Store", "Transaction", "_restore", "_rust_upsert_batches", "_rust_search_loop"]

_Path = Union[str, "os.PathLike[str]"]
_Vector = Union[npt.ArrayLike, Sequence[float]]
_Metadata = Optional[Dict[str, str]]
_Filter = Union[None, Mapping[str, str], Tuple[str, str]]
_Metric = Literal["cosine", "l2", "dot"]
_Sync = Literal["always", "interval", "never"]

_RestorePhase = Literal["planning", "stage arena", "stage log", "find cut", "replay", "new timeline"]

@final
class Store:
    """An embedded, crash-safe vector store (see the package documentation)."""

    @staticmethod
    def create(
        path: _Path,
        dim: int,
        *,
        sync: _Sync = "always",
        sync_interval: float = 0.1,
        page_size: int = 16384,
        segment_size: int = 16777216,
        archive: bool = True,
        stored_writes: bool = False,
    ) -> "Store": ...
    @staticmethod
    def open(
        path: _Path,
        *,
        read_only: bool = False,
        sync: _Sync = "always",
        sync_interval: float = 0.1,
        archive: bool = True,
        stored_writes: bool = False,
    ) -> "Store": ...
    def insert(self, id: str, vector: _Vector, metadata: _Metadata = None) -> int: ...
    def upsert(self, id: str, vector: _Vector, metadata: _Metadata = None) -> int: ...
    def upsert_many(
        self,
        ids: Iterable[str],
        vectors: npt.ArrayLike,
        metadata: Optional[Iterable[_Metadata]] = None,
    ) -> int: ...
    def get(self, id: str) -> Optional[Tuple[npt.NDArray[np.float32], Dict[str, str]]]: ...
    def get_many(self, ids: Iterable[str]) -> Tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]: ...
    def ids(self, prefix: Optional[str] = None, after: Optional[str] = None, limit: Optional[int] = None) -> List[str]: ...
    def delete(self, id: str) -> bool: ...
    def transaction(self) -> "Transaction": ...
    def search(
        self,
        query: _Vector,
        k: int = 10,
        metric: _Metric = "cosine",
        filter: _Filter = None,
        *,
        ef: Optional[int] = None,
        exact: bool = False,
    ) -> List[Tuple[str, float]]: ...
    def create_index(
        self,
        metric: _Metric = "cosine",
        m: int = 16,
        ef_construction: int = 128,
        *,
        progress: Optional[Callable[[Literal["linking", "calibrating", "writing"], int, int], object]] = None,
    ) -> None: ...
    def drop_index(self) -> None: ...
    def index_info(self) -> Optional[Dict[str, Any]]: ...
    def search_many(
        self,
        queries: npt.ArrayLike,
        k: int = 10,
        metric: _Metric = "cosine",
        filter: _Filter = None,
        *,
        ef: Optional[int] = None,
        exact: bool = False,
    ) -> Tuple[npt.NDArray[np.object_], npt.NDArray[np.float32]]: ...
    def checkpoint(self) -> int: ...
    def archive_now(self) -> None: ...
    def sync(self) -> None: ...
    def backup(self, dest: _Path, *, progress: Optional[Callable[[_RestorePhase, int, int], object]] = None) -> Dict[str, Any]: ...
    def close(self) -> None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def dim(self) -> int: ...
    @property
    def path(self) -> pathlib.Path: ...
    def __len__(self) -> int: ...
    def __contains__(self, id: str, /) -> bool: ...
    def __enter__(self) -> "Store": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool: ...

@final
class Transaction:
    """A write transaction; commits at the end of a ``with`` block, aborts on an exception."""

    def insert(self, id: str, vector: _Vector, metadata: _Metadata = None) -> int: ...
    def upsert(self, id: str, vector: _Vector, metadata: _Metadata = None) -> int: ...
    def upsert_many(
        self,
        ids: Iterable[str],
        vectors: npt.ArrayLike,
        metadata: Optional[Iterable[_Metadata]] = None,
    ) -> None: ...
    def delete(self, id: str) -> bool: ...
    def get_vector(self, id: str) -> Optional[npt.NDArray[np.float32]]: ...
    def commit(self) -> int: ...
    def abort(self) -> None: ...
    @property
    def active(self) -> bool: ...
    def __enter__(self) -> "Transaction": ...
    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc_value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> bool: ...

def _restore(
    src: _Path,
    dest: _Path,
    lsn: Optional[int] = None,
    time_us: Optional[int] = None,
    progress: Optional[Callable[[_RestorePhase, int, int], object]] = None,
) -> Dict[str, Any]: ...
def _rust_upsert_batches(store: Store, ids: Iterable[str], vectors: npt.ArrayLike, batch: int) -> float: ...
def _rust_search_loop(store: Store, query: _Vector, k: int, metric: _Metric, iterations: int) -> float: ...
