"""Ranking: hybrid fusion of a text and a vector ranking, and dialogue-context spreading.

Interface:

- :func:`fuse` -- merge a lexical ranking (FTS5 BM25) and a vector ranking into one.
- :func:`spread` -- let relevance flow between neighbouring turns of a conversation.

Hits are ``(page_id, score)`` pairs, best first, *higher score = better* (pass
``-bm25(...)`` for FTS5, whose raw bm25 is lower-is-better; similarities for
vectors).

Why not plain reciprocal-rank fusion: RRF gives both lists equal say and looks
only at ranks. On LoCoMo (bench/locomo_retrieval.py) BM25 is far stronger than
any embedder available offline, and a flat RRF of the two is *worse* than BM25
alone: the 20th vector hit counts as much as the 20th BM25 hit, though one is
noise and the other often the answer. :func:`fuse` therefore defaults to a
convex combination of normalised scores (the function Bruch, Gai and Ingber
found more effective and more robust than RRF, "An Analysis of Fusion Functions
for Hybrid Retrieval", ACM TOIS 2023), with the text side weighted 3:1:

- text scores are divided by the list's best score. BM25 has no fixed scale
  (it grows with the query's length and the terms' rarity) but its
  theoretical minimum is 0, so this is min-max with the true minimum;
- vector similarities are used as they are, clipped to [0, 1]. Cosine has a
  fixed scale (1 = same direction, 0 = unrelated: the expected cosine of
  unrelated signed-hash or neural embeddings), so it is *not* divided by the
  list's best: that would turn a weak best match (0.3) into a full-strength
  vote, and the vector side would then push noise into every result list;
- a page absent from a list gets 0 from it.

The weight ``text_weight = 0.75`` is chosen on what it means, not fitted: a page
that only the vector side found, with cosine ``c``, scores ``0.25 c`` and so
outranks the text matches scoring below ``c / 3`` of the best text match. The
lexical side keeps control of the head of the list (exact names, objects and
dates, weighted by IDF, are the most precise evidence a memory of conversation
snippets offers), and a strong vector match can still rescue a page whose
words differ from the question's. With a strong semantic embedder a user may
lower it. (Measured afterwards on LoCoMo with the built-in HashEmbedder,
hybrid recall@10 was 62.7 / 63.0 / 63.1 / 63.2 at text weights 0.6 / 0.7 /
0.75 / 0.8 and 61.8 at 0.5: a flat region, not a tuned optimum.)

Dialogue context: a reply is about what it replies to. "They were scared but we
reassured them" answers "How did the kids handle the accident?" and shares no
word with the question "How did Melanie's children handle the accident?". When
pages are turns of a conversation, :func:`spread` passes half of each page's
(normalised) score to the turn that follows it and a quarter to the turn before
it: a turn's relevance is evidence, weaker than a direct match, that its reply
is relevant (question -> answer is the commonest adjacency pair), and weaker
still for the turn that prompted it. Given which turns ask a question
(``asks``), the forward share flows only from those: a statement's
neighbour is no more likely to be relevant than any turn (on LoCoMo, spreading
from every turn displaced direct matches of temporal questions). The stores
choose their shares by leave-one-conversation-out (vmem/evaluation.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Container, Iterable, Mapping
from typing import Any

__all__ = ["fuse", "spread", "as_hits", "DEFAULT_TEXT_WEIGHT", "DEFAULT_RRF_K"]

#: Weight of the text (BM25) side in :func:`fuse`; the vector side gets the rest.
DEFAULT_TEXT_WEIGHT = 0.75
#: Rank constant of reciprocal-rank fusion (Cormack, Clarke and Buettcher, SIGIR 2009).
DEFAULT_RRF_K = 60

Hits = Iterable[tuple[int, float]]
Neighbour = Callable[[int], "int | None"] | Mapping[int, int]


def _clean(hits: Hits, who: str, depth: int | None) -> list[tuple[int, float]]:
    """Validate hits: int ids, float scores, first occurrence of an id kept, cut at depth."""
    out: list[tuple[int, float]] = []
    seen: set[int] = set()
    for item in hits:
        try:
            pid, score = item
            pid = int(pid)
            score = float(score)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{who}: hits must be (page_id, score) pairs, got {item!r}") from e
        if pid in seen:
            continue
        seen.add(pid)
        out.append((pid, score))
        if depth is not None and len(out) >= depth:
            break
    return out


def _normalise(hits: list[tuple[int, float]]) -> dict[int, float]:
    """Scores in [0, 1]: clipped at 0, divided by the list's best.

    Falls back to rank-based scores ``(n - r) / n`` when the scores carry no
    usable scale (all <= 0 or not finite), so that a caller's odd score
    convention degrades to rank fusion instead of to nonsense.
    """
    if not hits:
        return {}
    scores = [s for _, s in hits]
    finite = all(math.isfinite(s) for s in scores)
    top = max(scores) if finite else 0.0
    if finite and top > 0:
        return {pid: max(s, 0.0) / top for pid, s in hits}
    n = len(hits)
    return {pid: (n - r) / n for r, (pid, _) in enumerate(hits)}


def _order(scores: dict[int, float], first_seen: dict[int, int]) -> list[tuple[int, float]]:
    """Best first; ties go to the page seen earlier in the inputs, then the smaller id."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], first_seen.get(kv[0], 1 << 62), kv[0]))


