"""MemoryDir: one agent's memory in one directory.

Layout::

    <dir>/vmem.db (+ -wal, -shm)   SQLite, WAL mode: messages, passages, blocks, state, meta
    <dir>/archival.idx             the vector index: a cache, rebuilt from vmem.db when stale
    <dir>/recall.tix               the text index of the messages: a cache, likewise
    <dir>/archival.tix             the text index of the passages (SQLite archival): likewise
    <dir>/archival.milvus.db       Milvus Lite data, when archival="milvus" (local)
    <dir>/lock                     flock'ed while the store is open

Opening takes an exclusive lock on the directory, so two processes (or two
MemoryDir objects) never write the same store; the lock dies with its
process, so a crashed writer never blocks the next open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vmem.storage._db import Database
from vmem.storage.archival import ArchivalStore
from vmem.storage.blocks import Blocks, KernelState
from vmem.storage.chunk import DEFAULT_MAX_CHARS
from vmem.storage.events import EventLog
from vmem.storage.journal import Journal
from vmem.storage.errors import (
    ConfigMismatchError,
    ForeignFileError,
    StoreLockedError,
    StoreNotFoundError,
    VmemStorageError,
)
from vmem.storage.recall import RecallStore
from vmem.storage.records import utcnow

try:  # POSIX advisory locks; elsewhere the store is unlocked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["DB_NAME", "INDEX_NAME", "RECALL_TEXT_NAME", "ARCHIVAL_TEXT_NAME", "MILVUS_LITE_NAME", "MemoryDir",
           "MilvusConfig"]

log = logging.getLogger("vmem.storage")

DB_NAME = "vmem.db"
INDEX_NAME = "archival.idx"
RECALL_TEXT_NAME = "recall.tix"
ARCHIVAL_TEXT_NAME = "archival.tix"
MILVUS_LITE_NAME = "archival.milvus.db"
_LOCK_NAME = "lock"


class MilvusConfig:
    """Where a Milvus-backed archival store lives.

    ``uri``: None for Milvus Lite inside the memory directory
    (``archival.milvus.db``), a ``.db`` path for Milvus Lite elsewhere, or a
    server address (``http://host:19530``). ``collection``: defaults to
    ``vmem_<store id>`` so that agents can share one server. ``token``/
    ``db_name`` are passed to ``MilvusClient`` (the token is never stored).
    ``analyzer``: analyzer params of the text field (default ``{"type":
    "standard"}``; a server also knows ``"english"``, with stemming).
    ``index_type``: the dense index made for a new collection (``AUTOINDEX``:
    HNSW on a server and in Milvus Lite with faiss; ``FLAT`` for exact search).
    """

    def __init__(
        self,
        uri: str | os.PathLike[str] | None = None,
        *,
        collection: str | None = None,
        token: str | None = None,
        db_name: str | None = None,
        analyzer: dict[str, Any] | None = None,
        index_type: str = "AUTOINDEX",
    ) -> None:
        self.uri = os.fspath(uri) if uri is not None else None
        self.collection = collection
        self.token = token
        self.db_name = db_name
        self.analyzer = analyzer
        self.index_type = index_type

    @classmethod
    def parse(cls, spec: str) -> MilvusConfig:
        """``"milvus"``, ``"milvus:<uri>"`` or ``"milvus://host:port"`` to a config."""
        if spec == "milvus":
            return cls()
        if spec.startswith("milvus://"):
            return cls("http://" + spec[len("milvus://") :])
        if spec.startswith("milvus:"):
            return cls(spec[len("milvus:") :])
        raise ValueError(f"not a milvus archival spec: {spec!r}")

    def __repr__(self) -> str:
        return f"MilvusConfig(uri={self.uri!r}, collection={self.collection!r})"


def _parse_archival(spec: Any) -> dict[str, Any] | None:
    if spec is None:
        return None
    if isinstance(spec, MilvusConfig):
        return {"backend": "milvus", "config": spec}
    if isinstance(spec, str):
        if spec == "sqlite":
            return {"backend": "sqlite"}
        if spec.startswith("milvus"):
            return {"backend": "milvus", "config": MilvusConfig.parse(spec)}
    raise ValueError(f"archival must be 'sqlite', 'milvus', 'milvus:<uri>' or a MilvusConfig, got {spec!r}")


class MemoryDir:
    """One agent's durable memory: ``recall``, ``archival``, ``blocks`` and ``state``.

    Open with :meth:`open`; use as a context manager or call :meth:`close`.
    Every write method returns only after its transaction committed; group
    writes with :meth:`transaction` to make them atomic together.
    """

    recall: RecallStore
    archival: ArchivalStore
    blocks: Blocks
    state: KernelState
    events: EventLog
    journal: Journal

    def __init__(self) -> None:  # use MemoryDir.open()
        raise TypeError("use MemoryDir.open(path, ...)")

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        embedder: Any = None,
        create: bool = True,
        archival: str | MilvusConfig | None = None,
        durability: str = "full",
        index: str = "hnsw",
        max_passage_chars: int = DEFAULT_MAX_CHARS,
        index_autosave: int = 50_000,
        verify: bool = False,
        read_only: bool = False,
        on_reembed: Callable[[int, int], None] | None = None,
    ) -> MemoryDir:
        """Open (or create) the store in directory ``path``.

        ``embedder``: a :class:`vmem.embed.Embedder`; None opens an existing store
        with the embedder it records when that is one of
        :data:`vmem.local_models.EMBEDDERS` (else, and for a new store,
        :func:`vmem.embed.default_embedder`). A store opened with another embedder
        than the one that made its vectors re-embeds every passage first, in one
        transaction (``on_reembed(done, total)`` is called after each batch: a
        progress bar), so vectors of two embedders never mix. ``archival``: ``"sqlite"`` (the default
        for a new store), ``"milvus"`` (Milvus Lite in the directory),
        ``"milvus:<uri>"`` or a :class:`MilvusConfig`; None reopens whatever the
        store was created with. ``durability``: ``"full"`` (default: fsync at
        every commit, survives power loss) or ``"normal"`` (survives a process
        crash; the last commits may be lost on power loss). ``index``:
        ``"hnsw"`` or ``"exact"`` (brute force). ``verify``: run SQLite's
        ``quick_check`` (reads the whole file). ``index_autosave``: rewrite an
        index file (vectors, or a text index) after this many unsaved changes to it
        (0: only at checkpoint/close). ``read_only``: open beside a writer (another
        process may hold the store): no lock is taken, nothing is written (the index
        caches are reconciled in memory only), reads see the last commit, and every
        write raises ReadOnlyStoreError.

        Raises StoreNotFoundError (create=False, nothing there),
        ForeignFileError, CorruptStoreError, SchemaVersionError,
        StoreLockedError, ConfigMismatchError, BackendError.
        """
        self = object.__new__(cls)
        self.path = Path(path)
        self._closed = True
        self._lock_fd: int | None = None
        db_path = self.path / DB_NAME
        if self.path.exists() and not self.path.is_dir():
            raise ForeignFileError(f"{self.path} is a file, not a memory directory")
        if (read_only or not create) and not db_path.exists():
            raise StoreNotFoundError(f"no vmem store in {self.path}")
        self.read_only = read_only
        if not read_only:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock()
        try:
            self._open(embedder, archival, durability, index, max_passage_chars, index_autosave, verify, create,
                       on_reembed)
        except BaseException:
            self._release()
            raise
        return self

    def _lock(self) -> None:
        fd = os.open(self.path / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise StoreLockedError(f"{self.path} is open in another process (or MemoryDir)") from None
        self._lock_fd = fd

    def _release(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # drops the flock
            self._lock_fd = None

    def _open(
        self,
        embedder: Any,
        archival: Any,
        durability: str,
        index: str,
        max_chars: int,
        autosave: int,
        verify: bool,
        create: bool,
        on_reembed: Callable[[int, int], None] | None = None,
    ) -> None:
        from vmem.text import fts_query

        try:
            from vmem.rank import fuse
        except ImportError:  # hybrid search needs it; the rest works without
            fuse = None
        self._db = Database(self.path / DB_NAME, create=create, durability=durability, read_only=self.read_only)
        if verify:
            self._db.quick_check()
        if self._db.get_meta("store_id") is None and not self.read_only:
            with self._db.transaction("initialising the store"):
                self._db.set_meta("store_id", uuid.uuid4().hex)
                self._db.set_meta("created", utcnow().timestamp())
        #: A unique id of this store (made at creation).
        self.store_id: str = self._db.get_meta("store_id")
        if embedder is None:
            from vmem.local_models import recorded_embedder

            embedder = recorded_embedder(self._db.get_meta("embedder"))
        self.embedder = embedder
        self._on_reembed = on_reembed
        from vmem.storage.lexical import LexicalCache

        self.recall = RecallStore(
            self._db, LexicalCache(self._db, self.path / RECALL_TEXT_NAME, "messages", self.store_id, autosave=autosave)
        )
        self.blocks = Blocks(self._db)
        self.state = KernelState(self._db)
        self.events = EventLog(self._db)
        self.journal = Journal(self._db)
        self.archival = self._open_archival(archival, index, max_chars, autosave, fts_query, fuse)
        self._closed = False

    def _open_archival(
        self, spec: Any, index: str, max_chars: int, autosave: int, fts_query: Any, fuse: Any
    ) -> ArchivalStore:
        want = _parse_archival(spec)
        have = self._db.get_meta("archival")
        if have is None:
            want = want or {"backend": "sqlite"}
        elif want is None:
            want = {"backend": have["backend"]}
            if have["backend"] == "milvus":
                want["config"] = MilvusConfig(have.get("uri"), collection=have.get("collection"))
        elif want["backend"] != have["backend"]:
            raise ConfigMismatchError(
                f"{self.path} keeps its archival passages in {have['backend']}, not {want['backend']}"
            )
        if want["backend"] == "sqlite":
            if have is None:
                self._db.set_meta("archival", {"backend": "sqlite"})
            from vmem.index import IndexFormatError, IndexMismatchError

            if index == "hnsw":
                from vmem.index import PageIndex as index_cls
            elif index == "exact":
                from vmem.index import ExactIndex as index_cls
            else:
                raise ValueError(f"index must be 'hnsw' or 'exact', got {index!r}")
            from vmem.storage.lexical import LexicalCache
            from vmem.storage.sqlite import SqliteArchival

            lexical = LexicalCache(self._db, self.path / ARCHIVAL_TEXT_NAME, "passages", self.store_id,
                                   autosave=autosave)
            return SqliteArchival(
                self._db,
                self.embedder,
                self.path / INDEX_NAME,
                index_cls=index_cls,
                lexical=lexical,
                index_errors=(IndexFormatError, IndexMismatchError, OSError, EOFError, ValueError),
                fts_query=fts_query,
                fuse=fuse,
                autosave=autosave,
                max_chars=max_chars,
                on_reembed=self._on_reembed,
            )
        cfg: MilvusConfig = want["config"]
        collection = cfg.collection or (have or {}).get("collection") or f"vmem_{self.store_id}"
        uri = cfg.uri if cfg.uri is not None else str(self.path / MILVUS_LITE_NAME)
        from vmem.storage.milvus import MilvusArchival

        store = MilvusArchival(
            uri=uri,
            collection=collection,
            embedder=self.embedder,
            token=cfg.token,
            db_name=cfg.db_name,
            analyzer=cfg.analyzer,
            index_type=cfg.index_type,
            allocate=self._allocate_passage_ids,
            next_serial=lambda: int(self._db.get_meta("next_passage_serial", 1)),
            db=self._db,
            fts_query=fts_query,
            fuse=fuse,
            max_chars=max_chars,
        )
        want_emb = {"name": self.embedder.name, "dim": int(self.embedder.dim)}
        have_emb = self._db.get_meta("embedder")
        if have_emb is not None and have_emb != want_emb and len(store):
            store.close()
            raise ConfigMismatchError(
                f"the Milvus collection {collection!r} holds vectors of embedder {have_emb['name']!r}, "
                f"not {want_emb['name']!r} (re-embedding a Milvus collection is not supported)"
            )
        if not self.read_only:
            try:
                with self._db.transaction("recording the archival backend"):
                    self._db.set_meta("archival", {"backend": "milvus", "uri": cfg.uri, "collection": collection})
                    self._db.set_meta("embedder", want_emb)
                store.reconcile()  # SQLite is the truth: rows a crash left uncommitted go
            except BaseException:
                store.close()
                raise
        return store

    def _allocate_passage_ids(self, n: int) -> int:
        """Reserve ``n`` passage serials (in the running transaction); return the first."""
        with self._db.transaction("allocating passage ids"):
            first = int(self._db.get_meta("next_passage_serial", 1))
            self._db.set_meta("next_passage_serial", first + n)
        return first

    # -- use

    @contextlib.contextmanager
    def transaction(self) -> Iterator[MemoryDir]:
        """Group recall, block, state and SQLite-archival writes into one atomic commit.

        Nested calls join the outer transaction. Vector-index updates are
        applied after the commit. (Milvus archival writes are not part of it.)
        """
        with self._db.transaction("transaction"):
            yield self

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[MemoryDir]:
        """A nested transaction inside an open :meth:`transaction`: an exception rolls back only
        what was written inside it (and propagates). SQLite-archival writes take part; Milvus
        writes do not."""
        with self._db.savepoint():
            yield self

    def checkpoint(self) -> None:
        """Write the index caches and fold the WAL into the database file."""
        self._db.check_open()
        self.archival.checkpoint()
        self.recall._lex.save()
        self._db.checkpoint()

    def checkpoint_in_background(self, min_wal_bytes: int = 4 << 20) -> None:
        """Fold the WAL into the database file on a background thread, off the caller's path,
        once it holds ``min_wal_bytes`` (the kernel calls it while the LLM is thinking).
        Nothing waits for it."""
        self._db.checkpoint_in_background(min_wal_bytes)

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

    def close(self) -> None:
        """Save caches, close the database and release the directory (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self.archival.close()
            except VmemStorageError as e:
                log.warning("%s: closing archival storage: %s", self.path, e)
            try:
                self.recall._lex.save()
            except (VmemStorageError, OSError) as e:
                log.warning("%s: saving the recall text index: %s", self.path, e)
            try:
                self._db.checkpoint()
            except VmemStorageError as e:
                log.warning("%s: final WAL checkpoint: %s", self.path, e)
        finally:
            self._release()

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed

    def __enter__(self) -> MemoryDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MemoryDir {str(self.path)!r} {state}>"

