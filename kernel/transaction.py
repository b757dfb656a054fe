"""Transactions: all of a memory's effects commit together, or none does.

A memory's state lives in several parts: the database (recall, archival, blocks, the event
log, the saved image) and, in memory, the C core, the queue's chat dicts, the rendered
blocks, the kernel's state, the pending trace events, counters. One mechanism keeps them
together: every in-memory part is a :class:`Participant` that takes a mark when a
transaction or savepoint opens and is restored to it when one fails, while the database
rolls back the same span (``BEGIN``/``ROLLBACK``, ``SAVEPOINT``/``ROLLBACK TO``).

Rules (the PostgreSQL model):

1. ``transaction()`` opens one atomic unit; nested, it joins the enclosing one.
2. An exception escaping any part of a transaction aborts it: it rolls back when it ends
   (even if the exception was caught on the way), and calls made in it meanwhile raise.
3. ``savepoint()`` marks a part that may fail alone: an exception escaping it restores
   the part's marks, rolls its writes back, and the transaction goes on.
4. Only the thread (and asyncio task) that opened a transaction may use it; any other gets
   BusyError at once, never a deadlock. One :class:`Gate` per memory makes it so: the
   outermost transaction takes it (atomically: two threads cannot both open one) and holds it
   to its end; the memory's public reads take it for their span, so no caller reads a
   transaction's half-done state either.
5. A rollback that itself fails never hides the error that caused it: the memory is marked
   unusable (reopen it) and the original exception propagates with a note.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

from vmem import PagedContext
from vmem.kernel.errors import BusyError, KernelError
from vmem.storage import Store

__all__ = ["CoreMarks", "Gate", "Participant", "Transactions"]


class Participant(Protocol):
    """An in-memory part of a memory's state that transactions keep with the database."""

    def mark(self, level: int) -> Any:
        """A point to restore to (level 0: a transaction opens; 1, 2, ...: nested savepoints)."""

    def restore(self, mark: Any) -> None:
        """Go back to ``mark`` (a transaction or savepoint failed)."""

    def commit(self) -> None:
        """The outermost transaction committed."""


class CoreMarks:
    """The C core as a participant: a mark is a copy in a twin core (one per level, reused),
    with the operations the core has recorded and not yet saved (a journaled core's)."""

    __slots__ = ("_ctx", "_twins")

    def __init__(self, ctx: PagedContext) -> None:
        self._ctx = ctx
        self._twins: list[PagedContext] = []

    def mark(self, level: int) -> tuple[PagedContext, list[Any] | None]:
        while len(self._twins) <= level:
            self._twins.append(PagedContext())
        twin = self._twins[level]
        twin.copy_from(self._ctx)
        ops = getattr(self._ctx, "ops", None)
        return twin, list(ops) if ops is not None else None

    def restore(self, mark: tuple[PagedContext, list[Any] | None]) -> None:
        twin, ops = mark
        self._ctx.copy_from(twin)
        if ops is not None:
            self._ctx.ops = ops  # type: ignore[attr-defined]

    def commit(self) -> None:
        pass


