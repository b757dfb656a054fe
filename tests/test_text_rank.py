"""vmem.text (FTS5 query building) and vmem.rank (hybrid fusion, context spreading)."""

from __future__ import annotations

import math
import re
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem.rank import DEFAULT_RRF_K, as_hits, fuse, spread
from vmem.text import MAX_QUERY_TERMS, STOP_WORDS, content_terms, fts_query, tokenize

# ---------------------------------------------------------------- text


@pytest.fixture(scope="module")
def fts() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE pages USING fts5(body, tokenize='porter unicode61')")
    rows = [
        "I went to a LGBTQ support group yesterday and it was so powerful.",
        "We love painting together lately, especially nature-inspired ones.",
        "The kids were scared but we reassured them.",
        "Running has been great for my mental health.",
        "NEAR the AND gate, NOT far: column* ^start",
    ]
    db.executemany("INSERT INTO pages(rowid, body) VALUES (?, ?)", enumerate(rows, 1))
    return db


def search(db: sqlite3.Connection, text: str) -> list[int]:
    q = fts_query(text)
    if q is None:
        return []
    return [r[0] for r in db.execute("SELECT rowid FROM pages WHERE pages MATCH ? ORDER BY bm25(pages)", (q,))]


def test_tokenize_splits_like_unicode61() -> None:
    assert tokenize("Don't e-mail ME_now, Café!") == ["don", "t", "e", "mail", "me", "now", "cafe"]
    with pytest.raises(TypeError):
        tokenize(None)  # type: ignore[arg-type]


def test_fts_query_drops_stop_words_and_quotes_terms() -> None:
    assert fts_query("When did Caroline go to the LGBTQ support group?") == (
        '"caroline" OR "go" OR "lgbtq" OR "support" OR "group"'
    )


def test_fts_query_dedupes_and_bounds_terms() -> None:
    assert fts_query("paint Paint PAINT") == '"paint"'
    many = " ".join(f"word{i}" for i in range(500))
    q = fts_query(many)
    assert q is not None and q.count(" OR ") == MAX_QUERY_TERMS - 1


def test_fts_query_none_when_nothing_searchable() -> None:
    for text in ("", "   ", "?!...", "__", "\u200b"):
        assert fts_query(text) is None
    assert fts_query(None) is None  # type: ignore[arg-type]
    assert fts_query(42) is None  # type: ignore[arg-type]


def test_fts_query_keeps_stop_words_when_nothing_else() -> None:
    assert fts_query("Who is he?") == '"who" OR "is" OR "he"'
    assert content_terms("the the of") == ["the", "of"]


def test_stop_words_are_lower_case_function_words() -> None:
    assert all(w == w.lower() and w.isalpha() for w in STOP_WORDS)
    for content in ("time", "like", "go", "love", "kids", "paint"):
        assert content not in STOP_WORDS


def test_fts_query_finds_stemmed_matches(fts: sqlite3.Connection) -> None:
    assert search(fts, "Who paints?")[:1] == [2]  # porter: paints ~ painting
    assert search(fts, "How did the kids handle it?")[:1] == [3]
    assert search(fts, "support groups")[:1] == [1]


@pytest.mark.parametrize(
    "hostile",
    [
        'NEAR(support group, 2)',
        "support AND NOT group",
        '"unbalanced quote',
        "col*",
        "^start",
        "body: powerful",
        "pages: x",
        "(a OR b",
        "a + b - c",
        "{body}: x",
        "rank MATCH 'x'",
        "'; DROP TABLE pages; --",
    ],
)
def test_fts_syntax_in_input_is_inert(fts: sqlite3.Connection, hostile: str) -> None:
    q = fts_query(hostile)
    assert q is not None
    assert re.fullmatch(r'"[^"\s]+"( OR "[^"\s]+")*', q)
    search(fts, hostile)  # no sqlite3.OperationalError


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fts_query_never_breaks_fts5(text: str) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61')")
    db.execute("INSERT INTO t(body) VALUES ('alpha beta gamma'), (?)", (text,))
    q = fts_query(text)
    if q is None:
        assert not any(ch.isalnum() for ch in text) or not tokenize(text)
        return
    assert re.fullmatch(r'"[^"\s]+"( OR "[^"\s]+")*', q)
    rows = db.execute("SELECT rowid FROM t WHERE t MATCH ? ORDER BY bm25(t)", (q,)).fetchall()
    if text.isascii():
        assert (2,) in rows  # the text itself contains its own terms


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=100))
def test_fts_query_never_raises(text: str) -> None:
    q = fts_query(text)
    assert q is None or isinstance(q, str)


# ---------------------------------------------------------------- fuse


def ids(ranked: list[tuple[int, float]]) -> list[int]:
    return [i for i, _ in ranked]


def test_fuse_text_only_keeps_text_order() -> None:
    text = [(3, 9.0), (1, 4.0), (2, 1.0)]
    assert ids(fuse(text, [])) == [3, 1, 2]
    out = fuse(text, [])
    assert out[0][1] == pytest.approx(0.75)  # best text hit, normalised to 1, times the weight


def test_fuse_weights_extremes() -> None:
    text = [(1, 10.0), (2, 5.0), (3, 1.0)]
    vec = [(3, 0.9), (2, 0.5), (1, 0.1)]
    assert ids(fuse(text, vec, text_weight=1.0))[:3] == [1, 2, 3]
    assert ids(fuse(text, vec, text_weight=0.0))[:3] == [3, 2, 1]


