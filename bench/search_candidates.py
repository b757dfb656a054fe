#!/usr/bin/env python3
"""Text top-k engines side by side, before choosing one (same process, corpus, questions).

Corpus: the messages of a recall store built by bench_search.py (LoCoMo-like
turns); queries: the LoCoMo questions. Candidates:

- FTS5 as the stores used it (``porter unicode61``; ``count(*)`` + ranked page);
- FTS5, ranked page only (no count);
- vmem's C inverted index (``vmem._textindex``: MaxScore over block-skipping postings);
- tantivy (Rust, via its Python bindings; ``en_stem`` tokenizer; in RAM);
- bm25s (numpy sparse matrices; porter stems via PyStemmer), which has no incremental add.

For each: p50/p99 of top-10 and top-100 searches, and the cost of adding one
document to a live index (what a recall append pays).

    .venv/bin/python bench/search_candidates.py --size 100000 --dir /var/tmp/vmem-bench-search

Needs ``pip install tantivy bm25s`` (not dependencies of vmem).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import TurnGen, build_recall, latencies, locomo_questions  # noqa: E402

from vmem._textindex import TextIndex  # noqa: E402
from vmem.text import fts_query  # noqa: E402


def row(name: str, lat: np.ndarray) -> str:
    return f"{name:48} p50 {np.median(lat) * 1e3:8.3f} ms   p99 {np.percentile(lat, 99) * 1e3:8.3f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--dir", default="/var/tmp/vmem-bench-search")
    args = ap.parse_args(argv)
    base = Path(args.dir)
    store = base / f"recall-{args.size}"
    build_recall(store, args.size, TurnGen(seed=1))
    src = sqlite3.connect(store / "vmem.db")
    rows = src.execute("SELECT id, content, ts, role FROM messages ORDER BY id").fetchall()
    texts = [r[1] for r in rows]
    qs = locomo_questions()
    out = [f"{len(texts)} documents, {len(qs)} LoCoMo questions"]

    fts = sqlite3.connect(":memory:")
    fts.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize='porter unicode61')")
    fts.executemany("INSERT INTO t(rowid, body) VALUES (?, ?)", [(r[0], r[1]) for r in rows])
    t = time.perf_counter()
    for i in range(1000):
        fts.execute("INSERT INTO t(rowid, body) VALUES (?, ?)", (10_000_000 + i, texts[i]))
    add_fts = (time.perf_counter() - t) / 1000
    fts.execute("DELETE FROM t WHERE rowid >= 10000000")

    def fts_page(q: str, k: int, count: bool) -> None:
        m = fts_query(q)
        if m is None:
            return
        if count:
            fts.execute("SELECT count(*) FROM t WHERE t MATCH ?", (m,)).fetchone()
        fts.execute("SELECT rowid, rank FROM t WHERE t MATCH ? ORDER BY rank LIMIT ?", (m, k)).fetchall()

    for k in (10, 100):
        out.append(row(f"FTS5 count + top-{k}", latencies(lambda q: fts_page(q, k, True), qs)))
        out.append(row(f"FTS5 top-{k} only", latencies(lambda q: fts_page(q, k, False), qs)))
    out.append(f"{'FTS5 add one document (no commit)':48} {add_fts * 1e6:8.1f} us")

    ti = TextIndex()
    t = time.perf_counter()
    for i, c, ts, r in rows:
        ti.add(i, c, ts, r)
    build_ti = time.perf_counter() - t
    for k in (10, 100):
        out.append(row(f"vmem C index top-{k} (+ total)", latencies(lambda q: ti.search(q, k), qs)))
    t = time.perf_counter()
    base_id = rows[-1][0] + 1
    for i in range(1000):
        ti.add(base_id + i, texts[i], 0.0, "user")
    out.append(f"{'vmem C index add one document':48} {(time.perf_counter() - t) / 1000 * 1e6:8.1f} us"
               f"   (build {len(rows)}: {build_ti:.2f} s)")

    try:
        import tantivy
    except ImportError:
        out.append("tantivy: not installed")
    else:
        sb = tantivy.SchemaBuilder()
        sb.add_text_field("body", stored=False, tokenizer_name="en_stem")
        sb.add_integer_field("id", stored=True, indexed=True, fast=True)
        index = tantivy.Index(sb.build())
        w = index.writer(heap_size=200_000_000, num_threads=1)
        t = time.perf_counter()
        for i, c, _, _ in rows:
            w.add_document(tantivy.Document(body=c, id=i))
        w.commit()
        build_tv = time.perf_counter() - t
        index.reload()
        searcher = index.searcher()

        def tv(q: str, k: int, count: bool) -> None:
            m = fts_query(q)
            if m is None:
                return
            searcher.search(index.parse_query(m, ["body"]), k, count=count)

        for k in (10, 100):
            out.append(row(f"tantivy top-{k} + count", latencies(lambda q: tv(q, k, True), qs)))
            out.append(row(f"tantivy top-{k} only", latencies(lambda q: tv(q, k, False), qs)))
        t = time.perf_counter()
        for i in range(200):
            w.add_document(tantivy.Document(body=texts[i], id=20_000_000 + i))
            w.commit()
        out.append(f"{'tantivy add one document + commit':48} {(time.perf_counter() - t) / 200 * 1e6:8.1f} us"
                   f"   (build {len(rows)}: {build_tv:.2f} s)")

    try:
        import bm25s
        import Stemmer
    except ImportError:
        out.append("bm25s: not installed")
    else:
        stemmer = Stemmer.Stemmer("porter")
        t = time.perf_counter()
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(texts, stopwords=None, stemmer=stemmer, show_progress=False), show_progress=False)
        build_bm = time.perf_counter() - t

        def bm(q: str, k: int) -> None:
            toks = bm25s.tokenize([q], stopwords="en", stemmer=stemmer, show_progress=False)
            retriever.retrieve(toks, k=k, show_progress=False, n_threads=1)

        for k in (10, 100):
            out.append(row(f"bm25s top-{k}", latencies(lambda q: bm(q, k), qs)))
        out.append(f"{'bm25s add one document':48}      n/a   (static: rebuild {len(rows)}: {build_bm:.2f} s)")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
