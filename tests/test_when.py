"""vmem.when (dates named in a query) and the archival store's date bonus in hybrid search."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from vmem.storage import MemoryDir
from vmem.when import AFTER_DAYS, query_window

UTC = dt.timezone.utc


def day(y: int, m: int, d: int, h: int = 12) -> float:
    return dt.datetime(y, m, d, h, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("query, year, inside, outside", [
    ("What did Gina find on 1 February, 2023?", 2023, [day(2023, 2, 1), day(2023, 2, 14)],
     [day(2023, 1, 29), day(2023, 2, 17), day(2022, 2, 1)]),
    ("What happened on May 23, 2023?", 2023, [day(2023, 5, 23), day(2023, 6, 5)], [day(2023, 5, 20), day(2024, 5, 23)]),
    ("What setback did Melanie face in October 2023?", 2023, [day(2023, 10, 1), day(2023, 11, 13)],
     [day(2023, 9, 30), day(2023, 11, 16), day(2022, 10, 10)]),
    ("When did Melanie go camping in June?", None, [day(2023, 6, 1), day(2021, 6, 30), day(2023, 7, 14)],
     [day(2023, 5, 31), day(2023, 7, 16)]),
    ("What did they do on 13th October?", None, [day(2019, 10, 13), day(2023, 10, 20)], [day(2023, 10, 10)]),
    ("What changed in March?", None, [day(2023, 3, 1, 0), day(2024, 3, 1, 0)], [day(2023, 2, 28), day(2024, 2, 29)]),
])
def test_windows(query: str, year: int | None, inside: list[float], outside: list[float]) -> None:
    w = query_window(query)
    assert w is not None and w.year == year
    assert w.contains(np.array(inside)).all(), query
    assert not w.contains(np.array(outside)).any(), query


@pytest.mark.parametrize("query", ["You may go now", "April said hi to June", "no date in here", "", "2023 was good",
                                   "What is 13 of 20?"])
def test_no_window(query: str) -> None:
    assert query_window(query) is None


def test_window_runs_after_days_past_the_month() -> None:
    w = query_window("in January 2024")
    assert w is not None
    assert w.contains(np.array([day(2024, 1, 31) + (AFTER_DAYS - 1) * 86400]))[0]
    assert not w.contains(np.array([day(2024, 1, 31) + (AFTER_DAYS + 1) * 86400]))[0]


def _store(tmp_path: Path) -> MemoryDir:
    s = MemoryDir.open(tmp_path / "s", durability="normal")
    for month in range(1, 13):  # the same words every month: only the date can tell them apart
        s.archival.insert_many([f"we went to the lake with the kids, trip number {month}"],
                               timestamp=dt.datetime(2023, month, 25, tzinfo=UTC))
    return s


def test_hybrid_search_ranks_the_named_month_first(tmp_path: Path) -> None:
    with _store(tmp_path) as s:
        assert s.archival.date_bonus > 0
        for month, name in ((5, "May"), (9, "September")):
            top = s.archival.search(f"When did we go to the lake in {name} 2023?", page_size=3).hits
            assert top[0].item.timestamp.month == month
        # no date named: the ranking is the same with and without the bonus
        q = "the lake with the kids"
        a = [h.item.id for h in s.archival.search(q, page_size=12).hits]
        s.archival.date_bonus = 0.0
        assert [h.item.id for h in s.archival.search(q, page_size=12).hits] == a


def test_the_bonus_reorders_but_never_adds_or_drops_hits(tmp_path: Path) -> None:
    with _store(tmp_path) as s:
        q = "lake trip in June 2023"
        with_bonus = s.archival.search(q, page_size=12)
        s.archival.date_bonus = 0.0
        without = s.archival.search(q, page_size=12)
        assert sorted(h.item.id for h in with_bonus.hits) == sorted(h.item.id for h in without.hits)
        assert with_bonus.total == without.total
        assert with_bonus.hits[0].item.timestamp.month == 6
