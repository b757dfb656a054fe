"""The compiled context: what the LLM is sent, part by part, and how each part reads.

Layout, in the order it is sent (each part a page accounted in the C core)::

    SYSTEM   system instructions                       page SYSTEM_PAGE, pinned
    SYSTEM   <memory_instructions>: how to use memory   page INSTRUCTIONS_PAGE, pinned (absent while empty)
    CORE     <core_memory>: one page per block         pinned
    SUMMARY  <summary of N earlier messages>           page SUMMARY_PAGE (absent while empty)
    QUEUE    the FIFO message queue, verbatim           one page per message (also in recall storage)
    SYSTEM   <memory_statistics> (and the clock)       page STATS_PAGE, pinned, resized every step
    WORKSET  <working_set>: pages paged in              one page per search hit (a line each)

The order is for prompt caches (llama.cpp, vLLM, OpenAI, Anthropic reuse the longest prefix
a request shares with the previous one): what changes least comes first, the queue only
grows at its end between flushes, and what changes every step comes last. Between two
flushes and without a core-memory edit, each request extends the previous one's prefix but
for those last messages.

A request's digest (what the trace records, what a replay verifies) is a hash of
per-message digests: each queue message's digest is made once, with the message, so a
request costs a hash of the few parts that change, not of the whole context.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from vmem import Config, PageKind, State, Stats, make_page_id
from vmem.storage import Block, Message, Passage

__all__ = [
    "SYSTEM_PAGE",
    "INSTRUCTIONS_PAGE",
    "MEMORY_INSTRUCTIONS",
    "STATS_PAGE",
    "SUMMARY_PAGE",
    "ContextMap",
    "RequestDigest",
    "chat_message",
    "combine_digests",
    "context_digest",
    "message_digest",
    "message_line",
    "page_text",
    "passage_line",
    "render_block",
    "render_core",
    "render_stats",
    "render_summary",
    "render_workset",
    "tools_digest",
]

SYSTEM_PAGE = make_page_id(PageKind.SYSTEM, 1)
STATS_PAGE = make_page_id(PageKind.SYSTEM, 2)
SUMMARY_PAGE = make_page_id(PageKind.SUMMARY, 1)
INSTRUCTIONS_PAGE = make_page_id(PageKind.SYSTEM, 3)

MEMORY_INSTRUCTIONS = """<memory_instructions>
Your memory outlives this conversation, but only what you save in it is remembered.
- Core memory (the <core_memory> blocks) is always in your context. Whenever the user tells you something about \
themselves (their name, where they live, their work, family, pets, likes, plans), save it at once: call \
core_memory_append with label "human" and the fact as content. When a saved fact changes, fix it with \
core_memory_replace. The "persona" block is who you are.
- Archival memory keeps anything else worth remembering, without limit: archival_memory_insert saves a passage, \
archival_memory_search finds passages by meaning.
- Recall storage keeps every past message, also those no longer in your context: conversation_search finds them.
- Before you answer a question whose answer is not in your context, search archival memory or the conversation.
- Talk to the user with send_message. Call memory functions first when there is something to save or look up.
Example: the user says "Hi, I'm Tom and I live in Oslo." You call core_memory_append with label "human" and \
content "Name: Tom. Lives in Oslo.", then send_message with "Nice to meet you, Tom!".
</memory_instructions>"""
"""The default memory instructions (``Memory.create(instructions=...)``): what a model needs to
use its memory functions, so that a one-line system prompt suffices. Sent as a system message
right after the system instructions; stored with each memory, so a later vmem's default does not
change an existing memory's context (or break its prompt cache)."""


# ------------------------------------------------------------------ how parts read


def render_block(block: Block) -> str:
    """One core memory block as the LLM sees it (label, size against its limit, value)."""
    ro = " read-only" if block.read_only else ""
    desc = f' description="{block.description}"' if block.description else ""
    return (f'<{block.label}{desc} chars="{len(block.value)}/{block.limit}"{ro}>\n'
            f"{block.value}\n</{block.label}>")


def render_core(blocks: Iterable[str]) -> str:
    """The core memory message from rendered blocks."""
    return "<core_memory>\n" + "\n".join(blocks) + "\n</core_memory>"


def day_text(day: _dt.date) -> str:
    """A date as the model reads it: ``1 May 2023``.

    Dates are written in words wherever the model reads them (page lines, intervals, the clock):
    a model answering about "when" copies the form it sees, and people, and LoCoMo's gold
    answers, write "1 May 2023", not "2023-05-01". The memory functions still take ISO dates
    (their schemas say so)."""
    return f"{day.day} {day:%B %Y}"


def moment_text(ts: _dt.datetime) -> str:
    """A time as the model reads it: ``8 May 2023 13:56`` (UTC; another offset is shown, as
    ``8 May 2023 15:56 +02:00``)."""
    offset = ts.utcoffset()
    zone = "" if not offset else f" {ts:%z}"[:-2] + ":" + f"{ts:%z}"[-2:]
    return f"{day_text(ts.date())} {ts:%H:%M}{zone}"


