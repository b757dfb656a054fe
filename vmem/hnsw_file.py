"""hnswlib's graph file: its layout, without the vectors and back, and checked before hnswlib reads it.

The index file (:mod:`vmem.index`) keeps an HNSW graph as hnswlib saves it, or, for a store that
keeps the vectors in its database, the same file with the live elements' vectors left out
(:func:`slim_graph`); :func:`full_graph` puts given vectors back in place. hnswlib trusts its
file (and its unpickled state): a size, offset or count that does not match the bytes crashes the
process, so :func:`check_graph` validates every one of them against the bytes' length and the
index's parameters first (IndexFormatError on any mismatch; the caller rebuilds), and returns the
layout it read, from which :meth:`Graph.hnswlib_state` builds what hnswlib's ``__setstate__``
takes: the load hands the graph over in memory, with no file for hnswlib to read back.

Interface::

    parts = slim_graph(path, dim)                       # header, level-0 links, upper levels (bytes)
    head, level0, upper = full_graph(raw, dim=..., M=..., count=..., space=..., vectors=...)
    graph = check_graph(head, level0, upper, dim=..., M=..., labels=..., live=...)
    index = hnswlib.Index.__new__(hnswlib.Index); index.__setstate__((graph.hnswlib_state(...),))
    check_hnsw(path, size, dim=..., M=..., labels=..., live=...)   # the same checks on a file
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vmem._half import unit_rows, widen, widen_rows
from vmem._hnswlinks import LinkListError, walk
from vmem.errors import VmemError

__all__ = ["HNSW_HEADER", "Graph", "IndexFormatError", "IndexMismatchError", "VectorSource", "check_graph",
           "check_hnsw", "full_graph", "slim_graph"]

#: Where load() gets the vectors of live pages a file does not hold: ids -> (n, dim) float16 or float32.
VectorSource = Callable[[np.ndarray], np.ndarray]


class IndexFormatError(VmemError, ValueError):
    """The file is not a vmem index, or it is truncated or corrupt (raised by :mod:`vmem.index`
    for its own header and payload, here for hnswlib's graph in it)."""


class IndexMismatchError(VmemError, ValueError):
    """The index file is valid but does not match what the caller expects (its dimension, its
    embedder, or the vectors a caller gives back for a graph saved without them)."""

# hnswlib's saveIndex header (hnswalg.h), little-endian: offsetLevel0_, max_elements_, cur_element_count,
# size_data_per_element_, label_offset_, offsetData_ (size_t); maxlevel_ (int); enterpoint_node_ (u32);
# maxM_, maxM0_, M_ (size_t); mult_ (double); ef_construction_ (size_t)
HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")


def slim_graph(path: str, dim: int) -> list[bytes]:
    """hnswlib's saved graph at ``path`` without the live elements' vectors: its header, each
    element's level-0 links and label, the vectors of the elements marked deleted (the graph
    still walks through them, and no one else keeps them), then the upper levels' link lists."""
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    head = bytes(mm[:HNSW_HEADER.size])
    (_off0, _max_el, count, per_el, label_off, data_off, *_rest) = HNSW_HEADER.unpack(head)
    end = HNSW_HEADER.size + count * per_el
    level0 = mm[HNSW_HEADER.size:end].reshape(count, per_el)
    deleted = (level0[:, 2] & 1) != 0
    links = np.hstack([level0[:, :data_off], level0[:, label_off:per_el]])
    kept = level0[deleted][:, data_off:label_off]
    out = [head, links.tobytes(), kept.tobytes(), bytes(mm[end:])]
    del mm, level0
    return out


def full_graph(raw: bytes, *, dim: int, M: int, count: int, space: str,
                vectors: VectorSource) -> list[bytes | memoryview]:
    """The inverse of :func:`slim_graph`: hnswlib's file layout again, the live elements'
    vectors asked of ``vectors`` (by label, in element order: float16, the stored form, or float32)
    and scaled to unit length as hnswlib does in the cosine space (bit for bit, so a loaded graph
    holds the vectors hnswlib stored when they were added). What this cannot place (sizes that
    disagree) is an IndexFormatError; the result is checked by :func:`check_hnsw` like any graph file."""
    def bad(why: str) -> IndexFormatError:
        return IndexFormatError(f"index payload: the HNSW graph {why}")

    if len(raw) < HNSW_HEADER.size:
        raise bad("is truncated")
    head = raw[:HNSW_HEADER.size]
    (_off0, _max_el, n, per_el, label_off, data_off, _maxlevel, _enter, max_m, max_m0, m, _mult,
     _efc) = HNSW_HEADER.unpack(head)
    if (n != count or m != M or max_m0 != 2 * M or data_off != max_m0 * 4 + 4 or label_off != data_off + 4 * dim
            or per_el != label_off + 8):
        raise bad("header does not match the index's parameters")
    slim = data_off + 8
    end = HNSW_HEADER.size + count * slim
    if end > len(raw):
        raise bad("is shorter than its elements")
    level0 = np.frombuffer(raw, dtype=np.uint8, count=count * slim, offset=HNSW_HEADER.size).reshape(count, slim)
    deleted = (level0[:, 2] & 1) != 0
    n_del = int(deleted.sum())
    vend = end + n_del * 4 * dim
    if vend > len(raw):
        raise bad("is shorter than its deleted elements' vectors")
    labels = np.ascontiguousarray(level0[:, data_off:]).view("<u8").ravel()
    full = np.empty((count, per_el), dtype=np.uint8)
    full[:, :data_off] = level0[:, :data_off]
    full[:, label_off:] = level0[:, data_off:]
    vecs = full[:, data_off:label_off].view("<f4")  # the vectors' place in each element, written in place
    if n_del:
        vecs[deleted] = np.frombuffer(raw, dtype="<f4", count=n_del * dim, offset=end).reshape(n_del, dim)
    if n_del < count:
        got = vectors(labels if not n_del else labels[~deleted])
        if not isinstance(got, np.ndarray) or got.dtype not in (np.float16, np.float32):
            got = np.asarray(got, dtype=np.float32)
        if got.shape != (count - n_del, dim):
            raise IndexMismatchError(f"the vector source gave shape {got.shape} for {count - n_del} pages of "
                                     f"dimension {dim}")
        cosine = space == "cosine"  # hnswlib keeps unit vectors in that space (its normalize_vector)
        if not n_del:  # the common case: straight into place, no temporary of the whole matrix
            if got.dtype == np.float16:
                widen_rows(got, vecs, unit=cosine)
            else:
                vecs[...] = got
                if cosine:
                    unit_rows(vecs)
        else:
            got = widen(got) if got.dtype == np.float16 else np.array(got, dtype=np.float32)
            if cosine:
                unit_rows(got)
            vecs[~deleted] = got
        del got
    return [head, full.data, raw[vend:]]


def check_hnsw(path: str, size: int, *, dim: int, M: int, labels: np.ndarray, live: np.ndarray) -> None:
    """IndexFormatError unless the hnswlib graph file at ``path`` is one hnswlib can load and search
    without reading out of bounds, and holds exactly ``labels`` (``live`` not marked deleted):
    :func:`check_graph` over the file's bytes."""
    if size < HNSW_HEADER.size:
        raise IndexFormatError("index payload: the HNSW graph is truncated")
    mm = np.memmap(path, dtype=np.uint8, mode="r", shape=(size,))
    try:
        (_off0, _max_el, count, per_el, *_rest) = HNSW_HEADER.unpack(mm[: HNSW_HEADER.size].tobytes())
        end = HNSW_HEADER.size + count * per_el
        if end > size:
            raise IndexFormatError("index payload: the HNSW graph is shorter than its elements")
        check_graph(mm[: HNSW_HEADER.size].tobytes(), mm[HNSW_HEADER.size:end], mm[end:].tobytes(), dim=dim, M=M,
                    labels=labels, live=live)
    finally:
        del mm


def check_graph(head: bytes, level0: np.ndarray, sizes: bytes, *, dim: int, M: int, labels: np.ndarray,
                live: np.ndarray) -> Graph:
    """IndexFormatError unless hnswlib's saved graph -- its ``head``er, ``level0`` (every element's
    bytes, vectors in place) and the link lists above level 0 (``sizes``: each a u32 size, then its
    bytes) -- is one hnswlib can
    load and search without reading out of bounds, and holds exactly ``labels`` (``live`` not marked
    deleted): hnswlib trusts the offsets, sizes, counts and neighbour ids it reads, so a damaged file
    with a recomputed checksum could crash the process (SIGSEGV) or answer with pages that are not
    there. Returns the layout it read (:class:`Graph`).

    Checked against the length and the parameters the header says: the layout of an
    element (offsets derived from ``dim`` and ``M``), the element count, every link list's size
    and level, the entry point, every neighbour id (level 0 and above), the labels, the deleted
    marks and the vectors (finite)."""
    def bad(why: str) -> IndexFormatError:
        return IndexFormatError(f"index payload: the HNSW graph {why}")

    if len(head) != HNSW_HEADER.size:
        raise bad("is truncated")
    header = HNSW_HEADER.unpack(head)
    (off0, max_el, count, per_el, label_off, data_off, maxlevel, enter, max_m, max_m0, m, mult, efc) = header
    links0 = max_m0 * 4 + 4
    if (m != M or max_m != M or max_m0 != 2 * M or off0 != 0 or data_off != links0 or label_off != data_off + 4 * dim
            or per_el != label_off + 8 or count != len(labels) or max_el < count
            or not (0 <= maxlevel < 64 if count else maxlevel in (-1, 0))
            or not math.isfinite(mult) or mult <= 0 or not 0 < efc < 1 << 31):
        raise bad("header does not match the index's parameters")
    if level0.size != count * per_el:
        raise bad("is shorter than its elements")
    level0 = level0.reshape(count, per_el)
    per_level = max_m * 4 + 4
    try:  # the link lists above level 0: a u32 size, then that many bytes (small beside level 0)
        top, offsets = walk(sizes, count, per_level, maxlevel)
    except LinkListError as e:
        raise bad({"truncated": "is truncated in its link lists", "trailing": "has bytes past its link lists"}.get(
            e.kind, f"has a bad link list size for element {e.element}")) from None
    levels = top.astype(np.int64)
    upper = list(zip(np.flatnonzero(levels).tolist(), offsets.tolist()))  # (element, offset) of each list
    if count:
        if int(levels.max()) != maxlevel or enter >= count or levels[enter] != maxlevel:
            raise bad("entry point or top level is inconsistent")
        cnt = np.ascontiguousarray(level0[:, 0:2]).view("<u2").ravel()
        if (cnt > max_m0).any():
            raise bad("has a level-0 neighbour count over its maximum")
        nb = np.ascontiguousarray(level0[:, 4:links0]).view("<u4").reshape(count, max_m0)
        if (nb[np.arange(max_m0)[None, :] < cnt[:, None]] >= count).any():
            raise bad("has a level-0 neighbour out of range")
        held = np.ascontiguousarray(level0[:, label_off:per_el]).view("<u8").ravel()
        if not np.array_equal(np.sort(held), np.sort(labels)):
            raise bad("holds other labels than its id table")
        deleted = (level0[:, 2] & 1) != 0
        if not np.array_equal(np.sort(held[~deleted]), np.sort(live)):
            raise bad("marks other pages deleted than its id table")
        if not np.isfinite(level0[:, data_off:label_off].view("<f4")).all():  # (a view: no copy of the vectors)
            raise bad("holds a vector that is not finite")
        if upper:  # level l's neighbours must be elements that reach level l (all lists at once)
            raw_upper = np.frombuffer(sizes, dtype=np.uint8)
            owner = np.array([i for i, _ in upper], dtype=np.int64)
            nlev = levels[owner]
            rows = np.repeat(np.array([p for _, p in upper], dtype=np.int64), nlev)
            first = np.repeat(np.cumsum(nlev) - nlev, nlev)
            level = np.arange(len(rows)) - first + 1  # 1 .. the element's top level
            rows += (level - 1) * per_level
            block = raw_upper[rows[:, None] + np.arange(per_level)[None, :]]
            c = np.ascontiguousarray(block[:, 0:2]).view("<u2").ravel()
            ids = np.ascontiguousarray(block[:, 4:]).view("<u4")
            used = np.arange(max_m)[None, :] < c[:, None]
            if (c > max_m).any() or (ids[used] >= count).any():
                who = int(np.repeat(owner, nlev)[int(np.argmax((c > max_m) | ((ids >= count) & used).any(axis=1)))])
                raise bad(f"has a bad upper-level link list for element {who}")
            low = (levels[np.where(used, ids, 0)] < level[:, None]) & used
            if low.any():
                who = int(np.repeat(owner, nlev)[int(np.argmax(low.any(axis=1)))])
                raise bad(f"links element {who} to a neighbour above that neighbour's top level")
    links = b"".join(sizes[p:p + int(levels[i]) * per_level] for i, p in upper)
    return Graph(header, level0, levels, links)


@dataclass(frozen=True)
class Graph:
    """A checked graph's layout (:func:`check_graph`): hnswlib's header fields, level 0 as a
    (count, bytes per element) view, each element's top level, and the link lists above level 0
    joined in element order (without their sizes)."""

    header: tuple[Any, ...]
    level0: np.ndarray
    levels: np.ndarray
    links: bytes

    def hnswlib_state(self, *, space: str, dim: int, max_elements: int, ef: int, num_threads: int,
                      seed: int) -> dict[str, Any]:
        """The graph as the dict hnswlib's pickling gives back (``Index.__setstate__((state,))``,
        serialisation version 1): what ``load_index`` reads from a file, handed over in memory."""
        (_off0, _max_el, count, per_el, label_off, data_off, maxlevel, enter, max_m, max_m0, m, mult,
         efc) = self.header
        levels = np.zeros(max(max_elements, count), dtype=np.int32)
        levels[:count] = self.levels
        labels = np.ascontiguousarray(self.level0[:, label_off:per_el]).view("<u8").ravel()
        return {
            "ser_version": 1, "space": space, "dim": dim, "index_inited": True, "ep_added": count > 0,
            "normalize": space == "cosine", "num_threads": num_threads, "seed": seed,
            "offset_level0": 0, "max_elements": max(max_elements, count), "cur_element_count": count,
            "size_data_per_element": per_el, "label_offset": label_off, "offset_data": data_off,
            "max_level": maxlevel, "enterpoint_node": enter, "max_M": max_m, "max_M0": max_m0, "M": m,
            "mult": mult, "ef_construction": efc, "ef": ef,
            "has_deletions": bool(count and ((self.level0[:, 2] & 1) != 0).any()),
            "size_links_per_element": max_m * 4 + 4, "allow_replace_deleted": False,
            "label_lookup_external": labels, "label_lookup_internal": np.arange(count, dtype=np.uint32),
            "element_levels": levels,
            "data_level0": self.level0.reshape(-1).view(np.int8),
            "link_lists": np.frombuffer(self.links, dtype=np.int8),
        }