def _owner() -> tuple[int, int]:
    """Who is calling: the thread, and the asyncio task when there is one."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return threading.get_ident(), id(task) if task is not None else 0


class Gate:
    """The memory's one-caller lock: held by one owner (a thread, and the asyncio task in it),
    re-entered freely by that owner; anyone else gets BusyError at once (never blocks)."""

    __slots__ = ("_lock", "owner", "_depth")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.owner: tuple[int, int] | None = None
        self._depth = 0

    def enter(self) -> None:
        """Take the gate (BusyError if another owner holds it)."""
        me = _owner()
        if self.owner == me:
            self._depth += 1
            return
        if not self._lock.acquire(blocking=False):
            raise BusyError("another step or transaction is running on this memory (in another thread or task); "
                            "one caller at a time")
        self.owner = me
        self._depth = 1

    def exit(self) -> None:
        """Give the gate back (once per :meth:`enter`)."""
        self._depth -= 1
        if self._depth == 0:
            self.owner = None
            self._lock.release()

    def __enter__(self) -> None:
        self.enter()

    def __exit__(self, *exc: object) -> None:
        self.exit()


class Transactions:
    """The transactions of one memory (see the module docstring).

    ``participants`` are restored in order (the core first: others read it). ``check``
    raises when the memory cannot change; ``begin`` runs before an outermost transaction
    takes its marks; ``persist`` runs inside its commit.
    """

    def __init__(self, store: Store, participants: Sequence[Participant], *, check: Callable[[], None],
                 begin: Callable[[], None], persist: Callable[[], None]) -> None:
        self._store = store
        self._parts = list(participants)
        self._check = check
        self._begin = begin
        self._persist = persist
        self.depth = 0  #: transaction() and savepoint() scopes open (0: none)
        self._savepoints = 0
        self._owner: tuple[int, int] | None = None
        self._failed: str | None = None  # an error escaped part of the running transaction
        self.broken: str | None = None  #: why the memory cannot go on (a rollback failed)
        self.gate = Gate()  #: one caller at a time (rule 4)

    def _usable(self) -> None:
        if self.broken:
            raise KernelError(f"this memory cannot go on ({self.broken}); reopen it")
        self._check()

    def _joinable(self) -> None:
        if self._owner != _owner():
            raise BusyError("another step or transaction is running on this memory (in another thread or task)")
        if self._failed is not None:
            raise KernelError(f"this transaction was aborted by an error ({self._failed}); it rolls back when it ends")

    def _mark(self, level: int) -> list[Any]:
        return [p.mark(level) for p in self._parts]

    def _restore(self, marks: list[Any], exc: BaseException) -> None:
        try:
            for part, mark in zip(self._parts, marks):
                part.restore(mark)
        except BaseException as failure:  # noqa: BLE001 - never hide exc
            self.broken = f"a rollback failed: {type(failure).__name__}: {failure}"
            add_note = getattr(exc, "add_note", None)  # Python 3.11 and later; self.broken says it anyway
            if add_note is not None:
                add_note(f"vmem: {self.broken}")

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic unit (rules 1, 2, 4, 5)."""
        self._usable()
        if self.depth and self.gate.owner == _owner():  # joining, the common case inside a step: no generator
            self._joinable()
            return _Join(self)
        return self._outermost()

    @contextlib.contextmanager
    def _outermost(self) -> Iterator[None]:
        self.gate.enter()  # BusyError if another thread or task holds the memory
        self._owner = _owner()
        self._failed = None
        try:
            self._begin()
            marks = self._mark(0)
        except BaseException:
            self._owner = None
            self.gate.exit()
            raise
        self.depth = 1
        try:
            with self._store.transaction():
                yield
                if self._failed is not None:
                    raise KernelError(f"the transaction was aborted by an earlier error ({self._failed}) "
                                      f"and rolled back")
                self._persist()
        except BaseException as exc:
            self._restore(marks, exc)
            raise
        finally:
            self.depth = 0
            self._owner = None
            self._failed = None
            self.gate.exit()
        for part in self._parts:
            part.commit()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """A part that may fail alone (rule 3); outside a transaction, one of its own."""
        if not self.depth:
            with self.transaction(), self.savepoint():
                yield
            return
        self._usable()
        self._joinable()
        self._savepoints += 1
        marks = self._mark(self._savepoints)
        self.depth += 1
        try:
            with self._store.savepoint():
                yield
        except BaseException as exc:
            self._restore(marks, exc)
            self._failed = None  # the part failed alone
            raise
        finally:
            self.depth -= 1
            self._savepoints -= 1

    def fail(self, exc: BaseException) -> None:
        """An exception escaped part of the running transaction: it is aborted (rule 2)."""
        if self._failed is None:
            self._failed = f"{type(exc).__name__}: {exc}"

    @property
    def failed(self) -> str | None:
        """Why the running transaction is aborted, if it is."""
        return self._failed


class _Join:
    """A nested transaction() scope: it joins the running transaction, and aborts it when an
    exception escapes (a class, not a generator: it is entered many times a step)."""

    __slots__ = ("_tx",)

    def __init__(self, tx: Transactions) -> None:
        self._tx = tx

    def __enter__(self) -> None:
        self._tx.depth += 1

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> Literal[False]:
        self._tx.depth -= 1
        if exc is not None:
            self._tx.fail(exc)
        return False
