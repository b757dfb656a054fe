#!/usr/bin/env python3
"""The archival store's footprint, ingest and open, beside a plain SQLite + hnswlib writer.

One run, one size (``--size`` passages, LoCoMo-like turns from :class:`bench_search.TurnGen`),
the same 384-d vectors for both systems (vmem's hash embedder, computed once; neither store
pays for embedding while timed):

- disk after close, by file and, inside vmem's SQLite file, by table and index (``dbstat``),
  in bytes per passage: text, vectors in SQLite, the HNSW file, the text index, the WAL;
- batched inserts (``insert_many`` of ``--batch`` passages, ``durability="full"``);
- durable single inserts (``insert()`` one passage at a time, ``durability="full"``);
  each both as the calls return and until the vector graph holds every passage (vmem builds
  its graph behind the writes: a search waits for what is left, as ``settle()`` does here);
- open + first query in a fresh process (hybrid search, page of 5), median of ``--opens``; and
  open + first text-only search (what a step that searches no vector waits for: the vector
  index loads in the background from the open);
- the HNSW index's recall@10 against exact search over the same vectors, for LoCoMo questions.

The baseline is what a competent developer writes by hand: one SQLite table (text and the
float32 vector, ``synchronous=FULL``, WAL), an FTS5 external-content index over the text,
an hnswlib index (M=16, ef_construction=200, ef=32, as vmem's) saved beside it.

    .venv/bin/python bench/bench_footprint.py --size 100000 --path /work/shared/data/locomo/locomo_dev.json
    .venv/bin/python bench/bench_footprint.py --size 10000 --json

Targets (issue 21): disk <= 200 MB at 100k passages; batched inserts >= 10,000/s;
durable single inserts >= 2,000/s; open + first query <= 100 ms at 100k, <= 1 s at 1M.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import LOCOMO, TurnGen, locomo_questions  # noqa: E402
from figures import Figure, emit  # noqa: E402

from vmem.embed import Embedder, HashEmbedder  # noqa: E402

MB = 1e6
TARGET_DISK = 200 * MB  # at 100k
TARGET_BATCH = 10_000.0
TARGET_SINGLE = 2_000.0


class GivenVectors(Embedder):
    """The hash embedder's vectors, computed once per text and then looked up (same name, so
    the store reopens with the default embedder as it is)."""

    def __init__(self) -> None:
        self.inner = HashEmbedder()
        self.dim, self.name = self.inner.dim, self.inner.name
        self.known: dict[str, np.ndarray] = {}

    def add(self, texts: Sequence[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.known]
        for lo in range(0, len(todo), 5000):
            part = todo[lo:lo + 5000]
            for t, v in zip(part, self.inner.embed(part)):
                self.known[t] = v
        return np.stack([self.known[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.add(list(texts))


def disk(path: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(path.iterdir()) if f.is_file()}


# --------------------------------------------------------------------------- vmem


def vmem_build(path: Path, texts: list[str], emb: GivenVectors, batch: int) -> tuple[float, float]:
    """(passages a second as the ``insert_many`` calls return, and until the vector graph holds
    them all: the graph is built behind the writes, so both are shown)."""
    from vmem.storage import MemoryDir

    with MemoryDir.open(path, embedder=emb, durability="full") as s:
        t = time.perf_counter()
        for lo in range(0, len(texts), batch):
            s.archival.insert_many(texts[lo:lo + batch])
        returned = time.perf_counter() - t
        s.archival.index.settle()
        return len(texts) / returned, len(texts) / (time.perf_counter() - t)


def vmem_singles(path: Path, texts: list[str], emb: GivenVectors) -> tuple[float, float]:
    """Durable single inserts a second: as each returns, and until the graph holds them all."""
    from vmem.storage import MemoryDir

    with MemoryDir.open(path, embedder=emb, durability="full", create=False) as s:
        s.archival.insert(texts[0])  # warm
        s.archival.index.settle()
        t = time.perf_counter()
        for x in texts[1:]:
            s.archival.insert(x)
        returned = time.perf_counter() - t
        s.archival.index.settle()
        return (len(texts) - 1) / returned, (len(texts) - 1) / (time.perf_counter() - t)


def vmem_components(path: Path, n: int) -> dict[str, float]:
    """Bytes per passage by component (after close: no WAL left)."""
    files = disk(path)
    con = sqlite3.connect(f"file:{path / 'vmem.db'}?mode=ro", uri=True)
    try:
        by_name = dict(con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
        text, vec = con.execute("SELECT sum(length(CAST(text AS BLOB))), sum(length(embedding)) FROM passages").fetchone()
    finally:
        con.close()
    passages = by_name.get("passages", 0)
    out = {
        "total": sum(files.values()) / n,
        "sqlite file": files.get("vmem.db", 0) / n,
        "  passages table (text, vectors, fields)": passages / n,
        "    of which text (bytes stored)": (text or 0) / n,
        "    of which vectors (bytes stored)": (vec or 0) / n,
        "  passages' indexes (hash, ts, valid_from)": sum(v for k, v in by_name.items()
                                                         if k.startswith("sqlite_autoindex_passages") or k.startswith("passages_")) / n,
        "  other tables": (files.get("vmem.db", 0) - passages - sum(
            v for k, v in by_name.items() if k.startswith("sqlite_autoindex_passages") or k.startswith("passages_"))) / n,
        "HNSW file (archival.idx)": files.get("archival.idx", 0) / n,
        "text index (archival.tix)": files.get("archival.tix", 0) / n,
        "WAL": files.get("vmem.db-wal", 0) / n,
        "other files": sum(v for k, v in files.items()
                           if k not in ("vmem.db", "archival.idx", "archival.tix", "vmem.db-wal")) / n,
    }
    return out


_VMEM_OPEN = """
import sys, time
t = time.perf_counter()
from vmem.storage import MemoryDir
s = MemoryDir.open(sys.argv[1], create=False)
page = s.archival.search(sys.argv[2], page_size=5)
print(time.perf_counter() - t, len(page.hits))
s.close()
"""

_VMEM_OPEN_TEXT = """
import sys, time
t = time.perf_counter()
from vmem.storage import MemoryDir
s = MemoryDir.open(sys.argv[1], create=False)
page = s.archival.search(sys.argv[2], page_size=5, mode="text")
print(time.perf_counter() - t, len(page.hits))
s.close()
"""

_BASE_OPEN = """
import sys, time
t = time.perf_counter()
import sqlite3, hnswlib, numpy as np
from vmem.embed import HashEmbedder
con = sqlite3.connect(sys.argv[1] + "/base.db")
idx = hnswlib.Index(space="cosine", dim=384)
idx.load_index(sys.argv[1] + "/base.hnsw")
idx.set_ef(100)
q = HashEmbedder().embed_query([sys.argv[2]])
labels, _ = idx.knn_query(q, k=100)
from vmem.text import fts_query
m = fts_query(sys.argv[2])
text = [r[0] for r in con.execute("SELECT rowid FROM f WHERE f MATCH ? ORDER BY rank LIMIT 100", (m,))] if m else []
ids = list(dict.fromkeys(text + labels[0].tolist()))[:5]
rows = con.execute(f"SELECT id, text FROM p WHERE id IN ({','.join('?' * len(ids))})", ids).fetchall()
print(time.perf_counter() - t, len(rows))
"""


def open_times(script: str, path: Path, questions: list[str], runs: int) -> float:
    out = []
    for i in range(runs):
        r = subprocess.run([sys.executable, "-c", script, str(path), questions[i % len(questions)]],
                           capture_output=True, text=True, check=True)
        out.append(float(r.stdout.split()[0]))
    return statistics.median(out)


_RECALL = """
import sys, sqlite3, numpy as np
from vmem.storage import MemoryDir
k = 10
q = np.load(sys.argv[2])
with MemoryDir.open(sys.argv[1], create=False, read_only=True) as s:
    con = sqlite3.connect(f"file:{sys.argv[1]}/vmem.db?mode=ro", uri=True)
    rows = con.execute("SELECT id, embedding FROM passages ORDER BY id").fetchall()
    dim = q.shape[1]  # float32 blobs before schema 5, float16 from it
    vecs = np.stack([np.frombuffer(b, "<f4" if len(b) == 4 * dim else "<f2").astype(np.float32) for _, b in rows])
    serials = np.array([r[0] for r in rows])
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    exact = serials[np.argsort(-(q @ vecs.T), axis=1)[:, :k]]
    ids, _ = s.archival.index.query(q, k)
    got = (ids & np.uint64((1 << 56) - 1)).astype(np.int64)
    print(np.mean([len(set(got[i].tolist()) & set(exact[i].tolist())) / k for i in range(len(q))]))
