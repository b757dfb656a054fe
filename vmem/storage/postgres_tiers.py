"""The small tiers on PostgreSQL: recall messages, blocks, kernel state, events, journal, text index.

Each class is the SQLite tier's interface (recall.py, blocks.py, events.py, journal.py) over
the agent-keyed tables of postgres_db.py; the logic that is not SQL (validation, ranking over
the text index) is inherited, so both stores behave alike by construction. The text index is
a per-process cache (:class:`PgLexical`): built from the database at open, updated after each
commit of this process, caught up with other processes' commits by the agent's version
(``PgDatabase.stale_hooks``) before a transaction or a search uses it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import msgpack
import numpy as np

from vmem._textindex import TextIndex
from vmem.pageid import PageKind, make_page_id
from vmem.storage.blocks import DEFAULT_BLOCK_LIMIT, Blocks, KernelState, _block, _check_value
from vmem.storage.errors import BlockExistsError, NotFoundError, ReadOnlyBlockError
from vmem.storage.events import EventLog
from vmem.storage.journal import Journal
from vmem.storage.postgres_db import PgDatabase
from vmem.storage.recall import MessageInput, RecallStore, _norm_message, _row_to_message, _serial, bitmap
from vmem.storage.records import Block, Hit, SearchPage, TimeBound, check_paging, epoch_range, page_count

__all__ = ["PgBlocks", "PgEventLog", "PgJournal", "PgKernelState", "PgLexical", "PgRecall"]

#: Per table: (id, text, ts, role, group) rows of one agent after an id, in id order.
_SOURCES = {
    "messages": "SELECT id, content, ts, role, 0 FROM vmem.messages WHERE agent=%s AND id > %s ORDER BY id",
    "passages": "SELECT id, text, ts, '', coalesce(grp, id) FROM vmem.passages WHERE agent=%s AND id > %s "
                "ORDER BY id",
}
_BATCH = 20_000


class PgLexical:
    """The text index of one agent's ``messages`` or ``passages``: a cache of the table.

    The interface of :class:`vmem.storage.lexical.LexicalCache` (``index``, ``added``,
    ``deleted``, ``save``, ``verify``) without a file: the index is built at open, or taken
    over from an earlier open of the agent in this process (see PgStore's cache).
    """

    def __init__(self, db: PgDatabase, table: str, index: TextIndex | None = None) -> None:
        if table not in _SOURCES:
            raise ValueError(f"no text index for table {table!r}")
        self._db = db
        self.table = table
        t = time.perf_counter()
        if index is not None:  # this process's index of the agent from an earlier open (caught up by the store)
            self.index, self.status = index, "cached"
        else:
            self.index, self.status = TextIndex(), "rebuilt"
            self._add_after(0)
        self.open_seconds = time.perf_counter() - t
        db.stale_hooks.append(self.catch_up)

    def _add_after(self, after: int) -> None:
        with self._db.reading(f"indexing {self.table}") as c:
            with c.cursor(name=None) as cur:
                cur.execute(_SOURCES[self.table], (self._db.agent, after))
                while rows := cur.fetchmany(_BATCH):
                    for rid, text, ts, role, grp in rows:
                        self.index.add(rid, text, ts, role, grp)

    def catch_up(self) -> None:
        """Add the rows other processes committed; rebuild when rows were deleted there."""
        have = self.index.ids()
        top = int(have[-1]) if len(have) else 0
        self._add_after(top)
        with self._db.reading(f"counting {self.table}") as c:
            count = int(c.execute(f"SELECT count(*) FROM vmem.{self.table} WHERE agent=%s",
                                  (self._db.agent,)).fetchone()[0])
        if count != len(self.index):
            self.index = TextIndex()
            self._add_after(0)

    def added(self, rows: Sequence[tuple[int, str, float, str, int]]) -> None:
        """Index committed rows (id, text, ts, role, group), in id order."""
        add = self.index.add
        for rid, text, ts, role, grp in rows:
            add(rid, text, ts, role, grp)

    def deleted(self, rows: Sequence[tuple[int, str]]) -> None:
        """Unindex committed deletions (id, text as indexed)."""
        for rid, text in rows:
            self.index.delete(rid, text)
        st = self.index.stats()
        if st["dead"] > max(1024, st["postings"] // 4):
            self.index.compact()

    def save(self) -> None:
        """Nothing to write: the cache lives in this process only."""

    def verify(self) -> bool:
        """Whether the index holds exactly the table's row ids."""
        with self._db.reading(f"listing {self.table}") as c:
            db_ids = np.array([r[0] for r in c.execute(
                f"SELECT id FROM vmem.{self.table} WHERE agent=%s ORDER BY id", (self._db.agent,))], dtype=np.int64)
        return bool(np.array_equal(db_ids, self.index.ids().astype(np.int64)))


_MCOLS = "id, role, content, ts, meta"
_INSERT_MESSAGE = "INSERT INTO vmem.messages(agent, id, role, content, ts, meta) VALUES"


class PgRecall(RecallStore):
    """Every message of one agent, in PostgreSQL (the interface of :class:`RecallStore`)."""

    _db: PgDatabase  # type: ignore[assignment]

    def append_many(self, messages: Iterable[MessageInput]) -> list[int]:
        """Store several messages in one transaction; return their page ids in order (all or nothing)."""
        rows = [_norm_message(m) for m in messages]
        if not rows:
            return []
        db = self._db
        with db.transaction("appending messages"):
            first = db.next_serials("message", len(rows))
            ids = list(range(first, first + len(rows)))
            for i, r in zip(ids, rows):  # sent with the transaction's next statement, one INSERT for all
                db.defer(_INSERT_MESSAGE, (db.agent, i, *r))
            added = [(i, r[1], r[2], r[0], 0) for i, r in zip(ids, rows)]
            db.after_commit(lambda: self.lexical.added(added))
            self.appends += len(ids)
        return [make_page_id(PageKind.MESSAGE, i) for i in ids]

    def get(self, page_id: int) -> Any:
        """The message with this page id (NotFoundError if none)."""
        serial = _serial(page_id, PageKind.MESSAGE, "recall.get")
        with self._db.reading("reading a message") as c:
            row = c.execute(f"SELECT {_MCOLS} FROM vmem.messages WHERE agent=%s AND id=%s",
                            (self._db.agent, serial)).fetchone()
        if row is None:
            raise NotFoundError(f"no message with page id {page_id:#x}")
        return _row_to_message(row)

    def get_many(self, page_ids: Iterable[int]) -> list[Any]:
        """The messages with these page ids, in the order given (NotFoundError if one is missing)."""
        ids = list(page_ids)
        serials = [_serial(p, PageKind.MESSAGE, "recall.get_many") for p in ids]
        found = self._fetch(serials)
        missing = [p for p, s in zip(ids, serials) if s not in found]
        if missing:
            raise NotFoundError(f"no message with page id {missing[0]:#x} ({len(missing)} missing)")
        return [found[s] for s in serials]

    def last_id(self) -> int | None:
        """The page id of the newest message, or None when empty."""
        with self._db.reading("reading the last message id") as c:
            row = c.execute("SELECT max(id) FROM vmem.messages WHERE agent=%s", (self._db.agent,)).fetchone()
        return make_page_id(PageKind.MESSAGE, row[0]) if row[0] is not None else None

    def __len__(self) -> int:
        with self._db.reading("counting messages") as c:
            return int(c.execute("SELECT count(*) FROM vmem.messages WHERE agent=%s",
                                 (self._db.agent,)).fetchone()[0])

    def search(self, query: str | None = None, *, roles: Iterable[str] | None = None, start: TimeBound = None,
               end: TimeBound = None, page: int = 0, page_size: int = 10,
               with_neighbours: bool = False) -> SearchPage[Any]:
        """Search the conversation (the semantics of :meth:`RecallStore.search`)."""
        check_paging(page, page_size)
        lo, hi = epoch_range(start, end)
        role_list = None
        if roles is not None:
            role_list = [roles] if isinstance(roles, str) else list(roles)
            if not role_list:
                return SearchPage([], page, 0, 0)
        if query is not None and query.strip():
            if not self._db.in_transaction:
                self._db.sync()
            return self._ranked(query, role_list, lo, hi, page, page_size, with_neighbours)
        where = ["agent=%s"]
        args: list[Any] = [self._db.agent]
        if role_list is not None:
            where.append("role = ANY(%s)")
            args.append(role_list)
        if lo is not None:
            where.append("ts >= %s")
            args.append(lo)
        if hi is not None:
            where.append("ts <= %s")
            args.append(hi)
        cond = " AND ".join(where)
        with self._db.reading("searching messages") as c:
            total = c.execute(f"SELECT count(*) FROM vmem.messages WHERE {cond}", args).fetchone()[0]
            rows = c.execute(f"SELECT {_MCOLS} FROM vmem.messages WHERE {cond} ORDER BY ts DESC, id DESC "
                             "LIMIT %s OFFSET %s", [*args, page_size, page * page_size]).fetchall()
        hits = [Hit(_row_to_message(r), 0.0) for r in rows]
        return SearchPage(hits, page, page_count(total, page_size), total)

    def _role_bitmap(self, roles: list[str]) -> np.ndarray:
        with self._db.reading("filtering messages") as c:
            ids = np.array([r[0] for r in c.execute("SELECT id FROM vmem.messages WHERE agent=%s AND role = ANY(%s)",
                                                    (self._db.agent, roles))], dtype=np.int64)
        return bitmap(ids)

    def _fetch(self, serials: list[int]) -> dict[int, Any]:
        out: dict[int, Any] = {}
        if not serials:
            return out
        with self._db.reading("reading messages") as c:
            for row in c.execute(f"SELECT {_MCOLS} FROM vmem.messages WHERE agent=%s AND id = ANY(%s)",
                                 (self._db.agent, list(serials))):
                out[row[0]] = _row_to_message(row)
        return out


_BCOLS = 'label, value, "limit", description, read_only'


class PgBlocks(Blocks):
    """One agent's core-memory blocks in PostgreSQL (the interface and rules of :class:`Blocks`)."""

    _db: PgDatabase  # type: ignore[assignment]

    def create(self, label: str, value: str = "", *, limit: int = DEFAULT_BLOCK_LIMIT, description: str = "",
               read_only: bool = False) -> Block:
        """Create a block (BlockExistsError if ``label`` is taken, BlockLimitError if too long)."""
        self._check_writer(f"creating block {label!r}")
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"block label must be a non-empty str, got {label!r}")
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError(f"block limit must be an int >= 1, got {limit!r}")
        _check_value(label, value, limit)
        db = self._db
        with db.transaction(f"creating block {label!r}") as c:
            if c.execute("SELECT 1 FROM vmem.blocks WHERE agent=%s AND label=%s", (db.agent, label)).fetchone():
                raise BlockExistsError(f"block {label!r} exists already")
            c.execute(f"INSERT INTO vmem.blocks(agent, {_BCOLS}, position) SELECT %s, %s, %s, %s, %s, %s, "
                      "coalesce(max(position), 0) + 1 FROM vmem.blocks WHERE agent=%s",
                      (db.agent, label, value, limit, str(description), bool(read_only), db.agent))
        return Block(label, value, limit, str(description), bool(read_only))

    def get(self, label: str) -> Block:
        """The block called ``label`` (NotFoundError if none)."""
        with self._db.reading(f"reading block {label!r}") as c:
            row = c.execute(f"SELECT {_BCOLS} FROM vmem.blocks WHERE agent=%s AND label=%s",
                            (self._db.agent, label)).fetchone()
        if row is None:
            raise NotFoundError(f"no core memory block {label!r}")
        return _block(row)

    def set(self, label: str, value: str) -> Block:
        """Replace a block's value, as the agent does: refused for read-only blocks and over the limit."""
        self._check_writer(f"writing block {label!r}")
        with self._db.transaction(f"writing block {label!r}") as c:
            b = self.get(label)
            if b.read_only:
                raise ReadOnlyBlockError(f"block {label!r} is read-only")
            _check_value(label, value, b.limit)
            self._db.defer_sql("UPDATE vmem.blocks SET value=%s WHERE agent=%s AND label=%s",
                               (value, self._db.agent, label))
        return Block(b.label, value, b.limit, b.description, b.read_only)

    def update(self, label: str, *, value: str | None = None, limit: int | None = None,
               description: str | None = None, read_only: bool | None = None) -> Block:
        """Change any field of a block, as the developer does (read-only does not apply; the limit does)."""
        self._check_writer(f"updating block {label!r}")
        with self._db.transaction(f"updating block {label!r}") as c:
            b = self.get(label)
            new = Block(label, b.value if value is None else value, b.limit if limit is None else limit,
                        b.description if description is None else str(description),
                        b.read_only if read_only is None else bool(read_only))
            if not isinstance(new.limit, int) or isinstance(new.limit, bool) or new.limit < 1:
                raise ValueError(f"block limit must be an int >= 1, got {new.limit!r}")
            _check_value(label, new.value, new.limit)
            c.execute('UPDATE vmem.blocks SET value=%s, "limit"=%s, description=%s, read_only=%s '
                      "WHERE agent=%s AND label=%s",
                      (new.value, new.limit, new.description, new.read_only, self._db.agent, label))
        return new

    def delete(self, label: str) -> None:
        """Remove a block (NotFoundError if none)."""
        self._check_writer(f"deleting block {label!r}")
        with self._db.transaction(f"deleting block {label!r}") as c:
            if c.execute("DELETE FROM vmem.blocks WHERE agent=%s AND label=%s RETURNING 1",
                         (self._db.agent, label)).fetchone() is None:
                raise NotFoundError(f"no core memory block {label!r}")

    def all(self) -> list[Block]:
        """Every block, in creation order."""
        with self._db.reading("reading blocks") as c:
            return [_block(r) for r in c.execute(f"SELECT {_BCOLS} FROM vmem.blocks WHERE agent=%s ORDER BY position",
                                                 (self._db.agent,))]

    def __len__(self) -> int:
        with self._db.reading("counting blocks") as c:
            return int(c.execute("SELECT count(*) FROM vmem.blocks WHERE agent=%s", (self._db.agent,)).fetchone()[0])

    def __contains__(self, label: object) -> bool:
        with self._db.reading("reading blocks") as c:
            return c.execute("SELECT 1 FROM vmem.blocks WHERE agent=%s AND label=%s",
                             (self._db.agent, label)).fetchone() is not None


