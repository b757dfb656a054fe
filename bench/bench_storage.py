#!/usr/bin/env python3
"""Storage benchmark: durable inserts and recall text search, each beside a baseline.

Figures (every one measured in this process, on fresh stores in a temporary
directory on the same disk as ``--dir``):

- archival inserts, one ``insert()`` per passage (embedding with the built-in
  HashEmbedder and the SQLite commit with fsync included; the HNSW add is queued and
  done behind the writes, see ``vmem.graph_queue``, so it is not), beside
  ``insert_many()`` in batches of 100 (baseline: what batching buys);
  also with ``durability="normal"`` (no fsync per commit) beside ``"full"``;
- recall appends, one ``append()`` per message, beside ``append_many()``;
- recall text search over ``--messages`` messages (FTS5 BM25, page of 10 with
  its total count), p50/p99, for a query that matches and one that matches
  nothing, beside the same search done by a ``LIKE`` scan;
- rebuilding the vector index cache from the stored (float16) embeddings,
  beside re-embedding every passage (why embeddings are kept in SQLite).

Texts are generated: sentences over a Zipf-distributed pseudo-English
vocabulary (seeded), so word frequencies and lengths look like prose.

    .venv/bin/python bench/bench_storage.py            # full run (~1 min)
    .venv/bin/python bench/bench_storage.py --quick --json

Targets: >= 2,000 passages/s one at a time; recall search p99 <= 2 ms at 10,000 messages.
fsync latency on shared virtual disks is noisy: compare ratios, rerun before believing a wall-clock figure.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # figures.py and the bench helpers

from figures import Figure, emit  # noqa: E402

from vmem.embed import HashEmbedder  # noqa: E402
from vmem.index import PageIndex  # noqa: E402
from vmem.storage import MemoryDir  # noqa: E402

INSERT_TARGET = 2000.0  # passages/s, one at a time
SEARCH_P99_TARGET = 2e-3  # s

_SYL = ["ka", "lo", "mi", "ne", "ro", "ta", "sh", "en", "ar", "il", "um", "ob", "es", "ti", "pa", "do", "re", "ga", "vi", "th"]


class Corpus:
    """Seeded pseudo-English: a Zipf vocabulary whose frequent words are short."""

    def __init__(self, seed: int = 0, vocab: int = 20000) -> None:
        self.rng = np.random.default_rng(seed)
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < vocab:
            n_syl = 1 + min(4, int(np.log10(len(words) + 10)) + int(self.rng.integers(0, 2)))
            w = "".join(_SYL[int(i)] for i in self.rng.integers(0, len(_SYL), n_syl))
            if w not in seen:
                seen.add(w)
                words.append(w)
        self.words = words
        p = 1.0 / np.arange(1, vocab + 1) ** 1.07
        self.p = p / p.sum()

    def sentence(self, n: int) -> str:
        ids = self.rng.choice(len(self.words), size=n, p=self.p)
        s = " ".join(self.words[int(i)] for i in ids)
        return s[0].upper() + s[1:] + "."

    def texts(self, count: int, lo: int = 15, hi: int = 45) -> list[str]:
        return [self.sentence(int(self.rng.integers(lo, hi))) for _ in range(count)]


def rate(n: int, fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs), q))


def bench_archival(base: Path, texts: list[str], figs: list[Figure]) -> Path:
    def one(path: Path, durability: str) -> float:
        with MemoryDir.open(path, durability=durability) as s:
            return rate(len(texts), lambda: [s.archival.insert(t) for t in texts])

    def batched(path: Path) -> float:
        with MemoryDir.open(path) as s:
            return rate(len(texts), lambda: [s.archival.insert_many(texts[i : i + 100]) for i in range(0, len(texts), 100)])

    full = one(base / "arch-full", "full")
    normal = one(base / "arch-normal", "normal")
    batch = batched(base / "arch-batch")
    emb = HashEmbedder()
    emb_rate = rate(len(texts), lambda: [emb.embed([t]) for t in texts])
    vecs = HashEmbedder().embed(texts)
    idx = PageIndex(vecs.shape[1], behind=False)  # the graph insertion itself (a store queues it, see vmem.graph_queue)
    idx_rate = rate(len(texts), lambda: [idx.add([i + 1], vecs[i : i + 1]) for i in range(len(texts))])
    figs += [
        Figure("archival insert, one at a time (durable)", round(full), "passages/s", round(batch),
               round(full / batch, 2), f">= {INSERT_TARGET:.0f}/s", full >= INSERT_TARGET),
        Figure("archival insert, batches of 100 (durable)", round(batch), "passages/s", round(full), round(batch / full, 1)),
        Figure("archival insert, one at a time, durability=normal", round(normal), "passages/s", round(full), round(normal / full, 2)),
        Figure("  component: HashEmbedder.embed, one text at a time", round(emb_rate), "texts/s"),
        Figure("  component: PageIndex.add into the graph, one vector at a time", round(idx_rate), "vectors/s"),
    ]
    return base / "arch-full"


def bench_recall_append(base: Path, texts: list[str], figs: list[Figure]) -> None:
    with MemoryDir.open(base / "app-one") as s:
        one = rate(len(texts), lambda: [s.recall.append("user", t) for t in texts])
    with MemoryDir.open(base / "app-batch") as s:
        batch = rate(len(texts), lambda: [s.recall.append_many([("user", t) for t in texts[i : i + 100]])
                                          for i in range(0, len(texts), 100)])
    figs += [
        Figure("recall append, one at a time (durable)", round(one), "messages/s", round(batch), round(one / batch, 2)),
        Figure("recall append, batches of 100 (durable)", round(batch), "messages/s", round(one), round(batch / one, 1)),
    ]


def like_search(con: sqlite3.Connection, terms: list[str]) -> tuple[int, list[tuple]]:
    """The baseline: the same filter (any term), total count and newest-10 page, by LIKE scan."""
    cond = " OR ".join("content LIKE ?" for _ in terms)
    args = [f"%{t}%" for t in terms]
    total = con.execute(f"SELECT count(*) FROM messages WHERE {cond}", args).fetchone()[0]
    rows = con.execute(f"SELECT id, role, content, ts, meta FROM messages WHERE {cond} ORDER BY ts DESC LIMIT 10", args).fetchall()
    return total, rows


def bench_recall_search(base: Path, corpus: Corpus, n_messages: int, n_queries: int, figs: list[Figure]) -> None:
    path = base / "search"
    texts = corpus.texts(n_messages, 5, 40)
    with MemoryDir.open(path) as s:
        for i in range(0, len(texts), 1000):
            s.recall.append_many([("user" if j % 2 else "assistant", t) for j, t in enumerate(texts[i : i + 1000])])
    # a matching query: two mid-frequency words (each in roughly 1-3% of messages)
    mid = corpus.words[300:320]
    queries = {"matches": f"{mid[0]} {mid[7]}", "no match": "zyxwvut qqqqqq"}
    with MemoryDir.open(path) as s:
        con = sqlite3.connect(path / "vmem.db")
        for label, q in queries.items():
            s.recall.search(q)  # warm
            lat = []
            for _ in range(n_queries):
                t = time.perf_counter()
                page = s.recall.search(q, page_size=10)
                lat.append(time.perf_counter() - t)
            terms = q.split()
            like_lat = []
            for _ in range(max(20, n_queries // 10)):
                t = time.perf_counter()
                total, _rows = like_search(con, terms)
                like_lat.append(time.perf_counter() - t)
            p99, base99 = pct(lat, 99), pct(like_lat, 99)
            figs.append(Figure.timed(f"recall search p99, {n_messages} msgs, query {label} (total={page.total})", p99,
                                     base99, target="<= 2 ms", met=p99 <= SEARCH_P99_TARGET))
            figs.append(Figure.timed(f"recall search p50, {n_messages} msgs, query {label}", pct(lat, 50), pct(like_lat, 50)))
        con.close()


def bench_rebuild(store_path: Path, figs: list[Figure]) -> None:
    """Index cache rebuild from stored embeddings vs re-embedding every passage."""
    (store_path / "archival.idx").unlink(missing_ok=True)
    t = time.perf_counter()
    with MemoryDir.open(store_path) as s:
        s.archival.index.settle()  # the index loads in a thread, and its graph is built behind: until it holds them
        rebuild = time.perf_counter() - t
        n = len(s.archival)
        con = sqlite3.connect(store_path / "vmem.db")
        texts = [r[0] for r in con.execute("SELECT text FROM passages ORDER BY id")]
        con.close()
        t = time.perf_counter()
        vecs = HashEmbedder().embed(texts)
        idx = PageIndex(vecs.shape[1], capacity=len(texts))
        idx.add(np.arange(1, len(texts) + 1, dtype=np.uint64), vecs)
        idx.settle()
        reembed = time.perf_counter() - t
    figs.append(Figure.timed(f"index rebuild from stored embeddings ({n} passages, incl. open)", rebuild, reembed, unit="ms"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--passages", type=int, default=3000, help="passages inserted per insert figure (default 3000)")
    ap.add_argument("--messages", type=int, default=10000, help="messages in the searched recall store (default 10000)")
    ap.add_argument("--queries", type=int, default=500, help="timed searches per query (default 500)")
    ap.add_argument("--dir", default=None, help="where to make the temporary stores (default: system temp dir)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="fewer passages and queries (same 10,000-message store)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON (see bench/figures.py)")
    args = ap.parse_args(argv)
    if args.quick:
        args.passages, args.queries = min(args.passages, 1000), min(args.queries, 200)
    corpus = Corpus(args.seed)
    base = Path(tempfile.mkdtemp(prefix="vmem-bench-storage-", dir=args.dir))
    figs: list[Figure] = []
    try:
        texts = corpus.texts(args.passages)
        store = bench_archival(base, texts, figs)
        bench_recall_append(base, texts, figs)
        bench_recall_search(base, corpus, args.messages, args.queries, figs)
        bench_rebuild(store, figs)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    emit(figs, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
