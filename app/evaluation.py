"""Retrieval evaluation on LoCoMo (Maharana et al., ACL 2024).

Interface:

- :func:`evaluate_locomo` -- recall@k of evidence turns, per mode, overall and
  per question category; what ``bench/locomo_retrieval.py`` and the CLI call.
- :func:`load_locomo` -- the conversations, turns and questions of a LoCoMo file.
- :func:`parse_session_date` -- ``"1:56 pm on 8 May, 2023"`` to an aware UTC datetime.
- :func:`normalise_evidence` -- clean the few malformed evidence ids.
- :func:`select_context_loco` -- choose the stores' conversation-context weights
  by leave-one-conversation-out, and score each choice on its held-out conversation.

Protocol. Each conversation gets its own empty memory; every turn is stored as
one page (``"Speaker: text"``, with the shared image's caption appended when
there is one, timestamped with its session's date). For each question with
evidence, the top ``max(ks)`` pages are retrieved with the question as the
query, and recall@k is the fraction of its evidence turns among the first k,
averaged over questions (the LoCoMo paper's retrieval metric, Table 3).

Modes:

- ``text``: BM25 over FTS5 (``porter unicode61``), query from :func:`vmem.text.fts_query`.
- ``vector``: cosine k-NN over the embedder's vectors.
- ``hybrid``: :func:`vmem.rank.fuse` of the two (the store's own hybrid search).
- ``rrf``: plain reciprocal-rank fusion of the two, for reference.
- any of these with ``+context`` (``text+context``, ``hybrid+context``...):
  the mode's ranking is re-scored with :func:`vmem.rank.spread` over the
  conversation's turn order (within a session), so that a reply inherits
  part of the relevance of the turn it answers.

The data lives outside the repository (``../shared/data/locomo``, CC BY-NC
4.0); nothing here downloads anything.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from vmem.embed import Embedder, default_embedder
from vmem.index import PageIndex
from vmem.rank import as_hits, fuse, spread
from vmem.text import fts_query

if TYPE_CHECKING:
    from vmem.storage import Store

__all__ = [
    "CATEGORIES",
    "DEFAULT_LOCOMO_PATH",
    "PAPER_DRAGON",
    "Turn",
    "Question",
    "Conversation",
    "load_locomo",
    "parse_session_date",
    "normalise_evidence",
    "evaluate_locomo",
    "format_report",
    "CONTEXT_GRID",
    "select_context_loco",
    "format_loco_report",
]

#: Question categories as the official LoCoMo scorer numbers them.
CATEGORIES: dict[int, str] = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
#: LoCoMo paper, Table 3: DRAGON over dialog turns, recall of evidence, all categories (percent).
PAPER_DRAGON: dict[int, float] = {5: 58.8, 10: 67.5, 25: 79.9, 50: 84.8}
#: Where the shared evaluation data sits relative to the project root.
DEFAULT_LOCOMO_PATH = Path("..") / "shared" / "data" / "locomo" / "locomo_dev.json"

BASE_MODES = ("text", "vector", "hybrid", "rrf")


@dataclass(frozen=True)
class Turn:
    """One utterance of a conversation."""

    dia_id: str
    session: int
    speaker: str
    text: str
    caption: str | None
    timestamp: _dt.datetime

    def page_text(self, *, speaker: bool = True) -> str:
        """The text stored as this turn's page."""
        body = self.text.strip()
        if self.caption:
            body = f"{body} [{self.caption.strip()}]"
        return f"{self.speaker}: {body}" if speaker else body


@dataclass(frozen=True)
class Question:
    """A QA item with its (normalised) evidence turn ids."""

    question: str
    category: int
    evidence: tuple[str, ...]


@dataclass
class Conversation:
    """A LoCoMo sample: its turns in order and its questions."""

    sample_id: str
    turns: list[Turn] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)


