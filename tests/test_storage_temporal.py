"""Facts with a time: archival passages' intervals (valid_from, invalid_at, superseded_by),
supersede(), current-first ranking and as_of searches, on every backend that keeps them, and
the clear refusal of the one that does not (Milvus)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_storage_archival import BACKENDS, HAVE_MILVUS

from vmem import PageKind, make_page_id
from vmem.storage import MemoryDir, NotFoundError, UnsupportedError, open_store
from old_schema import drop_checksums, float32_embeddings
from vmem.storage._db import SCHEMA_VERSION
from vmem.storage.memdir import DB_NAME

UTC = dt.timezone.utc
T0 = dt.datetime(2023, 5, 1, 9, 0, tzinfo=UTC)


def day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


@pytest.fixture
def store(place) -> Iterator[MemoryDir]:
    """A directory or a PostgreSQL agent: the intervals' rules hold on both."""
    with open_store(place("agent")) as s:
        yield s


@pytest.fixture(params=BACKENDS)
def any_store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MemoryDir]:
    if request.param == "postgres":
        location, archival = request.getfixturevalue("pg_server").agent_url("agent"), None
    else:
        location, archival = tmp_path / "agent", request.param
    with open_store(location, archival=archival) as s:
        yield s


# ---------------------------------------------------------------- inserting with a time


def test_valid_from_defaults_to_the_timestamp(any_store: MemoryDir) -> None:
    [pid] = any_store.archival.insert("Ana makes 60 calls a day.", timestamp=day(1))
    p = any_store.archival.get(pid)
    assert p.valid_from == p.held_from == day(1)
    assert p.current and p.invalid_at is None and p.superseded_by is None
    assert p.valid_at(day(1)) and p.valid_at(day(400)) and not p.valid_at(day(0.5))


def test_explicit_valid_from(store: MemoryDir) -> None:
    [a] = store.archival.insert("Ana moved to Lisbon.", timestamp=day(10), valid_from=day(3))
    [b], [c] = store.archival.insert_many(["Ana has a cat.", "Ana has a dog."], timestamp=day(10),
                                          valid_from=[day(1), day(2)])
    got = {p.id: p.valid_from for p in store.archival.get_many([a, b, c])}
    assert got == {a: day(3), b: day(1), c: day(2)}
    assert store.archival.get(a).timestamp == day(10)


def test_valid_from_is_checked(any_store: MemoryDir) -> None:
    with pytest.raises(ValueError, match="2 times for 1 texts"):
        any_store.archival.insert_many(["x"], valid_from=[day(1), day(2)])
    with pytest.raises(ValueError, match="timezone-aware"):
        any_store.archival.insert("x", valid_from=dt.datetime(2024, 1, 1))
    with pytest.raises(TypeError, match="valid_from"):
        any_store.archival.insert_many(["x"], valid_from="2024-01-01")  # type: ignore[arg-type]
    assert len(any_store.archival) == 0


def test_a_long_text_holds_from_one_time(store: MemoryDir) -> None:
    text = "\n\n".join(f"Paragraph {i}: " + "word " * 60 for i in range(4))
    [ids] = store.archival.insert_many([text], timestamp=day(5), valid_from=[day(2)])
    assert len(ids) > 1 and {p.valid_from for p in store.archival.get_many(ids)} == {day(2)}


# ---------------------------------------------------------------- supersede


def test_supersede_marks_the_old_fact(store: MemoryDir) -> None:
    [old] = store.archival.insert("Ana makes 60 calls a day.", timestamp=day(0))
    [new] = store.archival.insert("Ana makes 1,200 calls a day now.", timestamp=day(60))
    assert store.archival.supersede([old], new, day(60)) == [old]
    p = store.archival.get(old)
    assert (p.current, p.invalid_at, p.superseded_by, p.valid_from) == (False, day(60), new, day(0))
    assert p.valid_at(day(59)) and not p.valid_at(day(60))
    assert store.archival.get(new).current
    assert len(store.archival) == 2  # nothing is deleted
    # again: nothing left to change, the first interval is kept
    assert store.archival.supersede([old], new, day(90)) == []
    assert store.archival.get(old).invalid_at == day(60)


