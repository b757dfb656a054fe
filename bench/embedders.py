#!/usr/bin/env python3
"""Embedders side by side on LoCoMo dev, leave one conversation out, with the fusion re-tuned for each.

For every embedder named (vmem.local_models.EMBEDDERS: hash, minilm, e5-small,
static-tokenlearn, ...), in one process:

- cost: load time; query latency (``embed_query`` of one LoCoMo question, p50/p99);
  insert throughput in embeddings/s, in batches (every turn of a conversation in
  one ``embed`` call) and single (one turn per call);
- quality: every turn of each LoCoMo dev conversation is stored in a real archival
  store (MemoryDir, one ``insert_many`` per session, "Speaker: text" as
  bench/locomo_retrieval.py stores it), each question asked once for its text
  top-100 (the store's C BM25 index) and its vector top-100 (the store's HNSW
  index, the question embedded with ``embed_query``), and the store's own C fusion
  (``TextIndex.fuse``: convex, then conversation context) is run over a grid of
  text weights x context shares. Recall@10/25 of the evidence turns, per category.

Selection, leave one conversation out: fold i chooses the (text weight, context)
with the best mean of R@10 and R@25 on the other six conversations, then (stage 2,
the other levers, on the same six) a speaker bonus (a passage spoken by the one
speaker the question names gains ``speaker`` of the best fused score) and a date
bonus (a passage in the window of the date the question names, vmem.when.query_window,
gains ``date``), and is scored on conversation i alone. Nothing is chosen on the
conversation it is scored on. ``vector`` and ``text`` rows are the single indexes
(no tuning). For reference, not held out: ``hybrid (default w, context)`` is the
store's fusion (DEFAULT_TEXT_WEIGHT, DEFAULT_CONTEXT) without the date bonus,
``hybrid (store as shipped)`` the same with DEFAULT_DATE_BONUS, and ``today`` the
HashEmbedder store as it was before dates counted (every fold's floor per category).

    .venv/bin/python bench/embedders.py --embedders hash minilm e5-small static-tokenlearn
    .venv/bin/python bench/embedders.py --quick              # hash only, a small grid, 2 conversations
    .venv/bin/python bench/embedders.py --json > figures.json

The data (CC BY-NC 4.0) is read from ../shared/data/locomo/locomo_dev.json (never
copied); without it the script says so and exits 0. An embedder whose package is
absent is reported as such and skipped.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from vmem.app.evaluation import CATEGORIES, Conversation, load_locomo  # noqa: E402
from vmem.embed import Embedder, EmbedderError  # noqa: E402
from vmem.local_models import EMBEDDERS, StaticEmbedder, _package_dir  # noqa: E402
from vmem.rank import DEFAULT_TEXT_WEIGHT  # noqa: E402
from vmem.storage.sqlite import DEFAULT_CONTEXT, DEFAULT_DATE_BONUS  # noqa: E402
from vmem.when import query_window  # noqa: E402

#: ../shared beside the checkout, or beside the folder of worktrees it sits in
def _tokenlearn_static() -> Embedder:
    """tokenlearn-static-model's bundled 10k-cluster, 64-d int8 model2vec model (measured only:
    its wheel states no licence, so vmem does not offer it)."""
    return StaticEmbedder(_package_dir("static_model", "static") / "model", label="tokenlearn-10k-64d-int8")


CANDIDATES = {**EMBEDDERS, "static-tokenlearn": _tokenlearn_static}
DEFAULT_PATH = next((p for p in (ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json",
                                 ROOT.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json") if p.exists()),
                    ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json")
KS = (10, 25)
DEEP = 100  # the store's PAGE_BUCKET: how deep each side of a hybrid search looks
TEXT_WEIGHTS = (0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
CONTEXTS = tuple((fq, fs, b) for fq in (0.0, 0.5, 0.75, 1.0) for fs in (0.0, 0.25) for b in (0.0, 0.25, 0.5, 0.75))
SPEAKER_BONUS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
DATE_BONUS = (0.0, 0.1, 0.25, 0.5, 1.0)
QUICK_WEIGHTS = (0.6, 0.75, 0.9)
QUICK_CONTEXTS = ((0.0, 0.0, 0.0), DEFAULT_CONTEXT)

@dataclass
class ConvRun:
    """One conversation in one embedder's store, with every question's raw rankings."""

    conv: Conversation
    store: Any
    tmp: Any
    evidence: list[set[int]] = field(default_factory=list)  # serials
    cats: list[int] = field(default_factory=list)
    text: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    vec: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    speaker_of: np.ndarray | None = None  # serial -> speaker index (-1 none)
    ts_of: np.ndarray | None = None  # serial -> epoch seconds
    named: list[int] = field(default_factory=list)  # speaker index the question names, -1 none
    window: list[Any] = field(default_factory=list)


def build(conv: Conversation, embedder: Embedder, speaker: bool = True) -> ConvRun:
    from vmem.storage import MemoryDir

    tmp = tempfile.TemporaryDirectory(prefix="vmem-embedders-")
    store = MemoryDir.open(Path(tmp.name) / "agent", embedder=embedder, create=True, durability="normal")
    run = ConvRun(conv, store, tmp)
    names = sorted({t.speaker for t in conv.turns})
    serial_of: dict[str, int] = {}
    spk: dict[int, int] = {}
    tss: dict[int, float] = {}
    turns = conv.turns
    start = 0
    while start < len(turns):
        end = start
        while end < len(turns) and turns[end].session == turns[start].session:
            end += 1
        chunk = turns[start:end]
        got = store.archival.insert_many([t.page_text(speaker=speaker) for t in chunk], timestamp=chunk[0].timestamp)
        for t, ids in zip(chunk, got):
            s = int(ids[0]) & ((1 << 56) - 1)
            serial_of[t.dia_id] = s
            spk[s] = names.index(t.speaker)
            tss[s] = t.timestamp.timestamp()
        start = end
    top = max(serial_of.values()) + 1
    run.speaker_of = np.full(top, -1, dtype=np.int64)
    run.ts_of = np.zeros(top, dtype=np.float64)
    for s, i in spk.items():
        run.speaker_of[s] = i
        run.ts_of[s] = tss[s]
    for q in conv.questions:
        run.evidence.append({serial_of[d] for d in q.evidence})
        run.cats.append(q.category)
        hits = [i for i, n in enumerate(names) if re.search(rf"\b{re.escape(n)}\b", q.question, re.I)]
        run.named.append(hits[0] if len(hits) == 1 else -1)
        run.window.append(query_window(q.question))
    return run


def rank_raw(run: ConvRun, embedder: Embedder) -> None:
    """Each question's text top-DEEP and vector top-DEEP, as the store's hybrid search takes them."""
    arch = run.store.archival
    qs = [q.question for q in run.conv.questions]
    qv = embedder.embed_query(qs) if qs else np.zeros((0, embedder.dim), np.float32)
    deep = min(DEEP, len(arch))
    mask = np.uint64((1 << 56) - 1)
    for q, v in zip(qs, qv):
        t = arch.lexical.index.search(q, deep)
        run.text.append((np.asarray(t.docs, dtype=np.uint32), np.asarray(t.scores, dtype=np.float64)))
        ids, sims = arch.index.query(v[None, :].astype(np.float32), deep)
        keep = np.isfinite(sims[0])
        run.vec.append(((ids[0][keep] & mask).astype(np.uint32), sims[0][keep].astype(np.float64)))


def fused(run: ConvRun, i: int, w: float, ctx: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    (td, ts), (vd, vs) = run.text[i], run.vec[i]
    return run.store.archival.lexical.index.fuse(td, ts, vd, vs, text_weight=w, context=ctx)


def check_faithful(run: ConvRun, embedder: Embedder) -> None:
    """The grid's fusion must be the store's own: the store's default hybrid search
    (its weight and context) gives the same top-25 for every question."""
    arch = run.store.archival
    for i, q in enumerate(run.conv.questions):
        want = [int(h.item.id) & ((1 << 56) - 1) for h in arch.search(q.question, page_size=max(KS)).hits]
        docs, scores = fused(run, i, arch._text_weight, arch.context)
        got = [int(d) for d in levers(run, i, docs, scores, 0.0, arch.date_bonus)[: max(KS)]]
        if want != got:
            raise RuntimeError(f"{embedder.name}: the bench's fusion differs from the store's search on {q.question!r}")


def levers(run: ConvRun, i: int, docs: np.ndarray, scores: np.ndarray, b_spk: float, b_date: float) -> np.ndarray:
    if not len(docs) or (b_spk == 0 and b_date == 0):
        return docs
    top = max(float(scores[0]), 0.0)  # as the store does (SqliteArchival._date_bonus)
    bonus = np.zeros(len(docs))
    if b_spk and run.named[i] >= 0:
        bonus += b_spk * top * (run.speaker_of[docs] == run.named[i])
    if b_date and run.window[i] is not None:
        bonus += b_date * top * run.window[i].contains(run.ts_of[docs])
    if not bonus.any():
        return docs
    return docs[np.argsort(-(scores + bonus), kind="stable")]


def recall_row(evidence: set[int], docs: Any) -> list[float]:
    got = [int(d) for d in docs[: max(KS)]]
    return [len(evidence.intersection(got[:k])) / len(evidence) for k in KS]


def summarise(rows: list[tuple[int, list[float]]]) -> dict[str, Any]:
    arr = np.array([r for _, r in rows]) if rows else np.zeros((0, len(KS)))
    out = {"overall": {str(k): float(v) for k, v in zip(KS, arr.mean(axis=0))} if len(arr) else {},
           "by_category": {}, "questions": len(rows)}
    for c in sorted({c for c, _ in rows}):
        sub = np.array([r for cc, r in rows if cc == c])
        out["by_category"][CATEGORIES.get(c, str(c))] = {str(k): float(v) for k, v in zip(KS, sub.mean(axis=0))}
    return out


def cost(embedder: Embedder, convs: list[Conversation], n_query: int = 200, n_single: int = 200) -> dict[str, float]:
    qs = [q.question for c in convs for q in c.questions][:n_query]
    turns = [t.page_text() for c in convs for t in c.turns]
    t0 = time.perf_counter()
    embedder.embed_query([qs[0]])
    load = time.perf_counter() - t0
    lat = []
    for q in qs:
        t = time.perf_counter()
        embedder.embed_query([q])
        lat.append(time.perf_counter() - t)
    batch = turns[:512]
    t = time.perf_counter()
    embedder.embed(batch)
    batch_rate = len(batch) / (time.perf_counter() - t)
    t = time.perf_counter()
    for x in turns[512 : 512 + n_single]:
        embedder.embed([x])
    single_rate = n_single / (time.perf_counter() - t)
    return {"load_s": load, "query_p50_ms": 1e3 * float(np.median(lat)), "query_p99_ms": 1e3 * float(np.percentile(lat, 99)),
            "insert_batch_per_s": batch_rate, "insert_single_per_s": single_rate}


class Cached(Embedder):
    """An embedder's vectors kept in ``path`` (an .npz) between runs: the same name, dimension
    and vectors, each text embedded once (passages and queries apart)."""

    def __init__(self, inner: Embedder, path: Path) -> None:
        self.inner, self.path = inner, path
        self.name, self.dim = inner.name, inner.dim
        self.memo: dict[tuple[str, str], np.ndarray] = {}
        if path.exists():
            z = np.load(path, allow_pickle=False)
            for kind, text, vec in zip(z["kinds"], z["texts"], z["vecs"]):
                self.memo[(str(kind), str(text))] = vec

    def _get(self, kind: str, texts: Any, fn: Any) -> np.ndarray:
        texts = list(texts)
        new = [t for t in dict.fromkeys(texts) if (kind, t) not in self.memo]
        if new:
            for t, v in zip(new, fn(new)):
                self.memo[(kind, t)] = v
        return np.array([self.memo[(kind, t)] for t in texts], dtype=np.float32).reshape(len(texts), self.dim)

    def embed(self, texts: Any) -> np.ndarray:
        return self._get("p", texts, self.inner.embed)

    def embed_query(self, texts: Any) -> np.ndarray:
        return self._get("q", texts, self.inner.embed_query)

    def save(self) -> None:
        keys = list(self.memo)
        np.savez(self.path, kinds=np.array([k for k, _ in keys]), texts=np.array([t for _, t in keys]),
                 vecs=np.array([self.memo[k] for k in keys], dtype=np.float32))


def baseline_rows(convs: list[Conversation]) -> list[list[tuple[int, list[float]]]]:
    """Today's search per conversation: the HashEmbedder through the store's default hybrid search
    as it was before this bench (no date bonus)."""
    out = []
    for c in convs:
        run = build(c, CANDIDATES["hash"]())
        try:
            arch = run.store.archival
            arch.date_bonus = 0.0  # today's search: before dates in queries counted
            out.append([(q.category, recall_row(run.evidence[i], [int(h.item.id) & ((1 << 56) - 1) for h in
                                                                   arch.search(q.question, page_size=max(KS)).hits]))
                        for i, q in enumerate(c.questions)])
        finally:
            run.store.close()
            run.tmp.cleanup()
    return out


def _cat_means(items: list[tuple[int, list[float]]]) -> dict[int, np.ndarray]:
    cats: dict[int, list[list[float]]] = {}
    for c, r in items:
        cats.setdefault(c, []).append(r)
    return {c: np.mean(v, axis=0) for c, v in cats.items()}


def evaluate(name: str, convs: list[Conversation], weights: tuple[float, ...], contexts: tuple[tuple[float, float, float], ...],
             progress: bool, base: list[list[tuple[int, list[float]]]], keep_categories: bool = True,
             cache: Path | None = None) -> dict[str, Any]:
    embedder = CANDIDATES[name]()
    res: dict[str, Any] = {"embedder": name, "cost": cost(embedder, convs)}
    if cache is not None:  # after the cost figures, which must time the model itself
        import hashlib

        cache.mkdir(parents=True, exist_ok=True)
        embedder = Cached(embedder, cache / f"{hashlib.sha1(embedder.name.encode()).hexdigest()[:16]}.npz")
    res["name"] = embedder.name
    t0 = time.perf_counter()
    runs = []
    try:
        for c in convs:
            run = build(c, embedder)
            rank_raw(run, embedder)
            if not runs:
                check_faithful(run, embedder)
            runs.append(run)
            if progress:
                print(f"  {name}: {c.sample_id} stored and ranked ({time.perf_counter() - t0:.0f}s)", file=sys.stderr)
        res["build_s"] = time.perf_counter() - t0
        if isinstance(embedder, Cached):
            embedder.save()
        grid = [(w, c) for w in weights for c in contexts]
        # rows[conv][grid point] -> [(category, [R@10, R@25])]
        rows = [[[(r.cats[i], recall_row(r.evidence[i], fused(r, i, w, c)[0])) for i in range(len(r.cats))]
                 for w, c in grid] for r in runs]
        text_rows = [(r.cats[i], recall_row(r.evidence[i], r.text[i][0])) for r in runs for i in range(len(r.cats))]
        vec_rows = [(r.cats[i], recall_row(r.evidence[i], r.vec[i][0])) for r in runs for i in range(len(r.cats))]
        d = grid.index((DEFAULT_TEXT_WEIGHT, DEFAULT_CONTEXT)) if (DEFAULT_TEXT_WEIGHT, DEFAULT_CONTEXT) in grid else None
        default_rows = [x for per in rows for x in per[d]] if d is not None else []
        shipped_rows = [(r.cats[i], recall_row(r.evidence[i], levers(r, i, *fused(r, i, DEFAULT_TEXT_WEIGHT, DEFAULT_CONTEXT),
                                                                     0.0, DEFAULT_DATE_BONUS)))
                        for r in runs for i in range(len(r.cats))]

        def score(items: list[tuple[int, list[float]]]) -> float:
            return float(np.mean([(r[0] + r[1]) / 2 for _, r in items])) if items else 0.0

        folds, pooled_a, pooled_b, pooled_d = [], [], [], []
        fused_cache: dict[Any, list[tuple[np.ndarray, np.ndarray]]] = {}
        lever_grid = [(s, dd) for s in SPEAKER_BONUS for dd in DATE_BONUS]
        for i, held in enumerate(runs):
            train = [j for j in range(len(runs)) if j != i]
            floor = _cat_means([x for j in train for x in base[j]])

            def keeps(items: list[tuple[int, list[float]]]) -> bool:
                """No category on the training conversations below today's search there."""
                got = _cat_means(items)
                return not keep_categories or all((got[c] >= floor[c] - 1e-12).all() for c in floor)

            def pick(cands: list[Any], items_of: Any, tie: Any) -> Any:
                scored = [(score(items_of(x)), keeps(items_of(x)), x) for x in cands]
                ok = [t for t in scored if t[1]] or scored  # none keeps every category: the best overall
                return max(ok, key=lambda t: (t[0], tie(t[2])))[2]

            g = pick(list(range(len(grid))), lambda k: [x for j in train for x in rows[j][k]], lambda k: -k)
            w, c = grid[g]
            pooled_a += rows[i][g]

            def lever_rows(j: int, s: float, dd: float) -> list[tuple[int, list[float]]]:
                r = runs[j]
                key = (j, w, c)
                if key not in fused_cache:
                    fused_cache[key] = [fused(r, q, w, c) for q in range(len(r.cats))]
                return [(r.cats[q], recall_row(r.evidence[q], levers(r, q, docs, scores, s, dd)))
                        for q, (docs, scores) in enumerate(fused_cache[key])]

            best = pick(lever_grid, lambda sd: [x for j in train for x in lever_rows(j, *sd)], lambda sd: (-sd[0], -sd[1]))
            test_b = lever_rows(i, *best)
            pooled_b += test_b
            best_d = pick([(0.0, dd) for dd in DATE_BONUS], lambda sd: [x for j in train for x in lever_rows(j, *sd)],
                          lambda sd: -sd[1])
            pooled_d += lever_rows(i, *best_d)
            folds.append({"held_out": held.conv.sample_id, "text_weight": w, "context": list(c),
                          "speaker": best[0], "date": best[1], "date_alone": best_d[1],
                          "test": summarise(rows[i][g])["overall"], "test_levers": summarise(test_b)["overall"]})
        res.update({
            "text": summarise(text_rows), "vector": summarise(vec_rows),
            "hybrid_default": summarise(default_rows) if default_rows else None,
            "today": summarise([x for per in base for x in per]),
            "hybrid_shipped": summarise(shipped_rows),
            "hybrid_loco": summarise(pooled_a), "hybrid_loco_levers": summarise(pooled_b),
            "hybrid_loco_date": summarise(pooled_d), "folds": folds,
        })
    finally:
        for r in runs:
            r.store.close()
            r.tmp.cleanup()
    return res


