#!/usr/bin/env python3
"""vmem's archival store beside the stores a Python developer would pick, in one run, same vectors.

Every system gets the same 384-d vectors (vmem's built-in hash embedder, computed once per
text), the same LoCoMo-like passages and the same questions:

- vmem: ``MemoryDir`` archival storage, ``search(mode="hybrid")`` (its default);
- LanceDB, hybrid: a vector column (flat search: no ANN index) and LanceDB's native
  full-text index (English stemming), fused by its default reranker (RRF);
- sqlite-vec + FTS5 with RRF: a ``vec0`` table (cosine, brute force) beside an FTS5
  ``porter unicode61`` table in one SQLite file, the two top-20s fused by RRF (k = 60);
- tantivy + hnswlib with RRF: a tantivy index (``en_stem``) that stores each passage's text
  and vector (the truth), an hnswlib graph beside it (M = 16, ef_construction = 200,
  ef = 32, as vmem's), the two top-20s fused by RRF (k = 60);
- Chroma: vector only (its HNSW, cosine), documents stored.

Columns, per size (10k and 100k passages):

- ``R@10``: LoCoMo dev, recall@10 of evidence turns, every question with evidence, each
  conversation's turns in a fresh store ("Speaker: text", as ``vmem eval locomo``);
  vmem's figure is ``vmem eval locomo``'s hybrid R@10 (the same function);
- ``p50`` / ``p99``: one search of 10 results per question (the query vector given:
  embedding is not timed), 200 LoCoMo questions, the systems interleaved question by
  question in a seeded random order, after 20 untimed warm-up questions;
- ``disk``: the bytes of the store's files after the batched build;
- ``batch/s``: passages per second inserted in batches of 1,000, vectors given, the
  text index built or committed included (until the store answers a query over them);
- ``durable/s``: single inserts per second, each durable when the call returns (fsync'd
  commit: vmem ``durability="full"``, SQLite ``synchronous=FULL``, tantivy's commit), 200 of
  them after the build;
- ``open``: a fresh process opens the store and answers its first query (imports not
  counted; printed separately).

Passages: LoCoMo-like turns (``bench_search.TurnGen``: the real LoCoMo sentences, a share of
their words swapped for a long Zipf tail, so the vocabulary grows with the corpus). The
stores are built under ``--dir`` (default: a temporary directory) and rebuilt each run
(the insert rates are measured by building them).

    .venv/bin/pip install -e ".[peers]"                   # the peers (an extra of vmem)
    .venv/bin/python bench/peers.py --quick               # 10k passages, bounded (a few minutes)
    .venv/bin/python bench/peers.py                       # 10k and 100k
    .venv/bin/python bench/peers.py --sizes 100000 --systems vmem tantivy+hnswlib --json

A peer whose package is not installed is named as missing, and the rest run. The LoCoMo
data is read from ``../shared/data/locomo`` (never copied); without it the script says so
and exits 0.
"""

from __future__ import annotations

import abc
import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # figures.py and the bench helpers

from bench_search import LOCOMO, TurnGen, locomo_questions  # noqa: E402
from figures import Figure, emit  # noqa: E402

from vmem.embed import Embedder, HashEmbedder  # noqa: E402

DIM = 384
K = 10  # results per search
DEPTH = 20  # candidates per side fused by the RRF peers
RRF_K = 60
BATCH = 1_000
SINGLES = 200
QUESTIONS = 200
WARMUP = 20


# --------------------------------------------------------------------------- vectors