_DATE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*([ap]\.?m\.?)\s+on\s+(\d{1,2})\s+([A-Za-z]+),?\s+(\d{4})\s*$", re.I)
_MONTHS = {m: i for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october", "november", "december"], 1)}


def parse_session_date(text: str) -> _dt.datetime:
    """Parse LoCoMo's ``"1:56 pm on 8 May, 2023"`` as a timezone-aware UTC datetime.

    Month names may be abbreviated (``"Aug"``). Raises ValueError on anything else.
    """
    m = _DATE.match(text or "")
    if not m:
        raise ValueError(f"unrecognised LoCoMo session date {text!r}")
    hour, minute, ampm, day, month, year = m.groups()
    name = month.lower()
    months = [n for w, n in _MONTHS.items() if w == name or (len(name) >= 3 and w.startswith(name))]
    if len(months) != 1:
        raise ValueError(f"unrecognised month in LoCoMo session date {text!r}")
    h = int(hour)
    if not 1 <= h <= 12:
        raise ValueError(f"bad hour in LoCoMo session date {text!r}")
    h = h % 12 + (12 if ampm.lower().startswith("p") else 0)
    return _dt.datetime(int(year), months[0], int(day), h, int(minute), tzinfo=_dt.timezone.utc)


_EVIDENCE = re.compile(r"^D:?(\d+):(\d+)$")


def normalise_evidence(raw: Sequence[str], known: set[str] | None = None) -> list[str]:
    """Clean evidence ids as the data README says.

    Entries are split on ``;`` and whitespace, each piece normalised to
    ``D<int>:<int>`` (``"D:11:26"`` -> ``"D11:26"``, ``"D30:05"`` -> ``"D30:5"``),
    and, when ``known`` is given, ids naming no turn are dropped. Order is kept,
    duplicates removed.
    """
    out: list[str] = []
    for entry in raw or ():
        for piece in re.split(r"[;,\s]+", str(entry)):
            m = _EVIDENCE.match(piece.strip())
            if not m:
                continue
            did = f"D{int(m.group(1))}:{int(m.group(2))}"
            if (known is None or did in known) and did not in out:
                out.append(did)
    return out


def load_locomo(path: str | os.PathLike[str]) -> list[Conversation]:
    """Read a LoCoMo JSON file into :class:`Conversation` objects.

    Sessions are taken in numeric order; a ``session_N_date_time`` without a
    ``session_N`` is ignored (some conv-26 keys), and a session without a date
    raises ValueError.
    """
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of conversations")
    convs: list[Conversation] = []
    for sample in data:
        conv_raw = sample["conversation"]
        conv = Conversation(str(sample.get("sample_id", len(convs))))
        sessions = sorted(
            (int(m.group(1)), k)
            for k in conv_raw
            if (m := re.fullmatch(r"session_(\d+)", k)) and isinstance(conv_raw[k], list)
        )
        for n, key in sessions:
            date_key = f"{key}_date_time"
            if date_key not in conv_raw:
                raise ValueError(f"{path}: {conv.sample_id} {key} has no date")
            when = parse_session_date(conv_raw[date_key])
            for t in conv_raw[key]:
                did = normalise_evidence([t["dia_id"]])
                conv.turns.append(
                    Turn(did[0] if did else t["dia_id"], n, t["speaker"], t["text"], t.get("blip_caption"), when)
                )
        known = {t.dia_id for t in conv.turns}
        for qa in sample.get("qa", []):
            ev = normalise_evidence(qa.get("evidence") or [], known)
            if ev:
                conv.questions.append(Question(qa["question"], int(qa["category"]), tuple(ev)))
        convs.append(conv)
    return convs


# ---------------------------------------------------------------- backends


class Backend(Protocol):
    """One conversation's memory: store pages, then search them."""

    def add(self, texts: list[str], timestamps: list[_dt.datetime]) -> list[int]: ...

    def text(self, query: str, k: int) -> list[tuple[int, float]]: ...

    def vector(self, query: str, k: int) -> list[tuple[int, float]]: ...

    def hybrid(self, query: str, k: int) -> list[tuple[int, float]]: ...


class MemoryBackend:
    """Pages in an in-memory SQLite FTS5 table plus a :class:`~vmem.index.PageIndex`.

    The same retrieval pieces the stores use (fts_query, the embedder, the
    index, fuse), without persistence.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE pages USING fts5(body, tokenize='porter unicode61')")
        self.index = PageIndex(embedder.dim, name=embedder.name, capacity=1024)

    def add(self, texts: list[str], timestamps: list[_dt.datetime]) -> list[int]:
        start = len(self.index) + 1
        ids = list(range(start, start + len(texts)))
        self.db.executemany("INSERT INTO pages(rowid, body) VALUES (?, ?)", zip(ids, texts))
        self.index.add(np.array(ids, dtype=np.uint64), self.embedder.embed(texts))
        return ids

    def text(self, query: str, k: int) -> list[tuple[int, float]]:
        match = fts_query(query)
        if match is None:
            return []
        rows = self.db.execute(
            "SELECT rowid, -bm25(pages) FROM pages WHERE pages MATCH ? ORDER BY bm25(pages), rowid LIMIT ?", (match, k)
        ).fetchall()
        return [(int(i), float(s)) for i, s in rows]

    def vector(self, query: str, k: int) -> list[tuple[int, float]]:
        self.index.ef = max(64, k)
        ids, sims = self.index.query(self.embedder.embed([query]), k)
        return as_hits(ids[0], sims[0])

    def hybrid(self, query: str, k: int) -> list[tuple[int, float]]:
        deep = max(2 * k, 20)  # the same depth the stores fuse at
        return fuse(self.text(query, deep), self.vector(query, deep))[:k]

    def close(self) -> None:
        self.db.close()


class StoreBackend:
    """Pages in a real :class:`vmem.storage.MemoryDir` archival store (a temporary directory).

    Turns that share a timestamp (a session) go in with one ``insert_many``
    call; the store runs with ``durability="normal"`` since the directory is
    thrown away afterwards.
    """

    def __init__(self, embedder: Embedder, index: str = "hnsw", *, postgres: str | None = None) -> None:
        from vmem.storage import MemoryDir  # imported late: the evaluation also runs without it

        self._tmp: Any = None
        self.store: Store
        if postgres is not None:  # a fresh agent in that database, deleted at close
            from vmem.storage import open_store

            sep = "&" if "?" in postgres else "?"
            self.store = open_store(f"{postgres}{sep}agent=locomo-{uuid.uuid4().hex[:12]}", embedder=embedder,
                                    create=True, durability="normal", index=index)
            return
        self._tmp = tempfile.TemporaryDirectory(prefix="vmem-locomo-")
        self.store = MemoryDir.open(
            Path(self._tmp.name) / "agent", embedder=embedder, create=True, durability="normal", index=index
        )

    def add(self, texts: list[str], timestamps: list[_dt.datetime]) -> list[int]:
        ids: list[int] = []
        start = 0
        while start < len(texts):
            end = start
            while end < len(texts) and timestamps[end] == timestamps[start]:
                end += 1
            for got in self.store.archival.insert_many(texts[start:end], timestamp=timestamps[start]):
                if len(got) != 1:
                    raise RuntimeError(f"a turn was stored as {len(got)} passages; raise the store's passage bound")
                ids.append(int(got[0]))
            start = end
        return ids

    def _search(self, query: str, mode: Literal["hybrid", "text", "vector"], k: int) -> list[tuple[int, float]]:
        page = self.store.archival.search(query, mode=mode, page_size=k)
        return [(int(h.item.id), float(h.score)) for h in page.hits]

    def text(self, query: str, k: int) -> list[tuple[int, float]]:
        return self._search(query, "text", k)

    def vector(self, query: str, k: int) -> list[tuple[int, float]]:
        return self._search(query, "vector", k)

    def hybrid(self, query: str, k: int) -> list[tuple[int, float]]:
        return self._search(query, "hybrid", k)

    def close(self) -> None:
        from vmem.storage.postgres import PgStore

        if isinstance(self.store, PgStore):  # the agent made for this evaluation
            self.store.drop()
            return
        with contextlib.suppress(Exception):
            self.store.close()
        self._tmp.cleanup()


def store_available() -> bool:
    """Whether :mod:`vmem.storage` provides ``MemoryDir`` (the real store) in this tree."""
    try:
        from vmem.storage import MemoryDir  # noqa: F401
    except Exception:  # absent, or present but not importable
        return False
    return True


def _make_backend(kind: str, embedder: Embedder) -> Any:
    if kind == "memory":
        return MemoryBackend(embedder)
    if kind == "store":
        return StoreBackend(embedder)
    if kind.startswith(("postgresql://", "postgres://")):
        return StoreBackend(embedder, postgres=kind)
    raise ValueError(f"backend must be 'auto', 'memory', 'store' or a postgresql:// URL, got {kind!r}")


# ---------------------------------------------------------------- evaluation


def _parse_modes(modes: Sequence[str]) -> list[tuple[str, str, bool]]:
    out = []
    for m in modes:
        base, _, suffix = m.partition("+")
        if base not in BASE_MODES or suffix not in ("", "context"):
            raise ValueError(f"unknown mode {m!r}: use one of {BASE_MODES}, optionally with '+context'")
        out.append((m, base, suffix == "context"))
    return out


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, unit="q", desc="LoCoMo retrieval", leave=False)
    try:
        yield bar
    finally:
        bar.close()


def evaluate_locomo(
    path: str | os.PathLike[str] | None = None,
    modes: Sequence[str] = ("text", "vector", "hybrid"),
    ks: Sequence[int] = (5, 10, 25),
    *,
    progress: bool = True,
    embedder: Embedder | None = None,
    backend: str = "auto",
    speaker: bool = True,
    context_weights: tuple[float, float] = (0.5, 0.25),
) -> dict[str, Any]:
    """Recall@k of evidence turns on a LoCoMo file, per mode.

    ``path`` defaults to :data:`DEFAULT_LOCOMO_PATH` (FileNotFoundError when
    absent: callers that may run without the data check first). ``modes`` are
    the module docstring's; ``embedder`` defaults to :func:`default_embedder`;
    ``backend`` is ``"store"`` (the real archival store), ``"memory"`` (FTS5 +
    PageIndex in memory), ``"auto"`` (the store when :mod:`vmem.storage`
    exists) or a ``postgresql://`` URL without an agent (the PostgreSQL store: one
    fresh agent per conversation, deleted afterwards). ``speaker`` prefixes each page with its speaker's name.
    ``context_weights``: (forward, backward) of :func:`vmem.rank.spread` for
    the ``+context`` modes.

    Returns ``{mode: {"overall": {"5": r, ...}, "by_category": {name: {"5": r,
    ...}}, "questions": n, "questions_by_category": {name: n}}}`` with recalls
    as fractions in [0, 1].
    """
    parsed = _parse_modes(modes)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    convs = load_locomo(path if path is not None else DEFAULT_LOCOMO_PATH)
    embedder = embedder if embedder is not None else default_embedder()
    kind = backend if backend != "auto" else ("store" if store_available() else "memory")
    top = ks[-1]
    deep = 2 * top  # candidates re-scored by +context modes before the cut
    # recalls[mode][category] -> list of per-question recall arrays over ks
    recalls: dict[str, dict[int, list[list[float]]]] = {m: {} for m, _, _ in parsed}
    with _progress(sum(len(c.questions) for c in convs), progress) as bar:
        for conv in convs:
            be = _make_backend(kind, embedder)
            try:
                page_ids = be.add(
                    [t.page_text(speaker=speaker) for t in conv.turns], [t.timestamp for t in conv.turns]
                )
                page_of = {t.dia_id: p for t, p in zip(conv.turns, page_ids)}
                next_of: dict[int, int] = {}
                prev_of: dict[int, int] = {}
                for (a, pa), (b, pb) in zip(zip(conv.turns, page_ids), zip(conv.turns[1:], page_ids[1:])):
                    if a.session == b.session and pa != pb:
                        next_of.setdefault(pa, pb)
                        prev_of.setdefault(pb, pa)
                for q in conv.questions:
                    evidence = {page_of[d] for d in q.evidence}
                    cache: dict[str, list[tuple[int, float]]] = {}

                    def ranking(base: str, depth: int) -> list[tuple[int, float]]:
                        key = f"{base}@{depth}"
                        if key not in cache:
                            if base == "rrf":
                                cache[key] = fuse(
                                    ranking("text", depth), ranking("vector", depth), method="rrf", text_weight=0.5
                                )
                            else:
                                cache[key] = getattr(be, base)(q.question, depth)
                        return cache[key]

                    for name, base, context in parsed:
                        if context:
                            ranked = spread(
                                ranking(base, deep),
                                next_of=next_of,
                                prev_of=prev_of,
                                forward=context_weights[0],
                                backward=context_weights[1],
                            )
                        else:
                            ranked = ranking(base, top)
                        got = [pid for pid, _ in ranked[:top]]
                        row = [len(evidence.intersection(got[:k])) / len(evidence) for k in ks]
                        recalls[name].setdefault(q.category, []).append(row)
                    if bar is not None:
                        bar.update(1)
            finally:
                be.close()

    result: dict[str, Any] = {}
    for name, _, _ in parsed:
        per_cat = recalls[name]
        all_rows = [r for rows in per_cat.values() for r in rows]
        overall = np.mean(all_rows, axis=0) if all_rows else np.zeros(len(ks))
        result[name] = {
            "overall": {str(k): float(v) for k, v in zip(ks, overall)},
            "by_category": {
                CATEGORIES.get(c, str(c)): {str(k): float(v) for k, v in zip(ks, np.mean(rows, axis=0))}
                for c, rows in sorted(per_cat.items())
            },
            "questions": len(all_rows),
            "questions_by_category": {CATEGORIES.get(c, str(c)): len(rows) for c, rows in sorted(per_cat.items())},
        }
    return result


def format_report(result: dict[str, Any], *, reference: dict[int, float] | None = None) -> str:
    """A plain-text table of :func:`evaluate_locomo`'s result (percent), with the
    paper's DRAGON figures beside the overall rows."""
    reference = PAPER_DRAGON if reference is None else reference
    if not result:
        return "(no modes)"
    first = next(iter(result.values()))
    ks = list(first["overall"])
    head = "mode".ljust(18) + "".join(f"R@{k}".rjust(8) for k in ks)
    lines = ["overall (all categories)", head]
    ref = [reference.get(int(k)) for k in ks]
    if any(r is not None for r in ref):
        lines.append("DRAGON (paper)".ljust(18) + "".join(("-" if r is None else f"{r:.1f}").rjust(8) for r in ref))
    for name, res in result.items():
        lines.append(name.ljust(18) + "".join(f"{100 * res['overall'][k]:.1f}".rjust(8) for k in ks))
    cats = list(first["by_category"])
    for cat in cats:
        n = first["questions_by_category"].get(cat, 0)
        lines += ["", f"{cat} ({n} questions)", head]
        for name, res in result.items():
            row = res["by_category"].get(cat)
            if row:
                lines.append(name.ljust(18) + "".join(f"{100 * row[k]:.1f}".rjust(8) for k in ks))
    return "\n".join(lines)


