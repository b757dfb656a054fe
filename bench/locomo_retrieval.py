#!/usr/bin/env python3
"""LoCoMo retrieval benchmark: recall@k of evidence turns for text, vector and hybrid search.

Every turn of each conversation in the LoCoMo dev split becomes one page of a
fresh memory (by default the real archival store, vmem.storage.MemoryDir);
each question with evidence is asked, and recall@k of its evidence turns is
reported per mode, overall and per category, beside the LoCoMo paper's DRAGON
figures. The logic lives in vmem.app.evaluation (evaluate_locomo), which the CLI
calls too; this script only parses arguments and prints.

    .venv/bin/python bench/locomo_retrieval.py
    .venv/bin/python bench/locomo_retrieval.py --modes text hybrid hybrid+context --json
    .venv/bin/python bench/locomo_retrieval.py --loco            # context weights, leave one conversation out
    .venv/bin/python bench/locomo_retrieval.py --loco recall     # the same for conversation_search

The data (CC BY-NC 4.0) is read from ../shared/data/locomo/locomo_dev.json or
--path; when it is absent the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # figures.py and the bench helpers

from figures import Figure, emit  # noqa: E402

from vmem.local_models import EMBEDDERS, make_embedder  # noqa: E402
from vmem.app.evaluation import (  # noqa: E402
    BASE_MODES,
    PAPER_DRAGON,
    evaluate_locomo,
    format_loco_report,
    format_report,
    select_context_loco,
    store_available,
)

DEFAULT_PATH = ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
DEFAULT_MODES = ["text", "vector", "hybrid", "rrf", "text+context", "hybrid+context"]
QUICK_MODES = ["text", "hybrid", "hybrid+context"]
#: The target of the retrieval issue: hybrid search at R@10 at least DRAGON's 67.5.
TARGET_MODES = ("hybrid", "hybrid+context")


def figures(result: dict) -> list[Figure]:
    """Overall recall per mode and k, in percent, beside the paper's DRAGON figure."""
    out = []
    for mode, res in result.items():
        for k, r in res["overall"].items():
            ref = PAPER_DRAGON.get(int(k))
            value = round(100 * r, 1)
            target = met = None
            if mode in TARGET_MODES and int(k) == 10:
                target, met = ">= 67.5 (DRAGON R@10)", value >= 67.5
            out.append(Figure(f"LoCoMo R@{k} {mode}", value, "%", baseline=ref,
                              ratio=round(value / ref, 2) if ref else None, target=target, met=met))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Recall@k of LoCoMo evidence turns for text (BM25), vector and hybrid retrieval.",
        epilog="Modes: " + ", ".join(BASE_MODES) + "; append '+context' to spread relevance to neighbouring turns.",
    )
    p.add_argument("--path", type=Path, default=DEFAULT_PATH, help=f"LoCoMo JSON file (default: {DEFAULT_PATH})")
    p.add_argument("--modes", nargs="+", default=DEFAULT_MODES, help="modes to evaluate (default: %(default)s)")
    p.add_argument("--ks", nargs="+", type=int, default=[5, 10, 25], help="cut-offs k (default: %(default)s)")
    p.add_argument(
        "--backend",
        default="auto",
        help="'store': the real archival store; 'memory': FTS5 + PageIndex in memory; 'auto': store if available; "
             "a postgresql://user@host/db URL: the PostgreSQL store (a fresh agent per conversation, dropped after)",
    )
    p.add_argument("--no-speaker", action="store_true", help="store turns without the 'Speaker: ' prefix")
    p.add_argument("--embedder", choices=list(EMBEDDERS), default="hash",
                   help="embedder (default: the built-in hash; minilm and e5-small need vmem[minilm] / vmem[e5])")
    p.add_argument("--model", default="text-embedding-3-small", help="model for --embedder openai")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible base URL for --embedder openai")
    p.add_argument("--context-weights", nargs=2, type=float, default=[0.5, 0.25], metavar=("FORWARD", "BACKWARD"),
                   help="share of a turn's score passed to its reply and to its prompt in +context modes "
                        "(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures (bench/figures.py shape) as a JSON list")
    p.add_argument("--raw", action="store_true", help="print the whole result (per category too) as JSON")
    p.add_argument("--quick", action="store_true", help="only the modes " + ", ".join(QUICK_MODES))
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--loco", nargs="?", const="archival", choices=["archival", "recall"], default=None,
                   help="choose the store's conversation-context weights by leave-one-conversation-out and "
                        "score each fold on its held-out conversation (archival: hybrid search; recall)")
    p.add_argument("--any-category", action="store_true",
                   help="with --loco: let a fold choose weights that lower some category on its training set")
    args = p.parse_args(argv)
    if args.quick:
        args.modes = QUICK_MODES

    if not args.path.exists():
        msg = f"LoCoMo data not found at {args.path}: skipping (pass --path to point at locomo_dev.json)"
        if args.json or args.raw:  # keep stdout parseable: an empty list of figures
            print(msg, file=sys.stderr)
            print("[]" if args.json else "{}")
        else:
            print(msg)
        return 0
    if args.embedder == "openai":
        from vmem.embed import OpenAIEmbedder

        embedder = OpenAIEmbedder(args.model, base_url=args.base_url)
    else:
        embedder = make_embedder(args.embedder)
    if args.loco:
        res = select_context_loco(args.path, target=args.loco, embedder=embedder, speaker=not args.no_speaker,
                                  progress=not (args.no_progress or args.json or args.raw),
                                  keep_categories=not args.any_category)
        print(json.dumps(res, indent=1) if (args.json or args.raw) else format_loco_report(res))
        return 0
    if args.backend not in ("auto", "store", "memory") and not args.backend.startswith(("postgresql://", "postgres://")):
        raise SystemExit(f"--backend: 'auto', 'store', 'memory' or a postgresql:// URL, not {args.backend!r}")
    backend = args.backend if args.backend != "auto" else ("store" if store_available() else "memory")
    t0 = time.perf_counter()
    result = evaluate_locomo(
        args.path,
        modes=args.modes,
        ks=args.ks,
        progress=not (args.no_progress or args.json or args.raw),
        embedder=embedder,
        backend=backend,
        speaker=not args.no_speaker,
        context_weights=(args.context_weights[0], args.context_weights[1]),
    )
    elapsed = time.perf_counter() - t0
    if args.json:
        emit(figures(result), as_json=True)
    elif args.raw:
        print(json.dumps({"config": {"path": str(args.path), "backend": backend, "embedder": embedder.name,
                                     "speaker": not args.no_speaker, "seconds": round(elapsed, 2),
                                     "context_weights": args.context_weights,
                                     "paper_dragon": {str(k): v for k, v in PAPER_DRAGON.items()}},
                          "results": result}, indent=2))
    else:
        n = next(iter(result.values()))["questions"] if result else 0
        print(f"LoCoMo retrieval: {n} questions with evidence, backend={backend}, embedder={embedder.name}, "
              f"speaker prefix={'no' if args.no_speaker else 'yes'}, {elapsed:.1f}s")
        print(format_report(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
