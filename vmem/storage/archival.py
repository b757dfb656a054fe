"""Archival storage: the interface every backend implements, and the search logic they share.

Interface (what the kernel calls)::

    ids = archival.insert(text, tags=(), timestamp=None)        # page ids of its passages
    idss = archival.insert_many(texts, tags=(), timestamp=None) # one transaction / batch
    archival.get(id); archival.get_many(ids); archival.delete(ids); len(archival)
    archival.search(query=None, *, vector=None, mode="hybrid"|"text"|"vector",
                    tags=None, tags_match="any"|"all", start=None, end=None,
                    page=0, page_size=10) -> SearchPage[Passage]

A long text is split into bounded passages (:func:`~vmem.storage.chunk.split_passages`).
A passage whose exact text is stored already is not stored again: its existing
id is returned, and the new tags are added to it (its timestamp is kept).

Search semantics, the same for every backend:

- ``text``: BM25 over the passages' words; ``total`` counts matching passages
  (exact when cheap, else an estimate: ``SearchPage.total_is_exact``).
- ``vector``: cosine similarity to ``vector`` (or to the embedded ``query``);
  every passage that passes the filters is a candidate, so ``total`` is their count.
- ``hybrid``: text and vector rankings fused by :func:`vmem.rank.fuse`, then,
  where the backend knows the passages' order (SQLite), conversation context
  (:func:`vmem.rank.spread`); without a searchable query it is a vector
  search. ``total`` as for vector.
- neither a query nor a vector: the filtered passages, newest first (score 0.0).

Filters (``tags`` with ``tags_match``, ``start``/``end``) restrict the candidate
set *before* the top-k cut, so a page is full whenever enough passages match.
Paging is 0-based; ``pages = ceil(total / page_size)``. Vector and hybrid
rankings are computed ``PAGE_BUCKET`` (100) results at a time, so the pages
within the first 100 results (and within each later bucket) are exactly
disjoint and complete even though HNSW and fusion results depend on depth;
across a bucket boundary an approximate search may shift an item.

Backends implement the primitives at the bottom of :class:`ArchivalStore`
(``_insert``, ``_text_hits``, ``_vector_hits``, ``_list``, ``_count``, ``_fetch``...).
"""

from __future__ import annotations

import abc
import datetime as _dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np

from vmem.pageid import PageKind, page_kind
from vmem.storage.chunk import DEFAULT_MAX_CHARS, split_passages
from vmem.storage.errors import NotFoundError
from vmem.storage.records import (
    Hit,
    Passage,
    SearchPage,
    TimeBound,
    check_paging,
    epoch_range,
    page_count,
    to_epoch,
    utcnow,
)

__all__ = ["ArchivalStore", "PassageFilter", "SearchMode", "TagsMatch", "norm_tags", "passage_hash"]

SearchMode = Literal["hybrid", "text", "vector"]
TagsMatch = Literal["any", "all"]

#: Vector and hybrid searches rank results in buckets of this many (see search()).
PAGE_BUCKET = 100
#: Longest tag accepted (characters).
MAX_TAG_CHARS = 256
#: Most tags on one passage.
MAX_TAGS = 64


@dataclass(frozen=True)
class PassageFilter:
    """The filters of one archival search: tags (any/all) and an inclusive epoch range."""

    tags: tuple[str, ...] | None = None
    match_all: bool = False
    lo: float | None = None
    hi: float | None = None

    @property
    def empty(self) -> bool:
        """True when nothing is filtered out."""
        return self.tags is None and self.lo is None and self.hi is None