# ---------------------------------------------------------------- context weights, leave one conversation out

#: (forward from a question, forward from a statement, backward) shares tried for
#: the stores' conversation context: round values from none to all of a turn's
#: relevance, a 5 x 3 x 4 grid.
CONTEXT_GRID: tuple[tuple[float, float, float], ...] = tuple(
    (fq, fs, b) for fq in (0.0, 0.25, 0.5, 0.75, 1.0) for fs in (0.0, 0.25, 0.5) for b in (0.0, 0.125, 0.25, 0.5)
)
_OFF = (0.0, 0.0, 0.0)


def _conversation_store(conv: Conversation, embedder: Embedder, speaker: bool) -> tuple[Any, Any, dict[str, int], dict[str, int]]:
    """A temporary MemoryDir holding a conversation twice: each session's turns as one
    archival ``insert_many`` (passages) and as recall messages (the first speaker as
    "user"). Returns (store, tmpdir, dia_id -> passage id, dia_id -> message id)."""
    from vmem.storage import MemoryDir

    tmp = tempfile.TemporaryDirectory(prefix="vmem-loco-")
    store = MemoryDir.open(Path(tmp.name) / "agent", embedder=embedder, create=True, durability="normal")
    first = conv.turns[0].speaker if conv.turns else ""
    passage_of: dict[str, int] = {}
    message_of: dict[str, int] = {}
    start = 0
    turns = conv.turns
    while start < len(turns):
        end = start
        while end < len(turns) and turns[end].session == turns[start].session:
            end += 1
        chunk = turns[start:end]
        texts = [t.page_text(speaker=speaker) for t in chunk]
        for t, got in zip(chunk, store.archival.insert_many(texts, timestamp=chunk[0].timestamp)):
            passage_of[t.dia_id] = int(got[0])
        mids = store.recall.append_many(
            [("user" if t.speaker == first else "assistant", text, t.timestamp) for t, text in zip(chunk, texts)])
        for t, mid in zip(chunk, mids):
            message_of[t.dia_id] = int(mid)
        start = end
    return store, tmp, passage_of, message_of


