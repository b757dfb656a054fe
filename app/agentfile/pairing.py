"""The tool-call pairing rule: every call followed by exactly one result, wherever the file had it.

Promise 2 of the package: in each message list, every assistant tool call is followed,
contiguously and in call order, by exactly one tool message that answers it; a call with
no recorded result gets a made-up failed result (``synthetic``), reported. No tool message
stands alone in the queue; a result whose call is nowhere in the file is kept out of
context, reported. Approval requests are folded into the call before them, as Letta does.

Interface::

    from vmem.app.agentfile.pairing import Item, pair_results
    in_ctx, out_ctx = pair_results(report, ctx_items, old_items, agent_id, stats)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from vmem.app.agentfile.model import ChatMessage, ImportReport


@dataclass
class Item:
    """A message on its way to the output: where it was, and what it answers."""

    msg: ChatMessage
    ctx: bool
    result_for: str | None = None   # the tool_call_id a tool result answers
    weak: bool = False              # a result found in an approval message: used when no tool message answers
    approval: bool = False          # calls from an approval request (merged into the call before, as Letta does)


_NO_RESULT = json.dumps({"status": "Failed", "message": "no result was recorded for this call "
                         "(imported from a Letta agent file)"})


def _merge_approvals(items: list[Item]) -> None:
    """Fold an approval request's calls into the assistant call right before it, as Letta does."""
    i = 1
    while i < len(items):
        it, prev = items[i], items[i - 1]
        if it.approval and prev.msg.role == "assistant" and prev.msg.tool_calls and prev.result_for is None:
            text = "\n\n".join(t for t in (prev.msg.content, it.msg.content) if t)
            calls = prev.msg.tool_calls + tuple(c for c in it.msg.tool_calls
                                                if all(c.id != p.id for p in prev.msg.tool_calls))
            prev.msg = replace(prev.msg, content=text, tool_calls=calls)
            del items[i]
            continue
        i += 1


def pair_results(report: ImportReport, ctx_items: list[Item], old_items: list[Item], aid: str,
                 stats: dict[str, int]) -> tuple[list[ChatMessage], list[ChatMessage]]:
    """Both lists with each call's result right after it, wherever the file had it.

    A result goes where its call is (into or out of the context); a call with no
    result gets a synthetic failed one; a result whose call is nowhere stays out of
    context (out of the queue when it was in it).
    """
    _merge_approvals(ctx_items)
    _merge_approvals(old_items)
    results: dict[str, list[Item]] = {}
    call_ids: set[str] = set()
    for it in ctx_items + old_items:
        if it.result_for is not None:
            results.setdefault(it.result_for, []).append(it)
        call_ids.update(c.id for c in it.msg.tool_calls)
    used: set[int] = set()
    placed_calls: set[str] = set()
    moved_out: list[ChatMessage] = []
    counts = {"tool_calls": 0, "paired": 0, "synthesized": 0, "moved": 0, "orphans": 0}

    def emit(items: list[Item], in_ctx: bool) -> list[ChatMessage]:
        out: list[ChatMessage] = []
        for it in items:
            m = it.msg
            if it.result_for is not None:
                if it.result_for in call_ids:
                    continue  # placed with its call
                if it.weak:
                    continue
                counts["orphans"] += 1
                where = "moved out of the context to recall storage" if in_ctx else "kept in recall storage only"
                report.add("warning", f"message {m.letta_id}", f"a result for call {m.tool_call_id}, "
                                f"which no message makes; {where}", aid)
                (moved_out if in_ctx else out).append(m)
                continue
            out.append(m)
            for call in m.tool_calls:
                counts["tool_calls"] += 1
                reused = call.id in placed_calls
                placed_calls.add(call.id)
                options = [r for r in results.get(call.id, ()) if id(r) not in used]
                options.sort(key=lambda r: (r.weak, r.ctx != in_ctx))
                if options and not reused:
                    pick = options[0]
                    used.add(id(pick))
                    counts["paired"] += 1
                    if pick.ctx != in_ctx:
                        counts["moved"] += 1
                    out.append(replace(pick.msg, name=pick.msg.name or call.name))
                    continue
                counts["synthesized"] += 1
                why = f"reuses call id {call.id}" if reused else "has no result in the file"
                report.add("warning", f"message {m.letta_id}", f"tool call {call.name} ({call.id}) {why}; "
                                "added a failed result so the history stays valid", aid)
                out.append(ChatMessage("tool", _NO_RESULT, m.timestamp, tool_call_id=call.id, name=call.name,
                                       letta_id=m.letta_id, synthetic=True))
        return out

    in_ctx = emit(ctx_items, True)
    out_ctx = emit(old_items, False) + moved_out
    extra = [r for rs in results.values() for r in rs if id(r) not in used and not r.weak and
             r.result_for in call_ids]
    for r in extra:
        report.add("skipped", f"message {r.msg.letta_id}",
                        f"a second result for call {r.result_for}; the first was kept", aid)
    if counts["moved"]:
        report.add("note", "tool results", f"{counts['moved']} moved into or out of the context to stay "
                        "with their calls", aid)
    counts["duplicates"] = len(extra)
    for k, v in counts.items():
        stats[k] = stats.get(k, 0) + v
    return in_ctx, out_ctx
