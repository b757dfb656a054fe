"""Archival storage: the interface every backend implements, and the search logic they share.

Interface (what the kernel calls)::

    ids = archival.insert(text, tags=(), timestamp=None, valid_from=None)  # page ids of its passages
    idss = archival.insert_many(texts, tags=(), timestamp=None, valid_from=None)  # one transaction
    archival.get(id); archival.get_many(ids); archival.delete(ids); len(archival)
    archival.supersede(old_ids, by, at) -> ids changed   # facts that stopped holding
    archival.search(query=None, *, vector=None, mode="hybrid"|"text"|"vector",
                    tags=None, tags_match="any"|"all", start=None, end=None, as_of=None,
                    page=0, page_size=10) -> SearchPage[Passage]

A long text is split into bounded passages (:func:`~vmem.storage.chunk.split_passages`).
A passage whose exact text is stored already as a current fact is not stored
again: its existing id is returned, and the new tags are added to it (its
timestamp and ``valid_from`` are kept). The same text as a *superseded* passage
is stored anew, as a fact that holds again.

Facts with a time: a passage held from ``valid_from`` (default: its timestamp)
and, once :meth:`ArchivalStore.supersede` marked it, until ``invalid_at``,
replaced by ``superseded_by``. Nothing is deleted. Without ``as_of`` a ranked
search (and a listing) puts every current passage that matches before every
superseded one: it ranks the current ones first, then the superseded ones, each
part by the mode's own scores (so scores fall within a part, not across the
boundary), and its pages stay disjoint and complete. With ``as_of`` only the
passages valid at that instant are candidates (a filter like the others).

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

Filters (``tags`` with ``tags_match``, ``start``/``end``, ``as_of``) restrict the candidate
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
from dataclasses import dataclass, replace
from typing import Any, Callable, Literal

import numpy as np

from vmem.pageid import PageKind, page_kind
from vmem.storage.chunk import DEFAULT_MAX_CHARS, split_passages
from vmem.storage.errors import NotFoundError, UnsupportedError
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
#: Which passages a filter keeps by their interval: current ones (not superseded), superseded ones, or any.
Validity = Literal["current", "superseded"] | None

#: Vector and hybrid searches rank results in buckets of this many (see search()).
PAGE_BUCKET = 100
#: Longest tag accepted (characters).
MAX_TAG_CHARS = 256
#: Most tags on one passage.
MAX_TAGS = 64


@dataclass(frozen=True)
class PassageFilter:
    """The filters of one archival search: tags (any/all), an inclusive epoch range of the
    passages' timestamps, and their interval: ``as_of`` (epoch seconds: only passages valid
    then, ``valid_from <= as_of < invalid_at``) and ``state`` (only current or only
    superseded passages)."""

    tags: tuple[str, ...] | None = None
    match_all: bool = False
    lo: float | None = None
    hi: float | None = None
    as_of: float | None = None
    state: Validity = None

    @property
    def empty(self) -> bool:
        """True when nothing is filtered out."""
        return self.tags is None and self.lo is None and self.hi is None and self.as_of is None and self.state is None

    @property
    def by_validity_only(self) -> bool:
        """True when the filter keeps passages by their interval alone (no tags, no dates)."""
        return self.tags is None and self.lo is None and self.hi is None and not self.empty


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
        self, text: str, *, tags: Iterable[str] | str = (), timestamp: _dt.datetime | None = None,
        valid_from: _dt.datetime | None = None,
    ) -> list[int]:
        """Store ``text`` (split into passages if long); return the passages' page ids.

        ``valid_from``: when the fact began to hold (default: ``timestamp``). An exact
        duplicate of a stored current passage returns the stored id (and adds ``tags`` to
        it). Returns once the write is durable.
        """
        return self.insert_many([text], tags=tags, timestamp=timestamp, valid_from=valid_from)[0]

    def insert_many(
        self,
        texts: Sequence[str],
        *,
        tags: Iterable[str] | str = (),
        timestamp: _dt.datetime | None = None,
        valid_from: _dt.datetime | Sequence[_dt.datetime] | None = None,
    ) -> list[list[int]]:
        """Store several texts at once (one transaction, one embedding batch).

        ``valid_from``: when the facts began to hold: one datetime for all, one per text,
        or None (``timestamp``). Returns, for each text, the page ids of its passages.
        All or nothing.
        """
        if isinstance(texts, str):
            raise TypeError("insert_many() takes a sequence of texts; use insert() for one")
        tag_t = norm_tags(tags)
        ts = to_epoch(timestamp if timestamp is not None else utcnow())
        if valid_from is None:
            froms = [ts] * len(texts)
        elif isinstance(valid_from, _dt.datetime):
            froms = [to_epoch(valid_from)] * len(texts)
        elif isinstance(valid_from, (str, bytes)) or not isinstance(valid_from, Sequence):
            raise TypeError(f"valid_from must be a datetime, a sequence of datetimes or None, "
                            f"got {type(valid_from).__name__}")
        else:
            if len(valid_from) != len(texts):
                raise ValueError(f"valid_from has {len(valid_from)} times for {len(texts)} texts")
            froms = [to_epoch(v) for v in valid_from]
        chunked = [split_passages(t, self.max_chars) for t in texts]
        flat = [c for cs in chunked for c in cs]
        if not flat:
            return [[] for _ in chunked]
        flat_from = [v for cs, v in zip(chunked, froms) for _ in cs]
        self.changes += 1
        ids = self._insert(flat, [passage_hash(c) for c in flat], tag_t, ts, flat_from)
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

    def supersede(self, old_ids: Sequence[int], by: int | None, at: _dt.datetime) -> list[int]:
        """Mark the still-current passages among ``old_ids`` as no longer holding from ``at``,
        replaced by the passage ``by`` (None: nothing replaced them); return the ids changed,
        in the order given (an already superseded passage is left as it is).

        Nothing is deleted: a superseded passage stays searchable, after the current ones.
        Raises NotFoundError for an id (or ``by``) that is not stored, ValueError when
        ``by`` is among ``old_ids`` or is itself superseded, or when ``at`` is before a
        passage's ``valid_from`` (an interval cannot end before it begins).
        UnsupportedError on a backend that keeps no intervals (Milvus).
        """
        if isinstance(old_ids, (int, np.integer)):
            raise TypeError("supersede() takes a sequence of page ids for old_ids")
        ids = list(dict.fromkeys(_check_page_ids(old_ids, "archival.supersede")))
        by_id = _check_page_ids([by], "archival.supersede")[0] if by is not None else None
        if by_id is not None and by_id in ids:
            raise ValueError(f"archival.supersede: passage {by_id:#x} cannot supersede itself")
        at_e = to_epoch(at)
        if not ids:
            return []
        self.changes += 1
        return self._supersede(ids, by_id, at_e)

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
        as_of: _dt.datetime | None = None,
        page: int = 0,
        page_size: int = 10,
        depth: int | None = None,
    ) -> SearchPage[Passage]:
        """Search the passages (see the module docstring for the semantics of each mode).

        ``vector``: a query embedding of the store's dimension (for ``vector`` /
        ``hybrid``), used instead of embedding ``query``. ``tags``: keep
        passages with any (``tags_match="any"``) or all (``"all"``) of them;
        None or empty means no tag filter. ``start``/``end``: inclusive bounds
        on the passages' timestamps. ``as_of``: only the facts that held at that
        instant (without it: all, current ones first).
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
        if as_of is not None and not isinstance(as_of, _dt.datetime):
            raise TypeError(f"as_of must be a timezone-aware datetime or None, got {type(as_of).__name__}")
        f = PassageFilter(tag_t or None, tags_match == "all", lo, hi, None if as_of is None else to_epoch(as_of))
        q = query if query is not None and query.strip() else None
        vec = self._query_vector(vector) if vector is not None else None
        if mode == "text" and vec is not None:
            raise ValueError("mode='text' takes a query, not a vector")
        offset, stop = page * page_size, (page + 1) * page_size
        if f.as_of is None:
            old = self._superseded_count(f)
            if old:
                return self._search_current_first(q, vec, mode, f, old, page, page_size, depth)

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
            vec = self._query_vector(self.embedder.embed([q])[0])
        # Rank a whole bucket of results at once: approximate (HNSW) searches
        # and the hybrid fusion depend on how deep they look, so pages of one
        # search must all come from the same depth to be disjoint and complete.
        deep = min(total, -(-stop // PAGE_BUCKET) * PAGE_BUCKET if depth is None else max(stop, depth))
        if mode == "vector" or q is None:
            ranked = self._vector_hits(vec, f, deep)[offset:]
            return self._page(ranked, page, page_size, total)

        fused = self._hybrid(q, vec, f, deep, stop)
        return self._page(fused[offset:], page, page_size, total)

    def _search_current_first(self, q: str | None, vec: np.ndarray | None, mode: SearchMode, f: PassageFilter,
                              old: int, page: int, page_size: int, depth: int | None) -> SearchPage[Passage]:
        """search() when ``old`` (> 0) superseded passages pass ``f``: the ranking of the current
        passages, then that of the superseded ones. The first part is complete before the
        second begins (a part shorter than the page's end holds every match of its kind),
        so pages stay disjoint and complete."""
        cur_f, old_f = replace(f, state="current"), replace(f, state="superseded")
        offset, stop = page * page_size, (page + 1) * page_size
        if q is None and vec is None:  # listing: current newest first, then superseded newest first
            n_cur = self._count(cur_f)
            ids = self._list(cur_f, offset, page_size) if offset < n_cur else []
            if len(ids) < page_size:
                ids += self._list(old_f, max(0, offset - n_cur), page_size - len(ids))
            return self._page([(i, 0.0) for i in ids], page, page_size, n_cur + old)
        if mode == "text":
            match = self._fts_query(q)  # type: ignore[arg-type]
            if match is None:
                return SearchPage([], page, 0, 0)
            cur, n_cur, cur_exact = self._text_hits(q, match, cur_f, 0, stop)  # type: ignore[arg-type]
            rest, n_old, old_exact = self._text_hits(q, match, old_f, 0, max(0, stop - len(cur)))  # type: ignore[arg-type]
            return self._page((cur + rest)[offset:], page, page_size, n_cur + n_old, cur_exact and old_exact)
        total = self._ranked_count(f)
        if total == 0:
            return SearchPage([], page, 0, 0)
        if vec is None:
            vec = self._query_vector(self.embedder.embed([q])[0])
        deep = min(total, -(-stop // PAGE_BUCKET) * PAGE_BUCKET if depth is None else max(stop, depth))
        n_cur = max(0, total - old)
        vector_only = mode == "vector" or q is None
        parts: list[tuple[int, float]] = []
        for part_f, n in ((cur_f, n_cur), (old_f, old)):
            need = stop - len(parts)
            if need <= 0 or n == 0:
                continue
            k = min(n, deep)
            parts += self._vector_hits(vec, part_f, k) if vector_only else self._hybrid(q, vec, part_f, k, need)  # type: ignore[arg-type]
        return self._page(parts[offset:], page, page_size, total)

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
    def _insert(self, texts: list[str], hashes: list[bytes], tags: tuple[str, ...], ts: float,
                valid_from: list[float]) -> list[int]:
        """Store passages (deduplicating by hash among current passages), each valid from its
        ``valid_from`` (epoch seconds); return one page id per text, in order."""

    def _supersede(self, page_ids: list[int], by: int | None, at: float) -> list[int]:
        """Mark the current passages among ``page_ids`` invalid from ``at``, replaced by ``by``;
        the ids changed (see :meth:`supersede` for the errors)."""
        raise UnsupportedError(f"the {self.backend} archival backend keeps no intervals of facts: "
                               "supersede() needs the SQLite backend")

    def _superseded_count(self, f: PassageFilter) -> int:
        """Number of superseded passages passing ``f`` (0 on a backend that keeps no intervals)."""
        return 0

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
