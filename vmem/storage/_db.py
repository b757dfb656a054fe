"""The SQLite database behind a MemoryDir: opening, schema, transactions.

Invariants:

1. One process has a store open at a time (an exclusive ``flock`` on
   ``<dir>/lock``; see memdir.py), and within it one :class:`Database` object;
   its connection is used under ``self.lock`` only, so SQLite never sees two
   writers.
2. A write is acknowledged (its method returns) only after ``COMMIT``
   returned; with ``synchronous=FULL`` the WAL is fsync'ed by then, so the
   write survives a process kill *and* a power loss.
3. Post-commit hooks run after the outermost ``COMMIT``, in order; they update
   caches (the HNSW index) and must not write to SQLite. On rollback they are
   dropped, so a cache never holds a row the database does not.
4. Every sqlite3 exception leaving this package is translated to a
   :class:`~vmem.storage.errors.VmemStorageError` (``_translate``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Literal

import msgpack
import numpy as np

from vmem.storage import vecblob
from vmem.storage.errors import (
    CorruptStoreError,
    ForeignFileError,
    ReadOnlyStoreError,
    SchemaVersionError,
    StoreClosedError,
    StoreLockedError,
    VmemStorageError,
)

__all__ = ["APPLICATION_ID", "CHECKED", "SCHEMA_VERSION", "Database", "record_crc"]

log = logging.getLogger("vmem.storage")

#: ``PRAGMA application_id`` of a vmem store: b"vmem" as a big-endian int.
APPLICATION_ID = int.from_bytes(b"vmem", "big")
#: ``PRAGMA user_version``: the schema version this code writes and reads. Version 1
#: kept FTS5 tables (and triggers) for text search; version 2 drops them for the
#: stores' own index caches (vmem/storage/lexical.py), records each passage's insert
#: call (``grp``), and adds the event log, the passage ledger and the journal.
#: Version 3 gives passages an interval: ``valid_from`` (when the fact began to hold;
#: filled with ``ts`` for older passages), ``invalid_at`` and ``superseded_by`` (when it
#: stopped, and the passage serial that replaced it; NULL while it holds).
#: Version 4 (the *checksums* migration, ``_MIGRATIONS[3]``) adds a ``crc`` to every
#: message, passage, block, state and journal row, kept by triggers (see :func:`record_crc`),
#: and the ``commits`` counter. Version 5 (``_MIGRATIONS[4]``) stores each passage's embedding
#: as float16 of its unit vector (:mod:`vmem.storage.vecblob`), not float32: half the bytes
#: (the checksums follow, by the update trigger). Older stores are migrated on open, one version
#: at a time.
SCHEMA_VERSION = 5

_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;

CREATE TABLE messages(
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    role    TEXT NOT NULL,
    content TEXT NOT NULL,
    ts      REAL NOT NULL,
    meta    BLOB
);
CREATE INDEX messages_ts ON messages(ts);
CREATE INDEX messages_role_ts ON messages(role, ts);

CREATE TABLE passages(
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    text      TEXT NOT NULL,
    hash      BLOB NOT NULL UNIQUE,
    ts        REAL NOT NULL,
    tags      BLOB,
    embedding BLOB,
    grp       INTEGER,
    valid_from    REAL,
    invalid_at    REAL,
    superseded_by INTEGER
);
CREATE INDEX passages_ts ON passages(ts);
CREATE INDEX passages_valid_from ON passages(valid_from);
CREATE INDEX passages_invalid_at ON passages(invalid_at) WHERE invalid_at IS NOT NULL;
CREATE TABLE passage_tags(
    tag        TEXT NOT NULL,
    passage_id INTEGER NOT NULL REFERENCES passages(id) ON DELETE CASCADE,
    PRIMARY KEY(tag, passage_id)
) WITHOUT ROWID;
CREATE INDEX passage_tags_pid ON passage_tags(passage_id);

CREATE TABLE blocks(
    label       TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    "limit"     INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    read_only   INTEGER NOT NULL DEFAULT 0,
    position    INTEGER NOT NULL
);

CREATE TABLE kv(key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;

CREATE TABLE events(seq INTEGER PRIMARY KEY, event BLOB NOT NULL);

CREATE TABLE archival_ids(id INTEGER PRIMARY KEY);

CREATE TABLE journal(seq INTEGER PRIMARY KEY, entry BLOB NOT NULL);
"""

