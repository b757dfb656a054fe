"""float16 vectors widened to float32 in C (``csrc/half.c``).

numpy widens float16 one value at a time on CPUs without a float16 unit; a store's open widens
every stored embedding (vmem/storage/vecblob.py keeps them as float16). Results are bit for bit
numpy's ``astype(np.float32)`` (tests/test_half.py, all 65,536 values).

Interface::

    widen(halves)                          # float16 array (any shape) -> float32 array, same shape
    widen_rows(halves, out, unit=False)    # (n, dim) float16 into an (n, dim) float32 view whose rows
                                           # may lie apart (unit: each row scaled as hnswlib does)
    unit_rows(rows)                        # scale float32 rows (such a view too) to unit length, in place
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vmem._vmcore import ffi, lib

__all__ = ["unit_rows", "widen", "widen_rows"]


def _halves(halves: np.ndarray) -> np.ndarray:
    h = np.ascontiguousarray(halves)
    if h.dtype not in (np.float16, np.uint16) or h.dtype.byteorder == ">":
        raise TypeError(f"widen: expected little-endian float16 values, got {h.dtype}")
    return h.view(np.uint16)


def widen(halves: np.ndarray) -> np.ndarray:
    """``halves`` (float16, any shape) as a new float32 array."""
    h = _halves(halves)
    out = np.empty(h.shape, dtype=np.float32)
    if h.size:
        lib.hf_to_f32(ffi.from_buffer("uint16_t[]", h), ffi.from_buffer("uint32_t[]", out), h.size)
    return out


def widen_rows(halves: np.ndarray, out: np.ndarray, *, unit: bool = False) -> None:
    """Write the rows of ``halves`` ((n, dim) float16) into ``out``, an (n, dim) float32 array or a
    view of one whose rows are any whole number of 4-byte words apart (hnswlib's element layout).
    ``unit``: scale each row to unit length as hnswlib's ``normalize_vector`` does (bit for bit)."""
    h = _halves(halves)
    if h.ndim != 2 or out.shape != h.shape or out.dtype != np.float32:
        raise ValueError(f"widen_rows: rows {h.shape} float16 into {out.shape} {out.dtype}")
    _rows_call(out, lambda base, n, dim, stride: lib.hf_rows_to_f32(ffi.from_buffer("uint16_t[]", h), n, dim, base,
                                                                    stride, int(unit)))


def unit_rows(rows: np.ndarray) -> None:
    """Scale each row of ``rows`` ((n, dim) float32, rows any whole number of 4-byte words apart)
    to unit length in place, as hnswlib's ``normalize_vector`` does (bit for bit)."""
    if rows.ndim != 2 or rows.dtype != np.float32:
        raise ValueError(f"unit_rows: expected (n, dim) float32 rows, got {rows.shape} {rows.dtype}")
    _rows_call(rows, lib.hf_unit_rows)


def _rows_call(out: np.ndarray, call: Callable[[Any, int, int, int], None]) -> None:
    n, dim = out.shape
    if not n or not dim:
        return
    stride, step = out.strides
    if step != 4 or stride < 4 * dim or stride % 4:
        raise ValueError(f"the rows must be contiguous float32 values, 4-byte aligned and apart, not {out.strides}")
    base = out.__array_interface__["data"][0]  # the first row; the C loop visits n rows, stride bytes apart
    if not out.flags.writeable or base % 4:
        raise ValueError("the rows must be writable and 4-byte aligned")
    call(ffi.cast("uint8_t *", base), n, dim, stride)
