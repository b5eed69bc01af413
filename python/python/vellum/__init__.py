"""Vellum: an embedded, crash-safe vector store.

Float32 embeddings of one dimension, each under a string id with ``str``-to-``str`` metadata,
kept in a directory behind a write-ahead log: every commit is durable when it returns (by
default), and a crash loses nothing acknowledged.

>>> import vellum, numpy as np
>>> with vellum.Store.create("store", dim=4) as s:            # doctest: +SKIP
...     s.insert("a", [1, 0, 0, 0], {"lang": "en"})
...     s.search([1, 0.1, 0, 0], k=1)
"""

from __future__ import annotations

import datetime as _datetime
import os as _os
from typing import Any as _Any, Callable as _Callable, Dict as _Dict, Optional as _Optional, Union as _Union

from ._errors import (
    AlreadyExistsError,
    ClosedError,
    CorruptedError,
    DiskFullError,
    IncompatibleError,
    InvalidArgumentError,
    NotFoundError,
    ReadOnlyError,
    StorageError,
    StoreLockedError,
    VellumError,
)
from ._vellum import Store, Transaction
from ._vellum import _restore

__all__ = [
    "Store",
    "Transaction",
    "restore",
    "VellumError",
    "AlreadyExistsError",
    "InvalidArgumentError",
    "CorruptedError",
    "StoreLockedError",
    "DiskFullError",
    "StorageError",
    "NotFoundError",
    "IncompatibleError",
    "ClosedError",
    "ReadOnlyError",
]

for _error in (
    VellumError,
    AlreadyExistsError,
    InvalidArgumentError,
    CorruptedError,
    StoreLockedError,
    DiskFullError,
    StorageError,
    NotFoundError,
    IncompatibleError,
    ClosedError,
    ReadOnlyError,
):
    _error.__module__ = "vellum"  # tracebacks say vellum.CorruptedError, pickles find it here
del _error

_EPOCH = _datetime.datetime(1970, 1, 1, tzinfo=_datetime.timezone.utc)


def restore(
    src: _Union[str, "_os.PathLike[str]"],
    dest: _Union[str, "_os.PathLike[str]"],
    lsn: _Optional[int] = None,
    time: _Optional[_datetime.datetime] = None,
    *,
    progress: _Optional[_Callable[[str, int, int], object]] = None,
) -> _Dict[str, _Any]:
    """Restores the store in ``src`` as it was at a point in time into a new store at ``dest``.

    ``lsn``: every record at or before this LSN (pass an LSN a commit returned, and that
    transaction is in). ``time``: every transaction committed at or before this instant (a
    naive ``datetime`` is local time, as ``datetime.timestamp`` takes it). Neither: everything.
    Both: :class:`InvalidArgumentError`. ``src`` is not modified (it may be open meanwhile);
    ``dest`` must not exist, and a failed restore leaves none. Returns the report as a dict:
    ``base_image_lsn``, ``target_lsn``, ``wal_bytes``, ``records_redone``, ``rolled_back``,
    ``segments_from_archive``, ``segments_live``, ``timeline``, ``duration`` (seconds).

    ``progress``, if given, is called about every tenth of a second, on this thread, as
    ``progress(phase, done, total)`` (``phase``: ``"planning"``, ``"stage arena"``, ``"stage
    log"`` (``done`` and ``total`` in bytes), ``"find cut"``, ``"replay"``, ``"new timeline"``
    (``total`` 0: no measure)), and once more at the end. Ctrl-C (``KeyboardInterrupt``), any
    signal handler that raises, or a ``progress`` that raises stops the restore at its next file
    operation with that exception: what it staged is removed, and there is no ``dest``.
    """
    time_us = None
    if time is not None:
        if not isinstance(time, _datetime.datetime):
            raise TypeError(f"time must be a datetime.datetime, not {type(time).__name__}")
        # Exact microseconds: timedelta arithmetic is integral, a float timestamp is not.
        delta = time.astimezone(_datetime.timezone.utc) - _EPOCH
        time_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return _restore(src, dest, lsn, time_us, progress)
