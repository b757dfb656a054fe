"""Paging: search hits paged into the working set (page faults and prefetch).

An explicit page fault is a memory function (archival_memory_search, conversation_search)
whose hits are paged in; prefetch does the same before an LLM call, without one, for the
pages most relevant to the latest user message. Both go through :meth:`WorkingSet.page_in`:
a hit not known to the core is registered as a stored page (region OUT), then the core's
admission (``vm_admit``) touches the resident ones and admits the rest within the working
set's own budget, evicting by one score (LRU or LFU). Pages that end up not resident are
dropped from the core again: storage holds them.

The working set is compiled after the queue as one message of lines, in admission order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from vmem import BudgetError, PagedContext, Region
from vmem.kernel.context import message_line, passage_line
from vmem.kernel.persistence import MemoryState
from vmem.kernel.tokens import TokenCounter
from vmem.kernel.trace import Trace
from vmem.storage import Store

__all__ = ["Hit", "WorkingSet", "prefetch_hits"]

Hit = tuple[int, float, str]
"""A search hit to page in: ``(page id, score, the line the working set shows)``."""


class WorkingSet:
    """The working set's lines (``MemoryState.workset``: page -> line, in admission order)
    beside the core's admission."""

    __slots__ = ("_ctx", "_counter", "_trace", "_state")

    def __init__(self, ctx: PagedContext, counter: TokenCounter, trace: Trace, state: MemoryState) -> None:
        self._ctx = ctx
        self._counter = counter
        self._trace = trace
        self._state = state

    @property
    def lines(self) -> dict[int, str]:
        """page -> line, in admission order."""
        return self._state.workset

    def page_in(self, hits: Sequence[Hit]) -> list[int]:
        """Page ``hits`` into the working set; return the pages admitted (resident ones are touched)."""
        if not hits:
            return []
        ctx = self._ctx
        new = {page: self._counter.count(line)
               for (page, _, line), region in zip(hits, ctx.regions(h[0] for h in hits)) if region is None}
        if new:
            ctx.add_many(np.fromiter(new, dtype=np.uint64, count=len(new)),
                         np.fromiter(new.values(), dtype=np.uint32, count=len(new)), Region.OUT)
        ids = np.fromiter((h[0] for h in hits), dtype=np.uint64, count=len(hits))
        scores = np.fromiter((h[1] for h in hits), dtype=np.float32, count=len(hits))
        admission = ctx.admit(ids, scores)
        evicted = admission.evicted.tolist()
        for page in evicted:
            self.lines.pop(page, None)
        admitted: list[int] = admission.admitted.tolist()
        lines = {h[0]: h[2] for h in hits}
        for page in admitted:
            self.lines[page] = lines[page]
        pages = [h[0] for h in hits]
        out = [p for p, region in zip(pages, ctx.regions(pages)) if region is Region.OUT] + evicted
        if out:
            ctx.remove_many(np.unique(np.array(out, dtype=np.uint64)))
        self._trace.write({"e": "pagein", "admitted": admitted, "evicted": evicted})
        return admitted

    def rewrite(self, lines: dict[int, str]) -> list[int]:
        """Show new ``lines`` (page -> line) for those of their pages in the working set (a passage
        superseded since it was paged in), each page re-accounted; a page whose longer line does
        not fit the core's budget leaves the working set (storage holds it). The pages rewritten."""
        done: list[int] = []
        gone: list[int] = []
        for page, line in lines.items():
            if page not in self.lines or self.lines[page] == line:
                continue
            try:
                self._ctx.resize(page, self._counter.count(line))
            except BudgetError:
                gone.append(page)
                continue
            self.lines[page] = line
            done.append(page)
        if gone:
            self._ctx.remove_many(np.array(gone, dtype=np.uint64))
            for page in gone:
                del self.lines[page]
        if done or gone:
            self._trace.write({"e": "rewrite", "pages": done, "evicted": gone})
        return done

    def resident(self, pages: Iterable[int]) -> set[int]:
        """Which of ``pages`` are in the main context now (any region)."""
        pages = list(pages)
        regions = self._ctx.regions(pages)
        return {p for p, region in zip(pages, regions) if region is not None and region is not Region.OUT}



#: How deep prefetch's hybrid search looks (vector and text candidates each) for its few pages:
#: one short page is all it reads, so it need not rank the 100 that keep a search's pages disjoint.
PREFETCH_DEPTH = 20
#: Pages of recall results prefetch reads at most to find messages that are not queued already.
PREFETCH_RECALL_PAGES = 8


def prefetch_hits(store: Store, text: str, k: int, queued: Iterable[int]) -> list[Hit]:
    """The ``k`` archival passages and ``k`` recall messages (not already queued) most relevant
    to ``text``, as hits scored by rank (archival first: 1/(r+1); recall: 0.5/(r+1)). Recall is
    searched ``with_neighbours``: the reply to a matching question comes in though it does not
    repeat the question's words (LoCoMo dev R@10 65.2 -> 75.4, docs/design.md)."""
    hits: list[Hit] = []
    for rank, hit in enumerate(store.archival.search(text, mode="hybrid", page_size=k, depth=PREFETCH_DEPTH).hits):
        hits.append((hit.item.id, 1.0 / (rank + 1), passage_line(hit.item)))
    queue = set(queued)
    recall: list[Any] = []
    size = 2 * k + 2  # most matches are not queued: one short page is the usual cost
    for page in range(PREFETCH_RECALL_PAGES):
        found = store.recall.search(text, page=page, page_size=size, with_neighbours=True)
        recall += [h for h in found.hits if h.item.id not in queue]
        if len(recall) >= k or page + 1 >= found.pages:
            break
    for rank, hit in enumerate(recall[:k]):
        hits.append((hit.item.id, 0.5 / (rank + 1), message_line(hit.item)))
    return hits