def render_stats(*, recall: int, archival: int, evicted: int, changed: str | None, now: _dt.datetime) -> str:
    """The memory statistics message (``changed``: an ISO time, as the state keeps it)."""
    last = moment_text(_dt.datetime.fromisoformat(changed)) if changed else "never"
    clock = moment_text(now) + ("" if now.utcoffset() else " UTC")  # the convention, said once
    return (f"<memory_statistics>\n{recall} messages in recall storage "
            f"({evicted} evicted from the context; search them with conversation_search); "
            f"{archival} passages in archival storage (archival_memory_search); "
            f"memory last changed: {last}; now: {clock}\n"
            f"</memory_statistics>")


def render_summary(summary: str, evicted: int) -> str:
    """The recursive summary message."""
    return f"<summary of {evicted} earlier messages, now in recall storage>\n{summary}\n</summary>"


def render_workset(lines: Iterable[str]) -> str:
    """The working set message from its pages' lines, in admission order."""
    return "<working_set: pages paged in from storage>\n" + "\n".join(lines) + "\n</working_set>"


def passage_line(p: Passage) -> str:
    """An archival passage as a line of the working set or of a search result: its id, date
    and tags, and when it is a fact that no longer holds, its interval and what replaced it
    ("held 1 May 2023 .. 9 July 2023, replaced by 0x..."); a fact stored after it began to
    hold says since when ("holds since 1 May 2023")."""
    tags = f" · tags: {', '.join(p.tags)}" if p.tags else ""
    since = day_text(p.held_from.date())
    if p.invalid_at is not None:
        by = f"replaced by {p.superseded_by:#x}" if p.superseded_by is not None else "no longer true"
        interval = f" · held {since} .. {day_text(p.invalid_at.date())}, {by}"
    elif p.held_from.date() != p.timestamp.date():
        interval = f" · holds since {since}"
    else:
        interval = ""
    return f"[archival {p.id:#x} · {day_text(p.timestamp.date())}{tags}{interval}] {p.text}"


def message_line(m: Message) -> str:
    """A recall message as a line of the working set or of a search result."""
    return f"[recall {m.id:#x} · {moment_text(m.timestamp)} · {m.role}] {m.content}"


def page_text(chat: Mapping[str, Any]) -> str:
    """The text a message's page is counted by: its content, and its tool calls as JSON."""
    text = chat.get("content") or ""
    if chat.get("tool_calls"):
        text += json.dumps(chat["tool_calls"])
    return text


def chat_message(msg: Message) -> dict[str, Any]:
    """A stored message as an OpenAI chat message."""
    out: dict[str, Any] = {"role": msg.role, "content": msg.content}
    if msg.role == "assistant" and msg.meta.get("tool_calls"):
        out["tool_calls"] = msg.meta["tool_calls"]
        out["content"] = msg.content or None
    if msg.role == "tool":
        out["tool_call_id"] = msg.meta.get("tool_call_id", "")
    return out


# ------------------------------------------------------------------ digests


def message_digest(message: Mapping[str, Any]) -> bytes:
    """A 16-byte digest of one chat message."""
    return hashlib.blake2b(msgpack.packb(message, use_bin_type=True), digest_size=16).digest()


def tools_digest(tools: Sequence[Mapping[str, Any]]) -> bytes:
    """The digest of a list of tool schemas."""
    return message_digest({"tools": list(tools)})


def combine_digests(parts: Sequence[bytes], tools: bytes) -> str:
    """A request's digest from its messages' digests and its tools' digest."""
    return hashlib.blake2b(b"".join(parts) + tools, digest_size=32).hexdigest()


class RequestDigest:
    """:func:`context_digest` kept up to date as the queue grows: the hash state after the
    stable prefix and the queue is kept, and each request adds only its tail and the tools
    (the prefix or a reordered queue starts it over). Equal to computing it from scratch."""

    __slots__ = ("_key", "_fed", "_hasher")

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._fed = 0
        self._hasher: Any = None  # hashlib's blake2b once fed

    def digest(self, prefix: Sequence[Mapping[str, Any]], queue: Sequence[bytes], queue_version: int,
               tail: Sequence[Mapping[str, Any]], tools: bytes) -> str:
        key = (tuple(m["content"] for m in prefix), queue_version)
        if key != self._key or len(queue) < self._fed:
            self._key, self._fed = key, 0
            self._hasher = hashlib.blake2b(digest_size=32)
            for m in prefix:
                self._hasher.update(message_digest(m))
        if len(queue) > self._fed:
            self._hasher.update(b"".join(queue[self._fed:]))
            self._fed = len(queue)
        h = self._hasher.copy()
        for m in tail:
            h.update(message_digest(m))
        h.update(tools)
        digest: str = h.hexdigest()
        return digest


def context_digest(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]) -> str:
    """The digest the trace records for a driver request, computed from scratch
    (a ReplayDriver verifies requests with it; the kernel gets the same value incrementally)."""
    return combine_digests([message_digest(m) for m in messages], tools_digest(tools))


# ------------------------------------------------------------------ the map


@dataclass(frozen=True)
class ContextMap:
    """The core's accounting of the context, plus the storage tiers' sizes (what a context map draws)."""

    stats: Stats
    config: Config
    state: State
    recall_messages: int | None = None
    archival_passages: int | None = None
