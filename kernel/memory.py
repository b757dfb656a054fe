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
``persistence``     the saved image; ``trace``: the event log
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
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from vmem import BudgetError, PageKind, PagedContext, Region, make_page_id, page_kind
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
    render_summary,
    render_workset,
    tools_digest,
)
from vmem.kernel.core_memory import CoreMemory
from vmem.kernel.drivers.toolcalls import parse_text_tool_calls
from vmem.kernel.errors import ContextWindowError, KernelError, MessageError, ReadOnlyError
from vmem.kernel.functions import CallRecord, MemoryFunction, as_tool_call, invoke, memory_function
from vmem.kernel.host import Saved
from vmem.kernel.invariants import check as check_invariants
from vmem.kernel.messages import check_order, normalise, pending_calls, shorten
from vmem.kernel.paging import WorkingSet, prefetch_hits
from vmem.kernel.journal import JournaledContext
from vmem.kernel.persistence import STATE_KEY, MemoryState, Saver, load_core, load_state
from vmem.kernel.pressure import QueueManager, Room
from vmem.kernel.queue import MessageQueue
from vmem.kernel.statistics import MemoryStatistics
from vmem.kernel.summary import SummaryRequest, asummarize, summarize
from vmem.kernel.tokens import TokenCounter
from vmem.kernel.trace import Trace
from vmem.kernel.transaction import CoreMarks, Transactions
from vmem.storage import Block, MemoryDir, Message, NotFoundError, Passage, SearchPage, VmemStorageError

__all__ = ["Context", "Memory", "Prepared", "Summarizer"]

Summarizer = Callable[[SummaryRequest], Any]
"""``(messages) -> str`` (or an awaitable of it, with :meth:`Memory.acontext`); a Driver works too."""


