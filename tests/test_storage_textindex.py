"""The C inverted index (csrc/ii.c) against a pure-Python reference of the same rules.

Random operation sequences run on both (hypothesis, stateful): adds (with
holes in the ids), deletes, compactions, snapshots, searches with every kind
of filter and with and without pruning, neighbour lookups. Top-k results must
be equal, scores bit for bit; errors must be of the same class and change
nothing; ``ii_check()`` runs after every step. Then FTS5 equivalence on
generated prose, and the file format's defences.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vmem._textindex import TextIndex
from vmem.errors import InvalidArgument, PageExists, PageNotFound
from vmem.index import IndexFormatError
from vmem.text import fts_query, index_terms

K1, B = 1.2, 0.75
WORDS = ["aa", "bb", "cc", "dd", "ee", "ff", "gg", "hh"]  # 2 letters: never stemmed
ROLES = ["user", "assistant", "tool"]


class Ref:
    """The index's rules in plain Python."""

    def __init__(self) -> None:
        self.docs: dict[int, dict] = {}  # live documents
        self.next_doc = 1

    def add(self, doc: int, text: str, ts: float, role: str, group: int) -> None:
        if doc < self.next_doc:
            raise PageExists(doc)
        self.docs[doc] = {"terms": index_terms(text), "ts": ts, "role": role, "group": group, "asks": "?" in text}
        self.next_doc = doc + 1

    def delete(self, doc: int) -> None:
        if doc not in self.docs:
            raise PageNotFound(doc)
        del self.docs[doc]

    def admits(self, doc: int, lo: float | None, hi: float | None, roles: set[str] | None, allow: set[int] | None) -> bool:
        d = self.docs.get(doc)
        if d is None:
            return False
        if lo is not None and d["ts"] < lo or hi is not None and d["ts"] > hi:
            return False
        if roles is not None and d["role"] not in roles:
            return False
        return allow is None or doc in allow

    def search(self, query: list[str], k: int, lo, hi, roles, allow) -> tuple[list[tuple[int, float]], int]:
        n = len(self.docs)
        if n == 0:
            return [], 0
        tokens = sum(sum(d["terms"].values()) for d in self.docs.values())
        avgdl = tokens / n
        weight: dict[str, float] = {}
        for t in query:  # a term listed twice weighs twice
            weight[t] = weight.get(t, 0.0) + 1.0
        df = {t: sum(1 for d in self.docs.values() if t in d["terms"]) for t in weight}
        scored = []
        for doc, d in self.docs.items():
            if not any(t in d["terms"] for t in weight) or not self.admits(doc, lo, hi, roles, allow):
                continue
            length = float(sum(d["terms"].values()))
            s = 0.0
            for t, w in weight.items():
                tf = d["terms"].get(t)
                if tf is None or df[t] == 0:
                    continue
                idf = math.log((n - df[t] + 0.5) / (df[t] + 0.5))
                idf = 1e-6 if idf <= 0.0 else idf
                s += (w * idf) * ((tf * (K1 + 1.0)) / (tf + K1 * (1.0 - B + B * length / avgdl)))
            scored.append((doc, s))
        scored.sort(key=lambda x: (-x[1], -x[0]))
        return scored[:k], len(scored)

    def neighbours(self, doc: int, gap: float, lo, hi, roles, allow) -> tuple[int, int, bool]:
        d = self.docs.get(doc)
        if d is None:
            return 0, 0, False
        out = []
        for o in (doc - 1, doc + 1):
            e = self.docs.get(o)
            ok = e is not None and e["group"] == d["group"] and abs(e["ts"] - d["ts"]) <= gap
            out.append(o if ok and self.admits(o, lo, hi, roles, allow) else 0)
        return out[0], out[1], d["asks"]


texts = st.tuples(st.lists(st.sampled_from(WORDS), min_size=0, max_size=12).map(" ".join),
                  st.sampled_from(["", "?", "!"])).map("".join)
