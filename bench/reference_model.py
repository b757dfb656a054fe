"""A pure-Python reference model of the C core: the same rules, written plainly.

It is the executable specification that the property tests hold the C core to
(every operation through both, results compared, ``vm_check`` after each) and
the baseline the benchmarks measure the core against. The package never uses
it at run time: there is no fallback from the C core to this model.

The public methods mirror :class:`vmem.PagedContext` and raise the same
exceptions; messages may differ.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Iterable, Sequence

import msgpack
import numpy as np

from vmem._core import (
    MAX_CANDIDATES,
    MAX_PAGE_TOKENS,
    Admission,
    Config,
    EvictionPlan,
    PageInfo,
    Policy,
    Region,
    State,
    Stats,
    Status,
)
from vmem.errors import (
    BudgetError,
    CorruptSnapshot,
    EvictionError,
    InvalidArgument,
    PageExists,
    PageNotFound,
)

__all__ = ["ReferenceContext", "reference_estimate_tokens"]

_LISTS = (Region.SYSTEM, Region.CORE, Region.SUMMARY, Region.QUEUE)


@dataclass
class _Page:
    id: int
    tokens: int
    region: Region
    pinned: bool
    group: int
    last_touch: int = 0
    touches: int = 0


class ReferenceContext:
    """The reference model of :class:`vmem.PagedContext`."""

    def __init__(self, window: int = 8192, reserve: int = 1024, *, warn: float = 0.70,
                 flush: float = 1.00, target: float = 0.50, keep_last: int = 3,
                 policy: Policy = Policy.LRU, ws_budget: int | None = None) -> None:
        self.pages: dict[int, _Page] = {}
        # resident regions in order (the working set in admission order)
        self.lists: dict[Region, OrderedDict] = {r: OrderedDict() for r in (*_LISTS, Region.WORKSET)}
        self.tokens: dict[Region, int] = {r: 0 for r in Region}
        self.pinned = 0
        self.seq = 0
        self.config = Config(8192, 1024, ws_budget=1024)
        if ws_budget is None:
            ws_budget = max(0, (window - reserve) // 8)
        self.configure(window=window, reserve=reserve, warn=warn, flush=flush, target=target,
                       keep_last=keep_last, policy=policy, ws_budget=ws_budget)

    # ------------------------------------------------------------ helpers

    def _tokens(self, region: Region) -> int:
        return self.tokens[region]

    def _used(self) -> int:
        return sum(self.tokens.values()) - self.tokens[Region.OUT]

    def _pinned(self) -> int:
        return self.pinned

    def _account(self, p: _Page, sign: int) -> None:
        self.tokens[p.region] += sign * p.tokens
        if p.pinned and p.region != Region.OUT:
            self.pinned += sign * p.tokens

    def _page(self, page_id: int) -> _Page:
        try:
            return self.pages[page_id]
        except KeyError:
            raise PageNotFound(f"no page {page_id}") from None

    def _check_budgets(self, pinned: int, ws: int) -> None:
        if pinned > self.config.budget:
            raise BudgetError(f"pinned pages would need {pinned} tokens, the budget is {self.config.budget}")
        if ws > self.config.ws_budget:
            raise BudgetError(f"the working set would hold {ws} tokens, its budget is {self.config.ws_budget}")

    @staticmethod
    def _check_tokens(tokens: int) -> None:
        if not 0 <= tokens <= MAX_PAGE_TOKENS:
            raise InvalidArgument(f"token count {tokens} is outside 0..{MAX_PAGE_TOKENS}")

    def _touch(self, p: _Page) -> None:
        self.seq += 1
        p.last_touch = self.seq
        p.touches = min(p.touches + 1, 2**32 - 1)

    def _coldness(self, p: _Page) -> tuple[int, int]:
        """Sort key: smaller = evict first."""
        if self.config.policy == Policy.LFU:
            return (p.touches, p.last_touch)
        return (0, p.last_touch)

    def _place(self, p: _Page, region: Region) -> None:
        self._account(p, -1)
        if p.region != Region.OUT:
            del self.lists[p.region][p.id]
        p.region = region
        self._account(p, +1)
        if region != Region.OUT:
            self.lists[region][p.id] = None
        if region == Region.WORKSET:
            self._touch(p)

    # ------------------------------------------------------------ configuration

    def configure(self, **changes: object) -> None:
        unknown = set(changes) - set(Config.__dataclass_fields__)
        if unknown:
            raise InvalidArgument(f"unknown configuration fields: {sorted(unknown)}")
        c = replace(self.config, **changes)
        if not 0 < c.window <= 1 << 40:
            raise InvalidArgument(f"window {c.window} is outside 1..2^40")
        if not 0 <= c.reserve < c.window:
            raise InvalidArgument(f"reserve {c.reserve} leaves no room")
        if not 0.0 < c.warn <= c.flush <= 1.0:
            raise InvalidArgument("need 0 < warn <= flush <= 1")
        if not 0.0 <= c.target < 1.0:
            raise InvalidArgument("need 0 <= target < 1")
        if c.policy not in (Policy.LRU, Policy.LFU):
            raise InvalidArgument(f"no policy {c.policy}")
        if not 0 <= c.ws_budget <= c.budget:
            raise InvalidArgument(f"working-set budget {c.ws_budget} exceeds the budget {c.budget}")
        if not 0 <= c.keep_last < 2**32:
            raise InvalidArgument(f"keep_last {c.keep_last} out of range")
        if self._pinned() > c.budget:
            raise BudgetError("pinned pages exceed the new budget")
        if self._tokens(Region.WORKSET) > c.ws_budget:
            raise BudgetError("the working set exceeds its new budget")
        self.config = replace(c, policy=Policy(c.policy))

    # ------------------------------------------------------------ pages

    def add(self, page_id: int, tokens: int, region: Region = Region.OUT, *,
            pinned: bool = False, group: int = 0) -> None:
        self._check_tokens(tokens)
        region = Region(region)
        if page_id in self.pages:
            raise PageExists(f"page {page_id} exists")
        resident = region != Region.OUT
        self._check_budgets(self._pinned() + (tokens if pinned and resident else 0),
                            self._tokens(Region.WORKSET) + (tokens if region == Region.WORKSET else 0))
        p = _Page(page_id, tokens, Region.OUT, pinned, group)
        self.pages[page_id] = p
        self._account(p, +1)
        self._place(p, region)

    def add_many(self, ids: Sequence[int], tokens: Sequence[int], region: Region = Region.OUT) -> None:
        ids = [int(i) for i in ids]
        tokens = [int(t) for t in tokens]
        if len(ids) != len(tokens):
            raise InvalidArgument(f"{len(ids)} ids but {len(tokens)} token counts")
        for t in tokens:
            self._check_tokens(t)
        if region == Region.WORKSET:
            self._check_budgets(self._pinned(), self._tokens(Region.WORKSET) + sum(tokens))
        if len(set(ids)) != len(ids) or any(i in self.pages for i in ids):
            raise PageExists("a page of the batch exists (or repeats in the batch)")
        for i, t in zip(ids, tokens):
            self.add(i, t, region)

    def remove(self, page_id: int) -> None:
        p = self._page(page_id)
        self._account(p, -1)
        if p.region != Region.OUT:
            del self.lists[p.region][p.id]
        del self.pages[page_id]

    def remove_many(self, ids: Iterable[int]) -> None:
        seen: set[int] = set()
        for i in map(int, ids):
            self._page(i)
            if i in seen:
                raise InvalidArgument(f"page {i} repeats in the batch")
            seen.add(i)
        for i in seen:
            self.remove(i)

    def _move_check(self, moves: list[tuple[_Page, Region]]) -> None:
        pinned, ws = self._pinned(), self._tokens(Region.WORKSET)
        for p, region in moves:
            if p.region == region:
                continue
            if p.pinned:
                pinned += (p.tokens if region != Region.OUT else 0) - (p.tokens if p.region != Region.OUT else 0)
            ws += (p.tokens if region == Region.WORKSET else 0) - (p.tokens if p.region == Region.WORKSET else 0)
        self._check_budgets(pinned, ws)

    def move(self, page_id: int, region: Region) -> None:
        region = Region(region)
        p = self._page(page_id)
        if p.region == region:
            return
        self._move_check([(p, region)])
        self._place(p, region)

    def move_many(self, ids: Iterable[int], region: Region) -> None:
        region = Region(region)
        pages: list[_Page] = []
        seen: set[int] = set()
        for i in map(int, ids):
            pages.append(self._page(i))
            if i in seen:
                raise InvalidArgument(f"page {i} repeats in the batch")
            seen.add(i)
        self._move_check([(p, region) for p in pages])
        for p in pages:
            if p.region != region:
                self._place(p, region)

    def resize(self, page_id: int, tokens: int) -> None:
        self._check_tokens(tokens)
        p = self._page(page_id)
        delta = tokens - p.tokens
        pinned = self._pinned() + (delta if p.pinned and p.region != Region.OUT else 0)
        ws = self._tokens(Region.WORKSET) + (delta if p.region == Region.WORKSET else 0)
        self._check_budgets(pinned, ws)
        self._account(p, -1)
        p.tokens = tokens
        self._account(p, +1)

    def pin(self, page_id: int, pinned: bool = True) -> None:
        p = self._page(page_id)
        resident = p.region != Region.OUT
        delta = (p.tokens if pinned else 0) - (p.tokens if p.pinned else 0)
        self._check_budgets(self._pinned() + (delta if resident else 0), self._tokens(Region.WORKSET))
        self._account(p, -1)
        p.pinned = pinned
        self._account(p, +1)

    def touch(self, page_id: int) -> None:
        self._touch(self._page(page_id))

    def info(self, page_id: int) -> PageInfo:
        p = self._page(page_id)
        return PageInfo(p.id, p.tokens, p.region, p.pinned, p.group, p.last_touch, p.touches)

    def __contains__(self, page_id: object) -> bool:
        return page_id in self.pages

    def __len__(self) -> int:
        return len(self.pages)

    def pages_in(self, region: Region) -> list[int]:
        """A region's page ids in region order (the working set: coldest first)."""
        if region == Region.OUT:
            return [p.id for p in self.pages.values() if p.region == Region.OUT]
        if region == Region.WORKSET:
            return sorted(self.lists[region], key=lambda i: self._coldness(self.pages[i]))
        return list(self.lists[region])

    # ------------------------------------------------------------ accounting

    def stats(self) -> Stats:
        count = {r: 0 for r in Region}
        for p in self.pages.values():
            count[p.region] += 1
        return Stats(dict(self.tokens), count, self._used(), self.config.budget, self._pinned(), self.seq)

    def status(self) -> Status:
        c, used = self.config, self._used()
        warn_line = int(c.warn * float(c.budget))
        flush_line = int(c.flush * float(c.budget))
        if used > flush_line:
            q = self._tokens(Region.QUEUE)
            give = q - int(c.target * float(q))
            return Status(State.OVER, max(used - flush_line, give), used, c.budget)
        if used > warn_line:
            return Status(State.WARN, used - warn_line, used, c.budget)
        return Status(State.OK, 0, used, c.budget)

    def plan_eviction(self, need: int | None = None) -> EvictionPlan:
        if need is None:
            need = self.status().need
        if need == 0:
            return EvictionPlan(np.empty(0, dtype=np.uint64), 0)
        queue = list(self.lists[Region.QUEUE])
        k = self.config.keep_last
        evictable = queue[: max(0, len(queue) - k)]
        out: list[int] = []
        got = i = 0
        while i < len(evictable) and got < need:
            g = self.pages[evictable[i]].group
            j = i + 1
            while g and j < len(queue) and self.pages[queue[j]].group == g:
                j += 1
            if j > len(evictable):  # the run reaches into the protected tail
                break
            run = [self.pages[x] for x in queue[i:j]]
            if not any(p.pinned for p in run):
                out.extend(p.id for p in run)
                got += sum(p.tokens for p in run)
            i = j
        if got < need:
            raise EvictionError(f"can free {got} of the {need} tokens asked for", freeable=got)
        return EvictionPlan(np.array(out, dtype=np.uint64), got)

    def admit(self, ids: Sequence[int], scores: Sequence[float]) -> Admission:
        ids = [int(i) for i in ids]
        scores = [float(s) for s in np.asarray(scores, dtype=np.float32)]
        if len(ids) != len(scores):
            raise InvalidArgument(f"{len(ids)} ids but {len(scores)} scores")
        if len(ids) > MAX_CANDIDATES:
            raise InvalidArgument(f"{len(ids)} candidates, at most {MAX_CANDIDATES}")
        if any(s != s for s in scores):
            raise InvalidArgument("a candidate has a NaN score")
        pages = [self._page(i) for i in ids]
        order = sorted(range(len(ids)), key=lambda i: -scores[i])
        call_start = self.seq + 1
        ws = self.lists[Region.WORKSET]
        budget = self.config.ws_budget
        admitted: list[int] = []
        evicted: list[int] = []
        resident = [pages[i] for i in order if pages[i].region != Region.OUT]
        for p in resident:  # resident candidates first: touched, so never victims
            self._touch(p)
        for i in order:
            p = pages[i]
            if p.region != Region.OUT:  # touched above, or a repeated candidate admitted above
                continue
            if p.tokens > budget:
                continue
            over = self._tokens(Region.WORKSET) + p.tokens - budget
            if over > 0:
                victims, got = [], 0
                for v in sorted((self.pages[x] for x in ws), key=self._coldness):
                    if got >= over:
                        break
                    if not v.pinned and v.last_touch < call_start:
                        victims.append(v)
                        got += v.tokens
                if got < over:
                    continue
                for v in victims:
                    self._place(v, Region.OUT)
                    evicted.append(v.id)
            self._place(p, Region.WORKSET)
            admitted.append(p.id)
        return Admission(np.array(admitted, dtype=np.uint64), np.array(evicted, dtype=np.uint64))

    # ------------------------------------------------------------ whole state

    def snapshot(self) -> bytes:
        c = self.config
        return msgpack.packb({
            "config": [c.window, c.reserve, c.warn, c.flush, c.target, c.keep_last, int(c.policy), c.ws_budget],
            "seq": self.seq,
            "pages": [[p.id, p.tokens, int(p.region), p.pinned, p.group, p.last_touch, p.touches]
                      for p in self.pages.values()],
            "lists": {int(r): list(v) for r, v in self.lists.items()},
        })

    def restore(self, data: bytes) -> None:
        try:
            d = msgpack.unpackb(data, strict_map_key=False)
            config = Config(*d["config"][:6], Policy(d["config"][6]), d["config"][7])
            pages = {row[0]: _Page(row[0], row[1], Region(row[2]), row[3], row[4], row[5], row[6])
                     for row in d["pages"]}
            lists = {Region(r): OrderedDict.fromkeys(v) for r, v in d["lists"].items()}
        except Exception as exc:
            raise CorruptSnapshot(f"restore: {exc}") from None
        self.config, self.pages, self.lists, self.seq = config, pages, lists, d["seq"]
        self.tokens = {r: 0 for r in Region}
        self.pinned = 0
        for p in pages.values():
            self._account(p, +1)


