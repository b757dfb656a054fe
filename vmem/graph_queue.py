"""Adds an index has accepted and not yet put into its graph, and the thread that puts them in.

Interface::

    q = GraphQueue(owner)          # owner: an index with ``_lock`` (an RLock over its graph) and
                                   # ``_insert(ids, vectors, threads)`` (into the graph; the lock held)
    q.push(ids, vectors, threads_for)  # queued (copies), the builder started if it is not running
    len(q)                         # ids waiting; never waits
    q.settle(threads_for)          # (the owner's lock held) every queued add into the graph, now

The builder thread takes up to :data:`STEP` adds at a time, oldest first, into the graph
(``threads_for(n)`` hnswlib threads for a step of n), holding the owner's lock for that step only;
a read that comes meanwhile waits for that step, and settles the rest itself. The order is the
order of the adds, so with one hnswlib thread the graph is the one the same adds made directly
would have built.

Locks: the owner's lock, then the queue's, never the other way; ``push`` takes only the queue's,
so an add never waits for the graph. A fork waits for the builder's step (the child's graph and
queue are whole; the child has no builder, and its first read settles the queue). At interpreter
exit the builders stop between two steps (a daemon thread still inside hnswlib when the
interpreter finalises aborts the process); adds made after that go into the graph at once.

:class:`PendingAdds` is the FIFO itself (not thread-safe; the queue's lock guards it).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["GraphQueue", "PendingAdds", "STEP"]

log = logging.getLogger(__name__)

#: Queued adds the builder puts into the graph at most at a time, holding the owner's lock,
#: with as many hnswlib threads as the owner gives a batch that size. A read that comes meanwhile
#: waits for the step, but it needs every queued add in the graph anyway; only an add (the
#: queue's lock) and ``len`` never wait. Large steps keep a backlog's build as fast as a batch
#: add made directly.
STEP = 1024
#: The builder's pause after each step: a lock is not handed over on release, and without the
#: pause the builder would take the owner's lock back at once, step after step, ahead of a reader.
PAUSE = 0.0005


class PendingAdds:
    """Batches of (ids, vectors) waiting for the graph, oldest first."""

    def __init__(self) -> None:
        self._batches: deque[tuple[np.ndarray, np.ndarray]] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def push(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) != len(vectors):
            raise ValueError(f"PendingAdds.push: {len(ids)} ids but {len(vectors)} vectors")
        if len(ids):
            self._batches.append((ids, vectors))
            self._count += len(ids)

    def push_front(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Give back a part that could not be added: it goes first again."""
        if len(ids):
            self._batches.appendleft((ids, vectors))
            self._count += len(ids)

    def pop(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """At most ``limit`` of the oldest batch's ids and vectors (all of it when None)."""
        if not self._batches:
            return None
        ids, vecs = self._batches[0]
        if limit is None or len(ids) <= limit:
            self._batches.popleft()
        else:
            self._batches[0] = (ids[limit:], vecs[limit:])
            ids, vecs = ids[:limit], vecs[:limit]
        self._count -= len(ids)
        return ids, vecs


class GraphQueue:
    """An index's queued adds and its builder thread (see the module)."""

    def __init__(self, owner: Any) -> None:
        self._owner = owner
        self._pending = PendingAdds()
        self._lock = threading.Lock()  # guards _pending and _thread
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def push(self, ids: np.ndarray, vectors: np.ndarray, threads_for: Callable[[int], int]) -> None:
        """Queue an add (copies: the caller may reuse its arrays) and start the builder, which
        puts a step of n adds into the graph with ``threads_for(n)`` hnswlib threads."""
        ids, vectors = np.array(ids, dtype=np.uint64), np.array(vectors, dtype=np.float32)
        with self._lock:
            self._pending.push(ids, vectors)
            if self._thread is None:
                self._thread = threading.Thread(target=self._build, args=(threads_for,), daemon=True,
                                                name="vmem-index-build")
                _BUILDING.add(self)
                self._thread.start()

    def settle(self, threads_for: Callable[[int], int]) -> None:
        """(The owner's lock held.) Every queued add into the graph, oldest first, each batch with
        ``threads_for(len(batch))`` hnswlib threads; a part the graph refuses stays queued, and
        what it raised propagates."""
        while (part := self._pop(None)) is not None:
            try:
                self._owner._insert(part[0], part[1], threads_for(len(part[0])))
            except BaseException:
                with self._lock:
                    self._pending.push_front(*part)
                raise

    def _pop(self, limit: int | None) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            return self._pending.pop(limit)

    def _build(self, threads_for: Callable[[int], int]) -> None:
        me = threading.current_thread()
        try:
            while True:
                with self._owner._lock:
                    with self._lock:
                        if self._thread is not me:  # stopped at exit, or replaced after a fork
                            return
                        part = self._pending.pop(STEP)
                        if part is None:
                            self._thread = None
                            return
                    try:
                        self._owner._insert(part[0], part[1], threads_for(len(part[0])))
                    except BaseException:
                        with self._lock:  # the next read settles it, and raises what fails
                            self._pending.push_front(*part)
                            self._thread = None
                        raise
                time.sleep(PAUSE)
        except Exception as e:  # noqa: BLE001 - kept queued; the next read settles it and raises
            log.debug("building the vector graph behind the adds failed: %s", e)
        finally:
            _BUILDING.discard(self)


#: Queues whose builder runs (for the fork and exit hooks).
_BUILDING: weakref.WeakSet[GraphQueue] = weakref.WeakSet()
_FORK_HELD: list[GraphQueue] = []
#: Set at interpreter exit: :func:`exiting` tells an index to add directly from then on.
_EXITING = False


def exiting() -> bool:
    """Whether the interpreter is exiting (builders stopped; adds go into the graph directly)."""
    return _EXITING


def _before_fork() -> None:
    for q in list(_BUILDING):
        q._owner._lock.acquire()
        q._lock.acquire()
        _FORK_HELD.append(q)


def _after_fork_in_parent() -> None:
    while _FORK_HELD:
        q = _FORK_HELD.pop()
        q._lock.release()
        q._owner._lock.release()


def _after_fork_in_child() -> None:
    while _FORK_HELD:  # the threads that held these are not in this process
        q = _FORK_HELD.pop()
        q._owner._lock = threading.RLock()
        q._lock = threading.Lock()
        q._thread = None
    _BUILDING.clear()


@atexit.register
def _stop_builders_at_exit() -> None:
    global _EXITING
    _EXITING = True
    for q in list(_BUILDING):
        with q._owner._lock, q._lock:
            q._thread = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
