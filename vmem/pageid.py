"""Page ids: one 64-bit space shared by every tier.

A page id carries its kind in the top byte and a per-kind serial number (for
stored pages, the SQLite rowid) in the low 56 bits, so an id found by any
search can be told apart and fetched from the right store without a lookup::

    id = kind << 56 | serial        0 < serial < 2**56

The C core treats ids as opaque 64-bit integers; only Python reads the kind.
"""

from __future__ import annotations

import enum

__all__ = ["PageKind", "make_page_id", "page_kind", "page_serial"]

_SHIFT = 56
_SERIAL_MASK = (1 << _SHIFT) - 1


class PageKind(enum.IntEnum):
    """What a page holds."""

    MESSAGE = 1  #: a message of the conversation (recall storage)
    PASSAGE = 2  #: an archival passage (archival storage)
    BLOCK = 3  #: a core memory block
    SUMMARY = 4  #: the recursive summary
    SYSTEM = 5  #: system instructions, memory statistics and alerts


def make_page_id(kind: PageKind | int, serial: int) -> int:
    """Return the page id of the ``serial``-th page of ``kind``."""
    kind = PageKind(kind)
    if not 0 < serial <= _SERIAL_MASK:
        raise ValueError(f"page serial must be in 1..2**56-1, got {serial}")
    return (int(kind) << _SHIFT) | serial


def page_kind(page_id: int) -> PageKind:
    """Return the kind of ``page_id`` (ValueError if it names none)."""
    try:
        return PageKind(page_id >> _SHIFT)
    except ValueError:
        raise ValueError(f"page id {page_id:#x} has no known kind") from None


def page_serial(page_id: int) -> int:
    """Return the per-kind serial number of ``page_id``."""
    return page_id & _SERIAL_MASK