def test_fuse_convex_scores_are_exact() -> None:
    text = [(1, 8.0), (2, 2.0)]
    vec = [(2, 0.8), (9, 0.6), (1, -0.2)]
    got = dict(fuse(text, vec, text_weight=0.75))
    assert got[1] == pytest.approx(0.75 * 1.0 + 0.25 * 0.0)  # negative cosine clipped to 0
    assert got[2] == pytest.approx(0.75 * 0.25 + 0.25 * 0.8)
    assert got[9] == pytest.approx(0.25 * 0.6)


def test_fuse_vector_rescue_only_beats_weak_text_matches() -> None:
    # vector-only page with cosine 0.9 scores 0.225: above text matches < 0.3 of the best
    text = [(1, 10.0), (2, 5.0), (3, 2.0)]
    vec = [(7, 0.9)]
    assert ids(fuse(text, vec)) == [1, 2, 7, 3]


def test_fuse_weak_vector_matches_do_not_displace_text() -> None:
    text = [(i, 10.0 - i) for i in range(1, 8)]
    vec = [(100 + i, 0.05) for i in range(10)]  # noise: low similarity
    assert ids(fuse(text, vec))[:7] == list(range(1, 8))


def test_fuse_rrf_is_weighted_reciprocal_rank() -> None:
    text = [(1, 5.0), (2, 4.0)]
    vec = [(2, 0.9), (3, 0.8)]
    got = dict(fuse(text, vec, method="rrf", text_weight=0.5))
    k = DEFAULT_RRF_K
    assert got[1] == pytest.approx(0.5 / (k + 1))
    assert got[2] == pytest.approx(0.5 / (k + 2) + 0.5 / (k + 1))
    assert got[3] == pytest.approx(0.5 / (k + 2))
    assert ids(fuse(text, vec, method="rrf", text_weight=0.5)) == [2, 1, 3]


def test_fuse_odd_text_scores_fall_back_to_ranks() -> None:
    raw_bm25 = [(1, -9.0), (2, -4.0), (3, -1.0)]  # lower-is-better passed by mistake
    assert ids(fuse(raw_bm25, [])) == [1, 2, 3]
    assert ids(fuse([(1, math.nan), (2, 1.0)], [])) == [1, 2]


def test_fuse_duplicates_depth_and_ties() -> None:
    text = [(1, 3.0), (1, 1.0), (2, 3.0)]
    out = fuse(text, [], depth=2)
    assert ids(out) == [1, 2]  # duplicate dropped, tie broken by first appearance
    assert ids(fuse([(5, 1.0), (4, 1.0)], [])) == [5, 4]


def test_fuse_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        fuse([], [], text_weight=1.5)
    with pytest.raises(ValueError):
        fuse([], [], method="borda")
    with pytest.raises(ValueError):
        fuse([], [], depth=-1)
    with pytest.raises(TypeError):
        fuse([(1, 2.0, 3)], [])  # type: ignore[list-item]
    assert fuse([], []) == []


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 50), st.floats(0, 100)), max_size=20),
    st.lists(st.tuples(st.integers(0, 50), st.floats(-1, 1)), max_size=20),
    st.floats(0, 1),
)
def test_fuse_properties(text: list, vec: list, w: float) -> None:
    out = fuse(text, vec, text_weight=w)
    got = ids(out)
    assert len(got) == len(set(got)) == len({i for i, _ in text} | {i for i, _ in vec})
    scores = [s for _, s in out]
    assert scores == sorted(scores, reverse=True)
    assert all(-1e-9 <= s <= 1 + 1e-9 for s in scores)


# ---------------------------------------------------------------- spread


def test_spread_passes_relevance_to_the_reply() -> None:
    # turn 10 asks the question, 11 answers with other words; 20 is a weak direct match
    hits = [(10, 8.0), (20, 3.0)]
    nxt = {10: 11, 11: 12, 20: 21}
    prv = {11: 10, 12: 11, 21: 20}
    out = dict(spread(hits, next_of=nxt, prev_of=prv))
    assert out[10] == pytest.approx(1.0)
    assert out[11] == pytest.approx(0.5)  # half of the question's normalised score
    assert out[20] == pytest.approx(3 / 8)
    assert out[21] == pytest.approx(0.5 * 3 / 8)
    assert ids(spread(hits, next_of=nxt, prev_of=prv))[:2] == [10, 11]


def test_spread_backward_and_accumulation() -> None:
    hits = [(5, 1.0), (7, 1.0)]
    out = dict(spread(hits, next_of=lambda i: i + 1, prev_of=lambda i: i - 1))
    assert out[6] == pytest.approx(0.5 + 0.25)  # reply to 5 and prompt of 7
    assert out[4] == pytest.approx(0.25)
    assert out[8] == pytest.approx(0.5)


def test_spread_without_neighbours_is_normalised_identity() -> None:
    hits = [(1, 4.0), (2, 2.0)]
    assert spread(hits) == [(1, 1.0), (2, 0.5)]
    with pytest.raises(ValueError):
        spread(hits, forward=2.0)


def test_as_hits_drops_padding() -> None:
    import numpy as np

    row_ids = np.array([3, 2**64 - 1], dtype=np.uint64)
    row_sims = np.array([0.5, -np.inf], dtype=np.float32)
    assert as_hits(row_ids, row_sims) == [(3, 0.5)]