class GivenVectors(Embedder):
    """The hash embedder's vectors, computed once per text and then looked up: the stores
    under test all receive the same arrays, and vmem's own inserts do not pay for embedding
    (the peers are given vectors too). Its ``name`` is the hash embedder's: the vectors are
    the same, so a store built with it reopens with the default embedder as it is."""

    def __init__(self) -> None:
        self.inner = HashEmbedder()
        self.dim, self.name = self.inner.dim, self.inner.name
        self.known: dict[str, np.ndarray] = {}

    def add(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` (not yet known) and remember them; return their vectors in order."""
        todo = [t for t in dict.fromkeys(texts) if t not in self.known]
        if todo:
            for t, v in zip(todo, self.inner.embed(todo)):
                self.known[t] = v
        return np.stack([self.known[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.add(list(texts))


# --------------------------------------------------------------------------- the systems


def _disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _rrf(*rankings: Sequence[int], k: int = K) -> list[int]:
    score: dict[int, float] = {}
    for ranking in rankings:
        for r, i in enumerate(ranking):
            score[i] = score.get(i, 0.0) + 1.0 / (RRF_K + r + 1)
    return [i for i, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


class System(abc.ABC):
    """One store under test: ids are the caller's ints (0..n-1), vectors unit float32."""

    name: str
    #: The import that tells whether the system is installed.
    needs: tuple[str, ...] = ()

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def missing(cls) -> list[str]:
        """The modules this system needs that are not installed."""
        import importlib.util

        return [m for m in cls.needs if importlib.util.find_spec(m) is None]

    def load(self) -> None:
        """Import the system's modules (what a process pays once, before any open)."""
        import importlib

        for m in self.needs:
            importlib.import_module(m)

    @abc.abstractmethod
    def create(self) -> None:
        """A new, empty store at ``self.path``."""

    @abc.abstractmethod
    def open(self) -> None:
        """Open the existing store at ``self.path``."""

    @abc.abstractmethod
    def add_batch(self, ids: Sequence[int], texts: Sequence[str], vecs: np.ndarray) -> None:
        """Insert a batch (searchable after :meth:`finish_batches`)."""

    def finish_batches(self) -> None:
        """Whatever makes the batches searchable (an index build, a commit)."""

    @abc.abstractmethod
    def add_durable(self, i: int, text: str, vec: np.ndarray) -> None:
        """Insert one passage, durable when this returns."""

    @abc.abstractmethod
    def search(self, q: str, vec: np.ndarray, k: int = K) -> list[int]:
        """The ids of the ``k`` best passages, best first."""

    def close(self) -> None:
        """Release the store (persisting what must be)."""


class Vmem(System):
    name = "vmem (hybrid)"
    needs = ("vmem.storage",)

    def __init__(self, path: Path, embedder: Embedder | None = None) -> None:
        super().__init__(path)
        self.embedder = embedder
        self.store: Any = None
        self.pid_of: dict[int, int] = {}  # caller id -> page id
        self.id_of: dict[int, int] = {}

    def create(self) -> None:
        from vmem.storage import MemoryDir

        self.store = MemoryDir.open(self.path, embedder=self.embedder, durability="full")

    def open(self) -> None:
        from vmem.storage import MemoryDir

        self.store = MemoryDir.open(self.path, embedder=self.embedder, create=False, durability="full")

    def add_batch(self, ids: Sequence[int], texts: Sequence[str], vecs: np.ndarray) -> None:
        got = self.store.archival.insert_many(list(texts))
        for i, pids in zip(ids, got):
            self.pid_of[i] = pids[0]
            self.id_of.setdefault(pids[0], i)

    def finish_batches(self) -> None:
        self.store.archival.index.settle()  # the vector graph is built behind the writes: until it holds them

    def add_durable(self, i: int, text: str, vec: np.ndarray) -> None:
        pid = self.store.archival.insert(text)[0]
        self.pid_of[i] = pid
        self.id_of.setdefault(pid, i)

    def search(self, q: str, vec: np.ndarray, k: int = K) -> list[int]:
        page = self.store.archival.search(q, vector=vec, mode="hybrid", page_size=k)
        return [self.id_of.get(h.item.id, -1) for h in page.hits]

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


class LanceDB(System):
    name = "LanceDB (hybrid)"
    needs = ("lancedb", "pyarrow")

    def _schema(self) -> Any:
        import pyarrow as pa

        return pa.schema([pa.field("id", pa.int64()), pa.field("text", pa.string()),
                          pa.field("vector", pa.list_(pa.float32(), DIM))])

    def create(self) -> None:
        import lancedb

        self.db = lancedb.connect(str(self.path))
        self.table = self.db.create_table("passages", schema=self._schema())

    def open(self) -> None:
        import lancedb

        self.db = lancedb.connect(str(self.path))
        self.table = self.db.open_table("passages")

    def _rows(self, ids: Sequence[int], texts: Sequence[str], vecs: np.ndarray) -> Any:
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1))
        return pa.table({"id": pa.array(ids, pa.int64()), "text": pa.array(texts, pa.string()),
                         "vector": pa.FixedSizeListArray.from_arrays(flat, DIM)}, schema=self._schema())

    def add_batch(self, ids: Sequence[int], texts: Sequence[str], vecs: np.ndarray) -> None:
        self.table.add(self._rows(ids, texts, vecs))

    def finish_batches(self) -> None:
        from lancedb.index import FTS

        self.table.create_index("text", config=FTS(stem=True, language="English", remove_stop_words=True),
                                replace=True)

    def add_durable(self, i: int, text: str, vec: np.ndarray) -> None:
        self.table.add(self._rows([i], [text], vec[None, :]))

    def search(self, q: str, vec: np.ndarray, k: int = K) -> list[int]:
        got = self.table.search(query_type="hybrid").vector(vec).distance_type("cosine").text(q).limit(k).to_arrow()
        return [int(i) for i in got.column("id").to_pylist()]


class SqliteVec(System):
    """Through apsw: the interpreter's own sqlite3 module may be built without extension
    loading (this one is), and apsw's wheels bundle an SQLite that loads them."""

    name = "sqlite-vec + FTS5 (RRF)"
    needs = ("sqlite_vec", "apsw")

    def _connect(self) -> None:
        import apsw
        import sqlite_vec

        self.path.mkdir(parents=True, exist_ok=True)
        self.con = apsw.Connection(str(self.path / "store.db"))
        self.con.enable_load_extension(True)
        self.con.load_extension(sqlite_vec.loadable_path())
        self.con.enable_load_extension(False)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")

    def create(self) -> None:
        self._connect()
        self.con.execute("CREATE TABLE p(id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
        self.con.execute("CREATE VIRTUAL TABLE t USING fts5(text, content='p', content_rowid='id', "
                         "tokenize='porter unicode61')")
        self.con.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}] distance_metric=cosine)")

    def open(self) -> None:
        self._connect()

    def _insert(self, ids: Sequence[int], texts: Sequence[str], vecs: np.ndarray) -> None:
        with self.con:  # one transaction, committed (and fsync'd: synchronous=FULL) on exit
            c = self.con.cursor()
            c.executemany("INSERT INTO p(id, text) VALUES (?, ?)", list(zip(ids, texts)))
            c.executemany("INSERT INTO t(rowid, text) VALUES (?, ?)", list(zip(ids, texts)))
            c.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)",
                          [(i, np.asarray(v, np.float32).tobytes()) for i, v in zip(ids, vecs)])

    def add_batch(self, ids: Sequence[int], texts: Sequence[str], vecs: np.ndarray) -> None:
        self._insert(ids, texts, vecs)

    def add_durable(self, i: int, text: str, vec: np.ndarray) -> None:
        self._insert([i], [text], vec[None, :])

    def search(self, q: str, vec: np.ndarray, k: int = K) -> list[int]:
        from vmem.text import fts_query

        vec_ids = [r[0] for r in self.con.execute(
            "SELECT rowid FROM v WHERE embedding MATCH ? AND k = ? ORDER BY distance",
            (np.asarray(vec, np.float32).tobytes(), DEPTH))]
        match = fts_query(q)
        text_ids = [] if match is None else [r[0] for r in self.con.execute(
            "SELECT rowid FROM t WHERE t MATCH ? ORDER BY rank LIMIT ?", (match, DEPTH))]
        return _rrf(text_ids, vec_ids, k=k)

    def close(self) -> None:
        self.con.close()


class TantivyHnsw(System):
    name = "tantivy + hnswlib (RRF)"
    needs = ("tantivy", "hnswlib")
    _WORD = re.compile(r"\w+")

    def _schema(self) -> Any:
        import tantivy

        sb = tantivy.SchemaBuilder()
        sb.add_integer_field("id", stored=True, indexed=True, fast=True)
        sb.add_text_field("text", stored=True, tokenizer_name="en_stem")
        sb.add_bytes_field("vector", stored=True)  # the truth the graph is rebuilt from
        return sb.build()

    def create(self) -> None:
        import hnswlib
        import tantivy

        (self.path / "text").mkdir(parents=True)
        self.index = tantivy.Index(self._schema(), path=str(self.path / "text"))
        self.writer = self.index.writer(heap_size=128_000_000, num_threads=1)
        self.hnsw = hnswlib.Index(space="cosine", dim=DIM)
        self.hnsw.init_index(max_elements=1024, M=16, ef_construction=200, random_seed=100)
        self.hnsw.set_ef(32)

    def open(self) -> None:
        import hnswlib
        import tantivy

        self.index = tantivy.Index(self._schema(), path=str(self.path / "text"))
        self.writer = None
        self.hnsw = hnswlib.Index(space="cosine", dim=DIM)
        self.hnsw.load_index(str(self.path / "vectors.hnsw"))
        self.hnsw.set_ef(32)

    def _add(self, ids: Sequence[int], texts: Sequence[str], vecs: np.ndarray) -> None:
        import tantivy

        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        if self.writer is None:
            self.writer = self.index.writer(heap_size=128_000_000, num_threads=1)
        for i, t, v in zip(ids, texts, vecs):
            self.writer.add_document(tantivy.Document(id=int(i), text=t, vector=v.tobytes()))
        need = self.hnsw.get_current_count() + len(ids)
        if need > self.hnsw.get_max_elements():
            self.hnsw.resize_index(max(need, 2 * self.hnsw.get_max_elements()))
        self.hnsw.add_items(vecs, np.asarray(ids, dtype=np.int64))

    def add_batch(self, ids: Sequence[int], texts: Sequence[str], vecs: np.ndarray) -> None:
        self._add(ids, texts, vecs)

    def finish_batches(self) -> None:
        self.writer.commit()
        self.writer.wait_merging_threads()
        self.writer = self.index.writer(heap_size=128_000_000, num_threads=1)
        self.index.reload()

    def add_durable(self, i: int, text: str, vec: np.ndarray) -> None:
        self._add([i], [text], vec[None, :])
        self.writer.commit()  # fsyncs; the graph is a cache of the stored vectors
        self.index.reload()

    def search(self, q: str, vec: np.ndarray, k: int = K) -> list[int]:
        labels, _ = self.hnsw.knn_query(vec, k=min(DEPTH, self.hnsw.get_current_count()))
        words = self._WORD.findall(q)
        text_ids: list[int] = []
        if words:
            query = self.index.parse_query(" ".join(words), ["text"])
            searcher = self.index.searcher()
            for _, addr in searcher.search(query, DEPTH).hits:
                text_ids.append(int(searcher.doc(addr)["id"][0]))
        return _rrf(text_ids, [int(i) for i in labels[0]], k=k)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.commit()
            self.writer.wait_merging_threads()
            self.writer = None
            self.hnsw.save_index(str(self.path / "vectors.hnsw"))  # the graph, so that an open need not rebuild it


class Chroma(System):
    name = "Chroma (vector only)"
    needs = ("chromadb",)

    def _client(self) -> Any:
        import chromadb
        from chromadb.config import Settings

        return chromadb.PersistentClient(path=str(self.path), settings=Settings(anonymized_telemetry=False))

    def create(self) -> None:
        self.client = self._client()
        self.col = self.client.create_collection("passages", embedding_function=None,
                                                 metadata={"hnsw:space": "cosine"})

    def open(self) -> None:
        self.client = self._client()
        self.col = self.client.get_collection("passages", embedding_function=None)

    def add_batch(self, ids: Sequence[int], texts: Sequence[str], vecs: np.ndarray) -> None:
        self.col.add(ids=[str(i) for i in ids], documents=list(texts), embeddings=np.asarray(vecs, np.float32))

    def add_durable(self, i: int, text: str, vec: np.ndarray) -> None:
        self.add_batch([i], [text], vec[None, :])

    def search(self, q: str, vec: np.ndarray, k: int = K) -> list[int]:
        got = self.col.query(query_embeddings=np.asarray(vec, np.float32)[None, :], n_results=k, include=[])
        return [int(i) for i in got["ids"][0]]


SYSTEMS: dict[str, type[System]] = {
    "vmem": Vmem, "lancedb": LanceDB, "sqlite-vec": SqliteVec, "tantivy+hnswlib": TantivyHnsw, "chroma": Chroma,
}


def make(key: str, path: Path, embedder: GivenVectors | None = None) -> System:
    cls = SYSTEMS[key]
    return Vmem(path, embedder) if cls is Vmem else cls(path)


# --------------------------------------------------------------------------- LoCoMo recall


def recall_at_10(keys: list[str], base: Path, embedder: GivenVectors, locomo: Path) -> dict[str, float]:
    """LoCoMo dev R@10 (in %) per system: each conversation's turns in a fresh store."""
    from vmem.app.evaluation import evaluate_locomo, load_locomo

    out: dict[str, float] = {}
    if "vmem" in keys:  # vmem eval locomo's hybrid figure, by the same function
        res = evaluate_locomo(locomo, modes=["hybrid"], ks=[K], progress=False, embedder=embedder.inner,
                              backend="store")
        out["vmem"] = 100 * float(res["hybrid"]["overall"][str(K)])
    convs = load_locomo(locomo)
    for key in keys:
        if key == "vmem":
            continue
        rows: list[float] = []
        for n, conv in enumerate(convs):
            texts = [t.page_text(speaker=True) for t in conv.turns]
            index_of = {t.dia_id: i for i, t in enumerate(conv.turns)}
            path = base / f"locomo-{key}-{n}"
            shutil.rmtree(path, ignore_errors=True)
            system = make(key, path)
            system.create()
            vecs = embedder.add(texts)
            for lo in range(0, len(texts), BATCH):
                system.add_batch(list(range(lo, min(lo + BATCH, len(texts)))), texts[lo:lo + BATCH], vecs[lo:lo + BATCH])
            system.finish_batches()
            qv = embedder.inner.embed_query([q.question for q in conv.questions])
            for q, v in zip(conv.questions, qv):
                evidence = {index_of[d] for d in q.evidence}
                got = set(system.search(q.question, v, K)[:K])
                rows.append(len(evidence & got) / len(evidence))
            system.close()
            shutil.rmtree(path, ignore_errors=True)
        out[key] = 100 * float(np.mean(rows))
    return out


# --------------------------------------------------------------------------- one size


def _open_probe(key: str, path: Path, query: str, vec_file: Path) -> dict[str, float]:
    """In a fresh process: seconds to import, and to open the store and answer a first query."""
    code = ("import sys, time, json, numpy as np; t0 = time.perf_counter(); "
            f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import peers; "
            f"s = peers.make({key!r}, peers.Path({str(path)!r})); s.load(); "
            "t1 = time.perf_counter(); s.open(); "
            f"got = s.search({query!r}, np.load({str(vec_file)!r})); t2 = time.perf_counter(); "
            "assert got, 'no result'; print(json.dumps({'import': t1 - t0, 'open': t2 - t1}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"open probe of {key} failed: {r.stderr.strip()[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_size(keys: list[str], n: int, base: Path, embedder: GivenVectors, texts: list[str], vecs: np.ndarray,
             extra: list[str], extra_vecs: np.ndarray, questions: list[str], qvecs: np.ndarray,
             progress: bool) -> dict[str, dict[str, float]]:
    """Build each system over ``texts`` (batched, then ``extra`` one durable insert at a time),
    time the questions interleaved, and reopen each in a fresh process."""
    res: dict[str, dict[str, float]] = {k: {} for k in keys}
    systems: dict[str, System] = {}
    for key in keys:
        path = base / f"{key}-{n}"
        shutil.rmtree(path, ignore_errors=True)
        system = make(key, path, embedder)
        t = time.perf_counter()
        system.create()
        for lo in range(0, n, BATCH):
            system.add_batch(list(range(lo, min(lo + BATCH, n))), texts[lo:lo + BATCH], vecs[lo:lo + BATCH])
        system.finish_batches()
        res[key]["batch/s"] = n / (time.perf_counter() - t)
        system.close()  # what a fresh process will find on disk
        res[key]["disk MB"] = _disk(path) / 1e6
        system.open()
        systems[key] = system
        t = time.perf_counter()
        for j, (text, v) in enumerate(zip(extra, extra_vecs)):
            system.add_durable(n + j, text, v)
        res[key]["durable/s"] = len(extra) / (time.perf_counter() - t)
        if progress:
            print(f"  {SYSTEMS[key].name}: built {n} ({res[key]['batch/s']:.0f}/s), "
                  f"{res[key]['durable/s']:.0f} durable inserts/s", file=sys.stderr)
    lat = interleaved({k: (lambda s: (lambda q, v: s.search(q, v)))(systems[k]) for k in keys}, questions, qvecs)
    for key in keys:
        res[key]["p50 ms"] = float(np.median(lat[key])) * 1e3
        res[key]["p99 ms"] = float(np.percentile(lat[key], 99)) * 1e3
        systems[key].close()
    vec_file = base / "probe-query.npy"
    np.save(vec_file, qvecs[0])
    for key in keys:
        probe = _open_probe(key, base / f"{key}-{n}", questions[0], vec_file)
        res[key]["open s"] = probe["open"]
        res[key]["import s"] = probe["import"]
    return res


def interleaved(paths: dict[str, Callable[[str, np.ndarray], Any]], questions: Sequence[str], qvecs: np.ndarray,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Seconds per search of each system, question by question, in a seeded random order per question."""
    names = list(paths)
    for q, v in zip(questions[:WARMUP], qvecs[:WARMUP]):
        for name in names:
            paths[name](q, v)
    out = {name: np.empty(len(questions)) for name in names}
    rng = random.Random(seed)
    clock = time.perf_counter
    for i, (q, v) in enumerate(zip(questions, qvecs)):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            t = clock()
            paths[name](q, v)
            out[name][i] = clock() - t
    return out


# --------------------------------------------------------------------------- main

COLUMNS = [("R@10", "LoCoMo dev R@10", "%"), ("p50 ms", "query p50", "ms"), ("p99 ms", "query p99", "ms"),
           ("disk MB", "disk", "MB"), ("batch/s", "batched inserts", "/s"), ("durable/s", "durable single inserts", "/s"),
           ("open s", "open + first query (fresh process)", "s")]


def table(n: int, res: dict[str, dict[str, float]], recall: dict[str, float]) -> str:
    """A Markdown table of one size's figures."""
    head = ["system", "R@10", "p50 ms", "p99 ms", "disk MB", "batch/s", "durable/s", "open s", "import s"]
    lines = [f"at {n:,} passages", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for key, r in res.items():
        cells = [SYSTEMS[key].name, f"{recall[key]:.1f}" if key in recall else "-"]
        cells += [f"{r[c]:.2f}" if c.endswith("ms") or c.endswith(" s") else f"{r[c]:,.0f}"
                  for c in head[2:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figures(n: int, res: dict[str, dict[str, float]], recall: dict[str, float]) -> list[Figure]:
    """vmem's figures, each beside the best peer's of the same run."""
    out: list[Figure] = []
    for col, label, unit in COLUMNS:
        values = {k: (recall.get(k) if col == "R@10" else r.get(col)) for k, r in res.items()}
        values = {k: v for k, v in values.items() if v is not None}
        higher = col in ("R@10", "batch/s", "durable/s")
        for key, v in values.items():
            peers = {k: x for k, x in values.items() if k != key}
            best = ratio = None
            if key == "vmem" and peers:  # beside the best peer of the same run
                best = max(peers.values()) if higher else min(peers.values())
                if best and v:
                    ratio = round(v / best if higher else best / v, 2)  # > 1: vmem better
            out.append(Figure(f"{label}, {SYSTEMS[key].name}, {n}", round(v, 3), unit,
                              baseline=None if best is None else round(best, 3), ratio=ratio))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--dir", default=None, help="where the stores are built (default: a temporary directory)")
    ap.add_argument("--path", type=Path, default=LOCOMO, help="LoCoMo JSON file")
    ap.add_argument("--quick", action="store_true", help="10,000 passages only")
    ap.add_argument("--no-recall", action="store_true", help="skip the LoCoMo R@10 column")
    ap.add_argument("--json", action="store_true", help="the figures as JSON (bench/figures.py shape)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    keys = []
    for key in args.systems:
        gone = SYSTEMS[key].missing()
        if gone:
            print(f"{SYSTEMS[key].name}: not installed ({', '.join(gone)} missing; pip install -e '.[peers]')",
                  file=sys.stderr)
        else:
            keys.append(key)
    if not args.path.is_file():
        print(f"LoCoMo data not found at {args.path}; nothing to measure", file=sys.stderr)
        emit([], args.json)
        return 0
    sizes = [10_000] if args.quick else sorted(args.sizes)
    progress = not args.json
    tmp = None
    if args.dir:
        base = Path(args.dir)
        base.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="vmem-bench-peers-")
        base = Path(tmp.name)
    embedder = GivenVectors()
    questions = locomo_questions(args.path)
    rng = random.Random(args.seed)
    questions = rng.sample(questions, min(QUESTIONS, len(questions)))
    qvecs = embedder.inner.embed_query(questions)
    figs: list[Figure] = []
    tables: list[str] = []
    try:
        recall = {} if args.no_recall else recall_at_10(keys, base, embedder, args.path)
        gen = TurnGen(args.path, seed=args.seed)
        texts: list[str] = []
        seen: set[str] = set()
        for n in sizes:
            t = time.perf_counter()
            while len(texts) < n + SINGLES:  # distinct texts: no store sees a duplicate
                for x in gen.turns(n + SINGLES - len(texts)):
                    if x not in seen:
                        seen.add(x)
                        texts.append(x)
            body, extra = texts[:n], texts[n:n + SINGLES]
            vecs = embedder.add(body)
            extra_vecs = embedder.add(extra)
            if progress:
                print(f"{n:,} passages, embedded in {time.perf_counter() - t:.1f}s", file=sys.stderr)
            res = run_size(keys, n, base, embedder, body, vecs, extra, extra_vecs, questions, qvecs, progress)
            tables.append(table(n, res, recall))
            figs += figures(n, res, recall)
            for key in keys:
                shutil.rmtree(base / f"{key}-{n}", ignore_errors=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        emit(figs, True)
    else:
        print(f"same {DIM}-d vectors (vmem's hash embedder) for every system; {len(questions)} LoCoMo questions, "
              f"k={K}; python {sys.version.split()[0]}, {os.cpu_count()} cores")
        print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