def fmt(r: dict[str, Any] | None) -> str:
    if not r:
        return "      -       -"
    return "".join(f"{100 * r['overall'][str(k)]:8.1f}" for k in KS)


def report(results: list[dict[str, Any]]) -> str:
    lines = ["LoCoMo dev, leave one conversation out (R@10, R@25 of evidence turns, percent)", ""]
    lines.append(f"{'embedder':20}{'mode':30}{'R@10':>8}{'R@25':>8}")
    for res in results:
        if "error" in res:
            lines.append(f"{res['embedder']:20}unavailable: {res['error']}")
            continue
        for label, key in (("vector", "vector"), ("text (BM25)", "text"), ("hybrid (default w, context)", "hybrid_default"),
                           ("hybrid (store as shipped)", "hybrid_shipped"),
                           ("hybrid (LOCO re-tuned)", "hybrid_loco"), ("hybrid + date (LOCO)", "hybrid_loco_date"),
                           ("hybrid + speaker, date (LOCO)", "hybrid_loco_levers")):
            lines.append(f"{res['embedder']:20}{label:30}{fmt(res.get(key))}")
    lines += ["", "per category, hybrid LOCO re-tuned (R@10/R@25) | with speaker and date levers"]
    today = next((r["today"] for r in results if "today" in r), None)
    if today:
        lines.append(f"{'today (hash, store)':20}" + "  ".join(
            f"{c} {100 * v['10']:.1f}/{100 * v['25']:.1f}" for c, v in today["by_category"].items()))
    for res in results:
        if "error" in res:
            continue
        cats = res["hybrid_loco"]["by_category"]
        lev = res["hybrid_loco_levers"]["by_category"]
        lines.append(f"{res['embedder']:20}" + "  ".join(
            f"{c} {100 * v['10']:.1f}/{100 * v['25']:.1f} | {100 * lev[c]['10']:.1f}/{100 * lev[c]['25']:.1f}"
            for c, v in cats.items()))
    lines += ["", f"{'embedder':20}{'load s':>8}{'query p50 ms':>14}{'p99 ms':>9}{'insert/s batch':>16}{'single':>9}"]
    for res in results:
        if "error" in res:
            continue
        c = res["cost"]
        lines.append(f"{res['embedder']:20}{c['load_s']:8.2f}{c['query_p50_ms']:14.3f}{c['query_p99_ms']:9.3f}"
                     f"{c['insert_batch_per_s']:16.0f}{c['insert_single_per_s']:9.0f}")
    lines += ["", "folds' choices (text weight / context fq,fs,b / speaker / date)"]
    for res in results:
        if "error" in res:
            continue
        lines.append(f"{res['embedder']:20}" + "; ".join(
            f"{f['held_out']}: {f['text_weight']:g}/{','.join(f'{x:g}' for x in f['context'])}/{f['speaker']:g}/{f['date']:g}"
            for f in res["folds"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--embedders", nargs="+", default=["hash"], help=f"names among {', '.join(CANDIDATES)} (default: hash)")
    p.add_argument("--path", type=Path, default=DEFAULT_PATH, help="LoCoMo JSON file (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="a 3 x 2 grid over the first two conversations (a smoke run)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument("--any-category", action="store_true",
                   help="let a fold choose settings that lower a category below today's search on its training set")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--cache", type=Path, default=None, metavar="DIR",
                   help="keep each embedder's vectors of the LoCoMo texts in DIR between runs (the cost figures "
                        "are measured anyway)")
    args = p.parse_args(argv)
    if not args.path.exists():
        print(f"LoCoMo data not found at {args.path}: skipping (pass --path)", file=sys.stderr)
        print("[]" if args.json else "no data")
        return 0
    convs = load_locomo(args.path)
    weights, contexts = TEXT_WEIGHTS, CONTEXTS
    if args.quick:
        convs, weights, contexts = convs[:2], QUICK_WEIGHTS, QUICK_CONTEXTS
    base = baseline_rows(convs)
    results = []
    for name in args.embedders:
        if name not in CANDIDATES:
            p.error(f"unknown embedder {name!r}: use one of {', '.join(CANDIDATES)}")
        try:
            results.append(evaluate(name, convs, weights, contexts, progress=not args.no_progress, base=base,
                                    keep_categories=not args.any_category, cache=args.cache))
        except EmbedderError as e:
            results.append({"embedder": name, "error": str(e)})
    print(json.dumps(results, indent=1) if args.json else report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
