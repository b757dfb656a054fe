"""The C core against the pure-Python reference model, by random operation sequences.

Every operation runs on both; results must be equal, errors must be of the same
class and leave both states unchanged, and ``vm_check()`` runs after every step.
"""

from __future__ import annotations

import copy
import os

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from vmem import MAX_PAGE_TOKENS, CoreError, PagedContext, Policy, Region
from reference_model import ReferenceContext

IDS = st.one_of(st.integers(0, 12), st.integers(0, 12), st.integers(0, 12), st.sampled_from([2**64 - 1, 2**63, 1 << 56 | 7]))
TOKENS = st.one_of(st.integers(0, 300), st.integers(-3, -1), st.sampled_from([0, MAX_PAGE_TOKENS, MAX_PAGE_TOKENS + 1]))
REGIONS = st.sampled_from(list(Region))
PLACEABLE = st.sampled_from([Region.OUT, Region.SYSTEM, Region.CORE, Region.SUMMARY, Region.QUEUE,
                             Region.QUEUE, Region.QUEUE, Region.WORKSET])


def dump(ctx) -> dict:
    """Everything observable about a context, comparable between C and reference."""
    stats = ctx.stats()
    if isinstance(ctx, PagedContext):
        lists = {r: [int(i) for i in ctx.pages(r)] for r in Region}
    else:
        lists = {r: ctx.pages_in(r) for r in Region}
    for r in (Region.OUT, Region.WORKSET):  # orders differ by representation
        lists[r] = sorted(lists[r])
    ids = sorted(i for r in Region for i in lists[r])
    return {
        "stats": (dict(stats.tokens), dict(stats.pages), stats.used, stats.budget, stats.pinned, stats.seq),
        "lists": lists,
        "pages": [ctx.info(i) for i in ids],
        "config": ctx.config,
        "status": ctx.status(),
    }


