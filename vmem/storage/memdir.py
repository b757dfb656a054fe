"""MemoryDir: one agent's memory in one directory.

Layout::

    <dir>/vmem.db (+ -wal, -shm)   SQLite, WAL mode: messages, passages, blocks, state, meta
    <dir>/archival.idx             the vector index's graph (its vectors are read from vmem.db): a cache, rebuilt when stale
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
import struct
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from vmem.rank import fuse
from vmem.storage._db import CHECKED, Database
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
_WITNESS = b"vmemcmt1"  # the lock file's first 16 bytes: this, then the commit count (u64 LE)


def _name(table: str, key: object) -> str:
    from vmem.pageid import PageKind, make_page_id

    if table == "messages":
        return f"{make_page_id(PageKind.MESSAGE, int(key)):#x}"  # type: ignore[call-overload]
    if table == "passages":
        return f"{make_page_id(PageKind.PASSAGE, int(key)):#x}"  # type: ignore[call-overload]
    return repr(key)


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
    path: Path  #: the directory
    _closed: bool
    _lock_fd: int | None  #: the lock file, held (flock) while open for writing
    _lock_dir_fd: int | None
    read_only: bool
    store_id: str  #: a unique id of this store (made at creation)
    embedder: Any

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
        caches are reconciled in memory only), every read sees the commit that was the
        last when it opened (one snapshot: reopen to see newer ones), and every write
        raises ReadOnlyStoreError.

        Raises StoreNotFoundError (create=False, nothing there),
        ForeignFileError, CorruptStoreError, SchemaVersionError,
        StoreLockedError, ConfigMismatchError, BackendError.
        """
        self = object.__new__(cls)
        self.path = Path(path)
        self._closed = True
        self._lock_fd = None
        self._lock_dir_fd = None
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
        """flock the directory itself (a lock file can be deleted behind a writer's back, and a
        second writer would then lock a new one) and the ``lock`` file (what older versions lock)."""
        lock = self.path / _LOCK_NAME
        if lock.is_symlink() or lock.exists() and not lock.is_file():
            raise ForeignFileError(f"{lock} is not a lock file (a directory or a link is in its place): remove it")
        fds = []
        try:
            fds.append(os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)))
            fds.append(os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644))
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            raise ForeignFileError(f"{self.path}: cannot take the store's lock: {exc}") from None
        if fcntl is not None:
            for fd in fds:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    for f in fds:
                        os.close(f)
                    raise StoreLockedError(f"{self.path} is open in another process (or MemoryDir)") from None
        self._lock_fd, self._lock_dir_fd = fds[1], fds[0]

    def _release(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # drops the flock
            self._lock_fd = None
        if self._lock_dir_fd is not None:
            os.close(self._lock_dir_fd)
            self._lock_dir_fd = None

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

        self._db = Database(self.path / DB_NAME, create=create, durability=durability, read_only=self.read_only)
        self._witness_commits()
        if verify:
            self._db.quick_check()
        if self._db.get_meta("store_id") is None and not self.read_only:
            with self._db.transaction("initialising the store"):
                self._db.set_meta("store_id", uuid.uuid4().hex)
                self._db.set_meta("created", utcnow().timestamp())
        #: A unique id of this store (made at creation).
        self.store_id = self._db.get_meta("store_id")
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
            from vmem.index import ExactIndex, IndexFormatError, IndexMismatchError, PageIndex

            index_cls: type[PageIndex] | type[ExactIndex]
            if index == "hnsw":
                index_cls = PageIndex
            elif index == "exact":
                index_cls = ExactIndex
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
        self.recall.checkpoint()
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
        """Save caches, fold the WAL, close the database and release the directory (idempotent).

        Every save is tried even when one fails (a full disk): the lock is released whatever
        happens, and then the first failure is raised as a VmemStorageError naming what failed
        (the others as notes). Nothing is lost by such a failure: the data was committed with
        each transaction, and the caches (the index files) are rebuilt or caught up at open.
        """
        if self._closed:
            return
        self._closed = True
        failures: list[tuple[str, BaseException]] = []
        try:
            for what, save in (("saving the archival storage's caches", self.archival.close),
                               ("saving the recall text index", self.recall.checkpoint),
                               ("the final WAL checkpoint", self._db.checkpoint)):
                try:
                    save()
                except Exception as exc:  # noqa: BLE001 - OSError (a full disk), VmemStorageError: raised below
                    log.warning("%s: %s: %s", self.path, what, exc)
                    failures.append((what, exc))
        finally:
            try:
                self._release()
            except Exception as exc:  # noqa: BLE001
                failures.append(("closing the database", exc))
        if failures:
            what, first = failures[0]
            also = "".join(f"; also {w} failed: {e}" for w, e in failures[1:])  # in the message: add_note is 3.11+
            raise VmemStorageError(f"{self.path}: closing: {what} failed: {first}{also}. The directory is released "
                                   f"and nothing committed is lost (caches are rebuilt at open)") from first

    def _witness_commits(self) -> None:
        """Compare the database's commit count with the one recorded outside it (in the lock
        file, written after each commit: a torn or lost WAL cannot take it back), and keep
        recording it. A database behind its witness lost committed transactions: how many is
        :attr:`lost_commits` (and a warning). A witness that lags (a power loss before the
        page cache reached the disk, a store of before schema 4) only under-counts."""
        db = self._db
        #: Committed write transactions the database lost (a WAL tail lost in a crash), as far
        #: as the witness knows; 0 when none.
        self.lost_commits = 0
        path = self.path / _LOCK_NAME
        try:
            raw = os.pread(self._lock_fd, 16, 0) if self._lock_fd is not None else path.read_bytes()[:16]
        except OSError:
            raw = b""
        if len(raw) == 16 and raw[:8] == _WITNESS:
            (seen,) = struct.unpack("<Q", raw[8:])
            if seen > db.commits:
                self.lost_commits = seen - db.commits
                log.warning("%s: the database is %d committed transaction(s) behind what was acknowledged "
                            "(a lost WAL tail?)", self.path, self.lost_commits)
        if self._lock_fd is not None:
            fd = self._lock_fd

            def witness(n: int) -> None:
                os.pwrite(fd, _WITNESS + struct.pack("<Q", n), 0)

            db.commit_sink = witness
            if self.lost_commits == 0:
                os.pwrite(fd, _WITNESS + struct.pack("<Q", db.commits), 0)

    def verify(self) -> list[str]:
        """Verify every record against the checksum written with it, SQLite's own structure
        (``integrity_check``) and the caches against the database: a list of what is damaged,
        empty when nothing is. Reads everything; fixes nothing."""
        problems: list[str] = []
        db = self._db
        with db.reading("verifying the store") as c:
            for row in c.execute("PRAGMA integrity_check(100)"):
                if row[0] != "ok":
                    problems.append(f"sqlite: {row[0]}")
            for table, (key, cols) in CHECKED.items():
                bad = [r[0] for r in c.execute(
                    f"SELECT {key} FROM {table} WHERE crc IS NULL OR crc != vmem_crc({cols}) ORDER BY 1")]
                for k in bad[:50]:
                    problems.append(f"{table} {_name(table, k)}: does not match its checksum (damaged)")
                if len(bad) > 50:
                    problems.append(f"{table}: {len(bad) - 50} more damaged records")
        if self.lost_commits:
            problems.append(f"{self.lost_commits} committed transaction(s) are missing (a lost WAL tail)")
        problems += verify_caches(self)
        return problems

    @property
    def version(self) -> int:
        """Committed write transactions: the store's version (as :attr:`PgStore.version` is an agent's)."""
        return self._db.commits

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


def verify_caches(store: Any) -> list[str]:
    """The in-process caches of ``store`` (a MemoryDir or a PgStore: the recall and archival text
    indexes, the archival vector index) checked against its database: what does not hold exactly
    the stored records. Reads everything; fixes nothing."""
    problems: list[str] = []
    archival = store.archival
    for what, ok in (("the recall text index", store.recall.verify_index),
                     ("the archival text index", getattr(archival, "lexical", None) and archival.lexical.verify),
                     ("the archival vector index", getattr(archival, "verify_index", None))):
        if ok is None or ok is False:
            continue
        try:
            if not ok():
                problems.append(f"{what} does not hold exactly the stored records")
        except Exception as exc:  # noqa: BLE001 - a cache that cannot even be asked is damaged
            problems.append(f"{what}: {type(exc).__name__}: {exc}")
    return problems