def fuse(
    text_hits: Hits,
    vector_hits: Hits,
    *,
    text_weight: float = DEFAULT_TEXT_WEIGHT,
    method: str = "convex",
    rrf_k: int = DEFAULT_RRF_K,
    depth: int | None = None,
) -> list[tuple[int, float]]:
    """Merge a text ranking and a vector ranking into one hybrid ranking.

    ``text_hits`` and ``vector_hits`` are ``(page_id, score)`` pairs best first
    with higher = better (``-bm25()`` for FTS5; cosine similarity for vectors).
    Only the first ``depth`` hits of each are used when ``depth`` is given.

    ``method="convex"`` (default): ``text_weight * t + (1 - text_weight) * v``
    where ``t`` is the text score divided by the text list's best and ``v`` the
    vector similarity clipped to [0, 1] (see the module docstring for why, and
    for the meaning of the default weight 0.75).
    ``method="rrf"``: weighted reciprocal-rank fusion,
    ``text_weight / (rrf_k + rank_t) + (1 - text_weight) / (rrf_k + rank_v)``
    with 1-based ranks (``text_weight=0.5`` is plain RRF up to a factor).

    Returns ``[(page_id, score), ...]`` over the union of both lists, best
    first; ties go to the page that appeared earlier in either input.
    """
    if not (0.0 <= text_weight <= 1.0):
        raise ValueError(f"fuse: text_weight must be in [0, 1], got {text_weight!r}")
    if depth is not None and depth < 0:
        raise ValueError(f"fuse: depth must be >= 0, got {depth!r}")
    t = _clean(text_hits, "fuse(text_hits)", depth)
    v = _clean(vector_hits, "fuse(vector_hits)", depth)
    first_seen: dict[int, int] = {}
    for hits in (t, v):
        for r, (pid, _) in enumerate(hits):
            first_seen[pid] = min(first_seen.get(pid, r), r)
    w_t, w_v = float(text_weight), 1.0 - float(text_weight)
    scores: dict[int, float] = {}
    if method == "convex":
        vec = {pid: min(max(s, 0.0), 1.0) if math.isfinite(s) else 0.0 for pid, s in v}
        for side, w in ((_normalise(t), w_t), (vec, w_v)):
            for pid, s in side.items():
                scores[pid] = scores.get(pid, 0.0) + w * s
    elif method == "rrf":
        if rrf_k < 0:
            raise ValueError(f"fuse: rrf_k must be >= 0, got {rrf_k!r}")
        for hits, w in ((t, w_t), (v, w_v)):
            for r, (pid, _) in enumerate(hits, start=1):
                scores[pid] = scores.get(pid, 0.0) + w / (rrf_k + r)
    else:
        raise ValueError(f"fuse: method must be 'convex' or 'rrf', got {method!r}")
    return _order(scores, first_seen)


def _lookup(rel: Neighbour | None, pid: int) -> int | None:
    if rel is None:
        return None
    if isinstance(rel, Mapping):
        n = rel.get(pid)
    else:
        n = rel(pid)
    return None if n is None else int(n)


def spread(
    hits: Hits,
    *,
    next_of: Neighbour | None = None,
    prev_of: Neighbour | None = None,
    forward: float = 0.5,
    backward: float = 0.25,
    expand: bool = True,
    asks: Container[int] | None = None,
    statement_forward: float = 0.0,
) -> list[tuple[int, float]]:
    """Let relevance flow to neighbouring turns of a conversation.

    ``hits`` are ``(page_id, score)`` pairs (higher = better); their scores are
    first normalised to [0, 1] by the best one. Each page then passes
    ``forward`` times its score to ``next_of(page)`` (the turn that replies to
    it) and ``backward`` times its score to ``prev_of(page)`` (the turn it
    replies to); ``next_of``/``prev_of`` are mappings or callables returning
    ``None`` where there is no neighbour. A neighbour that was not among the
    hits becomes a candidate (``expand=False``: it gets nothing, so the result
    holds exactly the hits, re-ordered). With ``asks`` (the pages that ask a
    question), only those pass ``forward`` to their reply, and the others
    ``statement_forward``: question -> answer is the adjacency pair that makes
    a reply relevant. Returns ``[(page_id, score), ...]`` best first.
    See the module docstring for the reasoning behind the defaults.
    """
    if not (0.0 <= forward <= 1.0 and 0.0 <= backward <= 1.0 and 0.0 <= statement_forward <= 1.0):
        raise ValueError(f"spread: shares must be in [0, 1], got {forward!r}, {backward!r}, {statement_forward!r}")
    h = _clean(hits, "spread(hits)", None)
    base = _normalise(h)
    first_seen = {pid: r for r, (pid, _) in enumerate(h)}
    scores: dict[int, float] = dict(base)
    for pid, s in base.items():
        fwd = forward if asks is None or pid in asks else statement_forward
        for rel, w in ((next_of, fwd), (prev_of, backward)):
            if w == 0.0 or s == 0.0:
                continue
            n = _lookup(rel, pid)
            if n is not None and n != pid and (expand or n in base):
                scores[n] = scores.get(n, 0.0) + w * s
    return _order(scores, first_seen)


def as_hits(ids: Any, scores: Any) -> list[tuple[int, float]]:
    """One row of an index query (``ids``, ``scores`` arrays) as a hits list,
    without padding (:data:`vmem.index.PAD_ID` / ``-inf``) entries."""
    pad = 2**64 - 1
    return [(int(i), float(s)) for i, s in zip(ids, scores) if int(i) != pad and math.isfinite(float(s))]
