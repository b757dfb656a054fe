"""The C core through its Python wrapper: rules, bad input, snapshots, limits."""

from __future__ import annotations

import threading

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem import (
    MAX_CANDIDATES,
    MAX_PAGE_TOKENS,
    BudgetError,
    CorruptSnapshot,
    EvictionError,
    InvalidArgument,
    PagedContext,
    PageExists,
    PageNotFound,
    Policy,
    Region,
    State,
    estimate_tokens,
    estimate_tokens_many,
)
from reference_model import reference_estimate_tokens


def queue_of(ctx: PagedContext, n: int, tokens: int = 10, start: int = 100, group_of=lambda i: 0) -> list[int]:
    ids = list(range(start, start + n))
    for i in ids:
        ctx.add(i, tokens, Region.QUEUE, group=group_of(i))
    return ids


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, exc",
    [
        (lambda c: c.add(1, 5), PageExists),
        (lambda c: c.add(2, -1), InvalidArgument),
        (lambda c: c.add(2, MAX_PAGE_TOKENS + 1), InvalidArgument),
        (lambda c: c.add(2, 2**70), InvalidArgument),
        (lambda c: c.add(-1, 5), InvalidArgument),
        (lambda c: c.add("x", 5), InvalidArgument),
        (lambda c: c.add(2, 5, 17), InvalidArgument),
        (lambda c: c.add(2, 5, group=2**32), InvalidArgument),
        (lambda c: c.remove(99), PageNotFound),
        (lambda c: c.move(99, Region.QUEUE), PageNotFound),
        (lambda c: c.resize(1, -5), InvalidArgument),
        (lambda c: c.touch(99), PageNotFound),
        (lambda c: c.info(99), PageNotFound),
        (lambda c: c.add(2, 901, Region.SYSTEM, pinned=True), BudgetError),
        (lambda c: c.resize(1, 901), BudgetError),
        (lambda c: c.configure(window=1000, reserve=960, ws_budget=0), BudgetError),
        (lambda c: c.configure(reserve=1000), InvalidArgument),
        (lambda c: c.configure(warn=0.9, flush=0.8), InvalidArgument),
        (lambda c: c.configure(target=1.0), InvalidArgument),
        (lambda c: c.configure(policy=7), InvalidArgument),
        (lambda c: c.configure(window=-5), InvalidArgument),
        (lambda c: c.configure(bogus=1), InvalidArgument),
        (lambda c: c.add_many([5, 6], [1]), InvalidArgument),
        (lambda c: c.add_many([5, 5], [1, 1]), PageExists),
        (lambda c: c.add_many([5, 6], [1, -1]), InvalidArgument),
        (lambda c: c.add_many([5, 6], [1, 90], Region.WORKSET), BudgetError),
        (lambda c: c.move_many([1, 1], Region.OUT), InvalidArgument),
        (lambda c: c.move_many([1, 99], Region.OUT), PageNotFound),
        (lambda c: c.admit([1], [float("nan")]), InvalidArgument),
        (lambda c: c.admit([1, 99], [1.0, 1.0]), PageNotFound),
        (lambda c: c.admit([1], [1.0, 2.0]), InvalidArgument),
        (lambda c: c.admit(np.zeros(MAX_CANDIDATES + 1, dtype=np.uint64), np.zeros(MAX_CANDIDATES + 1)),
         InvalidArgument),
    ],
)
def test_bad_input_is_refused_and_changes_nothing(call, exc):
    ctx = PagedContext(window=1000, reserve=100, ws_budget=80)
    ctx.add(1, 50, Region.SYSTEM, pinned=True)
    queue_of(ctx, 5)
    before = ctx.snapshot()
    with pytest.raises(exc) as info:
        call(ctx)
    assert str(info.value), "errors must say what went wrong"
    assert ctx.snapshot() == before
    ctx.check()


