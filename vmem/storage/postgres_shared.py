"""Shared blocks in PostgreSQL: the agents of one database, in any number of processes and machines.

The same store as :class:`vmem.storage.shared_blocks.SharedBlockFile` (its logic is
:class:`~vmem.storage.shared_blocks.SqlSharedBlocks`), over two tables of the ``vmem``
schema; an edit is one transaction that takes the block's row lock (``SELECT ... FOR
UPDATE``), so edits from any number of workers apply one at a time to the current value.
Connections come from the process's pool for the database (:func:`pool_for`).

Interface::

    from vmem.storage.postgres_shared import PgSharedBlocks
    shared = PgSharedBlocks("postgresql://user@host:5432/db")   # an ``agent`` parameter is ignored
    shared.create("team", "...", limit=2000); shared.apply(edit_id, "team", edit, agent="ana")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from vmem.storage.errors import StoreClosedError
from vmem.storage.postgres_connect import _redact, pool_for, translate
from vmem.storage.shared_blocks import SqlSharedBlocks

__all__ = ["PgSharedBlocks", "database_url"]

_TABLES = [
    """CREATE TABLE IF NOT EXISTS vmem.shared_blocks(
        name text PRIMARY KEY, value text NOT NULL, "limit" integer NOT NULL,
        description text NOT NULL DEFAULT '', read_only integer NOT NULL DEFAULT 0,
        version bigint NOT NULL, updated_by text NOT NULL DEFAULT '',
        updated_at double precision NOT NULL, crc bigint NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS vmem.shared_block_edits(
        edit_id text PRIMARY KEY, name text NOT NULL, agent text NOT NULL, edit bytea NOT NULL,
        applied integer NOT NULL, reason text NOT NULL, version bigint NOT NULL, at double precision NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS shared_block_edits_by_name ON vmem.shared_block_edits(name, at)",
]


def database_url(url: str) -> str:
    """``url`` without its ``agent`` parameter: the database a shared block store lives in."""
    parts = urlsplit(url)
    rest = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "agent"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment))


class _Statements:
    """A psycopg connection that takes the store's ``?`` parameter marks."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql.replace("?", "%s"), list(params))


class PgSharedBlocks(SqlSharedBlocks):
    """Shared blocks in the PostgreSQL database at ``url`` (see the module docstring)."""

    _blocks = "vmem.shared_blocks"
    _edits = "vmem.shared_block_edits"
    _lock_rows = " FOR UPDATE"

    def __init__(self, url: str) -> None:
        self._dsn = database_url(url)
        self.location = _redact(self._dsn)
        self._closed = False
        self._pool = pool_for(self._dsn)
        with self._pool.connection() as conn, translate(f"opening shared blocks in {self.location}"):
            if conn.execute("SELECT to_regclass('vmem.shared_block_edits') IS NULL").fetchone()[0]:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(hashtext('vmem shared blocks'))")
                    conn.execute("CREATE SCHEMA IF NOT EXISTS vmem")
                    for stmt in _TABLES:
                        conn.execute(stmt)

    @contextmanager
    def _use(self, what: str, *, write: bool = False) -> Iterator[_Statements]:
        if self._closed:
            raise StoreClosedError(f"the shared block store in {self.location} is closed")
        with self._pool.connection() as conn, translate(f"{what} ({self.location})"):
            if write:
                with conn.transaction():
                    yield _Statements(conn)
            else:
                yield _Statements(conn)

    def close(self) -> None:
        self._closed = True  # the connections are the process's pool's

    def __repr__(self) -> str:
        return f"<PgSharedBlocks {self.location!r}>"
