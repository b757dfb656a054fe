"""The agent's side of shared blocks: which of its blocks live in a shared store, and its edits.

A shared block (:mod:`vmem.storage.shared_blocks`) is stored once, in a store several agents
name; an agent keeps only a reference (``MemoryState.shared``: label -> [location, name,
version shown, characters shown (absent or None: all)]) and a placeholder row in its own
blocks (so labels, order and limits read as for any block, and the text is not copied per
agent).

An agent's edit of a shared block is part of its step like any other write: the function
answers from the fresh value with the edit applied, and the edit is saved with the step
(``MemoryState.shared_edits``, committed in the agent's own transaction: a step that rolls
back never edits the shared block). After the agent's commit the edit is applied to the
shared store, as a compare-and-set on the block's version re-applied to the value current
then (an append always applies; a replace or a conditional rewrite that no longer can is
refused and logged, never applied blindly). Each edit has an id and the store answers an id
it has seen with its first outcome, so an edit committed by the agent but not yet applied
when the process died is applied at the next transaction, once.

Other agents' edits reach the context at the start of each transaction (:meth:`sync`, one
version query): a changed block is re-rendered, its page re-accounted, and the trace records
who changed it (a ``block`` event with ``by``), which the history picture shows as a change
of the prompt's prefix.

Interface (used by :class:`vmem.kernel.core_memory.CoreMemory` and Memory)::

    shared = SharedBlocks(state, base_dir, agent="ana", trace=trace)
    shared.attach(label, store_location, name)      # -> SharedBlock
    shared.is_shared(label); shared.view(label)     # the block as this agent's context shows it
    shared.edit(label, BlockEdit.append("..."))     # in a transaction: -> Block (pending)
    shared.flush()                                  # after the agent's commit: apply pending edits
    shared.sync()                                   # at a transaction's start: -> changed labels
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmem.kernel.persistence import MemoryState
from vmem.kernel.trace import Trace
from vmem.storage import Block
from vmem.storage.block_edit import BlockEdit
from vmem.storage.location import open_shared_blocks
from vmem.storage.shared_blocks import SharedBlock, SharedBlockStore, applied_value

__all__ = ["SharedBlocks"]


def _same_database(a: str, b: str) -> bool:
    """Whether two PostgreSQL URLs name the same database (user, host, port, name; not the password)."""
    from urllib.parse import urlsplit

    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.username, pa.hostname, pa.port, pa.path) == (pb.username, pb.hostname, pb.port, pb.path)

log = logging.getLogger("vmem.kernel")


class SharedBlocks:
    """One memory's shared blocks (see the module docstring)."""

    def __init__(self, state: MemoryState, base: Path | None, *, agent: str, trace: Trace,
                 opener: Callable[[str], SharedBlockStore] | None = None, home: str | None = None) -> None:
        self._state = state
        self._base = base
        # the agent's own database (its URL with any password): shared blocks kept there are reached
        # with it, so a recorded location never holds a password
        self._home = home
        self.agent = agent
        self._trace = trace
        self._open = opener or (lambda location: open_shared_blocks(location, create=False))
        self._stores: dict[str, SharedBlockStore] = {}
        self._views: dict[str, SharedBlock] = {}  # label -> the block this memory last read (before its edits)
        self._lock = threading.Lock()  # flush (after a commit) and sync (in the next transaction)
        self.refused: list[tuple[str, str]] = []  #: (label, reason) of edits the shared store refused
        #: Refused edits the model has not been told about yet (the next step's context says so).
        self.notices: list[tuple[str, str]] = []

    # ---------------------------------------------------------------- where they are

    def _resolve(self, location: str) -> str:
        if location.startswith(("postgresql://", "postgres://")):
            if self._home is not None and _same_database(self._home, location):
                return self._home
            return location
        if self._base is None:
            return location
        return os.path.normpath(os.path.join(self._base, location))

    def _store(self, location: str) -> SharedBlockStore:
        store = self._stores.get(location)
        if store is None:
            store = self._stores[location] = self._open(self._resolve(location))
        return store

    def _ref(self, label: str) -> tuple[SharedBlockStore, str]:
        location, name = self._state.shared[label][:2]
        return self._store(location), name

    def store_of(self, label: str) -> SharedBlockStore:
        """The shared store that holds ``label``'s text."""
        return self._ref(label)[0]

    def is_shared(self, label: str) -> bool:
        """Whether ``label`` is one of this memory's shared blocks."""
        return label in self._state.shared

    @property
    def labels(self) -> list[str]:
        """The labels of this memory's shared blocks."""
        return list(self._state.shared)

    def location(self, label: str) -> tuple[str, str]:
        """Where a shared block lives: (store location as recorded, name in it)."""
        location, name = self._state.shared[label][:2]
        return location, name

    def attach(self, label: str, location: str | os.PathLike[str], name: str) -> SharedBlock:
        """Record that ``label`` is the shared block ``name`` of the store at ``location`` (the
        caller adds the placeholder block and its page). NotFoundError if there is no such block."""
        text = os.fspath(location)
        if text.startswith(("postgresql://", "postgres://")):
            from vmem.storage.postgres_connect import _redact
            from vmem.storage.postgres_shared import database_url

            full = database_url(text)  # the database; an agent parameter names no part of it
            text = _redact(full).replace(":***@", "@")  # recorded without a password
            if text not in self._stores:  # opened with what was given (the agent's own URL for its database)
                self._stores[text] = self._open(self._resolve(full))
        elif self._base is not None:
            text = os.path.relpath(os.path.abspath(text), os.path.abspath(self._base))  # the pair moves together
        store = self._store(text)
        block = store.get(name)
        self._state.shared[label] = [text, name, block.version]
        self._views[label] = block
        return block

    def detach(self, label: str) -> None:
        """Forget the reference (the shared block stays in its store for the other agents)."""
        self._state.shared.pop(label)
        self._views.pop(label, None)

    # ---------------------------------------------------------------- reading

    def view(self, label: str) -> Block:
        """The block as this memory shows it: the shared value it last read, with this
        memory's edits not yet applied to the store applied on top."""
        block = self._read(label)
        value = block.value
        for _, lbl, edit, *_ in self._state.shared_edits:
            if lbl == label:
                try:
                    value = BlockEdit.from_dict(edit).apply(value)
                except Exception:  # noqa: BLE001 - it will be refused by the store too; show what holds
                    pass
        return Block(label, value, block.limit, block.description, block.read_only)

    def _read(self, label: str) -> SharedBlock:
        block = self._views.get(label)
        if block is None:
            store, name = self._ref(label)
            block = self._views[label] = store.get(name)
        return block

    # ---------------------------------------------------------------- writing

    def edit(self, label: str, edit: BlockEdit) -> Block:
        """An edit made in the running transaction: checked against the value this memory
        shows (EditConflictError, BlockLimitError, BlockError if read-only) and saved with the
        transaction; applied to the shared store after it commits (:meth:`flush`)."""
        shown = self.view(label)
        current = self._read(label)
        applied_value(SharedBlock(current.name, shown.value, current.limit, current.description,
                                  current.read_only, current.version, current.updated_by), edit)
        location, name = self._state.shared[label][:2]  # kept with the edit: it applies even if detached next
        self._state.shared_edits.append([uuid.uuid4().hex, label, edit.to_dict(), location, name])
        return self.view(label)

    def flush(self) -> None:
        """Apply the committed edits to the shared store (each once; see the module docstring).
        Called after the agent's commit; what a failure leaves is applied by the next :meth:`sync`."""
        with self._lock:
            for item in list(self._state.shared_edits):
                self._apply(item)

    def sync(self) -> list[tuple[str, Block, str]]:
        """At a transaction's start (inside it): finish the edits a commit left unapplied, drop
        the applied ones from the state, and read the blocks other agents changed. Returns
        (label, block, by) for each block whose shown value changed."""
        if not self._state.shared and not self._state.shared_edits:
            return []
        with self._lock:
            pending = self._state.shared_edits
            if pending:
                done: set[str] = set()
                by_location: dict[str, list[list[Any]]] = {}
                for item in pending:
                    by_location.setdefault(self._where(item)[0], []).append(item)
                for location, items in by_location.items():
                    seen = self._store(location).outcomes(i[0] for i in items)
                    for item in items:
                        if item[0] not in seen:  # committed here, never applied (the process stopped between)
                            self._apply(item)
                        done.add(item[0])
                self._state.shared_edits = [i for i in pending if i[0] not in done]
            for label, reason in self.refused:
                self._trace.write({"e": "shared_refused", "label": label, "reason": reason})
            self.notices.extend(self.refused)
            self.refused = []
            return self._changed()

    def _where(self, item: list[Any]) -> tuple[str, str]:
        """A pending edit's store location and block name (edits saved before they carried them:
        their label's reference)."""
        return (item[3], item[4]) if len(item) > 4 else self.location(item[1])

    def _apply(self, item: list[Any]) -> None:
        """Apply one committed edit to its shared store (once: by its id)."""
        edit_id, label, edit = item[:3]
        location, name = self._where(item)
        outcome = self._store(location).apply(edit_id, name, BlockEdit.from_dict(edit), agent=self.agent)
        if self._state.shared.get(label, [None, None])[:2] == [location, name]:
            self._views[label] = outcome.block
        if not outcome.applied:
            self.refused.append((label, outcome.reason))

    def _changed(self) -> list[tuple[str, Block, str]]:
        changed: list[tuple[str, Block, str]] = []
        by_location: dict[str, list[str]] = {}
        for label, ref in self._state.shared.items():
            location = ref[0]
            by_location.setdefault(location, []).append(label)
        for location, labels in by_location.items():
            store = self._store(location)
            names = {self._state.shared[label][1]: label for label in labels}
            versions = store.versions(names)
            stale = [n for n, v in versions.items() if v != self._state.shared[names[n]][2]]
            for name, block in store.get_many(stale).items():
                label = names[name]
                self._views[label] = block
                self._state.shared[label][2] = block.version
                changed.append((label, self.view(label), block.updated_by))
        return changed

    def close(self) -> None:
        """Close the shared stores this memory opened."""
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    # a Participant: the state's copy covers refs and pending edits; views are caches
    def mark(self, level: int) -> None:
        return None

    def restore(self, mark: None) -> None:
        self._views.clear()

    def commit(self) -> None:
        if self._state.shared_edits:
            try:
                self.flush()
            except Exception as exc:  # noqa: BLE001 - the step committed; the next transaction applies them
                log.warning("shared block edits committed by %s not applied yet (the next step applies them): %s",
                            self.agent, exc)
