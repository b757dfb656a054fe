"""vmem.storage records, time rules and passage splitting."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem.storage import SearchPage, split_passages
from vmem.storage.records import epoch_range, from_epoch, page_count, to_epoch

UTC = dt.timezone.utc

aware = st.datetimes(
    min_value=dt.datetime(1971, 1, 1), max_value=dt.datetime(2200, 1, 1),
    timezones=st.sampled_from([UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)), dt.timezone(dt.timedelta(hours=-8))]),
)


@given(aware)
def test_epoch_round_trip_is_exact_to_the_microsecond(ts: dt.datetime) -> None:
    back = from_epoch(to_epoch(ts))
    assert back == ts
    assert back.tzinfo is UTC


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        to_epoch(dt.datetime(2024, 1, 1))
    with pytest.raises(TypeError):
        to_epoch("2024-01-01")  # type: ignore[arg-type]


def test_date_bounds_cover_whole_days() -> None:
    lo, hi = epoch_range(dt.date(2024, 5, 1), dt.date(2024, 5, 1))
    assert lo == dt.datetime(2024, 5, 1, tzinfo=UTC).timestamp()
    last = dt.datetime(2024, 5, 1, 23, 59, 59, 999999, tzinfo=UTC).timestamp()
    assert lo <= last <= hi
    assert hi < dt.datetime(2024, 5, 2, tzinfo=UTC).timestamp()
    assert epoch_range(None, None) == (None, None)
    with pytest.raises(ValueError, match="empty date range"):
        epoch_range(dt.date(2024, 5, 2), dt.date(2024, 5, 1))
    with pytest.raises(TypeError):
        epoch_range(5, None)  # type: ignore[arg-type]


def test_page_count() -> None:
    assert [page_count(n, 10) for n in (0, 1, 10, 11, 25)] == [0, 1, 1, 2, 3]
    p: SearchPage[int] = SearchPage([], 0, 3, 25)
    assert p.has_next and not SearchPage([], 2, 3, 25).has_next


def test_short_text_is_one_passage() -> None:
    assert split_passages("  hello world  ") == ["hello world"]


def test_splits_on_paragraphs_then_sentences() -> None:
    paras = ["First paragraph sentence one. Sentence two.", "Second paragraph here.", "Third one!"]
    text = "\n\n".join(paras)
    out = split_passages(text, max_chars=50)
    assert out == [paras[0], paras[1] + "\n\nThird one!"]
    long_para = " ".join(f"Sentence number {i} is here." for i in range(20))
    out = split_passages(long_para, max_chars=60)
    assert all(len(p) <= 60 for p in out)
    assert all(p.endswith(".") for p in out)  # cut at sentence ends only


def test_refuses_empty_and_tiny_bounds() -> None:
    with pytest.raises(ValueError):
        split_passages("   \n\n ")
    with pytest.raises(ValueError):
        split_passages("text", max_chars=3)


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("abc XYZ.!?\n\t\u00e9\u4e2d\"')")), min_size=1, max_size=600),
    st.integers(min_value=16, max_value=120),
)
def test_split_bounds_and_keeps_every_character(text: str, max_chars: int) -> None:
    if not text.strip():
        with pytest.raises(ValueError):
            split_passages(text, max_chars)
        return
    out = split_passages(text, max_chars)
    assert out and all(0 < len(p) <= max_chars for p in out)
    assert all(p == p.strip() for p in out)
    squash = lambda s: "".join(s.split())  # noqa: E731
    assert "".join(squash(p) for p in out) == squash(text)
