"""Core-memory blocks and the kernel's persistent key/value state.

Blocks are the small labelled texts of main context (persona, human, ...):
the agent edits them through memory functions, so every edit is checked
against the block's character ``limit`` and ``read_only`` flag here, in one
place. The kernel state is a msgpack-valued mapping (queue, summary,
counters...) that the kernel snapshots between steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import msgpack

from vmem.storage._db import Database
from vmem.storage.errors import (
    BlockExistsError,
    BlockLimitError,
    NotFoundError,
    ReadOnlyBlockError,
    StoreOwnedError,
)
from vmem.storage.records import Block
from vmem.text import clean_text

__all__ = ["Blocks", "KernelState"]

#: Default character limit of a block (Letta's default for persona/human).
DEFAULT_BLOCK_LIMIT = 5000

_BCOLS = 'label, value, "limit", description, read_only'


def _block(row: tuple[Any, ...]) -> Block:
    label, value, limit, description, read_only = row
    return Block(label, value, int(limit), description, bool(read_only))


#: The largest character limit a block may have (SQLite keeps 64-bit integers; no window holds more).
MAX_BLOCK_LIMIT = 2**31 - 1


def _check_limit(limit: object) -> None:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_BLOCK_LIMIT:
        raise ValueError(f"block limit must be an int in 1..{MAX_BLOCK_LIMIT}, got {limit!r}")


def _text(value: object, label: str) -> str:
    """A block's value storable as UTF-8 (a lone surrogate becomes U+FFFD, as in messages)."""
    if not isinstance(value, str):
        raise TypeError(f"block {label!r}: the value must be a str, got {type(value).__name__}")
    return clean_text(value)


def _check_value(label: str, value: str, limit: int) -> None:
    if not isinstance(value, str):
        raise TypeError(f"block {label!r}: value must be str, got {type(value).__name__}")
    if len(value) > limit:
        raise BlockLimitError(
            f"block {label!r}: value of {len(value)} characters exceeds its limit of {limit}"
        )