def select_context_loco(
    path: str | os.PathLike[str] | None = None,
    *,
    target: str = "archival",
    grid: Sequence[tuple[float, float, float]] = CONTEXT_GRID,
    ks: Sequence[int] = (10, 25),
    embedder: Embedder | None = None,
    speaker: bool = True,
    progress: bool = True,
    keep_categories: bool = True,
) -> dict[str, Any]:
    """Choose conversation-context weights by leave-one-conversation-out (LOCO).

    ``target``: ``"archival"`` (the store's default search, hybrid) or
    ``"recall"`` (conversation_search). For every conversation and every
    ``(forward, backward)`` of ``grid``, each question is asked through the
    store's default search with those shares (see :data:`CONTEXT_GRID`). Fold i picks the weights with
    the best mean of R@10 and R@25 over the questions of the *other*
    conversations (ties: the smaller weights) and is scored on conversation i
    alone; the weights are never chosen on the conversation they are scored on.
    ``keep_categories``: only weights under which no question category's R@10
    or R@25 on the training conversations falls below context off are eligible
    (off itself always is): the issue's "no category worse" as part of the rule.

    Returns ``{"target", "grid", "folds": [{"held_out", "questions", "chosen",
    "train": {k: r}, "test": {k: r}, "test_without": {k: r}}], "mean": {k: r},
    "std": {k: r}, "mean_without": {k: r}, "by_category": {name: {k: r}},
    "by_category_without": {...}, "chosen_counts": {"f/b": n}}``, recalls as
    fractions; ``*_without`` is the same search with context off (0, 0, 0).
    """
    if target not in ("archival", "recall"):
        raise ValueError(f"target must be 'archival' or 'recall', got {target!r}")
    ks = sorted({int(k) for k in ks})
    if 10 not in ks or 25 not in ks:
        ks = sorted(set(ks) | {10, 25})
    grid = [(float(w[0]), float(w[1]), float(w[2])) for w in grid]
    if _OFF not in grid:
        grid.append(_OFF)
    convs = load_locomo(path if path is not None else DEFAULT_LOCOMO_PATH)
    embedder = embedder if embedder is not None else default_embedder()
    top = ks[-1]
    # rows[conv][w] -> list of (category, [recall@k for k in ks])
    rows: list[dict[tuple[float, ...], list[tuple[int, list[float]]]]] = []
    with _progress(len(grid) * sum(len(c.questions) for c in convs), progress) as bar:
        for conv in convs:
            store, tmp, passage_of, message_of = _conversation_store(conv, embedder, speaker)
            per_w: dict[tuple[float, ...], list[tuple[int, list[float]]]] = {}
            try:
                for w in grid:
                    if target == "archival":
                        store.archival.context = w
                        search, page_of = (lambda q: store.archival.search(q, page_size=top)), passage_of
                    else:
                        store.recall.context = w
                        search, page_of = (lambda q: store.recall.search(q, page_size=top)), message_of
                    out = per_w[w] = []
                    for q in conv.questions:
                        evidence = {page_of[d] for d in q.evidence}
                        got = [int(h.item.id) for h in search(q.question).hits]
                        out.append((q.category, [len(evidence.intersection(got[:k])) / len(evidence) for k in ks]))
                        if bar is not None:
                            bar.update(1)
            finally:
                store.close()
                tmp.cleanup()
            rows.append(per_w)

    def mean(items: list[tuple[int, list[float]]]) -> list[float]:
        return [float(x) for x in np.mean([r for _, r in items], axis=0)] if items else [0.0] * len(ks)

    i10, i25 = ks.index(10), ks.index(25)
    folds: list[dict[str, Any]] = []
    pooled: list[tuple[int, list[float]]] = []
    pooled_without: list[tuple[int, list[float]]] = []
    def cat_means(items: list[tuple[int, list[float]]]) -> dict[int, list[float]]:
        return {c: mean([x for x in items if x[0] == c]) for c in {c for c, _ in items}}

    for i, conv in enumerate(convs):
        def train_score(w: tuple[float, ...]) -> tuple[float, ...]:
            m = mean([r for j, per in enumerate(rows) if j != i for r in per[w]])
            return ((m[i10] + m[i25]) / 2, *(-x for x in w))

        eligible = list(grid)
        if keep_categories:
            off = cat_means([r for j, per in enumerate(rows) if j != i for r in per[_OFF]])

            def keeps(w: tuple[float, ...]) -> bool:
                got = cat_means([r for j, per in enumerate(rows) if j != i for r in per[w]])
                return all(got[c][i10] >= off[c][i10] and got[c][i25] >= off[c][i25] for c in off)

            eligible = [w for w in grid if w == _OFF or keeps(w)]
        chosen = max(eligible, key=train_score)
        train = mean([r for j, per in enumerate(rows) if j != i for r in per[chosen]])
        test = mean(rows[i][chosen])
        without = mean(rows[i][_OFF])
        pooled += rows[i][chosen]
        pooled_without += rows[i][_OFF]
        folds.append({
            "held_out": conv.sample_id, "questions": len(rows[i][chosen]), "chosen": list(chosen),
            "train": dict(zip(map(str, ks), train)), "test": dict(zip(map(str, ks), test)),
            "test_without": dict(zip(map(str, ks), without)),
        })

    def by_cat(items: list[tuple[int, list[float]]]) -> dict[str, dict[str, float]]:
        cats = sorted({c for c, _ in items})
        return {CATEGORIES.get(c, str(c)): dict(zip(map(str, ks), mean([x for x in items if x[0] == c]))) for c in cats}

    tests = np.array([[f["test"][str(k)] for k in ks] for f in folds])
    withouts = np.array([[f["test_without"][str(k)] for k in ks] for f in folds])
    counts: dict[str, int] = {}
    for f in folds:
        key = "/".join(f"{x:g}" for x in f["chosen"])
        counts[key] = counts.get(key, 0) + 1
    grid_scores = {}  # descriptive only: every grid point over every question (never used to choose)
    for w in grid:
        every = [r for per in rows for r in per[w]]
        grid_scores["/".join(f"{x:g}" for x in w)] = {"overall": dict(zip(map(str, ks), mean(every))), "by_category": by_cat(every)}
    return {
        "target": target,
        "keep_categories": keep_categories,
        "grid": [list(w) for w in grid],
        "grid_scores": grid_scores,
        "folds": folds,
        "mean": dict(zip(map(str, ks), map(float, tests.mean(axis=0)))),
        "std": dict(zip(map(str, ks), map(float, tests.std(axis=0)))),
        "min": dict(zip(map(str, ks), map(float, tests.min(axis=0)))),
        "max": dict(zip(map(str, ks), map(float, tests.max(axis=0)))),
        "mean_without": dict(zip(map(str, ks), map(float, withouts.mean(axis=0)))),
        "by_category": by_cat(pooled),
        "by_category_without": by_cat(pooled_without),
        "chosen_counts": counts,
    }


