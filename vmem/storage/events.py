"""The event log: an append-only sequence of msgpack maps in the store's database.

The kernel's trace lives here (every driver exchange and memory operation), so an
event commits or rolls back with the writes it describes: one transaction, one fsync.
``append`` joins an open ``MemoryDir.transaction()``; reading never blocks a writer.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import msgpack

from vmem.storage._db import Database

__all__ = ["EventLog"]


class EventLog:
    """Append-only events (msgpack-serialisable dicts), numbered from 1. From ``MemoryDir.events``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._packer = msgpack.Packer(use_bin_type=True)

    def append(self, event: dict[str, Any]) -> None:
        """Append one event (joins an open transaction; else its own commit)."""
        self.extend([event])

    def extend(self, events: Iterable[dict[str, Any]]) -> None:
        """Append several events in one transaction (TypeError if one is not msgpack-serialisable)."""
        try:
            rows = [(self._packer.pack(e),) for e in events]
        except (TypeError, ValueError, OverflowError) as e:
            raise TypeError(f"an event is not msgpack-serialisable: {e}") from e
        if rows:
            with self._db.transaction("appending events") as c:
                c.executemany("INSERT INTO events(event) VALUES (?)", rows)

    def extend_packed(self, events: Iterable[bytes]) -> None:
        """Append events already packed with msgpack (one transaction)."""
        rows = [(e,) for e in events]
        if rows:
            with self._db.transaction("appending events") as c:
                c.executemany("INSERT INTO events(event) VALUES (?)", rows)

    def read(self, after: int = 0, limit: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(seq, event)`` pairs with ``seq > after``, in order (at most ``limit``)."""
        with self._db.reading("reading events") as c:
            rows = c.execute("SELECT seq, event FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                             (after, -1 if limit is None else limit)).fetchall()
        for seq, blob in rows:
            yield seq, msgpack.unpackb(blob, raw=False, strict_map_key=False)

    def tail(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        """The last ``n`` events, oldest first."""
        with self._db.reading("reading events") as c:
            rows = c.execute("SELECT seq, event FROM events ORDER BY seq DESC LIMIT ?", (n,)).fetchall()
        return [(seq, msgpack.unpackb(blob, raw=False, strict_map_key=False)) for seq, blob in reversed(rows)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _, event in self.read():
            yield event

    def __len__(self) -> int:
        with self._db.reading("counting events") as c:
            return int(c.execute("SELECT count(*) FROM events").fetchone()[0])
