"""The journal: byte entries appended between checkpoints of a state saved whole.

A writer that saves a large state (the kernel's core snapshot) can append what changed to
the journal instead, and fold it (save the whole state, :meth:`Journal.clear`) now and then:
a commit then writes what changed, not everything. Entries join the open transaction;
reading returns them in the order they were appended.
"""

from __future__ import annotations

from vmem.storage._db import Database

__all__ = ["Journal"]


class Journal:
    """Byte entries in order, since the last :meth:`clear`. From ``MemoryDir.journal``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def append(self, entry: bytes) -> None:
        """Append one entry (joins an open transaction)."""
        with self._db.transaction("appending to the journal") as c:
            c.execute("INSERT INTO journal(entry) VALUES (?)", (entry,))

    def entries(self) -> list[bytes]:
        """Every entry, oldest first."""
        with self._db.reading("reading the journal") as c:
            return [bytes(r[0]) for r in c.execute("SELECT entry FROM journal ORDER BY seq")]

    def clear(self) -> None:
        """Forget every entry (the state they lead to was saved whole; joins an open transaction)."""
        with self._db.transaction("clearing the journal") as c:
            c.execute("DELETE FROM journal")

    def __len__(self) -> int:
        with self._db.reading("counting the journal") as c:
            return int(c.execute("SELECT count(*) FROM journal").fetchone()[0])