def format_loco_report(res: dict[str, Any]) -> str:
    """A plain-text table of :func:`select_context_loco`'s result (percent)."""
    ks = list(res["mean"])
    lines = [f"LOCO selection of context weights, {res['target']} store's default search "
             f"({len(res['grid'])} grid points); each fold scored on its held-out conversation",
             "held out     questions  chosen (fq/fs/b)  " + "".join(f"R@{k} ctx".rjust(10) + f"R@{k} off".rjust(10) for k in ks)]
    for f in res["folds"]:
        lines.append(f"{f['held_out']:12} {f['questions']:>9}  {'/'.join(f'{x:g}' for x in f['chosen']):17} "
                     + "".join(f"{100 * f['test'][k]:10.1f}{100 * f['test_without'][k]:10.1f}" for k in ks))
    lines.append("mean over folds" + " " * 30 + "".join(
        f"{100 * res['mean'][k]:10.1f}{100 * res['mean_without'][k]:10.1f}" for k in ks))
    lines.append("std / min / max over folds: " + ", ".join(
        f"R@{k} {100 * res['std'][k]:.1f} / {100 * res['min'][k]:.1f} / {100 * res['max'][k]:.1f}" for k in ks))
    lines.append("chosen by folds: " + ", ".join(f"{w} x{n}" for w, n in res["chosen_counts"].items()))
    lines.append("")
    lines.append("per category (each question with its fold's weights; 'off' = context 0/0/0)")
    for cat, row in res["by_category"].items():
        off = res["by_category_without"][cat]
        lines.append(f"  {cat:14}" + "".join(f"   R@{k} {100 * row[k]:5.1f} (off {100 * off[k]:5.1f})" for k in ks))
    return "\n".join(lines)
