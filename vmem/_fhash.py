"""Keyed BLAKE2b-64 of many strings in one C call (``csrc/fhash.c``).

One of the few modules that touch the ffi (``vmem._core`` lists them). The
digests equal ``hashlib.blake2b(s, digest_size=8, key=key).digest()`` read as
little-endian integers (tests/test_embed_hash.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vmem._vmcore import ffi, lib

__all__ = ["blake2b64_many"]


def blake2b64_many(key: bytes, items: Sequence[str]) -> np.ndarray:
    """The keyed BLAKE2b-64 digest of each string (UTF-8, surrogates passed) as uint64."""
    if not 1 <= len(key) <= 64:
        raise ValueError("blake2b64_many: key must be 1..64 bytes")
    parts = [s.encode("utf-8", "surrogatepass") for s in items]
    offsets = np.zeros(len(parts) + 1, dtype=np.uint64)
    np.cumsum([len(p) for p in parts], out=offsets[1:])
    out = np.empty(len(parts), dtype=np.uint64)
    data = b"".join(parts)
    lib.fh_blake2b64_many(key, len(key), data, ffi.from_buffer("uint64_t[]", offsets), len(parts),
                          ffi.from_buffer("uint64_t[]", out))
    return out
