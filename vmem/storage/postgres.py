"""PgStore: one agent's memory in a PostgreSQL database (the interface of MemoryDir).

Location: ``postgresql://user[:password]@host:5432/db?agent=NAME`` (any libpq URL parameter
besides ``agent`` is passed on: ``sslmode=require``...). Many agents share one database; the
tables are in schema ``vmem``, made on first use (the role needs CREATE on the database the
first time, and pgvector must be installable: ``CREATE EXTENSION vector``). Every tier is
there: recall, archival (pgvector column), blocks, kernel state and journal, the event log.

Unlike a directory, an agent may be open in several processes at once: each transaction
holds the agent's lock in the database (see :mod:`vmem.storage.postgres_db`), and each
process's caches (the text and vector indexes) catch up with the others' commits.
``read_only=True`` reads one consistent snapshot and never blocks a writer.

The text and vector indexes are built from the tables when an agent is first opened in a
process; when it is closed they are kept (the last ``CACHED_AGENTS`` agents, an LRU) with the
version they reflect, and the next open takes them over and catches them up with what was
committed since (rows added after the index's last id; a rebuild when rows were deleted).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vmem.index import ExactIndex, PageIndex
from vmem.rank import fuse
from vmem.storage.chunk import DEFAULT_MAX_CHARS
from vmem.storage.errors import ConfigMismatchError, VmemStorageError
from vmem.storage.memdir import verify_caches
from vmem.storage.postgres_archival import PgArchival
from vmem.storage.postgres_connect import PgLocation
from vmem.storage.postgres_db import PgDatabase, new_store_id
from vmem.storage.postgres_tiers import PgBlocks, PgEventLog, PgJournal, PgKernelState, PgLexical, PgRecall
from vmem.storage.records import utcnow
from vmem.text import fts_query

__all__ = ["PgStore"]

log = logging.getLogger("vmem.storage")


class PgStore:
    """One agent's durable memory in PostgreSQL: ``recall``, ``archival``, ``blocks``, ``state``,
    ``events``, ``journal`` (the interface of :class:`vmem.storage.MemoryDir`). Open with
    :meth:`open`; close with :meth:`close` or a ``with`` block."""

    recall: PgRecall
    archival: PgArchival
    blocks: PgBlocks
    state: PgKernelState
    events: PgEventLog
    journal: PgJournal
    path: str  #: the location, for messages (the password left out)
    read_only: bool
    store_id: str  #: a unique id of this store (made at creation)
    embedder: Any
    _db: PgDatabase
    _closed: bool
    _index_kind: str

    def __init__(self) -> None:  # use PgStore.open()
        raise TypeError("use PgStore.open(url, ...)")

    @classmethod
    def open(cls, url: str | PgLocation, *, embedder: Any = None, create: bool = True, archival: Any = None,
             durability: str = "full", index: str = "hnsw", max_passage_chars: int = DEFAULT_MAX_CHARS,
             index_autosave: int = 50_000, verify: bool = False, read_only: bool = False,
             lock_timeout_ms: int | None = None) -> "PgStore":
        """Open (or create) the agent named by ``url``.

        The arguments of :meth:`MemoryDir.open` where they apply: ``archival`` must be None or
        ``"postgres"`` (the passages live in the same database); ``durability`` is the
        server's (``synchronous_commit``: "full" keeps it on, "normal" turns it off for this
        store's transactions); ``index_autosave`` and ``verify`` have nothing to do here.
        ``lock_timeout_ms``: how long a transaction waits for the agent's lock held by another
        process before StoreLockedError (default 5 s).
        """
        if archival not in (None, "postgres"):
            raise ConfigMismatchError(f"a PostgreSQL store keeps its passages in PostgreSQL, not {archival!r}")
        if durability not in ("full", "normal", "extra"):
            raise ValueError(f"durability must be one of ['extra', 'full', 'normal'], got {durability!r}")
        self = object.__new__(cls)
        self._closed = True
        kw = {} if lock_timeout_ms is None else {"lock_timeout_ms": lock_timeout_ms}
        self._db = PgDatabase(url, create=create, read_only=read_only, **kw)
        self.path = self._db.path
        self.read_only = read_only
        try:
            with self._db.held():  # one connection for the open's reads
                self._open(embedder, index, max_passage_chars, durability)
        except BaseException:
            if self._db.created:
                self._db.drop_agent()
            self._db.close()
            raise
        return self

    def _open(self, embedder: Any, index: str, max_chars: int, durability: str) -> None:
        db = self._db
        db.async_commit = durability == "normal"
        if db.get_meta("store_id") is None and not self.read_only:
            with db.transaction("initialising the store"):
                db.set_meta("store_id", new_store_id())
                db.set_meta("created", utcnow().timestamp())
                db.set_meta("archival", {"backend": "postgres"})
        self.store_id = db.get_meta("store_id")
        if embedder is None:
            from vmem.embed import default_embedder

            embedder = default_embedder()
        self.embedder = embedder
        kind = index
        cached = _take_cached(self._key(), embedder.name, kind)
        # The Pg tiers inherit the SQLite tiers' logic and override what touches the database: a
        # PgDatabase (PgLexical) stands in for the Database (LexicalCache) their base classes name.
        self.recall = PgRecall(db, PgLexical(db, "messages", cached.recall if cached else None))  # type: ignore[arg-type]
        self.blocks = PgBlocks(db)  # type: ignore[arg-type]
        self.state = PgKernelState(db)  # type: ignore[arg-type]
        self.events = PgEventLog(db)  # type: ignore[arg-type]
        self.journal = PgJournal(db)  # type: ignore[arg-type]
        index_cls: type[PageIndex] | type[ExactIndex]
        if index == "hnsw":
            index_cls = PageIndex
        elif index == "exact":
            index_cls = ExactIndex
        else:
            raise ValueError(f"index must be 'hnsw' or 'exact', got {index!r}")
        self.archival = PgArchival(db, embedder, index_cls=index_cls, fts_query=fts_query, fuse=fuse,
                                   max_chars=max_chars, text_index=cached.passages if cached else None,
                                   vector_index=cached.vectors if cached else None)
        self._index_kind = kind
        if cached is not None and cached.version != db.seen:  # changed since: catch up now
            for hook in db.stale_hooks:
                hook()
        self._closed = False

    def _key(self) -> tuple[str, str]:
        return self._db.location.dsn, self._db.location.agent

    # -- use

    @property
    def database_url(self) -> str:
        """The database's URL as given (password and all; no ``agent`` parameter): for other
        stores kept in the same database, such as shared blocks. Never print it."""
        return self._db.location.dsn

    @property
    def agent(self) -> str:
        """The agent's name."""
        return self._db.location.agent

    @property
    def created(self) -> bool:
        """Whether this open added the agent to the database."""
        return self._db.created

    @property
    def shared(self) -> bool:
        """True: other processes may write this agent between this object's transactions."""
        return True

    @property
    def strict(self) -> bool:
        """Whether a transaction that finds the agent changed elsewhere is refused (StaleStoreError)
        after the caches caught up, so that an owner with an in-memory image can reload it."""
        return self._db.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._db.strict = bool(value)

    @property
    def version(self) -> int:
        """The agent's version this object's caches reflect (committed write transactions)."""
        return self._db.seen

    @contextlib.contextmanager
    def transaction(self) -> Iterator["PgStore"]:
        """Group writes into one atomic commit holding the agent's lock (nested calls join)."""
        with self._db.transaction("transaction"):
            yield self

    @contextlib.contextmanager
    def savepoint(self) -> Iterator["PgStore"]:
        """A nested transaction inside an open :meth:`transaction`."""
        with self._db.savepoint():
            yield self

    @contextlib.contextmanager
    def snapshot(self) -> Iterator["PgStore"]:
        """Reads that see one consistent state: a REPEATABLE READ read-only transaction (a
        read-only store is always in one). Not for writes."""
        db = self._db
        if db.read_only or db.in_transaction:
            yield self
            return
        with db.held() as c:
            from vmem.storage.postgres_connect import translate

            with translate("opening a snapshot"):
                c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            db._depth += 1
            try:
                yield self
            finally:
                db._depth -= 1
                with translate("closing a snapshot"):
                    c.execute("COMMIT")

    def release(self) -> None:
        """Roll back the transaction a StaleStoreError kept open (see PgDatabase._begin)."""
        self._db.release()

    def sync(self) -> bool:
        """Catch the caches up with other processes' commits now (see PgDatabase.sync)."""
        return self._db.sync()

    def refresh(self) -> None:
        """A read-only store: read a new snapshot."""
        self._db.refresh()

    def checkpoint(self) -> None:
        """Nothing to fold: the server owns durability. Checks the store is open."""
        self._db.check_open()

    def checkpoint_in_background(self, min_wal_bytes: int = 4 << 20) -> None:
        """Nothing to do on PostgreSQL (the server checkpoints)."""
        self._db.check_open()

    #: Committed transactions lost before this open: always 0 here. PostgreSQL's own write-ahead log
    #: makes a commit durable before it is acknowledged, and a cluster that lost it would say so itself;
    #: the count the directory store keeps beside its WAL has nothing to catch.
    lost_commits = 0

    def verify(self) -> list[str]:
        """What is damaged (empty when nothing is): the caches against the tables, and the data
        checksums PostgreSQL keeps for its own pages (on by default since PostgreSQL 18) through
        ``pg_stat_database.checksum_failures``. Per-record checksums are the directory store's:
        here the server checks its pages itself. Reads everything; fixes nothing."""
        problems: list[str] = []
        with self._db.reading("verifying the store") as c:
            row = c.execute("SELECT coalesce(checksum_failures, 0) FROM pg_stat_database "
                            "WHERE datname = current_database()").fetchone()
        if row and row[0]:
            problems.append(f"postgresql: {row[0]} data checksum failure(s) in this database")
        return problems + verify_caches(self)

    def stats(self) -> dict[str, Any]:
        """Counts of what the store holds."""
        return {
            "messages": len(self.recall),
            "passages": len(self.archival),
            "blocks": len(self.blocks),
            "state_keys": len(self.state),
            "archival_backend": self.archival.backend,
            "embedder": self.embedder.name,
        }

    def drop(self) -> None:
        """Delete this agent and everything it holds from the database, and close."""
        self._closed = True
        _take_cached(self._key(), None, None)
        self._db.drop_agent()

    def close(self) -> None:
        """Give the connection back (idempotent)."""
        if self._closed:
            self._db.close()
            return
        self._closed = True
        try:
            self.archival.close()
        except VmemStorageError as e:
            log.warning("%s: closing archival storage: %s", self.path, e)
        db = self._db
        if not db.caches_stale and not db.in_transaction:
            _keep_cached(self._key(), _Cached(db.seen, self.embedder.name, self._index_kind, self.recall.lexical.index,
                                              self.archival.lexical.index, self.archival.index))
        db.close()

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    def __enter__(self) -> "PgStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<PgStore {self.path!r} {'closed' if self._closed else 'open'}>"


# -- this process's caches of agents it closed, for the next open (an LRU)

#: Agents whose text and vector indexes a process keeps after closing them.
CACHED_AGENTS = 64


@dataclass
class _Cached:
    version: int  #: the agent's version the indexes reflect
    embedder: str
    kind: str  #: "hnsw" or "exact"
    recall: Any
    passages: Any
    vectors: Any


_CACHE: OrderedDict[tuple[str, str], _Cached] = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _take_cached(key: tuple[str, str], embedder: str | None, kind: str | None) -> _Cached | None:
    """The indexes kept for ``key`` if they were built for this embedder and index kind (removed
    from the cache: one open uses them at a time)."""
    with _CACHE_LOCK:
        got = _CACHE.pop(key, None)
    if got is None or got.embedder != embedder or got.kind != kind:
        return None
    return got


def _keep_cached(key: tuple[str, str], cached: _Cached) -> None:
    with _CACHE_LOCK:
        _CACHE[key] = cached
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHED_AGENTS:
            _CACHE.popitem(last=False)


def forget_cached() -> None:
    """Drop every kept index (e.g. to measure a cold open)."""
    with _CACHE_LOCK:
        _CACHE.clear()
