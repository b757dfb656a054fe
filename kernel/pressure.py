"""Memory pressure: the queue manager's watermarks, flushes and recursive summary.

Before every LLM call the kernel makes room (:meth:`QueueManager.make_room`):

1. Oversize input first: a user message too large for the queue was stored whole in
   recall storage; its summary (folded like any flush) is queued in its place.
2. Warning watermark (MemGPT: 70% of the budget): one system alert per pressure episode,
   appended to the queue, telling the LLM to save what matters now. An episode ends when
   the context is back under the line, or at a flush.
3. Flush watermark (100%, or the provider's overflow error, ``force``): the core plans
   which queue pages to evict (about half the queue's tokens, oldest first; never a
   pinned page, never the last ``keep_last`` messages, never half a tool call and its
   results); their transcript is folded into the previous summary through the
   summarizer (:mod:`vmem.kernel.summary`); only then are they dropped from the core.
   Recall storage keeps every one of them.
4. Never loop: if the plan cannot free enough, the protected tail shrinks (never below the
   newest message and its group: a window too small for it was refused at create); if that
   cannot either, or the context is still over the budget after one flush, it raises
   ContextWindowError saying why.

Written sans-IO: ``make_room`` is a generator that yields summarizer requests and is sent
the summaries back (see :meth:`vmem.kernel.Memory.context` for the drivers of it).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vmem import EvictionError, PagedContext, Region, State
from vmem.kernel.config import MemoryConfig
from vmem.kernel.context import SUMMARY_PAGE, render_summary
from vmem.kernel.errors import ContextWindowError
from vmem.kernel.persistence import MemoryState
from vmem.kernel.queue import MessageQueue
from vmem.kernel.summary import Folded, SummaryRequest, fold, transcript
from vmem.kernel.tokens import TokenCounter
from vmem.kernel.trace import Trace
from vmem.storage import RecallStore

__all__ = ["ALERT", "MIN_QUEUE", "OVERSIZE", "QueueManager", "Room", "minimum_budget", "summary_cap"]

ALERT = (
    "Memory pressure: the context window is {pct:.0f}% full. Older messages will soon be evicted "
    "to recall storage behind a summary. Save anything important to core memory "
    "(core_memory_append / core_memory_replace) or archival memory (archival_memory_insert) now."
)
OVERSIZE = ("The user sent a message of about {tokens} tokens, too large for the context window; it is "
            "stored verbatim in recall storage ({page:#x}, find it with conversation_search). Its summary:\n"
            "{summary}")

MIN_QUEUE = 512
"""Tokens a window must leave for the queue and the working set beside the system instructions,
core memory, the statistics and the summary at its cap: a user message, an answer and its results
(each bounded to half of what is left), the alert; below it steps cannot be made to fit."""


CALL_TOKENS = 96
"""What one call of an answer may take in its group, about: the call (its arguments cut when the
answer is oversize) and its result or the result's note."""


def summary_cap(budget: int, share: float) -> int:
    """Tokens the summary may take in a ``budget``: its ``share`` with slack for the wording."""
    return max(64, int(1.5 * share * budget))


