"""The memory's invariants, numbered, and the one function that checks them all.

After every committed transaction (every step of an agent) these hold; :meth:`Memory.check`
verifies each and raises :class:`vmem.InvariantError` naming the first one broken
("invariant N: reason"). The tests run it after every step.

1. The core is sound: the C core's ``vm_check`` (its own eight invariants, csrc/vm.c) passes.
2. The regions hold exactly what the compiled context shows: SYSTEM = {the system
   instructions, the memory instructions, the memory statistics}; CORE = one page per
   stored block; SUMMARY = {the summary page}; QUEUE = the queued messages, in the same
   order; WORKSET = the pages of the working set's lines.
3. Each resident page's tokens are the count of the text it contributes to the context
   (``TokenCounter.count``, deterministic), so the region totals are the compiled
   context's counts: the system text, the memory instructions, the statistics text, each
   rendered block, the rendered summary (the instructions and the summary 0 tokens while
   there are none), each queued message, each line.
4. Every queued message is a message in recall storage, shown as stored (role, content,
   tool calls, tool_call_id).
5. Tool calls are complete and contiguous: each assistant message with tool calls is
   followed by one result per call, in the calls' order, all in one atomic group of the
   core (so no flush can split them); no tool result stands anywhere else; every call's
   arguments are a JSON object. Only the queue's tail may still await results (a caller's
   own loop between ``append`` and ``execute``).
6. Nothing is lost: the messages in recall storage are exactly the evicted ones, the queued
   ones and the stored-only ones (oversize originals, messages written to recall directly);
   there is a summary exactly when something was evicted.
7. The kernel's counters agree with the stores: the recall count; one block page per
   stored block label; every shared block is a stored label whose own row keeps no text
   (the text is in its shared store, once).
8. (``check(deep=True)`` only: it reads everything) Every stored message, passage, block,
   state and journal record matches the checksum written with it, SQLite's
   ``integrity_check`` passes, the caches hold exactly the stored records, and no committed
   transaction is missing (:meth:`vmem.storage.MemoryDir.verify`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from vmem import InvariantError, Region
from vmem.kernel.context import (
    INSTRUCTIONS_PAGE,
    STATS_PAGE,
    SUMMARY_PAGE,
    SYSTEM_PAGE,
    chat_message,
    page_text,
    render_summary,
)

if TYPE_CHECKING:
    from vmem.kernel.memory import Memory

__all__ = ["check"]


def _fail(n: int, reason: str) -> None:
    raise InvariantError(f"invariant {n}: {reason}")


def check(memory: "Memory") -> None:
    """Verify invariants 1-7 (see the module docstring); InvariantError on the first broken one."""
    ctx, state, queue, count = memory.ctx, memory.state, memory.queue, memory.counter.count
    # 1
    try:
        ctx.check()
    except InvariantError as exc:
        _fail(1, f"the core: {exc}")
    # 2
    pages = {r: ctx.pages(r).tolist() for r in (Region.SYSTEM, Region.CORE, Region.SUMMARY, Region.QUEUE,
                                                Region.WORKSET)}
    expected = {
        Region.SYSTEM: [SYSTEM_PAGE, INSTRUCTIONS_PAGE, STATS_PAGE],
        Region.CORE: list(state.block_pages.values()),
        Region.SUMMARY: [SUMMARY_PAGE],
    }
    for region, want in expected.items():
        if sorted(pages[region]) != sorted(want):
            _fail(2, f"{region.name} holds {pages[region]}, the context shows {want}")
    queued = pages[Region.QUEUE]
    if [queue.chat(p) if p in queue else None for p in queued] != queue.messages or len(queue.pages()) != len(queued):
        _fail(2, "the queue's messages are not the core's queue, in its order")
    if sorted(pages[Region.WORKSET]) != sorted(state.workset):
        _fail(2, f"the working set holds {sorted(pages[Region.WORKSET])}, its lines are of {sorted(state.workset)}")
    # 3
    texts = {SYSTEM_PAGE: memory.system, STATS_PAGE: memory.stats.text}
    texts.update(memory.core_memory.texts)
    texts.update(state.workset)
    for page, text in texts.items():
        if ctx.info(page).tokens != count(text):
            _fail(3, f"page {page:#x} is accounted {ctx.info(page).tokens} tokens; its text counts {count(text)}")
    if ctx.info(INSTRUCTIONS_PAGE).tokens != memory.instructions_tokens():
        _fail(3, f"the memory instructions are accounted {ctx.info(INSTRUCTIONS_PAGE).tokens} tokens; they count "
                 f"{memory.instructions_tokens()}")
    summary_tokens = count(render_summary(state.summary, state.evicted)) if state.summary else 0
    if ctx.info(SUMMARY_PAGE).tokens != summary_tokens:
        _fail(3, f"the summary is accounted {ctx.info(SUMMARY_PAGE).tokens} tokens; it counts {summary_tokens}")
    for page, chat in zip(queued, queue.messages):
        if ctx.info(page).tokens != count(page_text(chat)):
            _fail(3, f"queued message {page:#x} is accounted {ctx.info(page).tokens} tokens; it counts "
                     f"{count(page_text(chat))}")
    # 4
    for msg, chat in zip(memory.store.recall.get_many(queued), queue.messages):
        if chat_message(msg) != chat:
            _fail(4, f"queued message {msg.id:#x} differs from recall storage")
    # 5
    _check_tool_calls(memory, queued)
    # 6
    recall = len(memory.store.recall)
    if recall != state.evicted + len(queued) + state.stored_only:
        _fail(6, f"{recall} messages in recall storage, but {state.evicted} evicted + {len(queued)} queued + "
                 f"{state.stored_only} stored-only")
    if bool(state.summary) != (state.evicted > 0):
        _fail(6, f"{state.evicted} messages evicted, summary {'present' if state.summary else 'absent'}")
    # 7
    if memory.stats.recall != recall:
        _fail(7, f"the recall count is {memory.stats.recall}, recall storage holds {recall}")
    if list(state.block_pages) != memory.store.blocks.labels():
        _fail(7, f"block pages for {list(state.block_pages)}, stored blocks {memory.store.blocks.labels()}")
    for label in state.shared:
        if label not in state.block_pages or memory.store.blocks.get(label).value:
            _fail(7, f"shared block {label!r} has no page, or its own row keeps a copy of its text")


def _check_tool_calls(memory: "Memory", queued: list[int]) -> None:
    ctx, messages = memory.ctx, memory.queue.messages
    i = 0
    while i < len(messages):
        m = messages[i]
        if m["role"] == "tool":
            _fail(5, f"tool result {m['tool_call_id']!r} does not follow its call")
        calls = m.get("tool_calls") if m["role"] == "assistant" else None
        if not calls:
            i += 1
            continue
        group = ctx.info(queued[i]).group
        if group == 0:
            _fail(5, f"assistant message {queued[i]:#x} with tool calls is in no atomic group")
        for c in calls:
            try:
                ok = isinstance(json.loads(c["function"]["arguments"]), dict)
            except (ValueError, TypeError, KeyError):
                ok = False
            if not ok:
                _fail(5, f"tool call {c.get('id')!r} has arguments that are not a JSON object")
        ids = [c["id"] for c in calls]
        results = messages[i + 1:i + 1 + len(ids)]
        got = [r.get("tool_call_id") for r in results if r["role"] == "tool"]
        at_tail = i + 1 + len(got) == len(messages)
        if got != ids[:len(got)] or (len(got) < len(ids) and not at_tail):
            _fail(5, f"the calls {ids} are answered by {got}")
        for k in range(1, len(got) + 1):
            if ctx.info(queued[i + k]).group != group:
                _fail(5, f"the result of {ids[k - 1]!r} is not in its call's atomic group")
        i += 1 + len(got)