# Schema 4, "checksums": every record carries a checksum of its fields, written with it by a
# trigger (so no write can forget it), verified by MemoryDir.verify(); and a count of the
# committed write transactions (see Database.commits).
_CHECKSUMS = [
    "ALTER TABLE messages ADD COLUMN crc INTEGER",
    "ALTER TABLE passages ADD COLUMN crc INTEGER",
    "ALTER TABLE blocks ADD COLUMN crc INTEGER",
    "ALTER TABLE kv ADD COLUMN crc INTEGER",
    "ALTER TABLE journal ADD COLUMN crc INTEGER",
    "CREATE TABLE commits(n INTEGER NOT NULL)",
    "INSERT INTO commits(n) VALUES (0)",
]
#: What each checksummed table's crc covers, and the key that names a row.
CHECKED = {
    "messages": ("id", "role, content, ts, meta"),
    "passages": ("id", "text, hash, ts, tags, embedding, grp, valid_from, invalid_at, superseded_by"),
    "blocks": ("label", 'label, value, "limit", description, read_only'),
    "kv": ("key", "key, value"),
    "journal": ("seq", "seq, entry"),
}
for _table, (_key, _cols) in CHECKED.items():
    _new = ", ".join(f"NEW.{c}" for c in _cols.split(", "))
    _CHECKSUMS += [
        f"CREATE TRIGGER {_table}_crc_i AFTER INSERT ON {_table} BEGIN "
        f"UPDATE {_table} SET crc = vmem_crc({_new}) WHERE {_key} = NEW.{_key}; END",
        f"CREATE TRIGGER {_table}_crc_u AFTER UPDATE OF {_cols} ON {_table} BEGIN "
        f"UPDATE {_table} SET crc = vmem_crc({_new}) WHERE {_key} = NEW.{_key}; END",
        f"UPDATE {_table} SET crc = vmem_crc({_cols})",
    ]


def record_crc(*fields: Any) -> int:
    """A record's checksum: BLAKE2b-64 of its fields (msgpack), as SQLite's signed 64-bit integer."""
    blob = msgpack.packb(list(fields), use_bin_type=True)
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little", signed=True)

#: Schema objects every store must have (checked at open).
_REQUIRED = {"meta", "messages", "passages", "passage_tags", "blocks", "kv", "events", "archival_ids", "journal",
             "commits", *(f"{t}_crc_{w}" for t in CHECKED for w in "iu")}

