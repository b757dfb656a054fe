"""PostgreSQL locations and connections: an agent's URL, one pool per server per process, errors.

A location ``postgresql://user@host:5432/db?agent=ana`` names one agent in one database
(:class:`PgLocation`); every connection to a server comes from this process's pool for it
(:func:`pool_for`, psycopg_pool, connections in autocommit with the lock timeout set and
pgvector's adapters registered); :func:`translate` turns psycopg's exceptions into
:class:`~vmem.storage.errors.VmemStorageError` subclasses.

Interface::

    loc = PgLocation.parse("postgresql://vmem@db:5432/app?agent=ana")   # loc.dsn, loc.agent
    is_pg_location(text); pool_for(loc.dsn).connection(); close_pools()
    with translate("what"): ...
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from vmem.storage.errors import (
    BackendError,
    ReadOnlyStoreError,
    StoreLockedError,
    VmemStorageError,
)

__all__ = ["CONNECT_TIMEOUT", "DEFAULT_LOCK_TIMEOUT_MS", "POOL_MAX", "PgLocation", "close_pools", "is_pg_location",
           "pool_for", "translate"]

#: How long a transaction waits for its agent's lock before StoreLockedError (milliseconds).
DEFAULT_LOCK_TIMEOUT_MS = 5000

_AGENT_NAME = re.compile(r"^[A-Za-z0-9_.@:+-]{1,200}$")


def is_pg_location(location: object) -> bool:
    """Whether ``location`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


@dataclass(frozen=True)
class PgLocation:
    """A parsed ``postgresql://...?agent=NAME`` location: the server's DSN and the agent's name."""

    dsn: str  #: the connection URL without the ``agent`` parameter
    agent: str

    @classmethod
    def parse(cls, url: str) -> "PgLocation":
        """Split a location (ValueError when it names no agent or a malformed one)."""
        if not is_pg_location(url):
            raise ValueError(f"not a PostgreSQL location: {url!r} (postgresql://user@host:5432/db?agent=NAME)")
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        agents = [v for k, v in query if k == "agent"]
        if len(agents) != 1 or not agents[0]:
            raise ValueError(f"{_redact(url)}: a PostgreSQL location names one agent: ...?agent=NAME")
        agent = unquote(agents[0])
        if not _AGENT_NAME.match(agent):
            raise ValueError(f"agent name {agent!r}: 1-200 characters of letters, digits and _ . @ : + -")
        rest = urlencode([(k, v) for k, v in query if k != "agent"])
        return cls(urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), agent)

    def __str__(self) -> str:
        return f"{_redact(self.dsn)}?agent={self.agent}" if "?" not in self.dsn else \
            f"{_redact(self.dsn)}&agent={self.agent}"


def _redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


# -- connection pools: one per DSN per process

_POOLS: dict[str, Any] = {}
_POOLS_LOCK = threading.Lock()
#: Most connections one process keeps to one server (an open store holds one).
POOL_MAX = 32
#: Seconds to wait for the server when a process first connects to it.
CONNECT_TIMEOUT = 10


#: Connections that know the ``vector`` type (pgvector's adapters registered on them).
_WITH_VECTOR: weakref.WeakSet[Any] = weakref.WeakSet()


def _configure(conn: Any) -> None:
    conn.autocommit = True
    conn.execute(f"SET lock_timeout = {DEFAULT_LOCK_TIMEOUT_MS}")
    conn.execute("SET idle_in_transaction_session_timeout = 0")
    _register_vector(conn)


def _register_vector(conn: Any) -> None:
    """Register pgvector's adapters on ``conn`` once the extension exists (a connection made
    before the first open created it gets them at its next open)."""
    if conn in _WITH_VECTOR:
        return
    if conn.execute("SELECT 1 FROM pg_type WHERE typname = 'vector'").fetchone() is None:
        return
    from pgvector.psycopg import register_vector

    register_vector(conn)
    _WITH_VECTOR.add(conn)


def pool_for(dsn: str) -> Any:
    """The process's connection pool to ``dsn`` (made on first use; connections in autocommit)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(dsn)
        if pool is None:
            try:
                import psycopg
                from psycopg_pool import ConnectionPool
            except ImportError as e:  # pragma: no cover - the postgres extra is missing
                raise VmemStorageError("a PostgreSQL location needs the postgres extra: "
                                       "pip install 'vmem[postgres]'") from e
            try:  # the server's own answer now, rather than a pool that waits for it in vain
                psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT).close()
            except psycopg.Error as e:
                raise BackendError(f"cannot connect to {_redact(dsn)}: {e}".strip()) from e
            pool = ConnectionPool(dsn, min_size=0, max_size=POOL_MAX, configure=_configure, open=True,
                                  name=f"vmem:{_redact(dsn)}", timeout=30.0)
            _POOLS[dsn] = pool
        return pool


def close_pools() -> None:
    """Close every pool of this process (e.g. before os.fork, or at exit)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.close()


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Re-raise psycopg errors met while doing ``what`` as VmemStorageError subclasses."""
    import psycopg

    try:
        yield
    except psycopg.errors.LockNotAvailable as e:
        raise StoreLockedError(f"{what}: the agent is busy in another process (waited for its lock): {e}") from e
    except psycopg.errors.ReadOnlySqlTransaction as e:
        raise ReadOnlyStoreError(f"{what}: the store was opened read-only") from e
    except psycopg.Error as e:
        raise VmemStorageError(f"{what}: {type(e).__name__}: {e}") from e
