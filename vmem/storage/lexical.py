"""The text index of one SQLite table: a cache of it, like ``archival.idx`` for vectors.

A :class:`LexicalCache` keeps a :class:`vmem._textindex.TextIndex` over the rows
of ``messages`` (recall) or ``passages`` (archival), and the file it is saved in
(``<dir>/recall.tix``, ``<dir>/archival.tix``).

Invariants:

1. SQLite is the truth. On open the file is loaded and reconciled: a missing,
   unreadable, damaged or foreign file (another store, table or analyzer) is
   rebuilt from the table; a file behind the table (a crash before it was
   saved) gets the newer rows added. Row ids only grow (AUTOINCREMENT), so equal
   ``count(*)`` and ``max(id)`` mean equal id sets; otherwise the ids are
   compared, and a file holding a row the table no longer has is rebuilt.
2. In memory the index holds exactly the committed rows: rows are added after
   ``COMMIT`` (a post-commit hook) and deleted after the deleting commit.
3. The file is written only outside a transaction (at checkpoint, close, and
   every ``autosave`` changes), atomically, and never by a read-only open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vmem.index import IndexFormatError
from vmem._textindex import TextIndex
from vmem.storage._db import Database, fsync_dir

__all__ = ["LexicalCache", "SOURCES"]

log = logging.getLogger("vmem.storage")

#: Per table: the SELECT of (id, text, ts, role, group) rows, after an id, in id order.
SOURCES = {
    "messages": "SELECT id, content, ts, role, 0 FROM messages WHERE id > ? ORDER BY id",
    "passages": "SELECT id, text, ts, '', coalesce(grp, id) FROM passages WHERE id > ? ORDER BY id",
}
_BATCH = 20_000


class LexicalCache:
    """The text index of ``table`` in ``db``, saved at ``path``."""

    def __init__(self, db: Database, path: Path, table: str, store_id: str, *, autosave: int = 0) -> None:
        if table not in SOURCES:
            raise ValueError(f"no text index for table {table!r}")
        self._db = db
        self.path = Path(path)
        self.table = table
        self.owner = f"{store_id}/{table}"
        self._autosave = autosave
        self._unsaved = 0
        #: How the index was obtained at open: "loaded", "caught-up", "rebuilt".
        self.status = ""
        #: Seconds the open took (load or rebuild).
        self.open_seconds = 0.0
        t = time.perf_counter()
        self.index = self._open()
        self.open_seconds = time.perf_counter() - t

    # -- opening

    def _open(self) -> TextIndex:
        index: TextIndex | None = None
        if self.path.exists():
            try:
                index = TextIndex.load(self.path, self.owner)
            except (IndexFormatError, OSError, ValueError) as e:
                log.warning("%s: text index unusable, rebuilding: %s", self.path, e)
        with self._db.reading(f"reconciling the {self.table} text index") as c:
            count, top = c.execute(f"SELECT count(*), coalesce(max(id), 0) FROM {self.table}").fetchone()
            if index is not None:
                have = index.ids()
                top_have = int(have[-1]) if len(have) else 0
                if len(have) == count and top_have == top:
                    self.status = "loaded"
                    return index
                db_ids = np.fromiter((r[0] for r in c.execute(f"SELECT id FROM {self.table}")), dtype=np.int64)
                extra = np.setdiff1d(have.astype(np.int64), db_ids, assume_unique=True)
                if len(extra) == 0 and (len(db_ids) == 0 or db_ids[db_ids > top_have].size == len(db_ids) - len(have)):
                    self._add_rows(c, index, top_have)
                    self.status = "caught-up"
                    self._unsaved = max(1, count - len(have))
                    return index
                log.warning("%s: text index is ahead of the database, rebuilding", self.path)
            index = TextIndex()
            self._add_rows(c, index, 0)
        self.status = "rebuilt"
        self._unsaved = max(1, count)
        return index

    def _add_rows(self, c: Any, index: TextIndex, after: int) -> None:
        cur = c.execute(SOURCES[self.table], (after,))
        while rows := cur.fetchmany(_BATCH):
            for rid, text, ts, role, grp in rows:
                index.add(rid, text, ts, role, grp)

    # -- changes (called from post-commit hooks)

    def added(self, rows: Sequence[tuple[int, str, float, str, int]]) -> None:
        """Index committed rows (id, text, ts, role, group), in id order."""
        add = self.index.add
        for rid, text, ts, role, grp in rows:
            add(rid, text, ts, role, grp)
        self._changed(len(rows))

    def deleted(self, rows: Sequence[tuple[int, str]]) -> None:
        """Unindex committed deletions (id, text as indexed)."""
        for rid, text in rows:
            self.index.delete(rid, text)
        st = self.index.stats()
        if st["dead"] > max(1024, st["postings"] // 4):
            self.index.compact()
        self._changed(len(rows))

    def _changed(self, n: int) -> None:
        self._unsaved += n
        if self._autosave and self._unsaved >= self._autosave and not self._db.in_transaction:
            self.save()

    # -- persistence

    def save(self) -> None:
        """Write the index file if it changed since it was last written (not inside a transaction,
        never from a read-only open: the file belongs to the writer)."""
        with self._db.lock:
            if self._unsaved and not self._db.in_transaction and not self._db.closed and not self._db.read_only:
                self.index.save(self.path, self.owner)
                fsync_dir(self.path.parent)
                self._unsaved = 0

    def verify(self) -> bool:
        """Whether the index holds exactly the table's row ids."""
        with self._db.reading(f"listing {self.table}") as c:
            db_ids = np.fromiter((r[0] for r in c.execute(f"SELECT id FROM {self.table} ORDER BY id")), dtype=np.int64)
        return bool(np.array_equal(db_ids, self.index.ids().astype(np.int64)))
