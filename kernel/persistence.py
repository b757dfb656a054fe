"""Persistence: the memory's saved image, and what reopening reads back.

A memory's directory (a :class:`vmem.storage.MemoryDir`) holds recall, archival, the
blocks and the event log; the kernel adds, written in the same transaction as the writes
they describe:

    state "kernel"          MemoryState: counters, calibration, block pages, the working
                            set's pages, the time of the last turn (small: written each commit)
    state "kernel.summary"  the recursive summary (written when it changed)
    state "core"            the C core's snapshot (page table and accounting of the context)
    the journal             the core's operations since that snapshot (kernel/journal.py)

A commit appends the transaction's core operations to the journal; every FOLD_ENTRIES
commits (or FOLD_BYTES) it saves a whole snapshot instead and clears the journal. So a
step writes what it changed, not the whole core. Reopening restores the snapshot, replays
the journal and rebuilds the in-memory views (queue chat dicts, rendered blocks, the
working set's lines) from the stores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vmem.kernel.errors import KernelError
from vmem.kernel.journal import FOLD_BYTES, FOLD_ENTRIES, JournaledContext, pack, replay
from vmem.storage import Store

__all__ = ["CORE_KEY", "FORMAT", "STATE_KEY", "SUMMARY_KEY", "MemoryState", "Saver", "load_core", "load_state"]

STATE_KEY = "kernel"
SUMMARY_KEY = "kernel.summary"
CORE_KEY = "core"
FORMAT = 3
"""Format 3: the summary under its own key, the working set saved as pages, the core
journaled. Formats 1 (the trace in a file, steps in the config) and 2 are read too."""


@dataclass
class MemoryState:
    """The kernel's own durable state (beside the stores and the core)."""

    config: dict[str, Any]  #: MemoryConfig.to_dict()
    system: str  #: the system instructions
    instructions: str = ""  #: the memory instructions sent after them ('' none; older memories had none)
    summary: str = ""  #: the recursive summary of the evicted messages
    folds: int = 0  #: summaries made
    evicted: int = 0  #: messages evicted from the queue (all in recall storage)
    stored_only: int = 0  #: messages kept in recall storage but never queued (oversize input)
    alerted: bool = False  #: a memory-pressure alert was sent in this pressure episode
    group: int = 0  #: the last atomic group id (a tool call and its results)
    calibration: float = 1.0  #: the model's tokens per counted token of the context (TokenCounter)
    calibration_fixed: float | None = None  #: the model's tokens every request carries besides the context
    calibration_sums: list[float] = field(default_factory=list)  #: the calibration fit's weighted sums
    turns: int = 0  #: user messages received
    truncated: int = 0  #: summaries cut to their cap
    block_pages: dict[str, int] = field(default_factory=dict)  #: block label -> page id
    workset: dict[int, str] = field(default_factory=dict)  #: working-set page -> line, in admission order
    pending: list[int] = field(default_factory=list)  #: oversize messages whose summary is not queued yet
    changed: str | None = None  #: when core or archival memory last changed (ISO time)
    now: float | None = None  #: the time of the last turn (epoch seconds)
    consolidated: int = 0  #: the last message a consolidation run has read (a recall serial; 0: none)
    shared: dict[str, list[Any]] = field(default_factory=dict)  #: label -> [location, name, version shown, chars shown]
    shared_edits: list[list[Any]] = field(default_factory=list)  #: [edit id, label, edit, location, name] committed, maybe not applied

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
        new.calibration_sums = list(self.calibration_sums)
        new.shared = {label: list(ref) for label, ref in self.shared.items()}
        new.shared_edits = list(self.shared_edits)
        return new

    def restore(self, mark: "MemoryState") -> None:
        """Take every field of ``mark`` (a copy made earlier), in place."""
        self.__dict__.update(mark.__dict__)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict: the whole state (what a digest covers)."""
        d = dict(self.__dict__)
        d["format"] = FORMAT
        d["workset"] = [[page, line] for page, line in self.workset.items()]  # keep the order
        return d

    def saved(self) -> dict[str, Any]:
        """What is saved under "kernel" each commit: the summary goes under its own key, and the
        working set as its pages in admission order (the lines are rebuilt from the stores)."""
        d = dict(self.__dict__)
        d["format"] = FORMAT
        del d["summary"]
        d["workset"] = list(self.workset)
        return d


def load_state(store: Store) -> MemoryState:
    """The saved state (formats 1 to 3); KernelError if the store holds no memory or another
    format. A working set saved as pages has empty lines: the caller renders them."""
    if STATE_KEY not in store.state:
        raise KernelError(f"{store.path} is a vmem store but holds no agent memory")
    d = dict(store.state[STATE_KEY])
    fmt = d.pop("format", None)
    if fmt not in (1, 2, FORMAT):
        raise KernelError(f"{store.path}: memory format {fmt!r} is not {FORMAT}")
    if fmt == 1:  # the first format kept its working set as a {str(page): line} map and counted steps
        d["workset"] = [[int(k), v] for k, v in d.get("workset", {}).items()]
        d["turns"] = d.pop("steps", 0)
    if fmt == FORMAT:
        d["summary"] = store.state[SUMMARY_KEY] if SUMMARY_KEY in store.state else ""
    known = {f.name for f in dataclasses.fields(MemoryState)}
    state = MemoryState(**{k: v for k, v in d.items() if k in known})
    state.workset = {int(w[0]): w[1] for w in d.get("workset", []) if isinstance(w, list)}
    state.workset.update({int(w): "" for w in d.get("workset", []) if not isinstance(w, list)})
    state.block_pages = {str(k): int(v) for k, v in state.block_pages.items()}
    return state


def load_core(store: Store) -> tuple[JournaledContext, int, int]:
    """The core as saved: its snapshot with the journal replayed; and the journal's entries and bytes."""
    ctx = JournaledContext.from_snapshot(store.state[CORE_KEY])
    entries = store.journal.entries()
    replay(ctx, entries)
    ctx.take_ops()
    return ctx, len(entries), sum(map(len, entries))


