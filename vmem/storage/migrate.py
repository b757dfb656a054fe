"""Copying an agent's store between a directory and a PostgreSQL location, row for row.

Interface::

    copy_store(src_store, dst_store)     # every tier, ids kept; dst must hold nothing yet

The copy keeps every row's id (message and passage serials are the page ids the kernel's
saved state refers to; event and journal sequence numbers keep their order), the stored
embeddings (nothing is re-embedded), the passages' hashes, groups and intervals, the blocks'
order, the kernel state and the event log. It runs in one transaction of the destination:
all or nothing. The meta keys that describe a store rather than the agent (its id, creation
time, archival backend) stay the destination's own. Stores with Milvus archival are refused
(their passages are not in the database).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from vmem.storage import vecblob
from vmem.storage.errors import ConfigMismatchError, VmemStorageError

__all__ = ["TABLES", "copy_store"]

#: Logical tables and their columns, in load order (the same on both backends).
TABLES: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "messages": ("id", "role", "content", "ts", "meta"),
    "passages": ("id", "text", "hash", "ts", "tags", "embedding", "grp", "valid_from", "invalid_at",
                 "superseded_by"),
    "passage_tags": ("tag", "passage_id"),
    "blocks": ("label", "value", "limit", "description", "read_only", "position"),
    "kv": ("key", "value"),
    "events": ("seq", "event"),
    "journal": ("seq", "entry"),
}
#: Meta keys that belong to the store, not to the agent.
_OWN_META = {"store_id", "created", "archival", "archival_ledger", "next_passage_serial"}
_BATCH = 2000


def _cols(table: str) -> str:
    return ", ".join(f'"{c}"' if c == "limit" else c for c in TABLES[table])


def _is_pg(store: Any) -> bool:
    return getattr(store, "shared", False)


def _rows(store: Any, table: str) -> Iterator[tuple[Any, ...]]:
    """The rows of ``table`` in ``store``, in the neutral form (embeddings as float32 arrays)."""
    db = store._db
    with db.reading(f"reading {table}") as c:
        if _is_pg(store):
            cur = c.execute(f"SELECT {_cols(table)} FROM vmem.{table} WHERE agent=%s", (db.agent,))
        else:
            cur = c.execute(f"SELECT {_cols(table)} FROM {table}")
        rows = cur.fetchall()
    emb = TABLES[table].index("embedding") if table == "passages" else -1
    for row in rows:
        row = tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
        if emb >= 0 and row[emb] is not None:
            v = row[emb]
            vec = vecblob.decode_many([v], len(v) // 2)[0] if isinstance(v, bytes) else np.asarray(
                v.to_numpy() if hasattr(v, "to_numpy") else v, dtype=np.float32)
            row = row[:emb] + (vec,) + row[emb + 1:]
        yield row


def _load(store: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
    db = store._db
    cols = TABLES[table]
    if table == "blocks":
        rows = [r[:4] + (bool(r[4]),) + r[5:] for r in rows]
    if _is_pg(store):
        if table == "passages":
            i = cols.index("embedding")
            rows = [r[:i] + (None if r[i] is None else np.asarray(r[i], np.float32),) + r[i + 1:] for r in rows]
        marks = ", ".join(["%s"] * (len(cols) + 1))
        sql = f"INSERT INTO vmem.{table}(agent, {_cols(table)}) VALUES ({marks})"
        rows = [(db.agent, *r) for r in rows]
    else:
        if table == "passages":
            i = cols.index("embedding")
            rows = [r[:i] + (None if r[i] is None else vecblob.encode_many(np.asarray(r[i], np.float32)[None, :],
                                                                           normalise=False)[0],) + r[i + 1:]
                    for r in rows]
        if table == "blocks":
            rows = [r[:4] + (int(r[4]),) + r[5:] for r in rows]
        sql = f"INSERT INTO {table}({_cols(table)}) VALUES ({', '.join('?' * len(cols))})"
    with db.transaction(f"copying {table}") as c:
        for lo in range(0, len(rows), _BATCH):
            chunk = rows[lo:lo + _BATCH]
            if _is_pg(store):
                with c.cursor() as cur:
                    cur.executemany(sql, chunk)
            else:
                c.executemany(sql, chunk)


def copy_store(src: Any, dst: Any) -> dict[str, int]:
    """Copy every row of ``src`` into ``dst`` (a MemoryDir or a PgStore each, ``dst`` holding
    no messages, passages, blocks, state or events yet); returns the rows copied per table.
    The destination's caches are rebuilt from the rows when it is next opened."""
    for s in (src, dst):
        if s.archival.backend not in ("sqlite", "postgres"):
            raise ConfigMismatchError(f"{s.path}: migrating needs the passages in the database, not in "
                                      f"{s.archival.backend}")
    if len(dst.recall) or len(dst.archival) or len(dst.blocks) or len(dst.state) or len(dst.events):
        raise VmemStorageError(f"{dst.path} holds an agent's data already; migrate into a new location")
    counts: dict[str, int] = {}
    top: dict[str, int] = {}
    with dst.transaction():
        for table in TABLES:
            rows = list(_rows(src, table))
            if table == "meta":
                import msgpack

                rows = [r for r in rows if r[0] not in _OWN_META]
                have = {r[0] for r in _rows(dst, "meta")}
                keep = [r for r in rows if r[0] not in have]
                for key, value in [r for r in rows if r[0] in have]:  # the embedder's record
                    dst._db.set_meta(key, msgpack.unpackb(value, raw=False))
                rows = keep
            if rows:
                _load(dst, table, rows)
            counts[table] = len(rows)
            if table in ("messages", "passages", "events", "journal") and rows:
                top[table] = max(int(r[0]) for r in rows)
        _advance(dst, top)
    if _is_pg(dst):  # rows went in beside the tiers: the next open builds the caches from them
        dst._db.caches_stale = True
    return counts


def _advance(dst: Any, top: dict[str, int]) -> None:
    """Make the destination's id counters continue after the copied ids."""
    db = dst._db
    if _is_pg(dst):  # (SQLite's AUTOINCREMENT follows explicit ids by itself)
        names = {"messages": "message", "passages": "passage", "events": "event", "journal": "journal"}
        for table, n in top.items():
            db.next_serials(names[table], max(0, n - db._seq[names[table]]))
