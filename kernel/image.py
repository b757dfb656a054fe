"""MemoryImage: one agent's memory as it lives in this process, its parts wired over a store.

:class:`vmem.kernel.Memory` is built in layers, one concept per module::

    MemoryImage     (image)         the parts wired over the store; laid out for a new memory,
                                    reloaded at open, rebuilt when another process changed it;
                                    the properties; transactions
    Conversation    (conversation)  messages in, the compiled context out, memory functions run
    Tiers           (tiers)         core memory blocks, archival passages, searches, paging in
    Memory          (memory)        create/open/close, inspection: all of the above

This module holds the base: what every layer reads (the parts, the saved state, the session),
how the parts are assembled (:meth:`MemoryImage._assemble`, used by ``Memory.create`` and
``Memory.open``), and the transaction every public call that changes the memory runs in.

Interface (for the layers above; the public API is :class:`vmem.kernel.Memory`'s)::

    MemoryImage._assemble(store, state, functions, clock, fresh=..., read_only=..., into=None)
    image.transaction(); image.savepoint()         # all or nothing (vmem.kernel.transaction)
    image._enqueue(role, content, meta, group, tokens)   # recall storage + the queue
    image._memory_changed()                        # "memory last changed", the tiers' counts
    one_caller(method)                             # a public read under the memory's gate
    storable(text)                                 # a str made storable as UTF-8
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import numpy as np

from vmem import PageKind, Region, page_kind
from vmem.kernel.budget import Budget
from vmem.kernel.builtins import BUILTINS
from vmem.kernel.config import MemoryConfig
from vmem.kernel.context import (
    INSTRUCTIONS_PAGE,
    STATS_PAGE,
    SUMMARY_PAGE,
    SYSTEM_PAGE,
    RequestDigest,
    chat_message,
    message_line,
    page_text,
    passage_line,
    render_block,
    render_stats,
    tools_digest,
)
from vmem.kernel.core_memory import CoreMemory
from vmem.kernel.errors import BusyError, ContextWindowError, ReadOnlyError
from vmem.kernel.functions import MemoryFunction, memory_function
from vmem.kernel.journal import JournaledContext
from vmem.kernel.messages import pending_calls
from vmem.kernel.paging import WorkingSet
from vmem.kernel.persistence import MemoryState, Saver, load_core, load_state
from vmem.kernel.pressure import MIN_QUEUE, QueueManager, minimum_budget, summary_cap
from vmem.kernel.queue import MessageQueue
from vmem.kernel.shared_blocks import SharedBlocks
from vmem.kernel.statistics import MemoryStatistics
from vmem.kernel.tokens import TokenCounter
from vmem.kernel.trace import Trace
from vmem.kernel.transaction import CoreMarks, Transactions
from vmem.storage import Message, NotFoundError, Store
from vmem.storage.location import is_url
from vmem.storage.postgres import PgStore
from vmem.storage.postgres_db import StaleStoreError
from vmem.text import clean_text

__all__ = ["MemoryImage", "agent_name", "one_caller", "storable"]


def _utcnow() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


_F = TypeVar("_F", bound=Callable[..., Any])
_M = TypeVar("_M", bound="MemoryImage")


def agent_name(location: str) -> str:
    """The name an agent goes by in shared stores' logs: its directory's, or its URL's ``agent``."""
    if is_url(location):
        return parse_qs(urlsplit(location).query).get("agent", [location])[0]
    return Path(location).name


def one_caller(method: _F) -> _F:
    """A public read taken under the memory's gate: BusyError while another thread or task runs a
    step or call on it (it would read half-done state), re-entered freely by the one running."""
    @functools.wraps(method)
    def guarded(self: MemoryImage, *args: Any, **kwargs: Any) -> Any:
        with self._tx.gate:
            return method(self, *args, **kwargs)
    return guarded  # type: ignore[return-value]  # functools.wraps keeps the signature mypy cannot see


def storable(text: Any) -> Any:
    """A str made storable as UTF-8 (a lone surrogate becomes U+FFFD); anything else as it is."""
    return clean_text(text) if isinstance(text, str) else text


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


