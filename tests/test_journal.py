"""The core's journal: operations replayed onto the snapshot they follow give the same core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel_helpers import ChattyPolicy
from test_core_properties import dump
from vmem import CoreError, PagedContext, Region
from vmem.kernel import Agent, Memory, MemoryConfig
from vmem.kernel.drivers import ScriptedDriver
from vmem.kernel.journal import FOLD_ENTRIES, JournaledContext, pack, replay

IDS = st.integers(1, 20)
OPS = st.one_of(
    st.tuples(st.just("add"), IDS, st.integers(0, 300), st.sampled_from(list(Region)), st.booleans(), st.integers(0, 3)),
    st.tuples(st.just("remove_many"), st.lists(IDS, max_size=4)),
    st.tuples(st.just("move"), IDS, st.sampled_from(list(Region))),
    st.tuples(st.just("resize"), IDS, st.integers(0, 300)),
    st.tuples(st.just("touch"), IDS),
    st.tuples(st.just("pin"), IDS, st.booleans()),
    st.tuples(st.just("admit"), st.lists(IDS, max_size=6), st.lists(st.floats(-1, 1, width=32), min_size=6,
                                                                          max_size=6)),
    st.tuples(st.just("configure"), st.integers(500, 3000)),
)


def apply(ctx: JournaledContext, op: tuple) -> None:
    name, *args = op
    try:
        if name == "add":
            page, tokens, region, pinned, group = args
            ctx.add(page, tokens, region, pinned=pinned, group=group)
        elif name == "remove_many":
            ctx.remove_many(np.array(args[0], dtype=np.uint64))
        elif name == "admit":
            ids = np.array(args[0], dtype=np.uint64)
            ctx.admit(ids, args[1][: len(ids)])
        elif name == "configure":
            ctx.configure(window=args[0])
        else:
            getattr(ctx, name)(*args)
    except CoreError:
        pass  # refused: it changed nothing, so it is not in the journal


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(before=st.lists(OPS, max_size=15), after=st.lists(OPS, max_size=40), cut=st.integers(1, 5))
def test_replaying_the_journal_onto_its_snapshot_gives_the_same_core(before, after, cut) -> None:
    ctx = JournaledContext(window=2000, reserve=100, ws_budget=300)
    for op in before:
        apply(ctx, op)
    snapshot = ctx.snapshot()
    ctx.take_ops()
    entries = []
    for k, op in enumerate(after):
        apply(ctx, op)
        if k % cut == 0:
            entries.append(pack(ctx.take_ops()))  # one entry per commit
    entries.append(pack(ctx.take_ops()))
    again = PagedContext.from_snapshot(snapshot)
    replay(again, entries)
    again.check()
    assert again.canonical() == ctx.canonical()  # the slots may be laid out differently, nothing else
    assert dump(again) == dump(ctx)


def test_an_agent_reopens_identically_across_journal_folds(tmp_path: Path) -> None:
    agent = Agent.create(tmp_path / "a", system="s", blocks={"human": ""}, driver=ScriptedDriver(ChattyPolicy()),
                         config=MemoryConfig(window=4096, reserve_output=256, prefetch=2))
    for i in range(2 * FOLD_ENTRIES + 10):
        agent.step(f"turn {i}: " + "words about the garden " * (i % 4))
        if i in (5, FOLD_ENTRIES + 3, 2 * FOLD_ENTRIES + 9):
            digest = agent.memory.digest()
            with Memory.open(tmp_path / "a", read_only=True) as view:  # snapshot + journal, replayed
                assert view.digest() == digest
                view.check()
    assert len(agent.memory.store.journal) < FOLD_ENTRIES + 1  # folded into snapshots along the way
    agent.close()
