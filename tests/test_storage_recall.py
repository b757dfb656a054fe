"""Recall storage: verbatim messages, BM25 search (FTS5's rules, the C index), role/date filters, paging."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmem import PageKind, make_page_id, page_kind
from vmem.storage import MemoryDir, NotFoundError, open_store

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(place) -> Iterator[MemoryDir]:
    """The recall store of a directory, or of a PostgreSQL agent (the same suite runs on both)."""
    with open_store(place("agent")) as s:
        yield s


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def test_append_and_get_round_trip(store: MemoryDir) -> None:
    ts = dt.datetime(2024, 3, 1, 14, 30, 15, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    meta = {"tool_call_id": "call_1", "n": 3, "nested": {"a": [1, 2.5, None]}, "raw": b"\x00\xff"}
    mid = store.recall.append("tool", "  verbatim\ncontent, kept exactly  ", timestamp=ts, meta=meta)
    assert page_kind(mid) is PageKind.MESSAGE
    m = store.recall.get(mid)
    assert (m.id, m.role, m.content, m.meta) == (mid, "tool", "  verbatim\ncontent, kept exactly  ", meta)
    assert m.timestamp == ts and m.timestamp.tzinfo is UTC
    assert len(store.recall) == 1


def test_default_timestamp_is_now_utc(store: MemoryDir) -> None:
    before = dt.datetime.now(UTC)
    m = store.recall.get(store.recall.append("user", "hi"))
    assert before <= m.timestamp <= dt.datetime.now(UTC)
    assert m.meta == {}


def test_get_errors(store: MemoryDir) -> None:
    with pytest.raises(NotFoundError):
        store.recall.get(make_page_id(PageKind.MESSAGE, 99))
    with pytest.raises(KeyError):  # NotFoundError is a KeyError too
        store.recall.get(make_page_id(PageKind.MESSAGE, 99))
    with pytest.raises(ValueError, match="not a MESSAGE"):
        store.recall.get(make_page_id(PageKind.PASSAGE, 1))


def test_append_many_is_one_atomic_transaction(store: MemoryDir) -> None:
    ids = store.recall.append_many(
        [("user", "one"), {"role": "assistant", "content": "two", "timestamp": at(1)}, ("user", "three", at(2), {"k": 1})]
    )
    assert [m.content for m in store.recall.get_many(ids[::-1])] == ["three", "two", "one"]
    assert store.recall.get(ids[2]).meta == {"k": 1}
    with pytest.raises(TypeError, match="msgpack"):
        store.recall.append_many([("user", "fine"), ("user", "bad meta", None, {"x": object()})])
    with pytest.raises(ValueError, match="role"):
        store.recall.append_many([("user", "fine"), ("", "no role")])
    with pytest.raises(ValueError, match="timezone-aware"):
        store.recall.append_many([("user", "fine"), ("user", "naive", dt.datetime(2024, 1, 1))])
    assert len(store.recall) == 3  # none of the failed batches left anything behind
    assert store.recall.append_many([]) == []


def _corpus(store: MemoryDir) -> dict[str, int]:
    rows = {
        "cat": ("user", "My cat Whiskers loves running in the garden", at(0)),
        "dog": ("assistant", "Dogs are loyal; a dog runs to its owner", at(24)),
        "both": ("user", "the cat and the dog ran together in the garden, cat cat", at(48)),
        "quantum": ("user", "quantum chromodynamics lecture notes", at(72)),
        "tool": ("tool", "garden sensor reports 21 degrees", at(96)),
    }
    ids = store.recall.append_many([r for r in rows.values()])
    return dict(zip(rows, ids))


def test_text_search_ranks_by_bm25(store: MemoryDir) -> None:
    ids = _corpus(store)
    page = store.recall.search("cat")
    assert page.total == 2 and [h.item.id for h in page.hits] == [ids["both"], ids["cat"]]
    assert page.hits[0].score > page.hits[1].score > 0
    # porter stemming: "run" matches running / runs / ran is irregular (not matched)
    got = {h.item.id for h in store.recall.search("run").hits}
    assert got == {ids["cat"], ids["dog"]}
    assert store.recall.search("chromodynamics").items[0].id == ids["quantum"]


def test_text_search_no_match_and_unsearchable(store: MemoryDir) -> None:
    _corpus(store)
    for q in ("zebra", "?!?", '"unbalanced AND (NOT', "*"):
        page = store.recall.search(q)
        assert page.total == 0 and page.hits == [] and page.pages == 0
    # FTS5 syntax in a query is taken as words, never as operators
    assert store.recall.search("NEAR(cat dog)").total == 3


def test_role_and_date_filters_apply_in_sql(store: MemoryDir) -> None:
    ids = _corpus(store)
    assert {h.item.id for h in store.recall.search("garden", roles=["user"]).hits} == {ids["cat"], ids["both"]}
    assert store.recall.search("garden", roles="tool").items[0].id == ids["tool"]
    assert store.recall.search("garden", roles=[]).total == 0
    page = store.recall.search("garden", start=at(1), end=at(96))
    assert {h.item.id for h in page.hits} == {ids["both"], ids["tool"]} and page.total == 2
    # dates cover whole days; bounds are inclusive
    day2 = (T0 + dt.timedelta(days=2)).date()
    assert store.recall.search(None, start=day2, end=day2).items[0].id == ids["both"]
    assert store.recall.search(None, start=at(48), end=at(48)).total == 1
    assert store.recall.search(None, start=at(48.001), end=at(71)).total == 0
    with pytest.raises(ValueError):
        store.recall.search(None, start=dt.datetime(2024, 1, 1))


def test_filter_only_is_newest_first(store: MemoryDir) -> None:
    ids = _corpus(store)
    page = store.recall.search(None, roles=["user"])
    assert [m.id for m in page.items] == [ids["quantum"], ids["both"], ids["cat"]]
    assert all(h.score == 0.0 for h in page.hits)
    assert store.recall.search("   ").total == 5  # blank query = no query


def test_paging_covers_every_match_once(store: MemoryDir) -> None:
    ids = store.recall.append_many([("user", f"note {i} about apples", at(i)) for i in range(23)])
    store.recall.append("user", "unrelated")
    seen: list[int] = []
    for query in ("apples", None):
        seen = []
        first = store.recall.search(query, page_size=10)
        assert (first.total, first.pages) == ((23, 3) if query else (24, 3))
        for p in range(first.pages):
            page = store.recall.search(query, page=p, page_size=10)
            assert page.page == p and page.pages == first.pages
            seen += [m.id for m in page.items]
        assert len(seen) == len(set(seen)) == first.total
    assert store.recall.search("apples", page=5, page_size=10).hits == []
    assert set(ids) <= set(seen)
    with pytest.raises(ValueError):
        store.recall.search("x", page=-1)
    with pytest.raises(ValueError):
        store.recall.search("x", page_size=0)


def test_a_query_naming_a_date_ranks_the_messages_from_then_first(store: MemoryDir) -> None:
    """LoCoMo's "What did Maria plan for the evening of 7 July, 2023?": BM25 ranks the message sent
    that day (the answer) below one that merely says "day 7"; the date bonus (half the best score)
    lifts it above every message not from then."""
    wordy = store.recall.append("user", "Maria's plans for the evening: plans, plans, evening plans.",
                                timestamp=dt.datetime(2023, 3, 2, 18, 0, tzinfo=UTC))
    that_day = store.recall.append("user", "Maria: tonight I have dinner with friends from the gym, my plan.",
                                   timestamp=dt.datetime(2023, 7, 7, 18, 0, tzinfo=UTC))
    store.recall.append_many([("user", f"Maria talks about her day {n}.", at(n)) for n in range(30)])
    question = "What did Maria plan for the evening of 7 July, 2023?"
    store.recall.date_bonus = 0.0
    plain = [m.id for m in store.recall.search(question, page_size=32).items]
    assert plain[0] == wordy and plain.index(that_day) > 1
    store.recall.date_bonus = 0.5
    page = store.recall.search(question, page_size=2)
    assert [m.id for m in page.items] == [wordy, that_day] and page.total == 32
    # the pages still hold every match once
    seen = [m.id for p in range(4) for m in store.recall.search(question, page=p, page_size=10).items]
    assert len(seen) == len(set(seen)) == 32
    # no date named: BM25's order
    assert store.recall.search("What did Maria plan for the evening?", page_size=2).items[0].id == wordy


def test_messages_survive_reopen(place) -> None:
    with open_store(place("a")) as s:
        mid = s.recall.append("user", "remember the milk", timestamp=T0, meta={"x": 1})
    with open_store(place("a"), create=False) as s:
        assert s.recall.get(mid).content == "remember the milk"
        assert s.recall.search("milk").items[0].meta == {"x": 1}


def test_checkpoint_writes_the_text_index_file_once_it_changed(tmp_path: Path) -> None:
    from vmem.storage.memdir import RECALL_TEXT_NAME

    with MemoryDir.open(tmp_path / "agent") as s:
        index = tmp_path / "agent" / RECALL_TEXT_NAME
        s.recall.checkpoint()
        before = index.stat().st_mtime_ns if index.exists() else None
        s.recall.append("user", "the bike lock code is 4711", timestamp=T0)
        s.recall.checkpoint()
        written = index.stat().st_mtime_ns
        assert written != before
        s.recall.checkpoint()  # nothing changed: not written again
        assert index.stat().st_mtime_ns == written
    with MemoryDir.open(tmp_path / "agent", read_only=True) as again:
        assert again.recall.search("lock code").total == 1


def _accident(store: MemoryDir) -> list[int]:
    """A question, its reply (no word of the reply in the later question), chatter, and a late reply."""
    return store.recall.append_many([
        ("user", "How did the kids handle the accident?", at(0)),
        ("assistant", "They were scared but we reassured them.", at(0.01)),
        ("user", "The garden needs watering again.", at(0.02)),
        ("assistant", "I will remind you tomorrow morning.", at(0.03)),
        ("user", "Was the accident on the ring road?", at(5)),
        ("assistant", "Yes, near the second exit.", at(8)),  # three hours on: past CONTEXT_GAP
    ])


def test_a_search_with_neighbours_finds_the_reply_to_a_matching_question(store: MemoryDir) -> None:
    """Prefetch's recall search: the reply that answers a matching question is ranked though it shares
    no word with the query; the model's own word search (conversation_search) returns matches only."""
    ids = _accident(store)
    q = "How did Melanie's children handle the accident?"
    plain = store.recall.search(q, page_size=10)
    assert {h.item.id for h in plain.hits} == {ids[0], ids[4]} and plain.total == 2
    near = store.recall.search(q, page_size=10, with_neighbours=True)
    got = [h.item.id for h in near.hits]
    assert got[:2] == [ids[0], ids[1]]  # the question, then its reply, above the other match
    assert ids[5] not in got  # that reply came three hours after its question
    assert ids[2] not in got and ids[3] not in got  # a reply's own neighbours get nothing
    assert near.total == 2  # total still counts matches
    assert near.hits[0].score == 1.0 and 0 < near.hits[1].score < 1.0
    only_users = store.recall.search(q, roles=["user"], page_size=10, with_neighbours=True)
    assert ids[1] not in [h.item.id for h in only_users.hits]  # the filters apply to neighbours too


def test_paging_with_neighbours_covers_every_result_once(store: MemoryDir) -> None:
    rows = []
    for i in range(40):
        rows += [("user", f"Did the hike on day {i} go well?", at(i)), ("assistant", f"Lovely views, number {i}.",
                                                                          at(i + 0.01))]
    store.recall.append_many(rows)
    whole = [h.item.id for h in store.recall.search("hike", page_size=100, with_neighbours=True).hits]
    assert len(whole) == 80  # 40 matches and each one's reply
    paged = [h.item.id for p in range(27) for h in store.recall.search("hike", page=p, page_size=3,
                                                                       with_neighbours=True).hits]
    assert paged == whole
