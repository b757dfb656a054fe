"""Recall storage: every message of the conversation, verbatim and searchable.

Interface: ``append`` / ``append_many`` (one transaction), ``get`` /
``get_many``, ``len()``, ``search(query, roles, start, end, page,
page_size)``: ranked when a query is given, newest first otherwise; and
``checkpoint()``: write the text index's cache file (the store does, at its
checkpoints and on close).

Ranking: BM25 (FTS5's formula and ``porter unicode61`` matching) over the
store's text index (:class:`~vmem.storage.lexical.LexicalCache`, exact top-k
in C), then, when ``context`` is set (off by default: it did not help
conversation search on LoCoMo), *conversation context* among the matches: each match passes a
share of its relevance to the matching message after it (``forward``, more
from a question) and before it (``backward``) when they are at most
``CONTEXT_GAP`` seconds apart
(:func:`vmem.rank.spread` with ``expand=False``): a reply is about what it
replies to. Only matches are returned (conversation_search is a word search:
``total`` counts matching messages). Role and date filters apply inside the
index, before the top-k cut. With context, pages are ranked ``PAGE_BUCKET``
results at a time, so the pages of one search are disjoint and complete
(without, the exact top-k is the same at every depth). ``total`` is exact
when counting it was cheap (``SearchPage.total_is_exact``), else an estimate.

A search ``with_neighbours`` (prefetch's) ranks the messages next to the matches too, though
they do not match, with the archival search's shares (:data:`NEIGHBOUR_CONTEXT`; in C,
``TextIndex.fuse`` with no vector side): the reply that answers a matching question comes with it.

Knowledge updates: among the first :data:`vmem.ties.TIE_WINDOW` matches, a message
near-tied with an older one about the same thing (the same query terms) and said
later goes first (:class:`vmem.ties.TieBreak`, ``tie_break``; None turns it off).
The window is ranked whole at every depth, so pages stay disjoint and complete.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import msgpack
import numpy as np

from vmem.pageid import PageKind, make_page_id, page_kind, page_serial
from vmem.storage._db import Database
from vmem.storage.errors import NotFoundError
from vmem.storage.lexical import LexicalCache
from vmem.rank import spread
from vmem.ties import DEFAULT_TIE_BREAK, TIE_WINDOW, TieBreak
from vmem.when import DateWindow, date_boosted, query_window
from vmem.storage.records import (
    Hit,
    Message,
    SearchPage,
    TimeBound,
    check_paging,
    epoch_range,
    from_epoch,
    page_count,
    to_epoch,
    utcnow,
)

__all__ = ["MessageInput", "RecallStore", "CONTEXT_GAP", "DEFAULT_CONTEXT", "DEFAULT_DATE_BONUS", "NEIGHBOUR_CONTEXT",
           "PAGE_BUCKET"]

#: Neighbouring messages further apart than this (seconds) pass no relevance.
CONTEXT_GAP = 3600.0
#: (forward from a question, forward from a statement, backward) shares of
#: :func:`vmem.rank.spread` for recall search: off. Re-ranking matches by their
#: neighbours did not pass leave-one-conversation-out on LoCoMo (5 of 7 folds chose
#: off under the no-category-worse rule; select_context_loco(target="recall")).
DEFAULT_CONTEXT = (0.0, 0.0, 0.0)
#: The shares of a search ``with_neighbours`` (prefetch's): the archival hybrid search's,
#: chosen leave-one-conversation-out on LoCoMo dev there (vmem.storage.sqlite.DEFAULT_CONTEXT),
#: not tuned again here. What they are worth to prefetch is in docs/design.md.
NEIGHBOUR_CONTEXT = (0.75, 0.0, 0.25)
#: Ranked searches are computed this many results at a time (see the module docstring).
PAGE_BUCKET = 100
#: For a query that names a date ("on 7 July, 2023", vmem.when.query_window), messages sent within its
#: window gain this share of the best match's BM25 score, among the first PAGE_BUCKET matches: the
#: archival search's lever (vmem.storage.sqlite.DEFAULT_DATE_BONUS) on the conversation.
#: What it is worth on LoCoMo dev, chosen leave-one-conversation-out, is in docs/design.md.
DEFAULT_DATE_BONUS = 0.5

#: What ``append_many`` accepts per message: a mapping with ``role``, ``content``
#: and optional ``timestamp``/``meta``, or a ``(role, content[, timestamp[, meta]])`` tuple.
MessageInput = Mapping[str, Any] | Sequence[Any]

_COLS = "m.id, m.role, m.content, m.ts, m.meta"


def pack_meta(meta: Mapping[str, Any] | None) -> bytes | None:
    """msgpack a message's meta mapping (None for empty); TypeError if it cannot be."""
    if meta is None or len(meta) == 0:
        return None
    if not isinstance(meta, Mapping):
        raise TypeError(f"meta must be a mapping, got {type(meta).__name__}")
    try:
        return msgpack.packb(dict(meta), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise TypeError(f"meta is not msgpack-serialisable: {e}") from e


def _row_to_message(row: tuple[Any, ...]) -> Message:
    rid, role, content, ts, meta = row
    return Message(
        id=make_page_id(PageKind.MESSAGE, rid),
        role=role,
        content=content,
        timestamp=from_epoch(ts),
        meta=msgpack.unpackb(meta, raw=False, strict_map_key=False) if meta is not None else {},
    )


def _serial(page_id: int, kind: PageKind, what: str) -> int:
    if not isinstance(page_id, int) or isinstance(page_id, bool):
        raise TypeError(f"{what}: page id must be an int, got {type(page_id).__name__}")
    if page_id <= 0 or page_kind(page_id) is not kind:
        raise ValueError(f"{what}: {page_id:#x} is not a {kind.name} page id")
    return page_serial(page_id)


def _norm_message(item: MessageInput) -> tuple[str, str, float, bytes | None]:
    if isinstance(item, Mapping):
        unknown = set(item) - {"role", "content", "timestamp", "meta"}
        if unknown:
            raise ValueError(f"unknown message fields {sorted(unknown)}")
        try:
            role, content = item["role"], item["content"]
        except KeyError as e:
            raise ValueError(f"message is missing {e.args[0]!r}") from None
        ts, meta = item.get("timestamp"), item.get("meta")
    elif isinstance(item, Sequence) and not isinstance(item, (str, bytes)) and 2 <= len(item) <= 4:
        role, content, ts, meta = (list(item) + [None, None])[:4]
    else:
        raise TypeError(f"a message is a mapping or a (role, content[, timestamp[, meta]]) tuple, got {item!r:.80}")
    if not isinstance(role, str) or not role:
        raise ValueError(f"role must be a non-empty str, got {role!r}")
    if not isinstance(content, str):
        raise TypeError(f"content must be str, got {type(content).__name__}")
    return role, content, to_epoch(ts if ts is not None else utcnow()), pack_meta(meta)


class RecallStore:
    """Every message, verbatim (the "swap" tier). Obtained from ``MemoryDir.recall``."""

    def __init__(self, db: Database, lexical: LexicalCache, *,
                 context: tuple[float, float, float] = DEFAULT_CONTEXT,
                 tie_break: TieBreak | None = DEFAULT_TIE_BREAK,
                 date_bonus: float = DEFAULT_DATE_BONUS) -> None:
        self._db = db
        self.lexical = lexical  #: the text index over the messages, a cache of the table
        #: (forward from a question, forward from a statement, backward) relevance
        #: shares passed between neighbouring matches; zeros turn it off.
        self.context = context
        #: The shares of a search ``with_neighbours`` (see :meth:`search`).
        self.neighbour_context = NEIGHBOUR_CONTEXT
        #: Near-ties between statements about the same thing go to the newest (None: off).
        self.tie_break = tie_break
        #: For a query that names a date, messages sent within its window gain this share of the
        #: best match's score (0: off; see DEFAULT_DATE_BONUS).
        self.date_bonus = date_bonus
        #: Messages appended through this object: a cheap way for a cache of the store's size to
        #: tell that it is stale (the store's lock keeps other processes out).
        self.appends = 0

    def checkpoint(self) -> None:
        """Write the text index's cache file if it changed since it was last written (never inside
        a transaction, never from a read-only open); the messages themselves are always durable."""
        self.lexical.save()

    # -- writes

    def verify_index(self) -> bool:
        """Whether the text index holds exactly the stored messages' ids."""
        return self.lexical.verify()

    def append(
        self,
        role: str,
        content: str,
        *,
        timestamp: _dt.datetime | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> int:
        """Store one message; return its page id once committed.

        ``timestamp`` defaults to now (aware UTC); ``meta`` must be
        msgpack-serialisable.
        """
        return self.append_many([{"role": role, "content": content, "timestamp": timestamp, "meta": meta}])[0]

    def append_many(self, messages: Iterable[MessageInput]) -> list[int]:
        """Store several messages in one transaction; return their page ids in order.

        All or nothing: a bad message anywhere stores none of them.
        """
        rows = [_norm_message(m) for m in messages]
        if not rows:
            return []
        with self._db.transaction("appending messages") as c:
            ids = [
                cast(int, c.execute("INSERT INTO messages(role, content, ts, meta) VALUES (?, ?, ?, ?)", r).lastrowid)
                for r in rows
            ]
            added = [(i, r[1], r[2], r[0], 0) for i, r in zip(ids, rows)]
            self._db.after_commit(lambda: self.lexical.added(added))
            self.appends += len(ids)
        return [make_page_id(PageKind.MESSAGE, i) for i in ids]

    # -- reads

    def get(self, page_id: int) -> Message:
        """The message with this page id (NotFoundError if none)."""
        serial = _serial(page_id, PageKind.MESSAGE, "recall.get")
        with self._db.reading("reading a message") as c:
            row = c.execute(f"SELECT {_COLS} FROM messages m WHERE m.id=?", (serial,)).fetchone()
        if row is None:
            raise NotFoundError(f"no message with page id {page_id:#x}")
        return _row_to_message(row)

    def get_many(self, page_ids: Iterable[int]) -> list[Message]:
        """The messages with these page ids, in the order given (NotFoundError if one is missing)."""
        ids = list(page_ids)
        serials = [_serial(p, PageKind.MESSAGE, "recall.get_many") for p in ids]
        found: dict[int, Message] = {}
        with self._db.reading("reading messages") as c:
            for lo in range(0, len(serials), 500):
                chunk = serials[lo : lo + 500]
                q = f"SELECT {_COLS} FROM messages m WHERE m.id IN ({','.join('?' * len(chunk))})"
                for row in c.execute(q, chunk):
                    found[row[0]] = _row_to_message(row)
        missing = [p for p, s in zip(ids, serials) if s not in found]
        if missing:
            raise NotFoundError(f"no message with page id {missing[0]:#x} ({len(missing)} missing)")
        return [found[s] for s in serials]

    def last_id(self) -> int | None:
        """The page id of the newest message, or None when empty (O(1): the rowid's b-tree)."""
        with self._db.reading("reading the last message id") as c:
            row = c.execute("SELECT max(id) FROM messages").fetchone()
        return make_page_id(PageKind.MESSAGE, row[0]) if row[0] is not None else None

    def __len__(self) -> int:
        with self._db.reading("counting messages") as c:
            return int(c.execute("SELECT count(*) FROM messages").fetchone()[0])

    def search(
        self,
        query: str | None = None,
        *,
        roles: Iterable[str] | None = None,
        start: TimeBound = None,
        end: TimeBound = None,
        page: int = 0,
        page_size: int = 10,
        with_neighbours: bool = False,
    ) -> SearchPage[Message]:
        """Search the conversation.

        ``query``: free text, ranked by BM25 (best first, ``Hit.score`` = BM25,
        higher is better); None or blank lists the filtered messages newest
        first (score 0.0). A query with no searchable word matches nothing.
        ``roles``: keep only these roles. ``start``/``end``: inclusive bounds
        (aware datetimes, or dates covering whole UTC days). ``page`` is 0-based.
        ``with_neighbours``: also rank the messages next to the matches that do not match
        (the reply to a matching question: "They were scared but we reassured them" answers
        "How did the kids handle the accident?"), by conversation context with the shares
        ``neighbour_context``; ``Hit.score`` is then that relevance, the best match's 1.0, and
        ``total`` still counts matches. For prefetch, which pages in what answers a text;
        conversation_search, the model's word search, returns matches only.
        """
        check_paging(page, page_size)
        lo, hi = epoch_range(start, end)
        where: list[str] = []
        args: list[Any] = []
        if roles is not None:
            role_list = [roles] if isinstance(roles, str) else list(roles)
            if not role_list:
                return SearchPage([], page, 0, 0)
            where.append(f"m.role IN ({','.join('?' * len(role_list))})")
            args.extend(role_list)
        if lo is not None:
            where.append("m.ts >= ?")
            args.append(lo)
        if hi is not None:
            where.append("m.ts <= ?")
            args.append(hi)
        offset = page * page_size
        if query is None or not query.strip():
            cond = " AND ".join(where) or "1"
            with self._db.reading("searching messages") as c:
                total = c.execute(f"SELECT count(*) FROM messages m WHERE {cond}", args).fetchone()[0]
                rows = c.execute(
                    f"SELECT {_COLS} FROM messages m WHERE {cond} ORDER BY m.ts DESC, m.id DESC LIMIT ? OFFSET ?",
                    [*args, page_size, offset],
                ).fetchall()
            hits = [Hit(_row_to_message(r), 0.0) for r in rows]
            return SearchPage(hits, page, page_count(total, page_size), total)
        return self._ranked(query, role_list if roles is not None else None, lo, hi, page, page_size,
                            with_neighbours)

    def _ranked(self, query: str, roles: list[str] | None, lo: float | None, hi: float | None,
                page: int, page_size: int, with_neighbours: bool = False) -> SearchPage[Message]:
        index = self.lexical.index
        mask = allow = None
        if roles is not None:
            mask = index.roles_mask(roles)
            if mask is None:  # a role beyond the index's 63 filter bits: filter by SQL
                allow = self._role_bitmap(roles)
        depth = (page + 1) * page_size
        dates = query_window(query) if self.date_bonus else None
        # exact BM25 top-k is the same at any depth; context re-ranking and the date bonus need a
        # fixed one, and the tie-break its whole window
        context, expand = (self.neighbour_context, True) if with_neighbours else (self.context, False)
        deep = -(-depth // PAGE_BUCKET) * PAGE_BUCKET if any(context) or dates is not None else depth
        if self.tie_break is not None:
            deep = max(deep, TIE_WINDOW)
        with self._db.lock:
            self._db.check_open()
            found = index.search(query, deep, lo=lo, hi=hi, roles=mask, allow=allow)
            ranked = [(int(d), float(s)) for d, s in zip(found.docs, found.scores)]
            total, exact = found.total, found.exact
            fq, fs, bwd = context
            if ranked and expand and (fq or fs or bwd):  # in C: a fusion whose vector side is empty
                none = np.zeros(0, dtype=np.uint32)
                docs, scores = index.fuse(found.docs, found.scores, none, none.astype(np.float64), text_weight=1.0,
                                          context=context, max_gap=CONTEXT_GAP, lo=lo, hi=hi, roles=mask, allow=allow)
                ranked = [(int(d), float(s)) for d, s in zip(docs, scores)]
            elif ranked and (fq or fs or bwd):
                prev, nxt, asks = index.neighbours(found.docs, max_gap=CONTEXT_GAP, lo=lo, hi=hi, roles=mask,
                                                   allow=allow)
                ranked = spread(ranked, next_of=_links(found.docs, nxt), prev_of=_links(found.docs, prev),
                                forward=fq, backward=bwd, expand=False, statement_forward=fs,
                                asks={int(d) for d, a in zip(found.docs, asks) if a})
            if dates is not None and ranked:
                ranked = self._dated(dates, ranked)
            if len(ranked) > 1 and self.tie_break is not None and self.tie_break.applies_to(query):
                head = np.array([d for d, _ in ranked[:TIE_WINDOW]], dtype=np.uint32)
                _, masks, times, idf = index.explain(query, head)
                ranked = self.tie_break.apply(ranked, masks, times, idf)
        window = ranked[page * page_size : depth]
        found_msgs = self._fetch([d for d, _ in window])
        hits = [Hit(found_msgs[d], s) for d, s in window if d in found_msgs]
        return SearchPage(hits, page, page_count(total, page_size), total, exact)

    def _dated(self, window: DateWindow, ranked: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """``ranked`` with the messages sent within ``window`` raised by ``date_bonus`` times the best
        score, re-sorted (stable: ties keep their order). Times come from the text index."""
        docs = np.array([d for d, _ in ranked], dtype=np.uint32)
        scores = np.array([s for _, s in ranked], dtype=np.float64)
        raised = date_boosted(window, self.lexical.index.timestamps(docs), scores, self.date_bonus)
        if raised is None:
            return ranked
        order, boosted = raised
        return [(int(d), float(s)) for d, s in zip(docs[order], boosted)]

    def _role_bitmap(self, roles: list[str]) -> np.ndarray:
        with self._db.reading("filtering messages") as c:
            ids = np.fromiter((r[0] for r in c.execute(
                f"SELECT id FROM messages WHERE role IN ({','.join('?' * len(roles))})", roles)), dtype=np.int64)
        return bitmap(ids)

    def _fetch(self, serials: list[int]) -> dict[int, Message]:
        out: dict[int, Message] = {}
        if not serials:
            return out
        with self._db.reading("reading messages") as c:
            q = f"SELECT {_COLS} FROM messages m WHERE m.id IN ({','.join('?' * len(serials))})"
            for row in c.execute(q, serials):
                out[row[0]] = _row_to_message(row)
        return out


def _links(docs: np.ndarray, other: np.ndarray) -> dict[int, int]:
    return {int(d): int(o) for d, o in zip(docs, other) if o}


def bitmap(ids: np.ndarray) -> np.ndarray:
    """A uint64 bitmap with the bits of ``ids`` (non-negative ints) set."""
    ids = np.asarray(ids, dtype=np.int64)
    words = np.zeros(int(ids.max()) // 64 + 1 if len(ids) else 1, dtype=np.uint64)
    np.bitwise_or.at(words, ids >> 6, np.left_shift(np.uint64(1), (ids & 63).astype(np.uint64)))
    return words