def _add_columns(c: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
    """ALTER TABLE ``table`` ADD each of ``columns`` (name -> type) it does not have yet."""
    have = {r[1] for r in c.execute(f"PRAGMA table_info({table})")}
    for name, kind in columns.items():
        if name not in have:
            c.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


# Schema 5, "float16": every stored embedding rewritten as vecblob's float16. A row that does not
# match its checksum is left as it is: converting it would give it a new, matching checksum and
# hide the damage from MemoryDir.verify().
_FLOAT16: list[str | Callable[[sqlite3.Connection], None]] = [
    f"UPDATE passages SET embedding = vmem_f32_to_f16(embedding) "
    f"WHERE embedding IS NOT NULL AND length(embedding) % 4 = 0 AND crc = vmem_crc({CHECKED['passages'][1]})",
]

#: Statements (or functions of the connection) that bring a store of an older schema version
#: to the next one (run once, all versions in one transaction).
_MIGRATIONS: dict[int, list[str | Callable[[sqlite3.Connection], None]]] = {
    1: [
        "DROP TRIGGER IF EXISTS messages_ai",
        "DROP TRIGGER IF EXISTS messages_ad",
        "DROP TRIGGER IF EXISTS messages_au",
        "DROP TRIGGER IF EXISTS passages_ai",
        "DROP TRIGGER IF EXISTS passages_ad",
        "DROP TABLE IF EXISTS messages_fts",
        "DROP TABLE IF EXISTS passages_fts",
        "ALTER TABLE passages ADD COLUMN grp INTEGER",
        "CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, event BLOB NOT NULL)",
        "CREATE TABLE IF NOT EXISTS archival_ids(id INTEGER PRIMARY KEY)",
        "CREATE TABLE IF NOT EXISTS journal(seq INTEGER PRIMARY KEY, entry BLOB NOT NULL)",
    ],
    2: [
        lambda c: _add_columns(c, "passages", {"valid_from": "REAL", "invalid_at": "REAL", "superseded_by": "INTEGER"}),
        "UPDATE passages SET valid_from = ts WHERE valid_from IS NULL",
        "CREATE INDEX IF NOT EXISTS passages_valid_from ON passages(valid_from)",
        "CREATE INDEX IF NOT EXISTS passages_invalid_at ON passages(invalid_at) WHERE invalid_at IS NOT NULL",
    ],
    3: [*_CHECKSUMS],  # the checksums migration
    4: _FLOAT16,
}


def _f32_to_f16(blob: bytes) -> bytes:
    """Schema 5's conversion of one stored embedding (float32 blob -> vecblob's float16)."""
    if not isinstance(blob, bytes) or len(blob) % 4:
        raise CorruptStoreError(f"a stored embedding of {len(blob) if isinstance(blob, bytes) else type(blob).__name__}"
                                " bytes is not float32 values: cannot migrate it to schema 5")
    return vecblob.encode(np.frombuffer(blob, dtype="<f4"))

_SYNC = {"full": "FULL", "normal": "NORMAL", "extra": "EXTRA"}


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Re-raise sqlite3 errors met while doing ``what`` as VmemStorageError subclasses."""
    try:
        yield
    except sqlite3.DatabaseError as e:  # includes OperationalError, IntegrityError...
        raise _storage_error(e, what) from e


def _storage_error(e: sqlite3.Error, what: str) -> VmemStorageError:
    msg = str(e)
    low = msg.lower()
    if "malformed" in low or "corrupt" in low or "disk image" in low:
        return CorruptStoreError(f"{what}: the database is damaged ({msg})")
    if "not a database" in low or "file is encrypted" in low:
        return ForeignFileError(f"{what}: not a vmem store ({msg})")
    if "locked" in low or "busy" in low:
        return StoreLockedError(f"{what}: the database is locked by another connection ({msg})")
    return VmemStorageError(f"{what}: {msg}")


class Database:
    """The open SQLite file of one store (see the module docstring for its invariants)."""

    def __init__(self, path: Path, *, create: bool, durability: str = "full", read_only: bool = False) -> None:
        if durability not in _SYNC:
            raise ValueError(f"durability must be one of {sorted(_SYNC)}, got {durability!r}")
        self.path = Path(path)
        self.lock = threading.RLock()
        self._depth = 0
        self._after_commit: list[Callable[[], None]] = []
        self._on_rollback: list[Callable[[], None]] = []
        self._closed = False
        self._checkpointer: _Checkpointer | None = None
        #: Opened for reading only (a WAL reader beside a writer): every write raises.
        self.read_only = read_only
        self._check_header()
        try:
            if read_only:  # a WAL reader: sees the commit of its open, never writes the database
                self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                                            check_same_thread=False, cached_statements=256)
            else:
                self.conn = sqlite3.connect(
                    str(self.path), isolation_level=None, check_same_thread=False, cached_statements=256
                )
        except sqlite3.Error as e:
            raise _storage_error(e, f"opening {self.path}") from e
        self.conn.create_function("vmem_crc", -1, record_crc, deterministic=True)
        self.conn.create_function("vmem_f32_to_f16", 1, _f32_to_f16, deterministic=True)
        #: Write transactions committed over the store's life (the ``commits`` row; 0 before schema 4).
        self.commits = 0
        #: Called with :attr:`commits` after each commit (MemoryDir keeps it outside the WAL).
        self.commit_sink: Callable[[int], None] | None = None
        try:
            with translate(f"opening {self.path}"):
                if read_only:
                    self.conn.execute("PRAGMA query_only=1")
                    self.conn.execute("PRAGMA busy_timeout=5000")
                    # one read transaction for the reader's whole life: every read sees the same commit
                    # (WAL snapshot isolation), so the tiers, the saved state and the caches reconciled
                    # against them agree even while a writer commits beside it; reopen to see newer ones
                    self.conn.execute("BEGIN")
                    self._check_schema()
                else:
                    self._configure(_SYNC[durability])
                    self._init_schema(create)
                self.commits = int(self.conn.execute("SELECT n FROM commits").fetchone()[0])
        except ForeignFileError as e:
            self.conn.close()
            if self._had_magic and isinstance(e.__cause__, sqlite3.DatabaseError):
                # it says "SQLite" on the tin, so it is ours but damaged
                raise CorruptStoreError(f"{self.path} is damaged: {e.__cause__}") from e.__cause__
            raise
        except BaseException:
            self.conn.close()
            raise

    # -- opening

    def _check_header(self) -> None:
        self._had_magic = False
        try:
            with open(self.path, "rb") as f:
                head = f.read(100)
        except FileNotFoundError:
            return
        if head and not head.startswith(_SQLITE_MAGIC[: len(head)]):
            raise ForeignFileError(f"{self.path} is not a vmem store: not an SQLite database")
        self._had_magic = len(head) >= len(_SQLITE_MAGIC)
        if 0 < len(head) < 100:
            raise CorruptStoreError(f"{self.path} is damaged: truncated SQLite header ({len(head)} bytes)")

    def _configure(self, sync: str) -> None:
        c = self.conn
        mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise VmemStorageError(f"{self.path}: cannot switch to WAL journal mode (got {mode!r})")
        c.execute(f"PRAGMA synchronous={sync}")
        c.execute("PRAGMA foreign_keys=ON")
        c.execute("PRAGMA busy_timeout=5000")
        c.execute("PRAGMA temp_store=MEMORY")
        c.execute("PRAGMA cache_size=-16000")
        # SQLite's own checkpoint runs inside a commit, several ms on the writer's path; the
        # kernel folds the WAL in the background instead (checkpoint_in_background), and this
        # far-off threshold only bounds the WAL (64 MB) for callers that never do.
        c.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")

    def _check_schema(self) -> None:
        """A reader's check: ours, of this schema version, complete (nothing is migrated)."""
        c = self.conn
        app = c.execute("PRAGMA application_id").fetchone()[0]
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if app != APPLICATION_ID:
            raise ForeignFileError(f"{self.path} is not a vmem store (application_id {app:#010x})")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(f"{self.path} has schema version {version}, written by a newer vmem; "
                                     f"this vmem reads version {SCHEMA_VERSION}")
        if version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} has schema version {version}, written by an older vmem; a read-only open reads "
                f"version {SCHEMA_VERSION}: open it once for writing (Memory.open, vmem chat) to upgrade it")
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
        missing = _REQUIRED - names
        if missing:
            raise CorruptStoreError(f"{self.path} is damaged: missing schema objects {sorted(missing)}")

    def _init_schema(self, create: bool) -> None:
        c = self.conn
        app = c.execute("PRAGMA application_id").fetchone()[0]
        version = c.execute("PRAGMA user_version").fetchone()[0]
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
        if app == 0 and not names:  # a fresh (or never committed) file
            if not create:
                raise ForeignFileError(f"{self.path} is an empty database, not a vmem store")
            c.execute("BEGIN IMMEDIATE")
            try:
                for stmt in [*_split_sql(_SCHEMA), *_CHECKSUMS]:
                    c.execute(stmt)
                c.execute(f"PRAGMA application_id={APPLICATION_ID}")
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            return
        if app != APPLICATION_ID:
            raise ForeignFileError(
                f"{self.path} is an SQLite database of another application "
                f"(application_id {app:#010x}, expected {APPLICATION_ID:#010x})"
            )
        if version > SCHEMA_VERSION or version not in _MIGRATIONS and version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path} has schema version {version}"
                f"{', written by a newer vmem' if version > SCHEMA_VERSION else ''}; this vmem reads version "
                f"{SCHEMA_VERSION}"
            )
        if version < SCHEMA_VERSION:
            c.execute("BEGIN IMMEDIATE")
            try:
                for v in range(version, SCHEMA_VERSION):
                    for step in _MIGRATIONS[v]:
                        if callable(step):
                            step(c)
                        else:
                            c.execute(step)
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
            if version < 5:
                self._compact("schema 5 halved the stored embeddings")
            names = {r[0] for r in c.execute("SELECT name FROM sqlite_master")}
        missing = _REQUIRED - names
        if missing:
            raise CorruptStoreError(f"{self.path} is damaged: missing schema objects {sorted(missing)}")

    def _compact(self, why: str) -> None:
        """VACUUM the file (and fold the WAL back), so that space a migration freed goes back to
        the disk rather than waiting inside the file for later rows. Best effort: VACUUM needs
        as much free disk again as the file; when it fails the store is as good, only larger."""
        try:
            self.conn.execute("VACUUM")
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:
            log.warning("%s: %s, but compacting the file failed (it keeps its free pages): %s", self.path, why, e)

    # -- use

    def check_open(self) -> None:
        """Raise StoreClosedError if closed."""
        if self._closed:
            raise StoreClosedError(f"{self.path}: the store is closed")

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[sqlite3.Connection]:
        """Hold the lock for a read; translate errors."""
        with self.lock:
            self.check_open()
            with translate(what):
                yield self.conn

    def transaction(self, what: str = "write") -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction; nested calls join the outermost one.

        The outermost exit commits (then runs the after-commit hooks) or, on an
        exception, rolls back (and drops them). A hook that fails after the commit is
        logged, not raised: the commit stands, and the caches hooks update are
        reconciled with the database when the store is next opened.
        """
        return _Transaction(self, what)

    def _commit(self, what: str) -> None:
        with translate(what):
            self.conn.execute("UPDATE commits SET n = n + 1")
            self.conn.execute("COMMIT")
        self.commits += 1
        if self.commit_sink is not None:
            try:
                self.commit_sink(self.commits)
            except OSError as e:  # the count outside the WAL is a witness, not the data: the commit stands
                log.warning("%s: recording the commit count: %s", self.path, e)

    @contextlib.contextmanager
    def savepoint(self, what: str = "savepoint") -> Iterator[sqlite3.Connection]:
        """A nested transaction inside an open one: on an exception, only what was written
        inside it is rolled back (with the hooks registered inside it), and the exception
        propagates; otherwise its writes join the enclosing transaction."""
        with self.lock:
            self.check_open()
            if not self._depth:
                raise RuntimeError("savepoint() outside a transaction")
            name = f"sp{self._depth}"
            marks = (len(self._after_commit), len(self._on_rollback))
            with translate(what):
                self.conn.execute(f"SAVEPOINT {name}")
            self._depth += 1
            try:
                with translate(what):
                    yield self.conn
            except BaseException:
                self._depth -= 1
                try:
                    self.conn.execute(f"ROLLBACK TO {name}")
                    self.conn.execute(f"RELEASE {name}")
                except sqlite3.Error as e:  # the connection is unusable; the outer rollback follows
                    log.error("rollback to a savepoint of %s failed: %s", self.path, e)
                undo = self._on_rollback[marks[1]:]
                del self._after_commit[marks[0]:]
                del self._on_rollback[marks[1]:]
                for hook in reversed(undo):
                    hook()
                raise
            self._depth -= 1
            with translate(what):
                self.conn.execute(f"RELEASE {name}")

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction() block is open."""
        return self._depth > 0

    def _rollback(self) -> None:
        hooks, self._after_commit, self._on_rollback = self._on_rollback, [], []
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error as e:  # the connection is unusable; report the original error
            log.error("rollback of %s failed: %s", self.path, e)
        for hook in hooks:
            hook()

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after the current transaction commits (dropped on rollback)."""
        if not self._depth:
            raise RuntimeError("after_commit() outside a transaction")
        self._after_commit.append(hook)

    def on_rollback(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` if the current transaction rolls back."""
        if not self._depth:
            raise RuntimeError("on_rollback() outside a transaction")
        self._on_rollback.append(hook)

    # -- meta (internal key/value, msgpack)

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The value stored under the internal meta ``key``."""
        with self.reading(f"reading meta {key!r}") as c:
            row = c.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else msgpack.unpackb(row[0], raw=False)

    def set_meta(self, key: str, value: Any) -> None:
        """Store ``value`` under the internal meta ``key`` (joins an open transaction)."""
        blob = msgpack.packb(value, use_bin_type=True)
        with self.transaction(f"writing meta {key!r}") as c:
            c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, blob))

    def quick_check(self) -> None:
        """Run ``PRAGMA quick_check``; raise CorruptStoreError on any finding."""
        with self.reading("checking the database") as c:
            rows = [r[0] for r in c.execute("PRAGMA quick_check")]
        if rows != ["ok"]:
            raise CorruptStoreError(f"{self.path} is damaged: {'; '.join(rows[:5])}")

    def checkpoint(self) -> None:
        """Fold the WAL back into the database file (``wal_checkpoint(TRUNCATE)``)."""
        with self.reading("checkpointing the WAL") as c:
            if not self._depth and not self.read_only:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def checkpoint_in_background(self, min_wal_bytes: int = 4 << 20) -> None:
        """Fold committed WAL frames into the database file on another connection and thread
        (``wal_checkpoint(PASSIVE)``: it never blocks this connection), once the WAL holds
        ``min_wal_bytes`` or more. Call it when idle, e.g. while waiting for an LLM; a call
        while one is running is merged into it. (A checkpoint at every call competed with the
        next commit for the database file and the GIL when the caller was not idle long.)"""
        self.check_open()
        if self.read_only:
            return
        try:
            wal = os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            return
        if wal < min_wal_bytes:
            return
        if self._checkpointer is None:
            self._checkpointer = _Checkpointer(self.path)
        self._checkpointer.kick()

    def close(self) -> None:
        """Close the connection (idempotent). An open transaction is rolled back."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            if self._checkpointer is not None:
                self._checkpointer.stop()
            try:
                if self.conn.in_transaction and not self.read_only:
                    self.conn.execute("ROLLBACK")
                self.conn.close()
            except sqlite3.Error as e:
                log.warning("closing %s: %s", self.path, e)

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed


class _Transaction:
    """Database.transaction()'s scope (a class, not a generator: every store write enters one)."""

    __slots__ = ("_db", "_what", "_outer")

    def __init__(self, db: Database, what: str) -> None:
        self._db = db
        self._what = what
        self._outer = False

    def __enter__(self) -> sqlite3.Connection:
        db = self._db
        db.lock.acquire()
        try:
            db.check_open()
            if db.read_only:
                raise ReadOnlyStoreError(f"{db.path} was opened read-only: {self._what} is refused")
            self._outer = db._depth == 0
            if self._outer:
                try:
                    db.conn.execute("BEGIN IMMEDIATE")
                except sqlite3.DatabaseError as e:
                    raise _storage_error(e, self._what) from e
            db._depth += 1
        except BaseException:
            db.lock.release()
            raise
        return db.conn

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        db = self._db
        try:
            db._depth -= 1
            if exc is not None:
                if self._outer:
                    db._rollback()
                if isinstance(exc, sqlite3.DatabaseError):
                    raise _storage_error(exc, self._what) from exc
                return False
            if self._outer:
                try:
                    db._commit(self._what)
                except BaseException:
                    db._rollback()
                    raise
                hooks, db._after_commit, db._on_rollback = db._after_commit, [], []
                for hook in hooks:
                    try:
                        hook()
                    except Exception:  # noqa: BLE001 - the commit stands; the cache is rebuilt at open
                        log.exception("%s: a post-commit hook failed (%s)", db.path, self._what)
            return False
        finally:
            db.lock.release()


_AUTOCHECKPOINT_PAGES = 16384


class _Checkpointer:
    """A daemon thread with its own connection that runs PASSIVE WAL checkpoints on request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"vmem-checkpoint:{path.name}", daemon=True)
        self._thread.start()

    def kick(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=100")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as e:  # busy or closing: the next kick (or close) retries
                    log.debug("background checkpoint of %s: %s", self.path, e)
        finally:
            conn.close()


def _split_sql(script: str) -> list[str]:
    """Split a schema script into statements (triggers contain ';' inside BEGIN...END)."""
    out: list[str] = []
    buf: list[str] = []
    for line in script.strip().splitlines():
        buf.append(line)
        stmt = "\n".join(buf).strip()
        if stmt.endswith(";") and sqlite3.complete_statement(stmt):
            out.append(stmt)
            buf = []
    if "".join(buf).strip():
        out.append("\n".join(buf))
    return out


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames and creations in it are durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