def test_errors_name_the_function_and_reason():
    ctx = PagedContext(window=1000, reserve=100)
    ctx.add(7, 5)
    with pytest.raises(PageExists, match=r"^vm_add: page 7 exists$"):
        ctx.add(7, 5)
    with pytest.raises(PageNotFound, match="vm_remove: no page 8"):
        ctx.remove(8)


def test_budget_smaller_than_pinned_pages_is_refused():
    ctx = PagedContext(window=1000, reserve=0, ws_budget=0)
    ctx.add(1, 600, Region.CORE, pinned=True)
    with pytest.raises(BudgetError, match="pinned"):
        ctx.configure(reserve=500)
    ctx.add(2, 600, Region.OUT, pinned=True)  # not resident: costs no budget
    with pytest.raises(BudgetError):
        ctx.move(2, Region.CORE)
    assert ctx.info(2).region is Region.OUT


# ---------------------------------------------------------------- watermarks


def test_watermarks_and_need():
    ctx = PagedContext(window=1100, reserve=100, warn=0.7, flush=1.0, target=0.5, keep_last=0)
    assert ctx.status().state is State.OK
    queue_of(ctx, 70)  # 700 tokens: at the warn line, not above
    assert ctx.status().state is State.OK
    ctx.add(1, 1, Region.QUEUE)
    s = ctx.status()
    assert (s.state, s.need, s.used, s.budget) == (State.WARN, 1, 701, 1000)
    queue_of(ctx, 30, start=500)  # 1001 tokens
    s = ctx.status()
    assert s.state is State.OVER
    assert s.need == 1001 - 500  # half the queue (it is all queue) beats the 1 token over
    plan = ctx.plan_eviction()
    assert plan.freed >= s.need
    ctx.move_many(plan.ids, Region.OUT)
    assert ctx.status().state is State.OK
    assert ctx.stats().tokens[Region.OUT] == plan.freed


# ---------------------------------------------------------------- eviction planning


def test_eviction_takes_oldest_first_and_keeps_groups_whole():
    ctx = PagedContext(window=10_000, reserve=0, keep_last=2)
    ids = queue_of(ctx, 10, group_of=lambda i: 9 if i in (101, 102, 103) else 0)
    plan = ctx.plan_eviction(15)  # 100 alone frees 10; then the whole 101-103 run
    assert plan.ids.tolist() == [100, 101, 102, 103]
    assert plan.freed == 40
    assert ids[-2:] not in [plan.ids.tolist()]


def test_eviction_skips_pinned_pages_and_protects_the_last_messages():
    ctx = PagedContext(window=10_000, reserve=0, keep_last=3)
    queue_of(ctx, 8)
    ctx.pin(101)
    plan = ctx.plan_eviction(40)
    assert plan.ids.tolist() == [100, 102, 103, 104]
    with pytest.raises(EvictionError) as info:
        ctx.plan_eviction(61)  # 100, 102-104 = 40 freeable: 101 pinned, 105-107 protected
    assert info.value.freeable == 40


def test_a_group_reaching_into_the_protected_tail_is_kept_whole():
    ctx = PagedContext(window=10_000, reserve=0, keep_last=1)
    queue_of(ctx, 4, group_of=lambda i: 5 if i >= 102 else 0)
    with pytest.raises(EvictionError) as info:
        ctx.plan_eviction(30)
    assert info.value.freeable == 20


def test_plan_is_pure():
    ctx = PagedContext(window=10_000, reserve=0)
    queue_of(ctx, 10)
    before = ctx.snapshot()
    ctx.plan_eviction(50)
    assert ctx.snapshot() == before


# ---------------------------------------------------------------- admission


def setup_ws(policy: Policy) -> PagedContext:
    ctx = PagedContext(window=10_000, reserve=0, ws_budget=30, policy=policy)
    ctx.add_many(np.arange(1, 20), np.full(19, 10), Region.OUT)
    return ctx


