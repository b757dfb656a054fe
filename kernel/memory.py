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
public API. This class only wires the parts together, one concept per module:

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

import contextlib
import datetime as _dt
import functools
import hashlib
import os
import shutil
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

import msgpack
import numpy as np

from vmem.text import clean_text

from vmem import BudgetError, InvariantError, PageKind, Region, make_page_id, page_kind
from vmem.kernel.budget import Budget
from vmem.kernel.builtins import BUILTINS
from vmem.kernel.config import MemoryConfig
from vmem.kernel.context import (
    INSTRUCTIONS_PAGE,
    MEMORY_INSTRUCTIONS,
    STATS_PAGE,
    SUMMARY_PAGE,
    SYSTEM_PAGE,
    ContextMap,
    RequestDigest,
    chat_message,
    message_line,
    page_text,
    passage_line,
    render_block,
    render_stats,
    render_summary,
    render_workset,
    tools_digest,
)
from vmem.kernel.core_memory import CoreMemory
from vmem.kernel.drivers.toolcalls import parse_text_tool_calls
from vmem.kernel.errors import BusyError, ContextWindowError, KernelError, MessageError, ReadOnlyError
from vmem.kernel.functions import CallRecord, MemoryFunction, as_tool_call, invoke, memory_function
from vmem.kernel.host import Saved
from vmem.kernel.invariants import check as check_invariants
from vmem.kernel.messages import check_order, normalise, pending_calls, shorten
from vmem.kernel.paging import WorkingSet, prefetch_hits
from vmem.kernel.journal import JournaledContext
from vmem.kernel.persistence import STATE_KEY, MemoryState, Saver, load_core, load_state
from vmem.kernel.pressure import MIN_QUEUE, QueueManager, Room, minimum_budget, summary_cap
from vmem.kernel.queue import MessageQueue
from vmem.kernel.shared_blocks import SharedBlocks
from vmem.kernel.statistics import MemoryStatistics
from vmem.kernel.summary import SummaryRequest, asummarize, cap_text, summarize
from vmem.kernel.tokens import TokenCounter
from vmem.kernel.trace import Trace
from vmem.kernel.transaction import CoreMarks, Transactions
from vmem.storage import Block, MemoryDir, Message, NotFoundError, Passage, SearchPage, VmemStorageError
from vmem.storage.block_edit import BlockEdit
from vmem.storage.location import display, is_url, open_store
from vmem.storage.location import open_shared_blocks
from vmem.storage.postgres_db import StaleStoreError

__all__ = ["Context", "Memory", "Prepared", "Summarizer"]

Summarizer = Callable[[SummaryRequest], Any]
"""``(messages) -> str`` (or an awaitable of it, with :meth:`Memory.acontext`); a Driver works too."""


_NOTE_TOKENS = 48  # a result that does not fit beside its answer's others: its start and where it is

_REGION_NAMES = (("system", Region.SYSTEM), ("core", Region.CORE), ("summary", Region.SUMMARY),
                 ("queue", Region.QUEUE), ("workset", Region.WORKSET))


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _aware(t: _dt.datetime | None) -> _dt.datetime | None:
    """``t`` checked: a message's time must say its time zone (MessageError if not)."""
    if t is not None and (not isinstance(t, _dt.datetime) or t.tzinfo is None):
        raise MessageError(f"a message's timestamp must be a timezone-aware datetime, got {t!r}")
    return t


_F = TypeVar("_F", bound=Callable[..., Any])


def _one_caller(method: _F) -> _F:
    """A public read taken under the memory's gate: BusyError while another thread or task runs a
    step or call on it (it would read half-done state), re-entered freely by the one running."""
    @functools.wraps(method)
    def guarded(self: "Memory", *args: Any, **kwargs: Any) -> Any:
        with self._tx.gate:
            return method(self, *args, **kwargs)
    return guarded  # type: ignore[return-value]


class Context(list):  # type: ignore[type-arg]
    """The compiled context: a list of OpenAI chat messages, with the request's ``digest``."""

    digest: str


@dataclass
class Prepared:
    """What :meth:`Memory.prepare` did before an LLM call."""

    room: Room = field(default_factory=Room)  #: alert, flushes, summary calls
    paged_in: list[int] = field(default_factory=list)  #: pages prefetched into the working set


@dataclass
class _Session:
    """The memory's own volatile fields, as a transaction participant."""

    now: _dt.datetime
    prefetch: str | None = None  # the latest user message, not yet prefetched for
    dirty: bool = False  # something to save at the commit

    def mark(self, level: int) -> tuple[_dt.datetime, str | None, bool]:
        return self.now, self.prefetch, self.dirty

    def restore(self, mark: tuple[_dt.datetime, str | None, bool]) -> None:
        self.now, self.prefetch, self.dirty = mark

    def commit(self) -> None:
        self.dirty = False