class MemoryImage:
    """The parts of one agent's memory in this process, over its store (see the module's header).

    Not made directly: :meth:`vmem.kernel.Memory.create` and :meth:`vmem.kernel.Memory.open`
    assemble it."""

    store: Store  #: the directory or database: recall, archival, blocks, event log
    ctx: JournaledContext  #: the C core: page table and token accounting of the main context (journaled)
    config: MemoryConfig
    functions: dict[str, MemoryFunction]  #: what the LLM may call, by name
    tools: list[dict[str, Any]]  #: their OpenAI tool schemas
    read_only: bool
    clock: Callable[[], _dt.datetime]
    # the parts, wired by _assemble (one concept per module, see vmem.kernel.memory's table)
    counter: TokenCounter
    budget: Budget
    trace: Trace
    queue: MessageQueue
    stats: MemoryStatistics
    core_memory: CoreMemory
    shared_blocks: SharedBlocks
    workset: WorkingSet
    pressure: QueueManager
    _state: MemoryState
    _session: _Session
    _saver: Saver
    _tx: Transactions
    _shared: PgStore | None  #: the store, when other processes may change it between transactions
    _tools_digest: bytes
    _digest: RequestDigest
    _replies: list[str] | None

    # ================================================================ assembly

    @classmethod
    def _assemble(cls: type[_M], store: Store, state: MemoryState, functions: Iterable[Any],
                  clock: Callable[[], _dt.datetime] | None, *, fresh: bool, read_only: bool = False,
                  into: _M | None = None) -> _M:
        """Wire the parts over ``store`` from its saved ``state`` (``fresh``: a new memory, laid
        out; else reloaded), into a new object or ``into`` an existing one (a reload)."""
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
                                          agent=agent_name(str(store.path)), trace=self.trace,
                                          home=store.database_url if isinstance(store, PgStore) else None)
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
        self._shared = store if isinstance(store, PgStore) else None
        if self._shared is not None and not read_only:
            self._shared.strict = True
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
        changed = self.shared_blocks.sync() if not self.read_only else []  # unapplied edits; others' edits
        if changed:
            self._session.dirty = True
        self.core_memory.load(label for label, _, _ in changed)
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

    # ================================================================ properties

    @property
    def location(self) -> str:
        """Where the memory lives: its directory, or its PostgreSQL URL (without a password)."""
        return str(self.store.path)

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
        if self._shared is not None and not self._tx.depth:
            return _Fresh(self, self._shared)
        return self._tx.transaction()

    def _reload_image(self) -> None:
        """Another process changed this agent since this object last saw it (a shared store):
        rebuild the in-memory image from the store, as :meth:`open` does, in one snapshot."""
        assert self._shared is not None, "only a shared store changes under its memory"
        with self._shared.snapshot():
            type(self)._assemble(self.store, load_state(self.store), list(self.functions.values()), self.clock,
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

    def _sync_calibration(self) -> None:
        c, state = self.counter, self._state
        state.calibration, state.calibration_fixed, state.calibration_sums = c.calibration, c.fixed, list(c.sums)

    def _memory_changed(self) -> None:
        self._state.changed = self.now.isoformat(timespec="seconds")
        self.stats.archival_changed()
        self._session.dirty = True


#: How many times an outermost transaction reloads a shared memory before it gives up with
#: BusyError (the store keeps the agent's lock from the stale check to the retry, so one does).
_FRESH_TRIES = 3


class _Fresh:
    """An outermost transaction of a memory in a shared store: when its store finds (under the
    agent's lock) that another process committed since, nothing was done yet; the memory
    reloads its image, still under that lock, and the transaction begins again in it."""

    __slots__ = ("_memory", "_store", "_cm")

    def __init__(self, memory: MemoryImage, store: PgStore) -> None:
        self._memory = memory
        self._store = store
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
                    self._store.release()
                    raise
                continue
            self._cm = cm
            return None
        raise BusyError(f"{memory.location}: other processes kept changing this agent; "
                        f"{_FRESH_TRIES} reloads did not catch up")

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool | None:
        assert self._cm is not None
        return self._cm.__exit__(et, exc, tb)
