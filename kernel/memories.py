"""Many agents per process: an LRU of open memories, bounded in number.

Interface::

    memories = OpenMemories(max_open=16)              # a worker serving many agents
    with memories.use("postgresql://...?agent=ana") as memory:   # opened, or the open one
        agent = Agent(memory, driver); agent.step("hi")
    memories.close()                                  # closes every memory

A worker that serves requests for many agents keeps the last ``max_open`` it used open, and
closes the least recently used one to open another. Each open memory holds one directory
lock (SQLite) and its caches; a PostgreSQL memory holds no connection between transactions
(it borrows one from the process's pool, ``vmem.storage.postgres_connect.POOL_MAX``, per
transaction), so ``max_open`` bounds memory and locks, not connections. A memory is reused as it is: in PostgreSQL it reloads itself when another
worker changed the agent (at its next transaction), so an LRU entry is never stale when used.
A memory in use (inside ``use``) is never closed; ``use`` of a second agent when all
``max_open`` are in use raises :class:`BusyError`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from vmem.kernel.errors import BusyError
from vmem.kernel.memory import Memory
from vmem.storage import display

__all__ = ["OpenMemories"]


class OpenMemories:
    """An LRU of open :class:`Memory` objects by location (see the module docstring)."""

    def __init__(self, max_open: int = 16, **open_args: Any) -> None:
        if not isinstance(max_open, int) or max_open < 1:
            raise ValueError(f"max_open must be an int >= 1, got {max_open!r}")
        self.max_open = max_open
        self._open_args = open_args  # passed to Memory.open (functions, embedder, clock...)
        self._memories: OrderedDict[str, Memory] = OrderedDict()
        self._busy: set[str] = set()
        self._lock = threading.Lock()
        #: Opens done (misses) and uses served by an open memory (hits).
        self.opened = 0
        self.reused = 0

    @contextlib.contextmanager
    def use(self, location: str | os.PathLike[str]) -> Iterator[Memory]:
        """The memory at ``location``, open for the block (BusyError if it is in use here already)."""
        key = display(location) if isinstance(location, str) else os.fspath(location)
        with self._lock:
            if key in self._busy:
                raise BusyError(f"{key} is in use by another caller of this process")
            memory = self._memories.pop(key, None)
            if memory is not None and memory.closed:
                memory = None
            evict: list[Memory] = []
            if memory is None:
                idle = [k for k in self._memories if k not in self._busy]
                while len(self._memories) + len(self._busy) >= self.max_open and idle:
                    evict.append(self._memories.pop(idle.pop(0)))
                if len(self._memories) + len(self._busy) >= self.max_open:
                    raise BusyError(f"all {self.max_open} open memories are in use")
            self._busy.add(key)
        try:
            for old in evict:
                old.close()
            if memory is None:
                memory = Memory.open(location, **self._open_args)
                self.opened += 1
            else:
                self.reused += 1
        except BaseException:
            with self._lock:
                self._busy.discard(key)
            raise
        try:
            yield memory
        finally:
            with self._lock:
                self._busy.discard(key)
                if not memory.closed:
                    self._memories[key] = memory  # most recently used last

    def __len__(self) -> int:
        with self._lock:
            return len(self._memories) + len(self._busy)

    def close(self) -> None:
        """Close every memory that is not in use."""
        with self._lock:
            memories = list(self._memories.values())
            self._memories.clear()
        for memory in memories:
            memory.close()

    def __enter__(self) -> "OpenMemories":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
