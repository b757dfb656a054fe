"""The archival vector index's load, behind the open: a thread, a committed snapshot, one lock.

Interface::

    load = IndexLoad(db, build, name="...")   # build(reader) -> the index, reading through ``reader``
    load.start()                              # a thread from now (a read-only store: nothing yet)
    load.index                                # the index: waits for the thread, or loads it now
    load.loaded                               # the index, or None while it loads (never waits)
    load.stopping                             # close() asked the load to stop: build checks it
    load.close()                              # stop a load still running and wait for it

``build`` is called at most once successfully, with a reader whose ``reading(what)`` yields an
sqlite3 connection: in the thread, a :class:`Snapshot` (a read-only connection of the store's own,
inside one read transaction: one committed state, never the writer's uncommitted rows, never the
writer's lock); for a read-only store, the store's own :class:`vmem.storage._db.Database` (its
one read transaction is the snapshot the rest of it sees), at the first use, under the database's
lock and then the load's (the order every caller takes them in). The load holds its lock while it
runs, so the first use waits for it; a load that failed is run again by the first use, which
raises what went wrong. ``build`` raises :class:`Cancelled` when it sees ``stopping``. A child
forked while a load ran has no thread: its first use loads (``os.register_at_fork``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vmem.storage._db import Database, translate
from vmem.storage.errors import StoreClosedError

__all__ = ["Cancelled", "IndexLoad", "Snapshot"]

log = logging.getLogger("vmem.storage")


class Cancelled(BaseException):
    """close() stopped a background load (a BaseException, like GeneratorExit, so that no handler
    of load errors along the way takes it for a damaged file)."""


class Snapshot:
    """A read-only connection of its own on a store's database, inside one read transaction."""

    def __init__(self, path: Path) -> None:
        with translate(f"opening {path} for the index load"):
            self.conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                        check_same_thread=False)
            try:
                self.conn.execute("PRAGMA busy_timeout=5000")
                self.conn.execute("BEGIN")
            except BaseException:
                self.conn.close()
                raise

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """The connection, its errors translated as the store's are."""
        with translate(what):
            yield self.conn

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


Reader = Database | Snapshot


class IndexLoad:
    """One store's vector index: loaded in a thread of its own from :meth:`start` (see the module)."""

    def __init__(self, db: Database, build: Callable[[Reader], Any], *, name: str) -> None:
        self._db = db
        self._build = build
        self._name = name
        self._index: Any = None
        self._lock = threading.Lock()  # held by whoever loads
        self._thread: threading.Thread | None = None
        #: close() asked the load to stop: ``build`` checks it between its phases.
        self.stopping = False

    @classmethod
    def of(cls, db: Database, index: Any) -> IndexLoad:
        """A load that is done: ``index`` (a store that builds its index at open)."""
        load = cls(db, lambda _reader: index, name="")
        load._index = index
        return load

    def start(self) -> None:
        """Begin loading in a thread (a read-only store loads at its first use instead)."""
        if self._db.read_only or self._index is not None:
            return
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"vmem-index-load:{self._name}")
        _LOADING.add(self)
        self._thread.start()

    @property
    def loaded(self) -> Any:
        """The index, or None while it loads (never waits)."""
        return self._index

    @property
    def index(self) -> Any:
        """The index, waiting for the load to end, or loading it now if none ran or it failed."""
        index = self._index
        if index is not None:
            return index
        try:
            if self._db.read_only:
                with self._db.lock, self._lock:
                    if self._index is None:
                        self._db.check_open()
                        self._index = self._build(self._db)
                    return self._index
            with self._lock:
                if self._index is None:
                    self._db.check_open()
                    with Snapshot(self._db.path) as snapshot:
                        self._index = self._build(snapshot)
                return self._index
        except Cancelled:  # close() began while this load ran
            raise StoreClosedError(f"{self._db.path}: the store is closing") from None

    def close(self) -> None:
        """Ask a load still running to stop, and wait for it (it stops at its next check)."""
        self.stopping = True
        thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        try:
            with self._lock:
                if self._index is None and not self.stopping:
                    with Snapshot(self._db.path) as snapshot:
                        self._index = self._build(snapshot)
        except Cancelled:
            pass
        except Exception as e:  # noqa: BLE001 - the first use loads again and raises it
            log.debug("%s: loading the vector index in the background failed: %s", self._db.path, e)
        finally:
            _LOADING.discard(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # the thread that held it is not in this process
        self._thread = None


#: Loads running in a thread: a child forked meanwhile loads its own at first use.
_LOADING: weakref.WeakSet[IndexLoad] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for load in list(_LOADING):
        load._after_fork()
    _LOADING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
