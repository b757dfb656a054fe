"""The message queue: the FIFO of recent messages, as chat dicts in the core's order.

The C core owns the queue's order and accounting; this keeps, beside it, each queued
message as the chat dict the context shows and its digest (both made once, when the
message is appended), and the list of them in the core's order, so compiling the queue
is a list copy. Appends extend the list; a flush rebuilds it from the core.

Transactions (it is a :class:`vmem.kernel.transaction.Participant`): a transaction starts a
journal of appends and drops; :meth:`restore` undoes it back to a mark (a savepoint's, or
the transaction's start), then takes the order from the restored core.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vmem import PagedContext, Region
from vmem.kernel.context import message_digest

__all__ = ["MessageQueue"]


class MessageQueue:
    """Chat dicts and digests of the queued messages, in the core's order."""

    __slots__ = ("_ctx", "_chat", "_digest", "messages", "digests", "_journal", "version")

    def __init__(self, ctx: PagedContext) -> None:
        self._ctx = ctx
        self._chat: dict[int, dict[str, Any]] = {}
        self._digest: dict[int, bytes] = {}
        self.messages: list[dict[str, Any]] = []  #: the queue as chat messages, oldest first
        self.digests: list[bytes] = []  #: their digests
        # what the running transaction did, to undo it: (page, None) appended, (page, (chat, digest)) dropped
        self._journal: list[tuple[int, tuple[dict[str, Any], bytes] | None]] | None = None
        self.version = 0  #: changes when the lists are rebuilt (not when a message is appended)

    def __len__(self) -> int:
        return len(self.messages)

    def __contains__(self, page: object) -> bool:
        return page in self._chat

    def pages(self) -> list[int]:
        """Pages held (any order)."""
        return list(self._chat)

    def chat(self, page: int) -> dict[str, Any]:
        """The chat message of a queued page."""
        return self._chat[page]

    def digest(self, page: int) -> bytes:
        """The digest of a queued page's chat message."""
        return self._digest[page]

    def append(self, page: int, chat: dict[str, Any]) -> None:
        """Add a message at the tail (the core appended its page)."""
        self._chat[page] = chat
        digest = self._digest[page] = message_digest(chat)
        self.messages.append(chat)
        self.digests.append(digest)
        if self._journal is not None:
            self._journal.append((page, None))

    def drop(self, pages: Iterable[int], order: Sequence[int]) -> None:
        """Forget ``pages`` (the core removed them) and take the core's new ``order``."""
        for page in pages:
            entry = self._chat.pop(page), self._digest.pop(page)
            if self._journal is not None:
                self._journal.append((page, entry))
        self.reorder(order)

    def reorder(self, order: Sequence[int]) -> None:
        """Rebuild the lists in the core's ``order``."""
        self.messages = list(map(self._chat.__getitem__, order))
        self.digests = list(map(self._digest.__getitem__, order))
        self.version += 1

    # ------------------------------------------------------------ transactions (a Participant)

    def mark(self, level: int) -> int:
        """A point to roll back to; a transaction (level 0) starts the journal."""
        if level == 0:
            self._journal = []
        return len(self._journal) if self._journal is not None else 0

    def restore(self, mark: int) -> None:
        """Undo the appends and drops since ``mark``, then take the (restored) core's order."""
        journal = self._journal or []
        for page, entry in reversed(journal[mark:]):
            if entry is None:
                del self._chat[page], self._digest[page]
            else:
                self._chat[page], self._digest[page] = entry
        del journal[mark:]
        if mark == 0:
            self._journal = None
        self.reorder(self._ctx.pages(Region.QUEUE).tolist())

    def commit(self) -> None:
        """Stop journaling (the transaction committed)."""
        self._journal = None
