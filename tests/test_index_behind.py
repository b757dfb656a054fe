"""PageIndex(behind=True): adds return once queued, a builder thread puts them into the graph, and
every read of the graph first puts in what is still queued (vmem.index, vmem.graph_queue)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from test_index import clustered, pids
from vmem.index import PageIndex
from vmem.graph_queue import PendingAdds
from vmem.storage import MemoryDir


def test_pending_adds_keep_their_order_and_split_a_batch() -> None:
    q = PendingAdds()
    assert q.pop() is None and len(q) == 0
    q.push(np.array([1, 2, 3], np.uint64), np.eye(3, dtype=np.float32))
    q.push(np.array([4], np.uint64), np.ones((1, 3), np.float32))
    ids, vecs = q.pop(2)
    assert ids.tolist() == [1, 2] and vecs.shape == (2, 3) and len(q) == 2
    q.push_front(ids, vecs)  # given back: first again
    assert [q.pop()[0].tolist() for _ in range(3)] == [[1, 2], [3], [4]] and len(q) == 0
    with pytest.raises(ValueError, match="2 ids but 1 vectors"):
        q.push(np.array([1, 2], np.uint64), np.ones((1, 3), np.float32))


def test_a_read_sees_every_add_made_before_it() -> None:
    vecs = clustered(600, 32, seed=1)
    ids = pids(600)
    idx = PageIndex(32, M=8, ef_construction=64)
    with idx._lock:  # the builder cannot take a step: everything stays queued until a read
        idx.add(ids[:400], vecs[:400])
        idx.add(ids[400:], vecs[400:])
        assert idx.pending == 600 and len(idx) == 600 and int(ids[599]) in idx
        assert np.array_equal(idx.ids(), np.sort(ids))  # counted without waiting
        got, sims = idx.query(vecs[595:], 1)
        assert idx.pending == 0
    assert got[:, 0].tolist() == ids[595:].tolist() and np.allclose(sims[:, 0], 1, atol=1e-5)


def test_the_caller_may_reuse_its_arrays_once_add_returns() -> None:
    vecs = clustered(100, 16, seed=2)
    idx = PageIndex(16, M=8, ef_construction=32)
    with idx._lock:
        buf = vecs.copy()
        idx.add(pids(100), buf)
        buf[:] = vecs[::-1]  # the caller writes over its buffer before the graph has it
        assert np.allclose(idx.get(pids(100)), vecs, atol=1e-6)


def test_the_graph_is_the_one_direct_adds_build() -> None:
    """Queued adds go into the graph in their order, one hnswlib thread: the same graph as the
    same adds made directly (num_threads=1), so the same answers and distances."""
    vecs = clustered(3000, 48, seed=3)
    ids = pids(3000)
    direct = PageIndex(48, M=8, ef_construction=100, num_threads=1, behind=False)
    behind = PageIndex(48, M=8, ef_construction=100, num_threads=1)
    for lo, hi in [(0, 10), (10, 1500), (1500, 1501), (1501, 3000)]:
        direct.add(ids[lo:hi], vecs[lo:hi])
        behind.add(ids[lo:hi], vecs[lo:hi])
    behind.delete(ids[:50])
    direct.delete(ids[:50])
    q = clustered(200, 48, seed=4)
    a_ids, a_sims = direct.query(q, 10)
    b_ids, b_sims = behind.query(q, 10)
    assert np.array_equal(a_ids, b_ids) and np.array_equal(a_sims, b_sims)
    assert behind.pending == 0 and direct.pending == 0


class _FailingGraph:
    """hnswlib's index, whose add_items fails while ``failing`` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failing = True

    def add_items(self, *a: Any, **kw: Any) -> None:
        if self.failing:
            raise RuntimeError("no memory for the graph (injected)")
        self.inner.add_items(*a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_add_the_graph_refuses_stays_queued_and_the_next_read_raises() -> None:
    vecs = clustered(200, 16, seed=5)
    idx = PageIndex(16, M=8, ef_construction=32)
    idx.add(pids(100), vecs[:100])
    idx.settle()
    graph = _FailingGraph(idx._hnsw)
    idx._hnsw = graph
    idx.add(pids(100, start=101), vecs[100:])  # the builder fails on it (logged) or the read does
    with pytest.raises(RuntimeError, match="injected"):
        idx.query(vecs[150], 1)
    assert idx.pending == 100 and len(idx) == 200  # nothing lost
    graph.failing = False
    got, _ = idx.query(vecs[150], 1)
    assert int(got[0, 0]) == int(pids(1, start=151)[0]) and idx.pending == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_child_forked_while_the_graph_builds_has_it_whole() -> None:
    """A fork waits for the builder's step (the child's graph is whole, and its lock free)."""
    n = 15000
    vecs = clustered(n, 64, seed=6)
    ids = pids(n)
    idx = PageIndex(64, M=16, ef_construction=200)
    idx.add(ids, vecs)  # the builder is at it for a while
    children = []
    while idx.pending and len(children) < 4:
        time.sleep(0.013)  # (most instants are inside one of the builder's steps)
        pid = os.fork()
        if pid == 0:  # the child: no builder; its first read settles the rest
            code = 1
            try:
                signal.alarm(60)  # a lock held by a thread the child does not have: never free
                got, _ = idx.query(vecs[::500], 1)
                code = 0 if got[:, 0].tolist() == ids[::500].tolist() and idx.pending == 0 else 2
            finally:
                os._exit(code)
        children.append(pid)
    statuses = [os.waitpid(pid, 0)[1] for pid in children]
    assert len(statuses) >= 2 and statuses == [0] * len(statuses)
    got, _ = idx.query(vecs[::500], 1)
    assert got[:, 0].tolist() == ids[::500].tolist()


def test_a_store_finds_what_it_queued_and_saves_it(tmp_path: Path) -> None:
    texts = [f"passage {i} about the {('red', 'green', 'blue')[i % 3]} house number {i}" for i in range(300)]
    with MemoryDir.open(tmp_path / "m") as s:
        index = s.archival.index
        with index._lock:  # the graph waits: what a search sees must not
            ids = s.archival.insert_many(texts)
            assert index.pending == 300
            hits = s.archival.search("passage 299 about the blue house number 299", mode="vector", page_size=1).items
        assert [hits[0].id] == ids[299]  # (one chunk a passage)
    with MemoryDir.open(tmp_path / "m") as s:
        assert s.archival.index_status == "loaded" and len(s.archival.index) == 300


def test_no_autosave_while_adds_wait_for_the_graph(tmp_path: Path) -> None:
    """A save puts the queue into the graph first: an autosave that is due waits until the
    builder has caught up (a bulk import is not held back to the graph's pace)."""
    with MemoryDir.open(tmp_path / "m", index_autosave=50) as s:
        arch = s.archival
        path = arch._index_path
        with arch.index._lock:
            arch.insert_many([f"first batch line {i}" for i in range(60)])
            arch.insert_many([f"second batch line {i}" for i in range(10)])  # due, but 60 wait
            assert not path.exists() and arch.index.pending == 70
        arch.index.settle()
        arch.insert("one more line")  # due, and nothing waits: saved
        assert path.exists()


_EXIT_WHILE_BUILDING = """
import sys
import time
import numpy as np
from vmem.index import PageIndex
n = 20000
idx = PageIndex(128)
idx.add(np.arange(n), np.random.default_rng(0).random((n, 128), dtype=np.float32))
time.sleep(float(sys.argv[1]))  # the builder under way: inside hnswlib most of the time
"""


def test_the_interpreter_exits_cleanly_while_the_graph_builds() -> None:
    """A daemon thread inside hnswlib at finalisation aborts the process ("terminate called
    without an active exception"): the builders stop between two steps at exit."""
    for pause in ("0.1", "0.2", "0.3", "0.4", "0.5"):
        r = subprocess.run([sys.executable, "-c", _EXIT_WHILE_BUILDING, pause], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr[-500:]
