"""The recursive summary: folding evicted messages into the previous summary, in chunks.

:func:`fold` is written sans-IO: a generator that yields each summarizer request (OpenAI
chat messages, no tools) and is sent back the summary text, so the same code serves a
synchronous callable, an ``async`` one, or a driver. Its rules:

1. Every request fits the budget it is given (prompt + previous summary + chunk).
2. Each request folds the previous result in (the summary is recursive).
3. A line too long for one request is split, never dropped (``(continued)`` marks the rest).
4. It always makes progress: every request folds at least one character of new text.
5. The result never exceeds its cap: a longer reply is cut to it (and counted).
6. An empty reply loses nothing: the previous summary stays, with a note (and it is counted).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vmem.kernel.errors import ContextWindowError, KernelError
from vmem.kernel.tokens import MESSAGE_OVERHEAD
from vmem.text import clean_text

__all__ = ["SUMMARIZER_PROMPT", "TRUNCATED", "Folded", "SummaryRequest", "asummarize", "cap_text", "fold",
           "summarize", "transcript"]

SUMMARIZER_PROMPT = (
    "You maintain the running summary of a conversation between a user and an AI agent whose "
    "older messages are being moved out of its context window. Write a new summary that folds "
    "the previous summary and the messages below into one text: keep facts about the user, "
    "decisions, open tasks and anything the agent promised; drop chit-chat. Write at most "
    "{words} words, in the third person, as plain text."
)

SummaryRequest = list[dict[str, Any]]
"""What a summarizer is asked: OpenAI chat messages (a system prompt and one user message)."""

_MIN_ROOM = 32  # tokens of new text a request must be able to carry
TRUNCATED = " [summary cut to its cap]"


def transcript(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """Chat messages as the lines a summarizer reads (``role: text [calls f(args)]``)."""
    lines = []
    for m in messages:
        text = m.get("content") or ""
        if m.get("tool_calls"):
            calls = "; ".join(f"{c['function']['name']}({c['function']['arguments']})" for c in m["tool_calls"])
            text = f"{text} [calls {calls}]".strip()
        lines.append(f"{m['role']}: {text}")
    return lines


@dataclass
class Folded:
    """What a fold produced: the new summary, how many requests it took, how many replies were cut to the cap."""

    text: str
    requests: int = 0
    truncated: int = 0
    empty: int = 0  #: replies that were empty (the fold kept the previous summary and a note instead)


def cap_text(text: str, cap: int, count: Callable[[str], int]) -> str:
    """``text`` cut (at a word boundary when there is one) so that ``count`` of it is at most ``cap``."""
    if count(text) <= cap:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits, by bisection on characters
        mid = (lo + hi + 1) // 2
        if count(text[:mid] + TRUNCATED) <= cap:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    space = cut.rfind(" ")
    if space > lo // 2:
        cut = cut[:space]
    return cut + TRUNCATED


def fold(previous: str, lines: Sequence[str], *, budget: int, words: int, cap: int,
         count: Callable[[str], int]) -> Generator[SummaryRequest, str, Folded]:
    """Fold ``lines`` into ``previous``; yields requests, is sent summaries, returns the result.

    ``budget``: tokens one request may use; ``cap``: tokens the summary may take (a longer
    reply is cut to it, and counted in ``Folded.truncated``); ``count``: the kernel's token
    counter. Raises ContextWindowError when the previous summary leaves no room for new
    text. An empty reply keeps the previous summary with a note of what was folded (counted in
    ``Folded.empty``): the messages are in recall storage either way.
    """
    prompt = SUMMARIZER_PROMPT.format(words=words)
    room = budget - count(prompt) - 2 * MESSAGE_OVERHEAD
    pending: deque[tuple[str, bool]] = deque((line, False) for line in lines)  # (text, a continuation?)
    result = Folded(previous)
    while pending:
        head = f"Previous summary:\n{result.text or '(none)'}\n\nMessages to fold in:\n"
        left = room - count(head)
        if left < _MIN_ROOM:
            raise ContextWindowError("the summary leaves no room to fold messages into it")
        chunk: list[str] = []
        used = 0
        while pending:
            line = _render(*pending[0])
            cost = count(line)
            if used + cost <= left:
                chunk.append(line)
                pending.popleft()
                used += cost
            elif not chunk:  # one line alone is too long: split it, never drop it
                text, continued = pending.popleft()
                cut = max(1, int(len(text) * left / cost * 0.9))
                while cut > 1 and count(_render(text[:cut], continued)) > left:
                    cut = max(1, cut * 3 // 4)
                chunk.append(_render(text[:cut], continued))
                pending.appendleft((text[cut:], True))  # at least one character folded: progress
                break
            else:
                break
        reply = yield [{"role": "system", "content": prompt},
                       {"role": "user", "content": head + "\n".join(chunk)}]
        reply = clean_text((reply or "").strip())
        result.requests += 1
        if not reply:  # a model may answer nothing: keep what was known, say what was folded
            result.empty += 1
            reply = (f"{result.text}\n" if result.text else "") + (
                f"({len(chunk)} more messages were moved to recall storage without a summary; "
                f"search them with conversation_search.)")
        capped = cap_text(reply, cap, count)
        result.truncated += capped is not reply
        result.text = capped
    return result


def _render(text: str, continued: bool) -> str:
    return "(continued) " + text if continued else text


def summarize(summarizer: Any, request: SummaryRequest) -> str:
    """Ask ``summarizer`` (a callable ``(messages) -> str``, or a Driver) for one summary."""
    if summarizer is None:
        raise KernelError("the context needs a flush, which needs a summary: pass summarizer= (a callable "
                          "(messages) -> str, or a Driver)")
    complete = getattr(summarizer, "complete", None)
    if complete is not None:
        return complete(request, []).text or ""
    text = summarizer(request)
    if inspect.isawaitable(text):
        close = getattr(text, "close", None)
        if close is not None:
            close()  # never leak a coroutine that was not awaited
        raise TypeError("an async summarizer needs acontext()")
    summary: str = text
    return summary


async def asummarize(summarizer: Any, request: SummaryRequest) -> str:
    """:func:`summarize` with ``await``: an async callable, or a Driver's ``acomplete``."""
    if summarizer is None:
        return summarize(None, request)
    acomplete = getattr(summarizer, "acomplete", None)
    if acomplete is not None:
        return (await acomplete(request, [])).text or ""
    text = summarizer(request)
    if inspect.isawaitable(text):
        text = await text
    summary: str = text
    return summary
