#!/usr/bin/env python3
"""The vector graph's batch adds on the process's cores, beside raw hnswlib (issue 21).

hnswlib 0.8, told ``set_num_threads(-1)``, adds every batch on one thread; ``PageIndex`` passed it
-1 for "every core" until it asked for the cores it may use. This times, in one process and in
alternating rounds (the machine is shared: medians of ``--rounds``), ``--size`` LoCoMo-like
passages' hash-embedder vectors added in batches of 1,000:

- raw hnswlib (M 16, ef_construction 200, preallocated, its default thread count);
- ``PageIndex(behind=False)`` with hnswlib's -1, as before;
- ``PageIndex(behind=False)`` as it is;
- ``PageIndex()`` (the graph built behind the adds), then ``settle()``: until the graph holds all.

    .venv/bin/python bench/hnsw_threads.py --size 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hnswlib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import LOCOMO, TurnGen  # noqa: E402

from vmem.embed import HashEmbedder  # noqa: E402
from vmem.index import PageIndex  # noqa: E402

BATCH = 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--size", type=int, default=20_000, help="passages (default 20,000)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    ap.add_argument("--path", type=Path, default=LOCOMO, help="LoCoMo JSON file")
    args = ap.parse_args(argv)
    if not args.path.exists():
        print(f"hnsw_threads.py: no LoCoMo file at {args.path} (give --path)", file=sys.stderr)
        return 2
    n = args.size
    vecs = HashEmbedder().embed(TurnGen(args.path, seed=2).turns(n)).astype(np.float32)
    ids = np.arange(1, n + 1, dtype=np.uint64)

    def raw() -> float:
        ix = hnswlib.Index("cosine", vecs.shape[1])
        ix.init_index(n, M=16, ef_construction=200, random_seed=100)
        t = time.perf_counter()
        for lo in range(0, n, BATCH):
            ix.add_items(vecs[lo:lo + BATCH], ids[lo:lo + BATCH])
        return n / (time.perf_counter() - t)

    def index(behind: bool, minus_one: bool = False) -> float:
        ix = PageIndex(vecs.shape[1], behind=behind)
        if minus_one:  # what the index did before: hnswlib's own -1
            ix._hnsw.set_num_threads(-1)
            ix._threads = -1
        t = time.perf_counter()
        for lo in range(0, n, BATCH):
            ix.add(ids[lo:lo + BATCH], vecs[lo:lo + BATCH])
        ix.settle()
        return n / (time.perf_counter() - t)

    runs: dict[str, Callable[[], float]] = {
        "raw hnswlib": raw,
        "PageIndex(behind=False), hnswlib's -1 (before)": lambda: index(False, True),
        "PageIndex(behind=False)": lambda: index(False),
        "PageIndex(), then settle()": lambda: index(True),
    }
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            rates[name].append(run())
    print(f"{n:,} passages in batches of {BATCH:,}, {args.rounds} alternating rounds (inserts a second)")
    for name, xs in rates.items():
        print(f"  {name:48s} median {statistics.median(xs):7,.0f}   ({', '.join(f'{x:,.0f}' for x in xs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
