"""Dates named in a search query, as a time window that ranks pages from then first.

Interface:

- :func:`query_window` -- the window of the first calendar date a query names
  ("in May 2023", "on 13 October", "October 13, 2023", "in June"; full month names,
  and a month alone only after a word of time, so "you may" and "April said" are not dates), or None.
- :class:`DateWindow` -- ``contains(epoch_seconds)`` over an array of page times.

A page's time is when it was stored (a conversation turn: its session's date),
and people tell of an event after it happened ("I went to the group yesterday"),
so a window runs from the named day (minus one, for time zones) or the named
month's first day to 14 days after its end. A query without a year matches the
month and day in any year. Relative dates ("last May", "yesterday") are not read:
they need the time the question was asked, which a search does not know.

The stores use it in hybrid search (``date_bonus``): pages in the window gain a
share of the best hit's score, before the cut; what the share is worth was
measured on LoCoMo by leave-one-conversation-out (bench/embedders.py).
"""

from __future__ import annotations

import calendar
import datetime as _dt
import re
from dataclasses import dataclass

import numpy as np

__all__ = ["DateWindow", "query_window", "date_boosted", "AFTER_DAYS"]

#: How long after the named day or month a page may have been stored and still be about it.
AFTER_DAYS = 14

_MONTHS = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_NAMES = "|".join(sorted(_MONTHS, key=len, reverse=True))
# "13 October 2023", "October 13, 2023", "October 13th", "October 2023", "in October"
_DATE = re.compile(
    rf"\b(?:(?P<d1>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?)?(?P<m>{_NAMES})\.?"
    rf"(?:\s+(?P<d2>\d{{1,2}})(?:st|nd|rd|th)?\b)?,?(?:\s+(?P<y>(?:19|20)\d\d)\b)?",
    re.IGNORECASE,
)
_UTC = _dt.timezone.utc
_YEAR = 2000  # a leap year: where times are compared when the query names no year


@dataclass(frozen=True)
class DateWindow:
    """``[lo, hi)`` in epoch seconds; with ``year`` None, ``lo``/``hi`` are in the year 2000
    and page times are moved there (month and day match in any year)."""

    lo: float
    hi: float
    year: int | None

    def contains(self, ts: np.ndarray) -> np.ndarray:
        """Which of the epoch-second times ``ts`` fall in the window (a bool array)."""
        t = np.asarray(ts, dtype=np.float64)
        if self.year is None:
            t = _in_year_2000(t)
        return (t >= self.lo) & (t < self.hi)


def _in_year_2000(ts: np.ndarray) -> np.ndarray:
    """The same instants (month, day, time of day) moved to the year 2000."""
    days = np.floor(ts / 86400.0).astype("datetime64[D]")
    year_start = days.astype("datetime64[Y]")
    offset = (days - year_start).astype(np.int64)  # day of the year, 0-based
    leap = ((year_start.astype(np.int64) + 1970) % 4 == 0)  # good for 1901-2099
    # in a common year, a day after Feb 28 sits one later in 2000 (which has Feb 29)
    offset = np.where(~leap & (offset >= 59), offset + 1, offset)
    base = _dt.datetime(_YEAR, 1, 1, tzinfo=_UTC).timestamp()
    return base + offset * 86400.0 + np.mod(ts, 86400.0)


def query_window(query: str) -> DateWindow | None:
    """The window of the first calendar date ``query`` names (see the module docstring), or None."""
    for m in _DATE.finditer(query or ""):
        word = m.group("m").lower()
        if not (m.group("d1") or m.group("d2") or m.group("y")) and not _bare_month(query, m):
            continue  # "you may", "April said"
        month = _MONTHS[word]
        year = int(m.group("y")) if m.group("y") else None
        y = year if year is not None else _YEAR
        day_s = m.group("d1") or m.group("d2")
        last = calendar.monthrange(y, month)[1]
        if day_s and 1 <= int(day_s) <= last:
            lo = _dt.datetime(y, month, int(day_s), tzinfo=_UTC) - _dt.timedelta(days=1)
            hi = lo + _dt.timedelta(days=2 + AFTER_DAYS)
        else:
            lo = _dt.datetime(y, month, 1, tzinfo=_UTC)
            hi = lo + _dt.timedelta(days=last + AFTER_DAYS)
        return DateWindow(lo.timestamp(), hi.timestamp(), year)
    return None


def _bare_month(query: str, m: re.Match[str]) -> bool:
    """A month name without a day or a year is a month when a word of time precedes it
    ("in May", "since June", "early April"), not a verb or a name ("you may", "April said")."""
    before = query[: m.start()].rstrip().lower().rsplit(None, 1)
    return bool(before) and before[-1] in {"in", "of", "since", "until", "last", "this", "early", "late", "mid",
                                           "during", "before", "after", "by"}


def date_boosted(window: DateWindow, times: np.ndarray, scores: np.ndarray,
                 share: float) -> tuple[np.ndarray, np.ndarray] | None:
    """A ranking's pages whose time (epoch seconds; NaN: unknown) falls in ``window`` raised by
    ``share`` times the best score (``scores[0]``): the new order (indices into the ranking,
    stable: ties keep theirs) and the raised scores in that order; None when no page is in it.
    The date lever of both tiers' searches (archival hybrid, conversation)."""
    known = np.isfinite(times)
    inside = window.contains(np.where(known, times, 0.0)) & known
    if not inside.any():
        return None
    boosted = np.asarray(scores, dtype=np.float64) + inside * (share * max(float(scores[0]), 0.0))
    order = np.argsort(-boosted, kind="stable")
    return order, boosted[order]
