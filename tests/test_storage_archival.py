"""Archival storage: the same suite against every backend (SQLite + HNSW, Milvus Lite, and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vmem import PageKind, make_page_id, page_kind
from vmem.storage import MemoryDir, NotFoundError, open_store

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 6, 1, 9, 0, tzinfo=UTC)

HAVE_MILVUS = importlib.util.find_spec("pymilvus") is not None and importlib.util.find_spec("milvus_lite") is not None

BACKENDS = [
    "sqlite",
    pytest.param(
        "milvus",
        marks=[
            pytest.mark.milvus,
            pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus/milvus-lite not installed (pip install 'vmem[milvus]')"),
        ],
    ),
    pytest.param("postgres", marks=pytest.mark.postgres),  # a PgStore: its passages in the same database
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def where(tmp_path: Path, backend: str, request: pytest.FixtureRequest):
    """``where(name)``: a store location for the backend (a PostgreSQL agent URL for "postgres")."""
    if backend == "postgres":
        server = request.getfixturevalue("pg_server")
        made: dict[str, str] = {}
        return lambda name: made.setdefault(name, server.agent_url(name))
    return lambda name: tmp_path / name


def _open(location, backend: str | None = None, **kw):
    return open_store(location, archival=None if backend == "postgres" else backend, **kw)


@pytest.fixture
def store(where, backend: str) -> Iterator[MemoryDir]:
    with _open(where("agent"), backend, max_passage_chars=200) as s:
        yield s


def day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


def test_backend_is_the_one_asked_for(store: MemoryDir, backend: str) -> None:
    assert store.archival.backend == backend


def test_insert_get_round_trip(store: MemoryDir) -> None:
    [pid] = store.archival.insert("The Eiffel tower is in Paris.", tags=["geo", "paris"], timestamp=day(1))
    assert page_kind(pid) is PageKind.PASSAGE
    p = store.archival.get(pid)
    assert (p.id, p.text, p.tags, p.timestamp) == (pid, "The Eiffel tower is in Paris.", ("geo", "paris"), day(1))
    assert p.timestamp.tzinfo is UTC
    assert len(store.archival) == 1


def test_get_errors(store: MemoryDir) -> None:
    with pytest.raises(NotFoundError):
        store.archival.get(make_page_id(PageKind.PASSAGE, 12345))
    with pytest.raises(ValueError, match="not a PASSAGE"):
        store.archival.get(make_page_id(PageKind.MESSAGE, 1))
    with pytest.raises(ValueError):
        store.archival.insert("   ")
    with pytest.raises(ValueError, match="timezone-aware"):
        store.archival.insert("x", timestamp=dt.datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="tags"):
        store.archival.insert("x", tags=[""])
    assert len(store.archival) == 0


def test_long_text_is_split_into_bounded_passages(store: MemoryDir) -> None:
    text = "\n\n".join(f"Paragraph {i}. " + " ".join(f"Sentence {i}.{j} talks about topic{i}." for j in range(6)) for i in range(5))
    ids = store.archival.insert(text, tags=["doc"])
    assert len(ids) > 5 and len(set(ids)) == len(ids)
    passages = store.archival.get_many(ids)
    assert all(len(p.text) <= 200 and p.tags == ("doc",) for p in passages)
    assert "".join("".join(p.text.split()) for p in passages) == "".join(text.split())


def test_exact_duplicates_are_stored_once(store: MemoryDir) -> None:
    a = store.archival.insert("Water boils at 100 degrees Celsius.", tags=["physics"])
    b = store.archival.insert("Water boils at 100 degrees Celsius.", tags=["kitchen", "physics"])
    assert a == b and len(store.archival) == 1
    assert store.archival.get(a[0]).tags == ("physics", "kitchen")  # tags merged, order kept
    [c, d, e] = store.archival.insert_many(["Ice melts at 0 C.", "Ice melts at 0 C.", "Water boils at 100 degrees Celsius."])
    assert c == d and e == a and len(store.archival) == 2
    assert store.archival.search(None, tags=["kitchen"]).total == 1


def _fruit_corpus(store: MemoryDir) -> dict[str, list[int]]:
    fruit = [f"Apples and oranges, note {i}: fruit salad with apples." for i in range(60)]
    ids = store.archival.insert_many(fruit, tags=["fruit"], timestamp=day(0))
    rare = store.archival.insert_many(
        ["Quantum entanglement of photons.", "Superconducting qubits decohere.", "Bell inequality experiments."],
        tags=["rare", "physics"], timestamp=day(10),
    )
    other = store.archival.insert_many(["Photons travel at the speed of light."], tags=["physics"], timestamp=day(20))
    return {"fruit": [i[0] for i in ids], "rare": [i[0] for i in rare], "other": [i[0] for i in other]}


def test_text_search_bm25(store: MemoryDir) -> None:
    ids = _fruit_corpus(store)
    page = store.archival.search("photons", mode="text")
    assert page.total == 2
    assert {p.id for p in page.items} == {ids["rare"][0], ids["other"][0]}
    assert all(h.score > 0 for h in page.hits)
    assert store.archival.search("zeppelin", mode="text").total == 0
    assert store.archival.search("?!", mode="text").total == 0


@pytest.mark.parametrize("mode", ["vector", "hybrid"])
def test_vector_and_hybrid_find_the_closest(store: MemoryDir, mode: str) -> None:
    ids = _fruit_corpus(store)
    page = store.archival.search("superconducting qubits decohere", mode=mode, page_size=3)  # type: ignore[arg-type]
    assert page.items[0].id == ids["rare"][1]
    assert page.total == len(store.archival)  # every passage is a vector candidate
    scores = [h.score for h in page.hits]
    assert scores == sorted(scores, reverse=True)


def test_explicit_vector_equals_embedded_query(store: MemoryDir) -> None:
    _fruit_corpus(store)
    v = store.embedder.embed(["Bell inequality"])[0]
    a = store.archival.search("Bell inequality", mode="vector")
    b = store.archival.search(vector=v, mode="vector")
    assert [h.item.id for h in a.hits] == [h.item.id for h in b.hits]
    with pytest.raises(ValueError, match="dimension"):
        store.archival.search(vector=np.ones(7), mode="vector")
    with pytest.raises(ValueError, match="text"):
        store.archival.search(vector=v, mode="text")
    with pytest.raises(ValueError):
        store.archival.search("x", mode="fuzzy")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["vector", "hybrid", "text"])
def test_filters_apply_before_the_top_k_cut(store: MemoryDir, mode: str) -> None:
    """The 3 "rare" passages are the least similar to "apples": a post-filter would find none."""
    ids = _fruit_corpus(store)
    query = "apples fruit photons" if mode == "text" else "apples fruit salad"
    page = store.archival.search(query, mode=mode, tags=["rare"], page_size=3)  # type: ignore[arg-type]
    if mode == "text":  # only one rare passage says "photons"
        assert [p.id for p in page.items] == [ids["rare"][0]] and page.total == 1
    else:
        assert len(page.hits) == 3 and page.total == 3
        assert {p.id for p in page.items} == set(ids["rare"])
    unfiltered = store.archival.search("apples fruit salad", mode="vector", page_size=10)
    assert not set(ids["rare"]) & {p.id for p in unfiltered.items}


def test_tag_match_any_and_all(store: MemoryDir) -> None:
    ids = _fruit_corpus(store)
    any_ = store.archival.search(None, tags=["rare", "physics"], tags_match="any", page_size=50)
    all_ = store.archival.search(None, tags=["rare", "physics"], tags_match="all", page_size=50)
    assert {p.id for p in any_.items} == set(ids["rare"] + ids["other"]) and any_.total == 4
    assert {p.id for p in all_.items} == set(ids["rare"]) and all_.total == 3
    assert store.archival.search(None, tags=["rare", "fruit"], tags_match="all").total == 0
    assert store.archival.search(None, tags=[]).total == len(store.archival)  # empty = no tag filter
    vec = store.archival.search("photons light", mode="vector", tags=["physics", "rare"], tags_match="all")
    assert {p.id for p in vec.items} == set(ids["rare"])
    with pytest.raises(ValueError):
        store.archival.search(None, tags=["x"], tags_match="most")  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["vector", "hybrid", "text"])
def test_date_range_filter(store: MemoryDir, mode: str) -> None:
    ids = _fruit_corpus(store)
    query = "photons" if mode == "text" else "photons entanglement light"
    page = store.archival.search(query, mode=mode, start=day(15), end=None, page_size=5)  # type: ignore[arg-type]
    assert [p.id for p in page.items] == ids["other"] and page.total == 1
    page = store.archival.search(query, mode=mode, start=day(5), end=day(10).date(), page_size=5)  # type: ignore[arg-type]
    want = {ids["rare"][0]} if mode == "text" else set(ids["rare"])
    assert {p.id for p in page.items} == want
    assert store.archival.search(None, start=day(0), end=day(0)).total == 60
    assert store.archival.search(None, end=day(-1)).total == 0


@pytest.mark.parametrize("query,mode", [(None, "hybrid"), ("apples", "text"), ("apples", "vector"), ("apples", "hybrid")])
def test_paging_is_complete_and_disjoint(store: MemoryDir, query: str | None, mode: str) -> None:
    ids = _fruit_corpus(store)
    first = store.archival.search(query, mode=mode, tags=["fruit"], page_size=7)  # type: ignore[arg-type]
    assert first.total == 60 and first.pages == 9
    seen: list[int] = []
    for p in range(first.pages):
        page = store.archival.search(query, mode=mode, tags=["fruit"], page=p, page_size=7)  # type: ignore[arg-type]
        assert page.page == p and page.total == 60
        assert len(page.hits) == (7 if p < 8 else 4)
        seen += [x.id for x in page.items]
    assert len(seen) == len(set(seen)) == 60 and set(seen) == set(ids["fruit"])
    assert store.archival.search(query, mode=mode, tags=["fruit"], page=9, page_size=7).hits == []  # type: ignore[arg-type]


def test_listing_is_newest_first(store: MemoryDir) -> None:
    a = store.archival.insert("old fact", timestamp=day(1))[0]
    b = store.archival.insert("new fact", timestamp=day(3))[0]
    c = store.archival.insert("middle fact", timestamp=day(2))[0]
    assert [p.id for p in store.archival.search(None).items] == [b, c, a]


def test_delete(store: MemoryDir) -> None:
    ids = _fruit_corpus(store)
    gone = ids["rare"][1]
    assert store.archival.delete([gone, make_page_id(PageKind.PASSAGE, 999_999)]) == 1
    with pytest.raises(NotFoundError):
        store.archival.get(gone)
    assert len(store.archival) == 63
    for mode in ("text", "vector", "hybrid"):
        page = store.archival.search("superconducting qubits decohere", mode=mode, page_size=64)  # type: ignore[arg-type]
        assert gone not in {p.id for p in page.items}
    assert store.archival.delete([]) == 0


def test_passages_survive_reopen(where, backend: str) -> None:
    with _open(where("a"), backend) as s:
        ids = s.archival.insert_many(["Mount Everest is 8849 m high.", "K2 is 8611 m high."], tags=["peaks"], timestamp=day(1))
    with _open(where("a")) as s:  # backend remembered
        assert s.archival.backend == backend
        assert [p.text for p in s.archival.get_many([i[0] for i in ids])] == ["Mount Everest is 8849 m high.", "K2 is 8611 m high."]
        assert s.archival.search("everest", mode="text").items[0].id == ids[0][0]
        assert s.archival.search("how high is everest", mode="vector").items[0].id == ids[0][0]
        new = s.archival.insert("Kangchenjunga is 8586 m high.")[0]
        assert new not in {i[0] for i in ids}  # ids never reused


def test_tag_with_quotes_and_unicode(store: MemoryDir) -> None:
    pid = store.archival.insert("tagged oddly", tags=['he said "hi"', "back\\slash", "caf\u00e9"])[0]
    for t in ('he said "hi"', "back\\slash", "caf\u00e9"):
        assert [p.id for p in store.archival.search(None, tags=[t]).items] == [pid]


@pytest.mark.milvus
@pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus/milvus-lite not installed (pip install 'vmem[milvus]')")
def test_milvus_refuses_another_embedder(tmp_path: Path) -> None:
    from vmem import HashEmbedder
    from vmem.storage import ConfigMismatchError

    with MemoryDir.open(tmp_path / "a", archival="milvus") as s:
        s.archival.insert("a passage")
    with pytest.raises(ConfigMismatchError, match="embedder"):
        MemoryDir.open(tmp_path / "a", embedder=HashEmbedder(seed=9))  # same dim, other vectors
    with pytest.raises(ConfigMismatchError, match="dimensional"):
        MemoryDir.open(tmp_path / "a", embedder=HashEmbedder(dim=64))
    with MemoryDir.open(tmp_path / "a") as s:  # the refused opens left it usable
        assert len(s.archival) == 1


def test_milvus_without_pymilvus_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from vmem.storage import BackendError

    monkeypatch.setitem(sys.modules, "pymilvus", None)  # import pymilvus -> ImportError
    with pytest.raises(BackendError, match="pip install"):
        MemoryDir.open(tmp_path / "a", archival="milvus")
    with MemoryDir.open(tmp_path / "b"):  # nothing left locked or half-made elsewhere
        pass


def test_a_rolled_back_insert_leaves_no_passage(store: MemoryDir) -> None:
    kept = store.archival.insert("a passage that stays")
    with pytest.raises(RuntimeError, match="abort"):
        with store.transaction():
            store.archival.insert("a passage of a transaction that fails")
            store.archival.insert("a passage that stays", tags=["new tag"])  # a tag merge, undone too
            raise RuntimeError("abort")
    assert len(store.archival) == 1
    assert store.archival.search("transaction fails", mode="text").total == 0
    assert store.archival.get(kept[0]).tags == ()
    assert store.archival.insert("another passage")  # the serials of the rolled-back insert are reused safely
    assert len(store.archival) == 2


@pytest.mark.milvus
@pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus/milvus-lite not installed (pip install 'vmem[milvus]')")
def test_milvus_rows_a_crash_left_uncommitted_are_removed_on_open(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a", archival="milvus") as s:
        kept = s.archival.insert_many(["one passage", "two passages"])
        # what a crash between Milvus's write and the rollback leaves: a row the ledger does not hold
        s.archival._c.insert(s.archival.collection, [{"id": 99, "text": "orphan", "tags": [], "ts": 0.0,
                                                      "hash": "0" * 32, "vec": [0.0] * s.embedder.dim}])
        s._db.set_meta("next_passage_serial", 100)
    with MemoryDir.open(tmp_path / "a") as s:
        assert len(s.archival) == 2
        assert s.archival.search("orphan", mode="text").total == 0
        assert [p.text for p in s.archival.get_many([k[0] for k in kept])] == ["one passage", "two passages"]
