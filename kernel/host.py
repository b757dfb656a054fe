"""The host interface: what a memory function may ask of the memory it runs in.

The built-in memory functions (:mod:`vmem.kernel.builtins`) are written against this
Protocol and nothing else; :class:`vmem.kernel.Memory` implements it. A user function
whose first parameter is named ``memory`` is passed the Memory itself (a Host, and more).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from typing import Literal, Protocol

from vmem.storage import Block, Message, Passage, SearchPage
from vmem.storage.block_edit import BlockEdit

__all__ = ["Host", "Saved", "SearchHit"]

SearchHit = tuple[int, float, str]
"""``(page id, score, line)``: a search result as the working set shows it."""


class Saved(list):  # type: ignore[type-arg]
    """What an archival save returns: the passages' page ids (a list), and ``already``: how
    many of those passages were stored before it (archival storage keeps a text once)."""

    already: int = 0


class Host(Protocol):
    """The memory, as the memory functions see it."""

    @property
    def now(self) -> _dt.datetime:
        """The time of the current turn."""

    @property
    def page_size(self) -> int:
        """Results per page of a memory search."""

    def block(self, label: str) -> Block:
        """A core memory block (vmem.storage.NotFoundError if none)."""

    def block_labels(self) -> list[str]:
        """The core memory blocks' labels."""

    def set_block(self, label: str, value: str) -> Block:
        """Set a block's value (ReadOnlyBlockError, BlockLimitError, vmem.BudgetError refuse it)."""

    def edit_block(self, label: str, edit: BlockEdit) -> Block:
        """Edit a block (append, replace, insert, rewrite); as :meth:`set_block`, and
        EditConflictError when the edit cannot apply to the value it meets (a shared block)."""

    def reply(self, message: str) -> None:
        """A message for the user (what send_message does)."""

    def archival_insert(self, content: str, tags: Sequence[str]) -> list[int]:
        """Save text to archival storage; the passages' page ids (a :class:`Saved` says how many
        were there already)."""

    def archival_get(self, page_id: int) -> Passage:
        """The archival passage with this page id (vmem.storage.NotFoundError if none, ValueError
        if the id is not a passage's)."""

    def supersede(self, old_ids: Sequence[int], by: int | None = None, *,
                  at: _dt.datetime | None = None) -> list[int]:
        """Mark archival passages as no longer holding from ``at`` (default: now), replaced by
        ``by``; the ids changed (ValueError, NotFoundError refuse bad ids or times)."""

    def archival_search(self, query: str, *, tags: Sequence[str] | None, tags_match: Literal["any", "all"],
                        start: _dt.date | None, end: _dt.date | None, page: int,
                        as_of: _dt.datetime | None = None) -> SearchPage[Passage]:
        """One page of an archival search (hybrid): current facts first, or with ``as_of`` only
        the facts that held then."""

    def conversation_search(self, query: str | None, *, roles: Sequence[str] | None, start: _dt.date | None,
                            end: _dt.date | None, page: int) -> SearchPage[Message]:
        """One page of a recall search."""

    def page_in(self, hits: Sequence[SearchHit]) -> set[int]:
        """Page search hits into the working set; the pages among them now in the context."""
