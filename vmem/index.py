"""The vector page index: page ids -> vectors, k-nearest-neighbour lookup.

Interface:

- :class:`PageIndex` -- approximate search over an hnswlib HNSW graph.
- :class:`ExactIndex` -- the same interface by numpy brute force; the recall
  reference for tests and the baseline for benchmarks.
- :func:`load_index` -- open a saved index of either kind.

Both map uint64 page ids (the labels) to float32 vectors of one dimension and
answer ``query(vectors, k, filter=None)`` with two ``(q, k')`` numpy arrays,
ids and similarities, best first. Similarity is ``1 - distance`` of hnswlib's
``cosine`` and ``ip`` spaces, i.e. the cosine similarity (``cosine``, vectors
normalised on insert) or the inner product (``ip``).

Invariants (checked by tests against :class:`ExactIndex`):

1. ``len(index)`` counts live ids: added and not deleted since.
2. A query never returns a deleted id, an id the filter rejects, or an id twice.
3. ``k' = min(k, len(index))``; fewer than ``k'`` results exist for a row only
   when the filter leaves fewer, and such a row is padded at the end with
   :data:`PAD_ID` and similarity ``-inf``.
4. Adding an id that is present (live or deleted) replaces its vector and makes
   it live again.

Thread safety: every public method takes the index's lock, so one index may
be shared by threads (calls are serialised; batch adds and batch queries use
hnswlib's own worker threads inside the call).

File format (one file, written to a temporary name and ``os.replace``-d, so a
reader sees the old file or the new one, never half of one)::

    b"VMEMIDX1" | u32 little-endian header length | msgpack header | payload

The header holds the kind, dimension, space, parameters, the embedder name,
the payload's size and its BLAKE2b digest; :meth:`load` checks all of them
before handing a byte to hnswlib, so a truncated, corrupt or foreign file
raises :class:`IndexFormatError` instead of crashing deep inside C++.

A caller that keeps the vectors itself (a store: they are in its database) saves with
``save(path, vectors=False)``: the file then holds the graph and the ids but not the live
pages' vectors (header ``"vectors": "deleted"``: only deleted pages' vectors, which the graph
still walks through, are kept), a tenth of the bytes at 384 dimensions, and ``load(path,
vectors=fn)`` asks ``fn(live_ids)`` for them (an ``(n, dim)`` float32 array in that order;
KeyError for an id it does not have, which load() turns into :class:`IndexMismatchError`;
or a zero row, for a page the caller will delete at once: it stays in the graph as a waypoint).
A few of the left-out vectors (``PROBES``, as float16) stay in the header, and load() checks
the given ones against them, so a graph is never silently used over other vectors.

Exceptions::

    ValueError
     +-- IndexFormatError      not a vmem index file, or a damaged one
     +-- IndexMismatchError    a valid file, but not what the caller expected (dim, name)
"""

from __future__ import annotations

import abc
import hashlib
import math
import os
import struct
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeVar, cast

import hnswlib
import msgpack
import numpy as np

from vmem.hnsw_file import (IndexFormatError, IndexMismatchError, VectorSource, check_graph, check_hnsw, full_graph,
                             slim_graph)
from vmem.graph_queue import GraphQueue, exiting

__all__ = [
    "PAD_ID",
    "BaseIndex",
    "PageIndex",
    "ExactIndex",
    "IndexFormatError",
    "IndexMismatchError",
    "load_index",
]

#: Id used to pad rows that have fewer results than the others (never a valid id).
PAD_ID = np.uint64(2**64 - 1)

_MAGIC = b"VMEMIDX1"
_FORMAT = 1
_SPACES = ("cosine", "ip")
_CHUNK = 1 << 20
#: Live pages whose vectors a file saved without them keeps (float16), to check the ones it is given.
PROBES = 16
PROBE_ATOL = 2e-3

Filter = Callable[[int], bool]
_I = TypeVar("_I", bound="BaseIndex")


def _as_ids(ids: Any, who: str) -> np.ndarray:
    """Coerce page ids to a 1-D uint64 array, rejecting negatives, non-integers and PAD_ID."""
    if isinstance(ids, (int, np.integer)):
        ids = [ids]
    arr = np.asarray(ids)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype == np.uint64:
        out = arr
    elif arr.dtype.kind in "iu":
        if (arr < 0).any():
            raise ValueError(f"{who}: page ids must be non-negative")
        out = arr.astype(np.uint64)
    elif arr.dtype == object:
        try:
            vals = [int(x) for x in arr]
        except (TypeError, ValueError) as e:
            raise TypeError(f"{who}: page ids must be integers") from e
        if any(not 0 <= v < 2**64 for v in vals):
            raise ValueError(f"{who}: page ids must be in 0..2**64-1")
        out = np.array(vals, dtype=np.uint64)
    else:
        raise TypeError(f"{who}: page ids must be integers, got dtype {arr.dtype}")
    if (out == PAD_ID).any():
        raise ValueError(f"{who}: id 2**64-1 is reserved (PAD_ID)")
    return out