def minimum_budget(pinned: int, share: float) -> int:
    """The smallest budget that holds ``pinned`` tokens, the summary at its cap and :data:`MIN_QUEUE`."""
    budget = max(pinned + MIN_QUEUE + 64, -(-(pinned + MIN_QUEUE) * 1000 // int(1000 - 1500 * share)))
    while budget - pinned - summary_cap(budget, share) < MIN_QUEUE:
        budget += 1
    return budget


Enqueue = Callable[[str, str, dict[str, Any]], int]
"""``(role, content, meta) -> page``: append a message to recall storage and the queue."""


@dataclass
class Room:
    """What making room did."""

    alerted: bool = False  #: a memory-pressure alert was queued
    flushes: int = 0  #: flushes into the summary
    evicted: list[int] = field(default_factory=list)  #: queue pages evicted (all in recall storage)
    summary_requests: int = 0  #: summarizer calls made
    truncated: int = 0  #: summaries cut to their cap


class QueueManager:
    """Watermarks, flushes and the recursive summary over one memory's core and queue."""

    def __init__(self, ctx: PagedContext, queue: MessageQueue, state: MemoryState, config: MemoryConfig,
                 counter: TokenCounter, recall: RecallStore, trace: Trace, enqueue: Enqueue) -> None:
        self._ctx = ctx
        self._queue = queue
        self._state = state
        self._config = config
        self._counter = counter
        self._recall = recall
        self._trace = trace
        self._enqueue = enqueue

    @property
    def summary_cap(self) -> int:
        """Tokens the summary may take (its share of the budget, with slack for the wording)."""
        return summary_cap(self._ctx.config.budget, self._config.summary_share)

    def room(self) -> int:
        """Tokens the queue and the working set may use (the budget less system, core memory, summary)."""
        t = self._ctx.stats().tokens
        return self._ctx.config.budget - t[Region.SYSTEM] - t[Region.CORE] - t[Region.SUMMARY]

    def oversize(self, tokens: int) -> bool:
        """Whether a message of ``tokens`` is too large for the queue (over half of what the
        queue and working set may use), so it is stored whole and summarised instead."""
        return tokens > self.room() // 2

    def calls_that_fit(self) -> int:
        """Calls one answer may run so that its group (each call and its result, or the result's
        note) stays within half the room: at least 1 (:data:`CALL_TOKENS` each)."""
        return max(1, self.room() // 2 // CALL_TOKENS)

    def group_overflows(self, group: int, tokens: int) -> bool:
        """Whether adding ``tokens`` to an answer's atomic group of ``group`` tokens takes it over
        the bound one message has (half the room): a flush never splits a group, so one answer
        must leave room for the rest of the queue."""
        return group + tokens > self.room() // 2

    def make_room(self, force: bool = False) -> Generator[SummaryRequest, str, Room]:
        """Queue pending oversize summaries, alert at the warning line, flush over the flush line
        (or when ``force``d by a provider's overflow). Yields summarizer requests."""
        room = Room()
        state = self._state
        while state.pending:
            yield from self._summarize_oversize(state.pending[0], room)
            state.pending.pop(0)
        status = self._ctx.status()
        if status.state is State.OK and not force:
            state.alerted = False  # the pressure episode is over
            return room
        if not state.alerted and status.state is not State.OK:
            state.alerted = True
            room.alerted = True
            self._enqueue("system", ALERT.format(pct=100 * status.used / status.budget), {"kind": "alert"})
            self._trace.write({"e": "alert", "used": status.used, "budget": status.budget})
        if force or self._ctx.status().state is State.OVER:
            yield from self._flush(room, force)
        return room

    def _fold(self, previous: str, messages: list[dict[str, Any]], room: Room) -> Generator[SummaryRequest, str, Folded]:
        budget = self._ctx.config.budget
        words = max(50, int(budget * self._config.summary_share * 0.75))
        folded = yield from fold(previous, transcript(messages), budget=budget, words=words,
                                 cap=self.summary_cap, count=self._counter.count)
        room.summary_requests += folded.requests
        room.truncated += folded.truncated
        self._state.truncated += folded.truncated
        if folded.truncated:
            self._trace.write({"e": "summary_cut", "times": folded.truncated, "cap": self.summary_cap})
        if folded.empty:
            self._trace.write({"e": "summary_empty", "times": folded.empty})
        return folded

    def _summarize_oversize(self, page: int, room: Room) -> Generator[SummaryRequest, str, None]:
        msg = self._recall.get(page)
        folded = yield from self._fold("", [{"role": msg.role, "content": msg.content}], room)
        note = OVERSIZE.format(tokens=self._counter.count(msg.content), page=page, summary=folded.text)
        self._enqueue("system", note, {"kind": "oversize_summary", "page": page})

    def _flush(self, room: Room, forced: bool) -> Generator[SummaryRequest, str, None]:
        ctx, state = self._ctx, self._state
        status = ctx.status()
        need = status.need if status.state is State.OVER else 0
        if forced:  # the provider says the prompt is too long, whatever our count says
            q = ctx.stats().tokens[Region.QUEUE]
            need = max(need, q - int(self._config.target * q))
        # the new summary may grow up to its cap: what it may take is freed too
        headroom = max(0, self.summary_cap - self.summary_tokens()) if need else 0
        need += headroom
        over = status.used - int(ctx.config.flush * status.budget) + headroom
        keep = ctx.config.keep_last
        plan = None
        for keep_last in range(keep, 0, -1):  # the protected tail shrinks only when it alone overflows
            if keep_last != keep:
                ctx.configure(keep_last=keep_last)
            try:
                plan = self._plan(need, over, forced)
            finally:
                if keep_last != keep:
                    ctx.configure(keep_last=keep)
            if plan is not None:
                if keep_last != keep:
                    self._trace.write({"e": "tail_shrunk", "keep_last": keep_last})
                break
        if plan is None and self._state.workset:
            # the working set is a cache of search hits (storage holds them): it goes before the step fails
            self._drop_workset()
            yield from self._flush(room, forced)
            return
        if plan is None:
            raise ContextWindowError(
                f"cannot make room in the context window: even evicting all but the newest message frees too "
                f"little (need {need} tokens). Pinned pages, core memory and the newest message must fit; "
                f"raise the window or shrink them")
        evicted = plan.ids.tolist()
        if not evicted:
            return
        folded = yield from self._fold(state.summary, [self._queue.chat(p) for p in evicted], room)
        ctx.remove_many(plan.ids)  # out of the main context; recall storage keeps them
        self._queue.drop(evicted, ctx.pages(Region.QUEUE).tolist())
        state.summary = folded.text
        state.folds += 1
        state.evicted += len(evicted)
        state.alerted = False
        ctx.resize(SUMMARY_PAGE, self.summary_tokens())
        room.flushes += 1
        room.evicted.extend(evicted)
        self._trace.write({"e": "flush", "evicted": evicted, "freed": plan.freed, "folds": state.folds})
        after = ctx.status()
        if after.state is State.OVER:
            raise ContextWindowError(
                f"after evicting {len(evicted)} messages the context still needs {after.used} of "
                f"{after.budget} tokens (the summary is {self.summary_tokens()} tokens)")

    def _drop_workset(self) -> None:
        """Empty the working set (its pages leave the context; the stores keep them)."""
        pages = list(self._state.workset)
        self._ctx.remove_many(np.array(pages, dtype=np.uint64))
        self._state.workset = {}
        self._trace.write({"e": "workset_dropped", "pages": pages})

    def _plan(self, need: int, over: int, forced: bool) -> Any:
        """An eviction plan that frees ``need``, or all that can go if that gets the context under
        the flush line (``over`` tokens above it; forced: anything); None if neither can be had."""
        try:
            return self._ctx.plan_eviction(need)
        except EvictionError as exc:
            enough = exc.freeable > 0 if forced else 0 < over <= exc.freeable
            return self._ctx.plan_eviction(exc.freeable) if enough else None

    def summary_tokens(self) -> int:
        """Tokens of the summary page as compiled (0 while there is no summary)."""
        s = self._state
        return self._counter.count(render_summary(s.summary, s.evicted)) if s.summary else 0