def test_supersede_without_a_replacement(store: MemoryDir) -> None:
    [old] = store.archival.insert("The office is open on Sundays.", timestamp=day(0))
    assert store.archival.supersede([old], None, day(3)) == [old]
    p = store.archival.get(old)
    assert not p.current and p.superseded_by is None


def test_supersede_refuses_bad_ids_and_changes_nothing(store: MemoryDir) -> None:
    [a], [b], [c] = store.archival.insert_many(["fact a", "fact b", "fact c"], timestamp=day(5))
    ghost = make_page_id(PageKind.PASSAGE, 999)
    with pytest.raises(NotFoundError):
        store.archival.supersede([a, ghost], c, day(6))
    with pytest.raises(NotFoundError):
        store.archival.supersede([a], ghost, day(6))
    with pytest.raises(ValueError, match="itself"):
        store.archival.supersede([a, b], b, day(6))
    with pytest.raises(ValueError, match="not a PASSAGE"):
        store.archival.supersede([make_page_id(PageKind.MESSAGE, 1)], c, day(6))
    with pytest.raises(ValueError, match="cannot stop holding earlier"):
        store.archival.supersede([a, b], c, day(4))  # before they began to hold
    with pytest.raises(ValueError, match="timezone-aware"):
        store.archival.supersede([a], c, dt.datetime(2024, 1, 1))
    with pytest.raises(TypeError):
        store.archival.supersede(a, c, day(6))  # type: ignore[arg-type]
    assert all(p.current for p in store.archival.get_many([a, b, c]))
    assert store.archival.supersede([], c, day(6)) == []
    store.archival.supersede([b], c, day(6))
    with pytest.raises(ValueError, match="itself superseded"):
        store.archival.supersede([a], b, day(7))
    assert store.archival.get(a).current


def test_supersede_joins_the_open_transaction(store: MemoryDir) -> None:
    [a], [b] = store.archival.insert_many(["old fact", "new fact"], timestamp=day(1))
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.archival.supersede([a], b, day(2))
            raise RuntimeError("abort")
    assert store.archival.get(a).current
    assert store.archival.search("fact", mode="text").items[0].current


def test_the_same_text_stated_again_is_a_new_current_fact(store: MemoryDir) -> None:
    [paris] = store.archival.insert("Ana lives in Paris.", timestamp=day(0))
    [london] = store.archival.insert("Ana lives in London.", timestamp=day(100))
    store.archival.supersede([paris], london, day(100))
    [again] = store.archival.insert("Ana lives in Paris.", timestamp=day(300))
    assert again != paris and store.archival.get(again).current and not store.archival.get(paris).current
    assert store.archival.insert("Ana lives in Paris.", timestamp=day(301)) == [again]  # deduplicated again
    store.archival.supersede([london], again, day(300))
    assert [p.id for p in store.archival.search("Paris", mode="text").items] == [again, paris]
    assert [p.id for p in store.archival.search("Paris", mode="text", as_of=day(50)).items] == [paris]


def test_intervals_survive_reopen(place) -> None:
    with open_store(place("a")) as s:
        [a] = s.archival.insert("old", timestamp=day(0), valid_from=day(-5))
        [b] = s.archival.insert("new", timestamp=day(9))
        s.archival.supersede([a], b, day(9))
    with open_store(place("a")) as s:
        p = s.archival.get(a)
        assert (p.valid_from, p.invalid_at, p.superseded_by) == (day(-5), day(9), b)


@pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus/milvus-lite not installed")
@pytest.mark.milvus
def test_milvus_keeps_no_intervals_and_says_so(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a", archival="milvus") as s:
        [a] = s.archival.insert("old fact", timestamp=day(0))
        [b] = s.archival.insert("new fact", timestamp=day(5))
        with pytest.raises(UnsupportedError, match="SQLite"):
            s.archival.supersede([a], b, day(5))
        with pytest.raises(NotImplementedError):
            s.archival.insert("dated fact", timestamp=day(6), valid_from=day(1))
        assert len(s.archival) == 2 and s.archival.get(a).current
        # as_of is exact there: every passage holds from its timestamp and never stops
        assert [p.id for p in s.archival.search("fact", mode="text", as_of=day(2)).items] == [a]
        assert {p.id for p in s.archival.search("fact", mode="vector", as_of=day(9)).items} == {a, b}


# ---------------------------------------------------------------- the migration


def test_a_schema_2_store_is_migrated(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        [a] = s.archival.insert("Ana makes 60 calls a day.", timestamp=day(0))
        [b] = s.archival.insert("Ana makes 1,200 calls a day.", timestamp=day(60))
    con = sqlite3.connect(tmp_path / "a" / DB_NAME)  # make it look like version 2
    drop_checksums(con)  # version 4's checksums
    float32_embeddings(con)  # version 5's float16
    con.executescript("""
        DROP INDEX passages_valid_from;
        DROP INDEX passages_invalid_at;
        ALTER TABLE passages DROP COLUMN valid_from;
        ALTER TABLE passages DROP COLUMN invalid_at;
        ALTER TABLE passages DROP COLUMN superseded_by;
        PRAGMA user_version=2;
    """)
    con.close()
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.archival.get(a).valid_from == day(0) and s.archival.get(b).valid_from == day(60)
        assert s.archival.supersede([a], b, day(60)) == [a]
        assert [p.id for p in s.archival.search("calls a day", mode="text").items] == [b, a]
    con = sqlite3.connect(tmp_path / "a" / DB_NAME)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    cols = {r[1] for r in con.execute("PRAGMA table_info(passages)")}
    assert {"valid_from", "invalid_at", "superseded_by"} <= cols
    con.close()


# ---------------------------------------------------------------- searching: current first, as_of


def _calls(store: MemoryDir) -> tuple[int, int, int]:
    """An old fact that matches the query best, its replacement, and an unrelated current passage."""
    [old] = store.archival.insert("Ana's team makes 60 calls a day, calls calls calls.", timestamp=day(0))
    [new] = store.archival.insert("Ana's team now makes 1,200 calls a day.", timestamp=day(60))
    [other] = store.archival.insert("The weather in Lisbon is mild.", timestamp=day(61))
    return old, new, other


@pytest.mark.parametrize("mode", ["text", "vector", "hybrid"])
def test_current_facts_rank_above_superseded_ones(store: MemoryDir, mode: str) -> None:
    old, new, other = _calls(store)
    store.archival.tie_break = None  # type: ignore[attr-defined]  # words alone (no near-tie rule)
    before = [p.id for p in store.archival.search("how many calls a day", mode=mode).items]  # type: ignore[arg-type]
    assert before.index(old) < before.index(new)  # the stale fact matches best by words
    store.archival.supersede([old], new, day(60))
    page = store.archival.search("how many calls a day", mode=mode)  # type: ignore[arg-type]
    ids = [p.id for p in page.items]
    assert ids.index(new) < ids.index(old)
    assert all(p.current for p in page.items[: ids.index(old)])
    assert not any(p.current for p in page.items[ids.index(old):])
    assert page.total == (2 if mode == "text" else 3)


def test_listing_puts_current_facts_first(store: MemoryDir) -> None:
    old, new, other = _calls(store)
    [newest] = store.archival.insert("Newest note.", timestamp=day(90))
    store.archival.supersede([new], None, day(70))
    assert [p.id for p in store.archival.search(None).items] == [newest, other, old, new]
    assert [p.id for p in store.archival.search(None, page=1, page_size=3).items] == [new]


@pytest.mark.parametrize("mode", ["text", "vector", "hybrid"])
def test_as_of_keeps_only_what_held_then(store: MemoryDir, mode: str) -> None:
    old, new, other = _calls(store)
    store.archival.supersede([old], new, day(60))
    q = "calls a day"
    at = {t: {p.id for p in store.archival.search(q, mode=mode, as_of=day(t)).items} for t in (-1, 30, 60, 61)}  # type: ignore[arg-type]
    assert at[-1] == set()
    assert at[30] == {old}
    if mode == "text":
        assert at[60] == at[61] == {new}
    else:
        assert at[60] == {new} and at[61] == {new, other}
    with pytest.raises(TypeError, match="as_of"):
        store.archival.search(q, as_of=dt.date(2023, 5, 1))  # type: ignore[arg-type]


def test_as_of_with_tags_and_dates(store: MemoryDir) -> None:
    [a] = store.archival.insert("Ana's phone is 111.", tags=["ana"], timestamp=day(0))
    [b] = store.archival.insert("Ana's phone is 222.", tags=["ana"], timestamp=day(10))
    [c] = store.archival.insert("Bob's phone is 333.", tags=["bob"], timestamp=day(11))
    store.archival.supersede([a], b, day(10))
    for mode in ("text", "vector", "hybrid"):
        got = store.archival.search("phone", mode=mode, tags=["ana"], as_of=day(5))  # type: ignore[arg-type]
        assert [p.id for p in got.items] == [a]
        got = store.archival.search("phone", mode=mode, tags=["ana", "bob"], as_of=day(20), end=day(10.5))  # type: ignore[arg-type]
        assert [p.id for p in got.items] == [b]
    assert {p.id for p in store.archival.search(None, as_of=day(20)).items} == {b, c}


def test_a_big_store_uses_the_unfiltered_index_past_the_superseded(place) -> None:
    """Enough passages that the current-first vector search looks past the few superseded
    ones in the HNSW index (not an exact prefilter), and still returns every current match
    before any superseded one."""
    with open_store(place("a")) as s:
        ids = [i[0] for i in s.archival.insert_many([f"note {i} about topic {i % 7}" for i in range(300)],
                                                   timestamp=day(0))]
        s.archival.supersede(ids[:5], ids[5], day(1))
        for mode in ("vector", "hybrid"):
            whole = [p.id for p in s.archival.search("note about topic 3", mode=mode, page_size=300).items]  # type: ignore[arg-type]
            assert sorted(whole) == sorted(ids) and set(whole[-5:]) == set(ids[:5])
            # pages within one bucket of the ranking (PAGE_BUCKET) are disjoint and complete
            pages = [s.archival.search("note about topic 3", mode=mode, page=n, page_size=25).items  # type: ignore[arg-type]
                     for n in range(4)]
            first = s.archival.search("note about topic 3", mode=mode, page_size=100).items  # type: ignore[arg-type]
            assert [p.id for page in pages for p in page] == [p.id for p in first]
            # as_of: what held on day 0.5 (all 300), and on day 2 (all but the 5 superseded)
            for t, want in ((0.5, set(ids)), (2, set(ids[5:]))):
                got = s.archival.search("note about topic 3", mode=mode, as_of=day(t), page_size=300).items  # type: ignore[arg-type]
                assert {p.id for p in got} == want


# ---------------------------------------------------------------- property: against a reference


FACTS = st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 40), st.booleans()),  # (topic, day, superseded later?)
    min_size=1, max_size=30,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(facts=FACTS, page_size=st.integers(1, 7), query_topic=st.integers(0, 5), as_of_day=st.integers(-1, 60))
