"""The walk over hnswlib's saved upper-level link lists, in C (``csrc/hnswlinks.c``).

Interface::

    levels, offsets = walk(sizes, count, per_level, maxlevel)
        # each element's top level (int32, count) and the byte offset of each non-empty list
        # (uint64, in element order); LinkListError(kind, element) when the bytes are not such lists
"""

from __future__ import annotations

import numpy as np

from vmem._vmcore import ffi, lib

__all__ = ["LinkListError", "walk"]


class LinkListError(ValueError):
    """``sizes`` is not ``count`` link lists: ``kind`` is "truncated", "size" or "trailing", at
    ``element`` (``count`` for trailing bytes)."""

    def __init__(self, kind: str, element: int) -> None:
        super().__init__(f"{kind} at element {element}")
        self.kind = kind
        self.element = element


_KINDS = {lib.HL_ETRUNC: "truncated", lib.HL_ESIZE: "size", lib.HL_ETRAIL: "trailing"}


def walk(sizes: bytes, count: int, per_level: int, maxlevel: int) -> tuple[np.ndarray, np.ndarray]:
    """Each element's top level and the offset (just past its size field) of each non-empty list."""
    if per_level <= 0 or count < 0:
        raise ValueError("walk: per_level must be positive and count not negative")
    levels = np.zeros(count, dtype=np.int32)
    offsets = np.zeros(count, dtype=np.uint64)
    n_upper = ffi.new("size_t *")
    where = ffi.new("size_t *")
    rc = lib.hl_walk(ffi.from_buffer("uint8_t[]", sizes), len(sizes), count, per_level, maxlevel,
                     ffi.from_buffer("int32_t[]", levels), ffi.from_buffer("uint64_t[]", offsets), n_upper, where)
    if rc:
        raise LinkListError(_KINDS[rc], int(where[0]))
    return levels, offsets[: n_upper[0]]