_REGION_NAMES = (("system", Region.SYSTEM), ("core", Region.CORE), ("summary", Region.SUMMARY),
                 ("queue", Region.QUEUE), ("workset", Region.WORKSET))


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _aware(t: _dt.datetime | None) -> _dt.datetime | None:
    """``t`` checked: a message's time must say its time zone (MessageError if not)."""
    if t is not None and (not isinstance(t, _dt.datetime) or t.tzinfo is None):
        raise MessageError(f"a message's timestamp must be a timezone-aware datetime, got {t!r}")
    return t


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
    :meth:`close` (or use it as a context manager). Not thread-safe: one caller at a time
    (another thread or task gets :class:`BusyError`).
    """

    store: MemoryDir  #: the directory: recall, archival, blocks, event log
    ctx: PagedContext  #: the C core: page table and token accounting of the main context
    config: MemoryConfig
    functions: dict[str, MemoryFunction]  #: what the LLM may call, by name
    tools: list[dict[str, Any]]  #: their OpenAI tool schemas
    read_only: bool
    clock: Callable[[], _dt.datetime]

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
        path = Path(path)
        made_dir = not path.exists()
        was_empty = made_dir or (path.is_dir() and not any(path.iterdir()))
        store = MemoryDir.open(path, embedder=embedder, archival=archival, durability=durability)
        try:
            if STATE_KEY in store.state:
                raise KernelError(f"{path} holds an agent already: use open()")
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
        or written, and every call that would change the memory raises ReadOnlyError.
        """
        store = MemoryDir.open(path, embedder=embedder, archival=archival, create=False,
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
            with MemoryDir.open(path, create=False, read_only=True) as store:
                return STATE_KEY in store.state
        except VmemStorageError:
            return False

    @classmethod
    def _assemble(cls, store: MemoryDir, state: MemoryState, functions: Iterable[Any],
                  clock: Callable[[], _dt.datetime] | None, *, fresh: bool, read_only: bool = False) -> "Memory":
        self = object.__new__(cls)
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
        self._replies: list[str] | None = None
        if fresh:
            self.ctx = JournaledContext(**self.budget.core_config())
            self._saver = Saver(store)
        else:
            self.ctx, entries, size = load_core(store)
            self._saver = Saver(store, entries=entries, size=size, summary=state.summary)
        self.queue = MessageQueue(self.ctx)
        self.stats = MemoryStatistics(store, self.ctx, self.counter)
        self.core_memory = CoreMemory(self.ctx, store.blocks, self.counter, self.trace, state)
        self.workset = WorkingSet(self.ctx, self.counter, self.trace, state)
        self.pressure = QueueManager(self.ctx, self.queue, state, self.config, self.counter, store.recall,
                                     self.trace, self._enqueue)
        self._tx = Transactions(store, [CoreMarks(self.ctx), state, self.queue, self.core_memory, self.trace,
                                        self.stats, self._session, self._saver],
                                check=self._writable, begin=self._catch_up, persist=self._persist)
        if not read_only:
            store.blocks.own("vmem Memory")
        if fresh:
            self._lay_out()
        else:
            self._reload()
        return self

    def _lay_out(self) -> None:
        """A new memory's pinned pages: system, statistics, one per block; and the summary's."""
        ctx, count = self.ctx, self.counter.count
        blocks = self.store.blocks.all()
        need = count(self.system) + self.instructions_tokens() + sum(count(render_block(b)) for b in blocks)
        if need > ctx.config.budget:
            raise ContextWindowError(
                f"the system and memory instructions and core memory alone need {need} tokens; the window's "
                f"budget is {ctx.config.budget} (window {self.config.window} - output reserve "
                f"{self.config.reserve_output} - tool schemas {self.budget.tools_tokens})")
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

    def close(self) -> None:
        """Release the directory (everything was saved as each change committed)."""
        if not self.store.closed:
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
        return self._tx.transaction()

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
        meta = {k: msg[k] for k in ("tool_calls", "tool_call_id", "name") if k in msg}
        tokens = self.counter.count(page_text(msg))
        if self.pressure.oversize(tokens):
            return self._append_oversize(msg, meta, tokens, group)
        return self._enqueue(role, msg["content"] or "", meta, group, tokens)

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
                       summary: str = "") -> list[int]:
        """Store an imported agent's older history: messages already out of its context window.

        For a new memory, before any message: each ``(message, timestamp)`` pair goes to
        recall storage verbatim and in order (searchable with conversation_search, never
        queued), checked against the chat protocol as :meth:`append` checks it. With a
        ``summary`` (the recursive summary of those messages, as the agent's previous host
        made it) they count as evicted and the summary becomes the memory's; without one they
        are stored-only history. Returns their page ids. All or nothing: KernelError if the
        memory holds messages already or a summary comes without history, MessageError for
        a message that breaks the protocol, ContextWindowError if the summary does not fit.
        """
        items = [(normalise(m), _aware(t)) for m, t in history]
        if summary and not items:
            raise KernelError("import_history: a summary needs the messages it summarises")
        with self.transaction():
            if self.stats.recall:
                raise KernelError("import_history: the memory holds messages already; older history comes first")
            done: list[dict[str, Any]] = []
            pages = []
            for msg, at in items:
                check_order(msg, pending_calls(done))
                done.append(msg)
                meta = {k: msg[k] for k in ("tool_calls", "tool_call_id", "name") if k in msg}
                page = self.store.recall.append(msg["role"], msg["content"] or "", timestamp=at, meta=meta or None)
                self.stats.appended(page)
                pages.append(page)
            if pending_calls(done):
                raise MessageError(f"import_history: tool call(s) {', '.join(pending_calls(done))} have no result")
            state = self._state
            if summary:
                state.evicted += len(pages)
                state.summary = summary
                self.ctx.resize(SUMMARY_PAGE, self.pressure.summary_tokens())
                used, budget = self.ctx.stats().used, self.ctx.config.budget
                if used > budget:
                    raise ContextWindowError(f"the imported summary does not fit in the context window: with it "
                                             f"the context needs {used} tokens of a budget of {budget}")
            else:
                state.stored_only += len(pages)
            self.trace.write({"e": "history", "messages": len(pages), "summary": summary})
            self._session.dirty = True
        return pages

    def _append_oversize(self, msg: dict[str, Any], meta: dict[str, Any], tokens: int, group: int) -> int:
        """Keep a message too large for the queue verbatim in recall storage only; a user message
        is summarised into the queue at the next prepare(), any other is queued shortened now."""
        page = self.store.recall.append(msg["role"], msg["content"] or "", timestamp=self.now,
                                        meta={**meta, "kind": "oversize"})
        self.stats.appended(page)
        self._state.stored_only += 1
        self._session.dirty = True
        self.trace.write({"e": "oversize", "role": msg["role"], "page": page, "tokens": tokens})
        if msg["role"] == "user":
            self._state.pending.append(page)
            return page
        short = shorten(msg, max(64, self.ctx.config.budget // 8), self.counter.count, page)
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

    def block(self, label: str) -> Block:
        """A core memory block (vmem.storage.NotFoundError if none)."""
        return self.core_memory.get(label)

    def block_labels(self) -> list[str]:
        """The core memory blocks' labels, in creation order."""
        return self.core_memory.labels()

    def set_block(self, label: str, value: str) -> Block:
        """Set a block's value, as the agent does (read-only and the limit apply), all or nothing."""
        with self.transaction():
            block = self.core_memory.edit(label, value)
            self._memory_changed()
        return block

    def add_block(self, label: str, value: str = "", *, limit: int = 2000, description: str = "",
                  read_only: bool = False) -> Block:
        """Add a core memory block (a pinned page of the context). ContextWindowError if the
        window cannot hold it; BlockExistsError if the label is taken."""
        with self.transaction():
            try:
                block = self.core_memory.add(label, value, limit=limit, description=description, read_only=read_only)
            except BudgetError as exc:
                raise ContextWindowError(f"block {label!r} does not fit in the context window: {exc}") from None
            self._memory_changed()
        return block

    def update_block(self, label: str, *, value: str | None = None, limit: int | None = None,
                     description: str | None = None, read_only: bool | None = None) -> Block:
        """Change any field of a block, as its developer (read-only does not apply; the limit does)."""
        with self.transaction():
            try:
                block = self.core_memory.update(label, value=value, limit=limit, description=description,
                                                read_only=read_only)
            except BudgetError as exc:
                raise ContextWindowError(f"block {label!r} would not fit in the context window: {exc}") from None
            self._memory_changed()
        return block

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
                        timestamp: _dt.datetime | None = None) -> Saved:
        """Save text to archival storage (split into passages); their page ids, as a :class:`Saved`
        whose ``already`` counts the passages that were stored before (archival storage keeps
        an exact text once, adding the new tags to it). ``timestamp``: default the turn's time."""
        with self.transaction():
            before = self.stats.archival
            ids = Saved(self.store.archival.insert(content, tags=tags, timestamp=timestamp or self.now))
            self._memory_changed()
            ids.already = len(set(ids)) - (self.stats.archival - before)
        return ids

    def archival_insert_many(self, texts: Sequence[str], tags: Sequence[str] = (),
                             timestamp: _dt.datetime | None = None) -> list[list[int]]:
        """Save several texts at once (one transaction, one embedding batch); each one's page ids.
        ``timestamp`` defaults to the current turn's time."""
        with self.transaction():
            ids = self.store.archival.insert_many(texts, tags=tags, timestamp=timestamp or self.now)
            self._memory_changed()
        return ids

    def archival_search(self, query: str, *, tags: Sequence[str] | None = None, tags_match: str = "any",
                        start: _dt.date | None = None, end: _dt.date | None = None,
                        page: int = 0) -> SearchPage[Passage]:
        """One page of a hybrid archival search (``page_size`` results)."""
        return self.store.archival.search(query, mode="hybrid", tags=tags, tags_match=tags_match, start=start,
                                          end=end, page=page, page_size=self.config.page_size)

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

    def log(self, event: dict[str, Any]) -> None:
        """Add an event to the trace (it commits with the running transaction, or now)."""
        with self.transaction():
            self.trace.write(event)

    # ================================================================ inspection

    def context_map(self) -> ContextMap:
        """What a context map draws: the core's accounting and the tiers' sizes."""
        return ContextMap(self.ctx.stats(), self.ctx.config, self.ctx.status().state,
                          recall_messages=self.stats.recall, archival_passages=self.stats.archival)

    def check(self) -> None:
        """Verify every invariant of the memory (:mod:`vmem.kernel.invariants`); raises
        InvariantError naming the broken one."""
        check_invariants(self)

    def digest(self) -> str:
        """A digest of the whole memory state: equal digests, equal memories."""
        messages = self.store.recall.get_many(make_page_id(PageKind.MESSAGE, i)
                                              for i in range(1, self.stats.recall + 1))
        passages = []
        page = 0
        while True:
            found = self.store.archival.search(None, page=page, page_size=500)
            passages.extend((p.id, p.text, sorted(p.tags), p.timestamp.timestamp()) for p in found.items)
            if not found.has_next:
                break
            page += 1
        payload = {
            "state": self._state.to_dict(),
            "core": self.ctx.canonical(),
            "blocks": [[b.label, b.value, b.limit, b.description, b.read_only] for b in self.store.blocks.all()],
            "recall": [[m.id, m.role, m.content, m.timestamp.timestamp(), m.meta] for m in messages],
            "archival": sorted(passages),
            "context": list(self.compile()),
        }
        return hashlib.sha256(msgpack.packb(payload, use_bin_type=True)).hexdigest()


class _FailedCall(Exception):
    """Internal: a memory function call failed; its savepoint is rolled back."""

    def __init__(self, record: CallRecord) -> None:
        super().__init__(record.result)
        self.record = record
