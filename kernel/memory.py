"""Memory: one agent's main context over its store, usable from any agent loop.

A Memory owns a directory (:class:`vmem.storage.MemoryDir`: recall, archival, blocks,
event log) and the C core that accounts the context window. It does everything an agent's
memory does except call the LLM::

    memory = Memory.create("ana", system="You are Ana's assistant.", blocks={"human": ""})
    memory.append({"role": "user", "content": "Hi, I'm Ana"})
    messages = memory.context(summarizer=my_summarize)   # compiled, within budget
    reply = my_llm(messages, tools=memory.tools)         # any client, any loop
    memory.append(reply)                                 # the assistant message, tool calls and all
    for call in reply.tool_calls or ():
        memory.execute(call)                             # runs a memory function, records its result
    memory.close()

:class:`vmem.kernel.Agent` is this plus a driver and the step loop, built on exactly this
public API. It is built in layers (``image``: the parts wired over the store, and
transactions; ``conversation``: messages in, context out, memory functions run; ``tiers``:
blocks, archival storage, searches), and the parts are one concept per module:

==================  ===========================================================
``context``         the compiled context: layout, how each part reads, digests
``queue``           the queued messages as chat dicts, in the core's order
``messages``        chat messages normalised and checked against the protocol
``tokens``          counting, and calibration against the provider's usage
``budget``          the core's configuration (window, reserves, calibration)
``statistics``      the tiers' sizes and the statistics message
``pressure``        watermarks, flushes; ``summary``: the recursive summary
``paging``          page faults, prefetch, the working set's lines
``core_memory``     the blocks as pinned pages
``functions``       @memory_function, schemas, argument checks, calls;
                    ``host``: what functions may ask; ``builtins``
``transaction``     all effects commit together, or none
``persistence``     the saved image; ``journal``: the core's operations since
                    the last snapshot; ``trace``: the event log
``invariants``      what :meth:`Memory.check` verifies
==================  ===========================================================

Every public call that changes the memory is atomic (see :mod:`.transaction`):
``with memory.transaction():`` groups calls into one unit, ``with memory.savepoint():``
marks a part that may fail alone.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import msgpack

from vmem import InvariantError, PageKind, make_page_id
from vmem.kernel.config import MemoryConfig
from vmem.kernel.context import MEMORY_INSTRUCTIONS, ContextMap
from vmem.kernel.conversation import Context, Conversation, Prepared, Summarizer
from vmem.kernel.errors import KernelError
from vmem.kernel.functions import MemoryFunction
from vmem.kernel.image import one_caller
from vmem.kernel.invariants import check as check_invariants
from vmem.kernel.persistence import STATE_KEY, MemoryState, load_state
from vmem.kernel.tiers import Tiers
from vmem.storage import SchemaVersionError, VmemStorageError
from vmem.storage.location import check_location, display, is_url, open_store
from vmem.storage.postgres import PgStore

__all__ = ["Context", "Memory", "Prepared", "Summarizer"]


class Memory(Conversation, Tiers):
    """One agent's memory: its main context (the C core) over its directory.

    Create with :meth:`create`, reopen in any process with :meth:`open`; close with
    :meth:`close` (or use it as a context manager). One caller at a time: a public call made
    while a step or another call runs in another thread or task gets :class:`BusyError`, at
    once (see :class:`vmem.kernel.transaction.Gate`); calls are never interleaved.
    """

    def __init__(self) -> None:  # use create() or open()
        raise TypeError("use Memory.create(path, ...) or Memory.open(path, ...)")

    # ================================================================ lifecycle

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        system: str,
        blocks: Mapping[str, str | Mapping[str, Any]] | None = None,
        config: MemoryConfig | None = None,
        functions: Iterable[MemoryFunction | Callable[..., Any]] = (),
        embedder: Any = None,
        archival: Any = None,
        clock: Callable[[], _dt.datetime] | None = None,
        durability: str = "full",
        instructions: str | None = MEMORY_INSTRUCTIONS,
    ) -> "Memory":
        """Create a memory in directory ``path`` (which must not hold one already).

        ``system``: the system instructions (who the agent is, for whom). ``instructions``: how
        to use the memory functions, sent as a system message right after ``system``; the
        default (:data:`vmem.kernel.context.MEMORY_INSTRUCTIONS`) is what a small model needs to
        save facts and search its memory; pass your own text, or None to send none (a system
        prompt that explains the functions already, as an imported Letta agent's does).
        ``blocks`` maps labels to an initial value, or to a dict with ``value``, ``limit``
        (characters), ``description`` and ``read_only``. ``functions``: memory functions
        beside the built-ins. ``clock``: what "now" is (default: UTC wall time).
        Raises ContextWindowError if the system instructions and core memory alone do not
        fit in the window; a failed create leaves the directory as it was.
        """
        config = config or MemoryConfig()
        if instructions is not None and not isinstance(instructions, str):
            raise TypeError(f"instructions must be text or None, got {type(instructions).__name__}")
        check_location(path)
        folder = None if is_url(path) else Path(path)
        if folder is not None:
            made_dir = not folder.exists()
            was_empty = made_dir or (folder.is_dir() and not any(folder.iterdir()))
        store = open_store(path, embedder=embedder, archival=archival, durability=durability)
        try:
            if STATE_KEY in store.state:
                raise KernelError(f"{display(path)} holds an agent already: use open()")
            with store.transaction():
                for label, spec in (blocks or {}).items():
                    spec = {"value": spec} if isinstance(spec, str) else dict(spec)
                    store.blocks.create(label, spec.get("value", ""), limit=spec.get("limit", 2000),
                                        description=spec.get("description", ""),
                                        read_only=spec.get("read_only", False))
                state = MemoryState(config=config.to_dict(), system=system, instructions=instructions or "")
                self = cls._assemble(store, state, functions, clock, fresh=True)
                self.trace.write({"e": "create", "time": self.now.timestamp(), "config": config.to_dict(),
                                  "system": system, "instructions": state.instructions,
                                  "blocks": [[b.label, b.value, b.limit, b.description, b.read_only]
                                             for b in store.blocks.all()]})
                self._session.dirty = True
                self._persist()
        except BaseException:
            if isinstance(store, PgStore):  # an agent this call added goes again; one that was there stays
                if store.created and not store.closed:
                    store.drop()
                store.close()
                raise
            store.close()
            if folder is not None and was_empty:  # leave nothing half-made behind: a retry must find it as it was
                if made_dir:
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    for child in folder.iterdir():
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
            raise
        return self

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        functions: Iterable[MemoryFunction | Callable[..., Any]] = (),
        embedder: Any = None,
        archival: Any = None,
        clock: Callable[[], _dt.datetime] | None = None,
        durability: str = "full",
        read_only: bool = False,
    ) -> "Memory":
        """Reopen the memory stored in ``path``, with everything as it was saved.

        ``archival``: None reopens the archival backend it was created with; pass a
        :class:`vmem.storage.MilvusConfig` to supply what is not stored (a cluster's
        token). ``read_only``: for inspection beside a running agent: nothing is locked
        or written, every call that would change the memory raises ReadOnlyError, and
        everything reads one committed version (the last when it opened: all tiers and
        caches agree, whatever the writer commits meanwhile; reopen to see newer ones).
        """
        store = open_store(path, embedder=embedder, archival=archival, create=False,
                           durability=durability, read_only=read_only)
        try:
            return cls._assemble(store, load_state(store), functions, clock, fresh=False, read_only=read_only)
        except BaseException:
            store.close()
            raise

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds a memory (read without locking or writing anything). A store
        an older or a newer vmem wrote counts: :meth:`open` upgrades the older (a read-only open
        cannot) and says which vmem wrote the newer."""
        try:
            check_location(path)
        except ValueError:  # an empty location holds nothing
            return False
        try:
            with open_store(path, create=False, read_only=True) as store:
                return STATE_KEY in store.state
        except SchemaVersionError:
            return True
        except VmemStorageError:
            return False

    @one_caller
    def close(self) -> None:
        """Release the directory (everything was saved as each change committed)."""
        if not self.store.closed:
            try:
                self.shared_blocks.close()
            finally:
                self.store.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self.store.closed

    def __enter__(self) -> "Memory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Memory {str(self.store.path)!r} {len(self.queue)} queued, {self.evicted} evicted>"

    # ================================================================ consolidation, the trace

    @property
    def consolidation_cursor(self) -> int:
        """The last message a consolidation run has read (a recall serial; 0: none yet).
        See :mod:`vmem.kernel.consolidation`."""
        return self._state.consolidated

    def advance_consolidation(self, serial: int) -> None:
        """Move the consolidation cursor forward to message ``serial`` (saved with the memory;
        a consolidation run does it in its transaction). ValueError if it would move back or
        past the newest message."""
        if not isinstance(serial, int) or not self._state.consolidated <= serial <= self.stats.recall:
            raise ValueError(f"the consolidation cursor moves forward to a stored message: {serial!r} is not in "
                             f"[{self._state.consolidated}, {self.stats.recall}]")
        with self.transaction():
            self._state.consolidated = serial
            self._session.dirty = True

    def log(self, event: dict[str, Any]) -> None:
        """Add an event to the trace (it commits with the running transaction, or now)."""
        with self.transaction():
            self.trace.write(event)

    # ================================================================ inspection

    @one_caller
    def context_map(self) -> ContextMap:
        """What a context map draws: the core's accounting and the tiers' sizes."""
        return ContextMap(self.ctx.stats(), self.ctx.config, self.ctx.status().state,
                          recall_messages=self.stats.recall, archival_passages=self.stats.archival)

    @one_caller
    def check(self, *, deep: bool = False) -> None:
        """Verify every invariant of the memory (:mod:`vmem.kernel.invariants`); raises
        InvariantError naming the broken one. ``deep``: also verify every stored record against
        the checksum written with it, the database's structure and the caches against the
        database, and that no committed transaction is missing (invariant 8; reads everything,
        fixes nothing: the error lists what is damaged). A memory other processes write is refreshed first."""
        self.refresh()
        check_invariants(self)
        if deep:
            problems = self.store.verify()
            locations = {self.shared_blocks.location(label)[0]: label for label in self.shared_blocks.labels}
            for label in locations.values():  # the shared stores this memory names
                problems += self.shared_blocks.store_of(label).check()
            if problems:
                raise InvariantError(f"invariant 8: {len(problems)} damaged: " + "; ".join(problems[:20]))

    def refresh(self) -> bool:
        """A memory in a shared store (PostgreSQL) that another process changed since this object
        last saw it: reload its image now (each outermost transaction does so by itself; reads
        between transactions show what this object saw last). Returns whether it reloaded.
        A no-op for a directory (one writer) and for a read-only open (one snapshot)."""
        if self._shared is None or self.read_only or self._tx.depth or not self._shared.sync():
            return False
        self._reload_image()
        return True

    @property
    def lost_commits(self) -> int:
        """Committed transactions the store lost before this open (a WAL tail lost in a crash),
        as far as the count kept outside the database knows; 0 when none."""
        return self.store.lost_commits

    @one_caller
    def digest(self) -> str:
        """A digest of the whole memory state: equal digests, equal memories."""
        messages = self.store.recall.get_many(make_page_id(PageKind.MESSAGE, i)
                                              for i in range(1, self.stats.recall + 1))
        passages: list[tuple[int, str, list[str], float, float, float | None, int | None]] = []
        page = 0
        while True:
            found = self.store.archival.search(None, page=page, page_size=500)
            passages.extend((p.id, p.text, sorted(p.tags), p.timestamp.timestamp(), p.held_from.timestamp(),
                             p.invalid_at.timestamp() if p.invalid_at else None, p.superseded_by)
                            for p in found.items)
            if not found.has_next:
                break
            page += 1
        payload = {
            "state": self._state.to_dict(),
            "core": self.ctx.canonical(),
            "blocks": [[b.label, b.value, b.limit, b.description, b.read_only] for b in self.core_memory.all()],
            "recall": [[m.id, m.role, m.content, m.timestamp.timestamp(), m.meta] for m in messages],
            "archival": sorted(passages),
            "context": list(self.compile()),
        }
        return hashlib.sha256(msgpack.packb(payload, use_bin_type=True)).hexdigest()