def norm_tags(tags: Iterable[str] | str | None) -> tuple[str, ...]:
    """Validate tags: strings, stripped, non-empty, deduplicated in order."""
    if tags is None:
        return ()
    if isinstance(tags, str):
        tags = [tags]
    out: list[str] = []
    for t in tags:
        if not isinstance(t, str):
            raise TypeError(f"tags must be strings, got {type(t).__name__}")
        t = t.strip()
        if not t:
            raise ValueError("tags must not be empty")
        if len(t) > MAX_TAG_CHARS:
            raise ValueError(f"tag longer than {MAX_TAG_CHARS} characters: {t[:40]!r}...")
        if t not in out:
            out.append(t)
    if len(out) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per passage, got {len(out)}")
    return tuple(out)


def passage_hash(text: str) -> bytes:
    """The content hash that makes a passage unique (BLAKE2b-128 of its UTF-8 text)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _check_page_ids(page_ids: Iterable[int], who: str) -> list[int]:
    out = []
    for p in page_ids:
        if not isinstance(p, (int, np.integer)) or isinstance(p, bool):
            raise TypeError(f"{who}: page ids must be ints, got {type(p).__name__}")
        p = int(p)
        if p <= 0 or page_kind(p) is not PageKind.PASSAGE:
            raise ValueError(f"{who}: {p:#x} is not a PASSAGE page id")
        out.append(p)
    return out


class ArchivalStore(abc.ABC):
    """Long-term passages searchable by text and meaning (the "disk" tier).

    Subclasses: :class:`~vmem.storage.sqlite.SqliteArchival` (embedded default)
    and :class:`~vmem.storage.milvus.MilvusArchival` (scale-out).
    """

    #: Name of the backend ("sqlite", "milvus").
    backend: str

    def __init__(
        self,
        embedder: Any,
        *,
        fts_query: Callable[[str], str | None],
        fuse: Callable[..., list[tuple[int, float]]] | None,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        self.embedder = embedder
        self.max_chars = max_chars
        self._fts_query = fts_query
        self._fuse = fuse
        #: Writes made through this object (inserts and deletes), counted as they are asked for:
        #: a cheap way for a cache of the store's size to tell that it is stale.
        self.changes = 0

    # -- public API

    def insert(
        self, text: str, *, tags: Iterable[str] | str = (), timestamp: _dt.datetime | None = None
    ) -> list[int]:
        """Store ``text`` (split into passages if long); return the passages' page ids.

        An exact duplicate of a stored passage returns the stored id (and adds
        ``tags`` to it). Returns once the write is durable.
        """
        return self.insert_many([text], tags=tags, timestamp=timestamp)[0]

    def insert_many(
        self,
        texts: Sequence[str],
        *,
        tags: Iterable[str] | str = (),
        timestamp: _dt.datetime | None = None,
    ) -> list[list[int]]:
        """Store several texts at once (one transaction, one embedding batch).

        Returns, for each text, the page ids of its passages. All or nothing.
        """
        if isinstance(texts, str):
            raise TypeError("insert_many() takes a sequence of texts; use insert() for one")
        tag_t = norm_tags(tags)
        ts = to_epoch(timestamp if timestamp is not None else utcnow())
        chunked = [split_passages(t, self.max_chars) for t in texts]
        flat = [c for cs in chunked for c in cs]
        if not flat:
            return [[] for _ in chunked]
        self.changes += 1
        ids = self._insert(flat, [passage_hash(c) for c in flat], tag_t, ts)
        out: list[list[int]] = []
        pos = 0
        for cs in chunked:
            out.append(ids[pos : pos + len(cs)])
            pos += len(cs)
        return out

    def get(self, page_id: int) -> Passage:
        """The passage with this page id (NotFoundError if none)."""
        return self.get_many([page_id])[0]

    def get_many(self, page_ids: Iterable[int], *, missing_ok: bool = False) -> list[Passage]:
        """The passages with these ids, in the order given (NotFoundError if one is missing,
        unless ``missing_ok``: then those are left out)."""
        ids = _check_page_ids(page_ids, "archival.get")
        found = self._fetch(ids)
        missing = [i for i in ids if i not in found]
        if missing and not missing_ok:
            raise NotFoundError(f"no passage with page id {missing[0]:#x} ({len(missing)} missing)")
        return [found[i] for i in ids if i in found]

    def delete(self, page_ids: Iterable[int]) -> int:
        """Delete passages; return how many existed. Unknown ids are ignored."""
        ids = _check_page_ids(page_ids, "archival.delete")
        self.changes += 1
        return self._delete(ids) if ids else 0

    def search(
        self,
        query: str | None = None,
        *,
        vector: Any = None,
        mode: SearchMode = "hybrid",
        tags: Iterable[str] | str | None = None,
        tags_match: TagsMatch = "any",
        start: TimeBound = None,
        end: TimeBound = None,
        page: int = 0,
        page_size: int = 10,
        depth: int | None = None,
    ) -> SearchPage[Passage]:
        """Search the passages (see the module docstring for the semantics of each mode).

        ``vector``: a query embedding of the store's dimension (for ``vector`` /
        ``hybrid``), used instead of embedding ``query``. ``tags``: keep
        passages with any (``tags_match="any"``) or all (``"all"``) of them;
        None or empty means no tag filter. ``start``/``end``: inclusive bounds.
        ``depth``: how many results the vector and hybrid rankings look at (default:
        ``PAGE_BUCKET`` at a time, which keeps the pages of one search disjoint and
        complete); a caller that wants one short page and no other (the kernel's
        prefetch) may look less deep, and faster.
        """
        check_paging(page, page_size)
        if depth is not None and (not isinstance(depth, int) or depth < 1):
            raise ValueError(f"depth must be a positive int, got {depth!r}")
        if mode not in ("hybrid", "text", "vector"):
            raise ValueError(f"mode must be 'hybrid', 'text' or 'vector', got {mode!r}")
        if tags_match not in ("any", "all"):
            raise ValueError(f"tags_match must be 'any' or 'all', got {tags_match!r}")
        if query is not None and not isinstance(query, str):
            raise TypeError(f"query must be str or None, got {type(query).__name__}")
        lo, hi = epoch_range(start, end)
        tag_t = norm_tags(tags) if tags is not None else ()
        f = PassageFilter(tag_t or None, tags_match == "all", lo, hi)
        q = query if query is not None and query.strip() else None
        vec = self._query_vector(vector) if vector is not None else None
        if mode == "text" and vec is not None:
            raise ValueError("mode='text' takes a query, not a vector")
        offset, stop = page * page_size, (page + 1) * page_size

        if q is None and vec is None:  # filter-only listing, newest first
            total = self._count(f)
            ranked = [(i, 0.0) for i in self._list(f, offset, page_size)]
            return self._page(ranked, page, page_size, total)

        if mode == "text":
            match = self._fts_query(q)  # type: ignore[arg-type]
            if match is None:
                return SearchPage([], page, 0, 0)
            ranked, total, exact = self._text_hits(q, match, f, offset, page_size)  # type: ignore[arg-type]
            return self._page(ranked, page, page_size, total, exact)

        total = self._ranked_count(f)
        if total == 0:
            return SearchPage([], page, 0, 0)
        if vec is None:
            vec = self._query_vector(self.embedder.embed_query([q])[0])
        # Rank a whole bucket of results at once: approximate (HNSW) searches
        # and the hybrid fusion depend on how deep they look, so pages of one
        # search must all come from the same depth to be disjoint and complete.
        deep = min(total, -(-stop // PAGE_BUCKET) * PAGE_BUCKET if depth is None else max(stop, depth))
        if mode == "vector" or q is None:
            ranked = self._vector_hits(vec, f, deep)[offset:]
            return self._page(ranked, page, page_size, total)

        fused = self._hybrid(q, vec, f, deep, stop)
        return self._page(fused[offset:], page, page_size, total)

    def close(self) -> None:
        """Release the backend's resources (idempotent)."""

    def checkpoint(self) -> None:
        """Persist caches (e.g. the vector index file); the data itself is always durable."""

    # -- shared helpers

    def _query_vector(self, vector: Any) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != self.embedder.dim:
            raise ValueError(f"vector has dimension {v.shape[0]}, the store's embedder has {self.embedder.dim}")
        n = float(np.linalg.norm(v))
        if not np.isfinite(n) or n == 0.0:
            raise ValueError("vector must be finite and non-zero")
        return v / n

    def _embed(self, texts: list[str]) -> np.ndarray:
        vecs = np.asarray(self.embedder.embed(texts), dtype=np.float32)
        if vecs.shape != (len(texts), self.embedder.dim):
            raise ValueError(
                f"embedder {self.embedder.name!r} returned shape {vecs.shape}, expected {(len(texts), self.embedder.dim)}"
            )
        return np.ascontiguousarray(vecs)

    def _page(self, ranked: list[tuple[int, float]], page: int, page_size: int, total: int,
              exact: bool = True) -> SearchPage[Passage]:
        ranked = ranked[:page_size]
        found = self._fetch([i for i, _ in ranked])
        hits = [Hit(found[i], s) for i, s in ranked if i in found]
        return SearchPage(hits, page, page_count(total, page_size), total, exact)

    def _hybrid(self, q: str, vec: np.ndarray, f: PassageFilter, deep: int, depth: int) -> list[tuple[int, float]]:
        """The hybrid ranking of ``deep`` text and ``deep`` vector hits, best first
        (at least its first ``depth`` entries, when there are that many)."""
        match = self._fts_query(q)
        text_ranked = self._text_hits(q, match, f, 0, deep)[0] if match is not None else []
        vec_ranked = self._vector_hits(vec, f, deep)
        if self._fuse is None:
            raise RuntimeError("hybrid search needs vmem.rank.fuse")
        return self._context([(int(i), float(s)) for i, s in self._fuse(text_ranked, vec_ranked)], f)

    def _context(self, ranked: list[tuple[int, float]], f: PassageFilter) -> list[tuple[int, float]]:
        """Re-rank a hybrid ranking with conversation context (backends that know the order)."""
        return ranked

    # -- backend primitives

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of stored passages."""

    @abc.abstractmethod
    def _insert(self, texts: list[str], hashes: list[bytes], tags: tuple[str, ...], ts: float) -> list[int]:
        """Store passages (deduplicating by hash); return one page id per text, in order."""

    @abc.abstractmethod
    def _delete(self, page_ids: list[int]) -> int:
        """Delete passages; return how many existed."""

    @abc.abstractmethod
    def _fetch(self, page_ids: list[int]) -> dict[int, Passage]:
        """The stored passages among ``page_ids``."""

    @abc.abstractmethod
    def _count(self, f: PassageFilter) -> int:
        """Number of passages passing ``f``."""

    def _ranked_count(self, f: PassageFilter) -> int:
        """Number of passages passing ``f`` that a ranked search can return."""
        return self._count(f)

    @abc.abstractmethod
    def _list(self, f: PassageFilter, offset: int, limit: int) -> list[int]:
        """Ids of passages passing ``f``, newest first, ``offset``/``limit`` applied."""

    @abc.abstractmethod
    def _text_hits(
        self, query: str, match: str, f: PassageFilter, offset: int, limit: int
    ) -> tuple[list[tuple[int, float]], int, bool]:
        """BM25 ranking of passages passing ``f``: ((id, score) best first, sliced; total
        matches; whether that total is exact).

        ``match`` is the FTS5-style expression of ``query`` (:func:`vmem.text.fts_query`;
        the SQLite backend analyses ``query`` itself).
        """

    @abc.abstractmethod
    def _vector_hits(self, vector: np.ndarray, f: PassageFilter, k: int) -> list[tuple[int, float]]:
        """The ``k`` passages passing ``f`` most similar to the unit ``vector``, best first.

        Must return ``min(k, count(f))`` results.
        """