def test_paging_is_disjoint_complete_and_current_first(tmp_path_factory: pytest.TempPathFactory, facts: list,
                                                       page_size: int, query_topic: int, as_of_day: int) -> None:
    with MemoryDir.open(tmp_path_factory.mktemp("p") / "a") as s:
        texts = [f"fact {n} on topic{t} said on day {d}" for n, (t, d, _) in enumerate(facts)]
        ids = [s.archival.insert(text, timestamp=day(d))[0] for text, (_, d, _) in zip(texts, facts)]
        for n, (t, d, gone) in enumerate(facts):
            if gone:  # superseded 5 days after it was said, by the next fact if any
                by = ids[n + 1] if n + 1 < len(ids) and s.archival.get(ids[n + 1]).current else None
                s.archival.supersede([ids[n]], by, day(d + 5))
        stored = {p.id: p for p in s.archival.get_many(ids)}
        query = f"topic{query_topic}"
        for mode in ("text", "vector", "hybrid"):
            for as_of in (None, day(as_of_day)):
                seen: list[int] = []
                page = 0
                while True:
                    got = s.archival.search(query, mode=mode, page=page, page_size=page_size, as_of=as_of)  # type: ignore[arg-type]
                    seen += [p.id for p in got.items]
                    if not got.has_next:
                        break
                    page += 1
                assert len(seen) == len(set(seen)), "pages overlap"
                if as_of is not None:
                    want = {i for i, p in stored.items() if p.valid_at(as_of)}
                else:
                    want = set(stored)
                if mode == "text":
                    want = {i for i in want if query in stored[i].text}
                assert set(seen) == want, (mode, as_of)
                if as_of is None:  # (with as_of every candidate held then: one ranking)
                    flags = [stored[i].current for i in seen]
                    assert flags == sorted(flags, reverse=True), "a superseded fact ranks above a current one"
