"""The passage ledger: which passages of an external archival backend (Milvus) are committed.

Milvus writes are not part of an SQLite transaction, so the store's SQLite file keeps the
truth: a passage exists when its serial is in the ledger (table ``archival_ids``), written in
the same transaction as everything else. Around it:

- an insert adds the serials to the ledger and registers a rollback hook that deletes the
  rows from Milvus again (a rolled-back step leaves no passage behind);
- a delete removes the serials from the ledger and deletes the Milvus rows after the commit;
- opening reconciles: Milvus rows the ledger does not hold (a crash between the Milvus write
  and the rollback hook) are deleted; serials the ledger holds that Milvus lost are dropped
  from the ledger, loudly. A store from before the ledger adopts what Milvus holds, once.
"""

from __future__ import annotations

from collections.abc import Iterable

from vmem.storage._db import Database

__all__ = ["PassageLedger"]

_ADOPTED = "archival_ledger"


class PassageLedger:
    """The committed passage serials of an external backend, in the store's SQLite file."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, serials: Iterable[int]) -> None:
        """Record serials as committed with the running transaction."""
        with self._db.transaction("recording passages") as c:
            c.executemany("INSERT OR IGNORE INTO archival_ids(id) VALUES (?)", [(int(s),) for s in serials])

    def remove(self, serials: Iterable[int]) -> None:
        """Forget serials with the running transaction."""
        with self._db.transaction("forgetting passages") as c:
            c.executemany("DELETE FROM archival_ids WHERE id = ?", [(int(s),) for s in serials])

    def serials(self) -> set[int]:
        """Every committed serial."""
        with self._db.reading("reading the passage ledger") as c:
            return {r[0] for r in c.execute("SELECT id FROM archival_ids")}

    def __len__(self) -> int:
        with self._db.reading("counting the passage ledger") as c:
            return int(c.execute("SELECT count(*) FROM archival_ids").fetchone()[0])

    @property
    def adopted(self) -> bool:
        """Whether the ledger is the truth yet (False for a store made before it)."""
        return bool(self._db.get_meta(_ADOPTED, False))

    def adopt(self, serials: Iterable[int]) -> None:
        """Make the ledger the truth, holding ``serials`` (what the backend holds now)."""
        with self._db.transaction("adopting the passage ledger"):
            self.add(serials)
            self._db.set_meta(_ADOPTED, True)
