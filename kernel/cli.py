"""The ``vmem`` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence, TextIO

__all__ = ["main"]


def _core_demo(out: TextIO, color: bool) -> int:
    """Fill a small window with a conversation, cross the watermarks, evict, page in."""
    import numpy as np

    from kernel.contextmap import ContextMap, render_map
    from vmem import PagedContext, PageKind, Region, State, estimate_tokens, make_page_id

    ctx = PagedContext(window=2048, reserve=256, ws_budget=256, keep_last=4)

    def show(note: str) -> None:
        st = ctx.status()
        out.write(f"\n{note}\n")
        out.write(render_map(ContextMap(ctx.stats(), ctx.config, st.state,
                                        recall_messages=ctx.stats().pages[Region.OUT]), color=color) + "\n")

    system = "You are a helpful assistant with a paged memory. Save what matters; search when unsure."
    ctx.add(make_page_id(PageKind.SYSTEM, 1), estimate_tokens(system), Region.SYSTEM, pinned=True)
    ctx.add(make_page_id(PageKind.BLOCK, 1), 120, Region.CORE, pinned=True)
    show("system instructions and core memory are resident (pinned)")

    turns = [
        ("user", "Hi! I'm Ana. I just moved to Lisbon and I'm learning to surf."),
        ("assistant", "Welcome to Lisbon, Ana! Surfing there is great: Carcavelos is a good beginner beach."),
        ("user", "My sister Inês visits next month; she is allergic to peanuts, so restaurants matter."),
        ("assistant", "Noted. I'll keep the peanut allergy in mind when suggesting places to eat."),
    ]
    serial = 0
    warned = False
    for round_ in range(12):
        for role, text in turns:
            serial += 1
            text = f"{text} (round {round_ + 1})"
            page = make_page_id(PageKind.MESSAGE, serial)
            ctx.add(page, estimate_tokens(text) * 3, Region.QUEUE)  # x3: longer turns, a small demo
        status = ctx.status()
        if status.state is State.WARN and not warned:
            warned = True
            show(f"after {serial} messages: WARN at {status.used:,} tokens, above the warning watermark; "
                 "the kernel alerts the agent once per pressure episode")
        if status.state is State.OVER:
            show(f"after {serial} messages: OVER the flush watermark, {status.need:,} tokens must go")
            plan = ctx.plan_eviction()
            out.write(f"  eviction plan: {len(plan.ids)} oldest messages, {plan.freed:,} tokens "
                      f"(the last {ctx.config.keep_last} are protected)\n")
            ctx.move_many(plan.ids, Region.OUT)  # they stay in recall storage
            summary = make_page_id(PageKind.SUMMARY, serial)
            ctx.add(summary, 60, Region.SUMMARY)
            for old in ctx.pages(Region.SUMMARY)[:-1]:
                ctx.remove(int(old))  # the new summary folds in the previous one
            warned = False
            show("evicted into recall storage behind a recursive summary")
            ctx.check()
    out_pages = ctx.pages(Region.OUT)
    wanted = out_pages[:6]
    scores = np.linspace(1.0, 0.5, wanted.size, dtype=np.float32)
    admission = ctx.admit(wanted, scores)
    show(f"page fault: a lookup pages {admission.admitted.size} old messages back into the working set "
         f"({admission.evicted.size} evicted to make room)")
    more = ctx.admit(out_pages[6:14], np.ones(8, dtype=np.float32))
    show(f"another lookup: {more.admitted.size} admitted, {more.evicted.size} coldest evicted "
         f"(working-set budget {ctx.config.ws_budget} tokens)")
    ctx.check()
    out.write("\nall core invariants hold (vm_check)\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vmem",
        description="vmem: an OS-style memory kernel for LLM agents (MemGPT-style paging, C core).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="show the memory kernel at work, offline (no server, no API key)",
                          description="Fill a small context window, cross the watermarks, evict into "
                                      "recall storage behind a summary, and page old messages back in.")
    demo.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                      help="colour the context map (default: when writing to a terminal)")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "demo":
        color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
        return _core_demo(sys.stdout, color)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
