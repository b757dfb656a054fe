"""Near-ties between statements about the same thing go to the newest.

Interface:

- :class:`TieBreak` -- the rule's numbers (``margin``, ``cover``, ``gap``),
  :meth:`TieBreak.applies_to` (whether a question asks what holds now) and
  :meth:`TieBreak.apply`, which re-orders the head of a ranking, best first, given why
  each hit matched (a bit mask of the query terms it holds), when it was said, and each
  query term's idf.
- :data:`DEFAULT_TIE_BREAK` -- what the stores use (None turns it off);
  :data:`TIE_WINDOW` -- how many hits at the head it may re-order.

Why: a user says "my team handles 60 calls a day" and, weeks later, "we're up to 1,200
calls a day". Both match "how many calls a day does my team handle?", and BM25 usually
prefers the first: the update is longer, or says "calls" once where the first said it
twice. On a dev set of such updates (bench/knowledge_updates.py) plain BM25 put the
current statement first in about a third of the cases. Nothing in the words says which is
current; the time does. A blanket recency boost would say it, and also push every old
answer down: on LoCoMo most questions are about what happened *then*, and their evidence
is old (a tie-break over the first 50 hits, tried first, cost LoCoMo's hybrid archival
search 3.5 points of R@10). So time decides only

- the order *within the first page* (:data:`TIE_WINDOW` = 10 hits): the rule never
  changes which hits make the first 10, so recall@10 and beyond cannot fall, by
  construction; only the order the agent reads them in changes;
- for a question about the present: one that says "did", "was", "were", "had", "when" or
  "ago" asks what held then, and is left alone (``past``);
- between hits that are

  1. about the same thing: they share the query terms that made them match -- the idf
     weight of the terms both hold is at least ``cover`` of the weight of each one's own
     matched terms (so "calls a day" and "calls a day ... team" are the same thing,
     "calls" and "team" alone are not); a hit that matched no query term (a vector-only
     hit) is never one of them;
  2. near-tied: the newer one scores at least ``1 - margin`` of the older one's score
     (0.5: within a factor of two; an update is often longer, or phrased around the
     change, and BM25 then halves its score);
  3. said at different times: more than ``gap`` seconds apart (turns of one
     conversation an hour apart are one exchange, not an update).

Then the newer hit moves directly above the highest-ranked older hit it is tied with.
Hits are taken in rank order, each moved at most once, so a chain of updates ends newest
first. Only the order changes: each hit keeps its score, so scores no longer fall
monotonically where a hit moved. The rule is a permutation of the window it is given, so a
caller that ranks at least the window at every depth keeps its pages disjoint and complete.

Measured (bench/knowledge_updates.py; the numbers were chosen on its written dev set, and
LoCoMo is the check they were not fitted to): the current statement first in 33 of 42
written cases through conversation_search (16 without the rule) and 32 of 42 through
archival search (14); LoCoMo dev R@10 and R@25 unchanged, R@1 31.4 -> 30.3
(conversation_search) and 37.8 -> 36.1 (archival).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vmem.text import tokenize

__all__ = ["DEFAULT_TIE_BREAK", "TIE_WINDOW", "TieBreak"]

#: Hits at the head of a ranking the rule may re-order (one page of ten; the rest keep their
#: order), so it never changes which hits make the first ten.
TIE_WINDOW = 10
#: Words that make a question ask about the past (what held then): the rule leaves it alone.
PAST_WORDS = frozenset({"did", "was", "were", "had", "when", "ago"})


@dataclass(frozen=True)
class TieBreak:
    """The newest of near-tied statements about the same thing goes first (module docstring).

    ``margin``: relative score gap still called a tie (0.5: the newer scores at least half
    the older's); ``cover``: share of each hit's matched idf weight the two must share;
    ``gap``: seconds two statements must be apart to be an update of one by the other;
    ``past``: words that make a question ask about the past (the rule then stays off).
    """

    margin: float = 0.5
    cover: float = 0.6
    gap: float = 3600.0
    past: frozenset[str] = PAST_WORDS

    def __post_init__(self) -> None:
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"margin must be in [0, 1), got {self.margin!r}")
        if not 0.0 < self.cover <= 1.0:
            raise ValueError(f"cover must be in (0, 1], got {self.cover!r}")
        if not self.gap >= 0.0:
            raise ValueError(f"gap must be >= 0 seconds, got {self.gap!r}")

    def applies_to(self, query: str) -> bool:
        """Whether ``query`` asks what holds now (it has none of the ``past`` words)."""
        return not (self.past and self.past.intersection(tokenize(query)))

    def apply(self, ranked: Sequence[tuple[int, float]], masks: Sequence[int] | np.ndarray,
              times: Sequence[float] | np.ndarray | Callable[[], Sequence[float] | np.ndarray],
              idf: Sequence[float] | np.ndarray) -> list[tuple[int, float]]:
        """Re-order ``ranked`` (``(id, score)``, best first): hit ``i`` matched the query terms
        whose bits are set in ``masks[i]`` (bit t = term t, weighed ``idf[t]``) and was said at
        ``times[i]`` (epoch seconds; NaN: unknown, never tied). ``times`` may be a function
        returning them, called only when some pair is about the same thing and near-tied (a
        store reads them from its database). Only the first :data:`TIE_WINDOW` hits move."""
        n = min(len(ranked), TIE_WINDOW)
        if n < 2 or len(masks) < n or len(idf) == 0:
            return list(ranked)
        w = [float(x) for x in idf]
        weights: dict[int, float] = {}

        def weight(mask: int) -> float:
            got = weights.get(mask)
            if got is None:
                got = weights[mask] = sum(x for b, x in enumerate(w) if mask >> b & 1)
            return got

        m = [int(x) for x in masks[:n]]
        s = [float(sc) for _, sc in ranked[:n]]
        keep = 1.0 - self.margin
        # pairs (i, j), i ranked below j, about the same thing and near-tied: time may decide
        pairs = []
        for i in range(1, n):
            if not m[i]:
                continue
            for j in range(i):
                if not m[j] or s[i] < keep * s[j]:
                    continue
                shared = weight(m[i] & m[j])
                if shared > 0 and shared >= self.cover * max(weight(m[i]), weight(m[j])):
                    pairs.append((i, j))
        if not pairs:
            return list(ranked)
        t = [float(x) for x in (times() if callable(times) else times)[:n]]
        if len(t) < n:
            return list(ranked)
        tie = {(i, j) for i, j in pairs if t[i] > t[j] + self.gap}  # NaN compares false: never tied
        if not tie:
            return list(ranked)
        order = list(range(n))
        for i in range(1, n):
            pos = order.index(i)
            above = [p for p in range(pos) if (i, order[p]) in tie]
            if above:
                order.insert(above[0], order.pop(pos))
        return [ranked[k] for k in order] + list(ranked[n:])


#: The rule the stores apply to conversation search and to hybrid archival search.
DEFAULT_TIE_BREAK: TieBreak | None = TieBreak()
