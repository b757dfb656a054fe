"""Core memory: the labelled blocks that are always in the context, one pinned page each.

The store (:class:`vmem.storage.Blocks`) is the truth for a block's value, limit and
flags and enforces them; this keeps each block's rendered text beside its page in the
core, so an edit re-accounts its tokens in the same breath: the core checks the new size
against the budget first, then the store applies its rules, and a refusal by either
changes nothing.
"""

from __future__ import annotations

from vmem import PageKind, PagedContext, Region, make_page_id, page_serial
from vmem.kernel.context import render_block, render_core
from vmem.kernel.persistence import MemoryState
from vmem.kernel.tokens import TokenCounter
from vmem.kernel.trace import Trace
from vmem.storage import Block, Blocks

__all__ = ["CoreMemory"]


class CoreMemory:
    """The core memory blocks as pages: ``pages`` maps labels to page ids (``MemoryState.block_pages``),
    ``texts`` pages to their rendered text."""

    __slots__ = ("_ctx", "_blocks", "_counter", "_trace", "_state", "texts")

    def __init__(self, ctx: PagedContext, blocks: Blocks, counter: TokenCounter, trace: Trace,
                 state: MemoryState) -> None:
        self._ctx = ctx
        self._blocks = blocks
        self._counter = counter
        self._trace = trace
        self._state = state
        self.texts: dict[int, str] = {}

    @property
    def pages(self) -> dict[str, int]:
        """Block label -> page id, in creation order."""
        return self._state.block_pages

    def load(self) -> None:
        """Render every stored block (at open)."""
        self.texts = {self.pages[b.label]: render_block(b) for b in self._blocks.all()}

    def register(self, block: Block) -> int:
        """Give a stored block a page in the core (pinned, in CORE); return the page's tokens."""
        page = make_page_id(PageKind.BLOCK, max((page_serial(p) for p in self.pages.values()), default=0) + 1)
        text = render_block(block)
        tokens = self._counter.count(text)
        self._ctx.add(page, tokens, Region.CORE, pinned=True)
        self.pages[block.label] = page
        self.texts[page] = text
        return tokens

    def render(self) -> str | None:
        """The core memory message, or None with no blocks."""
        return render_core(self.texts.values()) if self.texts else None

    def get(self, label: str) -> Block:
        """The stored block (NotFoundError if none)."""
        return self._blocks.get(label)

    def labels(self) -> list[str]:
        """Block labels, in creation order."""
        return self._blocks.labels()

    def edit(self, label: str, value: str) -> Block:
        """Set a block's value as the agent does, all or nothing (BudgetError, ReadOnlyBlockError,
        BlockLimitError, NotFoundError leave everything as it was)."""
        block = self._blocks.get(label)
        page = self.pages[label]
        text = render_block(Block(label, value, block.limit, block.description, block.read_only))
        old = self._ctx.info(page).tokens
        self._ctx.resize(page, self._counter.count(text))
        try:
            with self._blocks.as_owner():
                block = self._blocks.set(label, value)
        except BaseException:
            self._ctx.resize(page, old)
            raise
        self.texts[page] = text
        self._trace.write({"e": "block", "label": label, "value": value})
        return block

    def add(self, label: str, value: str, *, limit: int, description: str, read_only: bool) -> Block:
        """Create a block and its page (BudgetError if it does not fit; the caller's transaction
        undoes the store's write then)."""
        with self._blocks.as_owner():
            block = self._blocks.create(label, value, limit=limit, description=description, read_only=read_only)
        self.register(block)
        self._trace.write({"e": "block_added", "label": label})
        return block

    def update(self, label: str, **fields: object) -> Block:
        """Change any field of a block as a developer does (read-only does not apply), re-accounting it."""
        page = self.pages[label]
        with self._blocks.as_owner():
            block = self._blocks.update(label, **fields)  # type: ignore[arg-type]
        text = render_block(block)
        self._ctx.resize(page, self._counter.count(text))
        self.texts[page] = text
        self._trace.write({"e": "block_updated", "label": label})
        return block

    def delete(self, label: str) -> None:
        """Remove a block and its page."""
        with self._blocks.as_owner():
            self._blocks.delete(label)
        page = self.pages.pop(label)
        self._ctx.remove(page)
        self.texts.pop(page, None)
        self._trace.write({"e": "block_deleted", "label": label})

    # ------------------------------------------------------------ transactions (a Participant)

    def mark(self, level: int) -> dict[int, str]:
        return dict(self.texts)

    def restore(self, mark: dict[int, str]) -> None:
        self.texts = mark

    def commit(self) -> None:
        pass
