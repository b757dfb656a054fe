"""Memory statistics: the tiers' sizes, and the statistics message the context shows.

The message (``<memory_statistics>``) tells the LLM how much lies outside its window:
messages in recall storage (and how many were evicted), passages in archival storage, when
memory last changed, and the time. Counting is kept off the step's path: recall messages
are counted as they are appended (the store's own append counter tells whether someone else
appended through its API), archival passages are recounted only after archival storage
changed (its write counter moved).
"""

from __future__ import annotations

import datetime as _dt

from vmem import PagedContext
from vmem.kernel.context import STATS_PAGE, render_stats
from vmem.kernel.persistence import MemoryState
from vmem.kernel.tokens import TokenCounter
from vmem.storage import Store

__all__ = ["MemoryStatistics"]


class MemoryStatistics:
    """The tiers' counts and the statistics page (its text, its tokens in the core)."""

    __slots__ = ("_store", "_ctx", "_counter", "recall", "_recall_seen", "_archival", "_archival_seen", "text")

    def __init__(self, store: Store, ctx: PagedContext, counter: TokenCounter) -> None:
        self._store = store
        self._ctx = ctx
        self._counter = counter
        self.recall = len(store.recall)  #: messages in recall storage
        self._recall_seen = store.recall.appends  # the store's append counter when last counted
        self._archival: int | None = None  # recounted when asked after a change
        self._archival_seen = -1  # store.archival.changes when it was counted
        self.text = ""  #: the statistics message as the context shows it

    @property
    def archival(self) -> int:
        """Passages in archival storage."""
        changes = self._store.archival.changes  # anyone's inserts and deletes, ours or not
        if self._archival is None or changes != self._archival_seen:
            self._archival, self._archival_seen = len(self._store.archival), changes
        return self._archival

    def appended(self, page: int) -> None:
        """A message was appended to recall storage (by the memory)."""
        self.recall += 1
        self._recall_seen += 1

    def archival_changed(self) -> None:
        """Passages were inserted or deleted: recount when next asked."""
        self._archival = None

    def catch_up(self) -> int:
        """Messages appended to recall storage through the store's own API since last counted."""
        new = self._store.recall.appends - self._recall_seen
        if new:
            self.recall += new
            self._recall_seen += new
        return new

    def refresh(self, state: MemoryState, now: _dt.datetime) -> bool:
        """Re-render the message; resize its page if its tokens changed (True then)."""
        text = render_stats(recall=self.recall, archival=self.archival, evicted=state.evicted,
                            changed=state.changed, now=now)
        if text == self.text:
            return False
        self.text = text
        tokens = self._counter.count(text)
        if self._ctx.info(STATS_PAGE).tokens == tokens:
            return False
        self._ctx.resize(STATS_PAGE, tokens)
        return True

    # ------------------------------------------------------------ transactions (a Participant)

    def mark(self, level: int) -> tuple[int, int, int | None, str, int]:
        return self.recall, self._recall_seen, self._archival, self.text, self._store.recall.appends

    def restore(self, mark: tuple[int, int, int | None, str, int]) -> None:
        self.recall, self._recall_seen, self._archival, self.text, appends = mark
        self._store.recall.appends = appends  # the rolled-back appends never happened

    def commit(self) -> None:
        pass