class CoreVsReference(RuleBasedStateMachine):
    @initialize(window=st.integers(50, 4000), reserve_frac=st.floats(0, 0.5), ws_frac=st.floats(0, 0.5),
                keep_last=st.integers(0, 5), policy=st.sampled_from(list(Policy)))
    def setup(self, window, reserve_frac, ws_frac, keep_last, policy):
        reserve = int(window * reserve_frac)
        kwargs = dict(window=window, reserve=reserve, keep_last=keep_last, policy=policy,
                      ws_budget=int((window - reserve) * ws_frac))
        self.c = PagedContext(**kwargs)
        self.r = ReferenceContext(**kwargs)
        self.mark_c = PagedContext()  # a rollback point, reused by every mark (copy_from into it)
        self.mark_r: ReferenceContext | None = None

    def both(self, op):
        """Run op on both; compare results, or error classes and unchanged states."""
        before_c, before_r = dump(self.c), dump(self.r)
        results = []
        for ctx in (self.c, self.r):
            try:
                results.append(("ok", op(ctx)))
            except CoreError as exc:
                results.append(("error", type(exc)))
        (kc, vc), (kr, vr) = results
        assert kc == kr, f"C: {kc} {vc!r}, reference: {kr} {vr!r}"
        if kc == "error":
            assert vc is vr, f"C raised {vc.__name__}, reference {vr.__name__}"
            assert dump(self.c) == before_c, "a failed C operation changed the state"
            assert dump(self.r) == before_r, "a failed reference operation changed the state"
        return vc, vr

    @invariant()
    def agree(self):
        if hasattr(self, "c"):
            self.c.check()
            assert dump(self.c) == dump(self.r)

    @rule(page=IDS, tokens=TOKENS, region=PLACEABLE, pinned=st.booleans(), group=st.integers(0, 3))
    def add(self, page, tokens, region, pinned, group):
        self.both(lambda ctx: ctx.add(page, tokens, region, pinned=pinned, group=group))

    @rule(pages=st.lists(IDS, max_size=6), tokens=st.lists(st.integers(0, 200), min_size=6, max_size=6),
          region=PLACEABLE)
    def add_many(self, pages, tokens, region):
        self.both(lambda ctx: ctx.add_many(np.array(pages, dtype=np.uint64), tokens[: len(pages)], region))

    @rule(page=IDS)
    def remove(self, page):
        self.both(lambda ctx: ctx.remove(page))

    @rule(pages=st.lists(IDS, max_size=5))
    def remove_many(self, pages):
        self.both(lambda ctx: ctx.remove_many(np.array(pages, dtype=np.uint64)))

    @rule(page=IDS, region=PLACEABLE)
    def move(self, page, region):
        self.both(lambda ctx: ctx.move(page, region))

    @rule(pages=st.lists(IDS, max_size=6), region=PLACEABLE)
    def move_many(self, pages, region):
        self.both(lambda ctx: ctx.move_many(np.array(pages, dtype=np.uint64), region))

    @rule(page=IDS, tokens=TOKENS)
    def resize(self, page, tokens):
        self.both(lambda ctx: ctx.resize(page, tokens))

    @rule(page=IDS, pinned=st.booleans())
    def pin(self, page, pinned):
        self.both(lambda ctx: ctx.pin(page, pinned))

    @rule(page=IDS)
    def touch(self, page):
        self.both(lambda ctx: ctx.touch(page))

    @rule(changes=st.fixed_dictionaries({}, optional={
        "window": st.integers(1, 5000), "reserve": st.integers(0, 2000),
        "warn": st.floats(0.05, 1.0), "flush": st.floats(0.05, 1.0), "target": st.floats(0.0, 0.99),
        "keep_last": st.integers(0, 6), "policy": st.sampled_from(list(Policy)),
        "ws_budget": st.integers(0, 2000)}))
    def configure(self, changes):
        self.both(lambda ctx: ctx.configure(**changes))

    @rule(need=st.one_of(st.none(), st.integers(0, 3000)), apply=st.booleans())
    def plan_eviction(self, need, apply):
        (pc, pr) = self.both(lambda ctx: ctx.plan_eviction(need))
        if pc is None or isinstance(pc, type):
            return
        assert pc.ids.tolist() == pr.ids.tolist() and pc.freed == pr.freed
        for page in pc.ids:
            assert not self.r.info(int(page)).pinned, "eviction chose a pinned page"
        queue = [int(i) for i in self.c.pages(Region.QUEUE)]
        assert set(queue[len(queue) - self.c.config.keep_last:]).isdisjoint(pc.ids.tolist())
        if apply:
            self.both(lambda ctx: ctx.move_many(pc.ids, Region.OUT))

    @rule(pages=st.lists(IDS, max_size=10),
          scores=st.lists(st.floats(-1, 1, width=32), min_size=10, max_size=10))
    def admit(self, pages, scores):
        ac, ar = self.both(lambda ctx: ctx.admit(np.array(pages, dtype=np.uint64), scores[: len(pages)]))
        if isinstance(ac, type):
            return
        assert ac.admitted.tolist() == ar.admitted.tolist()
        assert ac.evicted.tolist() == ar.evicted.tolist()
        for page in ac.evicted:
            assert not self.r.info(int(page)).pinned, "admission evicted a pinned page"

    @rule()
    def mark(self):
        self.mark_c.copy_from(self.c)
        self.mark_c.check()
        assert dump(self.mark_c) == dump(self.c)
        self.mark_r = copy.deepcopy(self.r)

    @rule()
    def rollback(self):
        if self.mark_r is None:
            return
        self.c.copy_from(self.mark_c)  # what a failed kernel step does
        self.r = copy.deepcopy(self.mark_r)
        self.c.add(2**64 - 2, 1)  # the copy is independent of the mark
        self.c.remove(2**64 - 2)
        assert 2**64 - 2 not in self.mark_c

    @rule()
    def snapshot_roundtrip(self):
        image = self.c.snapshot()
        copy = PagedContext.from_snapshot(image)
        copy.check()
        assert copy.snapshot() == image
        assert dump(copy) == dump(self.c)
        self.c = copy  # go on with the restored core
        self.r.restore(self.r.snapshot())


#: ``VMEM_CORE_EXAMPLES``: fewer examples, for the run against the debug core (tests/test_installed.py),
#: where every change checks every invariant.
CoreVsReference.TestCase.settings = settings(
    max_examples=int(os.environ.get("VMEM_CORE_EXAMPLES", "300")), stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_core_matches_reference = CoreVsReference.TestCase
