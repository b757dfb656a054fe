#!/usr/bin/env python3
"""Store-level search benchmark: the page faults the kernel takes, at 10k / 100k / 1M pages.

Queries are the LoCoMo dev questions (realistic: natural language, common
words); pages are LoCoMo-like turns (:class:`TurnGen`): a speaker and one to
three sentences drawn from the real LoCoMo turns, with a share of their words
swapped for words of a long Zipf tail, so that the vocabulary grows with the
corpus the way a real archive's does. Each size gets one archival store
(passages, inserted a session of turns per ``insert_many``) and one recall
store (messages), built once and kept under ``--dir``.

Figures per size (p50 / p99 over the questions, one search at a time, a page
of 10 as the kernel asks for):

- ``archival_memory_search``: ``ArchivalStore.search(q, mode="hybrid")``
  (the default), and ``mode="text"`` and ``mode="vector"``;
- ``conversation_search``: ``RecallStore.search(q)``;
- beside them, in the same run: raw hnswlib (``knn_query`` of the embedded
  question, k=10, over the store's own graph) and the FTS5 path of before
  (``count(*)`` + ``ORDER BY rank LIMIT 10`` on an FTS5 ``porter unicode61``
  table over the same texts, in a side database).

    .venv/bin/python bench/bench_search.py --sizes 10000 100000
    .venv/bin/python bench/bench_search.py --sizes 1000000 --dir /var/tmp/vmem-bench-search
    .venv/bin/python bench/bench_search.py --quick --json

Importable: :func:`locomo_questions`, :class:`TurnGen`, :func:`build_archival`,
:func:`build_recall`, :func:`fts5_side_db`, :func:`fts5_search`, :func:`latencies` and
:func:`percentile_figures` serve the kernel-level benchmark (bench_pagefault.py) too. The LoCoMo data is read from ``../shared/data/locomo`` (never
copied); without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from figures import Figure, emit  # noqa: E402

from vmem.storage import MemoryDir  # noqa: E402
from vmem.text import fts_query  # noqa: E402

LOCOMO = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
UTC = dt.timezone.utc
T0 = dt.datetime(2023, 1, 1, tzinfo=UTC)
#: Targets of the retrieval issue (seconds), per (figure, size).
TARGETS = {("hybrid", 100_000): (1e-3, 3e-3), ("recall", 100_000): (1e-3, 3e-3), ("hybrid", 1_000_000): (5e-3, None)}

_SENT = re.compile(r"(?<=[.!?])\s+")


def locomo_questions(path: Path = LOCOMO) -> list[str]:
    """Every LoCoMo question of the file, in file order."""
    data = json.loads(Path(path).read_text())
    return [str(qa["question"]) for conv in data for qa in conv.get("qa", [])]


def locomo_turns(path: Path = LOCOMO) -> list[tuple[str, str]]:
    """Every turn of the file as (speaker, text)."""
    out = []
    for conv in json.loads(Path(path).read_text()):
        for key, turns in conv["conversation"].items():
            if key.startswith("session_") and isinstance(turns, list):
                out.extend((t["speaker"], t["text"]) for t in turns)
    return out


class TurnGen:
    """Deterministic LoCoMo-like turns (see the module docstring)."""

    def __init__(self, path: Path = LOCOMO, seed: int = 0, speakers: int = 200, tail: int = 200_000,
                 swap: float = 0.15) -> None:
        self.rng = np.random.default_rng(seed)
        turns = locomo_turns(path)
        self.sentences = [s for _, t in turns for s in _SENT.split(t.strip()) if s]
        real = sorted({sp for sp, _ in turns})
        syl = ["ka", "lo", "mi", "ne", "ro", "ta", "sh", "en", "ar", "il", "um", "ob", "es", "ti", "pa", "do"]
        names = set(real)
        while len(names) < speakers:
            names.add("".join(syl[int(i)] for i in self.rng.integers(0, len(syl), 3)).capitalize())
        self.speakers = sorted(names)
        tail_words: set[str] = set()
        while len(tail_words) < tail:
            tail_words.add("".join(syl[int(i)] for i in self.rng.integers(0, len(syl), int(self.rng.integers(3, 6)))))
        self.tail = sorted(tail_words)
        p = 1.0 / np.arange(1, tail + 1) ** 1.1
        self.tail_p = np.cumsum(p / p.sum())
        self.swap = swap

    def turns(self, n: int) -> list[str]:
        """``n`` turns, "Speaker: text"."""
        rng = self.rng
        out = []
        nsent = rng.integers(1, 4, n)
        who = rng.integers(0, len(self.speakers), n)
        for i in range(n):
            words = " ".join(self.sentences[int(j)] for j in rng.integers(0, len(self.sentences), int(nsent[i]))).split()
            swap = rng.random(len(words)) < self.swap
            if swap.any():
                picks = np.searchsorted(self.tail_p, rng.random(int(swap.sum())))
                it = iter(picks)
                words = [self.tail[min(int(next(it)), len(self.tail) - 1)] if s else w for w, s in zip(words, swap)]
            out.append(f"{self.speakers[int(who[i])]}: {' '.join(words)}")
        return out


def build_archival(path: Path, n: int, gen: TurnGen, *, session: int = 20, progress: bool = True) -> None:
    """A store at ``path`` with ``n`` passages, a session of ``session`` turns per insert_many."""
    with MemoryDir.open(path, durability="normal", index_autosave=0) as s:
        have = len(s.archival)
        t = time.perf_counter()
        while have < n:
            texts = gen.turns(min(10_000, n - have))
            for lo in range(0, len(texts), session):
                s.archival.insert_many(texts[lo : lo + session], timestamp=T0 + dt.timedelta(hours=(have + lo) // session))
            have = len(s.archival)  # repeated turns are stored once: count what is there
            if progress:
                print(f"  archival {have}/{n} ({time.perf_counter() - t:.0f}s)", file=sys.stderr)


def build_recall(path: Path, n: int, gen: TurnGen, *, progress: bool = True) -> None:
    """A store at ``path`` with ``n`` recall messages (alternating user/assistant, a minute apart)."""
    with MemoryDir.open(path, durability="normal", index_autosave=0) as s:
        have = len(s.recall)
        while have < n:
            texts = gen.turns(min(10_000, n - have))
            s.recall.append_many([("user" if (have + i) % 2 else "assistant", t, T0 + dt.timedelta(minutes=have + i))
                                  for i, t in enumerate(texts)])
            have += len(texts)
            if progress:
                print(f"  recall {have}/{n}", file=sys.stderr)


def fts5_side_db(path: Path, rows_sql: str, store_db: Path) -> sqlite3.Connection:
    """A side database with the store's rows as the stores kept them before (schema 1):
    a table ``r(id, ts)`` and an external-content FTS5 ``porter unicode61`` table ``t``
    over the texts (built once). ``rows_sql`` selects (id, ts, text) from the store."""
    con = sqlite3.connect(path)
    if not con.execute("SELECT name FROM sqlite_master WHERE name='r'").fetchone():
        con.execute("CREATE TABLE r(id INTEGER PRIMARY KEY, ts REAL NOT NULL, body TEXT NOT NULL)")
        con.execute("CREATE VIRTUAL TABLE t USING fts5(body, content='r', content_rowid='id', tokenize='porter unicode61')")
        src = sqlite3.connect(store_db)
        con.executemany("INSERT INTO r(id, ts, body) VALUES (?, ?, ?)", src.execute(rows_sql))
        src.close()
        con.execute("INSERT INTO t(t) VALUES ('rebuild')")
        con.commit()
    return con


def fts5_search(con: sqlite3.Connection, query: str, k: int = 10) -> tuple[int, list[tuple[int, float]]]:
    """The FTS5 path of before, statement for statement: ``count(*)`` over every match
    (joined to the rows, as the stores joined for their filters), then a ranked page."""
    match = fts_query(query)
    if match is None:
        return 0, []
    frm = "t JOIN r ON r.id = t.rowid"
    total = con.execute(f"SELECT count(*) FROM {frm} WHERE t MATCH ? AND 1", (match,)).fetchone()[0]
    rows = con.execute(f"SELECT r.id, t.rank FROM {frm} WHERE t MATCH ? AND 1 ORDER BY t.rank, r.id DESC LIMIT ?",
                       (match, k)).fetchall()
    return int(total), rows


def latencies(fn: Callable[[str], Any], queries: Sequence[str], warmup: int = 20) -> np.ndarray:
    """Seconds per call of ``fn(q)``, one query at a time, after ``warmup`` untimed calls."""
    for q in queries[:warmup]:
        fn(q)
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        fn(q)
        out[i] = time.perf_counter() - t
    return out


def percentile_figures(name: str, lat: np.ndarray, base: np.ndarray | None,
                       target: tuple[float | None, float | None] | None = None) -> list[Figure]:
    """p50 and p99 of ``lat`` (seconds), in ms, beside ``base``'s; ``target``: (p50, p99) bounds in seconds."""
    p50, p99 = float(np.median(lat)), float(np.percentile(lat, 99))
    b50 = float(np.median(base)) if base is not None else None
    b99 = float(np.percentile(base, 99)) if base is not None else None
    t50, t99 = target or (None, None)
    return [
        Figure.timed(f"{name} p50", p50, b50, unit="ms", target=f"<= {t50 * 1e3:g} ms" if t50 else None,
                     met=(p50 <= t50) if t50 else None),
        Figure.timed(f"{name} p99", p99, b99, unit="ms", target=f"<= {t99 * 1e3:g} ms" if t99 else None,
                     met=(p99 <= t99) if t99 else None),
    ]


