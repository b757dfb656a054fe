"""Persistence: the memory's saved image, and what reopening reads back.

A memory's directory (a :class:`vmem.storage.MemoryDir`) holds recall, archival, the
blocks and the event log; the kernel adds two state keys, written in the same
transaction as the writes they describe:

    "kernel"   MemoryState: the summary, counters, calibration, block pages, the working
               set's lines, the time of the last turn (msgpack)
    "core"     the C core's snapshot (page table and accounting of the main context)

Reopening restores the core from its snapshot and rebuilds the in-memory views (queue
chat dicts, rendered blocks, working-set lines) from the stores; nothing else is needed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vmem.kernel.errors import KernelError
from vmem.storage import MemoryDir

__all__ = ["CORE_KEY", "FORMAT", "STATE_KEY", "MemoryState", "load_state", "save"]

STATE_KEY = "kernel"
CORE_KEY = "core"
FORMAT = 2
"""Format 2: trace in the event log, config without max_steps. Format 1 is read too."""


@dataclass
class MemoryState:
    """The kernel's own durable state (beside the stores and the core)."""

    config: dict[str, Any]  #: MemoryConfig.to_dict()
    system: str  #: the system instructions
    summary: str = ""  #: the recursive summary of the evicted messages
    folds: int = 0  #: summaries made
    evicted: int = 0  #: messages evicted from the queue (all in recall storage)
    stored_only: int = 0  #: messages kept in recall storage but never queued (oversize input)
    alerted: bool = False  #: a memory-pressure alert was sent in this pressure episode
    group: int = 0  #: the last atomic group id (a tool call and its results)
    calibration: float = 1.0  #: the token counter's calibration factor
    turns: int = 0  #: user messages received
    truncated: int = 0  #: summaries cut to their cap
    block_pages: dict[str, int] = field(default_factory=dict)  #: block label -> page id
    workset: dict[int, str] = field(default_factory=dict)  #: working-set page -> line, in admission order
    pending: list[int] = field(default_factory=list)  #: oversize messages whose summary is not queued yet
    changed: str | None = None  #: when core or archival memory last changed (ISO time)
    now: float | None = None  #: the time of the last turn (epoch seconds)

    def mark(self, level: int) -> "MemoryState":
        """A copy to restore to (this is a :class:`vmem.kernel.transaction.Participant`)."""
        return self.copy()

    def commit(self) -> None:
        pass

    def copy(self) -> "MemoryState":
        """A copy whose containers are independent (a transaction's rollback point)."""
        new = object.__new__(MemoryState)
        new.__dict__.update(self.__dict__)
        new.block_pages, new.workset, new.pending = dict(self.block_pages), dict(self.workset), list(self.pending)
        return new

    def restore(self, mark: "MemoryState") -> None:
        """Take every field of ``mark`` (a copy made earlier), in place."""
        self.__dict__.update(mark.__dict__)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what is saved); the working set as [page, line] pairs, in admission order."""
        d = dict(self.__dict__)
        d["format"] = FORMAT
        d["workset"] = [[page, line] for page, line in self.workset.items()]  # keep the order
        return d


def load_state(store: MemoryDir) -> MemoryState:
    """The saved state (format 1 or 2); KernelError if the store holds no memory or another format."""
    if STATE_KEY not in store.state:
        raise KernelError(f"{store.path} is a vmem store but holds no agent memory")
    d = dict(store.state[STATE_KEY])
    fmt = d.pop("format", None)
    if fmt not in (1, FORMAT):
        raise KernelError(f"{store.path}: memory format {fmt!r} is not {FORMAT}")
    if fmt == 1:  # the first format kept its working set as a {str(page): line} map and counted steps
        d["workset"] = [[int(k), v] for k, v in d.get("workset", {}).items()]
        d["turns"] = d.pop("steps", 0)
    known = {f.name for f in dataclasses.fields(MemoryState)}
    state = MemoryState(**{k: v for k, v in d.items() if k in known})
    state.workset = {int(page): line for page, line in d.get("workset", [])}
    state.block_pages = {str(k): int(v) for k, v in state.block_pages.items()}
    return state


def save(store: MemoryDir, state: MemoryState, core_snapshot: bytes) -> None:
    """Write the state and the core snapshot (joins the open transaction)."""
    with store.transaction():
        store.state[STATE_KEY] = state.to_dict()
        store.state[CORE_KEY] = core_snapshot
