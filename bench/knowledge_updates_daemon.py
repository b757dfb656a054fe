#!/usr/bin/env python3
"""Knowledge updates after the consolidation daemon ran, with a real model.

``bench/knowledge_updates.py`` measures the store's searches over the user's own statements, and
archival search after an oracle's ``supersede(old, by=new)``. This measures what the issue asks of
the daemon: each of the written dev set's 42 conversations (``bench/data/knowledge_updates.json``)
goes into a fresh memory as messages at their times, session by session (a first session, then the
update weeks later), and after each session the daemon's synchronous run
(``vmem.kernel.consolidation.consolidate``) reads it through the model until every turn is read (as
the daemon does when the user goes idle); then the case's question is asked of the default archival search
(hybrid, current facts first; a page of ``--depth``). Archival holds only what the daemon wrote.

The daemon writes facts in its own words, so a case is judged by what they say: :data:`VALUES`
holds, per case, the words that state the old value and the new one (written with the dev set's
statements, before any run); a case may carry its own (``old_words``, ``new_words``), as the
held-out set ``bench/data/knowledge_updates_heldout.json`` does (``--data`` it: written after the
daemon's rules were tuned on the dev set, by a helper that did not see them). A case counts when the first fact in the page that states the new
value ranks above the first that states only the old one (a fact with both, "moved from Porto to
Berlin", states the new); no fact with the new value in the page is a miss. Greedy decoding
(temperature 0), so a rerun with the same model and server asks the same. Per case the log keeps
the page (text, valid_from, current), the core memory, the facts written and superseded (and why:
"stated", "topic", "checked", "picked", "merge"), the model's calls and answers, and the collateral
supersessions: replaced facts that state neither the old value nor what replaced them
(a fact that still held, marked replaced: the price of a yes-biased check).

    python bench/serve_gguf.py /work/models/qwen1.5b.gguf --threads 2      # prints its base URL
    .venv/bin/python bench/knowledge_updates_daemon.py --base-url URL --model qwen1.5b --log ku.jsonl
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "knowledge_updates.json"
UTC = _dt.timezone.utc

#: Per case: the words that state the old value, and those that state the new one.
VALUES: dict[str, tuple[list[str], list[str]]] = {
    "calls": (["60"], ["1,200", "1200"]),
    "city": (["Porto"], ["Berlin"]),
    "job": (["Northwind", "data analyst"], ["Contoso", "data engineer"]),
    "salary": (["52,000", "52000", "52k"], ["61,000", "61000", "61k"]),
    "dog_weight": (["4 kilos", "4 kg", "4kg"], ["11 kg", "11kg", "11 kilos"]),
    "car": (["Civic", "Honda"], ["Tesla", "Model 3"]),
    "running": (["15 km", "15km"], ["40 km", "40km"]),
    "diet": (["vegetarian"], ["vegan"]),
    "kids": (["two children", "two kids", "2 children"], ["three children", "three kids", "3 children", "Max"]),
    "phone": (["0612"], ["0687"]),
    "rent": (["950"], ["1,080", "1080"]),
    "language": (["Spanish"], ["Japanese"]),
    "bedtime": (["1 am", "1am", "1:00"], ["10:30"]),
    "medication": (["500 mg", "500mg"], ["1000 mg", "1000mg", "1,000 mg"]),
    "team_size": (["4 engineers", "team of 4", "four engineers"], ["11", "eleven"]),
    "gym": (["FitCore"], ["Boulder Barn", "climbing"]),
    "coffee": (["five cups", "5 cups"], ["one cup", "1 cup"]),
    "laptop": (["ThinkPad"], ["MacBook"]),
    "partner": (["Sara"], ["Ines"]),
    "mortgage": (["4.1%", "4.1 %"], ["3.2%", "3.2 %"]),
    "commute": (["bus", "50 minutes"], ["e-bike", "cycle", "bike", "25 minutes"]),
    "allergy": (["allergic to penicillin"], ["amoxicillin", "not allergic"]),
    "book": (["Dune"], ["Project Hail Mary", "Hail Mary"]),
    "subscribers": (["300"], ["4,500", "4500"]),
    "wake": (["7:30"], ["5:45"]),
    "school": (["Oakridge"], ["Hillcrest"]),
    "weight": (["92"], ["84"]),
    "editor": (["VS Code", "VSCode"], ["Neovim"]),
    "plants": (["12"], ["31"]),
    "budget": (["400"], ["650"]),
    "piano": (["grade 3"], ["grade 5"]),
    "internet": (["20 Mbps", "20mbps"], ["1 Gbps", "1gbps", "fibre", "fiber"]),
    "hours": (["40 hours"], ["24 hours", "part time", "part-time"]),
    "cat_food": (["dry food", "kibble", "salmon"], ["renal", "wet food"]),
    "savings": (["200"], ["700"]),
    "guitar": (["Yamaha"], ["Fender", "Stratocaster"]),
    "screen_time": (["7 hours"], ["2 hours"]),
    "office": (["3rd floor", "third floor"], ["12th floor", "twelfth"]),
    "deadline": (["June 30", "30 June"], ["September 15", "15 September"]),
    "doctor": (["Alvarez"], ["Okafor"]),
    "bike_ftp": (["210"], ["245"]),
    "username": (["pixelfox88"], ["mara-builds"]),
}


def words_of(case: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The words that state a case's old and new value: its own ``old_words``/``new_words`` (the
    held-out set carries them), else :data:`VALUES`."""
    if "old_words" in case and "new_words" in case:
        return list(case["old_words"]), list(case["new_words"])
    if case["id"] not in VALUES:
        raise ValueError(f"case {case['id']!r} has no old_words/new_words and no entry in VALUES")
    return VALUES[case["id"]]


