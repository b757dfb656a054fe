"""The Python face of the C inverted index (``csrc/ii.c``): the stores' text search.

:class:`TextIndex` owns one ``ii_t`` (freed by ``ffi.gc``), a vocabulary
(stemmed term -> term id) and a role table (role name -> 0..63). Texts are
analysed by :func:`vmem.text.index_terms` / :func:`vmem.text.query_terms`
(FTS5's ``porter unicode61`` rules); ranking is FTS5's BM25, exact top-k by
MaxScore in C. The ``ii_*`` return codes become exceptions in one place, :func:`_raise`
(the page table's are :mod:`vmem._core`'s: the two C files have their own codes).

It is a cache: the stores rebuild it from SQLite when its file is missing,
damaged, foreign or behind (see ``vmem/storage/lexical.py``).

File format (written to a temporary name and ``os.replace``-d)::

    b"VMEMTIX1" | u32 little-endian header length | msgpack header | C snapshot

The header holds the analyzer, the owner's tag (store id and table), the
vocabulary, the role table, and the snapshot's size and BLAKE2b digest.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import msgpack
import numpy as np

from vmem._vmcore import ffi, lib
from vmem.errors import CorruptSnapshot, InvalidArgument, InvariantError, PageExists, PageNotFound
from vmem.index import IndexFormatError
from vmem.text import ANALYZER, index_terms, query_terms

__all__ = ["TextIndex", "TextHits", "MAX_ROLES", "DEFAULT_EXACT_MAX"]

_MAGIC = b"VMEMTIX1"
_FORMAT = 2  # 2: the digest covers the vocabulary and roles too (a damaged vocabulary answered wrongly)
#: Distinct roles with their own filter bit; later roles share the last one.
MAX_ROLES = lib.II_MAX_ROLE + 1
_OTHER_ROLE = lib.II_MAX_ROLE
#: Up to this many postings in a query's lists the search is exhaustive, term at a
#: time (~5 ns a posting; totals exact); beyond, MaxScore with block skipping
#: (totals estimated and flagged). On LoCoMo questions over LoCoMo-like turns the
#: exhaustive search was as fast as MaxScore at 1M documents (1.46 against 1.38 ms
#: p50 at k=10, 2.03 ms at k=100) and twice as fast at 100k: common words leave
#: MaxScore little to skip. 200,000 covers 1,385 of the 1,396 questions at 1M.
DEFAULT_EXACT_MAX = 200_000
_ALL_ROLES = (1 << 64) - 1

_ERRORS = {
    lib.II_ENOENT: PageNotFound,
    lib.II_EEXIST: PageExists,
    lib.II_EINVAL: InvalidArgument,
    lib.II_ECORRUPT: CorruptSnapshot,
    lib.II_ECHECK: InvariantError,
}


def _raise(ii: Any, rc: int) -> None:
    """Turn an ``ii_*`` return code into an exception: the one place this happens."""
    message = ffi.string(lib.ii_errmsg(ii)).decode("utf-8", "replace")
    if rc == lib.II_ENOMEM:
        raise MemoryError(message)
    raise _ERRORS.get(rc, InvalidArgument)(message)


@dataclass(frozen=True)
class TextHits:
    """A top-k text search: document ids and BM25 scores (best first), and the
    number of matching documents (``exact`` False: an estimate)."""

    docs: np.ndarray
    scores: np.ndarray
    total: int
    exact: bool


def _digest(payload: bytes, vocab: list[str], roles: list[str]) -> str:
    """The file's checksum: the snapshot and what gives its term and role ids their meaning."""
    h = hashlib.blake2b(payload, digest_size=16)
    h.update(msgpack.packb([vocab, roles], use_bin_type=True))
    return h.hexdigest()


