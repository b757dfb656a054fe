#!/usr/bin/env python3
"""Knowledge updates: does search put the current statement of a fact above the one it replaced?

Two dev sets of (question, the statement that was true, the later statement that replaced it):

- bench/data/knowledge_updates.json: 42 short conversations written for vmem (work, health,
  family, money, hobbies...), each a fact the user states and, in a later session, updates
  ("60 calls a day" -> "1,200 calls a day"), with filler turns and the assistant's replies;
- LoCoMo dev (../shared/data/locomo/locomo_dev.json, CC BY-NC 4.0): the questions whose
  evidence is a state that changed between sessions (a count of dogs, tournaments won,
  scripts rejected...): the earliest evidence turn is the old statement, the latest the current.

Each case is searched as an agent would: conversation_search (recall storage: every turn,
with its time) and the default archival search (hybrid; the user's statements stored as
passages holding from when they were said, one insert per session, no daemon, no
supersede() call: the store's times alone must decide), then archival search again after
supersede(old, by=new) (what the consolidation daemon does). A case counts when the current
statement ranks above the old one within the first ``--depth`` results (the old one absent
counts as below; the current one absent is a miss).

The tie-break (vmem.ties: near-tied statements about the same thing go to the newest) is
measured on and off, and so is its cost on LoCoMo retrieval: R@1/5/10/25 of every LoCoMo dev
question's evidence, per category, through the same two searches (``--locomo-recall``).

    .venv/bin/python bench/knowledge_updates.py                 # the dev sets, tie-break off and on
    .venv/bin/python bench/knowledge_updates.py --locomo-recall # and LoCoMo R@1/5/10/25 off and on
    .venv/bin/python bench/knowledge_updates.py --grid          # margin x cover on the own dev set
    .venv/bin/python bench/knowledge_updates.py --json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "knowledge_updates.json"
#: ../shared beside the checkout (or beside the worktrees' folder, for a git worktree)
DEFAULT_LOCOMO = next((p for p in (ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json",
                                   ROOT.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json")
                       if p.exists()), ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json")
UTC = _dt.timezone.utc

#: LoCoMo dev questions about a state that changed between sessions: (sample_id, question,
#: the earlier evidence turn, the later one that replaced it). Chosen by reading the
#: evidence: the later turn states the new state of the same thing.
LOCOMO_UPDATES = [
    ("conv-41", "How many dogs has Maria adopted from the dog shelter she volunteers at?", "D30:1", "D31:2"),
    ("conv-44", "How many dogs does Andrew have?", "D12:1", "D28:6"),
    ("conv-44", "How many dogs does Andrew have?", "D24:2", "D28:6"),
    ("conv-44", "How many pets will Andrew have, as of December 2023?", "D24:2", "D28:6"),
    ("conv-42", "How many times has Joanna's scripts been rejected?", "D14:1", "D24:12"),
    ("conv-42", "How many tournaments has Nate won?", "D1:3", "D27:1"),
    ("conv-42", "How many tournaments has Nate won?", "D17:1", "D27:1"),
    ("conv-42", "How many video game tournaments has Nate participated in?", "D1:3", "D27:1"),
    ("conv-42", "How many hikes has Joanna been on?", "D7:6", "D28:22"),
    ("conv-42", "How many screenplays has Joanna written?", "D2:3", "D12:13"),
    ("conv-26", "How many times has Melanie gone to the beach in 2023?", "D6:16", "D10:8"),
]


@dataclass
class Case:
    """One update: the question, the old and the new statement's ids in each tier."""

    name: str
    question: str
    old_message: int
    new_message: int
    old_passage: int
    new_passage: int
    new_time: _dt.datetime


def rank_above(ids: list[int], new: int, old: int) -> bool:
    """Whether ``new`` is in ``ids`` and before ``old`` (absent = below everything)."""
    if new not in ids:
        return False
    return old not in ids or ids.index(new) < ids.index(old)


@contextmanager
def open_store(embedder: Any) -> Iterator[Any]:
    from vmem.storage import MemoryDir

    with tempfile.TemporaryDirectory(prefix="vmem-ku-") as tmp, \
            MemoryDir.open(Path(tmp) / "a", embedder=embedder, durability="normal") as store:
        yield store


