"""How the SQLite store keeps an embedding: the unit vector as little-endian float16.

Interface::

    blob = encode(vec)                 # (dim,) floats -> 2 * dim bytes
    blobs = encode_many(vecs)          # (n, dim) -> n blobs (normalise=False: as they are)
    vecs = decode_many(blobs, dim)     # n blobs -> (n, dim) float32 (what the index holds)
    halves = decode_halves(blobs, dim) # n blobs -> (n, dim) float16, as stored (the index widens them)
    rounded(vecs)                      # (n, dim) float32: what decode_many(encode_many(vecs)) gives

Why float16: the stores search by cosine similarity, so a vector's direction is all that
counts, and a unit vector's components lie in [-1, 1], where float16 keeps 11 significant bits
(an error of at most 2**-12 relative to each component, ~1e-4 in a cosine): half the bytes of
float32 for a ranking that does not move (bench/bench_footprint.py measures the HNSW recall and
``vmem eval locomo`` the retrieval, before and after). Vectors are normalised before rounding,
so no component can overflow float16 whatever scale an embedder returns.

The vector index is fed :func:`rounded` vectors (the decoded form of what was stored), so an
index rebuilt or reloaded from the database holds exactly the vectors the live one held.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vmem._half import widen
from vmem.storage.errors import CorruptStoreError

__all__ = ["DTYPE", "decode_halves", "decode_many", "encode", "encode_many", "rounded"]

#: The stored element type.
DTYPE = np.dtype("<f2")


def _unit(vecs: np.ndarray) -> np.ndarray:
    v = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def rounded(vecs: np.ndarray) -> np.ndarray:
    """``vecs`` (one or many rows) as they come back from the store: normalised, rounded to
    float16, widened to float32 (C-contiguous)."""
    return np.ascontiguousarray(_unit(vecs).astype(DTYPE).astype(np.float32))


def encode(vec: np.ndarray) -> bytes:
    """One vector's stored form."""
    return _unit(np.asarray(vec, dtype=np.float32).reshape(-1)).astype(DTYPE).tobytes()


def encode_many(vecs: np.ndarray, *, normalise: bool = True) -> list[bytes]:
    """Each row's stored form. ``normalise=False`` rounds the rows as they are: for vectors that
    are unit already and must come back bit for bit (a copy of decoded vectors between stores)."""
    half = (_unit(vecs) if normalise else np.asarray(vecs, dtype=np.float32)).astype(DTYPE)
    return [row.tobytes() for row in half]


def decode_many(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stored blobs back to an ``(n, dim)`` float32 array; CorruptStoreError for a blob that is
    not ``dim`` float16 values."""
    return widen(decode_halves(blobs, dim))


def decode_halves(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    """Stored blobs as the ``(n, dim)`` float16 array they hold; CorruptStoreError for a blob that
    is not ``dim`` float16 values."""
    want = 2 * dim
    if set(map(type, blobs)) - {bytes} or set(map(len, blobs)) - {want}:
        for b in blobs:
            if not isinstance(b, bytes) or len(b) != want:
                got = f"{len(b)} bytes" if isinstance(b, bytes) else type(b).__name__
                raise CorruptStoreError(f"a stored embedding is {got}, not {dim} float16 values ({want} bytes)")
    if not blobs:
        return np.zeros((0, dim), dtype=DTYPE)
    return np.frombuffer(b"".join(blobs), dtype=DTYPE).reshape(len(blobs), dim)
