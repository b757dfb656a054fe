"""The archival page fault's search path: its shortcuts rank exactly as the plain path.

The hybrid search reads each fused passage's timestamp (for the date bonus) from the text
index instead of the passages table, and turns only the head of the fused ranking into
Python objects. Both are pure speed: these tests pin that the rankings (ids and scores, every
page) are the ones the table-reading path gives, with dates in the queries and without.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from vmem.storage import MemoryDir
from vmem.storage.sqlite import SqliteArchival

UTC = dt.timezone.utc
WORDS = ("lake trip kids camping painting pottery museum concert support group adoption dance "
         "school book novel garden beach hiking guitar violin dog cat horse puppy").split()
QUERIES = [
    "When did we go to the lake in May 2023?",
    "What did Caroline paint on 8 May, 2023?",
    "camping with the kids in June",
    "What happened in October 2023 at the museum?",
    "the support group and the adoption",
    "What did she read last year?",
    "guitar concert",
    "dog and puppy on 1 February, 2023",
]


def _fill(path: Path, n: int = 400, seed: int = 3) -> MemoryDir:
    """A store whose passages share words and differ in time (a date can reorder them)."""
    rng = np.random.default_rng(seed)
    s = MemoryDir.open(path, durability="normal")
    t0 = dt.datetime(2022, 11, 1, tzinfo=UTC)
    for i in range(0, n, 20):  # a session of 20 turns per insert_many, two to ten days apart
        texts = [f"Speaker{j % 3}: " + " ".join(rng.choice(WORDS, size=int(rng.integers(4, 12))))
                 + f" note {i + j}" for j in range(20)]
        s.archival.insert_many(texts, timestamp=t0 + dt.timedelta(days=int(rng.integers(2, 10)) * (i // 20 + 1)))
    return s


def _rankings(s: MemoryDir) -> list[list[tuple[int, float]]]:
    out = []
    for q in QUERIES:
        for page_size, pages in ((5, 3), (10, 2), (100, 1)):
            for page in range(pages):
                hits = s.archival.search(q, mode="hybrid", page=page, page_size=page_size).hits
                out.append([(h.item.id, h.score) for h in hits])
    return out


def test_timestamps_are_the_ones_added(tmp_path: Path) -> None:
    with _fill(tmp_path / "s", n=60) as s:
        archival = s.archival
        assert isinstance(archival, SqliteArchival)
        index = archival.lexical.index
        docs = index.ids()
        stored = archival._stored_times(docs.tolist())
        got = index.timestamps(docs)
        assert got.dtype == np.float64 and got.tolist() == [stored[d] for d in docs.tolist()]
        unknown = index.timestamps(np.array([docs.max() + 1, 0], dtype=np.uint32))
        assert np.isnan(unknown).all()
        assert index.timestamps(np.zeros(0, dtype=np.uint32)).shape == (0,)


def test_hybrid_rankings_are_those_of_the_table_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _fill(tmp_path / "s") as s:
        archival = s.archival
        assert isinstance(archival, SqliteArchival) and archival.date_bonus > 0
        fast = _rankings(s)
        assert sum(1 for r in fast if r) == len(fast)  # every query finds something
        # the path of before: every timestamp read from the passages table
        index = archival.lexical.index
        monkeypatch.setattr(index, "timestamps", lambda docs: np.full(len(docs), np.nan))
        assert _rankings(s) == fast
        # and a date in the query did reorder (the bonus is exercised, not bypassed)
        archival.date_bonus = 0.0
        assert _rankings(s) != fast


def test_a_passage_missing_from_the_text_index_keeps_its_time(tmp_path: Path) -> None:
    """The index is a cache: a passage it lost is timed from the table."""
    with _fill(tmp_path / "s", n=40) as s:
        archival = s.archival
        assert isinstance(archival, SqliteArchival)
        docs = archival.lexical.index.ids()
        lost = int(docs[3])
        stored = archival._stored_times(docs.tolist())
        with archival._db.reading("x") as c:
            text = c.execute("SELECT text FROM passages WHERE id=?", (lost,)).fetchone()[0]
        archival.lexical.deleted([(lost, text)])  # as a failed post-commit add would leave it
        ts = archival._passage_times(docs)
        assert ts.tolist() == [stored[d] for d in docs.tolist()]
