"""Archival storage on Milvus (scale-out), through ``pymilvus.MilvusClient``.

The same :class:`~vmem.storage.archival.ArchivalStore` interface and search
semantics as the SQLite backend, so the kernel does not know which it has:

- one collection per agent: ``id`` (the passage serial, INT64 primary key),
  ``text`` (VARCHAR with an analyzer), ``tags`` (ARRAY<VARCHAR>), ``ts``
  (DOUBLE, epoch seconds), ``hash`` (hex content hash), ``vec`` (dense
  FLOAT_VECTOR, inner product on unit vectors = cosine) and ``sparse``
  (SPARSE_FLOAT_VECTOR filled by a server-side BM25 function);
- text search is Milvus's own BM25 full-text search (``anns_field="sparse"``);
  its ``total`` is a ``count(*)`` under ``TEXT_MATCH`` with the same analyzer;
- vector search uses Milvus's filtered search, which applies the filter before
  the top-k cut (so a page is full whenever enough passages match);
- hybrid search fuses both rankings with :func:`vmem.rank.fuse`, as SQLite does;
- page ids are allocated by the owning MemoryDir in its SQLite file, because
  Milvus auto ids do not fit the 56-bit serial of a page id;
- the SQLite file is the truth about which passages exist (a
  :class:`~vmem.storage.ledger.PassageLedger`): a rolled-back transaction
  deletes its Milvus rows again, and opening deletes rows a crash left behind.

Differences from the SQLite backend (stated, not hidden): the text analyzer
is Milvus's ``standard`` one (lower-casing, no stemming; Milvus Lite knows no
other), so "running" does not match "run" here; duplicate detection is a
query before insert, not a UNIQUE constraint (safe because one process holds
the MemoryDir lock); a filter-only listing (no query) reads the ids and
timestamps of every matching passage to order them, O(matches), in id
windows of 8192.

Facts with a time: this backend keeps one time per passage. A passage holds from
its timestamp (``valid_from`` must equal it) and is never superseded:
``supersede()`` and an explicit ``valid_from`` raise
:class:`~vmem.storage.errors.UnsupportedError` (the SQLite backend keeps
intervals); ``as_of`` is the filter ``ts <= as_of``, exact under that rule.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from vmem.pageid import PageKind, make_page_id, page_serial
from vmem.storage.archival import MAX_TAG_CHARS, MAX_TAGS, ArchivalStore, PassageFilter
from vmem.storage._db import Database
from vmem.storage.errors import BackendError, ConfigMismatchError, UnsupportedError
from vmem.storage.ledger import PassageLedger
from vmem.storage.records import Passage, from_epoch

__all__ = ["MilvusArchival"]

log = logging.getLogger("vmem.storage")

#: Longest passage text Milvus accepts here, in UTF-8 bytes (VARCHAR's maximum).
MAX_TEXT_BYTES = 65535
#: Milvus caps offset + limit of one search or query.
MAX_WINDOW = 16384
_FIELDS = ["id", "text", "tags", "ts"]


def _lit(s: str) -> str:
    """A Milvus filter-expression string literal (double-quoted, C escapes)."""
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{out}"'


def _num(x: float) -> str:
    return repr(float(x))


def _expr(f: PassageFilter) -> str:
    parts: list[str] = []
    if f.tags:
        fn = "ARRAY_CONTAINS_ALL" if f.match_all else "ARRAY_CONTAINS_ANY"
        parts.append(f"{fn}(tags, [{', '.join(_lit(t) for t in f.tags)}])")
    if f.lo is not None:
        parts.append(f"ts >= {_num(f.lo)}")
    if f.hi is not None:
        parts.append(f"ts <= {_num(f.hi)}")
    if f.as_of is not None:  # every passage here holds from its ts, and holds still
        parts.append(f"ts <= {_num(f.as_of)}")
    if f.state == "superseded":  # none is
        parts.append("id < 0")
    return " and ".join(parts)


_TERM = re.compile(r'"((?:[^"]|"")*)"')


def _terms(match: str) -> list[str]:
    """The quoted terms of an FTS5 expression made by ``vmem.text.fts_query``."""
    return [t.replace('""', '"') for t in _TERM.findall(match)]


def _pid(serial: int) -> int:
    return make_page_id(PageKind.PASSAGE, serial)


class MilvusArchival(ArchivalStore):
    """Archival passages in a Milvus collection (Milvus Lite file or server).

    Normally made by ``MemoryDir.open(path, archival="milvus" | "milvus:<uri>" |
    MilvusConfig(...))``. ``allocate(n)`` must reserve ``n`` fresh passage
    serials durably and return the first; ``next_serial()`` returns the
    serial the next allocation would start at.
    """

    backend = "milvus"

    def __init__(
        self,
        *,
        uri: str,
        collection: str,
        embedder: Any,
        allocate: Callable[[int], int],
        next_serial: Callable[[], int],
        db: Database,
        fts_query: Callable[[str], str | None],
        fuse: Callable[..., list[tuple[int, float]]] | None,
        token: str | None = None,
        db_name: str | None = None,
        analyzer: dict[str, Any] | None = None,
        index_type: str = "AUTOINDEX",
        **kw: Any,
    ) -> None:
        super().__init__(embedder, fts_query=fts_query, fuse=fuse, **kw)
        try:
            import pymilvus
        except ImportError as e:
            raise BackendError(
                "archival storage on Milvus needs pymilvus (pip install 'vmem[milvus]')"
            ) from e
        self._pm = pymilvus
        self._allocate = allocate
        self._next_serial = next_serial
        self._db = db
        self.ledger = PassageLedger(db)
        self.collection = collection
        self.uri = uri
        self._analyzer = analyzer or {"type": "standard"}
        self._index_type = index_type
        kwargs: dict[str, Any] = {"uri": uri}
        if token:
            kwargs["token"] = token
        if db_name:
            kwargs["db_name"] = db_name
        with self._errors(f"connecting to Milvus at {uri}"):
            self._c = pymilvus.MilvusClient(**kwargs)
        try:
            with self._errors(f"opening collection {collection!r}"):
                if self._c.has_collection(collection):
                    self._check_schema()
                else:
                    self._create()
        except BaseException:
            self._c.close()
            raise
        self._closed = False

    def reconcile(self) -> None:
        """Make Milvus hold exactly the ledger's passages (see :mod:`vmem.storage.ledger`)."""
        held = self._serials()
        if not self.ledger.adopted:
            self.ledger.adopt(held)
            return
        truth = self.ledger.serials()
        orphans, lost = sorted(held - truth), sorted(truth - held)
        if orphans:
            log.warning("%s: deleting %d passage(s) a crash left in Milvus uncommitted", self.collection, len(orphans))
            self._forget(orphans)
        if lost:
            log.error("%s: Milvus lost %d committed passage(s) (e.g. %s); dropping them from the ledger",
                      self.collection, len(lost), lost[:5])
            self.ledger.remove(lost)

    def _serials(self) -> set[int]:
        """Every serial the collection holds (read in id windows)."""
        out: set[int] = set()
        step = MAX_WINDOW // 2
        for lo in range(1, self._next_serial(), step):
            rows = self._query(f"id >= {lo} and id < {lo + step}", ["id"], limit=MAX_WINDOW)
            out.update(int(r["id"]) for r in rows)
        return out

    def _forget(self, serials: list[int]) -> None:
        """Delete rows from Milvus (a rollback's undo, or orphans); failures are logged."""
        try:
            with self._errors("deleting uncommitted passages"):
                self._c.delete(self.collection, ids=[int(s) for s in serials])
        except BackendError as e:
            log.error("%s: could not delete uncommitted passages %s: %s (the next open retries)",
                      self.collection, serials[:5], e)

    # -- plumbing

    class _Errors:
        def __init__(self, outer: MilvusArchival, what: str) -> None:
            self.outer, self.what = outer, what

        def __enter__(self) -> None:
            return None

        def __exit__(self, et: Any, e: Any, tb: Any) -> bool:
            if e is not None and isinstance(e, self.outer._pm.MilvusException):
                raise BackendError(f"{self.what}: {e}") from e
            return False

    def _errors(self, what: str) -> MilvusArchival._Errors:
        return MilvusArchival._Errors(self, what)

    def _create(self) -> None:
        pm = self._pm
        dt = pm.DataType
        s = self._c.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", dt.INT64, is_primary=True)
        s.add_field(
            "text", dt.VARCHAR, max_length=MAX_TEXT_BYTES, enable_analyzer=True, enable_match=True,
            analyzer_params=self._analyzer,
        )
        s.add_field("tags", dt.ARRAY, element_type=dt.VARCHAR, max_capacity=MAX_TAGS, max_length=4 * MAX_TAG_CHARS)
        s.add_field("ts", dt.DOUBLE)
        s.add_field("hash", dt.VARCHAR, max_length=32)
        s.add_field("vec", dt.FLOAT_VECTOR, dim=int(self.embedder.dim))
        s.add_field("sparse", dt.SPARSE_FLOAT_VECTOR)
        s.add_function(
            pm.Function(
                name="text_bm25", function_type=pm.FunctionType.BM25,
                input_field_names=["text"], output_field_names=["sparse"],
            )
        )
        ip = self._c.prepare_index_params()
        ip.add_index("vec", index_type=self._index_type, metric_type="IP")
        ip.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        ip.add_index("ts", index_type="INVERTED")
        self._c.create_collection(self.collection, schema=s, consistency_level="Strong")
        # sync=False: do not poll for the index build (Milvus Lite cannot answer
        # the poll's timestamp request, and pymilvus sleeps 0.5 s per poll);
        # searches are correct while an index is being built
        self._c.create_index(self.collection, ip, sync=False)
        self._c.load_collection(self.collection)

    def _check_schema(self) -> None:
        desc = self._c.describe_collection(self.collection)
        fields = {f["name"]: f for f in desc.get("fields", [])}
        need = {"id", "text", "tags", "ts", "hash", "vec", "sparse"}
        if not need <= set(fields):
            raise ConfigMismatchError(
                f"Milvus collection {self.collection!r} is not a vmem archival collection "
                f"(missing fields {sorted(need - set(fields))})"
            )
        dim = int(fields["vec"].get("params", {}).get("dim", -1))
        if dim != int(self.embedder.dim):
            raise ConfigMismatchError(
                f"Milvus collection {self.collection!r} holds {dim}-dimensional vectors; "
                f"the embedder {self.embedder.name!r} makes {self.embedder.dim}"
            )
        self._c.load_collection(self.collection)

    def close(self) -> None:
        """Close the client (idempotent)."""
        if not self._closed:
            self._closed = True
            try:
                self._c.close()
            except Exception as e:  # pragma: no cover - closing must not raise
                log.warning("closing Milvus client: %s", e)

    def drop(self) -> None:
        """Delete the whole collection (every passage of this agent)."""
        with self._errors(f"dropping {self.collection!r}"):
            self._c.drop_collection(self.collection)

    def _query(self, expr: str, fields: list[str], **kw: Any) -> list[dict[str, Any]]:
        with self._errors("querying passages"):
            return list(self._c.query(self.collection, filter=expr, output_fields=fields, **kw))

    def _ids_expr(self, serials: list[int]) -> str:
        return f"id in [{', '.join(str(int(s)) for s in serials)}]"

    # -- primitives

    def __len__(self) -> int:
        return self._count(PassageFilter())

    def _insert(self, texts: list[str], hashes: list[bytes], tags: tuple[str, ...], ts: float,
                valid_from: list[float]) -> list[int]:
        if any(v != ts for v in valid_from):
            raise UnsupportedError("the milvus archival backend keeps one time per passage: valid_from must be "
                                   "the passage's timestamp (the SQLite backend keeps intervals)")
        for t in texts:
            if len(t.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
                raise ValueError(f"passage of {len(t)} characters exceeds Milvus's {MAX_TEXT_BYTES}-byte VARCHAR")
        hexes = [h.hex() for h in hashes]
        uniq = list(dict.fromkeys(hexes))
        known: dict[str, dict[str, Any]] = {}
        for lo in range(0, len(uniq), 1000):
            chunk = uniq[lo : lo + 1000]
            expr = f"hash in [{', '.join(_lit(h) for h in chunk)}]"
            for row in self._query(expr, ["id", "hash", "tags"]):
                known[row["hash"]] = row
        fresh: dict[str, int] = {}
        for n, h in enumerate(hexes):
            if h not in known and h not in fresh:
                fresh[h] = n
        serial: dict[str, int] = {h: int(r["id"]) for h, r in known.items()}
        with self._db.transaction("inserting passages"):
            if fresh:
                vecs = self._embed([texts[n] for n in fresh.values()])
                first = self._allocate(len(fresh))
                rows = []
                for j, (h, n) in enumerate(fresh.items()):
                    serial[h] = first + j
                    rows.append(
                        {"id": first + j, "text": texts[n], "tags": list(tags), "ts": float(ts), "hash": h,
                         "vec": vecs[j].tolist()}
                    )
                with self._errors("inserting passages"):
                    self._c.insert(self.collection, rows)
                new = [r["id"] for r in rows]
                self._db.on_rollback(lambda: self._forget(new))
                self.ledger.add(new)
            merge = {h: [t for t in tags if t not in r["tags"]] for h, r in known.items()}
            merge = {h: add for h, add in merge.items() if add}
            if merge:  # duplicates with new tags: rewrite the rows with the union of tags
                full = self._query(
                    self._ids_expr([int(known[h]["id"]) for h in merge]), ["id", "text", "tags", "ts", "hash", "vec"]
                )
                for row in full:
                    row["vec"] = [float(x) for x in row["vec"]]
                before = [dict(row, tags=list(row["tags"])) for row in full]
                for row in full:
                    row["tags"] = list(row["tags"]) + merge[row["hash"]]
                with self._errors("updating passage tags"):
                    self._c.upsert(self.collection, full)
                self._db.on_rollback(lambda: self._upsert_quietly(before))
        return [_pid(serial[h]) for h in hexes]

    def _upsert_quietly(self, rows: list[dict[str, Any]]) -> None:
        try:
            with self._errors("restoring passage tags"):
                self._c.upsert(self.collection, rows)
        except BackendError as e:
            log.error("%s: could not restore the tags of %d passage(s): %s", self.collection, len(rows), e)

    def _delete(self, page_ids: list[int]) -> int:
        serials = [page_serial(p) for p in page_ids]
        present = [int(r["id"]) for r in self._query(self._ids_expr(serials), ["id"])]
        if present:
            with self._db.transaction("deleting passages"):
                self.ledger.remove(present)
                self._db.after_commit(lambda: self._forget(present))  # rows stay until the commit stands
        return len(present)

    def _fetch(self, page_ids: list[int]) -> dict[int, Passage]:
        out: dict[int, Passage] = {}
        serials = [page_serial(p) for p in page_ids]
        for lo in range(0, len(serials), 1000):
            chunk = serials[lo : lo + 1000]
            for r in self._query(self._ids_expr(chunk), _FIELDS):
                pid = _pid(int(r["id"]))
                ts = from_epoch(float(r["ts"]))
                out[pid] = Passage(pid, r["text"], tuple(r["tags"] or ()), ts, valid_from=ts)
        return out

    def _count(self, f: PassageFilter) -> int:
        rows = self._query(_expr(f), ["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def _list(self, f: PassageFilter, offset: int, limit: int) -> list[int]:
        # read (id, ts) of every match in windows of ids (a query may return at
        # most MAX_WINDOW rows; ids are dense serials below next_serial())
        pairs: list[tuple[float, int]] = []
        expr = _expr(f)
        step = MAX_WINDOW // 2
        for lo in range(1, self._next_serial(), step):
            window = f"id >= {lo} and id < {lo + step}"
            rows = self._query(f"{window} and {expr}" if expr else window, ["id", "ts"], limit=MAX_WINDOW)
            pairs.extend((float(r["ts"]), int(r["id"])) for r in rows)
        pairs.sort(reverse=True)
        return [_pid(i) for _, i in pairs[offset : offset + limit]]

    def _text_hits(
        self, query: str, match: str, f: PassageFilter, offset: int, limit: int
    ) -> tuple[list[tuple[int, float]], int, bool]:
        terms = " ".join(_terms(match)) or query
        expr = _expr(f)
        text_expr = f"TEXT_MATCH(text, {_lit(terms)})"
        total_rows = self._query(f"{text_expr} and {expr}" if expr else text_expr, ["count(*)"])
        total = int(total_rows[0]["count(*)"]) if total_rows else 0
        window = min(offset + limit, total, MAX_WINDOW)
        if window <= offset:
            return [], total, True
        with self._errors("searching passages by text"):
            res = self._c.search(
                self.collection, data=[terms], anns_field="sparse", limit=window, filter=expr,
                search_params={"metric_type": "BM25"}, output_fields=["id"],
            )
        # BM25 scores are non-negative; Milvus Lite reports them negated (sorted
        # ascending), a server positive (descending): either way the list is
        # best first and abs() is the score
        hits = [(_pid(int(h["id"])), abs(float(h["distance"]))) for h in res[0]]
        return hits[offset:], total, True

    def _vector_hits(self, vector: np.ndarray, f: PassageFilter, k: int) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        with self._errors("searching passages by vector"):
            res = self._c.search(
                self.collection, data=[vector.astype(np.float32).tolist()], anns_field="vec",
                limit=min(k, MAX_WINDOW), filter=_expr(f), search_params={"metric_type": "IP"},
                output_fields=["id"],
            )
        return [(_pid(int(h["id"])), float(h["distance"])) for h in res[0]]
