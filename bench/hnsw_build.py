"""What the HNSW graph's build effort buys: ``ef_construction`` against batched inserts and recall.

For each ``--ef-construction`` value, one archival store of ``--size`` LoCoMo-like passages is
built with batched inserts (``insert_many`` of 1,000, vectors given, ``durability="full"``, as
``bench_footprint.py`` times them), then the HNSW recall@10 of its index against exact search over
the stored vectors is measured for 200 LoCoMo questions (in a fresh process, read-only). The
stores are built one after the other in one process and removed after. The store builds its index
with ``vmem.index.PageIndex``'s default (200); this bench alone sets another, to show the trade
the issue's ingest target would take.

    .venv/bin/python bench/hnsw_build.py --size 100000 --ef-construction 200 100 64
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_footprint as bf  # noqa: E402
from bench_search import LOCOMO, TurnGen, locomo_questions  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--size", type=int, default=100_000, help="passages (default 100,000)")
    ap.add_argument("--ef-construction", type=int, nargs="+", default=[200, 100, 64])
    ap.add_argument("--path", type=Path, default=LOCOMO, help="LoCoMo JSON file (turns and questions)")
    ap.add_argument("--dir", type=Path, default=None, help="where to build the stores (default: a temporary directory)")
    args = ap.parse_args(argv)
    if not args.path.exists():
        print(f"hnsw_build.py: no LoCoMo file at {args.path} (give --path)", file=sys.stderr)
        return 2
    import vmem.index as index_module

    gen = TurnGen(args.path)
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < args.size:
        for x in gen.turns(args.size - len(texts)):
            if x not in seen:
                seen.add(x)
                texts.append(x)
    emb = bf.GivenVectors()
    emb.add(texts)
    qvecs = emb.inner.embed_query(locomo_questions(args.path)[:200])
    default_init = index_module.PageIndex.__init__
    base = Path(tempfile.mkdtemp(prefix="vmem-bench-hnsw-", dir=args.dir))
    print(f"{'ef_construction':>15s} {'inserts/s':>10s} {'recall@10 vs exact':>19s}   (inserts/s: until the graph holds them)")
    try:
        for efc in args.ef_construction:
            def init(self: Any, *a: Any, _efc: int = efc, **k: Any) -> None:
                k["ef_construction"] = _efc
                default_init(self, *a, **k)

            index_module.PageIndex.__init__ = init  # type: ignore[method-assign]
            try:
                path = base / f"efc{efc}"
                rate = bf.vmem_build(path, texts, emb, 1000)[1]  # (the graph is built behind the writes)
            finally:
                index_module.PageIndex.__init__ = default_init  # type: ignore[method-assign]
            recall = bf.hnsw_recall(path, qvecs)
            print(f"{efc:15d} {rate:10,.0f} {recall:19.4f}", flush=True)
            shutil.rmtree(path, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