filters = st.fixed_dictionaries({
    "lo": st.one_of(st.none(), st.integers(0, 10).map(float)),
    "hi": st.one_of(st.none(), st.integers(5, 20).map(float)),
    "roles": st.one_of(st.none(), st.sets(st.sampled_from(ROLES + ["nobody"]), max_size=3)),
    "allow": st.one_of(st.none(), st.sets(st.integers(1, 80), max_size=60)),
})


def _bitmap(ids: set[int]) -> np.ndarray:
    words = np.zeros(max(ids, default=0) // 64 + 1, dtype=np.uint64)
    for i in ids:
        words[i >> 6] |= np.uint64(1) << np.uint64(i & 63)
    return words


@settings(max_examples=60, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ix = TextIndex()
        self.ref = Ref()
        self.texts: dict[int, str] = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="vmem-tix-"))

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)  # one directory an example: 60 a run were left in /tmp

    @rule(text=texts, skip=st.integers(0, 2), ts=st.integers(0, 20), role=st.sampled_from(ROLES), group=st.integers(0, 2))
    def add(self, text: str, skip: int, ts: int, role: str, group: int) -> None:
        doc = self.ref.next_doc + skip
        self.ix.add(doc, text, float(ts), role, group)
        self.ref.add(doc, text, float(ts), role, group)
        self.texts[doc] = text

    @precondition(lambda self: self.ref.next_doc > 1)
    @rule(back=st.integers(1, 3))
    def add_out_of_order(self, back: int) -> None:
        with pytest.raises(PageExists):
            self.ix.add(max(1, self.ref.next_doc - back), "aa", 0.0)

    @precondition(lambda self: bool(self.ref.docs))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        doc = data.draw(st.sampled_from(sorted(self.ref.docs)))
        if data.draw(st.booleans()) and self.texts[doc]:
            with pytest.raises(InvalidArgument):  # not the text it was indexed with
                self.ix.delete(doc, self.texts[doc] + " hh zz")
        self.ix.delete(doc, self.texts[doc])
        self.ref.delete(doc)

    @rule(doc=st.integers(0, 90))
    def delete_missing(self, doc: int) -> None:
        if doc not in self.ref.docs:
            with pytest.raises(PageNotFound):
                self.ix.delete(doc, "aa")

    @rule()
    def compact(self) -> None:
        self.ix.compact()
        assert self.ix.stats()["dead"] == 0

    @rule()
    def snapshot_and_load(self) -> None:
        path = self.tmp / "x.tix"
        self.ix.save(path, "owner")
        self.ix = TextIndex.load(path, "owner")

    @rule(query=st.lists(st.sampled_from(WORDS + ["zz"]), min_size=1, max_size=5),
          k=st.integers(0, 6), f=filters, exact_max=st.sampled_from([0, 3, 10**9]))
    def search(self, query: list[str], k: int, f: dict, exact_max: int) -> None:
        roles = f["roles"]
        mask = self.ix.roles_mask(roles) if roles is not None else None
        allow = _bitmap(f["allow"]) if f["allow"] is not None else None
        got = self.ix.search(query, k, lo=f["lo"], hi=f["hi"], roles=mask, allow=allow, exact_max=exact_max)
        want, total = self.ref.search(query, k, f["lo"], f["hi"], roles, f["allow"])
        assert [(int(d), float(s)) for d, s in zip(got.docs, got.scores)] == want
        if got.exact:
            assert got.total == total
        else:
            upper = sum(1 for d in self.ref.docs.values() for t in set(query) if t in d["terms"])
            assert len(want) <= got.total <= upper

    @rule(f=filters, gap=st.sampled_from([0.0, 3.0, math.inf]))
    def neighbours(self, f: dict, gap: float) -> None:
        docs = np.arange(0, self.ref.next_doc + 2, dtype=np.uint32)
        roles = f["roles"]
        mask = self.ix.roles_mask(roles) if roles is not None else None
        allow = _bitmap(f["allow"]) if f["allow"] is not None else None
        prev, nxt, asks = self.ix.neighbours(docs, max_gap=gap, lo=f["lo"], hi=f["hi"], roles=mask, allow=allow)
        for d, p, n, a in zip(docs.tolist(), prev.tolist(), nxt.tolist(), asks.tolist()):
            assert (p, n, a) == self.ref.neighbours(d, gap, f["lo"], f["hi"], roles, f["allow"])

    @invariant()
    def consistent(self) -> None:
        self.ix.check()
        assert self.ix.ids().tolist() == sorted(self.ref.docs)
        st_ = self.ix.stats()
        assert st_["docs"] == len(self.ref.docs)
        assert st_["tokens"] == sum(sum(d["terms"].values()) for d in self.ref.docs.values())


