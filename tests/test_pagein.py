"""vmem.pagein: index lookup -> C core working-set admission."""

from __future__ import annotations

import numpy as np
import pytest

from vmem import PagedContext, Region
from vmem.embed import HashEmbedder
from vmem.index import ExactIndex, PageIndex
from vmem.pageid import PageKind, make_page_id
from vmem.pagein import Pager, page_in

FACTS = [
    "Caroline went to an LGBTQ support group on Sunday",
    "Melanie painted a sunrise over the lake last year",
    "Melanie's kids loved the dinosaur exhibit at the museum",
    "Caroline is researching adoption agencies",
    "Melanie signed up for a pottery class",
    "Caroline gave a talk at a school about her transition",
    "Melanie went camping with her family in the mountains",
    "Caroline's friends have supported her for four years",
    "Melanie bought new running shoes",
    "Caroline plans to become a counselor",
]


@pytest.fixture(params=[PageIndex, ExactIndex])
def setup(request: pytest.FixtureRequest) -> tuple[PagedContext, object, HashEmbedder, list[int]]:
    emb = HashEmbedder()
    ids = [make_page_id(PageKind.PASSAGE, i) for i in range(1, len(FACTS) + 1)]
    index = request.param(emb.dim, name=emb.name)
    index.add(np.array(ids, dtype=np.uint64), emb.embed(FACTS))
    ctx = PagedContext(window=8192, reserve=1024, ws_budget=250)
    for pid in ids:
        ctx.add(pid, 100, Region.OUT)  # registered, living in storage
    return ctx, index, emb, ids


def test_page_in_admits_the_best_matches(setup: tuple) -> None:
    ctx, index, emb, ids = setup
    res = Pager(ctx, index, emb, k=2).page_in("When did Melanie go camping?")
    assert res.candidates.dtype == np.uint64 and res.scores.dtype == np.float32
    assert int(res.candidates[0]) == ids[6]  # the camping fact
    assert res.scores[0] >= res.scores[1]
    assert set(res.admitted.tolist()) == set(res.candidates.tolist())
    assert len(res.evicted) == 0 and len(res.skipped) == 0
    for pid in res.admitted.tolist():
        assert ctx.info(pid).region == Region.WORKSET
    assert res.lookup_s >= 0 and res.embed_s >= 0
    ctx.check()


def test_page_in_evicts_within_the_working_set_budget(setup: tuple) -> None:
    ctx, index, emb, ids = setup
    pager = Pager(ctx, index, emb, k=2)
    first = pager.page_in("Melanie camping family mountains")
    second = pager.page_in("Caroline adoption agencies research")
    assert int(second.candidates[0]) == ids[3]
    assert ids[3] in second.admitted.tolist()
    # budget 250 tokens = two 100-token pages: the second page-in pushed out what no longer fits
    assert len(second.evicted) >= 1
    assert set(second.evicted.tolist()) <= set(first.admitted.tolist())
    for pid in second.evicted.tolist():
        assert ctx.info(pid).region == Region.OUT
    assert sum(ctx.info(int(p)).tokens for p in ctx.pages(Region.WORKSET)) <= 250
    ctx.check()


def test_resident_candidates_are_not_admitted_twice(setup: tuple) -> None:
    ctx, index, emb, ids = setup
    pager = Pager(ctx, index, emb, k=1)
    a = pager.page_in("pottery class")
    b = pager.page_in("pottery class")
    assert a.admitted.tolist() == [ids[4]]
    assert b.candidates.tolist() == [ids[4]] and b.admitted.tolist() == [] and b.evicted.tolist() == []


def test_unregistered_candidates_are_skipped_or_refused(setup: tuple) -> None:
    ctx, index, emb, ids = setup
    ctx.remove(ids[1])  # the sunrise fact is in the index but no longer in the context
    res = page_in(ctx, index, "Melanie painted a sunrise", embedder=emb, k=2)
    assert ids[1] in res.skipped.tolist()
    assert ids[1] not in res.admitted.tolist() and ids[1] not in res.candidates.tolist()
    with pytest.raises(KeyError, match="not registered"):
        page_in(ctx, index, "Melanie painted a sunrise", embedder=emb, k=2, strict=True)


def test_min_score_filter_and_vector_queries(setup: tuple) -> None:
    ctx, index, emb, ids = setup
    pager = Pager(ctx, index, emb, k=5, min_score=0.99)
    assert pager.page_in("completely unrelated quantum chromodynamics").candidates.size == 0
    exact = Pager(ctx, index, emb, k=5, min_score=0.99).page_in(emb.embed([FACTS[8]])[0])
    assert exact.candidates.tolist() == [ids[8]] and exact.admitted.tolist() == [ids[8]]
    only_caroline = Pager(ctx, index, emb, k=3).page_in("support", filter=lambda pid: pid in set(ids[0::2]))
    assert set(only_caroline.candidates.tolist()) <= set(ids[0::2])


def test_mismatches_are_refused(setup: tuple) -> None:
    ctx, index, emb, ids = setup
    with pytest.raises(ValueError, match="built by"):
        Pager(ctx, index, HashEmbedder(seed=7))
    with pytest.raises(ValueError, match="dim"):
        Pager(ctx, index, HashEmbedder(dim=128))
    with pytest.raises(TypeError, match="embedder"):
        Pager(ctx, index).page_in("text without an embedder")
    with pytest.raises(ValueError, match="dim"):
        Pager(ctx, index).page_in(np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError):
        Pager(ctx, index, emb, k=0)
