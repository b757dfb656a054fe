#!/usr/bin/env python3
"""Dates in questions for conversation_search: what the recall date bonus is worth on LoCoMo.

Recall search ranks messages by BM25. For a query that names a date ("on 7 July, 2023",
vmem.when.query_window), ``RecallStore.date_bonus`` raises the messages sent within the date's
window by a share of the best match's score. This measures that share on LoCoMo dev: every
question's evidence, R@1/5/10/25 through conversation_search, per category, for each share in
``--bonus``; then leave one conversation out: each conversation's share is the one that scores
best (mean R@10, then R@25) on the other six among those that lower no category's R@10 there,
and the conversation is scored with it.

    .venv/bin/python bench/recall_dates.py                   # ../shared/data/locomo/locomo_dev.json
    .venv/bin/python bench/recall_dates.py --bonus 0 0.25 0.5 1 --json
    .venv/bin/python bench/recall_dates.py --with-neighbours     # prefetch's recall search instead
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from knowledge_updates import DEFAULT_LOCOMO, locomo_stores  # noqa: E402

KS = (1, 5, 10, 25)


def measure(store: Any, conv: Any, message_of: dict[str, int], bonus: float,
            with_neighbours: bool = False) -> dict[int, list[list[float]]]:
    """category -> one row of R@k per question, conversation_search (or prefetch's recall search:
    ``with_neighbours``) with this date bonus."""
    store.recall.date_bonus = bonus
    rows: dict[int, list[list[float]]] = {}
    for q in conv.questions:
        evidence = {message_of[d] for d in q.evidence}
        got = [m.id for m in store.recall.search(q.question, page_size=max(KS), with_neighbours=with_neighbours).items]
        rows.setdefault(q.category, []).append([len(evidence.intersection(got[:k])) / len(evidence) for k in KS])
    return rows


def mean(rows: list[list[float]], i: int) -> float:
    return 100.0 * sum(r[i] for r in rows) / len(rows) if rows else 0.0


def pooled(per_conv: dict[str, dict[int, list[list[float]]]], convs: list[str]) -> dict[int, list[list[float]]]:
    out: dict[int, list[list[float]]] = {}
    for c in convs:
        for cat, rows in per_conv[c].items():
            out.setdefault(cat, []).extend(rows)
    return out


def summary(rows: dict[int, list[list[float]]]) -> dict[str, Any]:
    from vmem.app.evaluation import CATEGORIES

    every = [r for rs in rows.values() for r in rs]
    return {"overall": {f"R@{k}": round(mean(every, i), 1) for i, k in enumerate(KS)},
            "by_category": {CATEGORIES.get(c, str(c)): {f"R@{k}": round(mean(rs, i), 1) for i, k in enumerate(KS)}
                            | {"n": len(rs)} for c, rs in sorted(rows.items())}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--locomo", type=Path, default=DEFAULT_LOCOMO, help="LoCoMo dev JSON (default: %(default)s)")
    p.add_argument("--bonus", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0],
                   help="date bonus shares to measure; 0 (off) is always measured (default: %(default)s)")
    p.add_argument("--with-neighbours", action="store_true",
                   help="measure prefetch's recall search (the matches' neighbours ranked too) instead")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    if not args.locomo.exists():
        print(f"recall_dates: LoCoMo data not found at {args.locomo} (--locomo FILE)", file=sys.stderr)
        return 2
    from vmem.embed import default_embedder

    bonuses = sorted({0.0, *args.bonus})
    t0 = time.perf_counter()
    per: dict[float, dict[str, dict[int, list[list[float]]]]] = {b: {} for b in bonuses}
    convs: list[str] = []
    for conv, store, _passage_of, message_of in locomo_stores(args.locomo, default_embedder()):
        convs.append(conv.sample_id)
        for b in bonuses:
            per[b][conv.sample_id] = measure(store, conv, message_of, b, args.with_neighbours)
        print(f"  {conv.sample_id}: {len(conv.questions)} questions", file=sys.stderr)

    def admissible(b: float, train: list[str]) -> bool:  # no category's R@10 below off's
        on, off = pooled(per[b], train), pooled(per[0.0], train)
        return all(mean(on[c], 2) >= mean(off[c], 2) - 1e-9 for c in off)

    def score(b: float, train: list[str]) -> tuple[float, float]:
        every = [r for rs in pooled(per[b], train).values() for r in rs]
        return mean(every, 2), mean(every, 3)

    chosen: dict[str, float] = {}
    for held in convs:
        train = [c for c in convs if c != held]
        chosen[held] = max((b for b in bonuses if admissible(b, train)), key=lambda b: (score(b, train), -b))
    held_out: dict[int, list[list[float]]] = {}
    for held, b in chosen.items():
        for cat, rows in per[b][held].items():
            held_out.setdefault(cat, []).extend(rows)
    result = {"command": "bench/recall_dates.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "all_dev": {str(b): summary(pooled(per[b], convs)) for b in bonuses},
              "held_out": {"chosen": chosen, **summary(held_out)},
              "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    what = "prefetch's recall search (with neighbours)" if args.with_neighbours else "conversation_search"
    print(f"{what} on LoCoMo dev ({len(convs)} conversations), R@1/5/10/25 ({result['seconds']} s)")
    for b in bonuses:
        s = result["all_dev"][str(b)]
        print(f"  date bonus {b:<5} all dev   " + " / ".join(f"{v}" for v in s["overall"].values()) + "   "
              + ", ".join(f"{c} {r['R@10']}" for c, r in s["by_category"].items()))
    h = result["held_out"]
    print("  held out (leave one conversation out)  " + " / ".join(f"{v}" for v in h["overall"].values()) + "   "
          + ", ".join(f"{c} {r['R@10']}" for c, r in h["by_category"].items()))
    print("  chosen per conversation: " + ", ".join(f"{c} {b}" for c, b in chosen.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
