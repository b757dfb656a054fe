"""Exceptions raised by vmem.

The tree::

    VmemError
     ├── CoreError                 the C core refused an operation (state unchanged)
     │    ├── PageNotFound         no page with that id            (also a KeyError)
     │    ├── PageExists           a page with that id exists already
     │    ├── InvalidArgument      an argument is out of range     (also a ValueError)
     │    ├── EvictionError        eviction cannot free what was asked
     │    ├── BudgetError          the budget cannot hold what must stay resident
     │    ├── CorruptSnapshot      a core snapshot is malformed or damaged
     │    └── InvariantError       vm_check found a broken invariant (a bug: please report)
     ├── EmbedderError             vmem.embed: an embedder cannot produce vectors
     ├── IndexFormatError          vmem.index: not a page index file, or a damaged one
     ├── IndexMismatchError        vmem.index: an index of another dimension or embedder
     ├── VmemStorageError          vmem.storage: a store cannot be opened or written (tree there)
     └── DriverError               kernel.drivers: an LLM driver got no completion (tree there)

Every error from the C core leaves the core exactly as it was.
"""

from __future__ import annotations

__all__ = [
    "VmemError",
    "CoreError",
    "PageNotFound",
    "PageExists",
    "InvalidArgument",
    "EvictionError",
    "BudgetError",
    "CorruptSnapshot",
    "InvariantError",
]


class VmemError(Exception):
    """Base class of every error vmem raises on purpose."""


class CoreError(VmemError):
    """The C core refused an operation; its state is unchanged."""


class PageNotFound(CoreError, KeyError):
    """No page has the given id."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class PageExists(CoreError):
    """A page with the given id is registered already."""


class InvalidArgument(CoreError, ValueError):
    """An argument is out of range (token count, region, flags, configuration...)."""


class EvictionError(CoreError):
    """Eviction cannot free the tokens asked for: the rest is pinned or protected.

    ``freeable`` is the most that eviction could free.
    """

    def __init__(self, message: str, freeable: int = 0) -> None:
        super().__init__(message)
        self.freeable = freeable


class BudgetError(CoreError):
    """The token budget cannot hold what must stay resident (pinned pages, working set)."""


class CorruptSnapshot(CoreError):
    """A core snapshot is not one, is damaged, or is from an unknown version."""


class InvariantError(CoreError):
    """The core's invariant checker found a broken invariant. This is a bug in vmem."""