TestIndexMachine = IndexMachine.TestCase


# ---------------------------------------------------------------- FTS5 equivalence

_VOCAB = ("time friend go went going goes support group supporting painting paint painted run running runs "
          "summer camp camping kids children beach trip trips travel traveled book books read reading "
          "music guitar guitars played playing dog dogs cat garden gardens city cities job jobs").split()


def _prose(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, len(_VOCAB) + 1)
    p /= p.sum()
    return [" ".join(_VOCAB[i] for i in rng.choice(len(_VOCAB), size=int(rng.integers(1, 25)), p=p)) for _ in range(n)]


def test_top_k_and_scores_equal_fts5_bm25() -> None:
    docs = _prose(3000, 1)
    con = sqlite3.connect(":memory:")
    con.execute("CREATE VIRTUAL TABLE t USING fts5(b, tokenize='porter unicode61')")
    con.executemany("INSERT INTO t(rowid, b) VALUES (?, ?)", enumerate(docs, 1))
    ix = TextIndex()
    for i, d in enumerate(docs, 1):
        ix.add(i, d, 0.0)
    queries = _prose(300, 2) + ["Where did the kids go camping last summer?", "guitar", "zzz"]
    for q in queries:
        match = fts_query(q)
        want = con.execute("SELECT rowid, -rank FROM t WHERE t MATCH ? ORDER BY rank, rowid DESC LIMIT 10",
                           (match,)).fetchall() if match else []
        total = con.execute("SELECT count(*) FROM t WHERE t MATCH ?", (match,)).fetchone()[0] if match else 0
        for exact_max in (0, 10**9):
            got = ix.search(q, 10, exact_max=exact_max)
            assert [int(d) for d in got.docs] == [r[0] for r in want], q
            assert np.allclose(got.scores, [r[1] for r in want], rtol=1e-9, atol=0), q
            if got.exact:
                assert got.total == total
            else:
                assert len(want) <= got.total


def test_estimated_totals_are_flagged_and_bounded() -> None:
    ix = TextIndex()
    for i in range(1, 5001):
        ix.add(i, "common " + ("rare" if i % 100 == 0 else "word"), float(i))
    exact = ix.search("common rare", 5, exact_max=10**9)
    assert exact.exact and exact.total == 5000
    est = ix.search("common rare", 5, exact_max=0)
    assert not est.exact and 50 <= est.total <= 5050
    assert [int(d) for d in est.docs] == [int(d) for d in exact.docs]


# ---------------------------------------------------------------- errors and files


def test_argument_errors_change_nothing() -> None:
    ix = TextIndex()
    ix.add(5, "aa bb", 1.0, "user")
    with pytest.raises(PageExists):
        ix.add(5, "cc", 1.0)
    with pytest.raises(InvalidArgument):
        ix.add(0, "cc", 1.0)
    with pytest.raises(InvalidArgument):
        ix.add(6, "cc", math.nan)
    with pytest.raises(PageNotFound):
        ix.delete(4, "aa bb")
    with pytest.raises(InvalidArgument):
        ix.delete(5, "aa")  # one of its two terms
    ix.check()
    assert ix.ids().tolist() == [5] and ix.search("cc", 5).total == 0
    ix.add(6, "cc", 2.0)  # the failed add of 6 left no trace


