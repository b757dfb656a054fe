"""Archival passages on PostgreSQL, searched through per-process caches of the table.

Table ``vmem.passages`` keyed by (agent, id): text, content hash (unique per agent), epoch ts,
tags (msgpack, and rows of ``vmem.passage_tags`` for filtering), the embedding as a pgvector
``vector``, ``grp`` (the first passage of its insert call), and the temporal columns
``valid_from`` / ``invalid_at`` / ``superseded_by``.

Search is the embedded store's, over the same two caches (this is what keeps the ranking
identical to the SQLite store's, figure for figure): the C text index (BM25) and the HNSW
vector index (hnswlib), both built from the table at open and kept current after every commit
of this process and, through the agent's version (``PgDatabase.stale_hooks``), with every
commit of other processes before a transaction or search uses them. The caches are not written
to disk: a process that opens an agent builds them (see the open-cost figures in docs/design.md).

Everything that is not SQL (insert rules, search, fusion, context, the intervals' rules:
SqliteArchival's invariant 6, a superseded row's hash suffixed with its serial) is inherited
from :class:`vmem.storage.sqlite.SqliteArchival`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np

from vmem.pageid import PageKind, page_serial
from vmem.storage.archival import PassageFilter
from vmem.storage.postgres_db import PgDatabase
from vmem.storage.postgres_tiers import PgLexical
from vmem.storage.recall import bitmap
from vmem.storage.records import Passage, from_epoch
from vmem.storage.errors import NotFoundError
from vmem.storage.index_load import IndexLoad
from vmem.storage.sqlite import EXACT_MAX, SqliteArchival, _both, _complement, _pid
from vmem.ties import TIE_WINDOW

__all__ = ["PgArchival"]

log = logging.getLogger("vmem.storage")

_BATCH = 4096
_F32 = np.dtype("<f4")
_SERIAL_MASK = (1 << 56) - 1
_INSERT_PASSAGE = "INSERT INTO vmem.passages(agent, id, text, hash, ts, tags, embedding, grp, valid_from) VALUES"
_INSERT_TAG = "INSERT INTO vmem.passage_tags(agent, tag, passage_id) VALUES"


def _prefix(h: bytes) -> int:
    """A hash's first 8 bytes as the hash filter keeps them (a shared prefix only costs a question)."""
    return int.from_bytes(h[:8], "little")


def _where(f: PassageFilter, agent: int) -> tuple[str, list[Any]]:
    """SQL condition (over alias ``p``) and arguments for a passage filter."""
    parts = ["p.agent = %s"]
    args: list[Any] = [agent]
    if f.tags:
        if f.match_all and len(f.tags) > 1:
            parts.append("p.id IN (SELECT passage_id FROM vmem.passage_tags WHERE agent = %s AND tag = ANY(%s) "
                         "GROUP BY passage_id HAVING count(*) = %s)")
            args.extend([agent, list(f.tags), len(f.tags)])
        else:
            parts.append("p.id IN (SELECT passage_id FROM vmem.passage_tags WHERE agent = %s AND tag = ANY(%s))")
            args.extend([agent, list(f.tags)])
    if f.lo is not None:
        parts.append("p.ts >= %s")
        args.append(f.lo)
    if f.hi is not None:
        parts.append("p.ts <= %s")
        args.append(f.hi)
    if f.as_of is not None:
        parts.append("p.valid_from <= %s AND (p.invalid_at IS NULL OR p.invalid_at > %s)")
        args.extend((f.as_of, f.as_of))
    if f.state == "current":
        parts.append("p.invalid_at IS NULL")
    elif f.state == "superseded":
        parts.append("p.invalid_at IS NOT NULL")
    return " AND ".join(parts), args


