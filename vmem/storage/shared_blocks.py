"""Shared blocks: core-memory blocks that several agents attach, kept once in a store they name.

Letta attaches one block to several agents (shared memory; its sleep-time agents write the
primary agent's blocks this way). Here such a block lives in a *shared block store*, not in
any agent's store: an SQLite file on one machine (:class:`SharedBlockFile`, any number of
processes) or, for agents kept in PostgreSQL, a table of the same database
(``vmem.storage.postgres_shared``). Each block carries a ``version`` that every applied
edit raises by one, and the store keeps a log of edits: which agent, what, and whether it
applied.

Writes are edits (:class:`~vmem.storage.block_edit.BlockEdit`), applied one at a time
under the store's write lock to the value current then: an edit that was prepared against
an older version is re-applied to the fresh value, or refused as a conflict when its kind
says it cannot be (so no update is ever lost, and none is applied twice: an edit carries an
id and applying the same id again answers the first outcome).

Interface::

    from vmem.storage.location import open_shared_blocks
    shared = open_shared_blocks("team/shared-blocks.db")     # or a postgresql:// URL
    shared.create("project", "vmem: memory for agents", limit=2000, agent="ana")
    outcome = shared.apply("edit-id-1", "project", BlockEdit.append("ships Friday"), agent="bob")
    outcome.applied, outcome.block.version, outcome.reason
    shared.get("project"), shared.versions(["project"]), shared.history("project")
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from vmem.storage._db import record_crc, translate
from vmem.storage.block_edit import BlockEdit
from vmem.storage.blocks import DEFAULT_BLOCK_LIMIT, MAX_BLOCK_LIMIT
from vmem.storage.errors import (
    BlockError,
    BlockExistsError,
    BlockLimitError,
    CorruptStoreError,
    EditConflictError,
    ForeignFileError,
    NotFoundError,
    ReadOnlyBlockError,
    StoreClosedError,
)
from vmem.storage.records import Block
from vmem.text import clean_text

__all__ = ["EditOutcome", "EditRecord", "SharedBlock", "SharedBlockFile", "SharedBlockStore", "SqlSharedBlocks"]

#: ``PRAGMA application_id`` of a shared block file: b"vmsb".
SHARED_APPLICATION_ID = int.from_bytes(b"vmsb", "big")
SHARED_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class SharedBlock:
    """A shared block as stored: its fields, its version and who wrote that version."""

    name: str
    value: str
    limit: int
    description: str
    read_only: bool
    version: int
    updated_by: str

    def as_block(self, label: str | None = None) -> Block:
        """The block as an agent shows it (under the agent's ``label`` for it)."""
        return Block(label or self.name, self.value, self.limit, self.description, self.read_only)


@dataclass(frozen=True)
class EditOutcome:
    """What :meth:`SharedBlockStore.apply` did: ``applied`` (the version it made is
    ``block.version``) or not, with the ``reason``; ``block`` is the block after it."""

    edit_id: str
    applied: bool
    reason: str
    block: SharedBlock


@dataclass(frozen=True)
class EditRecord:
    """One line of a shared block's edit log."""

    edit_id: str
    name: str
    agent: str
    edit: BlockEdit
    applied: bool
    reason: str
    version: int
    at: float


def _check_fields(name: str, value: str, limit: int) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a shared block's name must be a non-empty str, got {name!r}")
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_BLOCK_LIMIT:
        raise ValueError(f"block limit must be an int in 1..{MAX_BLOCK_LIMIT}, got {limit!r}")
    if not isinstance(value, str):
        raise TypeError(f"shared block {name!r}: the value must be a str, got {type(value).__name__}")
    if len(value) > limit:
        raise BlockLimitError(f"shared block {name!r}: value of {len(value)} characters exceeds its limit of {limit}")


def _crc(name: str, value: str, limit: int, description: str, read_only: bool, version: int) -> int:
    return record_crc(name, value, limit, description, int(read_only), version)


def applied_value(block: SharedBlock, edit: BlockEdit) -> str:
    """The value ``edit`` makes of ``block`` (EditConflictError, BlockLimitError, ReadOnlyBlockError)."""
    label = f"shared block {block.name!r}"
    if block.read_only:
        raise ReadOnlyBlockError(f"{label} is read-only")
    value = clean_text(edit.apply(block.value, label=label))
    if len(value) > block.limit:
        raise BlockLimitError(f"{label}: the edit makes {len(value)} characters; its limit is {block.limit}")
    return value


class SharedBlockStore(ABC):
    """A store of shared blocks (see the module docstring). Thread-safe; many processes."""

    #: Where it is: a file path or a ``postgresql://`` URL (what an agent records to find it again).
    location: str

    @abstractmethod
    def create(self, name: str, value: str = "", *, limit: int = DEFAULT_BLOCK_LIMIT, description: str = "",
               read_only: bool = False, agent: str = "") -> SharedBlock:
        """A new shared block at version 1 (BlockExistsError if ``name`` is taken)."""

    @abstractmethod
    def get(self, name: str) -> SharedBlock:
        """The block called ``name`` (NotFoundError if none)."""

    @abstractmethod
    def get_many(self, names: Iterable[str]) -> dict[str, SharedBlock]:
        """The blocks called ``names`` that exist, by name."""

    @abstractmethod
    def versions(self, names: Iterable[str]) -> dict[str, int]:
        """Each named block's current version (one query; a name that does not exist is absent)."""

    @abstractmethod
    def apply(self, edit_id: str, name: str, edit: BlockEdit, *, agent: str) -> EditOutcome:
        """Apply ``edit`` to the current value under the store's write lock, log it, and return
        the outcome; an ``edit_id`` applied before answers its first outcome again (idempotent)."""

    @abstractmethod
    def outcomes(self, edit_ids: Iterable[str]) -> dict[str, EditRecord]:
        """The logged outcome of each of ``edit_ids`` that was applied or refused."""

    @abstractmethod
    def history(self, name: str, limit: int = 100) -> list[EditRecord]:
        """The block's edit log, newest first."""

    @abstractmethod
    def names(self) -> list[str]:
        """Every shared block's name."""

    @abstractmethod
    def check(self) -> list[str]:
        """Every block whose checksum does not match its fields (damage), as messages."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection(s)."""

    def __enter__(self) -> SharedBlockStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS shared_blocks(
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    "limit" INTEGER NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    read_only INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL,
    updated_by TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    crc INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS shared_block_edits(
    edit_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    agent TEXT NOT NULL,
    edit BLOB NOT NULL,
    applied INTEGER NOT NULL,
    reason TEXT NOT NULL,
    version INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_block_edits_by_name ON shared_block_edits(name, at);
"""

_COLS = 'name, value, "limit", description, read_only, version, updated_by'
_ECOLS = "edit_id, name, agent, edit, applied, reason, version, at"


def _shared(row: Any) -> SharedBlock:
    name, value, limit, description, read_only, version, updated_by = row
    return SharedBlock(name, value, int(limit), description, bool(read_only), int(version), updated_by)


def _record(row: Any) -> EditRecord:
    edit_id, name, agent, blob, applied, reason, version, at = row
    return EditRecord(edit_id, name, agent, BlockEdit.from_dict(msgpack.unpackb(bytes(blob), raw=False)),
                      bool(applied), reason, int(version), float(at))


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SqlSharedBlocks(SharedBlockStore):
    """The store's logic over two tables, written once for both engines: a subclass gives a
    connection (:meth:`_use`; ``write=True``: one transaction holding the engine's write lock
    on what it reads) and its dialect (the tables' names, ``FOR UPDATE``, parameter marks)."""

    _blocks = "shared_blocks"
    _edits = "shared_block_edits"
    _lock_rows = ""  # ' FOR UPDATE' where a row lock is taken per statement

    @abstractmethod
    def _use(self, what: str, *, write: bool = False) -> Any:
        """A context manager giving an object with ``execute(sql, params)`` (``?`` marks)."""

    def create(self, name: str, value: str = "", *, limit: int = DEFAULT_BLOCK_LIMIT, description: str = "",
               read_only: bool = False, agent: str = "") -> SharedBlock:
        name, value, description = clean_text(name), clean_text(value), clean_text(str(description))
        _check_fields(name, value, limit)
        with self._use(f"creating shared block {name!r}", write=True) as c:
            if c.execute(f"SELECT 1 FROM {self._blocks} WHERE name=?", (name,)).fetchone():
                raise BlockExistsError(f"shared block {name!r} exists already")
            c.execute(f"INSERT INTO {self._blocks}({_COLS}, updated_at, crc) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)",
                      (name, value, limit, description, int(bool(read_only)), agent, time.time(),
                       _crc(name, value, limit, description, bool(read_only), 1)))
        return SharedBlock(name, value, limit, description, bool(read_only), 1, agent)

    def get(self, name: str) -> SharedBlock:
        with self._use(f"reading shared block {name!r}") as c:
            row = c.execute(f"SELECT {_COLS} FROM {self._blocks} WHERE name=?", (name,)).fetchone()
        if row is None:
            raise NotFoundError(f"no shared block {name!r} in {self.location}")
        return _shared(row)

    def get_many(self, names: Iterable[str]) -> dict[str, SharedBlock]:
        names = list(names)
        if not names:
            return {}
        with self._use("reading shared blocks") as c:
            rows = c.execute(f"SELECT {_COLS} FROM {self._blocks} WHERE name IN ({_marks(len(names))})",
                             names).fetchall()
        return {r[0]: _shared(r) for r in rows}

    def versions(self, names: Iterable[str]) -> dict[str, int]:
        names = list(names)
        if not names:
            return {}
        with self._use("reading shared block versions") as c:
            rows = c.execute(f"SELECT name, version FROM {self._blocks} WHERE name IN ({_marks(len(names))})",
                             names).fetchall()
        return {n: int(v) for n, v in rows}

    def apply(self, edit_id: str, name: str, edit: BlockEdit, *, agent: str) -> EditOutcome:
        with self._use(f"editing shared block {name!r}", write=True) as c:
            row = c.execute(f"SELECT {_COLS} FROM {self._blocks} WHERE name=?{self._lock_rows}", (name,)).fetchone()
            if row is None:
                raise NotFoundError(f"no shared block {name!r} in {self.location}")
            block = _shared(row)
            done = c.execute(f"SELECT applied, reason FROM {self._edits} WHERE edit_id=?", (edit_id,)).fetchone()
            if done is not None:  # applied (or refused) before: the same answer, nothing twice
                return EditOutcome(edit_id, bool(done[0]), done[1], block)
            try:
                value = applied_value(block, edit)
            except (EditConflictError, BlockError) as exc:
                applied, reason = False, str(exc)
            else:
                applied, reason = True, ""
                version = block.version + 1
                c.execute(f"UPDATE {self._blocks} SET value=?, version=?, updated_by=?, updated_at=?, crc=? "
                          "WHERE name=?",
                          (value, version, agent, time.time(),
                           _crc(name, value, block.limit, block.description, block.read_only, version), name))
                block = SharedBlock(name, value, block.limit, block.description, block.read_only, version, agent)
            c.execute(f"INSERT INTO {self._edits}({_ECOLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                      (edit_id, name, agent, msgpack.packb(edit.to_dict(), use_bin_type=True), int(applied), reason,
                       block.version, time.time()))
        return EditOutcome(edit_id, applied, reason, block)

    def outcomes(self, edit_ids: Iterable[str]) -> dict[str, EditRecord]:
        ids = list(edit_ids)
        if not ids:
            return {}
        with self._use("reading shared block edits") as c:
            rows = c.execute(f"SELECT {_ECOLS} FROM {self._edits} WHERE edit_id IN ({_marks(len(ids))})",
                             ids).fetchall()
        return {r[0]: _record(r) for r in rows}

    def history(self, name: str, limit: int = 100) -> list[EditRecord]:
        with self._use(f"reading shared block {name!r}'s edits") as c:
            rows = c.execute(f"SELECT {_ECOLS} FROM {self._edits} WHERE name=? ORDER BY at DESC, version DESC "
                             "LIMIT ?", (name, int(limit))).fetchall()
        return [_record(r) for r in rows]

    def names(self) -> list[str]:
        with self._use("listing shared blocks") as c:
            return [r[0] for r in c.execute(f"SELECT name FROM {self._blocks} ORDER BY name").fetchall()]

    def check(self) -> list[str]:
        bad = []
        with self._use("checking shared blocks") as c:
            for row in c.execute(f"SELECT {_COLS}, crc FROM {self._blocks}").fetchall():
                b = _shared(row[:-1])
                if _crc(b.name, b.value, b.limit, b.description, b.read_only, b.version) != row[-1]:
                    bad.append(f"shared block {b.name!r} (version {b.version}): its checksum does not match")
        return bad


class SharedBlockFile(SqlSharedBlocks):
    """Shared blocks in one SQLite file (WAL, ``synchronous=FULL``): the agents of one machine,
    in any number of processes. An edit is one ``BEGIN IMMEDIATE`` transaction (SQLite's write
    lock; a writer waits up to ``busy_timeout`` seconds for another)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.location = str(self.path.resolve())
        if not create and not self.path.exists():
            raise NotFoundError(f"no shared block store at {self.path}")
        if self.path.exists() and self.path.is_dir():
            raise ForeignFileError(f"{self.path} is a directory, not a shared block store")
        self._lock = threading.RLock()
        self._closed = False
        with translate(f"opening the shared block store {self.path}"):
            self._conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            try:
                self._init(busy_timeout)
            except BaseException:
                self._conn.close()
                raise

    def _init(self, busy_timeout: float) -> None:
        c = self._conn
        c.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        try:
            app = c.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as e:
            raise ForeignFileError(f"{self.path} is not a shared block store: {e}") from e
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if app not in (0, SHARED_APPLICATION_ID) or (app == 0 and tables):
            raise ForeignFileError(f"{self.path} is not a vmem shared block store")
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        if app == 0:
            c.execute("BEGIN IMMEDIATE")
            try:
                if not c.execute("PRAGMA application_id").fetchone()[0]:  # another process may have won
                    for stmt in [s for s in _SCHEMA.split(";") if s.strip()]:
                        c.execute(stmt)
                    c.execute(f"PRAGMA application_id={SHARED_APPLICATION_ID}")
                    c.execute(f"PRAGMA user_version={SHARED_SCHEMA_VERSION}")
                c.execute("COMMIT")
            except BaseException:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                raise
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version != SHARED_SCHEMA_VERSION:
            raise ForeignFileError(f"{self.path}: shared block store version {version}; this vmem reads "
                                   f"{SHARED_SCHEMA_VERSION}")

    @contextmanager
    def _use(self, what: str, *, write: bool = False) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"the shared block store {self.path} is closed")
            with translate(f"{what} ({self.path})"):
                c = self._conn
                if not write:
                    yield c
                    return
                c.execute("BEGIN IMMEDIATE")
                try:
                    yield c
                    c.execute("COMMIT")
                except BaseException:
                    c.execute("ROLLBACK")
                    raise

    def check(self) -> list[str]:
        bad = super().check()
        with self._use("checking the shared block file") as c:
            quick = c.execute("PRAGMA quick_check").fetchone()[0]
        if quick != "ok":
            raise CorruptStoreError(f"{self.path} is damaged: {quick}")
        return bad

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __repr__(self) -> str:
        return f"<SharedBlockFile {self.location!r}>"