"""


def hnsw_recall(path: Path, qvecs: np.ndarray, env: dict[str, str] | None = None) -> float:
    """recall@10 of the store's vector index (as opened from disk, read-only, in a fresh process)
    against exact search over the vectors the store keeps, for the query vectors ``qvecs``."""
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "q.npy", qvecs)
        r = subprocess.run([sys.executable, "-c", _RECALL, str(path), str(Path(tmp) / "q.npy")],
                           capture_output=True, text=True, check=True, env=env)
    return float(r.stdout.split()[-1])


# --------------------------------------------------------------------------- the baseline


class Plain:
    """SQLite (text + float32 vector, FTS5 external content) + a saved hnswlib index."""

    def __init__(self, path: Path, dim: int, capacity: int) -> None:
        import hnswlib

        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.con = sqlite3.connect(path / "base.db", isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self.con.execute("CREATE TABLE IF NOT EXISTS p(id INTEGER PRIMARY KEY, text TEXT NOT NULL, vec BLOB NOT NULL)")
        self.con.execute("CREATE VIRTUAL TABLE IF NOT EXISTS f USING fts5(text, content='p', content_rowid='id', "
                         "tokenize='porter unicode61')")
        self.idx = hnswlib.Index(space="cosine", dim=dim)
        self.idx.init_index(max_elements=capacity, M=16, ef_construction=200)
        self.idx.set_ef(32)
        self.next = 1

    def insert(self, texts: Sequence[str], vecs: np.ndarray) -> None:
        ids = list(range(self.next, self.next + len(texts)))
        self.next += len(texts)
        c = self.con
        c.execute("BEGIN")
        c.executemany("INSERT INTO p(id, text, vec) VALUES (?, ?, ?)",
                      [(i, t, v.tobytes()) for i, t, v in zip(ids, texts, vecs)])
        c.executemany("INSERT INTO f(rowid, text) VALUES (?, ?)", list(zip(ids, texts)))
        c.execute("COMMIT")
        self.idx.add_items(vecs, ids, num_threads=1 if len(ids) < 64 else -1)

    def close(self) -> None:
        self.idx.save_index(str(self.path / "base.hnsw"))
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.con.close()


# --------------------------------------------------------------------------- main


def measure(vpath: Path, bpath: Path, locomo: Path, opens: int) -> list[Figure]:
    """The figures of a kept pair of stores that need no building: disk by component, HNSW
    recall, open + first query."""
    con = sqlite3.connect(f"file:{vpath / 'vmem.db'}?mode=ro", uri=True)
    n = con.execute("SELECT count(*) FROM passages").fetchone()[0]
    con.close()
    con = sqlite3.connect(f"file:{bpath / 'base.db'}?mode=ro", uri=True)
    nb = con.execute("SELECT count(*) FROM p").fetchone()[0]
    con.close()
    questions = locomo_questions(locomo)[:200]
    comp = vmem_components(vpath, n)
    base_disk = sum(disk(bpath).values())
    figs = [Figure(f"disk per passage ({n:,} passages; plain: {nb:,})", round(comp["total"]), "B",
                   round(base_disk / nb), round(base_disk / nb / comp["total"], 2))]
    figs += [Figure(f"  bytes per passage: {k}", round(v), "B") for k, v in comp.items() if k != "total"]
    figs.append(Figure("HNSW recall@10 vs exact over the stored vectors (200 LoCoMo questions)",
                       round(hnsw_recall(vpath, HashEmbedder().embed_query(questions)), 4), ""))
    base_open = open_times(_BASE_OPEN, bpath, questions, opens)
    figs.append(Figure.timed("open + first hybrid query, fresh process", open_times(_VMEM_OPEN, vpath, questions, opens),
                             base_open, unit="ms"))
    figs.append(Figure.timed("  open + first text search (the vector index loads behind it)",
                             open_times(_VMEM_OPEN_TEXT, vpath, questions, opens), base_open, unit="ms"))
    return figs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--size", type=int, default=100_000, help="passages (default 100,000)")
    ap.add_argument("--batch", type=int, default=1000, help="passages per insert_many (default 1,000)")
    ap.add_argument("--singles", type=int, default=300, help="single durable inserts timed (default 300)")
    ap.add_argument("--opens", type=int, default=5, help="fresh-process opens timed (default 5)")
    ap.add_argument("--path", type=Path, default=LOCOMO, help="LoCoMo JSON file (turns and questions)")
    ap.add_argument("--dir", default=None, help="where to make the stores (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the stores (with --dir)")
    ap.add_argument("--measure", nargs=2, type=Path, metavar=("VMEM", "PLAIN"),
                    help="build nothing: measure a kept vmem store and a kept plain store (disk, recall, open)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.path.is_file():
        print(f"LoCoMo data not found at {args.path}", file=sys.stderr)
        return 2
    if args.measure:
        emit(measure(*args.measure, args.path, args.opens), args.json)
        return 0
    base = Path(tempfile.mkdtemp(prefix="vmem-bench-footprint-", dir=args.dir))
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr))
    figs: list[Figure] = []
    try:
        gen = TurnGen(args.path)
        texts: list[str] = []
        seen: set[str] = set()
        want = args.size + args.singles + 1
        while len(texts) < want:
            for x in gen.turns(want - len(texts)):
                if x not in seen:
                    seen.add(x)
                    texts.append(x)
        body, extra = texts[:args.size], texts[args.size:]
        emb = GivenVectors()
        t = time.perf_counter()
        vecs = emb.add(body)
        extra_vecs = emb.add(extra)
        say(f"{args.size:,} passages embedded in {time.perf_counter() - t:.1f}s")
        questions = locomo_questions(args.path)[:200]
        qvecs = emb.inner.embed_query(questions)

        vpath = base / "vmem"
        batch_rate, batch_built = vmem_build(vpath, body, emb, args.batch)
        say(f"vmem: {batch_rate:,.0f} inserts/s in batches of {args.batch} ({batch_built:,.0f}/s to a complete graph)")
        comp = vmem_components(vpath, args.size)
        recall = hnsw_recall(vpath, qvecs)
        open_s = open_times(_VMEM_OPEN, vpath, questions, args.opens)
        say(f"vmem: open + first query {open_s * 1e3:.0f} ms")
        open_text = open_times(_VMEM_OPEN_TEXT, vpath, questions, args.opens)
        say(f"vmem: open + first text search {open_text * 1e3:.0f} ms")
        single_rate, single_built = vmem_singles(vpath, extra, emb)

        bpath = base / "plain"
        plain = Plain(bpath, emb.dim, args.size + len(extra))
        t = time.perf_counter()
        for lo in range(0, len(body), args.batch):
            plain.insert(body[lo:lo + args.batch], vecs[lo:lo + args.batch])
        base_batch = args.size / (time.perf_counter() - t)
        plain.close()
        base_disk = sum(disk(bpath).values())
        base_open = open_times(_BASE_OPEN, bpath, questions, args.opens)
        plain = Plain(bpath, emb.dim, args.size + len(extra))
        plain.idx.load_index(str(bpath / "base.hnsw"), max_elements=args.size + len(extra))
        plain.next = args.size + 1
        t = time.perf_counter()
        for i in range(len(extra)):
            plain.insert(extra[i:i + 1], extra_vecs[i:i + 1])
        base_single = len(extra) / (time.perf_counter() - t)
        plain.con.close()

        n = args.size
        at100k = n == 100_000
        figs.append(Figure(f"disk at {n:,} passages", round(comp["total"] * n / MB, 1), "MB", round(base_disk / MB, 1),
                           round(base_disk / (comp["total"] * n), 2), "<= 200 MB" if at100k else "",
                           comp["total"] * n <= TARGET_DISK if at100k else None))
        for k, v in comp.items():
            if k != "total":
                figs.append(Figure(f"  bytes per passage: {k}", round(v), "B"))
        figs.append(Figure("HNSW recall@10 vs exact (200 LoCoMo questions)", round(recall, 4), ""))
        figs.append(Figure(f"inserts/s, batches of {args.batch} (vectors given, durable)", round(batch_rate), "passages/s",
                           round(base_batch), round(batch_rate / base_batch, 2), ">= 10,000/s",
                           batch_rate >= TARGET_BATCH))
        figs.append(Figure("  the same, until the vector graph holds them (built behind the writes)", round(batch_built),
                           "passages/s", round(base_batch), round(batch_built / base_batch, 2)))
        figs.append(Figure("durable single inserts/s (vectors given)", round(single_rate), "passages/s",
                           round(base_single), round(single_rate / base_single, 2), ">= 2,000/s",
                           single_rate >= TARGET_SINGLE))
        figs.append(Figure("  the same, until the vector graph holds them", round(single_built), "passages/s",
                           round(base_single), round(single_built / base_single, 2)))
        figs.append(Figure.timed(f"open + first hybrid query, fresh process, {n:,} passages", open_s, base_open, unit="ms",
                                 target="<= 100 ms" if at100k else "",
                                 met=(open_s <= 0.1) if at100k else None))
        figs.append(Figure.timed(f"  open + first text search (the vector index loads behind it), {n:,} passages",
                                 open_text, base_open, unit="ms"))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            say(f"stores kept in {base}")
    emit(figs, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
