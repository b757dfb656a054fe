"""Archival storage in the MemoryDir's SQLite file, with an HNSW index file as a cache.

Layout: table ``passages`` (text, content hash UNIQUE, epoch ts, tags, the
embedding as a little-endian float16 blob of the unit vector (:mod:`vmem.storage.vecblob`), and ``grp``: the id of the first
passage its insert call stored), ``passage_tags`` for filtering. Two caches
of it: the vector index in ``<dir>/archival.idx`` (:class:`vmem.index.PageIndex`
format) and the text index in ``<dir>/archival.tix`` (BM25 in C,
:mod:`vmem.storage.lexical`).

Invariants:

1. SQLite is the truth; the index file is a cache of the ``embedding`` column, and holds
   the graph, not the vectors: loading it reads them from the database (a tenth of the
   bytes of a file with its own float32 copy, at 384 dimensions).
   The index loads in the background from the moment the store opens (a thread
   of its own, reading a committed snapshot through a connection of its own), so
   an open costs the text indexes only and a step that does not search by vector
   never waits; the first use of the index waits for the rest of the load (a
   read-only store, which sees one snapshot through its own connection, loads it
   at that first use instead). The load *reconciles* it: a missing, unreadable,
   foreign (other dimension or embedder) index is rebuilt from the stored
   embeddings, without calling the embedder; an index behind the database (a
   crash before it was saved) gets the missing rows added, ids it has and the
   database does not are deleted from it, and a sample of its vectors is
   compared with the database's.
2. In memory, the index holds exactly the committed passages: rows are added
   to it after ``COMMIT`` (a post-commit hook), never before.
3. Every stored embedding was made by the embedder named in meta
   ``embedder``; opening with another embedder re-embeds every passage (in
   one transaction) before anything else.
4. Filtered vector search scores an SQL-prefiltered candidate set: exactly
   (dot products) when it is small, else by HNSW with a membership filter,
   which falls back to exact scoring itself when the graph comes up short,
   so ``min(k, candidates)`` results are always returned.
5. The text index follows the same rules as the vector index (1, 2); text
   search filters dates inside the index, and tags and intervals through a
   bitmap of the admitted passages, before the top-k cut.
6. Intervals: ``valid_from`` is set on every row (the insert's timestamp unless
   given); ``invalid_at`` and ``superseded_by`` are both NULL (a current fact)
   or ``invalid_at >= valid_from``. A current passage's ``hash`` is its content
   hash (UNIQUE, so the same text is stored once as a current fact); a
   superseded one's is the content hash followed by its serial (8 bytes, big
   endian), which frees the content hash for the same text stated anew.

Conversation context: passages stored by one insert call (a conversation's
turns, or the chunks of one long text) keep their order, and hybrid search
passes a share of each hit's relevance to the passage after it (more when the
hit asks a question) and the one before it in the same call
(:func:`vmem.rank.spread`, shares ``context``).

Dates in queries: when a hybrid query names a calendar date ("in May 2023", "on
13 October"), passages stored within its window (:func:`vmem.when.query_window`)
gain ``date_bonus`` times the best hit's score before the cut.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

from vmem.pageid import PageKind, make_page_id, page_serial
from vmem.storage import vecblob
from vmem.storage._db import Database, fsync_dir
from vmem.storage.index_load import Cancelled, IndexLoad, Reader
from vmem.rank import DEFAULT_TEXT_WEIGHT, spread
from vmem.ties import DEFAULT_TIE_BREAK, TIE_WINDOW, TieBreak
from vmem.storage.archival import ArchivalStore, PassageFilter
from vmem.storage.errors import NotFoundError, VmemStorageError
from vmem.storage.lexical import LexicalCache
from vmem.storage.recall import bitmap
from vmem.storage.records import Passage, from_epoch
from vmem.when import date_boosted, query_window

if TYPE_CHECKING:
    from vmem.index import ExactIndex, PageIndex

__all__ = ["DEFAULT_CONTEXT", "DEFAULT_DATE_BONUS", "EXACT_MAX", "SqliteArchival"]

#: (forward from a question, forward from a statement, backward) shares of
#: :func:`vmem.rank.spread` in hybrid search: what 6 of the 7 leave-one-conversation-out
#: folds on the LoCoMo dev split chose (select_context_loco in vmem/evaluation.py;
#: the seventh chose 0.75/0.25/0.25), each fold on the other six conversations only.
DEFAULT_CONTEXT = (0.75, 0.0, 0.25)
#: Share of the best hit's score that hybrid search adds to passages stored within the window
#: of a date the query names (vmem.when.query_window): what all 7 leave-one-conversation-out folds
#: on the LoCoMo dev split chose among 0 / 0.1 / 0.25 / 0.5 / 1, each on the other six conversations
#: with no question category allowed below the search before it; held out, R@10 74.4 -> 75.9 and
#: R@25 81.4 -> 82.7 (bench/embedders.py; docs/design.md, "Embedders and dates in queries").
DEFAULT_DATE_BONUS = 0.5

log = logging.getLogger("vmem.storage")

#: Filtered vector searches with at most this many candidates are scored exactly.
EXACT_MAX = 4096
#: Passages compared between the index and SQLite when an index file is loaded.
SPOT_CHECK = 32
_BATCH = 4096
_PROGRESS_BATCH = 256  # rows per batch when someone watches a re-embedding
#: Largest difference per component between the index's vectors and the stored ones that a spot
#: check accepts: float16 rounding (vecblob) and an index renormalising what it is given.
SPOT_ATOL = 1e-3

#: Rows per fetch of the index load's scan of the embeddings (a close() stops it between two).
_SCAN_BATCH = 50_000

_PCOLS = "p.id, p.text, p.tags, p.ts, p.valid_from, p.invalid_at, p.superseded_by"
_SERIAL_MASK = (1 << 56) - 1


def _pid(serial: int) -> int:
    return make_page_id(PageKind.PASSAGE, serial)


def _where(f: PassageFilter) -> tuple[str, list[Any]]:
    """SQL condition (over alias ``p``) and arguments for a passage filter."""
    parts: list[str] = []
    args: list[Any] = []
    if f.tags:
        marks = ",".join("?" * len(f.tags))
        if f.match_all and len(f.tags) > 1:
            parts.append(
                f"p.id IN (SELECT passage_id FROM passage_tags WHERE tag IN ({marks}) "
                "GROUP BY passage_id HAVING count(*) = ?)"
            )
            args.extend(f.tags)
            args.append(len(f.tags))
        else:
            parts.append(f"p.id IN (SELECT passage_id FROM passage_tags WHERE tag IN ({marks}))")
            args.extend(f.tags)
    if f.lo is not None:
        parts.append("p.ts >= ?")
        args.append(f.lo)
    if f.hi is not None:
        parts.append("p.ts <= ?")
        args.append(f.hi)
    if f.as_of is not None:
        parts.append("p.valid_from <= ? AND (p.invalid_at IS NULL OR p.invalid_at > ?)")
        args.extend((f.as_of, f.as_of))
    if f.state == "current":
        parts.append("p.invalid_at IS NULL")
    elif f.state == "superseded":
        parts.append("p.invalid_at IS NOT NULL")
    return " AND ".join(parts) or "1", args


def _complement(ids: np.ndarray, n: int) -> np.ndarray:
    """A uint64 bitmap over serials ``0 .. n-1`` (and up to the largest of ``ids``) with every
    bit set except those of ``ids``."""
    top = max(n, int(ids.max()) + 1 if len(ids) else 0)
    words = np.full(top // 64 + 1, np.uint64(0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    if len(ids):
        ids = ids.astype(np.int64)
        np.bitwise_and.at(words, ids >> 6, ~np.left_shift(np.uint64(1), (ids & 63).astype(np.uint64)))
    return words


def _both(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    """The intersection of two allow bitmaps (None: allows everything)."""
    if a is None or b is None:
        return b if a is None else a
    n = min(len(a), len(b))
    return a[:n] & b[:n]


class SqliteArchival(ArchivalStore):
    """Archival storage in SQLite plus two index caches: text (BM25, C) and vectors (HNSW by default).

    Made by :meth:`MemoryDir.open`; ``index_cls`` is :class:`vmem.index.PageIndex`
    or :class:`vmem.index.ExactIndex` (anything with their interface).
    """

    backend = "sqlite"

    def __init__(
        self,
        db: Database,
        embedder: Any,
        index_path: Path,
        *,
        index_cls: type[PageIndex] | type[ExactIndex],
        lexical: LexicalCache,
        fts_query: Callable[[str], str | None],
        fuse: Callable[..., list[tuple[int, float]]],
        index_errors: tuple[type[BaseException], ...] = (ValueError,),
        autosave: int = 50_000,
        context: tuple[float, float, float] = DEFAULT_CONTEXT,
        tie_break: TieBreak | None = DEFAULT_TIE_BREAK,
        on_reembed: Callable[[int, int], None] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(embedder, fts_query=fts_query, fuse=fuse, **kw)
        self._db = db
        self.lexical = lexical
        #: (forward from a question, forward from a statement, backward) relevance
        #: shares passed to neighbouring passages in hybrid search; zeros turn it off.
        self.context = context
        #: Hybrid search: near-ties between passages about the same thing go to the one that
        #: began to hold last (its ``valid_from``); None turns it off.
        self.tie_break = tie_break
        #: Share of the best hybrid score added to passages from the date the query names (0: off).
        self.date_bonus = DEFAULT_DATE_BONUS
        self._text_weight = DEFAULT_TEXT_WEIGHT
        self._index_path = Path(index_path)
        self._index_cls = index_cls
        self._index_errors = index_errors
        self._autosave = autosave
        self._unsaved = 0  # index changes since the file was last written
        self._reembed_if_needed(on_reembed)
        self._index_status = ""
        # while the index file loads: the table scan its vectors came from, and the pages it has
        # that have no stored vector (see _stored_vectors)
        self._scan: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._vectorless = np.zeros(0, dtype=np.uint64)
        where = os.path.basename(os.path.dirname(str(self._db.path)))  # the store's directory (a thread's name)
        self._load = IndexLoad(self._db, self._open_index, name=where)
        self._start_index_load()

    def _start_index_load(self) -> None:
        """Begin loading the vector index (invariant 1: in a thread of its own; a read-only store
        loads it at its first use)."""
        self._load.start()

    @property
    def index(self) -> Any:
        """The vector index (:class:`vmem.index.PageIndex` or :class:`vmem.index.ExactIndex`),
        waiting for its load to end if it has not (invariant 1)."""
        return self._load.index

    @property
    def index_status(self) -> str:
        """How the index was obtained at open: "loaded", "caught-up" or "rebuilt" (waits for the load)."""
        self._load.index
        return self._index_status

    # -- the embedder and the index cache

    def _reembed_if_needed(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Invariant 3: stored embeddings belong to the current embedder.

        ``progress(done, total)`` is called after each batch of a re-embedding."""
        want = {"name": self.embedder.name, "dim": int(self.embedder.dim)}
        have = self._db.get_meta("embedder")
        if have == want:
            return
        if self._db.read_only:
            from vmem.storage.errors import ConfigMismatchError

            if have is None:  # nothing embedded yet
                return
            raise ConfigMismatchError(
                f"{self._db.path}: the passages were embedded by {have and have.get('name')!r}, not "
                f"{want['name']!r}; a read-only open cannot re-embed them (open it with that embedder)")
        if have is None:
            with self._db.reading("counting passages") as c:
                n = c.execute("SELECT count(*) FROM passages").fetchone()[0]
            if n == 0:
                self._db.set_meta("embedder", want)
                return
        log.warning(
            "%s: embedder changed from %r to %r: re-embedding every passage",
            self._db.path, have and have.get("name"), want["name"],
        )
        # the old index file describes the old vectors: drop it first, so a
        # crash in the middle leaves no stale cache behind
        self._drop_index_file()
        with self._db.transaction("re-embedding passages") as c:
            rows = c.execute("SELECT id, text FROM passages ORDER BY id").fetchall()
            if progress is not None:
                progress(0, len(rows))
            step = _BATCH if progress is None else _PROGRESS_BATCH
            for lo in range(0, len(rows), step):
                chunk = rows[lo : lo + step]
                blobs = vecblob.encode_many(self._embed([t for _, t in chunk]))
                c.executemany("UPDATE passages SET embedding=? WHERE id=?",
                              [(b, i) for (i, _), b in zip(chunk, blobs)])
                if progress is not None:
                    progress(lo + len(chunk), len(rows))
            self._db.set_meta("embedder", want)

    def _drop_index_file(self) -> None:
        try:
            os.unlink(self._index_path)
            fsync_dir(self._index_path.parent)
        except FileNotFoundError:
            pass

    def _new_index(self, capacity: int) -> Any:
        return self._index_cls(self.embedder.dim, capacity=max(1024, capacity), name=self.embedder.name)

    def _db_ids(self, db: Reader | None = None) -> np.ndarray:
        with (db or self._db).reading("listing passages") as c:
            serials = np.fromiter((r[0] for r in c.execute("SELECT id FROM passages")), dtype=np.int64)
        return (np.uint64(int(PageKind.PASSAGE) << 56) | serials.astype(np.uint64)) if len(serials) else np.zeros(0, np.uint64)

    def _load_vectors(self, page_ids: np.ndarray | None,
                      db: Reader | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored embeddings of ``page_ids`` (those that exist; None: every passage, in id order):
        (ids, (n, dim) float32).

        A passage whose stored embedding is not ``dim`` float16 values (a damaged row, which
        ``MemoryDir.verify()`` names by its checksum) is left out and logged: it is not found by
        vector, and the rest of the store stays usable."""
        ids_out: list[int] = []
        blobs: list[bytes] = []
        bad: list[int] = []
        serials = [page_serial(int(p)) for p in page_ids] if page_ids is not None else [None]
        dim = self.embedder.dim
        size = 2 * dim
        with (db or self._db).reading("reading embeddings") as c:
            for lo in range(0, len(serials), 500):
                chunk = serials[lo : lo + 500]
                if page_ids is None:
                    rows = c.execute("SELECT id, embedding FROM passages ORDER BY id")
                else:
                    rows = c.execute(f"SELECT id, embedding FROM passages WHERE id IN ({','.join('?' * len(chunk))})",
                                     chunk)
                for sid, blob in rows:
                    if isinstance(blob, bytes) and len(blob) == size:
                        ids_out.append(_pid(sid))
                        blobs.append(blob)
                    else:
                        bad.append(sid)
        if bad:
            log.error("%s: %d passage(s) have no readable embedding (first: %#x); they are left out of the "
                      "vector index (vmem check names the damage)", self._db.path, len(bad), _pid(bad[0]))
        if not ids_out:
            return np.zeros(0, np.uint64), np.zeros((0, dim), np.float32)
        return np.array(ids_out, dtype=np.uint64), vecblob.decode_many(blobs, dim)

    def _scan_vectors(self, db: Reader) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pass over the passages in id order: (every id, the ids whose vector is readable,
        those vectors as stored: an (n, dim) float16 array). Unreadable ones are logged as in
        _load_vectors."""
        dim = self.embedder.dim
        size = 2 * dim
        rows: list[Any] = []
        with db.reading("reading embeddings") as c:
            cursor = c.execute("SELECT id, embedding FROM passages ORDER BY id")
            while batch := cursor.fetchmany(_SCAN_BATCH):
                if self._load.stopping:
                    raise Cancelled
                rows += batch
        base = np.uint64(int(PageKind.PASSAGE) << 56)
        every = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)).astype(np.uint64) | base
        blobs = [r[1] for r in rows]
        del rows
        if set(map(type, blobs)) <= {bytes} and set(map(len, blobs)) <= {size}:
            ids = every  # (the common case: every stored vector readable)
        else:
            ok = np.fromiter((type(b) is bytes and len(b) == size for b in blobs), dtype=bool, count=len(blobs))
            bad = every[~ok]
            log.error("%s: %d passage(s) have no readable embedding (first: %#x); they are left out of the "
                      "vector index (vmem check names the damage)", self._db.path, len(bad), int(bad[0]))
            ids = every[ok]
            blobs = [b for b, k in zip(blobs, ok) if k]
        return every, ids, vecblob.decode_halves(blobs, dim)

    def _stored_vectors(self, page_ids: np.ndarray, db: Reader) -> np.ndarray:
        """The stored vectors of ``page_ids`` in that order, as stored (float16; the index widens
        them): what an index file saved without them is given back. A page the database does not
        have (deleted after the file was written) or cannot read gets a zero vector and is recorded
        in ``_vectorless``: _open_index deletes those from the index (the graph keeps them as
        waypoints only)."""
        page_ids = np.asarray(page_ids, dtype=np.uint64)
        if len(page_ids) > _BATCH:  # most of the store: one pass over the table, kept for _open_index
            self._scan = self._scan_vectors(db)
            if self._load.stopping:  # before the graph is assembled and read back
                raise Cancelled
            _, ids, vecs = self._scan
            if len(ids) == len(page_ids) and np.array_equal(ids, page_ids):
                self._vectorless = np.zeros(0, dtype=np.uint64)
                return vecs  # (the common case: the index holds exactly the stored passages)
        else:
            ids, vecs = self._load_vectors(page_ids, db)
            vecs = vecs.astype(vecblob.DTYPE)  # exact: they were float16 values
            order = np.argsort(ids, kind="stable")
            ids, vecs = ids[order], vecs[order]
        out = np.zeros((len(page_ids), self.embedder.dim), dtype=vecblob.DTYPE)
        if not len(ids):
            self._vectorless = page_ids.copy()
            return out
        pos = np.minimum(np.searchsorted(ids, page_ids), len(ids) - 1)
        found = ids[pos] == page_ids
        out[found] = vecs[pos[found]]
        self._vectorless = page_ids[~found]
        return out

    def _add_from_db(self, index: Any, page_ids: np.ndarray, db: Reader | None = None) -> None:
        for lo in range(0, len(page_ids), _BATCH):
            if self._load.stopping:
                raise Cancelled
            ids, vecs = self._load_vectors(page_ids[lo : lo + _BATCH], db)
            if len(ids):
                index.add(ids, vecs)

    def _open_index(self, db: Reader) -> Any:
        """Load the index file and reconcile it with the passages ``db`` reads (one snapshot)."""
        index = None
        self._vectorless = np.zeros(0, dtype=np.uint64)
        self._scan = None
        if self._index_path.exists():
            try:
                index = self._index_cls.load(self._index_path, dim=self.embedder.dim, name=self.embedder.name,
                                             vectors=lambda ids: self._stored_vectors(ids, db))
            except self._index_errors as e:
                log.warning("%s: index cache unusable, rebuilding: %s", self._index_path, e)
        if self._load.stopping:
            raise Cancelled
        db_ids = self._scan[0] if self._scan is not None else self._db_ids(db)
        self._scan = None
        if index is not None and len(db_ids) and len(index):
            # spot check: the cache must hold *our* vectors, not just our ids
            rng = np.random.default_rng()
            sample = np.intersect1d(db_ids, index.ids())
            sample = rng.choice(sample, size=min(SPOT_CHECK, len(sample)), replace=False) if len(sample) else sample
            ids, want = self._load_vectors(sample, db)
            try:
                same = not len(ids) or np.allclose(index.get(ids), want, atol=SPOT_ATOL)
            except (RuntimeError, ValueError, KeyError):  # hnswlib: "Label not found", a shape that is not ours
                same = False
            if not same:
                log.warning("%s: index cache holds other vectors than the database, rebuilding", self._index_path)
                index = None
        if index is None:
            index = self._new_index(len(db_ids))
            self._add_from_db(index, db_ids, db)
            self._index_status = "rebuilt"
            self._unsaved = max(1, len(db_ids))  # write the fresh cache at the next checkpoint
            return index
        idx_ids = index.ids()
        extra = np.union1d(np.setdiff1d(idx_ids, db_ids, assume_unique=True), self._vectorless)
        missing = np.setdiff1d(db_ids, idx_ids, assume_unique=True)
        if len(extra):
            index.delete(extra)
        if len(missing):
            self._add_from_db(index, missing, db)
        self._index_status = "caught-up" if len(extra) or len(missing) else "loaded"
        self._unsaved = len(extra) + len(missing)
        if index.file_vectors == "all":  # a file from before schema 5: rewrite it without the vectors
            self._unsaved = max(1, self._unsaved)
        return index

    def verify_index(self) -> bool:
        """Whether the in-memory index holds exactly the stored passages' ids."""
        with self._db.lock:
            return bool(np.array_equal(np.sort(self._db_ids()), self.index.ids()))

    def checkpoint(self) -> None:
        """Write the index cache file atomically, if it changed since it was last written."""
        with self._db.lock:
            self._db.check_open()
            index = self._load.loaded
            if self._unsaved and index is not None and not self._db.in_transaction and not self._db.read_only:
                index.save(self._index_path, vectors=False)  # the vectors are in the database
                self._unsaved = 0
            self.lexical.save()

    def verify_text_index(self) -> bool:
        """Whether the text index holds exactly the stored passages' ids."""
        return self.lexical.verify()

    def close(self) -> None:
        """Stop a load still running, save the index cache (the database is closed by the MemoryDir)."""
        self._load.close()  # it stops at its next check
        if not self._db.closed:
            self.checkpoint()

    def _index_changed(self, n: int) -> None:
        self._unsaved += n
        # a save first puts the queued adds into the graph (PageIndex.behind): not while a
        # writer is ahead of the graph's builder; the next change, or close(), saves
        if (self._autosave and self._unsaved >= self._autosave and not self._db.in_transaction
                and not getattr(self._load.loaded, "pending", 0)):
            self.checkpoint()

    # -- primitives

    def __len__(self) -> int:
        with self._db.reading("counting passages") as c:
            return int(c.execute("SELECT count(*) FROM passages").fetchone()[0])

    def _count(self, f: PassageFilter) -> int:
        self._db.check_open()
        if f.empty and not self._db.in_transaction:
            return len(self.lexical.index)  # the committed passages, without a scan
        cond, args = _where(f)
        with self._db.reading("counting passages") as c:
            return int(c.execute(f"SELECT count(*) FROM passages p WHERE {cond}", args).fetchone()[0])

    def _ranked_count(self, f: PassageFilter) -> int:
        # The indexes hold the committed passages (they change after COMMIT), so a ranked
        # search inside a transaction sees those: count them without a scan. (A kernel
        # step is a transaction: this is the count behind every page fault.)
        if f.empty:
            self._db.check_open()
            return len(self.lexical.index)
        return self._count(f)

    def _insert(self, texts: list[str], hashes: list[bytes], tags: tuple[str, ...], ts: float,
                valid_from: list[float]) -> list[int]:
        with self._db.lock:
            self._db.check_open()
            with self._db.reading("looking up passages") as c:
                known: dict[bytes, tuple[int, tuple[str, ...]]] = {}
                uniq = list(dict.fromkeys(hashes))
                for lo in range(0, len(uniq), 500):
                    chunk = uniq[lo : lo + 500]
                    q = f"SELECT hash, id, tags FROM passages WHERE hash IN ({','.join('?' * len(chunk))})"
                    for h, i, tg in c.execute(q, chunk):
                        known[h] = (i, tuple(msgpack.unpackb(tg, raw=False)) if tg else ())
            fresh: dict[bytes, int] = {}  # hash -> index into texts, first occurrence
            for n, h in enumerate(hashes):
                if h not in known and h not in fresh:
                    fresh[h] = n
            vecs = self._embed([texts[n] for n in fresh.values()]) if fresh else None
            blobs = vecblob.encode_many(vecs) if vecs is not None else []
            if vecs is not None:  # the index holds what a reload from the database would give it
                vecs = vecblob.rounded(vecs)
            tag_blob = msgpack.packb(list(tags), use_bin_type=True) if tags else None
            serial: dict[bytes, int] = {h: i for h, (i, _) in known.items()}
            with self._db.transaction("inserting passages") as c:
                grp = 0  # no new passage: no group
                if fresh:  # the id the first new passage will get (AUTOINCREMENT)
                    grp = c.execute(
                        "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name='passages'), 0) + 1"
                    ).fetchone()[0]
                if fresh:  # one statement for the batch: AUTOINCREMENT gives grp, grp + 1, ... in order
                    c.executemany(
                        "INSERT INTO passages(text, hash, ts, tags, embedding, grp, valid_from) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [(texts[n], h, ts, tag_blob, blob, grp, valid_from[n])
                         for (h, n), blob in zip(fresh.items(), blobs)],
                    )
                    last = c.execute("SELECT seq FROM sqlite_sequence WHERE name='passages'").fetchone()[0]
                    if last != grp + len(fresh) - 1:  # (never: one writer, inside its transaction)
                        raise VmemStorageError(f"{self._db.path}: {len(fresh)} passages from id {grp} ended at "
                                               f"id {last}, not {grp + len(fresh) - 1}")
                    for k, h in enumerate(fresh):
                        serial[h] = grp + k
                    if tags:
                        c.executemany("INSERT INTO passage_tags(tag, passage_id) VALUES (?, ?)",
                                      [(t, grp + k) for k in range(len(fresh)) for t in tags])
                for h, (i, old) in known.items():  # duplicates: merge the new tags in
                    add = [t for t in tags if t not in old]
                    if add:
                        c.execute(
                            "UPDATE passages SET tags=? WHERE id=?",
                            (msgpack.packb(list(old) + add, use_bin_type=True), i),
                        )
                        c.executemany(
                            "INSERT OR IGNORE INTO passage_tags(tag, passage_id) VALUES (?, ?)",
                            [(t, i) for t in add],
                        )
                if fresh:
                    new_ids = np.array([_pid(serial[h]) for h in fresh], dtype=np.uint64)
                    rows = [(serial[h], texts[n], ts, "", grp) for h, n in fresh.items()]
                    self._db.after_commit(lambda: self._after_insert(new_ids, vecs, rows))
            return [_pid(serial[h]) for h in hashes]

    def _after_insert(self, ids: np.ndarray, vecs: Any, rows: list[tuple[int, str, float, str, int]]) -> None:
        self.lexical.added(rows)
        self._index_changed(0)  # an autosave that is due, before these queue behind the graph
        self.index.add(ids, vecs)
        self._unsaved += len(ids)

    def _delete(self, page_ids: list[int]) -> int:
        serials = [page_serial(p) for p in page_ids]
        with self._db.transaction("deleting passages") as c:
            gone: list[int] = []
            texts: list[tuple[int, str]] = []
            for s in serials:
                row = c.execute("DELETE FROM passages WHERE id=? RETURNING text", (s,)).fetchone()
                if row is not None:
                    gone.append(_pid(s))
                    texts.append((s, row[0]))
            if gone:
                def forget() -> None:
                    self.lexical.deleted(texts)
                    self.index.delete(gone)
                    self._index_changed(len(gone))

                self._db.after_commit(forget)
        return len(gone)

    def _supersede(self, page_ids: list[int], by: int | None, at: float) -> list[int]:
        serials = [page_serial(p) for p in page_ids]
        with self._db.transaction("superseding passages") as c:
            rows: dict[int, tuple[float, float | None, bytes]] = {}
            for lo in range(0, len(serials), 500):
                chunk = serials[lo : lo + 500]
                q = f"SELECT id, valid_from, invalid_at, hash FROM passages WHERE id IN ({','.join('?' * len(chunk))})"
                for sid, vf, inv, h in c.execute(q, chunk):
                    rows[sid] = (vf, inv, h)
            missing = [s for s in serials if s not in rows]
            if missing:
                raise NotFoundError(f"archival.supersede: no passage with page id {_pid(missing[0]):#x} "
                                    f"({len(missing)} missing)")
            by_serial = None
            if by is not None:
                by_serial = page_serial(by)
                row = c.execute("SELECT invalid_at FROM passages WHERE id=?", (by_serial,)).fetchone()
                if row is None:
                    raise NotFoundError(f"archival.supersede: no passage with page id {by:#x} (by)")
                if row[0] is not None:
                    raise ValueError(f"archival.supersede: passage {by:#x} (by) is itself superseded")
            changed = [s for s in serials if rows[s][1] is None]
            for s in changed:
                if at < rows[s][0]:
                    raise ValueError(
                        f"archival.supersede: passage {_pid(s):#x} holds from {from_epoch(rows[s][0]).isoformat()}; "
                        f"it cannot stop holding earlier, at {from_epoch(at).isoformat()}")
            c.executemany(
                "UPDATE passages SET invalid_at=?, superseded_by=?, hash=? WHERE id=?",
                [(at, by_serial, bytes(rows[s][2][:16]) + s.to_bytes(8, "big"), s) for s in changed],
            )
        return [_pid(s) for s in changed]

    def _superseded_count(self, f: PassageFilter) -> int:
        cond, args = _where(f)
        with self._db.reading("counting superseded passages") as c:
            return int(c.execute(f"SELECT count(*) FROM passages p WHERE p.invalid_at IS NOT NULL AND {cond}",
                                 args).fetchone()[0])

    def _excluded(self, f: PassageFilter) -> np.ndarray:
        """Serials of the passages ``f``'s interval conditions leave out (none when it has no such
        condition; the superseded ones are kept by a positive list, see _allow). Cheap when few are left out:
        the queries run on the partial index of superseded passages and on ``valid_from``."""
        parts: list[str] = []
        args: list[Any] = []
        if f.as_of is not None:
            parts += ["SELECT id FROM passages WHERE valid_from > ?", "SELECT id FROM passages WHERE invalid_at <= ?"]
            args += [f.as_of, f.as_of]
        if f.state == "current":
            parts.append("SELECT id FROM passages WHERE invalid_at IS NOT NULL")
        if not parts:
            return np.zeros(0, dtype=np.int64)
        with self._db.reading("filtering passages by interval") as c:
            return np.fromiter((r[0] for r in c.execute(" UNION ".join(parts), args)), dtype=np.int64)

    def _allow(self, f: PassageFilter) -> np.ndarray | None:
        """The passages ``f``'s tags and interval admit, as a bitmap over serials (None: all;
        the date range is filtered inside the text index)."""
        allow = self._tag_bitmap(f) if f.tags else None
        if f.state == "superseded":
            with self._db.reading("listing superseded passages") as c:
                ids = np.fromiter((r[0] for r in c.execute("SELECT id FROM passages WHERE invalid_at IS NOT NULL")),
                                  dtype=np.int64)
            allow = _both(allow, bitmap(ids) if len(ids) else np.zeros(1, dtype=np.uint64))
        if f.state == "current" or f.as_of is not None:
            allow = _both(allow, _complement(self._excluded(f), self.lexical.index.stats()["next_doc"]))
        return allow

    def _fetch(self, page_ids: list[int]) -> dict[int, Passage]:
        out: dict[int, Passage] = {}
        serials = [p & _SERIAL_MASK for p in page_ids]  # callers checked the kind
        base = int(PageKind.PASSAGE) << 56
        with self._db.reading("reading passages") as c:
            for lo in range(0, len(serials), 500):
                chunk = serials[lo : lo + 500]
                q = f"SELECT {_PCOLS} FROM passages p WHERE p.id IN ({','.join('?' * len(chunk))})"
                for sid, text, tg, ts, vf, inv, by in c.execute(q, chunk):
                    tags = tuple(msgpack.unpackb(tg, raw=False)) if tg else ()
                    out[base | sid] = Passage(base | sid, text, tags, from_epoch(ts),
                                              from_epoch(vf if vf is not None else ts),
                                              None if inv is None else from_epoch(inv),
                                              None if by is None else base | by)
        return out

    def _list(self, f: PassageFilter, offset: int, limit: int) -> list[int]:
        cond, args = _where(f)
        with self._db.reading("listing passages") as c:
            rows = c.execute(
                f"SELECT p.id FROM passages p WHERE {cond} ORDER BY p.ts DESC, p.id DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [_pid(r[0]) for r in rows]

    def _text_hits(
        self, query: str, match: str, f: PassageFilter, offset: int, limit: int
    ) -> tuple[list[tuple[int, float]], int, bool]:
        allow = self._allow(f)
        if allow is not None and not allow.any():
            return [], 0, True
        with self._db.lock:
            self._db.check_open()
            found = self.lexical.index.search(query, offset + limit, lo=f.lo, hi=f.hi, allow=allow)
        ranked = [(_pid(int(d)), float(s)) for d, s in zip(found.docs[offset:], found.scores[offset:])]
        return ranked, found.total, found.exact

    def _tag_bitmap(self, f: PassageFilter) -> np.ndarray:
        """The passages with ``f``'s tags (any or all) as a bitmap over serials."""
        tags = f.tags or ()
        marks = ",".join("?" * len(tags))
        if f.match_all and len(tags) > 1:
            q = f"SELECT passage_id FROM passage_tags WHERE tag IN ({marks}) GROUP BY passage_id HAVING count(*) = ?"
            args: list[Any] = [*tags, len(tags)]
        else:
            q = f"SELECT passage_id FROM passage_tags WHERE tag IN ({marks})"
            args = list(f.tags or ())
        with self._db.reading("filtering passages by tag") as c:
            ids = np.fromiter((r[0] for r in c.execute(q, args)), dtype=np.int64)
        return bitmap(ids) if len(ids) else np.zeros(1, dtype=np.uint64)

    def _hybrid(self, q: str, vec: np.ndarray, f: PassageFilter, deep: int, depth: int) -> list[tuple[int, float]]:
        """Fusion and context in C (TextIndex.fuse), the same ranking as vmem.rank's."""
        allow = self._allow(f)
        if allow is not None and not allow.any():
            return []
        index = self.lexical.index
        with self._db.lock:
            self._db.check_open()
            text = index.search(q, deep, lo=f.lo, hi=f.hi, allow=allow)
            if f.empty:
                ids, sims = self.index.query(vec, deep)
                ids, sims = ids[0], sims[0]
                keep = np.isfinite(sims)
                vdocs = (ids[keep] & np.uint64(_SERIAL_MASK)).astype(np.uint32)
                vsims = sims[keep].astype(np.float64)
            else:
                hits = self._vector_hits(vec, f, deep)
                vdocs = np.array([page_serial(i) for i, _ in hits], dtype=np.uint32)
                vsims = np.array([s for _, s in hits], dtype=np.float64)
            w = self._text_weight
            docs, scores = index.fuse(text.docs, text.scores, vdocs, vsims, text_weight=w, context=self.context,
                                      lo=f.lo, hi=f.hi, allow=allow)
            docs, scores = self._date_bonus(q, docs, scores)
            # only the head is returned, and the tie-break moves hits within its window only
            head = max(depth, TIE_WINDOW)
            ranked = list(zip(docs[:head].tolist(), scores[:head].tolist()))
            if len(ranked) > 1 and self.tie_break is not None and self.tie_break.applies_to(q):
                ranked = self._break_ties(q, ranked)
        base = int(PageKind.PASSAGE) << 56
        return [(base | d, s) for d, s in ranked[:depth]]

    def _break_ties(self, q: str, ranked: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """The tie-break (vmem.ties) over the head of a hybrid ranking of serials: matched terms
        from the text index, times from each passage's ``valid_from``."""
        head = [d for d, _ in ranked[:TIE_WINDOW]]
        _, masks, _, idf = self.lexical.index.explain(q, np.array(head, dtype=np.uint32))
        if not masks.any():
            return ranked

        def times() -> list[float]:  # read only when some pair is near-tied about the same thing
            with self._db.reading("reading passage times") as c:
                since = dict(c.execute(f"SELECT id, coalesce(valid_from, ts) FROM passages WHERE id IN "
                                       f"({','.join('?' * len(head))})", head).fetchall())
            return [since.get(d, np.nan) for d in head]

        return self.tie_break.apply(ranked, masks, times, idf)  # type: ignore[union-attr]

    def _date_bonus(self, q: str, docs: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Passages stored within the window of a date ``q`` names gain ``date_bonus`` times the
        best score, and the ranking is re-sorted (stable: ties keep the fused order)."""
        if not self.date_bonus or not len(docs):
            return docs, scores
        window = query_window(q)
        if window is None:
            return docs, scores
        # an unknown time (NaN): a passage the index has and the table not (never, once committed)
        raised = date_boosted(window, self._passage_times(docs), scores, self.date_bonus)
        if raised is None:
            return docs, scores
        order, boosted = raised
        return docs[order], boosted

    def _passage_times(self, docs: np.ndarray) -> np.ndarray:
        """Each passage's timestamp (epoch seconds; NaN: none), by serial, as the text index
        holds it (``ts`` never changes once stored: the index's copy is the table's), the
        table read only for the passages the index does not hold. A fused ranking holds a
        few hundred passages: ~1 us each from the index, against a query on the table."""
        ts = self.lexical.index.timestamps(docs)
        miss = np.flatnonzero(np.isnan(ts))
        if len(miss):
            serials = docs[miss].tolist()
            stored = self._stored_times(serials)
            ts[miss] = [stored.get(d, np.nan) for d in serials]
        return ts

    def _stored_times(self, serials: list[int]) -> dict[int, float]:
        """Each passage's timestamp (epoch seconds), by serial (those that exist)."""
        out: dict[int, float] = {}
        with self._db.reading("reading passage times") as c:
            for lo in range(0, len(serials), 500):
                chunk = serials[lo : lo + 500]
                out.update(c.execute(f"SELECT id, ts FROM passages WHERE id IN ({','.join('?' * len(chunk))})",
                                     chunk).fetchall())
        return out

    def _context(self, ranked: list[tuple[int, float]], f: PassageFilter) -> list[tuple[int, float]]:
        fq, fs, bwd = self.context
        if not ranked or not (fq or fs or bwd):
            return ranked
        allow = self._allow(f)
        docs = np.array([page_serial(p) for p, _ in ranked], dtype=np.uint32)
        with self._db.lock:
            prev, nxt, asks = self.lexical.index.neighbours(docs, lo=f.lo, hi=f.hi, allow=allow)
        next_of = {p: _pid(int(o)) for (p, _), o in zip(ranked, nxt) if o}
        prev_of = {p: _pid(int(o)) for (p, _), o in zip(ranked, prev) if o}
        asking = {p for (p, _), a in zip(ranked, asks) if a}
        return spread(ranked, next_of=next_of, prev_of=prev_of, forward=fq, backward=bwd, asks=asking,
                      statement_forward=fs)

    def _vector_hits(self, vector: np.ndarray, f: PassageFilter, k: int) -> list[tuple[int, float]]:
        with self._db.lock:
            self._db.check_open()
            if k <= 0:
                return []
            if f.empty:
                ids, sims = self.index.query(vector[None, :], k)
                return [(int(i), float(s)) for i, s in zip(ids[0], sims[0]) if np.isfinite(s)]
            if f.by_validity_only and f.state != "superseded":
                # few passages left out (superseded, or not yet valid): look past them in
                # the unfiltered index rather than list every admitted passage
                out = self._vector_hits_except(vector, self._excluded(f), k)
                if out is not None:
                    return out
            cond, args = _where(f)
            with self._db.reading("filtering passages") as c:
                cand = np.fromiter(
                    (r[0] for r in c.execute(f"SELECT p.id FROM passages p WHERE {cond}", args)), dtype=np.int64
                )
            if len(cand) == 0:
                return []
            cand_ids = np.uint64(int(PageKind.PASSAGE) << 56) | cand.astype(np.uint64)
            k = min(k, len(cand_ids))
            if len(cand_ids) <= EXACT_MAX:
                try:
                    vecs = self.index.get(cand_ids)
                except KeyError:  # the cache lost a row (a failed post-commit add): use the truth
                    cand_ids, vecs = self._load_vectors(cand_ids)
                    k = min(k, len(cand_ids))
                sims = vecs @ vector
                top = np.argsort(-sims, kind="stable")[:k] if k < len(sims) else np.argsort(-sims, kind="stable")
                return [(int(cand_ids[j]), float(sims[j])) for j in top]
            allowed = set(cand_ids.tolist())
            ids, sims = self.index.query(vector[None, :], k, filter=allowed.__contains__)
            return [(int(i), float(s)) for i, s in zip(ids[0], sims[0]) if np.isfinite(s)]

    def _vector_hits_except(self, vector: np.ndarray, excluded: np.ndarray, k: int) -> list[tuple[int, float]] | None:
        """The ``k`` best passages of the index that are not ``excluded`` (serials), by an
        unfiltered query ``len(excluded)`` deeper; None when that is not sure to hold ``k``
        (too many excluded, or the index came up short): the caller filters exactly."""
        if len(excluded) > EXACT_MAX:
            return None
        deep = min(k + len(excluded), len(self.index))
        if deep < k:
            return None
        ids, sims = self.index.query(vector[None, :], deep)
        skip = set((np.uint64(int(PageKind.PASSAGE) << 56) | excluded.astype(np.uint64)).tolist())
        out = [(int(i), float(s)) for i, s in zip(ids[0], sims[0]) if np.isfinite(s) and int(i) not in skip]
        return out[:k] if len(out) >= k else None