def test_many_roles_share_the_last_filter_bit() -> None:
    ix = TextIndex()
    for i in range(70):
        ix.add(i + 1, "aa", 0.0, f"r{i}")
    assert ix.roles_mask(["r0", "r5"]) == 0b100001
    assert ix.roles_mask(["r63"]) is None and ix.roles_mask(["r69"]) is None
    got = ix.search("aa", 100, roles=ix.roles_mask(["r0", "r62", "unknown"]))
    assert sorted(int(d) for d in got.docs) == [1, 63]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped", "owner"])
def test_damaged_files_are_refused(tmp_path: Path, damage: str) -> None:
    ix = TextIndex()
    for i in range(1, 200):
        ix.add(i, f"aa bb w{i}", float(i))
    path = tmp_path / "x.tix"
    ix.save(path, "me")
    assert TextIndex.load(path, "me").search("w7", 1).docs.tolist() == [7]
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif damage == "flipped":
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError):
        TextIndex.load(path, "someone else" if damage == "owner" else "me")


# ---------------------------------------------------------------- hybrid ranking in C


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    n_docs=st.integers(1, 30),
    wt=st.sampled_from([0.0, 0.25, 0.75, 1.0]),
    context=st.tuples(*[st.sampled_from([0.0, 0.25, 0.5, 1.0])] * 3),
    gap=st.sampled_from([0.0, 2.0, math.inf]),
)
def test_fuse_in_c_equals_rank_fuse_then_spread(data: st.DataObject, n_docs: int, wt: float,
                                                context: tuple[float, float, float], gap: float) -> None:
    from vmem.rank import fuse, spread

    ix = TextIndex()
    meta = {}
    doc = 0
    for _ in range(n_docs):
        doc += data.draw(st.integers(1, 2))
        text = data.draw(st.sampled_from(["aa", "bb?", "cc", "dd?"]))
        ts, group = float(data.draw(st.integers(0, 4))), data.draw(st.integers(0, 1))
        ix.add(doc, text, ts, "user", group)
        meta[doc] = (ts, group, "?" in text)
    ids = st.integers(1, doc + 2)
    tdocs = data.draw(st.lists(ids, unique=True, max_size=12))
    tscores = sorted(data.draw(st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.25, 7.0]), min_size=len(tdocs),
                                        max_size=len(tdocs))), reverse=True)
    vdocs = data.draw(st.lists(ids, unique=True, max_size=12))
    vsims = data.draw(st.lists(st.sampled_from([-0.5, 0.0, 0.25, 0.5, 0.9, 1.0, 1.5]), min_size=len(vdocs),
                               max_size=len(vdocs)))
    allow = data.draw(st.one_of(st.none(), st.sets(st.integers(1, doc + 2))))
    got = ix.fuse(np.array(tdocs), np.array(tscores), np.array(vdocs), np.array(vsims), text_weight=wt,
                  context=context, max_gap=gap, allow=_bitmap(allow) if allow is not None else None)
    want = fuse(list(zip(tdocs, tscores)), list(zip(vdocs, vsims)), text_weight=wt)
    if any(context):
        def admitted(d: int) -> bool:
            return d in meta and (allow is None or d in allow)

        def link(d: int, o: int) -> int | None:
            if not (d in meta and admitted(o)):
                return None
            (t1, g1, _), (t2, g2, _) = meta[d], meta[o]
            return o if g1 == g2 and abs(t1 - t2) <= gap else None

        want = spread(want, next_of=lambda d: link(d, d + 1), prev_of=lambda d: link(d, d - 1),
                      forward=context[0], statement_forward=context[1], backward=context[2],
                      asks={d for d in meta if meta[d][2]})
    assert [(int(d), float(s)) for d, s in zip(*got)] == want
