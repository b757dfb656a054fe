"""The C float16 widening (csrc/half.c) and the upper-level link walk (csrc/hnswlinks.c),
each against its reference: numpy's astype, hnswlib's own stored vectors, the Python walk."""

from __future__ import annotations

import struct

import hnswlib
import numpy as np
import pytest

from vmem._half import unit_rows, widen, widen_rows
from vmem._hnswlinks import LinkListError, walk


def test_every_float16_value_widens_bit_for_bit_as_numpy_does() -> None:
    every = np.arange(1 << 16, dtype=np.uint16)  # zeros, subnormals, normals, infinities, NaN payloads
    want = every.view(np.float16).astype(np.float32).view(np.uint32)
    assert np.array_equal(widen(every.view(np.float16)).view(np.uint32), want)
    assert widen(np.zeros((0, 4), np.float16)).shape == (0, 4)


def _hnswlib_stored(vecs: np.ndarray) -> np.ndarray:
    """What hnswlib keeps for ``vecs`` in the cosine space (its normalize_vector)."""
    index = hnswlib.Index(space="cosine", dim=vecs.shape[1])
    index.init_index(len(vecs))
    index.add_items(vecs, np.arange(len(vecs)))
    return np.asarray(index.get_items(np.arange(len(vecs))), dtype=np.float32)


@pytest.mark.parametrize("dim", [1, 7, 384])
def test_rows_widened_into_place_and_scaled_are_what_hnswlib_stores(dim: int) -> None:
    rng = np.random.default_rng(dim)
    halves = (rng.standard_normal((300, dim)) * rng.uniform(0.01, 50, (300, 1))).astype(np.float16)
    wide = halves.astype(np.float32)
    stored = _hnswlib_stored(wide)
    layout = np.full((300, 3 + dim + 2), 7.0, dtype=np.float32)  # rows apart, as in hnswlib's elements
    widen_rows(halves, layout[:, 3:3 + dim])
    assert np.array_equal(layout[:, 3:3 + dim].view(np.uint32), wide.view(np.uint32))
    widen_rows(halves, layout[:, 3:3 + dim], unit=True)
    assert np.array_equal(layout[:, 3:3 + dim].view(np.uint32), stored.view(np.uint32))
    assert (layout[:, :3] == 7).all() and (layout[:, 3 + dim:] == 7).all()  # nothing written beside the rows
    again = wide.copy()
    unit_rows(again)
    assert np.array_equal(again.view(np.uint32), stored.view(np.uint32))


def test_bad_rows_are_refused_before_any_write() -> None:
    halves = np.ones((2, 4), np.float16)
    with pytest.raises(TypeError, match="float16"):
        widen(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="rows"):
        widen_rows(halves, np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        widen_rows(halves, np.zeros((2, 8), np.float32)[:, ::2])
    frozen = np.zeros((2, 4), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        unit_rows(frozen)
    odd = np.zeros(2 * 4 * 4 + 1, np.uint8)[1:].view(np.float32).reshape(2, 4)  # 1 byte off alignment
    with pytest.raises(ValueError, match="aligned"):
        unit_rows(odd)


def _walk_reference(sizes: bytes, count: int, per_level: int, maxlevel: int) -> tuple[list[int], list[int]]:
    """The loop hnsw_file.check_graph ran in Python before the walk moved to C."""
    levels, offsets, pos = [0] * count, [], 0
    for i in range(count):
        if pos + 4 > len(sizes):
            raise LinkListError("truncated", i)
        (n,) = struct.unpack_from("<I", sizes, pos)
        pos += 4
        if n:
            if n % per_level or n // per_level > maxlevel or pos + n > len(sizes):
                raise LinkListError("size", i)
            levels[i] = n // per_level
            offsets.append(pos)
            pos += n
    if pos != len(sizes):
        raise LinkListError("trailing", count)
    return levels, offsets


def _outcome(f, *args):  # noqa: ANN001, ANN202
    try:
        levels, offsets = f(*args)
        return [int(x) for x in levels], [int(x) for x in offsets]
    except LinkListError as e:
        return e.kind, e.element


def test_the_link_walk_agrees_with_the_python_walk_on_valid_and_damaged_lists() -> None:
    rng = np.random.default_rng(0)
    per_level = 20
    for trial in range(400):
        count = int(rng.integers(0, 40))
        maxlevel = int(rng.integers(-1, 4)) if count else -1
        parts = []
        for _ in range(count):
            lv = int(rng.integers(0, max(maxlevel, 0) + 1)) if rng.random() < 0.3 else 0
            parts.append(struct.pack("<I", lv * per_level) + bytes(rng.integers(0, 256, lv * per_level, dtype=np.uint8)))
        sizes = b"".join(parts)
        if trial % 2 and sizes:  # damage: a byte flipped, the end cut, or bytes added
            b = bytearray(sizes)
            what = trial % 3
            if what == 0:
                b[int(rng.integers(0, len(b)))] ^= 1 << int(rng.integers(0, 8))
            elif what == 1:
                del b[int(rng.integers(0, len(b))):]
            else:
                b += bytes(int(rng.integers(1, 6)))
            sizes = bytes(b)
        args = (sizes, count, per_level, maxlevel)
        assert _outcome(walk, *args) == _outcome(_walk_reference, *args), (trial, args)