def reference_estimate_tokens(text: str) -> int:
    """The token estimator's rules (see csrc/tokest.c) in plain Python."""
    twelfths = 0
    data = text.encode("utf-8", "surrogatepass")
    n, i = len(data), 0

    def cls(b: int) -> str:
        if b in b" \t":
            return "space"
        if b in b"\n\r\x0b\x0c":
            return "nl"
        if 0x61 <= b <= 0x7A or 0x41 <= b <= 0x5A:
            return "alpha"
        if 0x30 <= b <= 0x39:
            return "digit"
        if b == 0x27:
            return "apos"
        if b >= 0xE0:
            return "u3"
        if b >= 0xC0:
            return "u2"
        if b >= 0x80:
            return "cont"
        return "punct"

    weight = {"alpha": 1, "u2": 2, "cont": 0}
    while i < n:
        start, c = i, cls(data[i])
        if c in weight:
            length = 0
            while i < n and cls(data[i]) in weight:
                length += weight[cls(data[i])]
                i += 1
            twelfths += 12 + max(0, length - 7)
        elif c == "u3":
            twelfths += 12
            i += 1
            while i < n and cls(data[i]) == "cont":
                i += 1
        elif c == "digit":
            while i < n and cls(data[i]) == "digit":
                i += 1
            twelfths += 12 * ((i - start + 2) // 3)
        elif c == "apos" and 0 < i < n - 1 and cls(data[i - 1]) == "alpha" and cls(data[i + 1]) == "alpha":
            i += 1
        elif c in ("apos", "punct"):
            while i < n and cls(data[i]) in ("apos", "punct"):
                i += 1
            twelfths += 12 + 6 * (i - start - 1)
        elif c == "space":
            while i < n and cls(data[i]) == "space":
                i += 1
            if i - start > 1:
                twelfths += 12
        else:
            while i < n and cls(data[i]) in ("nl", "space"):
                i += 1
            twelfths += 12
    return (twelfths + 6) // 12