class PgArchival(SqliteArchival):
    """One agent's archival passages in PostgreSQL, with a text and a vector index cached in process."""

    backend = "postgres"
    _db: PgDatabase  # type: ignore[assignment]

    def __init__(self, db: PgDatabase, embedder: Any, *, index_cls: type, text_index: Any = None,
                 vector_index: Any = None, **kw: Any) -> None:
        self._cached_vectors = vector_index  # from an earlier open in this process (PgStore's cache)
        #: How many of the agent's passages are superseded, as last read (None: read it again).
        #: Searches ask it first (current facts rank first when there are any): kept, it saves a
        #: round trip per search; forgotten when this process supersedes or deletes passages, when
        #: a transaction that read it rolls back, and when another process committed.
        self._superseded_total: int | None = None
        self._changed_in = -1  # the transaction (its version) that last superseded or deleted passages
        #: Passages the open transaction inserted, less those it deleted: the caches take them in at
        #: commit, so until then a count in the transaction adds them (see __len__).
        self._uncommitted = 0
        #: A filter of the hashes the agent's passages have (see _maybe_stored): None until the first
        #: insert loads it, and when it can no longer be trusted.
        self._stored: np.ndarray | None = None  # sorted 8-byte prefixes, as loaded
        self._stored_since: set[bytes] = set()  # hashes added since
        # SqliteArchival's logic over a PgDatabase and a PgLexical (its methods that touch them are
        # overridden here), with no index file: the vector index is a cache of the table, in process
        lexical = PgLexical(db, "passages", text_index)
        super().__init__(db, embedder, "", index_cls=index_cls, lexical=lexical, **kw)  # type: ignore[arg-type]
        db.stale_hooks.append(self._catch_up_index)
        db.stale_hooks.append(self._forget_superseded)

    def _track(self, n: int) -> None:
        """``n`` passages more (fewer, if negative) in the open transaction than in the caches, until
        it commits (called after the hook that updates the caches: hooks run in order) or rolls back
        (a savepoint's rollback undoes its own)."""
        self._uncommitted += n

        def settle() -> None:
            self._uncommitted -= n

        self._db.after_commit(settle)
        self._db.on_rollback(settle)

    def _forget_superseded(self) -> None:
        self._superseded_total = None

    # -- the embedder and the vector cache

    def _reembed_if_needed(self, progress: Callable[[int, int], None] | None = None) -> None:
        """As the SQLite archival's: stored embeddings belong to the current embedder;
        ``progress(done, total)`` after each batch of a re-embedding."""
        want = {"name": self.embedder.name, "dim": int(self.embedder.dim)}
        have = self._db.get_meta("embedder")
        if have == want:
            return
        if have is None and len(self) == 0:
            if not self._db.read_only:
                self._db.set_meta("embedder", want)
            return
        if self._db.read_only:
            from vmem.storage.errors import ConfigMismatchError

            raise ConfigMismatchError(
                f"{self._db.path}: the passages were embedded by {have and have.get('name')!r}, not "
                f"{want['name']!r}; a read-only open cannot re-embed them (open it with that embedder)")
        log.warning("%s: embedder changed from %r to %r: re-embedding every passage",
                    self._db.path, have and have.get("name"), want["name"])
        db = self._db
        with db.transaction("re-embedding passages") as c:
            rows = c.execute("SELECT id, text FROM vmem.passages WHERE agent=%s ORDER BY id", (db.agent,)).fetchall()
            for lo in range(0, len(rows), _BATCH):
                chunk = rows[lo:lo + _BATCH]
                vecs = self._embed([t for _, t in chunk])
                with c.cursor() as cur:
                    cur.executemany("UPDATE vmem.passages SET embedding=%s WHERE agent=%s AND id=%s",
                                    [(v.astype(np.float32), db.agent, i) for (i, _), v in zip(chunk, vecs)])
                if progress is not None:
                    progress(lo + len(chunk), len(rows))
            db.set_meta("embedder", want)

    def _drop_index_file(self) -> None:
        pass

    def _db_ids(self, db: Any = None) -> np.ndarray:
        with self._db.reading("listing passages") as c:
            serials = np.array([r[0] for r in c.execute("SELECT id FROM vmem.passages WHERE agent=%s",
                                                        (self._db.agent,))], dtype=np.int64)
        return (np.uint64(int(PageKind.PASSAGE) << 56) | serials.astype(np.uint64)) if len(serials) \
            else np.zeros(0, np.uint64)

    def _load_vectors(self, page_ids: np.ndarray | None, db: Any = None) -> tuple[np.ndarray, np.ndarray]:
        if page_ids is None:  # every passage, in id order (as SqliteArchival's)
            page_ids = np.sort(self._db_ids())
        serials = [page_serial(int(p)) for p in page_ids]
        dim = self.embedder.dim
        ids_out: list[int] = []
        vecs: list[np.ndarray] = []
        with self._db.reading("reading embeddings") as c:
            with c.cursor(binary=True) as cur:
                cur.execute("SELECT id, embedding FROM vmem.passages WHERE agent=%s AND id = ANY(%s)",
                            (self._db.agent, serials))
                for sid, vec in cur:
                    ids_out.append(_pid(sid))
                    vecs.append(vec.to_numpy() if hasattr(vec, "to_numpy") else np.asarray(vec, dtype=np.float32))
        if not ids_out:
            return np.zeros(0, np.uint64), np.zeros((0, dim), np.float32)
        return np.array(ids_out, dtype=np.uint64), np.vstack(vecs).astype(np.float32)

    def _scan_vectors(self, db: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SqliteArchival's one pass over every passage's vector, here from PostgreSQL (this store
        builds its index from the rows and never loads an index file, so only a direct caller asks):
        (every id, the ids with a vector, those vectors), in id order."""
        every = np.sort(self._db_ids())
        ids, vecs = self._load_vectors(every)
        order = np.argsort(ids, kind="stable")
        return every, ids[order], vecs[order]

    def _start_index_load(self) -> None:
        """Built at open, from this process's cache or the table (there is no index file to load
        beside a step, and the caches follow other processes' commits from the first transaction)."""
        self._load = IndexLoad.of(self._db, self._open_index())  # type: ignore[arg-type]

    def _open_index(self, db: Any = None) -> Any:
        if self._cached_vectors is not None:
            index, self._cached_vectors = self._cached_vectors, None
            self._index_status = "cached"
            return index
        db_ids = self._db_ids()
        index = self._new_index(len(db_ids))
        self._add_from_db(index, db_ids)
        self._index_status = "rebuilt"
        self._unsaved = 0
        return index

    def _catch_up_index(self) -> None:
        """Another process committed: add its passages, drop the ones it deleted."""
        db_ids = self._db_ids()
        idx_ids = self.index.ids()
        extra = np.setdiff1d(idx_ids, db_ids, assume_unique=True)
        missing = np.setdiff1d(db_ids, idx_ids, assume_unique=True)
        if len(extra):
            self.index.delete(extra)
        if len(missing):
            self._add_from_db(self.index, missing)
            if self._stored is not None:  # the hash filter learns them too
                with self._db.reading("reading passage hashes") as c:
                    self._stored_since.update(bytes(h) for (h,) in c.execute(
                        "SELECT hash FROM vmem.passages WHERE agent=%s AND id = ANY(%s)",
                        (self._db.agent, [page_serial(int(p)) for p in missing])))

    def _maybe_stored(self, c: Any, hashes: list[bytes]) -> list[bytes]:
        """Of ``hashes``, those a passage may have already; the others certainly have none, and
        an insert need not ask the server about them. The filter is a superset of the agent's
        hashes: loaded at the first insert (under the agent's lock), then every hash this process
        inserts and every passage another process added (the caches' catch-up at BEGIN) join it;
        a deleted or superseded passage's hash stays (asked about, harmlessly). Untrusted -- all
        of ``hashes`` -- when a post-commit hook failed."""
        db = self._db
        if db.caches_stale:
            self._stored = None
            self._stored_since.clear()
            return hashes
        if self._stored is None:  # every prefix in one value: 0.8 MB at 100k passages
            blob = c.execute("SELECT string_agg(substring(hash from 1 for 8), ''::bytea) FROM vmem.passages "
                             "WHERE agent=%s", (db.agent,)).fetchone()[0]
            self._stored = np.sort(np.frombuffer(bytes(blob or b""), dtype="<u8").astype(np.uint64))
            self._stored_since.clear()
        stored, since = self._stored, self._stored_since
        keys = np.array([_prefix(h) for h in hashes], dtype=np.uint64)
        at = np.minimum(np.searchsorted(stored, keys), max(len(stored) - 1, 0))
        hit = (stored[at] == keys) if len(stored) else np.zeros(len(keys), dtype=bool)
        return [h for h, found in zip(hashes, hit.tolist()) if found or h in since]

    def checkpoint(self) -> None:
        """Nothing to write: the caches live in this process only."""
        self._db.check_open()

    def close(self) -> None:
        """Nothing to save (the database is closed by the store)."""

    def _index_changed(self, n: int) -> None:
        pass

    # -- primitives

    def __len__(self) -> int:
        db = self._db
        if db.in_transaction and not db.read_only and not db.caches_stale:
            # Under the agent's lock, with the caches caught up at BEGIN: the text index holds every
            # committed passage, and this transaction's own changes are counted beside it. Saves a
            # count(*) round trip (O(passages) on the server) after every insert's statistics.
            db.check_open()
            return len(self.lexical.index) + self._uncommitted
        with db.reading("counting passages") as c:
            return int(c.execute("SELECT count(*) FROM vmem.passages WHERE agent=%s",
                                 (self._db.agent,)).fetchone()[0])

    def _count(self, f: PassageFilter) -> int:
        self._db.check_open()
        if f.empty and not self._db.in_transaction:
            self._db.sync()
            return len(self.lexical.index)
        cond, args = _where(f, self._db.agent)
        with self._db.reading("counting passages") as c:
            return int(c.execute(f"SELECT count(*) FROM vmem.passages p WHERE {cond}", args).fetchone()[0])

    def _insert(self, texts: list[str], hashes: list[bytes], tags: tuple[str, ...], ts: float,
                valid_from: list[float]) -> list[int]:
        db = self._db
        with db.lock:
            db.check_open()
            with db.transaction("inserting passages") as c:
                known: dict[bytes, tuple[int, tuple[str, ...]]] = {}
                maybe = self._maybe_stored(c, list(dict.fromkeys(hashes)))
                if maybe:  # most inserts are new text: nothing to ask, and the rows wait for the COMMIT
                    for h, i, tg in c.execute("SELECT hash, id, tags FROM vmem.passages WHERE agent=%s "
                                              "AND hash = ANY(%s)", (db.agent, maybe)):
                        known[bytes(h)] = (i, tuple(msgpack.unpackb(tg, raw=False)) if tg else ())
                fresh: dict[bytes, int] = {}
                for n, h in enumerate(hashes):
                    if h not in known and h not in fresh:
                        fresh[h] = n
                vecs = self._embed([texts[n] for n in fresh.values()]) if fresh else None
                tag_blob = msgpack.packb(list(tags), use_bin_type=True) if tags else None
                serial: dict[bytes, int] = {h: i for h, (i, _) in known.items()}
                if fresh:
                    grp = db.next_serials("passage", len(fresh))
                    for k, h in enumerate(fresh):
                        serial[h] = grp + k
                    for (h, n), v in zip(fresh.items(), vecs):  # type: ignore[arg-type]
                        db.defer(_INSERT_PASSAGE, (db.agent, serial[h], texts[n], h, ts, tag_blob,
                                                   v.astype(np.float32), grp, valid_from[n]))
                    for h in fresh if tags else ():  # queued after the passages they name
                        for t in tags:
                            db.defer(_INSERT_TAG, (db.agent, t, serial[h]))
                    if self._stored is not None:
                        self._stored_since.update(fresh)
                for h, (i, old) in known.items():  # duplicates: merge the new tags in
                    add = [t for t in tags if t not in old]
                    if add:
                        c.execute("UPDATE vmem.passages SET tags=%s WHERE agent=%s AND id=%s",
                                  (msgpack.packb(list(old) + add, use_bin_type=True), db.agent, i))
                        with c.cursor() as cur:
                            cur.executemany("INSERT INTO vmem.passage_tags(agent, tag, passage_id) VALUES (%s, %s, %s) "
                                            "ON CONFLICT DO NOTHING", [(db.agent, t, i) for t in add])
                if fresh:
                    new_ids = np.array([_pid(serial[h]) for h in fresh], dtype=np.uint64)
                    rows = [(serial[h], texts[n], ts, "", grp) for h, n in fresh.items()]
                    db.after_commit(lambda: self._after_insert(new_ids, vecs, rows))
                    self._track(len(fresh))  # after the hook that indexes them
            return [_pid(serial[h]) for h in hashes]

    def _delete(self, page_ids: list[int]) -> int:
        serials = [page_serial(p) for p in page_ids]
        db = self._db
        self._superseded_total = None
        with db.transaction("deleting passages") as c:
            self._changed_in = db._pending
            db.after_commit(self._forget_superseded)
            rows = c.execute("DELETE FROM vmem.passages WHERE agent=%s AND id = ANY(%s) RETURNING id, text",
                             (db.agent, serials)).fetchall()
            gone = [_pid(s) for s, _ in rows]
            texts = [(s, t) for s, t in rows]
            if gone:
                def unindex() -> None:
                    self.lexical.deleted(texts)
                    self.index.delete(gone)

                db.after_commit(unindex)
                self._track(-len(gone))
        return len(gone)

    def _fetch(self, page_ids: list[int]) -> dict[int, Passage]:
        out: dict[int, Passage] = {}
        if not page_ids:
            return out
        serials = [p & _SERIAL_MASK for p in page_ids]
        base = int(PageKind.PASSAGE) << 56
        with self._db.reading("reading passages") as c:
            for sid, text, tg, ts, vf, inv, by in c.execute(
                    "SELECT id, text, tags, ts, valid_from, invalid_at, superseded_by FROM vmem.passages "
                    "WHERE agent=%s AND id = ANY(%s)", (self._db.agent, serials)):
                tags = tuple(msgpack.unpackb(tg, raw=False)) if tg else ()
                out[base | sid] = Passage(base | sid, text, tags, from_epoch(ts),
                                          from_epoch(vf if vf is not None else ts),
                                          None if inv is None else from_epoch(inv),
                                          None if by is None else base | by)
        return out

    def _break_ties(self, q: str, ranked: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """SqliteArchival's tie-break (vmem.ties) with the passages' times read from this agent's rows."""
        head = [d for d, _ in ranked[:TIE_WINDOW]]
        _, masks, _, idf = self.lexical.index.explain(q, np.array(head, dtype=np.uint32))
        if not masks.any():
            return ranked

        def times() -> list[float]:  # read only when some pair is near-tied about the same thing
            with self._db.reading("reading passage times") as c:
                since = dict(c.execute("SELECT id, coalesce(valid_from, ts) FROM vmem.passages "
                                       "WHERE agent=%s AND id = ANY(%s)", (self._db.agent, head)).fetchall())
            return [since.get(d, np.nan) for d in head]

        return self.tie_break.apply(ranked, masks, times, idf)  # type: ignore[union-attr]

    def _stored_times(self, serials: list[int]) -> dict[int, float]:
        """Each passage's timestamp (epoch seconds), by serial, from this agent's rows."""
        with self._db.reading("reading passage times") as c:
            return dict(c.execute("SELECT id, ts FROM vmem.passages WHERE agent=%s AND id = ANY(%s)",
                                  (self._db.agent, serials)).fetchall())

    # -- facts with a time (the rules of SqliteArchival: invariant 6 there)

    def _supersede(self, page_ids: list[int], by: int | None, at: float) -> list[int]:
        serials = [page_serial(p) for p in page_ids]
        db = self._db
        self._superseded_total = None
        with db.transaction("superseding passages") as c:
            self._changed_in = db._pending
            db.after_commit(self._forget_superseded)
            rows = {sid: (vf, inv, bytes(h)) for sid, vf, inv, h in c.execute(
                "SELECT id, valid_from, invalid_at, hash FROM vmem.passages WHERE agent=%s AND id = ANY(%s)",
                (db.agent, serials))}
            missing = [s for s in serials if s not in rows]
            if missing:
                raise NotFoundError(f"archival.supersede: no passage with page id {_pid(missing[0]):#x} "
                                    f"({len(missing)} missing)")
            by_serial = None
            if by is not None:
                by_serial = page_serial(by)
                row = c.execute("SELECT invalid_at FROM vmem.passages WHERE agent=%s AND id=%s",
                                (db.agent, by_serial)).fetchone()
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
            if changed:
                with c.cursor() as cur:
                    cur.executemany(
                        "UPDATE vmem.passages SET invalid_at=%s, superseded_by=%s, hash=%s WHERE agent=%s AND id=%s",
                        [(at, by_serial, rows[s][2][:16] + s.to_bytes(8, "big"), db.agent, s) for s in changed])
        return [_pid(s) for s in changed]

    def _superseded_count(self, f: PassageFilter) -> int:
        db = self._db
        if f.empty:
            if not db.in_transaction:
                db.sync()  # another process's commits first (it forgets the count)
            if self._superseded_total is not None:
                return self._superseded_total
        cond, args = _where(f, db.agent)
        with db.reading("counting superseded passages") as c:
            n = int(c.execute(f"SELECT count(*) FROM vmem.passages p WHERE p.invalid_at IS NOT NULL AND {cond}",
                              args).fetchone()[0])
        if f.empty and not db._held:
            if not db._depth:  # committed state (a read-only store: its snapshot)
                self._superseded_total = n
            elif db._seq is not None:  # a write transaction, under the agent's lock
                self._superseded_total = n
                if self._changed_in == db._pending:  # it read this transaction's own changes
                    db.on_rollback(self._forget_superseded)
        return n

    def _excluded(self, f: PassageFilter) -> np.ndarray:
        parts: list[str] = []
        args: list[Any] = []
        agent = self._db.agent
        if f.as_of is not None:
            parts += ["SELECT id FROM vmem.passages WHERE agent=%s AND valid_from > %s",
                      "SELECT id FROM vmem.passages WHERE agent=%s AND invalid_at <= %s"]
            args += [agent, f.as_of, agent, f.as_of]
        if f.state == "current":
            parts.append("SELECT id FROM vmem.passages WHERE agent=%s AND invalid_at IS NOT NULL")
            args.append(agent)
        if not parts:
            return np.zeros(0, dtype=np.int64)
        with self._db.reading("filtering passages by interval") as c:
            return np.array([r[0] for r in c.execute(" UNION ".join(parts), args)], dtype=np.int64)

    def _allow(self, f: PassageFilter) -> np.ndarray | None:
        allow = self._tag_bitmap(f) if f.tags else None
        if f.state == "superseded":
            with self._db.reading("listing superseded passages") as c:
                ids = np.array([r[0] for r in c.execute(
                    "SELECT id FROM vmem.passages WHERE agent=%s AND invalid_at IS NOT NULL", (self._db.agent,))],
                    dtype=np.int64)
            allow = _both(allow, bitmap(ids) if len(ids) else np.zeros(1, dtype=np.uint64))
        if f.state == "current" or f.as_of is not None:
            allow = _both(allow, _complement(self._excluded(f), self.lexical.index.stats()["next_doc"]))
        return allow

    def _list(self, f: PassageFilter, offset: int, limit: int) -> list[int]:
        cond, args = _where(f, self._db.agent)
        with self._db.reading("listing passages") as c:
            rows = c.execute(f"SELECT p.id FROM vmem.passages p WHERE {cond} ORDER BY p.ts DESC, p.id DESC "
                             "LIMIT %s OFFSET %s", [*args, limit, offset]).fetchall()
        return [_pid(r[0]) for r in rows]

    def search(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`ArchivalStore.search`, over caches caught up with other processes' commits first
        (inside a transaction they were caught up when it began)."""
        if not self._db.in_transaction:
            self._db.sync()
        return super().search(*args, **kwargs)

    def _tag_bitmap(self, f: PassageFilter) -> np.ndarray:
        tags = list(f.tags or ())
        if f.match_all and len(tags) > 1:
            q = ("SELECT passage_id FROM vmem.passage_tags WHERE agent=%s AND tag = ANY(%s) GROUP BY passage_id "
                 "HAVING count(*) = %s")
            args: list[Any] = [self._db.agent, tags, len(tags)]
        else:
            q = "SELECT passage_id FROM vmem.passage_tags WHERE agent=%s AND tag = ANY(%s)"
            args = [self._db.agent, tags]
        with self._db.reading("filtering passages by tag") as c:
            ids = np.array([r[0] for r in c.execute(q, args)], dtype=np.int64)
        return bitmap(ids) if len(ids) else np.zeros(1, dtype=np.uint64)

    def _vector_hits(self, vector: np.ndarray, f: PassageFilter, k: int) -> list[tuple[int, float]]:
        with self._db.lock:
            self._db.check_open()
            if k <= 0:
                return []
            if f.empty:
                ids, sims = self.index.query(vector[None, :], k)
                return [(int(i), float(s)) for i, s in zip(ids[0], sims[0]) if np.isfinite(s)]
            if f.by_validity_only and f.state != "superseded":
                out = self._vector_hits_except(vector, self._excluded(f), k)
                if out is not None:
                    return out
            cond, args = _where(f, self._db.agent)
            with self._db.reading("filtering passages") as c:
                cand = np.array([r[0] for r in c.execute(f"SELECT p.id FROM vmem.passages p WHERE {cond}", args)],
                                dtype=np.int64)
            if len(cand) == 0:
                return []
            cand_ids = np.uint64(int(PageKind.PASSAGE) << 56) | cand.astype(np.uint64)
            k = min(k, len(cand_ids))
            if len(cand_ids) <= EXACT_MAX:
                try:
                    vecs = self.index.get(cand_ids)
                except KeyError:
                    cand_ids, vecs = self._load_vectors(cand_ids)
                    k = min(k, len(cand_ids))
                sims = vecs @ vector
                top = np.argsort(-sims, kind="stable")[:k]
                return [(int(cand_ids[j]), float(sims[j])) for j in top]
            allowed = set(cand_ids.tolist())
            ids, sims = self.index.query(vector[None, :], k, filter=allowed.__contains__)
            return [(int(i), float(s)) for i, s in zip(ids[0], sims[0]) if np.isfinite(s)]