def states(text: str, words: list[str]) -> bool:
    """Whether ``text`` holds one of ``words`` as a whole word or number ("60" is not in "600")."""
    return any(re.search(r"(?<![\w.,])" + re.escape(w) + r"(?!\w)", text, re.IGNORECASE) for w in words)


def run_case(case: dict[str, Any], driver: Any, depth: int, workdir: Path, embedder: Any = None) -> dict[str, Any]:
    from vmem.kernel import Memory, read_trace
    from vmem.kernel.consolidation import consolidate
    from vmem.kernel.proposals import near_duplicate

    start = _dt.datetime.fromisoformat(case["start"]).replace(hour=9, tzinfo=UTC)
    times = [start + _dt.timedelta(days=day, minutes=i) for i, (day, _, _) in enumerate(case["turns"])]
    end = times[-1] + _dt.timedelta(hours=1)
    memory = Memory.create(workdir / case["id"], system="You are a helpful assistant with a long memory.",
                           blocks={"human": "", "persona": "I am the user's assistant."}, clock=lambda: end,
                           durability="normal", embedder=embedder)
    runs = applied = skipped = 0
    started = time.perf_counter()
    try:
        days = sorted({day for day, _, _ in case["turns"]})
        for day in days:  # a session, then the daemon catches up (as it would when the user goes idle)
            for (d, role, text), t in zip(case["turns"], times):
                if d == day:
                    memory.append({"role": role, "content": text}, timestamp=t)
            while True:
                report = consolidate(memory, driver)
                if report is None or report.end == report.start:
                    break
                runs += 1
                applied += report.applied
                skipped += report.skipped_total
        old_words, new_words = words_of(case)
        hits = memory.store.archival.search(case["question"], page_size=depth).items
        first_new = next((i for i, p in enumerate(hits) if states(p.text, new_words)), None)
        first_old = next((i for i, p in enumerate(hits) if states(p.text, old_words) and not states(p.text, new_words)),
                         None)
        ok = first_new is not None and (first_old is None or first_new < first_old)
        every = memory.store.archival.search(None, page_size=500).items  # every passage, current or not
        by_id = {p.id: p for p in every}
        replaced = [p for p in every if not p.current]
        # a supersession is right when the replaced fact states the old value, a merge when it says what its
        # replacement says; anything else replaced a fact that still held (collateral)
        collateral = [p.text for p in replaced if not states(p.text, old_words)
                      and not (p.superseded_by in by_id and near_duplicate(p.text, by_id[p.superseded_by].text))]
        memory.check()
        events = [e for e in read_trace(memory.store) if e["e"] == "consolidate"]
        return {"id": case["id"], "ok": ok, "first_new": first_new, "first_old": first_old,
                "top": hits[0].text if hits else None, "runs": runs,
                "page": [[h.text, h.valid_from.date().isoformat(), h.current] for h in hits], "applied": applied, "skipped": skipped,
                "facts": len(memory.store.archival), "superseded": len(replaced), "collateral": collateral,
                "core": {b.label: b.value for b in memory.blocks()}, "seconds": round(time.perf_counter() - started, 1),
                "why": [op.get("why") for e in events for op in e["ops"] if op["op"] == "supersede"],
                "calls": sum(1 + e["checks"] + e.get("picks", 0) for e in events),
                "answers": [e["answers"] for e in events]}
    finally:
        memory.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--base-url", required=True, help="the daemon's OpenAI-compatible server")
    p.add_argument("--model", required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the written dev set (default: %(default)s)")
    p.add_argument("--depth", type=int, default=5, help="results per search (default: %(default)s, a page)")
    p.add_argument("--cases", nargs="+", default=None, help="case ids (default: all)")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--log", type=Path, default=None, help="one JSON line per case")
    p.add_argument("--embedder", default="hash",
                   help="the memory's embedder, a name vmem reembed takes (default: %(default)s, the store's default)")
    args = p.parse_args(argv)
    if not args.data.exists():
        print(f"knowledge_updates_daemon.py: no dev set at {args.data}", file=sys.stderr)
        return 2
    from vmem.kernel.drivers import OpenAIDriver
    from vmem.local_models import make_embedder

    embedder = make_embedder(args.embedder)

    driver = OpenAIDriver(args.model, base_url=args.base_url, timeout=args.timeout, params={"temperature": 0})
    cases = json.loads(args.data.read_text())["cases"]
    try:
        for case in cases:  # every case can be judged, before an hour of model calls
            old_words, new_words = words_of(case)
            for kind, words in (("old", old_words), ("new", new_words)):
                if not states(case["turns"][case[kind]][2], words):  # a judge that cannot match its own case
                    raise ValueError(f"case {case['id']!r}: none of its {kind} words {words} is in its {kind} "
                                     f"statement as a whole word")
    except ValueError as exc:
        print(f"knowledge_updates_daemon.py: {args.data}: {exc}", file=sys.stderr)
        return 2
    if args.cases:
        unknown = set(args.cases) - {c["id"] for c in cases}
        if unknown:
            print(f"knowledge_updates_daemon.py: no case {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        cases = [c for c in cases if c["id"] in set(args.cases)]
    log = args.log.open("w") if args.log else None
    done = []
    with tempfile.TemporaryDirectory(prefix="vmem-ku-daemon-") as work:
        for n, case in enumerate(cases, 1):
            row = run_case(case, driver, args.depth, Path(work), embedder)
            done.append(row)
            if log:
                log.write(json.dumps(row) + "\n")
                log.flush()
            print(f"[{n}/{len(cases)}] {case['id']:14s} {'ok ' if row['ok'] else 'MISS'} facts {row['facts']:2d} "
                  f"superseded {row['superseded']} (collateral {len(row['collateral'])}) runs {row['runs']} {row['seconds']:.0f}s  top: {row['top']!r}",
                  file=sys.stderr, flush=True)
    ok = sum(r["ok"] for r in done)
    print(json.dumps({"cases": len(done), "current_first": ok, "rate": round(100.0 * ok / max(1, len(done)), 1),
                      "with_a_supersession": sum(1 for r in done if r["superseded"]),
                      "collateral_supersessions": sum(len(r["collateral"]) for r in done),
                      "no_new_value_in_the_page": sum(1 for r in done if r["first_new"] is None),
                      "failed": [r["id"] for r in done if not r["ok"]]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
