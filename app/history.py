"""An agent's history as a picture: tokens per region over the LLM calls of its trace.

Interface::

    builder = HistoryBuilder()
    for event in memory.store.events:   # the trace, oldest first
        builder.add(event)
    history = builder.history(warn=0.7, flush=1.0)
    svg = render_history_svg(history)   # inline SVG, no script, no external asset
    line = describe(history)            # one line of text

What the trace says, and how it is read (see :mod:`vmem.kernel.trace`):

- ``context``: the context as prepared for one LLM call, region by region: one step.
- ``alert`` and ``flush`` happen while the context is prepared, so they mark the step
  that follows; a ``pagein`` there is a prefetch.
- a ``call`` of archival_memory_search or conversation_search is a page fault of the
  step whose answer made it.
- a ``block`` event with ``by`` is another agent's edit of a shared block, read when a
  transaction starts: it marks the step that follows as ``shared``, the step whose prompt
  changed in its core region (a provider's prompt cache serves only the prefix before it).
- ``llm`` (purpose "step"): the provider's usage for the step; when it counts cached
  prompt tokens (``Usage.cached_tokens``), cached / prompt is the step's prompt-cache
  ratio. Traces written before ``context`` events existed have no steps to draw.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History", "HistoryBuilder", "REGIONS", "Step", "describe", "render_history_svg"]

#: The regions drawn, bottom to top, with their names and colours (the context map's palette).
REGIONS: tuple[tuple[str, str, str], ...] = (
    ("system", "system", "#a23fb5"),
    ("core", "core", "#2f6fd6"),
    ("summary", "summary", "#1fa3b3"),
    ("queue", "queue", "#3a9d4a"),
    ("workset", "working set", "#d9a520"),
)
MARKS = {"flush": ("flush", "#7d3c98"), "alert": ("memory-pressure alert", "#d68910"),
         "fault": ("page fault (a search call)", "#2f6fd6"), "prefetch": ("prefetch", "#b7950b"),
         "shared": ("shared block changed by another agent (the prompt changes from the core on)", "#c0392b")}
_SEARCHES = frozenset({"archival_memory_search", "conversation_search"})
#: Above this many steps, neighbouring steps are drawn as one (the fullest of them).
MAX_COLUMNS = 1200
#: Up to this many columns, each has a tooltip.
MAX_TOOLTIPS = 600


@dataclass
class Step:
    """One LLM call: the context it was given, what happened around it."""

    index: int  #: 1-based, in trace order
    time: str
    tokens: dict[str, int]
    budget: int
    marks: list[str] = field(default_factory=list)  #: "alert", "flush", "prefetch", "fault", "shared" (repeats count)
    prompt_tokens: int | None = None  #: as the provider counted them
    cached_tokens: int | None = None  #: of those, served from the provider's prompt cache

    @property
    def used(self) -> int:
        """Tokens of the context, all regions."""
        return sum(self.tokens.values())

    @property
    def cache_ratio(self) -> float | None:
        """cached / prompt tokens, when the provider reported both."""
        if self.cached_tokens is None or not self.prompt_tokens:
            return None
        return min(1.0, self.cached_tokens / self.prompt_tokens)


@dataclass
class History:
    """The steps of a trace, and the watermarks (fractions of the budget) to draw."""

    steps: list[Step]
    warn: float = 0.7
    flush: float = 1.0


class HistoryBuilder:
    """Reads trace events one by one (so one pass over the log serves the inspector too)."""

    def __init__(self) -> None:
        self.steps: list[Step] = []
        self._pending: list[str] = []  # marks of the step being prepared
        self._pagein = False  # a pagein since the last call or context: a prefetch unless a search call follows

    def add(self, e: Any) -> None:
        """Take the next event of the trace."""
        if not isinstance(e, dict):
            return
        kind = e.get("e")
        if kind == "context":
            raw_tokens = e.get("tokens")
            tokens = raw_tokens if isinstance(raw_tokens, dict) else {}
            if self._pagein:
                self._pending.append("prefetch")
            self._pagein = False
            when = e.get("time")
            stamp = (_dt.datetime.fromtimestamp(float(when), _dt.timezone.utc).isoformat(timespec="seconds")
                     if isinstance(when, (int, float)) else "")
            self.steps.append(Step(len(self.steps) + 1, stamp,
                                   {name: int(tokens.get(name) or 0) for name, _, _ in REGIONS},
                                   int(e.get("budget") or 0), self._pending))
            self._pending = []
        elif kind in ("alert", "flush"):
            self._pending.append(kind)
        elif kind == "block" and e.get("by"):
            self._pending.append("shared")
        elif kind == "pagein":
            self._pagein = True
        elif kind == "call":
            if e.get("name") in _SEARCHES and self.steps:
                self.steps[-1].marks.append("fault")
            self._pagein = False
        elif kind == "llm" and e.get("purpose") == "step" and self.steps:
            usage = (e.get("completion") or {}).get("usage") if isinstance(e.get("completion"), dict) else None
            if isinstance(usage, dict):
                self.steps[-1].prompt_tokens = usage.get("prompt_tokens")
                self.steps[-1].cached_tokens = usage.get("cached_tokens")

    def history(self, *, warn: float = 0.7, flush: float = 1.0) -> History:
        """The steps read so far."""
        return History(list(self.steps), warn, flush)


def describe(h: History) -> str:
    """One line: steps, peak, flushes, alerts, page faults, prompt cache."""
    if not h.steps:
        return "no LLM calls recorded in the trace"
    peak = max(h.steps, key=lambda s: s.used)
    def at(mark: str) -> list[int]:
        return [s.index for s in h.steps if mark in s.marks]

    flushes, alerts = at("flush"), at("alert")
    faults = sum(s.marks.count("fault") for s in h.steps)
    parts = [f"{len(h.steps)} LLM call{'' if len(h.steps) == 1 else 's'}, peak {peak.used:,} tokens at step {peak.index}"
             + (f" ({100 * peak.used / peak.budget:.0f}% of the budget)" if peak.budget else "")]
    parts.append(f"flushes at steps {_list(flushes)}" if flushes else "no flush")
    parts.append(f"alerts at steps {_list(alerts)}" if alerts else "no alert")
    parts.append(f"{faults} page faults, {len(at('prefetch'))} prefetches")
    shared = at("shared")
    if shared:
        parts.append(f"shared blocks changed by other agents before steps {_list(shared)} (the prompt cache "
                     "misses from the core on there)")
    ratios = [r for r in (s.cache_ratio for s in h.steps) if r is not None]
    if ratios:
        parts.append(f"prompt cache {100 * sum(ratios) / len(ratios):.0f}% of the prompt on average "
                     f"({len(ratios)} calls reported it)")
    return "; ".join(parts)


def _list(items: list[int], most: int = 8) -> str:
    shown = ", ".join(str(i) for i in items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _columns(steps: list[Step]) -> list[tuple[Step, list[str], int, int]]:
    """(the step drawn, the marks of every step it stands for, first and last index) per column."""
    if len(steps) <= MAX_COLUMNS:
        return [(s, s.marks, s.index, s.index) for s in steps]
    per = -(-len(steps) // MAX_COLUMNS)
    out = []
    for i in range(0, len(steps), per):
        group = steps[i:i + per]
        out.append((max(group, key=lambda s: s.used), [m for s in group for m in s.marks], group[0].index,
                    group[-1].index))
    return out


def render_history_svg(h: History) -> str:
    """The history as an inline SVG: stacked regions per step against the budget and its
    watermarks; flushes, alerts, page faults and prefetches marked; the prompt-cache ratio
    (right axis) where the trace has it. A paragraph instead when there is no step."""
    if not h.steps:
        return ('<p class="muted" id="history-empty">No LLM call is recorded in the trace yet (or the trace '
                'predates per-call context records): nothing to draw.</p>')
    cols = _columns(h.steps)
    width, height = 1000.0, 300.0
    x0, x1, top, bottom = 64.0, 900.0, 24.0, 214.0
    budget = max(s.budget for s in h.steps) or 1
    ymax = max(budget, max(s.used for s in h.steps)) * 1.04
    cw = (x1 - x0) / len(cols)

    def y(tokens: float) -> float:
        return bottom - (bottom - top) * tokens / ymax

    parts: list[str] = [f'<rect class="plot" x="{x0}" y="{top}" width="{x1 - x0}" height="{bottom - top}" '
                        'fill="#fbfbfb" stroke="#ddd" />']
    # y axis: tokens, at round numbers
    step = _nice(ymax / 4)
    for k in range(int(ymax // step) + 1):
        t = k * step
        parts.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y(t):.1f}" y2="{y(t):.1f}" />'
                     f'<text class="axis" x="{x0 - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{_tokens(t)}</text>')
    # stacked regions, as stairs (one flat top per column)
    base = [0.0] * len(cols)
    for name, label, colour in REGIONS:
        tops = [b + c[0].tokens.get(name, 0) for b, c in zip(base, cols)]
        if any(t > b for t, b in zip(tops, base)):
            upper = " ".join(f"L{x0 + i * cw:.2f},{y(t):.2f} L{x0 + (i + 1) * cw:.2f},{y(t):.2f}"
                             for i, t in enumerate(tops))
            lower = " ".join(f"L{x0 + (i + 1) * cw:.2f},{y(b):.2f} L{x0 + i * cw:.2f},{y(b):.2f}"
                             for i, b in reversed(list(enumerate(base))))
            parts.append(f'<path class="area r-{name}" fill="{colour}" d="M{x0:.2f},{y(base[0]):.2f} {upper} '
                         f'{lower} Z"><title>{_e(label)}</title></path>')
        base = tops
    # the budget and its watermarks
    levels = [(h.warn, "wm-warn", f"warn {h.warn:.0%}"), (h.flush, "wm-flush", f"flush {h.flush:.0%}")]
    if h.flush < 1.0:
        levels.insert(0, (1.0, "budget", "budget"))
    else:
        levels[1] = (1.0, "wm-flush", "flush 100%")
    for frac, cls, label in levels:  # stairs: each call's own budget (calibration moves it)
        ys = [y(frac * c[0].budget) for c in cols]
        d = "M" + " L".join(f"{x0 + i * cw:.2f},{ty:.2f} {x0 + (i + 1) * cw:.2f},{ty:.2f}" for i, ty in enumerate(ys))
        parts.append(f'<path class="level {cls}" d="{d}" fill="none"><title>{_e(label)}</title></path>'
                     f'<text class="level-label" x="{x1 + 4}" y="{ys[-1] + 4:.1f}">{label}</text>')
    # marks: flushes as lines through the plot, alerts above it, faults and prefetches below it
    counts = {m: 0 for m in MARKS}
    for i, (_, marks, first, last) in enumerate(cols):
        cx = x0 + (i + 0.5) * cw
        span = f"step {first}" if first == last else f"steps {first}-{last}"
        for mark in dict.fromkeys(marks):
            n = marks.count(mark)
            counts[mark] += n
            what = f"{MARKS[mark][0]}{f' x{n}' if n > 1 else ''} at {span}"
            if mark == "flush":
                parts.append(f'<line class="mark mark-flush" x1="{x0 + i * cw:.2f}" x2="{x0 + i * cw:.2f}" '
                             f'y1="{top}" y2="{bottom}"><title>{_e(what)}</title></line>')
            elif mark == "alert":
                parts.append(f'<path class="mark mark-alert" d="M{cx:.2f},{top - 2} l-5,-9 h10 z">'
                             f'<title>{_e(what)}</title></path>')
            elif mark == "fault":
                parts.append(f'<circle class="mark mark-fault" cx="{cx:.2f}" cy="{bottom + 10}" r="3.5">'
                             f'<title>{_e(what)}</title></circle>')
            elif mark == "shared":
                parts.append(f'<rect class="mark mark-shared" x="{cx - 3:.2f}" y="{top - 20}" width="6" height="6">'
                             f'<title>{_e(what)}</title></rect>')
            else:
                parts.append(f'<path class="mark mark-prefetch" d="M{cx:.2f},{bottom + 16} l4,5 l-4,5 l-4,-5 z">'
                             f'<title>{_e(what)}</title></path>')
    # the prompt-cache ratio, on the right axis
    ratios = [(i, c[0].cache_ratio) for i, c in enumerate(cols) if c[0].cache_ratio is not None]
    if ratios:
        def ry(r: float) -> float:
            return bottom - (bottom - top) * r

        pts = " ".join(f"{x0 + (i + 0.5) * cw:.2f},{ry(r):.2f}" for i, r in ratios)
        parts.append(f'<polyline class="cache" points="{pts}"><title>prompt-cache ratio</title></polyline>')
        parts += [f'<circle class="cache-point" cx="{x0 + (i + 0.5) * cw:.2f}" cy="{ry(r):.2f}" r="2" />'
                  for i, r in ratios] if len(ratios) <= MAX_TOOLTIPS else []
        for k in (0, 50, 100):
            parts.append(f'<text class="axis cache-axis" x="{width - 4}" y="{ry(k / 100) + 4:.1f}" '
                         f'text-anchor="end">{k}%</text>')
    # a tooltip per column
    if len(cols) <= MAX_TOOLTIPS:
        for i, (s, marks, first, last) in enumerate(cols):
            regions = ", ".join(f"{label} {s.tokens.get(name, 0):,}" for name, label, _ in REGIONS)
            tip = f"step {s.index}{' · ' + s.time if s.time else ''}: {regions}; used {s.used:,} of {s.budget:,}"
            if s.prompt_tokens is not None:
                tip += f"; the provider counted {s.prompt_tokens:,} prompt tokens"
                if s.cached_tokens is not None:
                    tip += f", {s.cached_tokens:,} cached ({100 * (s.cache_ratio or 0):.0f}%)"
            if marks:
                tip += "; " + ", ".join(MARKS[m][0] for m in marks)
            parts.append(f'<rect class="step" x="{x0 + i * cw:.2f}" y="{top}" width="{cw:.2f}" '
                         f'height="{bottom - top}" fill="transparent"><title>{_e(tip)}</title></rect>')
    # x axis: steps
    ticks = sorted({0, len(cols) // 2, len(cols) - 1})
    for i in ticks:
        first = cols[i][2]
        parts.append(f'<text class="axis" x="{x0 + (i + 0.5) * cw:.2f}" y="{bottom + 40}" '
                     f'text-anchor="middle">step {first}</text>')
    # legend
    items = [(label, colour, "rect") for _, label, colour in REGIONS]
    items += [(f"{MARKS[m][0]} ({counts[m]})", MARKS[m][1], m) for m in MARKS]
    if ratios:
        items.append(("prompt-cache ratio (right axis)", "#117a65", "line"))
    lx, ly = x0, height - 22
    for label, colour, shape in items:
        if lx + 30 + 6.6 * len(label) > width:
            lx, ly = x0, ly + 16
        if shape == "line":
            icon = f'<line x1="{lx:.1f}" x2="{lx + 12:.1f}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" stroke-width="2"/>'
        else:
            icon = f'<rect x="{lx:.1f}" y="{ly - 10}" width="12" height="12" fill="{colour}" />'
        parts.append(f'{icon}<text class="legend" x="{lx + 16:.1f}" y="{ly}">{_e(label)}</text>')
        lx += 30 + 6.6 * len(label)
    note = "" if ratios else (" No step reports cached prompt tokens (the LLM server did not say), so there is no "
                              "prompt-cache line.")
    return (f'<svg id="history-chart" viewBox="0 0 {width:.0f} {ly + 12:.0f}" role="img" '
            f'aria-label="history: tokens per region over {len(h.steps)} LLM calls">' + "".join(parts) + "</svg>"
            + (f'<p class="muted" id="history-no-cache">{_e(note.strip())}</p>' if note else ""))


def _nice(x: float) -> float:
    """The round number (1, 2 or 5 times a power of ten) at or above ``x``."""
    power = 10 ** math.floor(math.log10(max(x, 1)))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= x)


def _tokens(t: float) -> str:
    return f"{t / 1000:.0f}k" if t >= 10_000 else f"{t:,.0f}"
