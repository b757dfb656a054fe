"""Where a memory lives: a directory (the embedded store) or a PostgreSQL URL naming an agent.

Interface::

    store = open_store("agents/ana", create=True)                               # a MemoryDir
    store = open_store("postgresql://vmem@db:5432/app?agent=ana", create=True)  # a PgStore
    is_url(location); display(location)
    shared = open_shared_blocks("team/shared-blocks.db")    # shared blocks: a file, or a postgresql:// URL

Both stores have one interface (recall, archival, blocks, state, events, journal,
transaction, savepoint, checkpoint, close...); the kernel and the commands take either
location through :func:`open_store`.
"""

from __future__ import annotations

import os
from typing import Any

from vmem.storage.memdir import MemoryDir
from vmem.storage.postgres import PgStore
from vmem.storage.postgres_connect import PgLocation, is_pg_location
from vmem.storage.shared_blocks import SharedBlockFile, SharedBlockStore

__all__ = ["Location", "Store", "display", "is_url", "open_shared_blocks", "open_store"]

#: A memory's location: a directory path, or a ``postgresql://...?agent=NAME`` URL.
Location = str | os.PathLike[str]

#: A store of one agent's memory: a directory, or an agent in a PostgreSQL database.
Store = MemoryDir | PgStore


def is_url(location: object) -> bool:
    """Whether ``location`` is a PostgreSQL URL rather than a directory."""
    return is_pg_location(location)


def display(location: Location) -> str:
    """The location as text for messages (a URL without its password)."""
    return str(PgLocation.parse(location)) if is_url(location) else os.fspath(location)  # type: ignore[arg-type]


def check_location(location: Location) -> None:
    """ValueError for an empty (or blank) location: "" would be the current directory."""
    if not os.fspath(location).strip():
        raise ValueError(f"a memory's location must not be empty, got {os.fspath(location)!r} "
                         "(name a directory, e.g. ./agent, or a postgresql:// URL)")


def open_store(location: Location, **kwargs: Any) -> Store:
    """Open the store at ``location`` with :meth:`MemoryDir.open`'s arguments: a
    :class:`~vmem.storage.postgres.PgStore` for a PostgreSQL URL, else a MemoryDir."""
    if is_url(location):
        return PgStore.open(location, **kwargs)  # type: ignore[arg-type]
    check_location(location)
    if isinstance(location, str) and "://" in location:
        raise ValueError(f"{location!r}: a memory's location is a directory or a postgresql:// URL")
    return MemoryDir.open(location, **kwargs)


def open_shared_blocks(location: Location, *, create: bool = True) -> SharedBlockStore:
    """The shared block store at ``location``: a file path (SQLite, made if missing and
    ``create``) or a ``postgresql://`` URL (the database's shared block tables; an ``agent``
    parameter is ignored)."""
    if is_url(location):
        from vmem.storage.postgres_shared import PgSharedBlocks  # the postgres extra

        return PgSharedBlocks(os.fspath(location))
    return SharedBlockFile(location, create=create)
