"""The exceptions Vellum raises. Every one is a :class:`VellumError`.

The extension module raises these classes (it imports this module the first time it needs one),
so ``except vellum.VellumError`` catches every error the store reports, and the built-in base
each class also has lets code written against the standard library catch it as usual:
``KeyError`` for an id that exists, ``ValueError`` for bad input, ``OSError`` for the disk.
"""

from __future__ import annotations

__all__ = [
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


class VellumError(Exception):
    """The base class of every error Vellum raises."""


class AlreadyExistsError(VellumError, KeyError):
    """``insert`` of an id that is present, or ``Store.create`` where a store exists."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; this one is a sentence.
        return str(self.args[0]) if self.args else "already exists"


class InvalidArgumentError(VellumError, ValueError):
    """Input Vellum refuses: a vector of the wrong dimension, NaN or infinity, an empty or
    oversized id, oversized metadata, an unknown metric or sync mode, ``k < 1``, a restore
    destination that exists. Nothing was changed."""


class CorruptedError(VellumError):
    """On-disk bytes failed validation (a checksum, magic number, length or address)."""


class StoreLockedError(VellumError):
    """The store is open elsewhere: in another process, or through another ``Store`` object
    of this process. A store has one owner at a time."""


class StorageError(VellumError, OSError):
    """An operating-system I/O error; ``errno`` is set when the system gave one."""


class DiskFullError(StorageError):
    """The file system has no room left (``ENOSPC``/``EDQUOT``). Nothing acknowledged is lost:
    every commit that returned is still there."""


class NotFoundError(VellumError, FileNotFoundError):
    """The store (or a file it needs) does not exist."""


class IncompatibleError(VellumError):
    """The files were written by a format version this build cannot read."""


class ClosedError(VellumError, ValueError):
    """The store was closed, or the transaction has already committed or aborted; or the
    store was opened for writing by the process this one was forked from (a store is not
    carried across ``fork()``: open it in the child, read-only for a reader)."""


class ReadOnlyError(VellumError):
    """A write to a store opened with ``read_only=True``: nothing was changed."""