def test_admission_touches_resident_and_evicts_coldest_lru():
    ctx = setup_ws(Policy.LRU)
    a = ctx.admit([1, 2, 3], [0.9, 0.8, 0.7])
    assert a.admitted.tolist() == [1, 2, 3] and a.evicted.size == 0
    ctx.touch(1)  # 2 is now the least recently used
    a = ctx.admit([4], [1.0])
    assert a.admitted.tolist() == [4] and a.evicted.tolist() == [2]
    ctx.check()


def test_regions_answer_for_many_pages_and_none_for_unknown_ones():
    ctx = setup_ws(Policy.LRU)
    ctx.admit([1, 2], [0.9, 0.8])
    assert ctx.regions([1, 2, 3, 999]) == [Region.WORKSET, Region.WORKSET, Region.OUT, None]
    assert ctx.regions([1])[0] is Region.WORKSET and ctx.regions([]) == []


def test_admission_lfu_keeps_frequently_used_pages():
    ctx = setup_ws(Policy.LFU)
    ctx.admit([1, 2, 3], [0.9, 0.8, 0.7])
    for _ in range(3):
        ctx.admit([1, 3], [1.0, 1.0])  # touches
    a = ctx.admit([4], [1.0])
    assert a.evicted.tolist() == [2]


def test_admission_orders_by_score_and_never_evicts_what_it_just_touched():
    ctx = setup_ws(Policy.LRU)
    a = ctx.admit([5, 6, 7, 8], [0.1, 0.9, 0.5, 0.7])  # room for three of the four
    assert a.admitted.tolist() == [6, 8, 7]
    assert a.evicted.size == 0


def test_admission_never_evicts_pinned_pages_and_skips_oversize():
    ctx = setup_ws(Policy.LRU)
    ctx.admit([1, 2, 3], [1, 1, 1])
    for i in (1, 2, 3):
        ctx.pin(i)
    a = ctx.admit([4], [1.0])
    assert a.admitted.size == 0 and a.evicted.size == 0
    ctx.add(50, 31)  # larger than the working set's whole budget
    assert ctx.admit([50], [1.0]).admitted.size == 0


def test_admission_grows_its_evicted_buffer():
    ctx = PagedContext(window=100_000, reserve=0, ws_budget=500)
    ctx.add_many(np.arange(1, 501), np.ones(500, dtype=np.uint32), Region.OUT)
    ctx.admit(np.arange(1, 501), np.ones(500))
    ctx.add(1000, 500)
    a = ctx.admit([1000], [1.0])
    assert a.admitted.tolist() == [1000] and a.evicted.size == 500


# ---------------------------------------------------------------- snapshot


