"""Near-ties between statements about the same thing go to the newest (vmem.ties), the C index's
ii_explain against a Python reference, and the rule inside conversation and archival search."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vmem._textindex import TextIndex
from vmem.storage import MemoryDir
from vmem.text import index_terms, query_terms
from vmem.ties import DEFAULT_TIE_BREAK, TIE_WINDOW, TieBreak

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 8, 9, 0, tzinfo=UTC)
DAY = 86400.0
RULE = TieBreak(margin=0.3, cover=0.6, gap=3600.0)


def ids(ranked: list[tuple[int, float]]) -> list[int]:
    return [i for i, _ in ranked]


# ---------------------------------------------------------------- the rule


def test_a_newer_near_tie_about_the_same_thing_goes_first() -> None:
    ranked = [(1, 10.0), (2, 8.0), (3, 5.0)]
    out = RULE.apply(ranked, [0b11, 0b11, 0b01], [0.0, 40 * DAY, 50 * DAY], [1.0, 1.0])
    assert out == [(2, 8.0), (1, 10.0), (3, 5.0)]  # 3 is far below, and matched less


@pytest.mark.parametrize("why, masks, times, scores", [
    ("not near", [0b11, 0b11], [0.0, DAY], [10.0, 6.9]),
    ("older", [0b11, 0b11], [DAY, 0.0], [10.0, 9.0]),
    ("one exchange", [0b11, 0b11], [0.0, 3000.0], [10.0, 9.0]),
    ("another thing", [0b01, 0b10], [0.0, DAY], [10.0, 9.0]),
    ("vector only", [0b11, 0], [0.0, DAY], [10.0, 9.0]),
    ("unknown time", [0b11, 0b11], [0.0, math.nan], [10.0, 9.0]),
])
def test_what_is_not_a_tie(why: str, masks: list[int], times: list[float], scores: list[float]) -> None:
    ranked = list(zip([1, 2], scores))
    assert RULE.apply(ranked, masks, times, [1.0, 1.0]) == ranked, why


def test_the_same_thing_is_weighed_by_idf() -> None:
    # both hold the rare term 0 (idf 5); the newer lacks the common term 1 (idf 0.5): same thing
    assert ids(RULE.apply([(1, 10.0), (2, 8.0)], [0b11, 0b01], [0.0, DAY], [5.0, 0.5])) == [2, 1]
    # the newer holds only the common term: another thing
    assert ids(RULE.apply([(1, 10.0), (2, 8.0)], [0b11, 0b10], [0.0, DAY], [5.0, 0.5])) == [1, 2]


def test_a_chain_of_updates_ends_newest_first() -> None:
    ranked = [(1, 10.0), (2, 9.0), (3, 8.0), (4, 1.0)]
    out = RULE.apply(ranked, [1, 1, 1, 1], [0.0, DAY, 2 * DAY, 3 * DAY], [1.0])
    assert ids(out) == [3, 2, 1, 4]


def test_only_the_window_moves() -> None:
    n = TIE_WINDOW + 5
    ranked = [(i, 100.0 - i * 0.01) for i in range(n)]
    out = RULE.apply(ranked, [1] * n, [float(-i * DAY) for i in range(n)], [1.0])  # older down the list: no move
    assert out == ranked
    times = [float(i * DAY) for i in range(n)]  # newer down the list: the window reverses, the tail stays
    out = RULE.apply(ranked, [1] * n, times, [1.0])
    assert ids(out[:TIE_WINDOW]) == list(range(TIE_WINDOW))[::-1] and out[TIE_WINDOW:] == ranked[TIE_WINDOW:]


def test_questions_about_the_past_are_left_alone() -> None:
    assert RULE.applies_to("How many calls a day does my team handle?")
    assert RULE.applies_to("Which city do I live in now?")
    for q in ("When did Caroline go to the support group?", "What did Melanie paint?",
              "Where was Jon working two years ago?", "Who were her friends?"):
        assert not RULE.applies_to(q), q
    assert TieBreak(past=frozenset()).applies_to("When did it happen?")


def test_bad_rules_are_refused() -> None:
    for kw in ({"margin": 1.0}, {"margin": -0.1}, {"cover": 0.0}, {"cover": 1.5}, {"gap": -1.0}):
        with pytest.raises(ValueError):
            TieBreak(**kw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 10.0), st.integers(0, 7), st.integers(0, 5)), min_size=0, max_size=70))
def test_the_rule_only_reorders_and_only_lifts_newer_near_ties(rows: list[tuple[float, int, int]]) -> None:
    rows.sort(key=lambda r: -r[0])
    ranked = [(i, s) for i, (s, _, _) in enumerate(rows)]
    masks = [m for _, m, _ in rows]
    times = [d * DAY for _, _, d in rows]
    idf = [1.0, 2.0, 0.5]
    out = RULE.apply(ranked, masks, times, idf)
    assert sorted(out) == sorted(ranked) and out[TIE_WINDOW:] == ranked[TIE_WINDOW:]
    pos = {i: p for p, (i, _) in enumerate(out)}
    for i, _ in ranked:
        for j, _ in ranked[:i]:  # j ranked above i before
            if pos[i] < pos[j] and pos[i] < TIE_WINDOW:
                # i passed j: either i is a tie-winner over someone at or above j's old place...
                lifted = any(
                    pos[i] <= pos[k] and times[i] > times[k] + RULE.gap and masks[i] & masks[k]
                    and rows[i][0] >= (1 - RULE.margin) * rows[k][0] for k, _ in ranked[:i])
                # ...or j itself was pushed down by a tie-winner
                pushed = any(pos[k] < pos[j] and k > j for k, _ in ranked)
                assert lifted or pushed


# ---------------------------------------------------------------- ii_explain against a reference


WORDS = st.sampled_from(["calls", "call", "day", "days", "team", "coffee", "cup", "cups", "the", "a", "run"])


@settings(max_examples=60, deadline=None)
@given(docs=st.lists(st.lists(WORDS, min_size=1, max_size=8), min_size=1, max_size=25),
       query=st.lists(WORDS, min_size=1, max_size=5), gone=st.sets(st.integers(1, 25), max_size=5))
def test_explain_matches_a_python_reference(docs: list[list[str]], query: list[str], gone: set[int]) -> None:
    ix = TextIndex()
    texts = {n: " ".join(words) for n, words in enumerate(docs, 1)}
    for n, text in texts.items():
        ix.add(n, text, 1000.0 + n)
    for n in gone & set(texts):
        ix.delete(n, texts[n])
    live = {n: t for n, t in texts.items() if n not in gone}
    probe = np.array(sorted(texts) + [len(texts) + 7], dtype=np.uint32)
    terms, masks, ts, idf = ix.explain(" ".join(query), probe)
    assert terms == list(dict.fromkeys(query_terms(" ".join(query))))
    for d, mask, t in zip(probe.tolist(), masks.tolist(), ts.tolist()):
        if d not in live:
            assert mask == 0 and math.isnan(t)
            continue
        held = index_terms(live[d])
        assert mask == sum(1 << i for i, term in enumerate(terms) if term in held)
        assert t == 1000.0 + d
    n = len(live)
    for term, got in zip(terms, idf.tolist()):
        df = sum(term in index_terms(t) for t in live.values())
        raw = math.log((n - df + 0.5) / (df + 0.5)) if df else 0.0
        want = 0.0 if df == 0 else raw if raw > 0 else 1e-6
        assert got == pytest.approx(want)


# ---------------------------------------------------------------- in the stores


def _updates(store: MemoryDir) -> tuple[int, int, int, int]:
    """A fact and its update, in recall and in archival (one insert per session)."""
    old_m, = store.recall.append_many([("user", "My support team handles 60 calls a day, calls calls.", T0)])
    new_m, = store.recall.append_many([("user", "We handle 90 calls a day now, the whole team.", T0 + dt.timedelta(days=41))])
    [old_p] = store.archival.insert("My support team handles 60 calls a day, calls calls.", timestamp=T0)
    [new_p] = store.archival.insert("We handle 90 calls a day now, the whole team.",
                                    timestamp=T0 + dt.timedelta(days=41))
    return old_m, new_m, old_p, new_p


def test_conversation_search_prefers_the_update(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        old_m, new_m, _, _ = _updates(s)
        s.recall.append_many([("user", f"filler {i} about lunch", T0 + dt.timedelta(days=i)) for i in range(5)])
        q = "How many calls a day does my team handle?"
        s.recall.tie_break = None
        assert [m.id for m in s.recall.search(q).items][:2] == [old_m, new_m]
        s.recall.tie_break = RULE
        assert [m.id for m in s.recall.search(q).items][:2] == [new_m, old_m]


def test_archival_search_prefers_the_fact_that_began_to_hold_last(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        _, _, old_p, new_p = _updates(s)
        q = "How many calls a day does my team handle?"
        s.archival.tie_break = None
        assert [p.id for p in s.archival.search(q).items][:2] == [old_p, new_p]
        s.archival.tie_break = RULE
        assert [p.id for p in s.archival.search(q).items][:2] == [new_p, old_p]
        # the time that counts is when the fact began to hold, not when it was stored
        [late] = s.archival.insert("Our team handled 75 calls a day back in 2023.", timestamp=T0 + dt.timedelta(days=90),
                                   valid_from=T0 - dt.timedelta(days=300))
        assert [p.id for p in s.archival.search(q).items].index(late) > 0


@pytest.mark.parametrize("tier", ["recall", "archival"])
def test_pages_stay_disjoint_and_complete_with_the_tie_break(tmp_path: Path, tier: str) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        texts = [f"note {i}: the team handles {i} calls a day" + " extra" * (i % 4) for i in range(80)]
        if tier == "recall":
            s.recall.append_many([("user", t, T0 + dt.timedelta(days=i)) for i, t in enumerate(texts)])
            search = s.recall.search
        else:
            for i, t in enumerate(texts):
                s.archival.insert(t, timestamp=T0 + dt.timedelta(days=i))
            search = s.archival.search  # type: ignore[assignment]
        q = "how many calls a day does the team handle"
        whole = [x.id for x in search(q, page_size=80).items]
        paged = [x.id for page in range(12) for x in search(q, page=page, page_size=7).items]
        assert paged == whole and len(set(whole)) == 80


def test_a_past_tense_question_keeps_plain_ranking(tmp_path: Path) -> None:
    with MemoryDir.open(tmp_path / "a") as s:
        old_m, new_m, old_p, new_p = _updates(s)
        q = "How many calls a day did my team handle?"
        assert [m.id for m in s.recall.search(q).items][:2] == [old_m, new_m]
        assert [p.id for p in s.archival.search(q).items][:2] == [old_p, new_p]


@pytest.mark.parametrize("tier", ["recall", "archival"])
def test_the_default_rule_never_changes_which_hits_make_the_first_page(tmp_path: Path, tier: str) -> None:
    """Recall@10 and beyond cannot fall: the first ten hold the same hits, and the rest
    keep their order, with the rule on or off."""
    words = ["calls", "day", "team", "handle", "coffee", "rent", "week", "now"]
    rng = np.random.default_rng(7)
    with MemoryDir.open(tmp_path / "a") as s:
        texts = [" ".join(rng.choice(words, size=int(rng.integers(2, 9)))) for _ in range(120)]
        for i, t in enumerate(texts):
            when = T0 + dt.timedelta(days=int(rng.integers(0, 300)))
            if tier == "recall":
                s.recall.append_many([("user", f"{t} {i}", when)])
            else:
                s.archival.insert(f"{t} {i}", timestamp=when)
        store = s.recall if tier == "recall" else s.archival
        assert store.tie_break == DEFAULT_TIE_BREAK  # type: ignore[union-attr]
        moved = False
        for q in ("how many calls a day does the team handle", "coffee now", "rent a week", "team"):
            store.tie_break = None  # type: ignore[union-attr]
            plain = [x.id for x in store.search(q, page_size=40).items]
            store.tie_break = DEFAULT_TIE_BREAK  # type: ignore[union-attr]
            ruled = [x.id for x in store.search(q, page_size=40).items]
            assert set(ruled[:TIE_WINDOW]) == set(plain[:TIE_WINDOW]) and ruled[TIE_WINDOW:] == plain[TIE_WINDOW:]
            moved |= ruled != plain
        assert moved  # the rule did re-order some first page
