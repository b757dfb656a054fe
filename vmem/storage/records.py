"""Records returned by the stores, and the time conventions they share.

Timestamps are timezone-aware UTC :class:`~datetime.datetime` objects in the
API and epoch seconds (``REAL``) in SQLite. A naive datetime is refused rather
than guessed at. Date ranges are inclusive at both ends; a bare
:class:`~datetime.date` covers its whole (UTC) day.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

__all__ = [
    "Block",
    "Hit",
    "Message",
    "Passage",
    "SearchPage",
    "TimeBound",
    "epoch_range",
    "from_epoch",
    "to_epoch",
    "utcnow",
]

UTC = _dt.timezone.utc

#: What a date-range bound may be: an aware datetime, a date (whole UTC day) or None (open).
TimeBound = _dt.datetime | _dt.date | None

T = TypeVar("T")


@dataclass(frozen=True)
class Message:
    """A message of the conversation, stored verbatim in recall storage.

    ``id`` is its page id (``PageKind.MESSAGE``); ``meta`` is any
    msgpack-serialisable mapping the kernel attaches (tool call ids, names...).
    """

    id: int
    role: str
    content: str
    timestamp: _dt.datetime
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Passage:
    """An archival passage. ``id`` is its page id (``PageKind.PASSAGE``).

    A passage is a fact with a time: it held from ``valid_from`` (None: from its
    ``timestamp``, when it was stored) until ``invalid_at`` (None: it still holds),
    when ``superseded_by`` (a passage's page id, or None: nothing replaced it, it just
    stopped holding) took its place. A superseded passage is kept, and searchable.
    """

    id: int
    text: str
    tags: tuple[str, ...]
    timestamp: _dt.datetime
    valid_from: _dt.datetime | None = None
    invalid_at: _dt.datetime | None = None
    superseded_by: int | None = None

    @property
    def current(self) -> bool:
        """Whether the fact still holds (nothing marked it invalid)."""
        return self.invalid_at is None

    @property
    def held_from(self) -> _dt.datetime:
        """When the fact began to hold: ``valid_from``, or the passage's ``timestamp``."""
        return self.valid_from if self.valid_from is not None else self.timestamp

    def valid_at(self, when: _dt.datetime) -> bool:
        """Whether the fact held at the instant ``when`` (``held_from <= when < invalid_at``)."""
        return self.held_from <= when and (self.invalid_at is None or when < self.invalid_at)


@dataclass(frozen=True)
class Block:
    """A core-memory block: a small labelled text the agent edits in place.

    ``limit`` is the maximum length of ``value`` in characters.
    """

    label: str
    value: str
    limit: int
    description: str = ""
    read_only: bool = False


@dataclass(frozen=True)
class Hit(Generic[T]):
    """One search result: the record and its score (higher is more relevant).

    Scores are comparable only within one result list: BM25 for text search,
    cosine similarity for vector search, the fused score for hybrid search,
    and 0.0 for a filter-only listing (newest first).
    """

    item: T
    score: float


@dataclass(frozen=True)
class SearchPage(Generic[T]):
    """Page ``page`` (0-based) of ``pages`` of a search that matched ``total`` records.

    ``total_is_exact`` is False when ``total`` (and so ``pages``) is an estimate:
    ranked searches stop before enumerating every match of a common word.
    """

    hits: list[Hit[T]]
    page: int
    pages: int
    total: int
    total_is_exact: bool = True

    @property
    def items(self) -> list[T]:
        """The records of this page, best first."""
        return [h.item for h in self.hits]

    @property
    def has_next(self) -> bool:
        """Whether a later page exists."""
        return self.page + 1 < self.pages

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit[T]]:
        return iter(self.hits)


def utcnow() -> _dt.datetime:
    """The current time as an aware UTC datetime."""
    return _dt.datetime.now(UTC)


def to_epoch(ts: _dt.datetime) -> float:
    """Epoch seconds of an aware datetime (ValueError if naive, TypeError if not a datetime)."""
    if not isinstance(ts, _dt.datetime):
        raise TypeError(f"timestamp must be a timezone-aware datetime, got {type(ts).__name__}")
    if ts.tzinfo is None or ts.tzinfo.utcoffset(ts) is None:
        raise ValueError(f"timestamp must be timezone-aware (got naive {ts.isoformat()}); use tzinfo=timezone.utc")
    x = ts.timestamp()
    if not math.isfinite(x):  # pragma: no cover - datetime cannot hold such values
        raise ValueError(f"timestamp out of range: {ts!r}")
    return x


def from_epoch(x: float) -> _dt.datetime:
    """The aware UTC datetime of epoch seconds ``x`` (rounded to the microsecond)."""
    return _dt.datetime.fromtimestamp(x, tz=UTC)


def _bound(b: TimeBound, *, end: bool, name: str) -> float | None:
    if b is None:
        return None
    if isinstance(b, _dt.datetime):
        return to_epoch(b)
    if isinstance(b, _dt.date):
        day = _dt.datetime(b.year, b.month, b.day, tzinfo=UTC)
        if end:  # the whole day: everything before the next midnight
            return math.nextafter((day + _dt.timedelta(days=1)).timestamp(), -math.inf)
        return day.timestamp()
    raise TypeError(f"{name} must be a datetime, a date or None, got {type(b).__name__}")


def epoch_range(start: TimeBound, end: TimeBound) -> tuple[float | None, float | None]:
    """Turn ``start``/``end`` into inclusive epoch bounds (None = open).

    A date ``start`` means its first instant, a date ``end`` its last, so
    ``start=date(2024, 5, 1), end=date(2024, 5, 1)`` is all of 1 May (UTC).
    """
    lo = _bound(start, end=False, name="start")
    hi = _bound(end, end=True, name="end")
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"empty date range: start {start!r} is after end {end!r}")
    return lo, hi


def page_count(total: int, page_size: int) -> int:
    """Number of pages of ``page_size`` needed for ``total`` records (0 when there are none)."""
    return -(-total // page_size)


def check_paging(page: int, page_size: int) -> None:
    """Raise ValueError unless ``page >= 0`` and ``1 <= page_size <= 1000``."""
    if not isinstance(page, int) or isinstance(page, bool) or page < 0:
        raise ValueError(f"page must be an int >= 0, got {page!r}")
    if not isinstance(page_size, int) or isinstance(page_size, bool) or not 1 <= page_size <= 1000:
        raise ValueError(f"page_size must be an int in 1..1000, got {page_size!r}")