def _stream_digest(f: BinaryIO, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    left = size
    while left:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            raise IndexFormatError("index file is truncated")
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


class BaseIndex(abc.ABC):
    """What :class:`PageIndex` and :class:`ExactIndex` share: validation,
    result shaping and the file format. Not instantiated directly."""

    kind: ClassVar[str]

    def __init__(self, dim: int, *, space: str = "cosine", name: str | None = None) -> None:
        if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"{type(self).__name__}: dim must be a positive int, got {dim!r}")
        if space not in _SPACES:
            raise ValueError(f"{type(self).__name__}: space must be one of {_SPACES}, got {space!r}")
        self.dim = int(dim)
        self.space = space
        #: Name of the embedder whose vectors this index holds (checked by :meth:`load`).
        self.name = name
        #: Set by :meth:`load`: whether the file held every vector (``"all"``) or only the deleted
        #: pages' (``"deleted"``, saved with ``vectors=False``); None for an index made in memory.
        self.file_vectors: str | None = None
        self._lock = threading.RLock()

    # -- subclass hooks

    @abc.abstractmethod
    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _search(
        self, q: np.ndarray, k: int, filter: Filter | None
    ) -> tuple[np.ndarray, np.ndarray] | list[tuple[np.ndarray, np.ndarray]]:
        """(ids, similarities) best first with the filter applied: two (q, k) arrays
        when every row has k results, else one (ids, sims) pair per row (at most k)."""

    @abc.abstractmethod
    def _delete(self, ids: list[int]) -> None: ...

    @abc.abstractmethod
    def _get(self, ids: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _live_ids(self) -> np.ndarray: ...

    @abc.abstractmethod
    def _params(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _payload(self, tmpdir: str, vectors: bool) -> list[bytes | str]:
        """Byte strings and/or paths of files whose bytes, concatenated, are the payload
        (without the live pages' vectors when ``vectors`` is False)."""

    @classmethod
    @abc.abstractmethod
    def _restore(cls: type[_I], header: dict[str, Any], f: BinaryIO, size: int, vectors: VectorSource | None) -> _I:
        """The index of a payload; ``vectors`` gives the live pages' vectors when the payload
        has none (header ``vectors == "deleted"``)."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def __contains__(self, page_id: object) -> bool: ...

    # -- validation

    def _vectors(self, vectors: Any, n: int | None, op: str) -> np.ndarray:
        """Validate ``vectors`` for ``op`` ("add"/"query"): a C-contiguous (m, dim) float32 array."""
        v = vectors if type(vectors) is np.ndarray and vectors.dtype == np.float32 else np.asarray(vectors, dtype=np.float32)
        if v.ndim == 1 and v.shape[0] == self.dim:  # the page-in case: one query vector
            sq1 = float(v.dot(v))
            if math.isfinite(sq1) and (sq1 > 0 or self.space != "cosine"):
                return (v if v.flags.c_contiguous else np.ascontiguousarray(v)).reshape(1, self.dim)
            v = v[None, :]  # let the general path below name the problem
        who = f"{type(self).__name__}.{op}"
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"{who}: expected vectors of shape (n, {self.dim}), got {np.shape(vectors)}")
        if n is not None and v.shape[0] != n:
            raise ValueError(f"{who}: {n} ids but {v.shape[0]} vectors")
        if v.shape[0]:
            sq = np.einsum("ij,ij->i", v, v)  # one pass: NaN or infinity anywhere makes it non-finite
            if not np.isfinite(sq).all():
                what = "NaN or infinity" if not np.isfinite(v).all() else "values too large for float32"
                raise ValueError(f"{who}: vectors contain {what}")
            if self.space == "cosine" and not sq.all():
                raise ValueError(f"{who}: zero vector in a cosine index (its direction is undefined)")
        return v if v.flags.c_contiguous else np.ascontiguousarray(v)

    # -- public API

    def add(self, ids: Any, vectors: Any) -> None:
        """Insert or replace ``vectors`` (``(n, dim)`` float32) under page ``ids`` (uint64).

        Ids present already (even deleted ones) get the new vector and are live
        again. A repeated id within one call keeps its last vector. The index
        grows as needed.
        """
        ids_ = _as_ids(ids, f"{type(self).__name__}.add")
        vecs = self._vectors(vectors, len(ids_), "add")
        if len(ids_) == 0:
            return
        uniq, first_in_reversed = np.unique(ids_[::-1], return_index=True)
        if len(uniq) != len(ids_):  # keep each id's last occurrence
            keep = np.sort(len(ids_) - 1 - first_in_reversed)
            ids_, vecs = ids_[keep], vecs[keep]
        self._accept(ids_, vecs)

    def _accept(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Checked ids (unique) and vectors of an add: into the index."""
        with self._lock:
            self._add(ids, vectors)

    def query(self, vectors: Any, k: int, filter: Filter | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Find the ``k`` live pages most similar to each query vector.

        ``vectors`` is ``(q, dim)`` (or one ``(dim,)`` vector, treated as
        ``q = 1``). ``filter``, when given, is called with a page id (int) and
        must return True for pages that may be returned. Returns ``(ids,
        similarities)``, uint64 and float32 arrays of shape ``(q, k')`` with
        ``k' = min(k, len(self))``, best first; a row that has fewer admissible
        pages is padded with :data:`PAD_ID` / ``-inf``.
        """
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 0:
            raise ValueError(f"{type(self).__name__}.query: k must be a non-negative int, got {k!r}")
        if filter is not None and not callable(filter):
            raise TypeError(f"{type(self).__name__}.query: filter must be callable")
        q = self._vectors(vectors, None, "query")
        with self._lock:
            k_eff = min(int(k), len(self))
            if k_eff == 0 or q.shape[0] == 0:
                return np.zeros((q.shape[0], 0), np.uint64), np.zeros((q.shape[0], 0), np.float32)
            rows = self._search(q, k_eff, filter)
        if isinstance(rows, tuple):  # every row full: the arrays as they came
            return rows
        width = max((len(r[0]) for r in rows), default=0)
        ids = np.full((len(rows), width), PAD_ID, dtype=np.uint64)
        sims = np.full((len(rows), width), -np.inf, dtype=np.float32)
        for i, (ri, rs) in enumerate(rows):
            ids[i, : len(ri)] = ri
            sims[i, : len(rs)] = rs
        return ids, sims

    def delete(self, ids: Any) -> None:
        """Soft-delete pages: they stop appearing in queries. Unknown ids are ignored."""
        ids_ = _as_ids(ids, f"{type(self).__name__}.delete")
        with self._lock:
            self._delete([i for i in dict.fromkeys(ids_.tolist()) if i in self])

    def get(self, ids: Any) -> np.ndarray:
        """Stored vectors of live ``ids`` as an ``(n, dim)`` float32 array
        (normalised, for a cosine index). KeyError names the first absent id."""
        ids_ = _as_ids(ids, f"{type(self).__name__}.get")
        with self._lock:
            for i in ids_.tolist():
                if i not in self:
                    raise KeyError(f"{type(self).__name__}.get: no live page {i:#x}")
            if len(ids_) == 0:
                return np.zeros((0, self.dim), dtype=np.float32)
            return self._get(ids_)

    def ids(self) -> np.ndarray:
        """Live page ids, sorted ascending, as uint64."""
        with self._lock:
            return np.sort(self._live_ids())

    # -- persistence

    def save(self, path: str | os.PathLike[str], *, vectors: bool = True) -> None:
        """Write the index to ``path`` atomically (temporary file, fsync, ``os.replace``).

        ``vectors=False``: leave the live pages' vectors out (the caller keeps them; see the
        module docstring); :meth:`load` then needs ``vectors=``."""
        path = Path(path)
        directory = path.parent if str(path.parent) else Path(".")
        with self._lock, tempfile.TemporaryDirectory(prefix=".vmemidx-", dir=directory) as tmpdir:
            parts = self._payload(tmpdir, vectors)
            h = hashlib.blake2b(digest_size=16)
            size = 0
            for part in parts:
                if isinstance(part, bytes):
                    h.update(part)
                    size += len(part)
                else:
                    with open(part, "rb") as src:
                        while chunk := src.read(_CHUNK):
                            h.update(chunk)
                            size += len(chunk)
            header = {
                "format": _FORMAT,
                "kind": self.kind,
                "dim": self.dim,
                "space": self.space,
                "name": self.name,
                "count": len(self),
                "params": self._params(),
                "payload_size": size,
                "payload_blake2b": h.hexdigest(),
                "vectors": "all" if vectors else "deleted",
            }
            if not vectors:  # a few of the left-out vectors, to know the ones load() is given again
                probe = self._probe_ids()
                header["probe_ids"] = probe.tolist()
                header["probe"] = self._get(probe).astype("<f2").tobytes() if len(probe) else b""
            blob = msgpack.packb(header, use_bin_type=True)
            tmp = os.path.join(tmpdir, "index.tmp")
            with open(tmp, "wb") as out:
                out.write(_MAGIC)
                out.write(struct.pack("<I", len(blob)))
                out.write(blob)
                for part in parts:
                    if isinstance(part, bytes):
                        out.write(part)
                    else:
                        with open(part, "rb") as src:
                            while chunk := src.read(_CHUNK):
                                out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        try:  # make the rename itself durable
            fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)

    @classmethod
    def load(
        cls: type[_I], path: str | os.PathLike[str], *, dim: int | None = None, name: str | None = None,
        vectors: VectorSource | None = None,
    ) -> _I:
        """Read an index saved by :meth:`save`.

        ``vectors``: where the live pages' vectors come from when the file does not hold them
        (saved with ``vectors=False``); ignored for a file that holds them.
        Raises :class:`IndexFormatError` for a file that is not a vmem index of
        this kind or is damaged, and :class:`IndexMismatchError` when ``dim`` or
        ``name`` (the embedder's name) are given and differ from the file's, or when the file
        holds no vectors and ``vectors`` is None or does not have one of its pages.
        """
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise
        except OSError as e:
            raise IndexFormatError(f"cannot read index file {path}: {e}") from e
        with f:
            header = _read_header(f, path)
            if cls is not BaseIndex and header["kind"] != cls.kind:
                raise IndexFormatError(f"{path}: holds a {header['kind']!r} index, not {cls.kind!r} ({cls.__name__})")
            if dim is not None and header["dim"] != dim:
                raise IndexMismatchError(f"{path}: index has dimension {header['dim']}, expected {dim}")
            if name is not None and header["name"] != name:
                raise IndexMismatchError(f"{path}: index was built by embedder {header['name']!r}, expected {name!r}")
            if header["vectors"] == "deleted" and vectors is None:
                raise IndexMismatchError(f"{path}: the file holds no vectors for its live pages (saved with "
                                         "vectors=False): load it with vectors=")
            start = f.tell()
            size = int(header["payload_size"])
            if _stream_digest(f, size) != header["payload_blake2b"]:
                raise IndexFormatError(f"{path}: payload checksum mismatch (corrupt file)")
            if f.read(1):
                raise IndexFormatError(f"{path}: trailing bytes after the payload")
            f.seek(start)
            target = _KINDS[header["kind"]] if cls is BaseIndex else cls
            try:
                index = target._restore(header, f, size, vectors if header["vectors"] == "deleted" else None)
            except (IndexFormatError, IndexMismatchError):
                raise
            except KeyError as e:
                raise IndexMismatchError(f"{path}: no vector for a live page of the index ({e})") from e
            except Exception as e:  # hnswlib/numpy refusing what the checksum let through
                raise IndexFormatError(f"{path}: cannot restore index: {e}") from e
            if len(index) != header["count"]:
                raise IndexFormatError(f"{path}: expected {header['count']} live pages, found {len(index)}")
            if header["vectors"] == "deleted":
                index._check_probe(header, path)
            index.file_vectors = header["vectors"]
            return cast(_I, index)  # _restore makes an instance of the class load() was called on

    def __repr__(self) -> str:
        return f"<{type(self).__name__} dim={self.dim} space={self.space} live={len(self)} name={self.name!r}>"

    def _probe_ids(self) -> np.ndarray:
        """Up to PROBES live ids spread over the sorted ids (the same for the same id set)."""
        ids = np.sort(self._live_ids())
        if len(ids) <= PROBES:
            return ids
        return ids[np.linspace(0, len(ids) - 1, PROBES).astype(np.int64)]

    def _check_probe(self, header: dict[str, Any], path: Any) -> None:
        """IndexMismatchError unless the vectors a file without them was given back are those it
        was saved with (at float16 precision), for its probe pages: a graph built over other
        vectors (another store's file, with the same ids) would search badly and never say so."""
        probe, blob = header.get("probe_ids"), header.get("probe")
        if not isinstance(probe, list) or not isinstance(blob, bytes) or len(blob) != 2 * self.dim * len(probe):
            raise IndexFormatError(f"{path}: header field 'probe' missing or malformed")
        if not probe:
            return
        try:
            ids = _as_ids(probe, "load")
            got = self.get(ids)
        except (KeyError, TypeError, ValueError) as e:
            raise IndexFormatError(f"{path}: a probe page is not in the index ({e})") from e
        want = np.frombuffer(blob, dtype="<f2").astype(np.float32).reshape(len(probe), self.dim)
        given = got.any(axis=1)  # a zero row: the source has no vector for that page (see load())
        if not np.allclose(got[given], want[given], atol=PROBE_ATOL):
            raise IndexMismatchError(f"{path}: the vectors given are not those the graph was built over")


def _read_header(f: BinaryIO, path: Any) -> dict[str, Any]:
    magic = f.read(len(_MAGIC))
    if magic != _MAGIC:
        raise IndexFormatError(f"{path}: not a vmem index file (bad magic)")
    raw = f.read(4)
    if len(raw) != 4:
        raise IndexFormatError(f"{path}: truncated header")
    (n,) = struct.unpack("<I", raw)
    if n > 1 << 24:
        raise IndexFormatError(f"{path}: implausible header length {n}")
    blob = f.read(n)
    if len(blob) != n:
        raise IndexFormatError(f"{path}: truncated header")
    try:
        header = msgpack.unpackb(blob, raw=False)
    except Exception as e:
        raise IndexFormatError(f"{path}: unreadable header: {e}") from e
    if not isinstance(header, dict):
        raise IndexFormatError(f"{path}: header is not a map")
    if header.get("format") != _FORMAT:
        raise IndexFormatError(f"{path}: unsupported index format {header.get('format')!r}")
    expected = {"kind": str, "dim": int, "space": str, "count": int, "params": dict, "payload_size": int, "payload_blake2b": str}
    for key, typ in expected.items():
        if not isinstance(header.get(key), typ):
            raise IndexFormatError(f"{path}: header field {key!r} missing or malformed")
    if header["kind"] not in _KINDS:
        raise IndexFormatError(f"{path}: unknown index kind {header['kind']!r}")
    if header["space"] not in _SPACES or header["dim"] < 1 or header["payload_size"] < 0:
        raise IndexFormatError(f"{path}: header values out of range")
    if header.get("name") is not None and not isinstance(header["name"], str):
        raise IndexFormatError(f"{path}: header field 'name' malformed")
    header.setdefault("vectors", "all")  # files written before vectors=False existed hold them all
    if header["vectors"] not in ("all", "deleted"):
        raise IndexFormatError(f"{path}: header field 'vectors' malformed")
    return header


def _read_exact(f: BinaryIO, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise IndexFormatError("index payload is truncated")
    return b


class PageIndex(BaseIndex):
    """Approximate k-NN over page vectors: an hnswlib HNSW graph.

    ``M`` (graph degree) and ``ef_construction`` trade build time and memory
    for recall; ``ef`` (the search beam, at least ``k`` in effect) trades query
    time for recall and can be changed at any time. ``capacity`` is the initial
    size; the index doubles when full. ``num_threads`` is used for batch adds
    and batch queries (single-vector queries always run on the calling
    thread: starting workers costs more than the search).

    ``behind=True`` (the default): :meth:`add` returns once the vectors are queued
    (:mod:`vmem.graph_queue`), and a thread of the index's own puts them into the graph, in the
    order they were added (hnswlib's insertion is most of an insert's cost; a writer need not
    wait for it). Everything that reads the graph (a query, :meth:`get`, :meth:`delete`,
    :meth:`save`) first puts in what is still queued (:meth:`settle`), so it sees every add
    made before it, exactly as without the queue; only *when* the graph work is done changes.
    ``len``, ``in`` and :meth:`ids` count queued ids without waiting; :attr:`pending` says how
    many wait. ``behind=False``: each add is put into the graph before it returns.
    """

    kind = "hnsw"

    def __init__(
        self,
        dim: int,
        *,
        capacity: int = 1024,
        M: int = 16,
        ef_construction: int = 200,
        ef: int = 32,  # recall@8 >= 0.96 at 100k pages in bench/bench_pagein.py, ~1.6x faster than 64
        space: str = "cosine",
        name: str | None = None,
        num_threads: int = -1,
        seed: int = 100,
        behind: bool = True,
    ) -> None:
        super().__init__(dim, space=space, name=name)
        if capacity < 1 or M < 2 or ef_construction < 1 or ef < 1:
            raise ValueError("PageIndex: capacity, ef_construction and ef must be >= 1 and M >= 2")
        self.M = int(M)
        self.ef_construction = int(ef_construction)
        self.num_threads = int(num_threads)
        #: hnswlib threads for a batch add or query: ``num_threads``, or every core this process may
        #: use for -1 (given -1 by set_num_threads, hnswlib 0.8 added each batch on one thread)
        self._threads = _cores() if self.num_threads < 0 else max(1, self.num_threads)
        self.seed = int(seed)
        self._hnsw = hnswlib.Index(space=space, dim=self.dim)
        self._hnsw.init_index(max_elements=int(capacity), M=self.M, ef_construction=self.ef_construction, random_seed=self.seed)
        self._ef = int(ef)
        self._hnsw.set_ef(self._ef)
        self._hnsw.set_num_threads(self._threads)
        self._labels: set[int] = set()  # every label in the graph, live or deleted
        self._live: set[int] = set()  # live ids, queued ones included
        #: Whether :meth:`add` queues its vectors for the index's builder thread (see the class).
        self.behind = bool(behind)
        self._queue = GraphQueue(self)

    @property
    def ef(self) -> int:
        """Search beam width (query time/recall trade-off)."""
        return self._ef

    @ef.setter
    def ef(self, value: int) -> None:
        if value < 1:
            raise ValueError("PageIndex.ef must be >= 1")
        with self._lock:
            self._ef = int(value)
            self._hnsw.set_ef(self._ef)

    @property
    def capacity(self) -> int:
        """Slots allocated in the graph (live + deleted + free)."""
        with self._lock:
            return int(self._hnsw.max_elements)

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, page_id: object) -> bool:
        try:
            return int(page_id) in self._live  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    @property
    def pending(self) -> int:
        """Ids added and not yet in the graph (0 with ``behind=False``); never waits."""
        return len(self._queue)

    def settle(self) -> None:
        """Put every queued add into the graph now (what any read of the graph does first)."""
        with self._lock:
            self._settle()

    def _accept(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not self.behind or exiting():
            super()._accept(ids, vectors)
            return
        # the queue's lock only: never waits for the graph. The builder leaves a core to the
        # writers (a read that waits settles the rest on every core)
        self._queue.push(ids, vectors, self._builder_threads)
        self._live.update(ids.tolist())

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:  # (directly; the lock held)
        self._settle()
        self._insert(ids, vectors, self._threads_for(len(ids)))

    def _threads_for(self, n: int) -> int:
        return 1 if n < 64 else self._threads

    def _builder_threads(self, n: int) -> int:
        return 1 if n < 64 else max(1, self._threads - 1)

    def _insert(self, ids: np.ndarray, vectors: np.ndarray, threads: int) -> None:
        """Into the graph (the lock held)."""
        id_list = ids.tolist()
        new = sum(1 for i in id_list if i not in self._labels)
        needed = self._hnsw.element_count + new
        if needed > self._hnsw.max_elements:
            self._hnsw.resize_index(max(needed, 2 * self._hnsw.max_elements))
        self._hnsw.add_items(vectors, ids, num_threads=threads)
        self._labels.update(id_list)
        self._live.update(id_list)

    def _settle(self) -> None:
        if len(self._queue):
            self._queue.settle(self._threads_for)

    def _delete(self, ids: list[int]) -> None:
        self._settle()
        for i in ids:
            self._hnsw.mark_deleted(i)
            self._live.discard(i)

    def _get(self, ids: np.ndarray) -> np.ndarray:
        self._settle()
        return np.asarray(self._hnsw.get_items(ids, return_type="numpy"), dtype=np.float32).reshape(len(ids), self.dim)

    def _live_ids(self) -> np.ndarray:
        return np.fromiter(self._live, dtype=np.uint64, count=len(self._live))

    def _search(
        self, q: np.ndarray, k: int, filter: Filter | None
    ) -> tuple[np.ndarray, np.ndarray] | list[tuple[np.ndarray, np.ndarray]]:
        self._settle()
        threads = 1 if (filter is not None or q.shape[0] == 1) else self._threads
        try:
            labels, dist = self._hnsw.knn_query(q, k=k, num_threads=threads, filter=filter)
        except RuntimeError:
            # Some row found fewer than k: a selective filter, or a graph region
            # cut off by deletions. Answer row by row, falling back to an exact
            # scan of the admissible pages where the graph comes up short.
            return [self._search_row(q[i : i + 1], k, filter) for i in range(q.shape[0])]
        np.subtract(1.0, dist, out=dist)  # distance -> similarity, in place (float32)
        return labels, dist

    def _search_row(self, q: np.ndarray, k: int, filter: Filter | None) -> tuple[np.ndarray, np.ndarray]:
        try:
            labels, dist = self._hnsw.knn_query(q, k=k, num_threads=1, filter=filter)
            return labels[0], (1.0 - dist[0]).astype(np.float32)
        except RuntimeError:
            pass
        allowed = [i for i in self._live if filter is None or filter(i)]
        if not allowed:
            return np.zeros(0, np.uint64), np.zeros(0, np.float32)
        ids = np.array(allowed, dtype=np.uint64)
        vecs = self._get(ids)
        qv = q[0] / np.linalg.norm(q[0]) if self.space == "cosine" else q[0]
        return _top_k(ids, vecs @ qv, k)

    def _params(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef": self._ef, "seed": self.seed}

    def _payload(self, tmpdir: str, vectors: bool) -> list[bytes | str]:
        self._settle()
        graph = os.path.join(tmpdir, "graph.bin")
        self._hnsw.save_index(graph)
        live = np.array(sorted(self._live), dtype="<u8").tobytes()
        labels = np.array(sorted(self._labels), dtype="<u8").tobytes()
        lengths = struct.pack("<QQ", len(self._live), len(self._labels))
        return [lengths, live, labels, *([graph] if vectors else slim_graph(graph, self.dim))]

    @classmethod
    def _restore(cls, header: dict[str, Any], f: BinaryIO, size: int, vectors: VectorSource | None) -> PageIndex:
        p = header["params"]
        n_live, n_labels = struct.unpack("<QQ", _read_exact(f, 16))
        if n_live > n_labels or 16 + 8 * (n_live + n_labels) > size:
            raise IndexFormatError("index payload: bad id table sizes")
        live = np.frombuffer(_read_exact(f, 8 * n_live), dtype="<u8")
        labels = np.frombuffer(_read_exact(f, 8 * n_labels), dtype="<u8")
        if len(np.unique(labels)) != n_labels or not np.isin(live, labels).all() or len(np.unique(live)) != n_live:
            raise IndexFormatError("index payload: the id tables repeat ids, or a live id has no label")
        index = cls(
            header["dim"],
            capacity=1,  # placeholder graph, replaced by the loaded one below
            M=int(p["M"]),
            ef_construction=int(p["ef_construction"]),
            ef=int(p["ef"]),
            space=header["space"],
            name=header.get("name"),
            seed=int(p.get("seed", 100)),
        )
        graph_size = size - 16 - 8 * (n_live + n_labels)
        capacity = max(1024, n_labels + n_labels // 4)  # headroom: the first insert after opening does not resize
        if vectors is not None:  # the graph and the stored vectors, put together in memory and handed over
            head, level0, upper = full_graph(_read_exact(f, graph_size), dim=header["dim"], M=int(p["M"]),
                                             count=n_labels, space=header["space"], vectors=vectors)
            graph = check_graph(bytes(head), np.frombuffer(level0, dtype=np.uint8), bytes(upper), dim=header["dim"],
                                M=int(p["M"]), labels=labels, live=live)
            state = graph.hnswlib_state(space=header["space"], dim=header["dim"], max_elements=capacity,
                                        ef=index._ef, num_threads=1, seed=index.seed)
            del head, level0, upper
            hn = hnswlib.Index.__new__(hnswlib.Index)  # unpickled: what load_index reads from a file, from memory
            hn.__setstate__((state,))
            del graph, state
        else:  # a file from before schema 5, vectors in place: hnswlib reads it itself
            hn = hnswlib.Index(space=header["space"], dim=header["dim"])
            with tempfile.NamedTemporaryFile(prefix="vmemidx-", suffix=".bin", delete=False) as tmp:
                try:
                    left = graph_size
                    while left:
                        chunk = f.read(min(_CHUNK, left))
                        if not chunk:
                            raise IndexFormatError("index payload is truncated")
                        tmp.write(chunk)
                        left -= len(chunk)
                    tmp.close()
                    check_hnsw(tmp.name, graph_size, dim=header["dim"], M=int(p["M"]), labels=labels, live=live)
                    hn.load_index(tmp.name, max_elements=capacity)
                finally:
                    os.unlink(tmp.name)
        if hn.element_count != n_labels:
            raise IndexFormatError(f"index payload: graph holds {hn.element_count} labels, id table {n_labels}")
        hn.set_ef(index._ef)
        hn.set_num_threads(index._threads)
        index._hnsw = hn
        index._labels = set(labels.tolist())
        index._live = set(live.tolist())
        return index


def _cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _top_k(ids: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest similarities, best first (ties broken by smaller id)."""
    if len(ids) > k:
        part = np.argpartition(-sims, k - 1)[:k]
        ids, sims = ids[part], sims[part]
    order = np.lexsort((ids, -sims))
    return ids[order], sims[order].astype(np.float32)


class ExactIndex(BaseIndex):
    """Brute-force k-NN with :class:`PageIndex`'s interface (one matrix product per query batch).

    Exact, simple and fast enough for a few thousand pages; used as the recall
    reference in tests and as the baseline in benchmarks. Accepts and ignores
    PageIndex's tuning keywords so the two are interchangeable.
    """

    kind = "exact"

    def __init__(
        self,
        dim: int,
        *,
        capacity: int = 1024,
        space: str = "cosine",
        name: str | None = None,
        **_tuning: Any,
    ) -> None:
        super().__init__(dim, space=space, name=name)
        unknown = set(_tuning) - {"M", "ef_construction", "ef", "num_threads", "seed"}
        if unknown:
            raise TypeError(f"ExactIndex: unexpected keyword arguments {sorted(unknown)}")
        cap = max(1, int(capacity))
        self._ids = np.zeros(cap, dtype=np.uint64)
        self._vecs = np.zeros((cap, self.dim), dtype=np.float32)
        self._alive = np.zeros(cap, dtype=bool)
        self._n = 0  # rows used (live or deleted)
        self._row: dict[int, int] = {}  # id -> row, live or deleted
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, page_id: object) -> bool:
        try:
            r = self._row.get(int(page_id))  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False
        return r is not None and bool(self._alive[r])

    def _add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if self.space == "cosine":
            vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        id_list = ids.tolist()
        new = [i for i in id_list if i not in self._row]
        if self._n + len(new) > len(self._ids):
            cap = max(self._n + len(new), 2 * len(self._ids))
            grow = cap - len(self._ids)
            self._ids = np.concatenate([self._ids, np.zeros(grow, np.uint64)])
            self._vecs = np.concatenate([self._vecs, np.zeros((grow, self.dim), np.float32)])
            self._alive = np.concatenate([self._alive, np.zeros(grow, bool)])
        for i in new:
            self._row[i] = self._n
            self._n += 1
        rows = np.fromiter((self._row[i] for i in id_list), dtype=np.int64, count=len(id_list))
        self._count += int((~self._alive[rows]).sum())
        self._ids[rows] = ids
        self._vecs[rows] = vectors
        self._alive[rows] = True

    def _delete(self, ids: list[int]) -> None:
        for i in ids:
            self._alive[self._row[i]] = False
            self._count -= 1

    def _get(self, ids: np.ndarray) -> np.ndarray:
        rows = [self._row[i] for i in ids.tolist()]
        return self._vecs[rows].copy()

    def _live_ids(self) -> np.ndarray:
        return self._ids[: self._n][self._alive[: self._n]].copy()

    def _search(self, q: np.ndarray, k: int, filter: Filter | None) -> list[tuple[np.ndarray, np.ndarray]]:
        n = self._n
        if self.space == "cosine":
            q = q / np.linalg.norm(q, axis=1, keepdims=True)
        if filter is None and self._count == n:  # nothing deleted: scan the arrays in place
            ids = self._ids[:n]
            sims = q @ self._vecs[:n].T  # (q, live)
        else:
            mask = self._alive[:n]
            if filter is not None:
                mask = mask.copy()
                for r in np.flatnonzero(mask):
                    if not filter(int(self._ids[r])):
                        mask[r] = False
            rows = np.flatnonzero(mask)
            ids = self._ids[rows]
            sims = q @ self._vecs[rows].T
        return [_top_k(ids, sims[i], min(k, len(ids))) for i in range(q.shape[0])] if len(ids) else [
            (np.zeros(0, np.uint64), np.zeros(0, np.float32)) for _ in range(q.shape[0])
        ]

    def _params(self) -> dict[str, Any]:
        return {}

    def _payload(self, tmpdir: str, vectors: bool) -> list[bytes | str]:
        live = self._alive[: self._n]
        ids = self._ids[: self._n][live].astype("<u8")
        vecs = self._vecs[: self._n][live].astype("<f4") if vectors else np.zeros((0, self.dim), "<f4")
        return [struct.pack("<Q", len(ids)), ids.tobytes(), vecs.tobytes()]

    @classmethod
    def _restore(cls, header: dict[str, Any], f: BinaryIO, size: int, vectors: VectorSource | None) -> ExactIndex:
        (n,) = struct.unpack("<Q", _read_exact(f, 8))
        dim = header["dim"]
        if 8 + n * 8 + (n * dim * 4 if vectors is None else 0) != size:
            raise IndexFormatError("index payload size does not match its row count")
        ids = np.frombuffer(_read_exact(f, 8 * n), dtype="<u8").astype(np.uint64)
        if vectors is None:
            vecs = np.frombuffer(_read_exact(f, 4 * n * dim), dtype="<f4").reshape(n, dim)
        else:
            vecs = np.asarray(vectors(ids), dtype=np.float32)
            if vecs.shape != (n, dim):
                raise IndexMismatchError(f"the vector source gave shape {vecs.shape} for {n} pages of dimension {dim}")
        index = cls(dim, capacity=max(1, n), space=header["space"], name=header.get("name"))
        if n:
            index._add(ids, vecs.astype(np.float32))
        return index


_KINDS: dict[str, type[BaseIndex]] = {"hnsw": PageIndex, "exact": ExactIndex}


def load_index(path: str | os.PathLike[str], *, dim: int | None = None, name: str | None = None,
               vectors: VectorSource | None = None) -> BaseIndex:
    """Load a saved :class:`PageIndex` or :class:`ExactIndex`, whichever the file holds."""
    return BaseIndex.load(path, dim=dim, name=name, vectors=vectors)

