#!/usr/bin/env python3
"""What prefetch's recall search costs with the matches' neighbours, beside the matches alone.

Prefetch (``vmem.kernel.paging.prefetch_hits``) searches both tiers for the user's words; its
recall search ranks the messages next to the matches too (``RecallStore.search(...,
with_neighbours=True)``: the reply to a matching question). This times ``prefetch_hits`` (k=2, the
step's default in bench_pagefault.py) over a store of ``--size`` passages and messages, with the
recall side searched both ways, alternating question by question in one process, the LoCoMo
questions as the user's words. p50 / p90 in ms.

    .venv/bin/python bench/bench_prefetch_recall.py                      # 10k, a temporary store
    .venv/bin/python bench/bench_prefetch_recall.py --size 100000 --dir /var/tmp/vmem-bench
    .venv/bin/python bench/bench_prefetch_recall.py --store /var/tmp/vmem-bench/agent-on-100000  # bench_pagefault's
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import LOCOMO, TurnGen, build_archival, build_recall  # noqa: E402
from vmem.kernel.paging import prefetch_hits  # noqa: E402
from vmem.storage import MemoryDir  # noqa: E402
from vmem.storage.recall import RecallStore  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--size", type=int, default=10_000, help="passages and messages (default %(default)s)")
    ap.add_argument("--dir", type=Path, help="where the store is built and kept (default: a temporary directory)")
    ap.add_argument("--store", type=Path, help="time an existing store instead (read only; --size is then ignored)")
    ap.add_argument("--questions", type=int, default=1000, help="questions timed each way (default %(default)s)")
    ap.add_argument("--path", type=Path, default=LOCOMO, help="LoCoMo JSON (default: %(default)s)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.path.exists():
        print(f"bench_prefetch_recall.py: no LoCoMo file at {args.path} (--path)", file=sys.stderr)
        return 2
    if args.store is not None:
        path = args.store
    else:
        path = (args.dir or Path(tempfile.mkdtemp(prefix="vmem-prefetch-"))) / f"prefetch-{args.size}"
        gen = TurnGen(args.path, seed=3)
        build_archival(path, args.size, gen)
        build_recall(path, args.size, gen)
    questions = [q["question"] for c in json.loads(args.path.read_text()) for q in c["qa"]]
    random.Random(0).shuffle(questions)
    questions = (questions * (1 + args.questions // len(questions)))[: args.questions]

    search = RecallStore.search
    neighbours = {"on": True}

    def switched(self: RecallStore, *a: Any, with_neighbours: bool = False, **k: Any) -> Any:
        return search(self, *a, with_neighbours=with_neighbours and neighbours["on"], **k)

    times: dict[bool, list[float]] = {False: [], True: []}
    with MemoryDir.open(path, create=False, read_only=True) as store:
        store.archival.index  # loaded before the clock runs
        sizes = (len(store.archival), len(store.recall))
        RecallStore.search = switched  # type: ignore[method-assign]
        try:
            for i, q in enumerate(questions):
                for on in ((False, True) if i % 2 else (True, False)):
                    neighbours["on"] = on
                    t = time.perf_counter()
                    prefetch_hits(store, q, 2, ())
                    times[on].append(time.perf_counter() - t)
        finally:
            RecallStore.search = search  # type: ignore[method-assign]

    def pct(v: list[float], p: float) -> float:
        return round(1000 * sorted(v)[int(p * (len(v) - 1))], 3)

    out = {"passages": sizes[0], "messages": sizes[1], "questions": len(questions),
           "matches only": {"p50_ms": pct(times[False], 0.5), "p90_ms": pct(times[False], 0.9)},
           "with neighbours": {"p50_ms": pct(times[True], 0.5), "p90_ms": pct(times[True], 0.9)}}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"prefetch_hits, k=2, {sizes[0]:,} passages + {sizes[1]:,} messages, {len(questions)} questions each way")
        for name in ("matches only", "with neighbours"):
            print(f"  recall {name:<16} p50 {out[name]['p50_ms']:.3f} ms  p90 {out[name]['p90_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
