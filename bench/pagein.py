"""Page-in: look a query up in the page index and admit the hits into the working set.

Interface:

- :class:`Pager` -- binds a :class:`~vmem._core.PagedContext`, a page index
  (:class:`~vmem.index.PageIndex` or :class:`~vmem.index.ExactIndex`) and an
  :class:`~vmem.embed.Embedder`; ``pager.page_in(query)`` does one page-in.
- :func:`page_in` -- the same as a single call.
- :class:`PageInResult` -- what came in, what went out, and the candidates.

One page-in is::

    query (text)  --embedder-->  vector  --index.query(k)-->  candidates, similarities
        --drop pages the context does not know, and those below min_score-->
        ctx.admit(ids uint64, scores float32)  -->  admitted, evicted

The working-set policy (what fits, what is evicted) is the C core's; this
module only finds candidates and hands them over, best first, with their
similarity as the score (higher = more relevant). Candidates the context has
never registered (``ctx.add``) cannot be admitted: they are dropped and listed
in ``skipped`` (or raise, with ``strict=True``), so an index that holds pages
the context has not registered yet does not break a page-in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vmem.embed import Embedder
from vmem.index import PAD_ID, BaseIndex

__all__ = ["Pager", "PageInResult", "page_in"]


@dataclass(frozen=True)
class PageInResult:
    """The outcome of one page-in.

    ``candidates``/``scores``: what the index returned (uint64 ids and float32
    similarities, best first, after ``min_score``). ``admitted``: candidates
    that entered the working set in this call. ``evicted``: working-set pages
    pushed out to make room (coldest first). ``skipped``: candidates the
    context does not know. ``lookup_s``: seconds spent in the index query
    (embedding excluded); ``embed_s``: seconds spent embedding a text query.
    """

    candidates: np.ndarray
    scores: np.ndarray
    admitted: np.ndarray
    evicted: np.ndarray
    skipped: np.ndarray
    lookup_s: float
    embed_s: float


_EMPTY_IDS = np.zeros(0, dtype=np.uint64)


class Pager:
    """Page-in over one context, one index and (for text queries) one embedder.

    ``k``: candidates looked up per page-in. ``min_score``: candidates less
    similar than this are not paged in (None: no threshold; with cosine
    similarity, 0 means unrelated). ``strict``: raise KeyError for candidates
    the context has not registered instead of skipping them.

    The embedder's ``name`` must match the index's ``name`` when both are set:
    vectors from another model would be compared with the wrong ones.
    """

    def __init__(
        self,
        ctx: Any,
        index: BaseIndex,
        embedder: Embedder | None = None,
        *,
        k: int = 8,
        min_score: float | None = None,
        strict: bool = False,
    ) -> None:
        if k < 1:
            raise ValueError(f"Pager: k must be >= 1, got {k}")
        if embedder is not None:
            if embedder.dim != index.dim:
                raise ValueError(f"Pager: embedder {embedder.name!r} has dim {embedder.dim}, index has {index.dim}")
            if index.name is not None and embedder.name != index.name:
                raise ValueError(f"Pager: index was built by {index.name!r}, not by embedder {embedder.name!r}")
        self.ctx = ctx
        self.index = index
        self.embedder = embedder
        self.k = int(k)
        self.min_score = min_score
        self.strict = strict

    def vector(self, query: str | np.ndarray) -> np.ndarray:
        """The query as a ``(dim,)`` float32 vector (text goes through the embedder)."""
        if isinstance(query, str):
            if self.embedder is None:
                raise TypeError("Pager: a text query needs an embedder (or pass a vector)")
            return self.embedder.embed([query])[0]
        v = np.asarray(query, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.index.dim:
            raise ValueError(f"Pager: query vector has dim {v.shape[0]}, index has {self.index.dim}")
        return v

    def lookup(
        self, vector: np.ndarray, k: int | None = None, filter: Callable[[int], bool] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Index lookup only: ``(ids uint64, similarities float32)`` best first, at most k."""
        ids, sims = self.index.query(vector, self.k if k is None else k, filter=filter)
        ids, sims = ids[0], sims[0]
        keep = ids != PAD_ID
        if self.min_score is not None:
            keep &= sims >= self.min_score
        if not keep.all():
            ids, sims = ids[keep], sims[keep]
        return ids, sims

    def page_in(
        self,
        query: str | np.ndarray,
        *,
        k: int | None = None,
        filter: Callable[[int], bool] | None = None,
    ) -> PageInResult:
        """Look ``query`` up and admit its best candidates into the working set.

        ``query`` is a text (embedded with the pager's embedder) or a vector.
        ``filter`` restricts the candidates (called with a page id).
        """
        t0 = time.perf_counter()
        vec = self.vector(query)
        t1 = time.perf_counter()
        ids, sims = self.lookup(vec, k, filter)
        t2 = time.perf_counter()
        known = np.fromiter((int(i) in self.ctx for i in ids), dtype=bool, count=len(ids))
        if not known.all():
            if self.strict:
                missing = ids[~known]
                raise KeyError(f"Pager: page {int(missing[0]):#x} is in the index but not registered in the context")
            skipped = ids[~known]
            ids, sims = ids[known], sims[known]
        else:
            skipped = _EMPTY_IDS
        if len(ids):
            adm = self.ctx.admit(np.ascontiguousarray(ids, dtype=np.uint64), np.ascontiguousarray(sims, dtype=np.float32))
            admitted, evicted = adm.admitted, adm.evicted
        else:
            admitted, evicted = _EMPTY_IDS, _EMPTY_IDS
        return PageInResult(ids, sims, admitted, evicted, skipped, t2 - t1, t1 - t0)


def page_in(
    ctx: Any,
    index: BaseIndex,
    query: str | np.ndarray,
    *,
    embedder: Embedder | None = None,
    k: int = 8,
    min_score: float | None = None,
    filter: Callable[[int], bool] | None = None,
    strict: bool = False,
) -> PageInResult:
    """One page-in: ``Pager(ctx, index, embedder, k=k, ...).page_in(query, filter=filter)``."""
    return Pager(ctx, index, embedder, k=k, min_score=min_score, strict=strict).page_in(query, filter=filter)
