"""The PostgreSQL database behind a PgStore: locations, pools, schema, one agent's transactions.

A location ``postgresql://user@host:5432/db?agent=ana`` names one agent in one database; many
agents share the database's tables (schema ``vmem``), every row keyed by its agent's id.

Interface (what the tiers in postgres_tiers.py / postgres_archival.py use; the same shape as
:class:`vmem.storage._db.Database`, so the search code over the caches is shared)::

    db = PgDatabase(location, create=True, read_only=False)
    with db.transaction("what") as c: c.execute("... WHERE agent=%s", (db.agent, ...))
    with db.reading("what") as c: ...            # outside a transaction: one statement, one snapshot
    db.after_commit(hook); db.on_rollback(hook); db.savepoint(); db.get_meta(k); db.set_meta(k, v)

Invariants:

1. A write transaction holds its agent's row lock in ``vmem.agents`` from its first statement
   to COMMIT/ROLLBACK (``UPDATE ... SET version = version + 1``): two processes never
   interleave one agent's transactions; a second one waits at most ``lock_timeout`` and then
   gets :class:`StoreLockedError`. Different agents lock different rows and run in parallel.
2. ``version`` counts the agent's committed write transactions. The database object knows the
   version its caches reflect (``seen``); a transaction that finds another process committed
   in between calls the ``stale`` hooks first (the caches catch up, under the lock), and, when
   ``strict`` is set (a kernel memory: its in-memory image is stale too), rolls back and raises
   :class:`StaleStoreError` so the owner can reload and retry.
3. A read-only database reads one consistent snapshot for its life (a REPEATABLE READ READ
   ONLY transaction opened at open; :meth:`PgDatabase.refresh` takes a new one) and never
   locks anything a writer waits for.
4. Post-commit hooks run after COMMIT, in order; rollback hooks on rollback (as in SQLite).
5. Every psycopg error leaving this package is a VmemStorageError.
6. Round trips: a write transaction runs in psycopg's pipeline mode from its first statement
   to COMMIT, so the writes of a step travel together; a statement whose result is read waits
   for it (a sync). A transaction that sent nothing since BEGIN (most steps: their writes are
   all queued, invariant 7) sends its few queued writes and COMMIT as one simple query instead,
   its values bound in the process. The ids of new rows (messages, passages, events, journal
   entries) come from counters in the agent's row, read with the lock and written back with
   the COMMIT, so no insert waits for a ``max(id)``. A savepoint's writes are checked at the COMMIT: an SQL error
   inside one (not expected: the agent's lock keeps other writers out) aborts the whole
   transaction, not just the savepoint.
7. Writes wait in the process until they must go: rows of plain INSERTs (messages, events,
   journal, passages and their tags) queue with :meth:`PgDatabase.defer` and go as one
   multi-row INSERT per table with the transaction's next statement (a read sees them) or its
   COMMIT; a savepoint is sent only
   when something is written in it (most function calls write nothing), and one that fails
   drops its queued rows. A queued row that the server refuses (not expected: the ids come
   from the agent's counters under its lock) fails the statement that sends it, and the
   transaction with it.
8. Connections: an open store holds none between transactions. A transaction, a snapshot or a
   read borrows one from the process's pool (one per DSN, at most ``POOL_MAX``) and gives it
   back when it ends, so a worker can keep hundreds of agents open with a few connections;
   a read-only store keeps its snapshot's connection for its life. Nothing a store sets lasts
   past its transaction (``SET LOCAL``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import msgpack

from vmem.storage.errors import (
    ReadOnlyStoreError,
    SchemaVersionError,
    StoreClosedError,
    StoreLockedError,
    StoreNotFoundError,
    VmemStorageError,
)
from vmem.storage.postgres_connect import (
    DEFAULT_LOCK_TIMEOUT_MS,
    POOL_MAX,
    PgLocation,
    _redact,
    _register_vector,
    pool_for,
    translate,
)

__all__ = ["PG_SCHEMA_VERSION", "PgDatabase", "StaleStoreError"]

log = logging.getLogger("vmem.storage")

#: The version of the ``vmem`` schema this code writes and reads (table ``vmem.info``).
PG_SCHEMA_VERSION = 1


_SCHEMA = """
CREATE TABLE IF NOT EXISTS vmem.info(key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS vmem.agents(
    id          bigserial PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    version     bigint NOT NULL DEFAULT 0,
    message_seq bigint NOT NULL DEFAULT 0,
    passage_seq bigint NOT NULL DEFAULT 0,
    event_seq   bigint NOT NULL DEFAULT 0,
    journal_seq bigint NOT NULL DEFAULT 0,
    created     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS vmem.meta(
    agent bigint NOT NULL REFERENCES vmem.agents(id) ON DELETE CASCADE,
    key   text NOT NULL,
    value bytea,
    PRIMARY KEY(agent, key)
);
CREATE TABLE IF NOT EXISTS vmem.messages(
    agent   bigint NOT NULL REFERENCES vmem.agents(id) ON DELETE CASCADE,
    id      bigint NOT NULL,
    role    text NOT NULL,
    content text NOT NULL,
    ts      double precision NOT NULL,
    meta    bytea,
    PRIMARY KEY(agent, id)
);
CREATE INDEX IF NOT EXISTS messages_ts ON vmem.messages(agent, ts);
CREATE INDEX IF NOT EXISTS messages_role_ts ON vmem.messages(agent, role, ts);
CREATE TABLE IF NOT EXISTS vmem.passages(
    agent         bigint NOT NULL REFERENCES vmem.agents(id) ON DELETE CASCADE,
    id            bigint NOT NULL,
    text          text NOT NULL,
    hash          bytea NOT NULL,
    ts            double precision NOT NULL,
    tags          bytea,
    embedding     vector,
    grp           bigint,
    valid_from    double precision,
    invalid_at    double precision,
    superseded_by bigint,
    PRIMARY KEY(agent, id),
    UNIQUE(agent, hash)
);
CREATE INDEX IF NOT EXISTS passages_ts ON vmem.passages(agent, ts);
CREATE INDEX IF NOT EXISTS passages_valid_from ON vmem.passages(agent, valid_from);
CREATE INDEX IF NOT EXISTS passages_superseded ON vmem.passages(agent, invalid_at) WHERE invalid_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS vmem.passage_tags(
    agent      bigint NOT NULL,
    tag        text NOT NULL,
    passage_id bigint NOT NULL,
    PRIMARY KEY(agent, tag, passage_id),
    FOREIGN KEY(agent, passage_id) REFERENCES vmem.passages(agent, id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS passage_tags_pid ON vmem.passage_tags(agent, passage_id);
CREATE TABLE IF NOT EXISTS vmem.blocks(
    agent       bigint NOT NULL REFERENCES vmem.agents(id) ON DELETE CASCADE,
    label       text NOT NULL,
    value       text NOT NULL,
    "limit"     integer NOT NULL,
    description text NOT NULL DEFAULT '',
    read_only   boolean NOT NULL DEFAULT false,
    position    integer NOT NULL,
    PRIMARY KEY(agent, label)
);
CREATE TABLE IF NOT EXISTS vmem.kv(
    agent bigint NOT NULL REFERENCES vmem.agents(id) ON DELETE CASCADE,
    key   text NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY(agent, key)
);
CREATE TABLE IF NOT EXISTS vmem.events(
    agent bigint NOT NULL REFERENCES vmem.agents(id) ON DELETE CASCADE,
    seq   bigint NOT NULL,
    event bytea NOT NULL,
    PRIMARY KEY(agent, seq)
);
CREATE TABLE IF NOT EXISTS vmem.journal(
    agent bigint NOT NULL REFERENCES vmem.agents(id) ON DELETE CASCADE,
    seq   bigint NOT NULL,
    entry bytea NOT NULL,
    PRIMARY KEY(agent, seq)
);
"""

_SEQS = ("message", "passage", "event", "journal")
_SET_SEQS = ("UPDATE vmem.agents SET message_seq = %s, passage_seq = %s, event_seq = %s, journal_seq = %s "
             "WHERE id = %s")
#: Rows per multi-row INSERT of deferred rows (PostgreSQL binds at most 65,535 parameters).
_ROWS_PER_INSERT = 1000
_BIND_IN_PROCESS = 512  # values a COMMIT's queued writes may hold to go as one simple query (invariant 6)
_ROWS, _SQL, _SP = "rows", "sql", "savepoint"  # the kinds of queued writes

class StaleStoreError(VmemStorageError):
    """Another process committed to this agent since this object last saw it (a strict store:
    its owner reloads what it keeps in memory, then retries; nothing was written)."""


class PgDatabase:
    """One agent's view of a PostgreSQL database (see the module docstring for its invariants)."""

    def __init__(self, location: str | PgLocation, *, create: bool, read_only: bool = False,
                 lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS) -> None:
        self.location = location if isinstance(location, PgLocation) else PgLocation.parse(location)
        #: What error messages call the store.
        self.path = str(self.location)
        self.read_only = read_only
        self.lock = threading.RLock()
        self._depth = 0
        self._after_commit: list[Callable[[], None]] = []
        self._on_rollback: list[Callable[[], None]] = []
        self._closed = False
        self._lock_timeout_ms = int(lock_timeout_ms)
        #: Hooks run (under the agent's lock, inside the transaction) when another process
        #: committed to the agent since this object's caches were current.
        self.stale_hooks: list[Callable[[], None]] = []
        #: Refuse a transaction that finds the agent changed elsewhere (StaleStoreError).
        self.strict = False
        #: Whether this open created the agent.
        self.created = False
        #: Commit without waiting for the server's WAL flush (``synchronous_commit = off`` for
        #: this store's write transactions only: ``SET LOCAL``, so no pooled connection keeps it).
        self.async_commit = False
        #: The caches may miss a committed change (a post-commit hook failed, or rows were
        #: written beside the tiers): they are not kept for the next open.
        self.caches_stale = False
        # A strict store's stale transaction: begun, locked, refused with StaleStoreError and
        # kept open (the lock held) for the owner to reload in; the next transaction() joins it.
        self._held = False
        self._pending = 0
        self._pipe: Any = None
        # Writes not sent yet (invariant 7), in order: [_ROWS, head, rows] (a multi-row INSERT),
        # [_SQL, sql, params], [_SP, name] (a savepoint's SAVEPOINT); and savepoints opened with
        # nothing written in them yet.
        self._queue: list[list[Any]] = []
        self._floor = 0  # rows merge into queued INSERTs at or after this index (after the last SAVEPOINT)
        self._sp_pending: list[str] = []
        self._proxy = _Conn(self)
        #: The id counters of the running transaction (None outside one): message, passage,
        #: event and journal serials last handed out.
        self._seq: dict[str, int] | None = None
        self._seq_read: dict[str, int] = {}
        #: The connection in use (None between transactions: it is the pool's then).
        self.conn: Any = None
        self._holds = 0  # held() scopes open: the connection is kept between their statements
        self._pool = pool_for(self.location.dsn)
        with self.held():
            self._open(create)

    # -- the connection: the pool's between transactions

    def _acquire(self) -> Any:
        """The connection this object uses now: the one it holds, else one from the pool."""
        if self.conn is None:
            from psycopg_pool import PoolTimeout

            try:
                conn = self._pool.getconn()
            except PoolTimeout as e:
                raise StoreLockedError(f"{self.path}: all {POOL_MAX} connections of this process to the server "
                                       f"are busy in transactions (waited {self._pool.timeout:g} s)") from e
            try:
                with translate(f"connecting for {self.path}"):
                    _register_vector(conn)
            except BaseException:
                self._pool.putconn(conn)
                raise
            self.conn = conn
        return self.conn

    def _release_idle(self) -> None:
        """Give the connection back to the pool when nothing needs it: no transaction, snapshot
        or held() scope (a read-only store keeps its snapshot's connection for life)."""
        if self.conn is not None and not (self._depth or self._held or self._holds or self.read_only):
            self._give_back()

    @contextlib.contextmanager
    def held(self) -> Iterator[Any]:
        """Keep one connection across several reads (e.g. an open); yields it."""
        with self.lock:
            self.check_open()
            self._holds += 1
            try:
                yield self._acquire()
            finally:
                self._holds -= 1
                if self.conn is not None and (self._closed or self._holds == 0):
                    if self._closed:
                        self._give_back()
                    else:
                        self._release_idle()

    def _open(self, create: bool) -> None:
        c = self.conn
        with translate(f"opening {self.path}"):
            self._ensure_schema(create)
            _register_vector(c)
            row = c.execute("SELECT id, version FROM vmem.agents WHERE name=%s", (self.location.agent,)).fetchone()
            if row is None:
                if not create or self.read_only:
                    raise StoreNotFoundError(f"no vmem agent {self.location.agent!r} in {_redact(self.location.dsn)}")
                row = c.execute("INSERT INTO vmem.agents(name) VALUES (%s) ON CONFLICT (name) DO NOTHING "
                                "RETURNING id, version", (self.location.agent,)).fetchone()
                if row is None:  # made by another process meanwhile
                    row = c.execute("SELECT id, version FROM vmem.agents WHERE name=%s",
                                    (self.location.agent,)).fetchone()
                else:
                    self.created = True
            #: The agent's id: the key of every row of this store.
            self.agent: int = int(row[0])
            #: The agent's version the caches of this object reflect.
            self.seen: int = int(row[1])
            if self.read_only:
                c.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                self.seen = int(c.execute("SELECT version FROM vmem.agents WHERE id=%s", (self.agent,)).fetchone()[0])

    def _ensure_schema(self, create: bool) -> None:
        c = self.conn
        have = c.execute("SELECT to_regclass('vmem.info') IS NOT NULL").fetchone()[0]
        if have:
            row = c.execute("SELECT value FROM vmem.info WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version != PG_SCHEMA_VERSION:
                who = "a newer" if version > PG_SCHEMA_VERSION else "an older"
                raise SchemaVersionError(f"{_redact(self.location.dsn)}: the vmem schema has version {version}, "
                                         f"written by {who} vmem; this vmem reads version {PG_SCHEMA_VERSION}")
            return
        if not create or self.read_only:
            raise StoreNotFoundError(f"no vmem agent {self.location.agent!r} in {_redact(self.location.dsn)} "
                                     "(no vmem schema there yet)")
        # first use of this database: one transaction, serialised between processes
        c.execute("BEGIN")
        try:
            c.execute("SELECT pg_advisory_xact_lock(hashtext('vmem schema'))")
            if not c.execute("SELECT to_regclass('vmem.info') IS NOT NULL").fetchone()[0]:
                c.execute("CREATE EXTENSION IF NOT EXISTS vector")
                c.execute("CREATE SCHEMA IF NOT EXISTS vmem")
                for stmt in [s.strip() for s in _SCHEMA.split(";") if s.strip()]:
                    c.execute(stmt)
                c.execute("INSERT INTO vmem.info VALUES ('schema_version', %s)", (str(PG_SCHEMA_VERSION),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # -- use

    def check_open(self) -> None:
        """Raise StoreClosedError if closed."""
        if self._closed:
            raise StoreClosedError(f"{self.path}: the store is closed")

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[Any]:
        """Hold the lock for a read; translate errors. Yields the connection."""
        with self.lock:
            self.check_open()
            self._acquire()
            try:
                with translate(what):
                    yield self._proxy
            finally:
                self._release_idle()

    def transaction(self, what: str = "write") -> "_PgTransaction":
        """A write transaction holding the agent's lock; nested calls join the outermost one."""
        return _PgTransaction(self, what)

    @contextlib.contextmanager
    def savepoint(self, what: str = "savepoint") -> Iterator[Any]:
        """A nested transaction inside an open one (as :meth:`vmem.storage._db.Database.savepoint`).
        Sent to the server only when something is written in it (invariant 8)."""
        with self.lock:
            self.check_open()
            if not self._depth:
                raise RuntimeError("savepoint() outside a transaction")
            name = f"sp{self._depth}"
            marks = (len(self._after_commit), len(self._on_rollback))
            seq_mark = dict(self._seq) if self._seq is not None else None
            self._sp_pending.append(name)
            self._depth += 1
            try:
                with translate(what):
                    yield self._proxy
            except BaseException:
                self._depth -= 1
                self._savepoint_failed(name)
                if seq_mark is not None and self._seq is not None:
                    self._seq = seq_mark
                undo = self._on_rollback[marks[1]:]
                del self._after_commit[marks[0]:]
                del self._on_rollback[marks[1]:]
                for hook in reversed(undo):
                    hook()
                raise
            self._depth -= 1
            with translate(what):
                self._savepoint_done(name)

    def _savepoint_at(self, name: str) -> int:
        """Where ``name``'s SAVEPOINT waits in the queue (-1: not queued)."""
        for i in range(len(self._queue) - 1, -1, -1):
            if self._queue[i][0] is _SP and self._queue[i][1] == name:
                return i
        return -1

    def _savepoint_done(self, name: str) -> None:
        if self._sp_pending and self._sp_pending[-1] == name:  # nothing was written in it
            self._sp_pending.pop()
            return
        at = self._savepoint_at(name)
        if at >= 0:  # never sent: its writes simply join the enclosing scope
            del self._queue[at]
            self._refloor()
            return
        self._send(f"RELEASE SAVEPOINT {name}")

    def _savepoint_failed(self, name: str) -> None:
        if self._sp_pending and self._sp_pending[-1] == name:  # nothing was written in it
            self._sp_pending.pop()
            return
        del self._sp_pending[:]  # savepoints inside it: nothing was written in those
        at = self._savepoint_at(name)
        if at >= 0:  # never sent: its writes are dropped before they go
            del self._queue[at:]
            self._refloor()
            return
        self._queue.clear()  # sent: everything queued since is its own
        self._floor = 0
        try:
            self._send(f"ROLLBACK TO SAVEPOINT {name}")
            self._send(f"RELEASE SAVEPOINT {name}")
        except Exception as e:  # noqa: BLE001 - the connection is unusable; the outer rollback follows
            log.error("rollback to a savepoint of %s failed: %s", self.path, e)

    def _refloor(self) -> None:
        self._floor = next((i + 1 for i in range(len(self._queue) - 1, -1, -1) if self._queue[i][0] is _SP), 0)

    def _writing(self) -> None:
        """A write is queued: savepoints opened with nothing written in them yet are needed now."""
        if self._sp_pending:
            for name in self._sp_pending:
                self._queue.append([_SP, name])
            self._sp_pending.clear()
            self._floor = len(self._queue)

    def defer(self, head: str, row: tuple[Any, ...]) -> None:
        """Queue one row of ``head`` (``INSERT INTO table(columns) VALUES``) in the running
        transaction: the rows of one head go as one multi-row INSERT with the transaction's next
        statement or its COMMIT (invariant 7)."""
        if not self._depth:
            raise RuntimeError("defer() outside a transaction")
        self._writing()
        queue = self._queue
        for i in range(len(queue) - 1, self._floor - 1, -1):
            if queue[i][0] is _ROWS and queue[i][1] == head:
                queue[i][2].append(row)
                return
        queue.append([_ROWS, head, [row]])

    def defer_sql(self, sql: str, params: tuple[Any, ...]) -> None:
        """Queue one statement whose result nobody reads, in order with the other queued writes."""
        if not self._depth:
            raise RuntimeError("defer_sql() outside a transaction")
        self._writing()
        self._queue.append([_SQL, sql, params])

    def _statements(self) -> Iterator[tuple[str, Any]]:
        """The queue as (sql, params) statements (emptied)."""
        queue, self._queue, self._floor = self._queue, [], 0
        for entry in queue:
            if entry[0] is _ROWS:
                rows = entry[2]
                one = "(" + ", ".join(["%s"] * len(rows[0])) + ")"
                for start in range(0, len(rows), _ROWS_PER_INSERT):
                    part = rows[start:start + _ROWS_PER_INSERT]
                    yield f"{entry[1]} {', '.join([one] * len(part))}", [v for r in part for v in r]
            elif entry[0] is _SQL:
                yield entry[1], entry[2]
            else:
                yield f"SAVEPOINT {entry[1]}", None

    def _send(self, sql: str, params: Any = None) -> Any:
        """Send one statement inside the write transaction, in pipeline mode (entered on first use)."""
        if self._pipe is None:
            self._pipe = self.conn.pipeline()
            self._pipe.__enter__()
        return self.conn.execute(sql, params)

    def flush(self) -> None:
        """Send what the running transaction queued, in pipeline mode (before a statement of
        the tiers: a read must see the writes; a write must follow them)."""
        self._writing()
        for sql, params in self._statements():
            self._send(sql, params)

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction() block is open (or one kept open by StaleStoreError)."""
        return self._depth > 0 or self._held

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` after the current transaction commits (dropped on rollback)."""
        if not self._depth:
            raise RuntimeError("after_commit() outside a transaction")
        self._after_commit.append(hook)

    def on_rollback(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` if the current transaction rolls back."""
        if not self._depth:
            raise RuntimeError("on_rollback() outside a transaction")
        self._on_rollback.append(hook)

    def _begin(self, what: str) -> None:
        """BEGIN and take the agent's lock; catch the caches up when another process committed
        (and, strict, refuse with StaleStoreError, keeping the transaction and its lock open for
        the owner to reload in: the next transaction() joins it, so no other writer gets in
        between the reload and the retry)."""
        c = self._acquire()
        self._holds += 1  # the stale hooks read through reading(): the connection stays
        try:
            self._begin_on(c, what)
        finally:
            self._holds -= 1

    def _begin_on(self, c: Any, what: str) -> None:
        if self._held:  # begun and locked already: the owner reloaded after StaleStoreError
            self._held = False
            return
        with translate(what):
            # one round trip: BEGIN, the lock timeout, and the agent's row locked and bumped
            timeout = (f"SET LOCAL lock_timeout = {self._lock_timeout_ms}; "
                       if self._lock_timeout_ms != DEFAULT_LOCK_TIMEOUT_MS else "")
            if self.async_commit:
                timeout += "SET LOCAL synchronous_commit = off; "
            try:
                cur = c.execute(f"BEGIN; {timeout}UPDATE vmem.agents SET version = version + 1 "
                                f"WHERE id = {self.agent:d} RETURNING version, message_seq, passage_seq, event_seq, "
                                "journal_seq")
                while cur.description is None and cur.nextset():  # past BEGIN and SET to the UPDATE's rows
                    pass
                row = cur.fetchone()
                if row is None:
                    raise StoreNotFoundError(f"{self.path}: the agent was deleted")
                version = int(row[0])
                self._seq_read = dict(zip(_SEQS, (int(v) for v in row[1:])))
                self._seq = dict(self._seq_read)
                stale = version != self.seen + 1
                if stale:  # another process committed: catch up under the lock
                    for hook in self.stale_hooks:
                        hook()
                    self.seen = version - 1
                self._pending = version
            except BaseException:
                self._seq = None
                if c.info.transaction_status != 0:  # BEGIN ran: end the transaction
                    c.execute("ROLLBACK")
                raise
        if stale and self.strict:
            self._held = True
            raise StaleStoreError(f"{self.path}: changed by another process")

    def _end_pipeline(self, exc: BaseException | None) -> None:
        """Leave pipeline mode: the results of every queued statement are read (raises the first
        error among them when ``exc`` is None)."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            if exc is None:
                pipe.__exit__(None, None, None)
            else:
                try:
                    pipe.__exit__(type(exc), exc, exc.__traceback__)
                except Exception as e:  # noqa: BLE001 - the original error is the one to report
                    log.debug("leaving the pipeline of %s after %r: %s", self.path, exc, e)

    def release(self) -> None:
        """Roll back a transaction kept open by StaleStoreError (the owner could not reload)."""
        with self.lock:
            if self._held:
                self._held = False
                self._rollback()
                self._release_idle()

    def _commit(self, what: str) -> None:
        with translate(what):
            self._sp_pending.clear()  # nothing was written in them
            seq, self._seq = self._seq, None
            if seq is not None and seq != self._seq_read:
                self._queue.append([_SQL, _SET_SEQS, (*(seq[k] for k in _SEQS), self.agent)])
            if self._pipe is None and self._small_queue():
                # nothing went in pipeline mode since BEGIN: the writes and COMMIT go as one simple
                # query, bound in the process (less CPU than a pipelined statement per write)
                import psycopg

                bind = psycopg.ClientCursor(self.conn).mogrify
                self.conn.execute("; ".join([bind(sql, params) for sql, params in self._statements()]
                                            + ["COMMIT"]))
            else:
                for sql, params in self._statements():
                    self._send(sql, params)
                self._send("COMMIT")
                self._end_pipeline(None)
        self.seen = self._pending

    def _small_queue(self) -> bool:
        """Whether the queued writes are few enough to bind in the process (a bulk import's are
        sent in binary, pipelined)."""
        values = 0
        for entry in self._queue:
            if entry[0] is _ROWS:
                values += len(entry[2]) * len(entry[2][0])
            elif entry[0] is _SQL and entry[2]:
                values += len(entry[2])
            if values > _BIND_IN_PROCESS:
                return False
        return True

    def _rollback(self, exc: BaseException | None = None) -> None:
        hooks, self._after_commit, self._on_rollback = self._on_rollback, [], []
        self._seq = None
        self._queue.clear()
        self._floor = 0
        self._sp_pending.clear()
        self._end_pipeline(exc or RuntimeError("rollback"))
        try:
            self.conn.execute("ROLLBACK")
        except Exception as e:  # noqa: BLE001 - the connection is unusable; report the original error
            log.error("rollback of %s failed: %s", self.path, e)
        for hook in hooks:
            hook()

    def sync(self) -> bool:
        """Outside a transaction: catch the caches up if another process committed since (one
        round trip). Returns whether anything changed. A read-only store keeps its snapshot."""
        with self.lock:
            self.check_open()
            if self._depth or self._held or self.read_only:
                return False
            with self.held() as c, translate("reading the agent's version"):
                version = int(c.execute("SELECT version FROM vmem.agents WHERE id=%s",
                                        (self.agent,)).fetchone()[0])
                if version == self.seen:
                    return False
                for hook in self.stale_hooks:
                    hook()
                self.seen = version
            return True

    def refresh(self) -> None:
        """A read-only store: drop the snapshot and read a new one (the caches catch up)."""
        with self.lock:
            self.check_open()
            if not self.read_only:
                self.sync()
                return
            with translate("refreshing the snapshot"):
                self.conn.execute("COMMIT")
                self.conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                version = int(self.conn.execute("SELECT version FROM vmem.agents WHERE id=%s",
                                                 (self.agent,)).fetchone()[0])
                if version != self.seen:
                    for hook in self.stale_hooks:
                        hook()
                    self.seen = version

    # -- meta (internal key/value, msgpack)

    def get_meta(self, key: str, default: Any = None) -> Any:
        """The value stored under the internal meta ``key``."""
        with self.reading(f"reading meta {key!r}") as c:
            row = c.execute("SELECT value FROM vmem.meta WHERE agent=%s AND key=%s", (self.agent, key)).fetchone()
        return default if row is None else msgpack.unpackb(row[0], raw=False)

    def set_meta(self, key: str, value: Any) -> None:
        """Store ``value`` under the internal meta ``key`` (joins an open transaction)."""
        blob = msgpack.packb(value, use_bin_type=True)
        with self.transaction(f"writing meta {key!r}"):
            self.defer_sql("INSERT INTO vmem.meta(agent, key, value) VALUES (%s, %s, %s) "
                           "ON CONFLICT (agent, key) DO UPDATE SET value = excluded.value", (self.agent, key, blob))

    def next_serials(self, kind: str, n: int) -> int:
        """Reserve ``n`` ids of ``kind`` ("message", "passage", "event", "journal") in the running
        transaction; return the first. Committed ids are never reused (like SQLite's
        AUTOINCREMENT); the ids of a rolled-back savepoint or transaction are handed out again."""
        if self._seq is None:
            raise RuntimeError("next_serials() outside a transaction")
        first = self._seq[kind] + 1
        self._seq[kind] += n
        return first

    def drop_agent(self) -> None:
        """Delete this agent and everything it holds (one transaction), then close."""
        with self.lock:
            self.check_open()
            if self.read_only:
                raise ReadOnlyStoreError(f"{self.path} was opened read-only")
            with self.held() as c, translate(f"deleting {self.path}"):
                c.execute("DELETE FROM vmem.agents WHERE id=%s", (self.agent,))
            self.close()

    def close(self) -> None:
        """Give the connection back to the pool (idempotent). An open transaction is rolled back."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self._held = False
            self._give_back()

    def _give_back(self) -> None:
        conn = getattr(self, "conn", None)
        if conn is None:
            return
        try:
            if conn.info.transaction_status != 0:  # not idle: roll back what is open
                conn.execute("ROLLBACK")
        except Exception as e:  # noqa: BLE001 - the pool discards a broken connection
            log.warning("closing %s: %s", self.path, e)
        self._pool.putconn(conn)
        self.conn = None

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self._closed


class _PgTransaction:
    """PgDatabase.transaction()'s scope."""

    __slots__ = ("_db", "_what", "_outer")

    def __init__(self, db: PgDatabase, what: str) -> None:
        self._db = db
        self._what = what
        self._outer = False

    def __enter__(self) -> Any:
        db = self._db
        db.lock.acquire()
        try:
            db.check_open()
            if db.read_only:
                raise ReadOnlyStoreError(f"{db.path} was opened read-only: {self._what} is refused")
            self._outer = db._depth == 0
            if self._outer:
                db._begin(self._what)
            db._depth += 1
        except BaseException:
            try:
                db._release_idle()  # kept when StaleStoreError left the transaction open
            finally:
                db.lock.release()
            raise
        return db._proxy

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        import psycopg

        db = self._db
        try:
            db._depth -= 1
            if exc is not None:
                if self._outer:
                    db._rollback(exc)
                if isinstance(exc, psycopg.Error):
                    with translate(self._what):
                        raise exc
                return None
            if self._outer:
                try:
                    db._commit(self._what)
                except BaseException as e:
                    db._rollback(e)
                    raise
                hooks, db._after_commit, db._on_rollback = db._after_commit, [], []
                for hook in hooks:
                    try:
                        hook()
                    except Exception:  # noqa: BLE001 - the commit stands; the caches are rebuilt at open
                        db.caches_stale = True
                        log.exception("%s: a post-commit hook failed (%s)", db.path, self._what)
            return None
        finally:
            try:
                if self._outer:
                    db._release_idle()
            finally:
                db.lock.release()


class _Conn:
    """The connection as the tiers see it: every statement sent through it first sends what the
    running transaction queued (deferred rows, savepoints), so the server sees the writes in the
    order they were made and a read sees them."""

    __slots__ = ("_db",)

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
        db = self._db
        if db._depth and db._seq is not None:  # in a write transaction: after what it queued, pipelined
            db.flush()
            if db._pipe is None:
                db._pipe = db.conn.pipeline()
                db._pipe.__enter__()
        return db.conn.execute(query, params, **kw)

    def cursor(self, *args: Any, **kw: Any) -> Any:
        db = self._db
        if db._depth and db._seq is not None:
            db.flush()
            if db._pipe is None:
                db._pipe = db.conn.pipeline()
                db._pipe.__enter__()
        return db.conn.cursor(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db.conn, name)


def new_store_id() -> str:
    """A fresh store id."""
    return uuid.uuid4().hex