class PgKernelState(KernelState):
    """One agent's kernel key/value state in PostgreSQL (the interface of :class:`KernelState`)."""

    _db: PgDatabase  # type: ignore[assignment]

    def __getitem__(self, key: str) -> Any:
        with self._db.reading(f"reading state {key!r}") as c:
            row = c.execute("SELECT value FROM vmem.kv WHERE agent=%s AND key=%s", (self._db.agent, key)).fetchone()
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
        with self._db.transaction(f"writing state {key!r}"):
            self._db.defer_sql("INSERT INTO vmem.kv(agent, key, value) VALUES (%s, %s, %s) "
                               "ON CONFLICT (agent, key) DO UPDATE SET value = excluded.value",
                               (self._db.agent, key, blob))

    def __delitem__(self, key: str) -> None:
        with self._db.transaction(f"deleting state {key!r}") as c:
            if c.execute("DELETE FROM vmem.kv WHERE agent=%s AND key=%s RETURNING 1",
                         (self._db.agent, key)).fetchone() is None:
                raise NotFoundError(f"no kernel state {key!r}")

    def __iter__(self) -> Iterator[str]:
        with self._db.reading("listing state") as c:
            keys = [r[0] for r in c.execute("SELECT key FROM vmem.kv WHERE agent=%s ORDER BY key", (self._db.agent,))]
        return iter(keys)

    def __len__(self) -> int:
        with self._db.reading("counting state") as c:
            return int(c.execute("SELECT count(*) FROM vmem.kv WHERE agent=%s", (self._db.agent,)).fetchone()[0])

    def __contains__(self, key: object) -> bool:
        with self._db.reading("reading state") as c:
            return c.execute("SELECT 1 FROM vmem.kv WHERE agent=%s AND key=%s",
                             (self._db.agent, key)).fetchone() is not None