class Blocks:
    """The core-memory blocks of one agent, in creation order. From ``MemoryDir.blocks``.

    A block is also a page of the agent's context, so while a kernel memory holds the store
    (:meth:`own`), writes through this object are refused with StoreOwnedError: they go
    through the memory, which accounts them (``Memory.add_block``, ``set_block``, ...).
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._owner: str | None = None
        self._owner_writing = 0

    def own(self, owner: str) -> None:
        """Refuse writes from anyone but ``owner`` (who writes inside :meth:`as_owner`)."""
        self._owner = owner

    @contextlib.contextmanager
    def as_owner(self) -> Iterator[None]:
        """The owner's writes."""
        self._owner_writing += 1
        try:
            yield
        finally:
            self._owner_writing -= 1

    def _check_writer(self, what: str) -> None:
        if self._owner is not None and not self._owner_writing:
            raise StoreOwnedError(f"{what}: the blocks are part of an open {self._owner}'s context; "
                                  f"write them through it (add_block, set_block, update_block, delete_block)")

    def create(
        self,
        label: str,
        value: str = "",
        *,
        limit: int = DEFAULT_BLOCK_LIMIT,
        description: str = "",
        read_only: bool = False,
    ) -> Block:
        """Create a block (BlockExistsError if ``label`` is taken, BlockLimitError if too long)."""
        self._check_writer(f"creating block {label!r}")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"block label must be a non-empty str, got {label!r}")
        _check_limit(limit)
        label, value, description = clean_text(label), _text(value, label), clean_text(str(description))
        _check_value(label, value, limit)
        with self._db.transaction(f"creating block {label!r}") as c:
            if c.execute("SELECT 1 FROM blocks WHERE label=?", (label,)).fetchone():
                raise BlockExistsError(f"block {label!r} exists already")
            pos = c.execute("SELECT coalesce(max(position), 0) + 1 FROM blocks").fetchone()[0]
            c.execute(
                f'INSERT INTO blocks({_BCOLS}, position) VALUES (?, ?, ?, ?, ?, ?)',
                (label, value, limit, str(description), int(bool(read_only)), pos),
            )
        return Block(label, value, limit, str(description), bool(read_only))

    def get(self, label: str) -> Block:
        """The block called ``label`` (NotFoundError if none)."""
        label = clean_text(label) if isinstance(label, str) else label
        with self._db.reading(f"reading block {label!r}") as c:
            row = c.execute(f"SELECT {_BCOLS} FROM blocks WHERE label=?", (label,)).fetchone()
        if row is None:
            raise NotFoundError(f"no core memory block {label!r}")
        return _block(row)

    def set(self, label: str, value: str) -> Block:
        """Replace a block's value, as the agent does: refused for read-only blocks and over the limit."""
        label = clean_text(label) if isinstance(label, str) else label
        self._check_writer(f"writing block {label!r}")
        value = _text(value, label)
        with self._db.transaction(f"writing block {label!r}"):
            b = self.get(label)
            if b.read_only:
                raise ReadOnlyBlockError(f"block {label!r} is read-only")
            _check_value(label, value, b.limit)
            self._db.conn.execute("UPDATE blocks SET value=? WHERE label=?", (value, label))
        return Block(b.label, value, b.limit, b.description, b.read_only)

    def update(
        self,
        label: str,
        *,
        value: str | None = None,
        limit: int | None = None,
        description: str | None = None,
        read_only: bool | None = None,
    ) -> Block:
        """Change any field of a block, as the developer does (read-only does not apply; the limit does)."""
        label = clean_text(label) if isinstance(label, str) else label
        self._check_writer(f"updating block {label!r}")
        with self._db.transaction(f"updating block {label!r}") as c:
            b = self.get(label)
            new = Block(
                label,
                b.value if value is None else _text(value, label),
                b.limit if limit is None else limit,
                b.description if description is None else clean_text(str(description)),
                b.read_only if read_only is None else bool(read_only),
            )
            _check_limit(new.limit)
            _check_value(label, new.value, new.limit)
            c.execute(
                'UPDATE blocks SET value=?, "limit"=?, description=?, read_only=? WHERE label=?',
                (new.value, new.limit, new.description, int(new.read_only), label),
            )
        return new

    def delete(self, label: str) -> None:
        """Remove a block (NotFoundError if none)."""
        self._check_writer(f"deleting block {label!r}")
        with self._db.transaction(f"deleting block {label!r}") as c:
            if not c.execute("DELETE FROM blocks WHERE label=?", (label,)).rowcount:
                raise NotFoundError(f"no core memory block {label!r}")

    def all(self) -> list[Block]:
        """Every block, in creation order."""
        with self._db.reading("reading blocks") as c:
            return [_block(r) for r in c.execute(f"SELECT {_BCOLS} FROM blocks ORDER BY position")]

    def labels(self) -> list[str]:
        """Block labels, in creation order."""
        return [b.label for b in self.all()]

    def __iter__(self) -> Iterator[Block]:
        return iter(self.all())

    def __len__(self) -> int:
        with self._db.reading("counting blocks") as c:
            return int(c.execute("SELECT count(*) FROM blocks").fetchone()[0])

    def __contains__(self, label: object) -> bool:
        with self._db.reading("reading blocks") as c:
            return c.execute("SELECT 1 FROM blocks WHERE label=?", (label,)).fetchone() is not None


class KernelState(MutableMapping[str, Any]):
    """Persistent key -> value state for the kernel; values are msgpack-serialisable.

    Each assignment is its own durable transaction; group several in
    ``MemoryDir.transaction()`` to make them atomic together.
    """

    def __init__(self, db: Database) -> None:
        self._db = db

    def __getitem__(self, key: str) -> Any:
        with self._db.reading(f"reading state {key!r}") as c:
            row = c.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        if row is None:
            raise NotFoundError(f"no kernel state {key!r}")
        return msgpack.unpackb(row[0], raw=False, strict_map_key=False)

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(key, str):
            raise TypeError(f"state keys are str, got {type(key).__name__}")
        try:
            blob = msgpack.packb(value, use_bin_type=True)
        except (TypeError, ValueError, OverflowError) as e:
            raise TypeError(f"state {key!r}: value is not msgpack-serialisable: {e}") from e
        with self._db.transaction(f"writing state {key!r}") as c:
            c.execute("INSERT OR REPLACE INTO kv(key, value) VALUES (?, ?)", (key, blob))

    def __delitem__(self, key: str) -> None:
        with self._db.transaction(f"deleting state {key!r}") as c:
            if not c.execute("DELETE FROM kv WHERE key=?", (key,)).rowcount:
                raise NotFoundError(f"no kernel state {key!r}")

    def __iter__(self) -> Iterator[str]:
        with self._db.reading("listing state") as c:
            keys = [r[0] for r in c.execute("SELECT key FROM kv ORDER BY key")]
        return iter(keys)

    def __len__(self) -> int:
        with self._db.reading("counting state") as c:
            return int(c.execute("SELECT count(*) FROM kv").fetchone()[0])

    def __contains__(self, key: object) -> bool:
        with self._db.reading("reading state") as c:
            return c.execute("SELECT 1 FROM kv WHERE key=?", (key,)).fetchone() is not None