class Saver:
    """Writes the memory's image at each commit: the small state, the summary when it changed,
    the core's operations as a journal entry (or, every so often, a whole snapshot). A
    transaction participant: a rolled-back commit leaves its bookkeeping as it was."""

    def __init__(self, store: Store, *, entries: int = 0, size: int = 0, summary: str | None = None) -> None:
        self._store = store
        self._entries = entries  # journal entries since the snapshot
        self._size = size
        self._summary = summary  # the summary as saved (None: none saved yet, or unknown)
        self._snapshot = summary is not None  # a snapshot exists (a new memory has none yet)

    def save(self, state: MemoryState, ctx: JournaledContext, *, fold: bool = False) -> None:
        """Write the image (joins the open transaction)."""
        store = self._store
        with store.transaction():
            store.state[STATE_KEY] = state.saved()
            if state.summary != self._summary:
                store.state[SUMMARY_KEY] = state.summary
                self._summary = state.summary
            ops = ctx.take_ops()
            if fold or not self._snapshot or self._entries >= FOLD_ENTRIES or self._size >= FOLD_BYTES:
                store.state[CORE_KEY] = ctx.snapshot()
                store.journal.clear()
                self._entries = self._size = 0
                self._snapshot = True
            elif ops:
                entry = pack(ops)
                store.journal.append(entry)
                self._entries += 1
                self._size += len(entry)

    def mark(self, level: int) -> tuple[int, int, str | None, bool]:
        return self._entries, self._size, self._summary, self._snapshot

    def restore(self, mark: tuple[int, int, str | None, bool]) -> None:
        self._entries, self._size, self._summary, self._snapshot = mark

    def commit(self) -> None:
        pass