def load_own(store: Any, path: Path) -> list[Case]:
    """The written dev set into one store (one user's history): every turn into recall, the
    user's statements into archival (one insert per session, each holding from when said)."""
    data = json.loads(path.read_text())
    cases = []
    for c in data["cases"]:
        start = _dt.datetime.fromisoformat(c["start"]).replace(hour=9, tzinfo=UTC)
        times = [start + _dt.timedelta(days=day, minutes=i) for i, (day, _, _) in enumerate(c["turns"])]
        mids = store.recall.append_many([(role, text, t) for (_, role, text), t in zip(c["turns"], times)])
        sessions: dict[float, list[int]] = {}
        for i, (day, role, _) in enumerate(c["turns"]):
            if role == "user":
                sessions.setdefault(day, []).append(i)
        pids: dict[int, int] = {}
        for idx in sessions.values():
            got = store.archival.insert_many([c["turns"][i][2] for i in idx], timestamp=times[idx[0]],
                                             valid_from=[times[i] for i in idx])
            pids.update({i: g[0] for i, g in zip(idx, got)})
        cases.append(Case(c["id"], c["question"], mids[c["old"]], mids[c["new"]], pids[c["old"]], pids[c["new"]],
                          times[c["new"]]))
    return cases


def measure(store: Any, cases: list[Case], depth: int, tie_break: Any) -> dict[str, Any]:
    """Share of cases with the current statement first: conversation_search, archival search,
    and archival search after supersede() (undone afterwards: run in a rolled-back transaction)."""
    store.recall.tie_break = tie_break
    store.archival.tie_break = tie_break
    hits = {"conversation_search": [], "archival": [], "archival_superseded": []}
    for c in cases:
        ids = [m.id for m in store.recall.search(c.question, page_size=depth).items]
        hits["conversation_search"].append(rank_above(ids, c.new_message, c.old_message))
        ids = [p.id for p in store.archival.search(c.question, page_size=depth).items]
        hits["archival"].append(rank_above(ids, c.new_passage, c.old_passage))

    class _Undo(Exception):
        pass

    try:
        with store.transaction():
            for c in cases:
                store.archival.supersede([c.old_passage], c.new_passage, c.new_time)
            for c in cases:
                ids = [p.id for p in store.archival.search(c.question, page_size=depth).items]
                hits["archival_superseded"].append(rank_above(ids, c.new_passage, c.old_passage))
            raise _Undo
    except _Undo:
        pass
    return {k: {"current_first": sum(v), "cases": len(v), "rate": round(100.0 * sum(v) / len(v), 1) if v else None,
                "failed": [c.name for c, ok in zip(cases, v) if not ok]}
            for k, v in hits.items()}


def locomo_stores(path: Path, embedder: Any) -> Iterator[tuple[Any, Any, dict[str, int], dict[str, int]]]:
    from vmem.app.evaluation import _conversation_store, load_locomo

    for conv in load_locomo(path):
        store, tmp, passage_of, message_of = _conversation_store(conv, embedder, speaker=True)
        try:
            yield conv, store, passage_of, message_of
        finally:
            store.close()
            tmp.cleanup()


def locomo_cases(store: Any, conv: Any, passage_of: dict[str, int], message_of: dict[str, int]) -> list[Case]:
    turns = {t.dia_id: t for t in conv.turns}
    return [Case(f"{sid}:{q[:30]}", q, message_of[old], message_of[new], passage_of[old], passage_of[new],
                 turns[new].timestamp)
            for sid, q, old, new in LOCOMO_UPDATES if sid == conv.sample_id]


def locomo_recall(store: Any, conv: Any, passage_of: dict[str, int], message_of: dict[str, int], tie_break: Any,
                  ks: tuple[int, ...], rows: dict[str, dict[int, list[list[float]]]]) -> None:
    """Recall@k of each question's evidence through conversation_search and archival search."""
    store.recall.tie_break = tie_break
    store.archival.tie_break = tie_break
    top = max(ks)
    for q in conv.questions:
        for tier, ids_of, search in (
            ("conversation_search", message_of, lambda text: [m.id for m in store.recall.search(text, page_size=top).items]),
            ("archival", passage_of, lambda text: [p.id for p in store.archival.search(text, page_size=top).items]),
        ):
            evidence = {ids_of[d] for d in q.evidence}
            got = search(q.question)
            rows.setdefault(tier, {}).setdefault(q.category, []).append(
                [len(evidence.intersection(got[:k])) / len(evidence) for k in ks])