class TextIndex:
    """An inverted index of documents numbered by the caller (ascending adds)."""

    def __init__(self) -> None:
        ii = lib.ii_new()
        if ii == ffi.NULL:
            raise MemoryError("ii_new: out of memory")
        self._ii = ffi.gc(ii, lib.ii_free)
        self._lock = threading.Lock()
        self._vocab: dict[str, int] = {}
        self._roles: dict[str, int] = {}
        self._nout = ffi.new("size_t *")
        self._total = ffi.new("uint64_t *")
        self._exact = ffi.new("int *")
        self._filter = ffi.new("ii_filter *")
        self._stats = ffi.new("ii_stats *")  # len() reads it: every ranked search counts the documents

    # ------------------------------------------------------------ analysis

    def _ids(self, terms: dict[str, int]) -> list[int]:
        vocab = self._vocab
        ids = []
        for t in terms:
            tid = vocab.get(t)
            if tid is None:
                tid = vocab[t] = len(vocab)
            ids.append(tid)
        return ids

    def role_code(self, role: str) -> int:
        """The filter code of ``role`` (assigned on first sight; the 64th and later share one)."""
        code = self._roles.get(role)
        if code is None:
            code = min(len(self._roles), _OTHER_ROLE)
            self._roles[role] = code
        return code

    def roles_mask(self, roles: Iterable[str]) -> int | None:
        """The role bit mask for ``roles``, or None when it cannot be exact (a shared code)."""
        mask = 0
        for r in roles:
            code = self._roles.get(r)
            if code is None:
                continue  # no document has this role
            if code == _OTHER_ROLE:
                return None
            mask |= 1 << code
        return mask

    # ------------------------------------------------------------ writes

    def add(self, doc: int, text: str, ts: float, role: str = "", group: int = 0) -> None:
        """Index ``text`` as document ``doc`` (larger than every document added before).

        A text with a question mark is flagged as asking (see :meth:`neighbours`)."""
        code = self.role_code(role)
        terms = index_terms(text)
        ids = self._ids(terms)  # small lists: cffi's own conversion beats building numpy arrays
        flags = lib.II_ASKS if "?" in text else 0
        with self._lock:
            rc = lib.ii_add(self._ii, doc, ids, list(terms.values()), len(ids), ts, code, group, flags)
        if rc:
            _raise(self._ii, rc)

    def add_many(self, docs: Sequence[int], texts: Sequence[str], ts: Sequence[float],
                 roles: Sequence[str] | None = None, groups: Sequence[int] | None = None) -> None:
        """Index several documents, in ascending id order."""
        for i, (d, t, s) in enumerate(zip(docs, texts, ts)):
            self.add(int(d), t, float(s), roles[i] if roles is not None else "", int(groups[i]) if groups is not None else 0)

    def delete(self, doc: int, text: str) -> None:
        """Unindex document ``doc``, whose text is ``text`` (as it was indexed)."""
        terms = index_terms(text)
        ids = np.array([self._vocab.get(t, 0x7FFFFFFF) for t in terms], dtype=np.uint32)
        with self._lock:
            rc = lib.ii_delete(self._ii, doc, ffi.from_buffer("uint32_t[]", ids), len(ids))
        if rc:
            _raise(self._ii, rc)

    def compact(self) -> None:
        """Drop the postings of deleted documents."""
        with self._lock:
            lib.ii_compact(self._ii)

    # ------------------------------------------------------------ reads

    def _set_filter(self, lo: float | None, hi: float | None, roles: int | None, allow: np.ndarray | None) -> Any:
        f = self._filter
        f.ts_lo = -math.inf if lo is None else lo
        f.ts_hi = math.inf if hi is None else hi
        f.roles = _ALL_ROLES if roles is None else roles
        if allow is None:
            f.allow, f.nallow = ffi.NULL, 0
        else:
            f.allow, f.nallow = ffi.from_buffer("uint64_t[]", allow), 64 * len(allow)
        return f

    def search(self, query: str | Sequence[str], k: int, *, lo: float | None = None, hi: float | None = None,
               roles: int | None = None, allow: np.ndarray | None = None,
               exact_max: int | None = None) -> TextHits:
        """The ``k`` best documents for ``query`` (free text, or stemmed terms; a term
        listed twice weighs twice, as in FTS5) by BM25.

        Filters: ``lo``/``hi`` inclusive timestamp bounds, ``roles`` a mask from
        :meth:`roles_mask`, ``allow`` a bitmap (uint64 words) over document ids.
        ``exact_max``: count the matches exactly when the query's posting lists hold
        at most this many postings (default :data:`DEFAULT_EXACT_MAX`).
        """
        if exact_max is None:
            exact_max = DEFAULT_EXACT_MAX
        weights: dict[int, float] = {}  # term id -> times listed, in first-seen order
        vocab = self._vocab
        for t in query_terms(query) if isinstance(query, str) else query:
            tid = vocab.get(t)
            if tid is not None and (tid in weights or len(weights) < lib.II_MAX_TERMS):
                weights[tid] = weights.get(tid, 0.0) + 1.0
        k = min(max(k, 0), len(self))  # never more than the documents held (a far page asks for a deep k)
        docs = np.empty(k, dtype=np.uint32)
        scores = np.empty(k, dtype=np.float64)
        if not weights:
            return TextHits(docs[:0], scores[:0], 0, True)
        q = np.fromiter(weights, dtype=np.uint32, count=len(weights))
        w = np.fromiter(weights.values(), dtype=np.float64, count=len(weights))
        with self._lock:
            f = self._set_filter(lo, hi, roles, allow)
            rc = lib.ii_search(self._ii, ffi.from_buffer("uint32_t[]", q), ffi.from_buffer("double[]", w), len(q),
                               f, k, exact_max,
                               ffi.from_buffer("uint32_t[]", docs), ffi.from_buffer("double[]", scores),
                               self._nout, self._total, self._exact)
            if rc:
                _raise(self._ii, rc)
            n, total, exact = self._nout[0], int(self._total[0]), bool(self._exact[0])
        return TextHits(docs[:n], scores[:n], total, exact)

    def neighbours(self, docs: np.ndarray, *, max_gap: float = math.inf, lo: float | None = None,
                   hi: float | None = None, roles: int | None = None,
                   allow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each document's previous and next document in its group (0: none), both
        admitted by the filters and within ``max_gap`` seconds of it, and whether
        the document itself asks a question (bool array)."""
        d = np.ascontiguousarray(docs, dtype=np.uint32)
        prev = np.zeros(len(d), dtype=np.uint32)
        nxt = np.zeros(len(d), dtype=np.uint32)
        flags = np.zeros(len(d), dtype=np.uint8)
        with self._lock:
            f = self._set_filter(lo, hi, roles, allow)
            lib.ii_neighbours(self._ii, ffi.from_buffer("uint32_t[]", d), len(d), f, max_gap,
                              ffi.from_buffer("uint32_t[]", prev), ffi.from_buffer("uint32_t[]", nxt),
                              ffi.from_buffer("uint8_t[]", flags))
        return prev, nxt, (flags & lib.II_ASKS).astype(bool)

    def fuse(self, tdocs: np.ndarray, tscores: np.ndarray, vdocs: np.ndarray, vsims: np.ndarray, *,
             text_weight: float, context: tuple[float, float, float] = (0.0, 0.0, 0.0),
             max_gap: float = math.inf, lo: float | None = None, hi: float | None = None,
             roles: int | None = None, allow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Hybrid ranking in C: :func:`vmem.rank.fuse` (convex, ``text_weight``) of a text
        and a vector top-k (unique document ids each), then :func:`vmem.rank.spread` with
        ``context`` = (forward from a question, forward from a statement, backward) over
        the neighbours the filters admit. Returns (docs, scores), best first."""
        td = np.ascontiguousarray(tdocs, dtype=np.uint32)
        ts = np.ascontiguousarray(tscores, dtype=np.float64)
        vd = np.ascontiguousarray(vdocs, dtype=np.uint32)
        vs = np.ascontiguousarray(vsims, dtype=np.float64)
        if len(td) != len(ts) or len(vd) != len(vs):
            raise InvalidArgument("fuse: ids and scores differ in length")
        cap = 3 * (len(td) + len(vd))
        docs = np.empty(cap, dtype=np.uint32)
        scores = np.empty(cap, dtype=np.float64)
        scratch = np.empty(lib.ii_fuse_scratch(len(td), len(vd)), dtype=np.uint64)
        p = ffi.new("ii_fuse_params *", {"text_weight": text_weight, "fwd_ask": context[0], "fwd_stmt": context[1],
                                         "bwd": context[2], "max_gap": max_gap})
        with self._lock:
            f = self._set_filter(lo, hi, roles, allow)
            rc = lib.ii_fuse(self._ii, ffi.from_buffer("uint32_t[]", td), ffi.from_buffer("double[]", ts), len(td),
                             ffi.from_buffer("uint32_t[]", vd), ffi.from_buffer("double[]", vs), len(vd), f, p,
                             ffi.from_buffer("uint32_t[]", docs), ffi.from_buffer("double[]", scores), cap,
                             self._nout, ffi.from_buffer("uint64_t[]", scratch), len(scratch))
            if rc:
                _raise(self._ii, rc)
            n = self._nout[0]
        return docs[:n], scores[:n]

    def explain(self, query: str | Sequence[str], docs: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray,
                                                                          np.ndarray]:
        """Why ``docs`` match ``query``: its distinct stemmed terms (the first
        ``II_MAX_TERMS``), for each document a bit mask of those it holds (bit i = term
        i; 0 for a document not indexed) and its timestamp (NaN if not indexed), and
        each term's idf as :meth:`search` weighs it (0 for a term no document holds)."""
        terms = list(dict.fromkeys(query_terms(query) if isinstance(query, str) else query))[: lib.II_MAX_TERMS]
        vocab = self._vocab
        ids = np.fromiter((vocab.get(t, 0xFFFFFFFF) for t in terms), dtype=np.uint32, count=len(terms))
        d = np.ascontiguousarray(docs, dtype=np.uint32)
        masks = np.zeros(len(d), dtype=np.uint64)
        ts = np.zeros(len(d), dtype=np.float64)
        idf = np.zeros(len(terms), dtype=np.float64)
        with self._lock:
            rc = lib.ii_explain(self._ii, ffi.from_buffer("uint32_t[]", ids), len(ids), ffi.from_buffer("uint32_t[]", d),
                                len(d), ffi.from_buffer("uint64_t[]", masks), ffi.from_buffer("double[]", ts),
                                ffi.from_buffer("double[]", idf))
            if rc:
                _raise(self._ii, rc)
        return terms, masks, ts, idf

    def timestamps(self, docs: np.ndarray) -> np.ndarray:
        """Each document's timestamp as it was added (float64; NaN for a document not
        indexed): what a ranking reads instead of a query on the store's table."""
        d = np.ascontiguousarray(docs, dtype=np.uint32)
        ts = np.empty(len(d), dtype=np.float64)
        if not len(d):
            return ts
        none = np.zeros(0, dtype=np.uint32)
        masks = np.empty(len(d), dtype=np.uint64)
        idf = np.zeros(1, dtype=np.float64)
        with self._lock:
            rc = lib.ii_explain(self._ii, ffi.from_buffer("uint32_t[]", none), 0, ffi.from_buffer("uint32_t[]", d),
                                len(d), ffi.from_buffer("uint64_t[]", masks), ffi.from_buffer("double[]", ts),
                                ffi.from_buffer("double[]", idf))
            if rc:
                _raise(self._ii, rc)
        return ts

    def __len__(self) -> int:
        with self._lock:
            lib.ii_stats_get(self._ii, self._stats)
            return int(self._stats.docs)

    def __contains__(self, doc: object) -> bool:
        if not isinstance(doc, (int, np.integer)) or not 0 <= int(doc) < 1 << 32:
            return False
        with self._lock:
            return bool(lib.ii_is_live(self._ii, int(doc)))

    def ids(self) -> np.ndarray:
        """Live document ids, ascending."""
        with self._lock:
            n = lib.ii_docs(self._ii, ffi.NULL, 0)
            out = np.empty(n, dtype=np.uint32)
            lib.ii_docs(self._ii, ffi.from_buffer("uint32_t[]", out), n)
        return out

    def stats(self) -> dict[str, int]:
        """Counts: docs, next_doc, tokens, terms, postings, dead, memory (bytes)."""
        s = ffi.new("ii_stats *")
        with self._lock:
            lib.ii_stats_get(self._ii, s)
        return {k: int(getattr(s, k)) for k in ("docs", "next_doc", "tokens", "terms", "postings", "dead", "memory")}

    def check(self) -> None:
        """Verify the C index's invariants (InvariantError if one is broken)."""
        with self._lock:
            rc = lib.ii_check(self._ii)
        if rc:
            _raise(self._ii, rc)

    # ------------------------------------------------------------ persistence

    def snapshot(self) -> bytes:
        """The C index as bytes (vocabulary and roles not included)."""
        with self._lock:
            size = lib.ii_snapshot_size(self._ii)
            buf = bytearray(size)
            written = ffi.new("size_t *")
            rc = lib.ii_snapshot(self._ii, ffi.from_buffer("uint8_t[]", buf), size, written)
            if rc:
                _raise(self._ii, rc)
        return bytes(buf[: written[0]])

    def save(self, path: str | os.PathLike[str], owner: str) -> None:
        """Write the index to ``path`` atomically; ``owner`` tags whose cache it is."""
        path = Path(path)
        with self._lock:
            vocab = list(self._vocab)
            roles = list(self._roles)
        payload = self.snapshot()
        header = {"format": _FORMAT, "analyzer": ANALYZER, "owner": owner, "vocab": vocab, "roles": roles,
                  "payload_size": len(payload), "payload_blake2b": _digest(payload, vocab, roles)}
        blob = msgpack.packb(header, use_bin_type=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.write(_MAGIC + struct.pack("<I", len(blob)) + blob)
                out.write(payload)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str], owner: str) -> TextIndex:
        """Read a file written by :meth:`save` for ``owner`` (IndexFormatError if it is
        not one, is damaged, or belongs to another owner or analyzer)."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise
        except OSError as e:
            raise IndexFormatError(f"cannot read text index {path}: {e}") from e
        if data[:8] != _MAGIC or len(data) < 12:
            raise IndexFormatError(f"{path}: not a vmem text index")
        (hlen,) = struct.unpack("<I", data[8:12])
        try:
            header = msgpack.unpackb(data[12 : 12 + hlen], raw=False)
            ok = isinstance(header, dict) and header.get("format") == _FORMAT
        except Exception as e:
            raise IndexFormatError(f"{path}: damaged header: {e}") from e
        if not ok:
            raise IndexFormatError(f"{path}: unknown text index format")
        if header.get("analyzer") != ANALYZER or header.get("owner") != owner:
            raise IndexFormatError(f"{path}: an index of {header.get('owner')!r} ({header.get('analyzer')}), not {owner!r}")
        payload = data[12 + hlen :]
        vocab, roles = header.get("vocab"), header.get("roles")
        if not isinstance(vocab, list) or not isinstance(roles, list) or \
                not all(isinstance(t, str) for t in vocab) or not all(isinstance(r, str) for r in roles):
            raise IndexFormatError(f"{path}: damaged header (vocabulary or roles)")
        if len(payload) != header.get("payload_size") or _digest(payload, vocab, roles) != header.get("payload_blake2b"):
            raise IndexFormatError(f"{path}: checksum mismatch (damaged file)")
        if len(set(vocab)) != len(vocab) or len(set(roles)) != len(roles):
            raise IndexFormatError(f"{path}: the vocabulary or the roles repeat an entry")
        index = cls()
        rc = lib.ii_restore(index._ii, ffi.from_buffer("uint8_t[]", payload), len(payload))
        if rc:
            message = ffi.string(lib.ii_errmsg(index._ii)).decode("utf-8", "replace")
            raise IndexFormatError(f"{path}: {message}")
        index._vocab = {t: i for i, t in enumerate(header["vocab"])}
        index._roles = {r: min(i, _OTHER_ROLE) for i, r in enumerate(header["roles"])}
        if index.stats()["terms"] > len(index._vocab):
            raise IndexFormatError(f"{path}: the snapshot has more terms than the vocabulary")
        return index
