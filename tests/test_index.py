"""vmem.index: PageIndex (hnswlib) and its exact twin ExactIndex."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem.embed import HashEmbedder
from vmem.index import (
    PAD_ID,
    ExactIndex,
    IndexFormatError,
    IndexMismatchError,
    PageIndex,
    load_index,
)
from vmem.pageid import PageKind, make_page_id

KINDS = [PageIndex, ExactIndex]


def clustered(n: int, dim: int, *, clusters: int = 20, rank: int = 16, seed: int = 0) -> np.ndarray:
    """Unit vectors from a mixture of low-rank Gaussians (topics with a few directions
    of variation each, plus isotropic noise): the shape of real text embeddings,
    whose intrinsic dimension is far below their size."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rank = min(rank, dim)
    bases = rng.normal(size=(clusters, dim, rank)) / np.sqrt(dim)
    c = rng.integers(0, clusters, n)
    z = rng.normal(size=(n, rank))
    x = centres[c] + np.einsum("ndr,nr->nd", bases[c], z) + 0.3 * rng.normal(size=(n, dim)) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def pids(n: int, start: int = 1) -> np.ndarray:
    return np.array([make_page_id(PageKind.PASSAGE, i) for i in range(start, start + n)], dtype=np.uint64)


@pytest.mark.parametrize("kind", KINDS)
def test_add_query_best_first(kind: type) -> None:
    idx = kind(4)
    vecs = np.eye(4, dtype=np.float32)
    ids = pids(4)
    idx.add(ids, vecs)
    got, sims = idx.query(np.array([[1, 0.1, 0, 0]], dtype=np.float32), 2)
    assert got.dtype == np.uint64 and sims.dtype == np.float32 and got.shape == (1, 2)
    assert got[0, 0] == ids[0]  # page ids above 2**56 survive as labels
    assert sims[0, 0] == pytest.approx(1 / np.sqrt(1.01), abs=1e-5)
    assert sims[0, 0] >= sims[0, 1]
    assert len(idx) == 4 and int(ids[2]) in idx and 12345 not in idx and "x" not in idx
    assert np.array_equal(idx.ids(), np.sort(ids))


@pytest.mark.parametrize("kind", KINDS)
def test_k_larger_than_live_and_empty(kind: type) -> None:
    idx = kind(8)
    q = np.ones((3, 8), dtype=np.float32)
    got, sims = idx.query(q, 5)
    assert got.shape == (3, 0) and sims.shape == (3, 0)
    idx.add(pids(3), clustered(3, 8))
    got, sims = idx.query(q, 10)
    assert got.shape == (3, 3)
    assert all(len(set(r.tolist())) == 3 for r in got)
    assert idx.query(q, 0)[0].shape == (3, 0)
    single, _ = idx.query(np.ones(8, dtype=np.float32), 2)  # one (dim,) vector is q = 1
    assert single.shape == (1, 2)


