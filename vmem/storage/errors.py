"""Exceptions raised by the storage tiers.

Every failure of the storage layer itself is a :class:`VmemStorageError`, so a
caller can catch one class; sqlite3 and pymilvus exceptions never escape raw.
Bad arguments (a naive datetime, a negative page) stay ``ValueError`` /
``TypeError``::

    VmemStorageError(VmemError)
     +-- StoreNotFoundError         open(create=False) on a directory with no store
     +-- ForeignFileError           the file is not a vmem store (not SQLite, or another application's)
     +-- CorruptStoreError          the SQLite file is damaged
     +-- SchemaVersionError         written by a newer (or unknown) schema version
     +-- StoreLockedError           another process has the directory open
     +-- StoreClosedError           used after close()
     +-- ReadOnlyStoreError         a write to a store opened read-only
     +-- StoreOwnedError            a write that must go through the kernel memory that holds the store
     +-- ConfigMismatchError        reopened with a different archival backend or embedder than it can accept
     +-- BackendError               the archival backend is unavailable or failed (e.g. pymilvus missing)
     +-- UnsupportedError(NotImplementedError)  the archival backend cannot do this (Milvus: facts' intervals)
     +-- NotFoundError(KeyError)    no message, passage or block with that id / label
     +-- BlockError                 a core-memory block rule was broken
          +-- BlockExistsError      create() of a label that exists
          +-- ReadOnlyBlockError    set() on a read-only block
          +-- BlockLimitError       a value longer than the block's limit
          +-- EditConflictError     an edit of a shared block met a value it cannot apply to
"""

from __future__ import annotations

from vmem.errors import VmemError

__all__ = [
    "BackendError",
    "BlockError",
    "BlockExistsError",
    "BlockLimitError",
    "EditConflictError",
    "ConfigMismatchError",
    "CorruptStoreError",
    "ForeignFileError",
    "NotFoundError",
    "ReadOnlyBlockError",
    "ReadOnlyStoreError",
    "SchemaVersionError",
    "StoreClosedError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreOwnedError",
    "UnsupportedError",
    "VmemStorageError",
]


class VmemStorageError(VmemError):
    """Base class of every storage-layer failure (a :class:`vmem.errors.VmemError`)."""


class StoreNotFoundError(VmemStorageError):
    """``MemoryDir.open(path, create=False)`` found no store at ``path``."""


class ForeignFileError(VmemStorageError):
    """The database file is not a vmem store (not SQLite, or another application's SQLite file)."""


class CorruptStoreError(VmemStorageError):
    """The SQLite database is damaged (malformed pages, missing schema objects)."""


class SchemaVersionError(VmemStorageError):
    """The store was written with a schema version this code does not know."""


class ReadOnlyStoreError(VmemStorageError):
    """A write to a store opened with ``read_only=True``."""


class StoreOwnedError(VmemStorageError):
    """A write through the store's own API to what an open kernel memory accounts (its blocks):
    it must go through the memory."""


class StoreLockedError(VmemStorageError):
    """Another process (or another MemoryDir in this process) has the directory open."""


class StoreClosedError(VmemStorageError):
    """The store was used after ``close()``."""


class ConfigMismatchError(VmemStorageError):
    """The store was reopened with settings it cannot accept (e.g. another archival backend)."""


class BackendError(VmemStorageError):
    """The archival backend is unavailable or reported a failure."""


class UnsupportedError(VmemStorageError, NotImplementedError):
    """The archival backend cannot do what was asked (it says which backend can)."""


class NotFoundError(VmemStorageError, KeyError):
    """No record with the given page id or label (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class BlockError(VmemStorageError):
    """A core-memory block operation broke a block rule."""


class BlockExistsError(BlockError):
    """``create()`` of a block label that already exists."""


class ReadOnlyBlockError(BlockError):
    """``set()`` on a block marked read-only."""


class BlockLimitError(BlockError):
    """A block value longer than the block's character limit."""


class EditConflictError(BlockError):
    """A block edit that cannot apply to the value it meets (the old text is gone, the line no
    longer exists, or a conditional rewrite met a value another writer changed)."""
