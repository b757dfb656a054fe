"""What the memory did: a session's account, from the trace, for the end of chat and demo.

A user who watches a small model chat cannot tell whether it uses its memory at all. The
trace records every memory operation (:mod:`vmem.kernel.trace`); :func:`activity` reads the
events of one session (those after a sequence number taken at its start) and :class:`Activity`
says, in a few lines: the memory functions called (by name, failed ones counted apart), the
core memory blocks changed, page faults (searches the model made) and the pages paged into
the working set (by those and by the kernel's prefetch), flushes, LLM calls, and the share
of prompt tokens the server served from its cache between flushes.

Interface::

    start = session_start(memory.store)             # before the session
    ...                                             # the session
    report = activity(memory.store.events.read(after=start))
    for line in report.lines(): print(line)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vmem.kernel import prefix_cache

__all__ = ["Activity", "PAGE_FAULTS", "activity", "session_start"]

PAGE_FAULTS = frozenset({"archival_memory_search", "conversation_search"})
"""The memory functions that are page faults: the model asks for what is not in its context."""


@dataclass
class Activity:
    """What the memory did over a run of trace events."""

    calls: Counter[str] = field(default_factory=Counter)  #: memory function calls by name (all)
    failed: Counter[str] = field(default_factory=Counter)  #: those answered as failed calls
    blocks: list[str] = field(default_factory=list)  #: core memory blocks changed, in order of first change
    page_faults: int = 0  #: searches the model made (archival_memory_search, conversation_search)
    paged_in: int = 0  #: pages admitted into the working set (by page faults and prefetch)
    flushes: int = 0
    alerts: int = 0
    user_messages: int = 0
    llm_calls: int = 0  #: answers (summary calls apart)
    summary_calls: int = 0
    cache_prompt: int = 0  #: prompt tokens of the calls whose prefix should be stable ...
    cache_hits: int = 0  #: ... and those the server served from its cache
    cache_known: bool = False  #: the server reported cached tokens

    @property
    def cache_ratio(self) -> float | None:
        """Cached / prompt tokens between flushes, or None when the server did not say."""
        return self.cache_hits / self.cache_prompt if self.cache_known and self.cache_prompt else None

    def lines(self) -> list[str]:
        """The account, a line per subject."""
        saving = sum(n for name, n in self.calls.items() if name not in PAGE_FAULTS and name != "send_message")
        if self.calls:
            names = ", ".join(f"{name} ×{n}" + (f" ({self.failed[name]} failed)" if self.failed[name] else "")
                              for name, n in sorted(self.calls.items()))
        else:
            names = "none"
        out = [f"memory functions called: {names}"]
        if self.llm_calls and not saving and not self.page_faults:
            out.append("  (the model neither saved nor searched anything: it did not use its memory)")
        out.append("core memory blocks changed: " + (", ".join(self.blocks) if self.blocks else "none"))
        out.append(f"page faults: {self.page_faults} search(es) by the model; {self.paged_in} page(s) paged into "
                   f"the working set")
        out.append(f"memory pressure: {self.alerts} warning alert(s), {self.flushes} flush(es)")
        ratio = self.cache_ratio
        cache = (f"{ratio:.0%} of {self.cache_prompt:,} prompt tokens between flushes served from the server's cache"
                 if ratio is not None else "the server did not report cached tokens")
        out.append(f"LLM calls: {self.llm_calls} for {self.user_messages} message(s), {self.summary_calls} "
                   f"summary call(s); prompt cache: {cache}")
        return out


def session_start(store: Any) -> int:
    """The sequence number of the last event in ``store``'s trace (0 when empty): a session's
    events are those read after it."""
    last = store.events.tail(1)
    return int(last[0][0]) if last else 0


def activity(events: Iterable[Any]) -> Activity:
    """:class:`Activity` of trace events (dicts, or ``(seq, event)`` pairs as ``EventLog.read`` gives)."""
    a = Activity()
    kept: list[dict[str, Any]] = []
    for item in events:
        e = item[1] if isinstance(item, tuple) else item
        kept.append(e)
        kind = e.get("e")
        if kind == "call":
            name = str(e.get("name"))
            a.calls[name] += 1
            if not e.get("ok"):
                a.failed[name] += 1
            elif name in PAGE_FAULTS:
                a.page_faults += 1
        elif kind in ("block", "block_added", "block_updated", "block_deleted"):
            label = str(e.get("label"))
            if label not in a.blocks:
                a.blocks.append(label)
        elif kind == "pagein":
            a.paged_in += len(e.get("admitted") or ())
        elif kind == "flush":
            a.flushes += 1
        elif kind == "alert":
            a.alerts += 1
        elif kind == "user":
            a.user_messages += 1
        elif kind == "llm":
            if e.get("purpose") == "summary":
                a.summary_calls += 1
            else:
                a.llm_calls += 1
            usage = (e.get("completion") or {}).get("usage") or {}
            a.cache_known = a.cache_known or usage.get("cached_tokens") is not None
    tally = prefix_cache(kept)
    a.cache_prompt, a.cache_hits = tally.prompt_tokens, tally.cached_tokens
    return a