@pytest.mark.parametrize("kind", KINDS)
def test_delete_readd_and_get(kind: type) -> None:
    idx = kind(16)
    vecs = clustered(50, 16)
    ids = pids(50)
    idx.add(ids, vecs)
    idx.delete(ids[:10])
    idx.delete(ids[:10])  # idempotent
    idx.delete([999])  # unknown ids ignored
    assert len(idx) == 40
    got, _ = idx.query(vecs[:10], 5)
    assert not set(got.ravel().tolist()) & set(ids[:10].tolist())
    with pytest.raises(KeyError):
        idx.get(ids[:1])
    assert np.allclose(idx.get(ids[10:12]), vecs[10:12], atol=1e-5)
    idx.add(ids[:1], vecs[20:21])  # re-adding a deleted id revives it with the new vector
    assert len(idx) == 41 and int(ids[0]) in idx
    assert np.allclose(idx.get(ids[:1]), vecs[20:21], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_replace_vector_and_duplicate_ids_keep_last(kind: type) -> None:
    idx = kind(4)
    a, b = np.eye(4, dtype=np.float32)[:2]
    idx.add([7, 7], np.stack([a, b]))
    assert len(idx) == 1
    assert np.allclose(idx.get([7]), b[None])
    idx.add([7], a[None])
    assert len(idx) == 1 and np.allclose(idx.get([7]), a[None])


@pytest.mark.parametrize("kind", KINDS)
def test_grows_past_capacity(kind: type) -> None:
    idx = kind(8, capacity=4)
    vecs = clustered(100, 8, seed=3)
    for start in range(0, 100, 7):
        idx.add(np.arange(start, min(start + 7, 100), dtype=np.uint64), vecs[start : start + 7])
    assert len(idx) == 100
    got, _ = idx.query(vecs[42], 1)
    assert got[0, 0] == 42
    if isinstance(idx, PageIndex):
        assert idx.capacity >= 100


@pytest.mark.parametrize("kind", KINDS)
def test_filter(kind: type) -> None:
    idx = kind(16)
    vecs = clustered(200, 16, seed=4)
    idx.add(np.arange(200, dtype=np.uint64), vecs)
    got, sims = idx.query(vecs[:5], 10, filter=lambda i: i % 2 == 0)
    assert got.shape == (5, 10)
    assert all(int(i) % 2 == 0 for i in got.ravel())
    assert np.all(np.diff(sims, axis=1) <= 1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_selective_filter_returns_fewer_padded(kind: type) -> None:
    idx = kind(16)
    vecs = clustered(300, 16, seed=5)
    idx.add(np.arange(300, dtype=np.uint64), vecs)
    allowed = {3, 150, 299}
    got, sims = idx.query(vecs[:2], 8, filter=lambda i: i in allowed)
    assert got.shape == (2, 3)  # k' = the most any row found
    assert {int(i) for i in got[0]} == allowed
    none, _ = idx.query(vecs[:1], 8, filter=lambda i: False)
    assert none.shape == (1, 0)
    # a row with fewer admissible results than another is padded at the end
    got, sims = idx.query(vecs[:1], 8, filter=lambda i: i in {3})
    assert got.tolist() == [[3]]
    assert PAD_ID == np.uint64(2**64 - 1)


def test_exact_and_hnsw_agree_on_small_sets() -> None:
    vecs = clustered(300, 32, seed=6)
    ids = np.arange(1000, 1300, dtype=np.uint64)
    h, e = PageIndex(32, ef=100), ExactIndex(32)
    for idx in (h, e):
        idx.add(ids, vecs)
        idx.delete(ids[::3])
    hq, hs = h.query(vecs[:20], 5)
    eq, es = e.query(vecs[:20], 5)
    assert np.array_equal(hq, eq)
    assert np.allclose(hs, es, atol=1e-5)


def recall_at(k: int, approx: np.ndarray, exact: np.ndarray) -> float:
    hits = sum(len(set(a[:k].tolist()) & set(b[:k].tolist())) for a, b in zip(approx, exact))
    return hits / (k * len(exact))


def test_hnsw_recall_on_clustered_vectors() -> None:
    dim, n = 128, 8000
    both = clustered(n + 200, dim, clusters=40, rank=24, seed=7)  # queries from the same topics
    data, queries = both[:n], both[n:]
    h = PageIndex(dim, M=16, ef_construction=100, ef=64)
    e = ExactIndex(dim)
    ids = pids(n)
    h.add(ids, data)
    e.add(ids, data)
    r = recall_at(10, h.query(queries, 10)[0], e.query(queries, 10)[0])
    assert r >= 0.95, r


def test_hnsw_recall_on_text_embeddings() -> None:
    """Embeddings of generated sentences (HashEmbedder): the index's real workload."""
    rng = np.random.default_rng(9)
    names = ["Caroline", "Melanie", "Jon", "Gina", "Tim", "John", "Maria", "Joanna", "Nate", "Audrey"]
    verbs = ["painted", "visited", "loved", "bought", "cooked", "read", "watched", "planned", "joined", "fixed"]
    things = ["a sunset", "the museum", "pottery class", "new shoes", "a pasta dinner", "a fantasy novel",
              "the meteor shower", "a camping trip", "a support group", "the old bike", "a dance studio", "the garden"]
    tails = ["yesterday", "last week", "with the kids", "after work", "in May", "for the first time", "again", ""]
    texts = [f"{rng.choice(names)} {rng.choice(verbs)} {rng.choice(things)} {rng.choice(tails)} {i % 97}" for i in range(3000)]
    emb = HashEmbedder()
    vecs = emb.embed(texts)
    h, e = PageIndex(emb.dim, ef=64), ExactIndex(emb.dim)
    ids = pids(len(texts))
    h.add(ids, vecs)
    e.add(ids, vecs)
    q = emb.embed([f"What did {n} do {t}?" for n in names for t in tails[:5]])
    hi, hs = h.query(q, 10)
    ei, es = e.query(q, 10)
    # ties in similarity make id sets ambiguous: compare the similarity of the k-th result
    assert np.mean(hs[:, -1] >= es[:, -1] - 1e-5) >= 0.95
    assert recall_at(10, hi, ei) >= 0.9


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind: type, tmp_path: Path) -> None:
    vecs = clustered(120, 24, seed=10)
    ids = pids(120)
    idx = kind(24, name="hash-v1/test")
    idx.add(ids, vecs)
    idx.delete(ids[:20])
    path = tmp_path / "pages.idx"
    idx.save(path)
    assert sorted(os.listdir(tmp_path)) == ["pages.idx"]  # no temporary left behind
    back = kind.load(path, dim=24, name="hash-v1/test")
    assert type(back) is kind and len(back) == 100 and back.name == "hash-v1/test"
    assert np.array_equal(back.ids(), idx.ids())
    a, sa = idx.query(vecs[:10], 5)
    b, sb = back.query(vecs[:10], 5)
    assert np.array_equal(a, b) and np.allclose(sa, sb)
    assert int(ids[0]) not in back
    back.add(ids[:1], vecs[:1])  # still writable after load, and grows
    back.add(pids(50, start=1000), clustered(50, 24, seed=11))
    assert len(back) == 151
    generic = load_index(path)
    assert type(generic) is kind and len(generic) == 100


def test_a_graph_saved_without_vectors_loads_as_hnswlib_loads_it(tmp_path: Path) -> None:
    """The load hands hnswlib the graph and the given vectors in memory (its unpickling); the
    index must be the one hnswlib's own load_index makes of the same graph: same answers, same
    distances, same vectors, deleted pages still waypoints, and it still grows."""
    import hnswlib

    from vmem.hnsw_file import full_graph

    dim, n = 32, 3000
    vecs = clustered(n, dim, seed=21)
    ids = pids(n)
    idx = PageIndex(dim, name="hash-v1/test", M=8, ef_construction=64)
    idx.add(ids, vecs)
    idx.delete(ids[:300])
    path = tmp_path / "pages.idx"
    idx.save(path, vectors=False)
    stored = dict(zip(ids.tolist(), vecs))

    def source(labels: np.ndarray) -> np.ndarray:
        return np.stack([stored[int(i)] for i in labels])

    back = PageIndex.load(path, dim=dim, name="hash-v1/test", vectors=source)
    # the reference: the same graph, vectors in place, written out and read by hnswlib itself
    graph = idx._hnsw
    raw_path = tmp_path / "raw.bin"
    graph.save_index(str(raw_path))
    from vmem.hnsw_file import slim_graph

    head, links, kept, upper = slim_graph(str(raw_path), dim)
    live = np.array(sorted(idx._live), dtype=np.uint64)
    with open(raw_path, "wb") as f:
        for part in full_graph(head + links + kept + upper, dim=dim, M=8, count=graph.element_count,
                               space="cosine", vectors=source):
            f.write(part)
    ref = hnswlib.Index(space="cosine", dim=dim)
    ref.load_index(str(raw_path), max_elements=n + n // 4)
    ref.set_ef(back.ef)
    q = clustered(200, dim, seed=22)
    got_ids, got_d = back._hnsw.knn_query(q, k=10)
    ref_ids, ref_d = ref.knn_query(q, k=10)
    assert np.array_equal(got_ids, ref_ids) and np.array_equal(got_d, ref_d)
    assert np.array_equal(back._hnsw.get_items(live), ref.get_items(live))
    assert np.array_equal(back.ids(), live) and int(ids[0]) not in back
    assert back._hnsw.element_count == n and back.capacity >= n + n // 4  # deleted pages kept; headroom
    back.add(pids(10, start=10_000), clustered(10, dim, seed=23))
    assert len(back) == n - 300 + 10


def test_save_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "i.idx"
    idx = PageIndex(8)
    idx.add([1], np.ones((1, 8), dtype=np.float32))
    idx.save(path)
    idx.add([2], np.arange(8, dtype=np.float32)[None] + 1)
    idx.save(path)
    assert len(PageIndex.load(path)) == 2
    assert sorted(os.listdir(tmp_path)) == ["i.idx"]


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_corrupt_and_foreign_files_raise_format_error(kind: type, tmp_path: Path) -> None:
    idx = kind(16)
    idx.add(pids(40), clustered(40, 16, seed=12))
    good = tmp_path / "good.idx"
    idx.save(good)
    raw = good.read_bytes()
    flipped = bytearray(raw)
    flipped[-100] ^= 0xFF
    cases = {
        "foreign": b"PK\x03\x04 this is a zip file, not an index" * 10,
        "empty": b"",
        "truncated": raw[: len(raw) // 2],
        "header_only": raw[:20],
        "flipped": bytes(flipped),
        "trailing": raw + b"junk",
        "bad_header": raw[:8] + b"\x05\x00\x00\x00" + b"\xc1\xc1\xc1\xc1\xc1",
    }
    for label, data in cases.items():
        with pytest.raises(IndexFormatError):
            kind.load(write_bytes(tmp_path / f"{label}.idx", data))
    with pytest.raises(FileNotFoundError):
        kind.load(tmp_path / "missing.idx")


def test_hnswlib_native_file_is_foreign(tmp_path: Path) -> None:
    import hnswlib

    raw = hnswlib.Index(space="cosine", dim=8)
    raw.init_index(max_elements=10)
    raw.add_items(np.ones((1, 8), dtype=np.float32), [1])
    raw.save_index(str(tmp_path / "native.bin"))
    with pytest.raises(IndexFormatError, match="not a vmem index"):
        PageIndex.load(tmp_path / "native.bin")


def test_wrong_kind_and_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "e.idx"
    e = ExactIndex(8, name="emb-a")
    e.add([1], np.ones((1, 8), dtype=np.float32))
    e.save(path)
    with pytest.raises(IndexFormatError, match="exact"):
        PageIndex.load(path)
    with pytest.raises(IndexMismatchError, match="dimension"):
        ExactIndex.load(path, dim=16)
    with pytest.raises(IndexMismatchError, match="emb-b"):
        ExactIndex.load(path, name="emb-b")


@pytest.mark.parametrize("kind", KINDS)
def test_input_validation(kind: type) -> None:
    idx = kind(4)
    with pytest.raises(ValueError):
        idx.add([1, 2], np.ones((1, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        idx.add([1], np.ones((1, 5), dtype=np.float32))
    with pytest.raises(ValueError):
        idx.add([1], np.array([[np.nan, 0, 0, 0]], dtype=np.float32))
    with pytest.raises(ValueError):
        idx.add([1], np.zeros((1, 4), dtype=np.float32))  # no direction in a cosine index
    with pytest.raises(ValueError):
        idx.add([-1], np.ones((1, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        idx.add([2**64 - 1], np.ones((1, 4), dtype=np.float32))
    with pytest.raises(TypeError):
        idx.add(["a"], np.ones((1, 4), dtype=np.float32))
    idx.add([1], np.ones((1, 4), dtype=np.float32))
    with pytest.raises(ValueError):
        idx.query(np.ones((1, 4), dtype=np.float32), -1)
    with pytest.raises(ValueError):
        idx.query(np.ones((1, 3), dtype=np.float32), 1)
    with pytest.raises(TypeError):
        idx.query(np.ones((1, 4), dtype=np.float32), 1, filter=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        kind(0)
    with pytest.raises(ValueError):
        kind(4, space="l2")


def test_inner_product_space() -> None:
    for kind in KINDS:
        idx = kind(3, space="ip")
        idx.add([1, 2], np.array([[2, 0, 0], [0, 1, 0]], dtype=np.float32))
        got, sims = idx.query(np.array([[1, 1, 0]], dtype=np.float32), 2)
        assert got.tolist() == [[1, 2]]
        assert np.allclose(sims, [[2.0, 1.0]], atol=1e-5)


def test_ef_is_tunable() -> None:
    idx = PageIndex(8, ef=10)
    idx.ef = 128
    assert idx.ef == 128
    with pytest.raises(ValueError):
        idx.ef = 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["add", "delete"]), st.lists(st.integers(0, 30), min_size=1, max_size=6)), max_size=12))
def test_live_set_matches_a_model(ops: list[tuple[str, list[int]]]) -> None:
    """Both indexes track the same live set as a plain Python set, whatever the sequence of adds and deletes."""
    rng = np.random.default_rng(0)
    indexes = [PageIndex(8, capacity=2), ExactIndex(8, capacity=2)]
    model: set[int] = set()
    for op, ids in ops:
        if op == "add":
            vecs = rng.normal(size=(len(ids), 8)).astype(np.float32) + 0.01
            for idx in indexes:
                idx.add(ids, vecs)
            model |= set(ids)
        else:
            for idx in indexes:
                idx.delete(ids)
            model -= set(ids)
    for idx in indexes:
        assert len(idx) == len(model)
        assert set(idx.ids().tolist()) == model
        if model:
            got, _ = idx.query(np.ones((1, 8), dtype=np.float32), 50)
            assert set(got[0].tolist()) == model


def test_batch_adds_use_the_cores_the_process_may_use(tmp_path: Path) -> None:
    """Given -1 by set_num_threads, hnswlib 0.8 adds a batch on one thread: the index asks for
    the cores it may use instead, also when loaded from a file."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    idx = PageIndex(8)
    assert idx._hnsw.num_threads == cores > 0
    idx.add(pids(10), clustered(10, 8))
    idx.save(tmp_path / "i.idx")
    assert PageIndex.load(tmp_path / "i.idx")._hnsw.num_threads == cores
    assert PageIndex(8, num_threads=1)._hnsw.num_threads == 1