class Memory:
    """One agent's memory: its main context (the C core) over its directory.

    Create with :meth:`create`, reopen in any process with :meth:`open`; close with
    :meth:`close` (or use it as a context manager). One caller at a time: a public call made
    while a step or another call runs in another thread or task gets :class:`BusyError`, at
    once (see :class:`vmem.kernel.transaction.Gate`); calls are never interleaved.
    """

    store: MemoryDir  #: the directory: recall, archival, blocks, event log
    ctx: JournaledContext  #: the C core: page table and token accounting of the main context (journaled)
    config: MemoryConfig
    functions: dict[str, MemoryFunction]  #: what the LLM may call, by name
    tools: list[dict[str, Any]]  #: their OpenAI tool schemas
    read_only: bool
    clock: Callable[[], _dt.datetime]
    # the parts, wired by _assemble (one concept per module, see the table above)
    counter: TokenCounter
    budget: Budget
    trace: Trace
    queue: MessageQueue
    stats: MemoryStatistics
    core_memory: CoreMemory
    workset: WorkingSet
    pressure: QueueManager
    _state: MemoryState
    _session: _Session
    _saver: Saver
    _tx: Transactions
    _tools_digest: bytes
    _digest: RequestDigest
    _replies: list[str] | None

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
        url = is_url(path)
        if not url:
            path = Path(path)
            made_dir = not path.exists()
            was_empty = made_dir or (path.is_dir() and not any(path.iterdir()))
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
            if url:  # an agent this call added to the database goes again; one that was there stays
                if store.created and not store.closed:
                    store.drop()
                store.close()
                raise
            store.close()
            if was_empty:  # leave nothing half-made behind: a retry must find the directory as it was
                if made_dir:
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    for child in path.iterdir():
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
        """Whether ``path`` holds a memory (read without locking or writing anything)."""
        try:
            with open_store(path, create=False, read_only=True) as store:
                return STATE_KEY in store.state
        except VmemStorageError:
            return False

    @classmethod
    def _assemble(cls, store: MemoryDir, state: MemoryState, functions: Iterable[Any],
                  clock: Callable[[], _dt.datetime] | None, *, fresh: bool, read_only: bool = False,
                  into: "Memory | None" = None) -> "Memory":
        self = object.__new__(cls) if into is None else into
        self.store = store
        self.read_only = read_only
        self.clock = clock or _utcnow
        self.config = MemoryConfig.from_dict(state.config)
        self._state = state
        self.functions = {}
        for f in (*BUILTINS, *functions):
            f = f if isinstance(f, MemoryFunction) else memory_function(f)
            self.functions[f.name] = f
        self.tools = [f.tool for f in self.functions.values()]
        self._tools_digest = tools_digest(self.tools)
        self._digest = RequestDigest()
        self.counter = TokenCounter(state.calibration, state.calibration_fixed, state.calibration_sums)
        self.budget = Budget(self.config, self.counter, self.tools)
        self.trace = Trace(store.events)
        self._session = _Session(_dt.datetime.fromtimestamp(state.now, _dt.timezone.utc) if state.now is not None
                                 else self.clock())
        self._replies = None
        if fresh:
            self.ctx = JournaledContext(**self.budget.core_config())
            self._saver = Saver(store)
        else:
            self.ctx, entries, size = load_core(store)
            self._saver = Saver(store, entries=entries, size=size, summary=state.summary)
        self.queue = MessageQueue(self.ctx)
        self.stats = MemoryStatistics(store, self.ctx, self.counter)
        self.shared_blocks = SharedBlocks(state, None if is_url(str(store.path)) else Path(store.path),
                                          agent=_agent_name(str(store.path)), trace=self.trace)
        self.core_memory = CoreMemory(self.ctx, store.blocks, self.counter, self.trace, state, self.shared_blocks,
                                      self._core_room)
        self.workset = WorkingSet(self.ctx, self.counter, self.trace, state)
        self.pressure = QueueManager(self.ctx, self.queue, state, self.config, self.counter, store.recall,
                                     self.trace, self._enqueue)
        self._tx = Transactions(store, [CoreMarks(self.ctx), state, self.queue, self.core_memory, self.trace,
                                        self.stats, self._session, self._saver, self.shared_blocks],
                                check=self._writable, begin=self._catch_up, persist=self._persist)
        if not read_only:
            store.blocks.own("vmem Memory")
        #: The store may change between transactions (an agent in PostgreSQL, served by several
        #: processes): each outermost transaction checks, and reloads this image when it did.
        self._shared = getattr(store, "shared", False)
        if self._shared and not read_only:
            store.strict = True
        if fresh:
            self._lay_out()
        else:
            self._reload()
        return self

    def _lay_out(self) -> None:
        """A new memory's pinned pages: system, statistics, one per block; and the summary's."""
        ctx, count = self.ctx, self.counter.count
        blocks = self.store.blocks.all()
        system, instructions = count(self.system), self.instructions_tokens()
        core = sum(count(render_block(b)) for b in blocks)
        stats = count(render_stats(recall=10**12, archival=10**12, evicted=10**12, changed=self.now.isoformat(
            timespec="seconds"), now=self.now))  # at its longest
        budget = ctx.config.budget
        least = minimum_budget(system + instructions + core + stats, self.config.summary_share)
        if budget < least:
            c = self.config
            raise ContextWindowError(
                f"a window of {c.window} tokens is too small to work: the output reserve ({c.reserve_output}), "
                f"the tool schemas ({self.budget.tools_tokens}), the system instructions ({system}), the memory "
                f"instructions ({instructions}), core memory ({core}), the statistics ({stats}), the summary at its "
                f"cap ({summary_cap(least, c.summary_share)}) and a minimal queue ({MIN_QUEUE}) need a window of at "
                f"least {c.window + least - budget} tokens")
        ctx.add(SYSTEM_PAGE, count(self.system), Region.SYSTEM, pinned=True)
        ctx.add(INSTRUCTIONS_PAGE, self.instructions_tokens(), Region.SYSTEM, pinned=True)
        ctx.add(STATS_PAGE, 0, Region.SYSTEM, pinned=True)
        for block in blocks:
            self.core_memory.register(block)
        ctx.add(SUMMARY_PAGE, 0, Region.SUMMARY)
        self.stats.refresh(self._state, self.now)

    def _reload(self) -> None:
        """Rebuild the in-memory views of the resident pages from the stores (at open), and
        adapt to what changed while closed: other functions (the tool schemas' reserve),
        blocks written through the store's own API, a format that counted differently."""
        ctx, state = self.ctx, self._state
        if self.budget.apply(ctx, state, self.trace):
            self._session.dirty = True
        if INSTRUCTIONS_PAGE not in ctx:  # a memory made before memory instructions existed: it has none
            ctx.add(INSTRUCTIONS_PAGE, 0, Region.SYSTEM, pinned=True)
            self._session.dirty = True
        self._reconcile_blocks()
        if not self.read_only and self.shared_blocks.sync():  # edits a crash left unapplied; others' edits
            self._session.dirty = True
        self.core_memory.load()
        queue = ctx.pages(Region.QUEUE).tolist()
        for msg in self.store.recall.get_many(queue):
            self.queue.append(msg.id, chat_message(msg))
        self.queue.reorder(queue)
        resident = set(ctx.pages(Region.WORKSET).tolist())
        for page in [p for p in state.workset if p not in resident]:
            del state.workset[page]
        self._render_workset()
        self._recount()
        self.stats.refresh(state, self.now)

    def _render_workset(self) -> None:
        """The working set's lines from the stores (they are saved as pages); a page whose
        passage or message is gone leaves the working set."""
        ws = self._state.workset
        missing = [p for p, line in ws.items() if not line]
        if not missing:
            return
        lines: dict[int, str] = {}
        passages = [p for p in missing if page_kind(p) is PageKind.PASSAGE]
        messages = [p for p in missing if page_kind(p) is PageKind.MESSAGE]
        if passages:
            lines.update({p.id: passage_line(p) for p in self.store.archival.get_many(passages, missing_ok=True)})
        for page in messages:
            try:
                lines[page] = message_line(self.store.recall.get(page))
            except NotFoundError:
                pass
        gone = [p for p in missing if p not in lines]
        if gone:
            self.ctx.remove_many(np.array(gone, dtype=np.uint64))
            self._session.dirty = True
        self._state.workset = {p: (line or lines.get(p, "")) for p, line in ws.items() if p not in gone}

    def _recount(self) -> None:
        """Resize any page whose tokens are not its text's count (a store of format 1 counted
        differently; a block changed through the store's own API)."""
        count = self.counter.count
        texts: dict[int, str] = {SYSTEM_PAGE: self.system, **self.core_memory.texts, **self._state.workset}
        for page, chat in zip(self.ctx.pages(Region.QUEUE).tolist(), self.queue.messages):
            texts[page] = page_text(chat)
        for page, text in texts.items():
            if self.ctx.info(page).tokens != count(text):
                try:
                    self.ctx.resize(page, count(text))
                except Exception as exc:  # noqa: BLE001 - BudgetError: pinned pages over the budget
                    raise ContextWindowError(f"the system instructions and core memory no longer fit: {exc}") from None
                self._session.dirty = True
        if self.ctx.info(INSTRUCTIONS_PAGE).tokens != self.instructions_tokens():
            self.ctx.resize(INSTRUCTIONS_PAGE, self.instructions_tokens())
            self._session.dirty = True
        summary = self.pressure.summary_tokens()
        if self.ctx.info(SUMMARY_PAGE).tokens != summary:
            self.ctx.resize(SUMMARY_PAGE, summary)
            self._session.dirty = True

    def _reconcile_blocks(self) -> None:
        """Blocks written through the store's own API while closed: a new block gets its page
        (ContextWindowError if it does not fit), a deleted one loses its page."""
        stored = {b.label: b for b in self.store.blocks.all()}
        pages = self._state.block_pages
        for label in [label for label in pages if label not in stored]:
            self.ctx.remove(pages.pop(label))
            self._session.dirty = True
        for label, block in stored.items():
            if label not in pages:
                try:
                    self.core_memory.register(block)
                except Exception as exc:  # noqa: BLE001 - BudgetError
                    raise ContextWindowError(f"block {label!r} does not fit in the context window: {exc}") from None
                self._session.dirty = True

    @_one_caller
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

    @property
    def location(self) -> str:
        """Where the memory lives: its directory, or its PostgreSQL URL (without a password)."""
        return str(self.store.path)

    # ================================================================ properties

    @property
    def system(self) -> str:
        """The system instructions."""
        return self._state.system

    @property
    def instructions(self) -> str:
        """The memory instructions sent after the system instructions ('' when none)."""
        return self._state.instructions

    def instructions_tokens(self) -> int:
        """The memory instructions' tokens in the context (0 when there are none)."""
        return self.counter.count(self._state.instructions) if self._state.instructions else 0

    @property
    def summary(self) -> str:
        """The recursive summary of the evicted messages ('' before the first flush)."""
        return self._state.summary

    @property
    def evicted(self) -> int:
        """Messages evicted from the context (all still in recall storage)."""
        return self._state.evicted

    @property
    def state(self) -> MemoryState:
        """The kernel's saved state (read it; change the memory through the methods)."""
        return self._state

    @property
    def now(self) -> _dt.datetime:
        """The time of the current turn (read from the clock when a user message arrives)."""
        return self._session.now

    @property
    def page_size(self) -> int:
        """Results per page of a memory search."""
        return self.config.page_size

    @property
    def pending_calls(self) -> list[str]:
        """Ids of the newest assistant message's tool calls that have no result yet."""
        return pending_calls(self.queue.messages)

    # ================================================================ transactions

    def transaction(self) -> AbstractContextManager[None]:
        """One atomic unit: the calls inside commit all their effects or none (in the database
        and in memory alike). Nested, it joins; an error escaping any part aborts all of it
        (see :mod:`vmem.kernel.transaction`)."""
        if self._shared and not self._tx.depth:
            return _Fresh(self)
        return self._tx.transaction()

    def _reload_image(self) -> None:
        """Another process changed this agent since this object last saw it (a shared store):
        rebuild the in-memory image from the store, as :meth:`open` does, in one snapshot."""
        with self.store.snapshot():
            Memory._assemble(self.store, load_state(self.store), list(self.functions.values()), self.clock,
                             fresh=False, read_only=self.read_only, into=self)

    def savepoint(self) -> AbstractContextManager[None]:
        """A part of a transaction that may fail alone: an exception escaping it undoes only
        what was done inside it, and the transaction goes on."""
        return self._tx.savepoint()

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("this memory was opened read-only (for inspection): it cannot change")

    def _catch_up(self) -> None:
        """Before a transaction: count messages appended through the store's own API (they are
        stored-only history: searchable, never queued)."""
        new = self.stats.catch_up()
        if new:
            self._state.stored_only += new
            self._session.dirty = True
        if self._state.shared or self._state.shared_edits:
            pending = len(self._state.shared_edits)
            changed = self.shared_blocks.sync()
            if changed:
                self.core_memory.refresh(changed, self.shared_blocks.agent)
            if changed or pending != len(self._state.shared_edits):
                self._session.dirty = True

    def _core_room(self) -> int:
        """Tokens the pinned pages may still grow by and leave a step its queue (:data:`MIN_QUEUE`)."""
        t = self.ctx.stats().tokens
        budget = self.ctx.config.budget
        return int(budget - t[Region.SYSTEM] - t[Region.CORE] - summary_cap(budget, self.config.summary_share)
                   - MIN_QUEUE)

    def _persist(self) -> None:
        """Inside the commit: save the state and the core, write the trace's events."""
        if self.stats.refresh(self._state, self.now):
            self._session.dirty = True
        if self._session.dirty:
            self._sync_calibration()
            self._state.now = self.now.timestamp()
            self._saver.save(self._state, self.ctx)
        self.trace.store()

    # ================================================================ the conversation

    def append(self, message: Mapping[str, Any] | Any, *, timestamp: _dt.datetime | None = None) -> int:
        """Add one OpenAI chat message to recall storage and the queue; return its page id.

        Accepts a dict or an ``openai`` message object: roles ``user``, ``assistant`` (with
        ``tool_calls``), ``tool`` (each result right after its call, in the calls' order)
        and ``system``. A user message starts a new turn (the clock is read). A message too
        large for the queue is stored whole in recall storage and represented in the queue by
        its summary (a user message, at the next :meth:`prepare`) or a shortened copy (other
        roles). Raises MessageError, changing nothing, for a message that breaks the chat protocol.

        ``timestamp`` (timezone-aware): when the message was sent, for history brought from
        elsewhere (an imported agent); it becomes the memory's current time instead of the
        clock's (user message) or the turn's (other roles).
        """
        msg = normalise(message)
        with self.transaction():
            return self._append(msg, _aware(timestamp))

    def extend(self, messages: Iterable[Mapping[str, Any] | Any]) -> list[int]:
        """:meth:`append` each message, in one transaction (all or none)."""
        with self.transaction():
            return [self._append(normalise(m)) for m in messages]

    def _append(self, msg: dict[str, Any], timestamp: _dt.datetime | None = None) -> int:
        check_order(msg, self.pending_calls)
        if len(msg.get("tool_calls") or ()) > self.config.max_calls:
            raise MessageError(f"an assistant message may hold at most {self.config.max_calls} tool calls "
                               f"(MemoryConfig.max_calls), this one holds {len(msg['tool_calls'])}")
        role, state = msg["role"], self._state
        if timestamp is not None:
            self._session.now = timestamp
        if role == "user":
            if timestamp is None:
                self._session.now = self.clock()
            state.turns += 1
            self.trace.write({"e": "user", "text": msg["content"], "time": self.now.timestamp()})
            if self.config.prefetch:
                self._session.prefetch = msg["content"]
        group = 0
        if role == "assistant" and msg.get("tool_calls"):
            state.group = state.group % (2**32 - 1) + 1
            group = state.group
        elif role == "tool":
            group = state.group
        meta: dict[str, Any] = {k: msg[k] for k in ("tool_calls", "tool_call_id", "name") if k in msg}
        tokens = self.counter.count(page_text(msg))
        if self.pressure.oversize(tokens):
            return self._append_oversize(msg, meta, tokens, group)
        if role == "tool" and self.pressure.group_overflows(self._group_tokens(), tokens):
            # the answer's results so far fill its share of the window: this one is kept whole in
            # recall storage, and its start with a note takes its place in the queue
            return self._append_oversize(msg, meta, tokens, group, quota=_NOTE_TOKENS)
        return self._enqueue(role, msg["content"] or "", meta, group, tokens)

    def _group_tokens(self) -> int:
        """Tokens of the newest answer's group in the queue: its assistant message and the results so far."""
        messages = self.queue.messages
        answered = 0
        for chat in reversed(messages):
            if chat["role"] != "tool":
                break
            answered += 1
        pages = self.ctx.pages(Region.QUEUE).tolist()[-(answered + 1):] if messages else []
        return sum(self.ctx.info(p).tokens for p in pages)

    def _enqueue(self, role: str, content: str, meta: dict[str, Any], group: int = 0,
                 tokens: int | None = None) -> int:
        """Store a message in recall storage and append it to the queue (``tokens``: its count, if known)."""
        page = self.store.recall.append(role, content, timestamp=self.now, meta=meta or None)
        self.stats.appended(page)
        chat = chat_message(Message(page, role, content, self.now, dict(meta)))
        self.ctx.add(page, tokens if tokens is not None else self.counter.count(page_text(chat)), Region.QUEUE,
                     group=group)
        self.queue.append(page, chat)
        self._session.dirty = True
        return page

    def import_history(self, history: Iterable[tuple[Mapping[str, Any] | Any, _dt.datetime]], *,
                       summary: str = "",
                       recent: Iterable[tuple[Mapping[str, Any] | Any, _dt.datetime | None]] = ()) -> list[int]:
        """Bring an imported agent's history in: its older messages, its summary, its context.

        For a new memory, before any message. ``history``: ``(message, timestamp)`` pairs already
        out of the agent's context window: they go to recall storage verbatim and in order
        (searchable with conversation_search, never queued), checked against the chat protocol as
        :meth:`append` checks it. ``summary``: the recursive summary of those messages as the
        agent's previous host made it; with one they count as evicted and it becomes the
        memory's (a summary over its cap is kept whole in recall storage and cut, with a note
        saying where), without one they are stored-only history. ``recent``: the agent's
        in-context messages, oldest first: the newest of them that fit in half of what the queue
        may use (whole tool-call groups) are queued as :meth:`append` queues them; the older
        ones join the history in recall storage, counted as evicted, and a line of the summary
        says so (no LLM runs here: they are not summarised). So the next step runs whatever
        the imported context's size.

        Returns the page ids of the history's and then the recent messages, in order. All or
        nothing: KernelError if the memory holds messages already or a summary comes without
        history, MessageError for a message that breaks the protocol, ContextWindowError if
        the summary's note alone does not fit.
        """
        items = [(normalise(m), _aware(t)) for m, t in history]
        recents = [(normalise(m), _aware(t)) for m, t in recent]
        if summary and not items:
            raise KernelError("import_history: a summary needs the messages it summarises")
        with self.transaction():
            if self.stats.recall:
                raise KernelError("import_history: the memory holds messages already; older history comes first")
            cut = self._fitting(recents)
            folded, recents = recents[:cut], recents[cut:]
            done: list[dict[str, Any]] = []
            pages = []
            for msg, at in items + folded:
                check_order(msg, pending_calls(done))
                done.append(msg)
                if len(msg.get("tool_calls") or ()) > self.config.max_calls:
                    raise MessageError(f"import_history: an assistant message holds {len(msg['tool_calls'])} tool "
                                       f"calls, more than MemoryConfig.max_calls ({self.config.max_calls})")
                meta: dict[str, Any] = {k: msg[k] for k in ("tool_calls", "tool_call_id", "name") if k in msg}
                page = self.store.recall.append(msg["role"], msg["content"] or "", timestamp=at or self.now,
                                                meta=meta or None)
                self.stats.appended(page)
                pages.append(page)
            if pending_calls(done):
                raise MessageError(f"import_history: tool call(s) {', '.join(pending_calls(done))} have no result")
            state = self._state
            if folded:
                first, last = folded[0][1], folded[-1][1]
                when = f" ({first.date().isoformat()} to {last.date().isoformat()})" if first and last else ""
                note = (f"{len(folded)} more messages{when} were in the imported agent's context window but do not "
                        f"fit in this one: they are in recall storage (conversation_search), not in this summary.")
                summary = f"{summary}\n\n{note}" if summary else note
            if summary:
                state.evicted += len(pages)
                state.summary = self._imported_summary(summary)
                self.ctx.resize(SUMMARY_PAGE, self.pressure.summary_tokens())
                used, budget = self.ctx.stats().used, self.ctx.config.budget
                if used > budget:
                    raise ContextWindowError(f"the imported summary does not fit in the context window: with it "
                                             f"the context needs {used} tokens of a budget of {budget}")
            else:
                state.stored_only += len(pages)
            self.trace.write({"e": "history", "messages": len(pages), "summary": summary, "folded": len(folded)})
            self._session.dirty = True
            for msg, at in recents:
                pages.append(self._append(msg, at))
        return pages

    def _fitting(self, recents: list[tuple[dict[str, Any], _dt.datetime | None]]) -> int:
        """Where to cut imported context messages so that those after the cut fit in half of what the
        queue may use (the summary at its cap), at a message that is not a tool result."""
        room = (self.ctx.config.budget - int(self.ctx.stats().tokens[Region.SYSTEM])
                - int(self.ctx.stats().tokens[Region.CORE]) - self.pressure.summary_cap) // 2
        short = max(64, self.ctx.config.budget // 8)  # what an oversize message is queued as, about
        total, cut = 0, len(recents)
        for i in range(len(recents) - 1, -1, -1):
            msg = recents[i][0]
            total += min(self.counter.count(page_text(msg)), short)
            if total > room:
                break
            if msg["role"] != "tool":
                cut = i
        return cut

    def _imported_summary(self, summary: str) -> str:
        """An imported summary within its cap: a longer one is kept whole in recall storage (a
        stored-only message) and cut, with a note saying where."""
        cap = self.pressure.summary_cap
        if self.counter.count(render_summary(summary, max(self._state.evicted, 1))) <= cap:
            return summary
        page = self.store.recall.append("system", f"The imported agent's summary, whole:\n{summary}",
                                        timestamp=self.now, meta={"kind": "imported_summary"})
        self.stats.appended(page)
        self._state.stored_only += 1
        note = f"\n[cut: the whole imported summary is {page:#x} in recall storage]"
        return cap_text(summary, cap - self.counter.count(note) - 32, self.counter.count) + note

    def _append_oversize(self, msg: dict[str, Any], meta: dict[str, Any], tokens: int, group: int,
                         quota: int | None = None) -> int:
        """Keep a message too large for the queue verbatim in recall storage only; a user message
        is summarised into the queue at the next prepare(), any other is queued shortened now
        (to about ``quota`` tokens: by default an eighth of the budget)."""
        page = self.store.recall.append(msg["role"], msg["content"] or "", timestamp=self.now,
                                        meta={**meta, "kind": "oversize"})
        self.stats.appended(page)
        self._state.stored_only += 1
        self._session.dirty = True
        self.trace.write({"e": "oversize", "role": msg["role"], "page": page, "tokens": tokens})
        if msg["role"] == "user":
            self._state.pending.append(page)
            return page
        short = shorten(msg, quota or max(64, self.ctx.config.budget // 8), self.counter.count, page)
        meta = {k: short[k] for k in ("tool_calls", "tool_call_id", "name") if k in short}
        meta.update(kind="shortened", page=page)
        return self._enqueue(msg["role"], short["content"] or "", meta, group)

    # ================================================================ the context

    def prepare(self, *, force: bool = False) -> Generator[SummaryRequest, str, Prepared]:
        """Get the context ready for an LLM call (sans-IO): prefetch for the latest user message
        (when ``config.prefetch``), queue pending summaries, alert at the warning line, flush
        over the flush line (or when ``force``d, after a provider's overflow error).

        A generator: it yields summarizer requests (chat messages, no tools) and must be sent
        each summary's text; drive it to the end (or close it). :meth:`context` and
        :meth:`acontext` drive it for you. All of it is one transaction.
        """
        with self.transaction():
            prepared = Prepared()
            notices, self.shared_blocks.notices = self.shared_blocks.notices, []
            for label, reason in notices:  # an edit the model made that the shared store could not apply
                self._enqueue("system", SHARED_REFUSED.format(label=label, reason=reason), {"kind": "shared_refused"})
            if self._session.prefetch is not None:
                text, self._session.prefetch = self._session.prefetch, None
                prepared.paged_in = self.prefetch(text)
            prepared.room = yield from self.pressure.make_room(force)
            if prepared.room.alerted or prepared.room.flushes:
                self._session.dirty = True
            if self.stats.refresh(self._state, self.now):
                self._session.dirty = True
            tokens = self.ctx.stats().tokens  # what the LLM call gets, region by region (the inspector's history)
            self.trace.write({"e": "context", "time": self.now.timestamp(), "budget": self.ctx.config.budget,
                              "tokens": {name: int(tokens[r]) for name, r in _REGION_NAMES}})
            return prepared

    def context(self, summarizer: Summarizer | None = None, *, force: bool = False) -> Context:
        """The compiled context, within budget: :meth:`prepare`, then :meth:`compile`.

        ``summarizer``: a callable ``(messages) -> str`` or a Driver, called when a flush
        needs a summary (KernelError if one is needed and none was given).
        """
        gen = self.prepare(force=force)
        try:
            request = next(gen)
            while True:
                request = gen.send(summarize(summarizer, request))
        except StopIteration:
            pass
        finally:
            gen.close()
        return self.compile()

    async def acontext(self, summarizer: Summarizer | None = None, *, force: bool = False) -> Context:
        """:meth:`context` with an ``async`` summarizer (or a Driver's ``acomplete``)."""
        gen = self.prepare(force=force)
        try:
            request = next(gen)
            while True:
                request = gen.send(await asummarize(summarizer, request))
        except StopIteration:
            pass
        finally:
            gen.close()
        return self.compile()

    @_one_caller
    def compile(self) -> Context:
        """The main context as chat messages, as it stands (no flush), laid out for prompt caches:
        what changes least first (system and memory instructions, core memory, summary), then the queue (append-only
        between flushes), then what changes every step (statistics and clock, working set)."""
        state = self._state
        parts = [{"role": "system", "content": state.system}]
        if state.instructions:
            parts.append({"role": "system", "content": state.instructions})
        core = self.core_memory.render()
        if core is not None:
            parts.append({"role": "system", "content": core})
        if state.summary:
            parts.append({"role": "system", "content": render_summary(state.summary, state.evicted)})
        prefix = list(parts)
        parts += self.queue.messages
        tail = [{"role": "system", "content": self.stats.text}]
        if state.workset:
            tail.append({"role": "system", "content": render_workset(state.workset.values())})
        parts += tail
        out = Context(parts)
        out.digest = self._digest.digest(prefix, self.queue.digests, self.queue.version, tail, self._tools_digest)
        return out

    def observe_usage(self, prompt_tokens: int) -> None:
        """The provider counted ``prompt_tokens`` for the context as it stands (the last
        :meth:`compile`, with the tools): calibrate the budget to the model's tokenizer."""
        if self.counter.observe(prompt_tokens, self.ctx.stats().used, self.budget.tools_tokens):
            with self.transaction():
                self._sync_calibration()
                self.budget.apply(self.ctx, self._state, self.trace)
                self._session.dirty = True

    # ================================================================ memory functions

    def assistant_message(self, reply: Mapping[str, Any] | Any) -> dict[str, Any]:
        """The model's answer (an ``openai`` message object or its dict) as the chat message to
        :meth:`append`, with the calls of this memory's functions that the model wrote as JSON in
        its text made tool calls, and the text that remains as its content. Small local models
        often write their calls so when the server's chat template does not turn them into tool
        calls (what ``OpenAIDriver``'s ``auto`` tool mode reads too). A reply with tool calls of its
        own is returned as it is. MessageError if it is not an assistant message."""
        msg = normalise(reply)
        if msg["role"] != "assistant":
            raise MessageError(f"assistant_message: a reply has role assistant, not {msg['role']!r}")
        if msg.get("tool_calls"):
            return msg
        found = parse_text_tool_calls(msg.get("content"), known=set(self.functions), only_known=True)
        if not found.calls:
            return msg
        return {"role": "assistant", "content": found.text,
                "tool_calls": [c.to_openai() for c in found.calls]}

    def execute(self, call: Any) -> CallRecord:
        """Run one memory function the LLM called and append its result as a tool message.

        ``call``: a :class:`vmem.kernel.drivers.ToolCall`, an ``openai`` tool call object or
        its dict. Nothing the function does escapes as an exception: a bad call, a
        FunctionError or any other error is answered as a failed call (``ok`` False), and
        whatever the failed function changed is undone.
        """
        call = as_tool_call(call)
        with self.transaction():
            self._replies = []
            try:
                with self.savepoint():  # a failed call leaves nothing behind
                    record = invoke(self.functions, self, call)
                    if not record.ok:
                        raise _FailedCall(record)
            except _FailedCall as failed:
                record = failed.record
            record.replies = self._replies if record.ok else []
            self._replies = None
            self.trace.write({"e": "call", "name": call.name, "arguments": call.arguments, "ok": record.ok,
                              "result": record.result})
            self._append(normalise({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                    "content": record.result}))
        return record

    # ---------------------------------------------------------------- the Host interface

    @_one_caller
    def block(self, label: str) -> Block:
        """A core memory block (vmem.storage.NotFoundError if none)."""
        return self.core_memory.get(label)

    @_one_caller
    def blocks(self) -> list[Block]:
        """Every core memory block as the context shows it (a shared block's text from its
        store, with this memory's unapplied edits), in creation order."""
        return self.core_memory.all()

    def edit_block(self, label: str, edit: BlockEdit) -> Block:
        """Edit a block as the agent does (append, replace, insert, rewrite: see
        :class:`~vmem.storage.block_edit.BlockEdit`), all or nothing. EditConflictError when the
        edit cannot apply (the old text is gone...); a shared block's edit is applied to its
        store after this transaction commits, to the value current then."""
        label = _clean(label)
        with self.transaction(), self._keeping_room(label):
            block = self.core_memory.apply(label, edit)
            self._memory_changed()
        return block

    def attach_block(self, label: str, store: str | os.PathLike[str], name: str | None = None) -> Block:
        """Attach the shared block ``name`` (default: ``label``) of the shared block store at
        ``store`` (a file path, or a PostgreSQL URL) as this memory's block ``label``: its text
        stays in the store, every agent attached to it sees each other's edits at their next
        step. ContextWindowError if it does not fit; BlockExistsError if the label is taken."""
        label = _clean(label)
        with self.transaction(), self._keeping_room(label):
            try:
                block = self.core_memory.attach(label, os.fspath(store), _clean(name) if name else label)
            except BudgetError as exc:
                raise ContextWindowError(f"block {label!r} does not fit in the context window: {exc}") from None
            self._memory_changed()
        return block

    def share_block(self, label: str, store: str | os.PathLike[str], name: str | None = None) -> Block:
        """Move this memory's block ``label`` into the shared block store at ``store`` (created
        if missing) as ``name`` (default: ``label``), so that other memories can attach it."""
        label = _clean(label)
        with self.transaction():
            block = self.core_memory.get(label)
            if self.shared_blocks.is_shared(label):
                raise ValueError(f"block {label!r} is shared already")
            shared = open_shared_blocks(store)
            try:
                shared.create(_clean(name) if name else label, block.value, limit=block.limit,
                              description=block.description, read_only=block.read_only,
                              agent=self.shared_blocks.agent)
            finally:
                shared.close()
            self.core_memory.delete(label)
            return self.attach_block(label, store, name)

    @_one_caller
    def block_labels(self) -> list[str]:
        """The core memory blocks' labels, in creation order."""
        return self.core_memory.labels()

    def set_block(self, label: str, value: str) -> Block:
        """Set a block's value, as the agent does (read-only and the limit apply), all or nothing."""
        label, value = _clean(label), _clean(value)  # storable as UTF-8, as a message's text is
        with self.transaction(), self._keeping_room(label):
            block = self.core_memory.edit(label, value)
            self._memory_changed()
        return block

    def add_block(self, label: str, value: str = "", *, limit: int = 2000, description: str = "",
                  read_only: bool = False) -> Block:
        """Add a core memory block (a pinned page of the context). ContextWindowError if the
        window cannot hold it; BlockExistsError if the label is taken."""
        label, value, description = _clean(label), _clean(value), _clean(description)
        with self.transaction(), self._keeping_room(label):
            try:
                block = self.core_memory.add(label, value, limit=limit, description=description, read_only=read_only)
            except BudgetError as exc:
                raise ContextWindowError(f"block {label!r} does not fit in the context window: {exc}") from None
            self._memory_changed()
        return block

    def update_block(self, label: str, *, value: str | None = None, limit: int | None = None,
                     description: str | None = None, read_only: bool | None = None) -> Block:
        """Change any field of a block, as its developer (read-only does not apply; the limit does)."""
        label, value, description = _clean(label), _clean(value), _clean(description)
        with self.transaction(), self._keeping_room(label):
            try:
                block = self.core_memory.update(label, value=value, limit=limit, description=description,
                                                read_only=read_only)
            except BudgetError as exc:
                raise ContextWindowError(f"block {label!r} would not fit in the context window: {exc}") from None
            self._memory_changed()
        return block

    @contextlib.contextmanager
    def _keeping_room(self, label: str) -> Iterator[None]:
        """ContextWindowError (the transaction rolls back) if a block change grows the pinned
        pages so far that the queue keeps less than a step needs (:data:`MIN_QUEUE`)."""
        def pinned() -> int:
            t = self.ctx.stats().tokens
            return int(t[Region.SYSTEM] + t[Region.CORE])
        before = pinned()
        yield
        after, budget = pinned(), self.ctx.config.budget
        left = budget - after - summary_cap(budget, self.config.summary_share)
        if after > before and left < MIN_QUEUE:
            raise ContextWindowError(f"block {label!r} would leave the queue {max(left, 0)} tokens of the context "
                                     f"window; a step needs at least {MIN_QUEUE}")

    def delete_block(self, label: str) -> None:
        """Remove a core memory block (NotFoundError if none)."""
        with self.transaction():
            self.core_memory.delete(label)
            self._memory_changed()

    def reply(self, message: str) -> None:
        """A message for the user (send_message); it reaches the caller in ``CallRecord.replies``."""
        if self._replies is not None:
            self._replies.append(message)

    def archival_insert(self, content: str, tags: Sequence[str] = (), *,
                        valid_from: _dt.datetime | None = None, timestamp: _dt.datetime | None = None) -> Saved:
        """Save text to archival storage (split into passages); their page ids, as a :class:`Saved`
        whose ``already`` counts the passages that were stored before (archival storage keeps
        an exact text once, adding the new tags to it). ``timestamp``: default the turn's time;
        the passages hold from ``valid_from`` (default: that time)."""
        with self.transaction():
            before = self.stats.archival
            ids = Saved(self.store.archival.insert(content, tags=tags, timestamp=timestamp or self.now,
                                                   valid_from=valid_from))
            self._memory_changed()
            ids.already = len(set(ids)) - (self.stats.archival - before)
        return ids

    def archival_insert_many(self, texts: Sequence[str], tags: Sequence[str] = (),
                             timestamp: _dt.datetime | None = None, *,
                             valid_from: _dt.datetime | Sequence[_dt.datetime] | None = None) -> list[list[int]]:
        """Save several texts at once (one transaction, one embedding batch); each one's page ids.
        ``timestamp`` defaults to the current turn's time; ``valid_from`` (one time, or one per
        text) to ``timestamp``."""
        with self.transaction():
            ids = self.store.archival.insert_many(texts, tags=tags, timestamp=timestamp or self.now,
                                                  valid_from=valid_from)
            self._memory_changed()
        return ids

    @_one_caller
    def archival_get(self, page_id: int) -> Passage:
        """The archival passage with this page id, with its interval (NotFoundError if none)."""
        return self.store.archival.get(page_id)

    def supersede(self, old_ids: Sequence[int], by: int | None = None, *,
                  at: _dt.datetime | None = None) -> list[int]:
        """Mark the archival passages ``old_ids`` as no longer holding from ``at`` (default: the
        current turn's time), replaced by the passage ``by`` (None: nothing replaced them); the
        ids changed (already superseded ones are left as they are). Nothing is deleted: they
        stay searchable, after current facts, shown with their interval (a resident one's line
        in the working set too). Traced as ``{"e": "supersede"}``. Raises as
        :meth:`vmem.storage.ArchivalStore.supersede` does, changing nothing."""
        when = at if at is not None else self.now
        old = list(old_ids) if not isinstance(old_ids, (int, str)) else old_ids
        with self.transaction():
            changed = self.store.archival.supersede(old, by, when)  # type: ignore[arg-type]
            self.trace.write({"e": "supersede", "old": [int(i) for i in old], "by": by,  # type: ignore[union-attr]
                              "at": when.timestamp(), "changed": changed})
            if changed:
                self._memory_changed()
                resident = [p for p in changed if p in self.workset.lines]
                if resident:
                    self.workset.rewrite({p.id: passage_line(p) for p in self.store.archival.get_many(resident)})
        return changed

    @_one_caller
    def archival_search(self, query: str, *, tags: Sequence[str] | None = None,
                        tags_match: Literal["any", "all"] = "any",
                        start: _dt.date | None = None, end: _dt.date | None = None,
                        as_of: _dt.datetime | None = None, page: int = 0) -> SearchPage[Passage]:
        """One page of a hybrid archival search (``page_size`` results): current facts first, or
        with ``as_of`` only the facts that held then."""
        return self.store.archival.search(query, mode="hybrid", tags=tags, tags_match=tags_match, start=start,
                                          end=end, as_of=as_of, page=page, page_size=self.config.page_size)

    @_one_caller
    def conversation_search(self, query: str | None, *, roles: Sequence[str] | None = None,
                            start: _dt.date | None = None, end: _dt.date | None = None,
                            page: int = 0) -> SearchPage[Message]:
        """One page of a recall search (``page_size`` results)."""
        return self.store.recall.search(query, roles=roles, start=start, end=end, page=page,
                                        page_size=self.config.page_size)

    def page_in(self, hits: Sequence[tuple[int, float, str]]) -> set[int]:
        """Page search hits ``(page, score, line)`` into the working set; the pages among them
        in the context now (admitted, or resident already)."""
        with self.transaction():
            admitted = self.workset.page_in(hits)
            if hits:
                self._session.dirty = True
        return set(admitted) | self.workset.resident(h[0] for h in hits)

    def prefetch(self, text: str) -> list[int]:
        """Page in the archival passages and recall messages most relevant to ``text``
        (``config.prefetch`` of each), as the kernel does before an LLM call; the pages admitted."""
        with self.transaction():
            hits = prefetch_hits(self.store, text, self.config.prefetch or 1, self.queue.pages())
            admitted = self.workset.page_in(hits)
            if hits:
                self._session.dirty = True
        return admitted

    def _sync_calibration(self) -> None:
        c, state = self.counter, self._state
        state.calibration, state.calibration_fixed, state.calibration_sums = c.calibration, c.fixed, list(c.sums)

    def _memory_changed(self) -> None:
        self._state.changed = self.now.isoformat(timespec="seconds")
        self.stats.archival_changed()
        self._session.dirty = True

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

    @_one_caller
    def context_map(self) -> ContextMap:
        """What a context map draws: the core's accounting and the tiers' sizes."""
        return ContextMap(self.ctx.stats(), self.ctx.config, self.ctx.status().state,
                          recall_messages=self.stats.recall, archival_passages=self.stats.archival)

    @_one_caller
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
        if not self._shared or self.read_only or self._tx.depth or not self.store.sync():
            return False
        self._reload_image()
        return True

    @property
    def lost_commits(self) -> int:
        """Committed transactions the store lost before this open (a WAL tail lost in a crash),
        as far as the count kept outside the database knows; 0 when none."""
        return self.store.lost_commits

    @_one_caller
    def digest(self) -> str:
        """A digest of the whole memory state: equal digests, equal memories."""
        messages = self.store.recall.get_many(make_page_id(PageKind.MESSAGE, i)
                                              for i in range(1, self.stats.recall + 1))
        passages: list[tuple[int, str, list[str], float]] = []
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


#: What the model reads when its edit of a shared block could not be applied.
SHARED_REFUSED = ("[vmem] Your last edit of the shared block {label!r} was not applied: {reason}. Another agent "
                  "changed the block first; it now shows their version. Edit it again if your change still matters.")


def _agent_name(location: str) -> str:
    """The name an agent goes by in shared stores' logs: its directory's, or its URL's ``agent``."""
    if is_url(location):
        return parse_qs(urlsplit(location).query).get("agent", [location])[0]
    return Path(location).name


def _clean(text: Any) -> Any:
    """A str made storable as UTF-8 (a lone surrogate becomes U+FFFD); anything else as it is."""
    return clean_text(text) if isinstance(text, str) else text


class _FailedCall(Exception):
    """Internal: a memory function call failed; its savepoint is rolled back."""

    def __init__(self, record: CallRecord) -> None:
        super().__init__(record.result)
        self.record = record


#: How many times an outermost transaction reloads a shared memory before it gives up with
#: BusyError (the store keeps the agent's lock from the stale check to the retry, so one does).
_FRESH_TRIES = 3


class _Fresh:
    """An outermost transaction of a memory in a shared store: when its store finds (under the
    agent's lock) that another process committed since, nothing was done yet; the memory
    reloads its image, still under that lock, and the transaction begins again in it."""

    __slots__ = ("_memory", "_cm")

    def __init__(self, memory: Memory) -> None:
        self._memory = memory
        self._cm: AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        memory = self._memory
        for _ in range(_FRESH_TRIES):
            cm = memory._tx.transaction()
            try:
                cm.__enter__()
            except StaleStoreError:  # the store holds the agent's lock for the reload and the retry
                try:
                    memory._reload_image()
                except BaseException:
                    memory.store.release()
                    raise
                continue
            self._cm = cm
            return None
        raise BusyError(f"{memory.location}: other processes kept changing this agent; "
                        f"{_FRESH_TRIES} reloads did not catch up")

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool | None:
        assert self._cm is not None
        return self._cm.__exit__(et, exc, tb)