def _figure(name: str, lat: np.ndarray, base: np.ndarray | None, key: tuple[str, int] | None) -> list[Figure]:
    return percentile_figures(name, lat, base, TARGETS.get(key) if key else None)


def run_size(n: int, base: Path, gen: TurnGen, questions: list[str], progress: bool) -> list[Figure]:
    figs: list[Figure] = []
    arch, rec = base / f"archival-{n}", base / f"recall-{n}"
    t = time.perf_counter()
    build_archival(arch, n, gen, progress=progress)
    build_recall(rec, n, gen, progress=progress)
    if progress:
        print(f"  built {n} in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    fts_arch = fts5_side_db(base / f"fts5-archival-{n}.db", "SELECT id, ts, text FROM passages", arch / "vmem.db")
    fts_rec = fts5_side_db(base / f"fts5-recall-{n}.db", "SELECT id, ts, content FROM messages", rec / "vmem.db")
    with MemoryDir.open(arch, durability="normal"):
        pass  # write the caches if a build left them stale, so the open below is the ordinary one
    t = time.perf_counter()
    with MemoryDir.open(arch, durability="normal") as s:
        open_s = time.perf_counter() - t
        a = s.archival
        fts100 = latencies(lambda q: fts5_search(fts_arch, q, 100), questions)
        fts10 = latencies(lambda q: fts5_search(fts_arch, q, 10), questions)
        hyb = latencies(lambda q: a.search(q, mode="hybrid"), questions)
        txt = latencies(lambda q: a.search(q, mode="text"), questions)
        vec = latencies(lambda q: a.search(q, mode="vector"), questions)
        qvec = dict(zip(questions, a.embedder.embed(questions)))
        a.index.settle()  # (every add in the graph before the bare hnswlib calls)
        hn = a.index._hnsw
        raw10 = latencies(lambda q: hn.knn_query(qvec[q], k=10), questions)
        raw100 = latencies(lambda q: hn.knn_query(qvec[q], k=100), questions)
        figs.append(Figure(f"archival open, caches loaded ({n} passages)", round(open_s * 1e3, 1), "ms"))
        figs += _figure(f"archival search hybrid (default), {n} passages", hyb, fts100, ("hybrid", n))
        figs += _figure(f"archival search text, {n} passages", txt, fts10, None)
        figs += _figure(f"archival search vector, {n} passages", vec, raw10, None)
        figs += _figure(f"  baseline: FTS5 path of before, top-100 (hybrid's text half), {n}", fts100, None, None)
        figs += _figure(f"  baseline: FTS5 path of before, top-10 (text search), {n}", fts10, None, None)
        figs += _figure(f"  baseline: raw hnswlib knn k=100 (hybrid's vector half), {n}", raw100, None, None)
        figs += _figure(f"  baseline: raw hnswlib knn k=10, {n}", raw10, None, None)
    t = time.perf_counter()
    with MemoryDir.open(rec, durability="normal") as s:
        open_s = time.perf_counter() - t
        r = s.recall
        fts = latencies(lambda q: fts5_search(fts_rec, q, 10), questions)
        lat = latencies(lambda q: r.search(q), questions)
        exact = sum(r.search(q).total_is_exact for q in questions[:200])
        figs.append(Figure(f"recall open, text index loaded ({n} messages)", round(open_s * 1e3, 1), "ms"))
        figs += _figure(f"conversation_search, {n} messages", lat, fts, ("recall", n))
        figs += _figure(f"  baseline: FTS5 path of before (count + top-10), {n} messages", fts, None, None)
        figs.append(Figure(f"  conversation_search totals exact (of 200 questions), {n}", exact, "questions"))
        texts = gen.turns(2000)
        first = s.recall.lexical.index.stats()["next_doc"]
        s.recall.lexical._unsaved = 0  # the additions below are not the store's: never write them
        t = time.perf_counter()
        for i, text in enumerate(texts):
            s.recall.lexical.index.add(first + i, text, 0.0, "user")
        per_add = (time.perf_counter() - t) / len(texts)
        figs.append(Figure.timed(f"  text index update per appended message, {n}", per_add, unit="us"))
    (rec / "recall.tix").unlink()
    t = time.perf_counter()
    with MemoryDir.open(rec, durability="normal") as s:
        figs.append(Figure(f"recall open, text index rebuilt from SQLite ({n} messages)",
                           round((time.perf_counter() - t) * 1e3, 1), "ms"))
    fts_arch.close()
    fts_rec.close()
    return figs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dir", default=None, help="where the stores are built and kept (default: a temporary directory)")
    ap.add_argument("--path", type=Path, default=LOCOMO, help="LoCoMo JSON file")
    ap.add_argument("--quick", action="store_true", help="10,000 pages and 300 questions only")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.path.exists():
        print(f"LoCoMo data not found at {args.path}: skipping", file=sys.stderr)
        if args.json:
            print("[]")
        return 0
    questions = locomo_questions(args.path)
    if args.quick:
        args.sizes, questions = [10_000], questions[:300]
    keep = args.dir is not None
    base = Path(args.dir) if keep else Path(tempfile.mkdtemp(prefix="vmem-bench-search-"))
    base.mkdir(parents=True, exist_ok=True)
    figs: list[Figure] = []
    try:
        for n in sorted(args.sizes):
            figs += run_size(n, base, TurnGen(args.path, args.seed), questions, progress=not args.json)
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)
    emit(figs, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
