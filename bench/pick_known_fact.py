#!/usr/bin/env python3
"""Can the daemon's model tell which known fact an update is about? The question the consolidation
daemon asks before its yes/no check (``vmem.kernel.consolidation.PICK_SYSTEM``), measured alone.

For each case of a written knowledge-update set, the model is shown seven statements, numbered as the
daemon numbers them (:func:`vmem.kernel.proposals.dumps_choices`, ``[N] text``): the case's old
statement and six other cases' old statements, shuffled (seeded), and asked about the update; then
about the case's last unrelated user statement of the update's session (the right answer is none).
The daemon asks this of the facts it wrote (the model's words); the turns themselves stand in for
them here, so the figure is the question's, not the daemon's. ``--numbering dot`` shows ``N. text``
instead (the known facts' numbering in the extraction prompt).

    python bench/serve_gguf.py /work/models/qwen1.5b.gguf --threads 2      # prints its base URL
    .venv/bin/python bench/pick_known_fact.py --base-url URL --model qwen1.5b
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "knowledge_updates.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--base-url", required=True, help="an OpenAI-compatible server")
    p.add_argument("--model", required=True)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a written set (default: %(default)s)")
    p.add_argument("--numbering", choices=("bracket", "dot"), default="bracket",
                   help="[N] text (what the daemon shows) or N. text (default: %(default)s)")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    from vmem.kernel.consolidation import PICK_SYSTEM
    from vmem.kernel.drivers import OpenAIDriver
    from vmem.kernel.proposals import KnownFact, dumps_choices, parse_pick

    driver = OpenAIDriver(args.model, base_url=args.base_url, params={"temperature": 0})
    cases = json.loads(args.data.read_text())["cases"]
    olds = [c["turns"][c["old"]][2] for c in cases]
    rng = random.Random(args.seed)
    right = unrelated = said_none = 0
    started = time.perf_counter()
    for i, case in enumerate(cases):
        shown = rng.sample([o for j, o in enumerate(olds) if j != i], 6) + [olds[i]]
        rng.shuffle(shown)
        if args.numbering == "bracket":
            listing = dumps_choices([KnownFact(n, text, None) for n, text in enumerate(shown)])  # type: ignore[arg-type]
        else:
            listing = "\n".join(f"{n}. {text}" for n, text in enumerate(shown, 1))
        day = case["turns"][case["new"]][0]
        others = [t for k, t in enumerate(case["turns"]) if t[1] == "user" and k != case["new"] and t[0] == day]
        asks = [("update", case["turns"][case["new"]][2], shown.index(olds[i]) + 1)]
        if others:
            asks.append(("unrelated", others[-1][2], 0))
        for kind, text, want in asks:
            reply = driver.complete([{"role": "system", "content": PICK_SYSTEM},
                                     {"role": "user", "content": f"Known facts:\n{listing}\n\nNew fact: {text}"}], [])
            got = parse_pick(reply.text, len(shown))
            if kind == "update":
                right += got == want
            else:
                unrelated += 1
                said_none += got == 0
            print(f"{case['id']:18s} {kind:9s} want {want} got {got}", file=sys.stderr, flush=True)
    print(json.dumps({"updates": len(cases), "picked_the_old_fact": right, "unrelated": unrelated,
                      "said_none": said_none, "numbering": args.numbering,
                      "seconds": round(time.perf_counter() - started, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
