"""The built-in memory functions (MemGPT's and Letta's set), called by the LLM.

Each is written against :class:`vmem.kernel.host.Host` only. It returns a short text for
the LLM or raises FunctionError with what to fix. Its arguments arrive validated and typed
(dates as ``datetime.date``), optional ones left out when the model sent them empty: see
:mod:`vmem.kernel.functions`. Search results are paged into the
working set (a page fault); the call's result lists them, with the full text of any page
that did not fit.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Any, Literal

from vmem.kernel.context import day_text, message_line, passage_line
from vmem.kernel.functions import FunctionError, memory_function
from vmem.kernel.host import Host, SearchHit
from vmem.storage import Block, BlockLimitError, EditConflictError, NotFoundError, ReadOnlyBlockError, SearchPage
from vmem.storage.block_edit import BlockEdit

__all__ = ["BUILTINS", "TERMINAL"]

SNIPPET = 120


def _block(memory: Host, label: str) -> Block:
    try:
        return memory.block(label)
    except NotFoundError:
        labels = ", ".join(memory.block_labels()) or "none"
        raise FunctionError(f"no core memory block {label!r}; blocks: {labels}") from None


def _edit_block(memory: Host, label: str, edit: BlockEdit) -> str:
    """Edit a block; the store enforces read-only and the limit, the core the budget; a shared
    block's edit that meets another agent's change it cannot apply to is refused."""
    try:
        block = memory.edit_block(label, edit)
    except (ReadOnlyBlockError, EditConflictError) as exc:
        raise FunctionError(str(exc)) from None
    except BlockLimitError as exc:
        raise FunctionError(f"{exc}; condense it (memory_rethink) or move details to archival memory") from None
    return f"block {label!r} now holds {len(block.value)}/{block.limit} characters"


@memory_function
def send_message(memory: Host, message: str) -> str:
    """Send a message to the user. This is the only way the user sees what you write.

    Args:
        message: the message, in plain text or Markdown.
    """
    memory.reply(message)
    return "sent"


@memory_function
def core_memory_append(memory: Host, label: str, content: str) -> str:
    """Append text to a core memory block (always in your context).

    Args:
        label: the block's label (e.g. "human" or "persona").
        content: the text to append, on a new line.
    """
    block = _block(memory, label)
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    held = {line.strip() for line in block.value.splitlines()}
    if lines and all(line in held for line in lines):  # small models re-save what they read there (the
        # result says so; the schema's description does not, as every request would pay its tokens)
        return f"block {label!r} already holds this, nothing appended: {' / '.join(lines)}"
    return _edit_block(memory, label, BlockEdit.append(content))


@memory_function
def core_memory_replace(memory: Host, label: str, old_content: str, new_content: str) -> str:
    """Replace text in a core memory block; the old text must occur exactly once.

    Args:
        label: the block's label.
        old_content: the exact text to replace.
        new_content: the replacement (empty to delete old_content).
    """
    block = _block(memory, label)
    if not old_content:
        raise FunctionError("old_content must not be empty")
    n = block.value.count(old_content)
    if n != 1:
        raise FunctionError(f"old_content occurs {n} times in block {label!r}; it must occur exactly once "
                            f"(quote more of the surrounding text)")
    return _edit_block(memory, label, BlockEdit.replace(old_content, new_content))


@memory_function
def memory_insert(memory: Host, label: str, content: str, insert_line: int = -1) -> str:
    """Insert text into a core memory block after a given line.

    Args:
        label: the block's label.
        content: the text to insert (may span several lines).
        insert_line: insert after this line number (1-based); 0 inserts at the top, -1 at the end.
    """
    block = _block(memory, label)
    lines = block.value.split("\n") if block.value else []
    if insert_line == -1:
        insert_line = len(lines)
    if not 0 <= insert_line <= len(lines):
        raise FunctionError(f"insert_line must be -1 or between 0 and {len(lines)} for block {label!r}")
    return _edit_block(memory, label, BlockEdit.insert(content, insert_line))


@memory_function
def memory_rethink(memory: Host, label: str, new_memory: str) -> str:
    """Rewrite a core memory block completely (to reorganise or condense it).

    Args:
        label: the block's label.
        new_memory: the block's new full text.
    """
    block = _block(memory, label)
    return _edit_block(memory, label, BlockEdit.rewrite(new_memory, base=block.value))


@memory_function
def archival_memory_insert(memory: Host, content: str, tags: list[str] | None = None) -> str:
    """Save text to archival memory (long-term, unlimited, searchable by meaning and words).

    Args:
        content: the text to save; long text is split into passages.
        tags: optional tags to file it under.
    """
    if not content.strip():
        raise FunctionError("content must not be empty")
    ids = memory.archival_insert(content, tags or ())
    names = ", ".join(f"{i:#x}" for i in ids)
    already = getattr(ids, "already", 0)
    if already and already >= len(set(ids)):
        return f"already in archival memory, nothing new saved: passage(s) {names}" + (" (tags added)" if tags else "")
    if already:
        return f"saved as {len(ids)} passage(s): {names} ({already} of them already there)"
    return f"saved as {len(ids)} passage(s): {names}"


def _passage_id(value: str) -> int:
    """A passage id as the model writes it: ``0x...`` as shown in search results, or decimal."""
    text = str(value).strip()
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise FunctionError(f"old_id must be a passage id as shown in search results (like 0x1000000000000a3), "
                            f"got {value!r}") from None


@memory_function
def archival_memory_update(memory: Host, old_id: str, new_content: str, tags: list[str] | None = None) -> str:
    """Replace an archival fact that no longer holds by the fact as it is now (the old one is kept, marked replaced).

    Args:
        old_id: the replaced passage's id (0x...).
        new_content: the fact as it is now.
        tags: tags for the new passage.
    """
    if not new_content.strip():
        raise FunctionError("new_content must not be empty")
    pid = _passage_id(old_id)
    try:
        old = memory.archival_get(pid)
    except (NotFoundError, ValueError):
        raise FunctionError(f"no archival passage {old_id!r}; search archival memory for the passage to replace "
                            "and use its id") from None
    if not old.current:
        by = f" by {old.superseded_by:#x}" if old.superseded_by is not None else ""
        raise FunctionError(f"passage {pid:#x} was already replaced{by} on "
                            f"{day_text(old.invalid_at.date()) if old.invalid_at else '?'}; "
                            "update the passage that holds now")
    ids = memory.archival_insert(new_content, tags or ())
    if pid in ids:
        raise FunctionError(f"new_content is the text of passage {pid:#x} itself; state the fact as it is now")
    try:
        memory.supersede([pid], ids[0])
    except ValueError as exc:  # e.g. a passage dated after today
        raise FunctionError(str(exc)) from None
    return f"passage {pid:#x} replaced by {', '.join(f'{i:#x}' for i in ids)} (the old one is kept, marked replaced)"


@memory_function
def archival_memory_search(
    memory: Host,
    query: str,
    tags: list[str] | None = None,
    tags_match: Literal["any", "all"] = "any",
    start_date: _dt.date | None = None,
    end_date: _dt.date | None = None,
    as_of: _dt.date | None = None,
    page: int = 0,
) -> str:
    """Search archival memory; the passages found are paged into your working set (replaced facts last).

    Args:
        query: what to look for (words or a description).
        tags: only passages with these tags.
        tags_match: "any" (at least one tag) or "all".
        start_date: only passages from this date on (YYYY-MM-DD).
        end_date: only passages up to this date (YYYY-MM-DD).
        as_of: only facts true on this date (YYYY-MM-DD).
        page: the page of results, from 0.
    """
    found = memory.archival_search(query, tags=tags, tags_match=tags_match, start=start_date, end=end_date,
                                   page=page,
                                   as_of=None if as_of is None else _dt.datetime(as_of.year, as_of.month, as_of.day,
                                                                                 23, 59, 59, tzinfo=_dt.timezone.utc))
    hits = [(h.item.id, h.score, passage_line(h.item)) for h in found.hits]
    return _page_fault(memory, "archival memory", found, hits)


@memory_function
def conversation_search(
    memory: Host,
    query: str | None = None,
    roles: list[str] | None = None,
    start_date: _dt.date | None = None,
    end_date: _dt.date | None = None,
    page: int = 0,
) -> str:
    """Search the whole conversation history (recall storage), including evicted messages.

    Args:
        query: words to look for (omit to list messages newest first).
        roles: only messages from these roles ("user", "assistant", "tool", "system").
        start_date: only messages from this date on (YYYY-MM-DD).
        end_date: only messages up to this date (YYYY-MM-DD).
        page: the page of results, from 0.
    """
    found = memory.conversation_search(query, roles=roles, start=start_date,
                                       end=end_date, page=page)
    hits = [(h.item.id, h.score, message_line(h.item)) for h in found.hits]
    return _page_fault(memory, "recall storage", found, hits)


def _page_fault(memory: Host, tier: str, found: SearchPage[Any], hits: Sequence[SearchHit]) -> str:
    if not hits:
        return f"no results in {tier} (page {found.page + 1} of {max(found.pages, 1)}, {found.total} matches)"
    ranked = [(page, 1.0 / (rank + 1), line) for rank, (page, _, line) in enumerate(hits)]
    resident = memory.page_in(ranked)
    lines = [f"page {found.page + 1} of {found.pages} ({found.total} matches) in {tier}:"]
    for page, _, line in hits:
        if page in resident:
            lines.append(f"- {line[:SNIPPET]}{'…' if len(line) > SNIPPET else ''} (in context)")
        else:
            lines.append(f"- {line}")
    return "\n".join(lines)


BUILTINS = (
    send_message,
    core_memory_append,
    core_memory_replace,
    memory_insert,
    memory_rethink,
    archival_memory_insert,
    archival_memory_update,
    archival_memory_search,
    conversation_search,
)

TERMINAL = frozenset({"send_message"})
"""Built-ins that end the agent's turn (unless the model asks for a heartbeat and a rule allows it)."""
