"""Does the evidence reach the prompt? ``vmem eval qa``'s configurations without a model.

For each question (the same selection ``vmem eval qa`` makes: ``--conversations``, ``--limit``),
each configuration builds the prompt it would send, and this counts whether the text of the
question's LoCoMo evidence turns (their ``dia_id``s) appears in it: some of them ("any") and all of
them ("all"), and the prompt's size (the kernel's token estimate). No model is called, so a
configuration's retrieval can be compared with RAG's in seconds before an hour of answers is spent.

    .venv/bin/python bench/qa_evidence.py --conversations conv-26 conv-30 conv-41 --limit 20
    .venv/bin/python bench/qa_evidence.py --configs e --prefetch 20 --workset 2400

Reads LoCoMo from ``../shared/data/locomo/locomo_dev.json`` (or ``--path``); exits 2 without it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent.parent / "shared" / "data" / "locomo" / "locomo_dev.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--path", type=Path, default=DEFAULT, help="LoCoMo JSON (default: %(default)s)")
    ap.add_argument("--conversations", nargs="+", default=["conv-26", "conv-30", "conv-41"])
    ap.add_argument("--limit", type=int, default=20, help="questions per conversation, as vmem eval qa (default 20)")
    ap.add_argument("--configs", default="c,e", help="of vmem eval qa's a-f, those that need no model: a,b,c,e")
    ap.add_argument("--window", type=int, default=4096)
    ap.add_argument("--rag-k", type=int, default=8)
    ap.add_argument("--prefetch", type=int, default=10)
    ap.add_argument("--workset", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not args.path.exists():
        print(f"qa_evidence.py: no LoCoMo file at {args.path} (give --path)", file=sys.stderr)
        return 2
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if not configs or set(configs) - set("abce"):
        print("qa_evidence.py: --configs takes a, b, c and e (d and f call the model)", file=sys.stderr)
        return 2

    from vmem import estimate_tokens
    from vmem.app.qa_items import QASettings, load_dialogues, select_items
    from vmem.app.qa_methods import METHODS
    from vmem.kernel.drivers import Completion, Driver

    class Capture(Driver):
        """Keeps the prompt it is sent and answers nothing."""

        messages: list[dict[str, Any]] = []

        def complete(self, messages: Any, tools: Any) -> Completion:
            self.messages = list(messages)
            return Completion(text="")

    raw = {d["sample_id"]: d for d in json.loads(args.path.read_text())}
    dialogues = load_dialogues(args.path)
    settings = QASettings(window=args.window, rag_k=args.rag_k, prefetch=args.prefetch, workset=args.workset,
                          merge_system=True)
    rows = []
    for key in configs:
        n = some = every = tokens = 0
        for sid in args.conversations:
            if sid not in raw:
                print(f"qa_evidence.py: no conversation {sid} in {args.path}", file=sys.stderr)
                return 2
            turns = {t["dia_id"]: t["text"] for k, v in raw[sid]["conversation"].items()
                     if k.startswith("session_") and isinstance(v, list) for t in v}
            dialogue = next(d for d in dialogues if d.sample_id == sid)
            capture = Capture()
            with tempfile.TemporaryDirectory() as work:
                method = METHODS[key](settings, lambda _tokens: capture, Path(work))
                try:
                    method.prepare(dialogue)
                    for item in select_items(dialogues, conversations=[sid], limit=args.limit):
                        evidence = [e for e in raw[sid]["qa"][item.index].get("evidence", []) if e in turns]
                        if not evidence:
                            continue
                        method.ask(dialogue, item)
                        prompt = "\n".join(str(m.get("content") or "") for m in capture.messages)
                        found = [turns[e][:60] in prompt for e in evidence]
                        n += 1
                        some += any(found)
                        every += all(found)
                        tokens += estimate_tokens(prompt)
                finally:
                    method.close()
        rows.append({"config": key, "questions": n, "any": round(100 * some / max(1, n), 1),
                     "all": round(100 * every / max(1, n), 1), "tokens": round(tokens / max(1, n))})
    if args.json:
        print(json.dumps({"settings": vars(args) | {"path": str(args.path)}, "rows": rows}, indent=2))
    else:
        print(f"{'config':8s} {'questions':>9s} {'some evidence':>14s} {'all evidence':>13s} {'tokens/q':>9s}")
        for r in rows:
            print(f"({r['config']})     {r['questions']:9d} {r['any']:13.1f}% {r['all']:12.1f}% {r['tokens']:9,d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