def summarise_recall(rows: dict[str, dict[int, list[list[float]]]], ks: tuple[int, ...]) -> dict[str, Any]:
    from vmem.app.evaluation import CATEGORIES

    out: dict[str, Any] = {}
    for tier, per_cat in rows.items():
        every = [r for rs in per_cat.values() for r in rs]
        out[tier] = {
            "overall": {f"R@{k}": round(100 * sum(r[i] for r in every) / len(every), 1) for i, k in enumerate(ks)},
            "by_category": {CATEGORIES.get(c, str(c)): {f"R@{k}": round(100 * sum(r[i] for r in rs) / len(rs), 1)
                                                         for i, k in enumerate(ks)} | {"n": len(rs)}
                            for c, rs in sorted(per_cat.items())},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the written dev set (default: %(default)s)")
    p.add_argument("--locomo", type=Path, default=DEFAULT_LOCOMO, help="LoCoMo dev JSON (default: %(default)s)")
    p.add_argument("--no-locomo", action="store_true", help="only the written dev set")
    p.add_argument("--locomo-recall", action="store_true",
                   help="also LoCoMo R@1/5/10/25 per category with the tie-break off and on (a few minutes)")
    p.add_argument("--depth", type=int, default=25, help="results looked at per search (default: %(default)s)")
    p.add_argument("--grid", action="store_true", help="the written dev set over a grid of margin x cover")
    p.add_argument("--margin", type=float, default=None, help="the tie-break's margin (default: vmem.ties')")
    p.add_argument("--cover", type=float, default=None, help="the tie-break's cover (default: vmem.ties')")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)

    from dataclasses import replace

    from vmem.embed import default_embedder
    from vmem.ties import DEFAULT_TIE_BREAK, TieBreak

    rule = DEFAULT_TIE_BREAK or TieBreak()
    if args.margin is not None or args.cover is not None:
        rule = replace(rule, **{k: v for k, v in (("margin", args.margin), ("cover", args.cover)) if v is not None})
    embedder = default_embedder()
    t0 = time.perf_counter()
    result: dict[str, Any] = {"command": "bench/knowledge_updates.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                              "tie_break": {"margin": rule.margin, "cover": rule.cover, "gap": rule.gap},
                              "depth": args.depth}
    with open_store(embedder) as store:
        own = load_own(store, args.data)
        result["own"] = {"off": measure(store, own, args.depth, None), "on": measure(store, own, args.depth, rule)}
        if args.grid:
            result["grid"] = [
                {"margin": m, "cover": cv, **{k: v["rate"] for k, v in measure(
                    store, own, args.depth, TieBreak(m, cv, rule.gap)).items()}}
                for m in (0.1, 0.2, 0.3, 0.4, 0.5) for cv in (0.4, 0.6, 0.8)]
    use_locomo = not args.no_locomo and args.locomo.exists()
    if not args.no_locomo and not args.locomo.exists():
        print(f"LoCoMo data not found at {args.locomo}: skipped", file=sys.stderr)
    if use_locomo:
        ks = (1, 5, 10, 25)
        cases: dict[str, list[bool]] = {}
        counts = {"off": {}, "on": {}}
        recall_rows: dict[str, dict] = {"off": {}, "on": {}}
        for conv, store, passage_of, message_of in locomo_stores(args.locomo, embedder):
            mine = locomo_cases(store, conv, passage_of, message_of)
            for label, tb in (("off", None), ("on", rule)):
                if mine:
                    got = measure(store, mine, args.depth, tb)
                    for tier, v in got.items():
                        c = counts[label].setdefault(tier, [0, 0, []])
                        c[0] += v["current_first"]
                        c[1] += v["cases"]
                        c[2] += v["failed"]
                if args.locomo_recall:
                    locomo_recall(store, conv, passage_of, message_of, tb, ks, recall_rows[label])
        result["locomo_updates"] = {label: {tier: {"current_first": a, "cases": n, "rate": round(100.0 * a / n, 1),
                                                   "failed": f} for tier, (a, n, f) in per.items()}
                                    for label, per in counts.items()}
        if args.locomo_recall:
            result["locomo_recall"] = {label: summarise_recall(rows, ks) for label, rows in recall_rows.items()}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"knowledge updates (current statement ranked above the one it replaced, first {args.depth} results)")
    print(f"tie-break: margin {rule.margin}, cover {rule.cover}, gap {rule.gap:.0f}s   ({result['seconds']}s)")
    for name in ("own", "locomo_updates"):
        if name not in result:
            continue
        print(f"\n{name}:")
        for label in ("off", "on"):
            row = result[name][label]
            print(f"  tie-break {label:3s}  " + "   ".join(
                f"{tier} {v['current_first']}/{v['cases']} ({v['rate']}%)" for tier, v in row.items()))
    if "grid" in result:
        print("\ngrid (own dev set, % current first):")
        for g in result["grid"]:
            print(f"  margin {g['margin']:.1f} cover {g['cover']:.1f}: conversation_search {g['conversation_search']}"
                  f"  archival {g['archival']}  archival_superseded {g['archival_superseded']}")
    if "locomo_recall" in result:
        print("\nLoCoMo dev retrieval (all questions), tie-break off -> on:")
        off, on = result["locomo_recall"]["off"], result["locomo_recall"]["on"]
        for tier in off:
            print(f"  {tier}: overall " + ", ".join(f"{k} {off[tier]['overall'][k]} -> {on[tier]['overall'][k]}"
                                                for k in off[tier]["overall"]))
            for cat, row in off[tier]["by_category"].items():
                print(f"    {cat:12s} (n={row['n']:4d}) " + ", ".join(
                    f"{k} {row[k]} -> {on[tier]['by_category'][cat][k]}" for k in row if k != "n"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
