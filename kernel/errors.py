"""The kernel's exceptions.

Every error vmem raises is a :class:`vmem.VmemError`; the kernel's own are::

    VmemError
    └── KernelError              the kernel refused or could not finish; the memory is as it was
        ├── ContextWindowError   what must stay in the context window does not fit in it
        ├── ReadOnlyError        the memory was opened read-only (for inspection)
        ├── BusyError            a step or transaction is already running on this memory
        └── MessageError         a message that breaks the chat protocol (also a ValueError)

Driver failures are :class:`vmem.kernel.drivers.DriverError` (also a VmemError); storage failures
are :class:`vmem.storage.VmemStorageError`. A memory function's failure is not an exception
to the caller: it is answered to the LLM as a function error (see :mod:`vmem.kernel.functions`).
"""

from __future__ import annotations

from vmem.errors import VmemError

__all__ = ["BusyError", "ContextWindowError", "KernelError", "MessageError", "ReadOnlyError"]


class KernelError(VmemError):
    """The kernel refused an operation or could not finish it; the memory is as it was before."""


class ContextWindowError(KernelError):
    """What must stay in the context window (system, core memory, pinned and recent messages) does not fit."""


class ReadOnlyError(KernelError):
    """The memory was opened read-only: it can be read and searched, not changed."""


class BusyError(KernelError):
    """Another step or transaction is running on this memory (one at a time: it is not thread-safe)."""


class MessageError(KernelError, ValueError):
    """A message breaks the chat protocol (a tool result without its call, an unknown role, ...)."""