class PgEventLog(EventLog):
    """One agent's append-only event log in PostgreSQL (the interface of :class:`EventLog`)."""

    _db: PgDatabase  # type: ignore[assignment]

    def extend_packed(self, events: Iterable[bytes]) -> None:
        """Append events already packed with msgpack (one transaction)."""
        blobs = list(events)
        if not blobs:
            return
        db = self._db
        with db.transaction("appending events"):
            first = db.next_serials("event", len(blobs))
            for n, b in enumerate(blobs):
                db.defer("INSERT INTO vmem.events(agent, seq, event) VALUES", (db.agent, first + n, b))

    def extend(self, events: Iterable[dict[str, Any]]) -> None:
        """Append several events in one transaction (TypeError if one is not msgpack-serialisable)."""
        try:
            blobs = [self._packer.pack(e) for e in events]
        except (TypeError, ValueError, OverflowError) as e:
            raise TypeError(f"an event is not msgpack-serialisable: {e}") from e
        self.extend_packed(blobs)

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(seq, event)`` pairs with ``seq > after``, in order (at most ``limit``)."""
        with self._db.reading("reading events") as c:
            rows = c.execute("SELECT seq, event FROM vmem.events WHERE agent=%s AND seq > %s ORDER BY seq LIMIT %s",
                             (self._db.agent, after, limit)).fetchall()
        for seq, blob in rows:
            yield seq, msgpack.unpackb(blob, raw=False, strict_map_key=False)

    def tail(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        """The last ``n`` events, oldest first."""
        with self._db.reading("reading events") as c:
            rows = c.execute("SELECT seq, event FROM vmem.events WHERE agent=%s ORDER BY seq DESC LIMIT %s",
                             (self._db.agent, n)).fetchall()
        return [(seq, msgpack.unpackb(blob, raw=False, strict_map_key=False)) for seq, blob in reversed(rows)]

    def __len__(self) -> int:
        with self._db.reading("counting events") as c:
            return int(c.execute("SELECT count(*) FROM vmem.events WHERE agent=%s", (self._db.agent,)).fetchone()[0])


class PgJournal(Journal):
    """One agent's journal in PostgreSQL (the interface of :class:`Journal`)."""

    _db: PgDatabase  # type: ignore[assignment]

    def append(self, entry: bytes) -> None:
        """Append one entry (joins an open transaction)."""
        db = self._db
        with db.transaction("appending to the journal"):
            db.defer("INSERT INTO vmem.journal(agent, seq, entry) VALUES", (db.agent, db.next_serials("journal", 1), entry))

    def entries(self) -> list[bytes]:
        """Every entry, oldest first."""
        with self._db.reading("reading the journal") as c:
            return [bytes(r[0]) for r in c.execute("SELECT entry FROM vmem.journal WHERE agent=%s ORDER BY seq",
                                                   (self._db.agent,))]

    def clear(self) -> None:
        """Forget every entry (joins an open transaction)."""
        with self._db.transaction("clearing the journal") as c:
            c.execute("DELETE FROM vmem.journal WHERE agent=%s", (self._db.agent,))

    def __len__(self) -> int:
        with self._db.reading("counting the journal") as c:
            return int(c.execute("SELECT count(*) FROM vmem.journal WHERE agent=%s", (self._db.agent,)).fetchone()[0])