def busy_context() -> PagedContext:
    ctx = PagedContext(window=5000, reserve=500, ws_budget=300, policy=Policy.LFU, keep_last=2)
    ctx.add(1, 100, Region.SYSTEM, pinned=True)
    ctx.add(2, 200, Region.CORE)
    queue_of(ctx, 50, group_of=lambda i: i // 4)
    ctx.add_many(np.arange(1000, 1100), np.arange(100) % 40 + 1)
    ctx.admit(np.arange(1000, 1030), np.linspace(1, 0, 30))
    ctx.remove(110)
    ctx.move_many(ctx.plan_eviction(100).ids, Region.OUT)
    return ctx


def test_snapshot_round_trips_exactly():
    ctx = busy_context()
    image = ctx.snapshot()
    copy = PagedContext.from_snapshot(image)
    copy.check()
    assert copy.snapshot() == image
    assert copy.config == ctx.config and copy.stats() == ctx.stats()
    for region in Region:
        assert copy.pages(region).tolist() == ctx.pages(region).tolist()
    # and they go on identically
    a, b = ctx.admit([1050, 1051], [1, 1]), copy.admit([1050, 1051], [1, 1])
    assert a.evicted.tolist() == b.evicted.tolist()


def _flip(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at] ^= 0xFF
    return bytes(b)


@pytest.mark.parametrize("damage", [
    lambda s: b"",
    lambda s: b"not msgpack at all \xc1",
    lambda s: msgpack.packb({"format": "other"}),
    lambda s: msgpack.packb({"format": "vmem.core", "version": 99, "image": b"x"}),
    lambda s: msgpack.packb({**msgpack.unpackb(s), "image": msgpack.unpackb(s)["image"][:-9]}),
    lambda s: msgpack.packb({**msgpack.unpackb(s), "image": _flip(msgpack.unpackb(s)["image"], 100)}),
    lambda s: msgpack.packb({**msgpack.unpackb(s), "image": b"VMEMCORE" + bytes(200)}),
])
def test_corrupt_snapshots_are_refused_and_change_nothing(damage):
    ctx = busy_context()
    before = ctx.snapshot()
    with pytest.raises(CorruptSnapshot):
        ctx.restore(damage(before))
    assert ctx.snapshot() == before


# ---------------------------------------------------------------- scale, threads


def test_a_million_pages_fit_in_64_bytes_each():
    ctx = PagedContext(window=128_000, reserve=4_000)
    n = 1_000_000
    ctx.add_many(np.arange(1, n + 1, dtype=np.uint64), np.full(n, 50, dtype=np.uint32))
    assert len(ctx) == n
    assert ctx.memory_bytes / n <= 64
    assert 500_000 in ctx and n + 1 not in ctx
    ctx.remove(500_000)
    assert 500_000 not in ctx and len(ctx) == n - 1


def test_concurrent_use_from_threads_keeps_invariants():
    ctx = PagedContext(window=100_000, reserve=0, ws_budget=2_000)
    ctx.add_many(np.arange(1, 5001), np.full(5000, 7, dtype=np.uint32))
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(300):
                ids = rng.integers(1, 5001, size=8).astype(np.uint64)
                ctx.admit(ids, rng.random(8))
                ctx.add(int(rng.integers(10**6, 10**9)) * 10 + seed, 3, Region.QUEUE)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    ctx.check()
    assert ctx.stats().pages[Region.QUEUE] == 1200


# ---------------------------------------------------------------- token estimator


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_estimator_follows_its_reference_rules(text):
    assert estimate_tokens(text) == reference_estimate_tokens(text)


def test_estimator_examples():
    assert estimate_tokens("") == 0
    assert estimate_tokens("hello") == 1
    assert estimate_tokens("Hello, world!") == 4  # Hello , world !
    assert estimate_tokens("I don't know") == 4  # I don 't know
    assert estimate_tokens("1234567") == 3  # 123 456 7
    assert estimate_tokens("日本語") == 3
    assert estimate_tokens_many(["hello", "", "a b c"]).tolist() == [1, 0, 3]


def _fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & (2**64 - 1)
    return h


def test_a_broken_invariant_is_named_by_its_number_in_vm_c():
    """vm_check's messages cite csrc/vm.c's numbered invariants: here 3, the working set's heap
    order, broken by a snapshot whose saved heap order was swapped (the rest of it is valid)."""
    ctx = PagedContext(window=5000, reserve=500, ws_budget=300)
    ctx.add_many(np.array([10, 11], dtype=np.uint64), np.array([5, 5], dtype=np.uint32))
    ctx.admit([10, 11], [1.0, 0.5])
    for _ in range(3):
        ctx.touch(11)  # 11 warmer, so 10 heads the heap (coldest first)
    envelope = msgpack.unpackb(ctx.snapshot())
    body = envelope["image"][:-8]  # the image ends with its FNV-1a checksum; before it, the working set's list
    body = body[:-8] + body[-4:] + body[-8:-4]
    swapped = body + _fnv1a(body).to_bytes(8, "little")
    with pytest.raises(CorruptSnapshot, match=r"vm_check: invariant 3: heap entry 1 is colder than its parent"):
        ctx.restore(msgpack.packb({**envelope, "image": swapped}))
    ctx.check()
