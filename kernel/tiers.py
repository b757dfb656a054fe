"""Tiers: the memory's calls on core memory, archival storage and recall search, a layer of Memory.

What the memory functions ask of the memory (the :class:`vmem.kernel.host.Host` protocol:
blocks, archival inserts and searches, conversation search, paging hits in, a reply for the
user) and what a developer calls on the same tiers (adding, updating and deleting blocks,
inserting many passages, superseding facts). Each change is one transaction; a block change
that would leave the queue too little of the window is refused (ContextWindowError) and
undone. Over :class:`vmem.kernel.image.MemoryImage`; used as :class:`vmem.kernel.Memory`::

    from vmem.kernel import Memory

    memory.set_block("human", "Name: Ana")
    ids = memory.archival_insert("Ana moved to Lisbon in May 2023", tags=["moves"])
    found = memory.archival_search("where does Ana live", page=0)

Interface: ``Tiers`` (block, block_labels, set_block, add_block, update_block, delete_block,
reply, archival_insert, archival_insert_many, archival_get, supersede, archival_search,
conversation_search, page_in).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Iterator, Sequence
from typing import Literal

from vmem import BudgetError, Region
from vmem.kernel.context import passage_line
from vmem.kernel.errors import ContextWindowError
from vmem.kernel.host import Saved
from vmem.kernel.image import MemoryImage, one_caller, storable
from vmem.kernel.pressure import MIN_QUEUE, summary_cap
from vmem.storage import Block, Message, Passage, SearchPage
from vmem.storage.block_edit import BlockEdit
from vmem.storage.location import open_shared_blocks

__all__ = ["Tiers"]


class Tiers(MemoryImage):
    """Core memory, archival storage and recall search, as the memory functions and the developer see them."""

    @one_caller
    def block(self, label: str) -> Block:
        """A core memory block (vmem.storage.NotFoundError if none)."""
        return self.core_memory.get(label)

    @one_caller
    def blocks(self) -> list[Block]:
        """Every core memory block as the context shows it (a shared block's text from its
        store, with this memory's unapplied edits), in creation order."""
        return self.core_memory.all()

    def edit_block(self, label: str, edit: BlockEdit) -> Block:
        """Edit a block as the agent does (append, replace, insert, rewrite: see
        :class:`~vmem.storage.block_edit.BlockEdit`), all or nothing. EditConflictError when the
        edit cannot apply (the old text is gone...); a shared block's edit is applied to its
        store after this transaction commits, to the value current then."""
        label = storable(label)
        with self.transaction(), self._keeping_room(label):
            block = self.core_memory.apply(label, edit)
            self._memory_changed()
        return block

    def attach_block(self, label: str, store: str | os.PathLike[str], name: str | None = None) -> Block:
        """Attach the shared block ``name`` (default: ``label``) of the shared block store at
        ``store`` (a file path, or a PostgreSQL URL) as this memory's block ``label``: its text
        stays in the store, every agent attached to it sees each other's edits at their next
        step. ContextWindowError if it does not fit; BlockExistsError if the label is taken."""
        label = storable(label)
        with self.transaction(), self._keeping_room(label):
            try:
                block = self.core_memory.attach(label, os.fspath(store), storable(name) if name else label)
            except BudgetError as exc:
                raise ContextWindowError(f"block {label!r} does not fit in the context window: {exc}") from None
            self._memory_changed()
        return block

    def share_block(self, label: str, store: str | os.PathLike[str], name: str | None = None) -> Block:
        """Move this memory's block ``label`` into the shared block store at ``store`` (created
        if missing) as ``name`` (default: ``label``), so that other memories can attach it."""
        label = storable(label)
        with self.transaction():
            block = self.core_memory.get(label)
            if self.shared_blocks.is_shared(label):
                raise ValueError(f"block {label!r} is shared already")
            shared = open_shared_blocks(store)
            try:
                shared.create(storable(name) if name else label, block.value, limit=block.limit,
                              description=block.description, read_only=block.read_only,
                              agent=self.shared_blocks.agent)
            finally:
                shared.close()
            self.core_memory.delete(label)
            return self.attach_block(label, store, name)

    @one_caller
    def block_labels(self) -> list[str]:
        """The core memory blocks' labels, in creation order."""
        return self.core_memory.labels()

    def set_block(self, label: str, value: str) -> Block:
        """Set a block's value, as the agent does (read-only and the limit apply), all or nothing."""
        label, value = storable(label), storable(value)  # storable as UTF-8, as a message's text is
        with self.transaction(), self._keeping_room(label):
            block = self.core_memory.edit(label, value)
            self._memory_changed()
        return block

    def add_block(self, label: str, value: str = "", *, limit: int = 2000, description: str = "",
                  read_only: bool = False) -> Block:
        """Add a core memory block (a pinned page of the context). ContextWindowError if the
        window cannot hold it; BlockExistsError if the label is taken."""
        label, value, description = storable(label), storable(value), storable(description)
        with self.transaction(), self._keeping_room(label):
            try:
                block = self.core_memory.add(label, value, limit=limit, description=description, read_only=read_only)
            except BudgetError as exc:
                raise ContextWindowError(f"block {label!r} does not fit in the context window: {exc}") from None
            self._memory_changed()
        return block

    def update_block(self, label: str, *, value: str | None = None, limit: int | None = None,
                     description: str | None = None, read_only: bool | None = None) -> Block:
        """Change any field of a block, as its developer (read-only does not apply; the limit does)."""
        label, value, description = storable(label), storable(value), storable(description)
        with self.transaction(), self._keeping_room(label):
            try:
                block = self.core_memory.update(label, value=value, limit=limit, description=description,
                                                read_only=read_only)
            except BudgetError as exc:
                raise ContextWindowError(f"block {label!r} would not fit in the context window: {exc}") from None
            self._memory_changed()
        return block

    @contextlib.contextmanager
    def _keeping_room(self, label: str) -> Iterator[None]:
        """ContextWindowError (the transaction rolls back) if a block change grows the pinned
        pages so far that the queue keeps less than a step needs (:data:`MIN_QUEUE`)."""
        def pinned() -> int:
            t = self.ctx.stats().tokens
            return int(t[Region.SYSTEM] + t[Region.CORE])
        before = pinned()
        yield
        after, budget = pinned(), self.ctx.config.budget
        left = budget - after - summary_cap(budget, self.config.summary_share)
        if after > before and left < MIN_QUEUE:
            raise ContextWindowError(f"block {label!r} would leave the queue {max(left, 0)} tokens of the context "
                                     f"window; a step needs at least {MIN_QUEUE}")

    def delete_block(self, label: str) -> None:
        """Remove a core memory block (NotFoundError if none)."""
        with self.transaction():
            self.core_memory.delete(label)
            self._memory_changed()

    def reply(self, message: str) -> None:
        """A message for the user (send_message); it reaches the caller in ``CallRecord.replies``."""
        if self._replies is not None:
            self._replies.append(message)

    def archival_insert(self, content: str, tags: Sequence[str] = (), *,
                        valid_from: _dt.datetime | None = None, timestamp: _dt.datetime | None = None) -> Saved:
        """Save text to archival storage (split into passages); their page ids, as a :class:`Saved`
        whose ``already`` counts the passages that were stored before (archival storage keeps
        an exact text once, adding the new tags to it). ``timestamp``: default the turn's time;
        the passages hold from ``valid_from`` (default: that time)."""
        with self.transaction():
            before = self.stats.archival
            ids = Saved(self.store.archival.insert(content, tags=tags, timestamp=timestamp or self.now,
                                                   valid_from=valid_from))
            self._memory_changed()
            ids.already = len(set(ids)) - (self.stats.archival - before)
        return ids

    def archival_insert_many(self, texts: Sequence[str], tags: Sequence[str] = (),
                             timestamp: _dt.datetime | None = None, *,
                             valid_from: _dt.datetime | Sequence[_dt.datetime] | None = None) -> list[list[int]]:
        """Save several texts at once (one transaction, one embedding batch); each one's page ids.
        ``timestamp`` defaults to the current turn's time; ``valid_from`` (one time, or one per
        text) to ``timestamp``."""
        with self.transaction():
            ids = self.store.archival.insert_many(texts, tags=tags, timestamp=timestamp or self.now,
                                                  valid_from=valid_from)
            self._memory_changed()
        return ids

    @one_caller
    def archival_get(self, page_id: int) -> Passage:
        """The archival passage with this page id, with its interval (NotFoundError if none)."""
        return self.store.archival.get(page_id)

    def supersede(self, old_ids: Sequence[int], by: int | None = None, *,
                  at: _dt.datetime | None = None) -> list[int]:
        """Mark the archival passages ``old_ids`` as no longer holding from ``at`` (default: the
        current turn's time), replaced by the passage ``by`` (None: nothing replaced them); the
        ids changed (already superseded ones are left as they are). Nothing is deleted: they
        stay searchable, after current facts, shown with their interval (a resident one's line
        in the working set too). Traced as ``{"e": "supersede"}``. Raises as
        :meth:`vmem.storage.ArchivalStore.supersede` does, changing nothing."""
        when = at if at is not None else self.now
        old = list(old_ids) if not isinstance(old_ids, (int, str)) else old_ids
        with self.transaction():
            changed = self.store.archival.supersede(old, by, when)
            self.trace.write({"e": "supersede", "old": [int(i) for i in old], "by": by,
                              "at": when.timestamp(), "changed": changed})
            if changed:
                self._memory_changed()
                resident = [p for p in changed if p in self.workset.lines]
                if resident:
                    self.workset.rewrite({p.id: passage_line(p) for p in self.store.archival.get_many(resident)})
        return changed

    @one_caller
    def archival_search(self, query: str, *, tags: Sequence[str] | None = None,
                        tags_match: Literal["any", "all"] = "any",
                        start: _dt.date | None = None, end: _dt.date | None = None,
                        as_of: _dt.datetime | None = None, page: int = 0) -> SearchPage[Passage]:
        """One page of a hybrid archival search (``page_size`` results): current facts first, or
        with ``as_of`` only the facts that held then."""
        return self.store.archival.search(query, mode="hybrid", tags=tags, tags_match=tags_match, start=start,
                                          end=end, as_of=as_of, page=page, page_size=self.config.page_size)

    @one_caller
    def conversation_search(self, query: str | None, *, roles: Sequence[str] | None = None,
                            start: _dt.date | None = None, end: _dt.date | None = None,
                            page: int = 0) -> SearchPage[Message]:
        """One page of a recall search (``page_size`` results)."""
        return self.store.recall.search(query, roles=roles, start=start, end=end, page=page,
                                        page_size=self.config.page_size)

    def page_in(self, hits: Sequence[tuple[int, float, str]]) -> set[int]:
        """Page search hits ``(page, score, line)`` into the working set; the pages among them
        in the context now (admitted, or resident already)."""
        with self.transaction():
            admitted = self.workset.page_in(hits)
            if hits:
                self._session.dirty = True
        return set(admitted) | self.workset.resident(h[0] for h in hits)
