"""Core memory: the labelled blocks that are always in the context, one pinned page each.

The store (:class:`vmem.storage.Blocks`) is the truth for a block's value, limit and
flags and enforces them; this keeps each block's rendered text beside its page in the
core, so an edit re-accounts its tokens in the same breath: the core checks the new size
against the budget first, then the store applies its rules, and a refusal by either
changes nothing.

A block may be *shared* (:mod:`vmem.kernel.shared_blocks`): its text lives in a shared
store, the agent's own store keeps a placeholder row (label, limit, flags; no text), and
every read and edit of it goes through :class:`~vmem.kernel.shared_blocks.SharedBlocks`.
Edits are :class:`~vmem.storage.block_edit.BlockEdit` s so that they keep their meaning
when another agent edited the block first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from vmem import PageKind, PagedContext, Region, make_page_id, page_serial
from vmem.kernel.context import render_block, render_core
from vmem.kernel.persistence import MemoryState
from vmem.kernel.shared_blocks import SharedBlocks
from vmem.kernel.tokens import TokenCounter
from vmem.kernel.trace import Trace
from vmem.storage import Block, Blocks
from vmem.storage.block_edit import BlockEdit

__all__ = ["CoreMemory"]


class CoreMemory:
    """The core memory blocks as pages: ``pages`` maps labels to page ids (``MemoryState.block_pages``),
    ``texts`` pages to their rendered text."""

    __slots__ = ("_ctx", "_blocks", "_counter", "_trace", "_state", "_room", "shared", "texts")

    def __init__(self, ctx: PagedContext, blocks: Blocks, counter: TokenCounter, trace: Trace,
                 state: MemoryState, shared: SharedBlocks, room: Callable[[], int]) -> None:
        self._ctx = ctx
        self._blocks = blocks
        self._counter = counter
        self._trace = trace
        self._state = state
        self.shared = shared  #: the blocks that live in a shared store
        self._room = room  # tokens the pinned pages may still grow by, leaving a step its queue
        self.texts: dict[int, str] = {}

    @property
    def pages(self) -> dict[str, int]:
        """Block label -> page id, in creation order."""
        return self._state.block_pages

    def all(self) -> list[Block]:
        """Every block as the context shows it (a shared block's text from its store), in order."""
        shared = self.shared
        return [shared.view(b.label) if shared.is_shared(b.label) else b for b in self._blocks.all()]

    def load(self, changed: Iterable[str] = ()) -> None:
        """Render every stored block (at open); the shared blocks in ``changed`` (another agent
        edited them while this memory was closed) are fitted to the window again."""
        fresh = set(changed)
        self.texts = {self.pages[b.label]: self._render(b, fresh=b.label in fresh) for b in self.all()}

    def _render(self, block: Block, *, fresh: bool) -> str:
        """A block's text in the context. A shared block another agent grew past what this
        window's core can hold is shown cut, saying so (the next step can always run); how much
        is shown is decided when its new value arrives (``fresh``) and kept with the reference,
        so a reopened memory shows exactly what it showed."""
        if not self.shared.is_shared(block.label):
            return render_block(block)
        ref = self._state.shared[block.label]
        if fresh:
            del ref[3:]
            ref.append(self._fit(block))
        shown = ref[3] if len(ref) > 3 else None
        if shown is None or shown >= len(block.value):
            return render_block(block)
        note = f"\n[{len(block.value) - shown} more characters of this shared block do not fit this context]"
        return render_block(Block(block.label, block.value[:shown] + note, block.limit, block.description,
                                  block.read_only))

    def _fit(self, block: Block) -> int | None:
        """How many characters of a shared block's value to show (None: all): at most half of what
        the pinned pages could still take, the rest staying the queue's, so that one answer's
        group, the user's turn and an alert fit beside it (an own block's edit is refused past
        MIN_QUEUE instead; another agent's edit cannot be refused here)."""
        page = self.pages.get(block.label)
        room = (self._room() + (self._ctx.info(page).tokens if page is not None else 0)) // 2
        if self._counter.count(render_block(block)) <= room:
            return None
        value = block.value
        while value and self._counter.count(render_block(Block(block.label, value, block.limit))) > room - 40:
            value = value[: len(value) // 2]
        return len(value)

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
        """The block as the context shows it (NotFoundError if none)."""
        if self.shared.is_shared(label):
            return self.shared.view(label)
        return self._blocks.get(label)

    def labels(self) -> list[str]:
        """Block labels, in creation order."""
        return self._blocks.labels()

    def apply(self, label: str, edit: BlockEdit) -> Block:
        """Edit a block as the agent does, all or nothing (EditConflictError, BudgetError,
        ReadOnlyBlockError, BlockLimitError, NotFoundError leave everything as it was)."""
        if not self.shared.is_shared(label):
            block = self._blocks.get(label)
            return self.edit(label, edit.apply(block.value, label=f"block {label!r}"))
        page = self.pages[label]
        old = self._ctx.info(page).tokens
        before = list(self._state.shared_edits)
        block = self.shared.edit(label, edit)
        del self._state.shared[label][3:]  # shown whole: the caller checks the room (_keeping_room)
        text = render_block(block)
        try:
            self._ctx.resize(page, self._counter.count(text))
        except BaseException:
            self._state.shared_edits = before
            self._ctx.resize(page, old)
            raise
        self.texts[page] = text
        location, name = self.shared.location(label)
        self._trace.write({"e": "block", "label": label, "value": block.value, "shared": name})
        return block

    def edit(self, label: str, value: str) -> Block:
        """Set a block's value as the agent does, all or nothing (BudgetError, ReadOnlyBlockError,
        BlockLimitError, NotFoundError leave everything as it was). A shared block is rewritten
        only if no other agent changed it since this memory read it (EditConflictError)."""
        if self.shared.is_shared(label):
            return self.apply(label, BlockEdit.rewrite(value, base=self.shared.view(label).value))
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

    def attach(self, label: str, location: str, name: str) -> Block:
        """Make ``label`` the shared block ``name`` of the store at ``location``: a placeholder
        row in this agent's blocks and a page showing the shared text (BudgetError if it does
        not fit; the caller's transaction undoes the rest then)."""
        shared = self.shared.attach(label, location, name)
        with self._blocks.as_owner():
            self._blocks.create(label, "", limit=shared.limit, description=shared.description,
                                read_only=shared.read_only)
        block = self.shared.view(label)
        self.register(block)
        self._trace.write({"e": "block_attached", "label": label, "shared": name})
        return block

    def refresh(self, changed: list[tuple[str, Block, str]], agent: str) -> None:
        """Show the shared blocks other agents changed (from :meth:`SharedBlocks.sync`)."""
        for label, block, by in changed:
            page = self.pages.get(label)
            if page is None:
                continue
            text = self._render(block, fresh=True)
            self._ctx.resize(page, self._counter.count(text))
            self.texts[page] = text
            if by != agent:
                self._trace.write({"e": "block", "label": label, "value": block.value, "by": by})

    def update(self, label: str, **fields: object) -> Block:
        """Change any field of a block as a developer does (read-only does not apply), re-accounting it.
        Of a shared block only the value (an unconditional rewrite; the other fields are the shared store's)."""
        page = self.pages[label]
        if self.shared.is_shared(label):
            if any(v is not None for k, v in fields.items() if k != "value"):
                raise ValueError(f"block {label!r} is shared: its limit, description and read-only flag "
                                 f"are set in its shared store")
            if fields.get("value") is None:
                return self.shared.view(label)
            return self.apply(label, BlockEdit.rewrite(str(fields["value"])))
        with self._blocks.as_owner():
            block = self._blocks.update(label, **fields)  # type: ignore[arg-type]
        text = render_block(block)
        self._ctx.resize(page, self._counter.count(text))
        self.texts[page] = text
        self._trace.write({"e": "block_updated", "label": label})
        return block

    def delete(self, label: str) -> None:
        """Remove a block and its page (a shared block is detached: it stays in its store)."""
        if self.shared.is_shared(label):
            self.shared.detach(label)
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
